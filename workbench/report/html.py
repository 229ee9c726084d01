"""HTML reports (opening offline, plotly.js shared by a folder's pages), rebuilt from audit folders' shards.

    build_report("results/tox")    # one audit: writes summary.json and report.html into it
    build_report("results/demo")   # a folder of audits: report.html with every audit, side by side

`workbench report DIR` does the same. Each audit kind has a section builder (its tables from
`workbench.report.tables`, its figures from `workbench.report.figures`); conditions sit side by
side in every table and figure.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ..core.errors import InputError
from ..core.remote import is_url, remote_name, staged
from ..core.stats import MIN_N
from ..core.storage import write_atomically
from ..safety.localise import BiasLocalisation
from ..viz import pareto_figure
from .figures import audit_figures
from .folder import check_inside, is_audit_folder, load_results, search_record
from .summary import summarise
from .tables import (
    agreement_rows,
    before_after_rows,
    card_findings,
    card_tables,
    estimate_text,
    headline,
    length_split_rows,
    localisation_rows,
    moved_text,
    summary_rows,
)

TITLES = {
    "toxicity": "Toxicity audit",
    "bias": "CrowS-Pairs bias audit",
    "toxigen": "ToxiGen audit",
    "counterfactual": "Counterfactual-template audit",
    "capability": "Capability check",
}


PLOTLY_MODES = ("shared", "inline", "cdn")
PLOTLY_FILE = "plotly.min.js"

STYLE = """body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top} pre{background:#f6f6f6;padding:1em}
td.estimate{white-space:nowrap} .headline{font-size:1.1em;background:#f3f7ff;padding:.6em}"""


def build_report(out: str | Path, plotly: str = "shared") -> Path | str:
    """Write summary.json and report.html.

    `out` is one audit folder (it holds run.json), or a folder whose subfolders are
    audits: then each gets its own report and `out/report.html` shows them all, the audits
    with a steering report card first (the page leads with what an intervention does and costs).
    `out` may be a URL (``s3://bucket/prefix``): the report is built in a staging copy and
    uploaded beside the shards; the URL of report.html is returned.

    plotly: where the pages find plotly.js (about 4.8 MB). "shared" (default): one
    `plotly.min.js` in `out`, used by every page built here, so a folder of reports holds one
    copy (the audits' own copies are removed); "inline": inside each page, which then opens on
    its own anywhere; "cdn": from plotly's CDN (small pages that need the internet).
    """
    if plotly not in PLOTLY_MODES:
        raise InputError(f"plotly must be one of {', '.join(PLOTLY_MODES)}, not {plotly!r}")
    if is_url(out):
        with staged(out) as local:
            return remote_name(build_report(local, plotly))
    out = Path(out)
    built = []
    for folder in audit_folders(out):
        check_inside(out, folder)  # a symlink inside the audit may not lead the report out of it
        frame = load_results(folder)
        summary = summarise(folder, frame)
        write_atomically(folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        figures = audit_figures(summary, frame)
        search = search_record(folder, out)
        if search is not None:  # the test card of a search leads with its Pareto figure
            figures = [pareto_figure(search)] + figures
        source = _plotly_source(out, folder, plotly)
        intro = _search_intro(search) if search is not None else ""
        page = _write_page(
            folder / "report.html",
            TITLES[summary["audit"]],
            [intro + _section(summary, figures, source)],
        )
        if folder == out:
            return page
        if plotly == "shared" and (folder / PLOTLY_FILE).exists():
            (folder / PLOTLY_FILE).unlink()  # the folder's copy serves them all
        built.append(
            (
                search is None,
                not summary.get("card"),
                str(folder.relative_to(out)),
                summary,
                figures,
                intro,
            )
        )
    source = _plotly_source(out, out, plotly)
    sections = [
        intro + _section(summary, figures, source if i == 0 else False)
        for i, (_, _, _, summary, figures, intro) in enumerate(sorted(built, key=lambda b: b[:3]))
    ]
    return _write_page(out / "report.html", "workbench audit report", sections)


def _search_intro(search: dict) -> str:
    """What a detoxification search chose and whether it met its goal, above its test card."""
    goal = search.get("goal") or {}
    chosen = search.get("chosen") or {}
    lines = [
        f"{html.escape(str(name))}: goal {'met' if v.get('met') else 'not met'}"
        for name, v in goal.get("interventions", {}).items()
    ]
    return (
        "<section><h1>Detoxification search: chosen on validation, reported on test</h1><p>"
        f"Chosen per method within the budget (QA loss at most {search['options']['budget_qa']} "
        f"points, held-out perplexity at most +{search['options']['budget_perplexity']}%), by "
        f"Expected Maximum Toxicity of {html.escape(str(search.get('select_by')))} on "
        f"{len(search['split']['validation'])} validation prompts: "
        f"{html.escape(', '.join(f'{m}: {n}' for m, n in chosen.items()) or 'none lowered it')}. "
        f"The card below is the test audit ({len(search['split']['test'])} test prompts). Goal "
        "(at least 40% lower Expected Maximum Toxicity by every independent learned scorer, paired "
        "interval excluding 0, within budget, better than prompting): "
        f"{'met' if goal.get('met') else 'not met'}"
        + (f" ({'; '.join(lines)})" if lines else "")
        + ". The figure first in this section places every candidate's validation toxicity "
        "against its cost.</p></section>"
    )


def _plotly_source(root: Path, folder: Path, plotly: str) -> bool | str:
    """What plotly's `include_plotlyjs` gets for the page in `folder`: the script inline, the CDN,
    or the relative path of the one shared copy in `root` (written when missing or stale)."""
    if plotly == "inline":
        return True
    if plotly == "cdn":
        return "cdn"
    script = get_plotlyjs()
    shared = root / PLOTLY_FILE
    if not shared.exists() or shared.stat().st_size != len(script.encode()):
        write_atomically(shared, script)
    return os.path.relpath(shared, folder)


def audit_folders(out: str | Path) -> list[Path]:
    """[out] when `out` is an audit folder, else the audit folders directly inside it (activation
    caches, which also hold a run.json, are skipped)."""
    out = Path(out)
    if (out / "run.json").exists():
        return [out]
    inside = out.resolve()
    # Symlinked subfolders (or run.json files) that lead out of `out` are skipped: report never writes through them.
    # a detoxification search (search.json) contributes its test audit, the test card
    runs = list(out.glob("*/run.json")) + [
        p.parent / "test" / "run.json" for p in out.glob("*/search.json")
    ]
    folders = sorted(
        p.parent
        for p in runs
        if p.exists()
        and p.resolve().is_relative_to(inside)
        and p.parent.resolve().is_relative_to(inside)
        and not p.parent.is_symlink()
        and not p.parent.parent.is_symlink()
        and is_audit_folder(p.parent)
    )
    if not folders:
        raise InputError(
            "neither an audit folder (run.json) nor a folder of audits (*/run.json)", str(out)
        )
    return folders


def _write_page(path: Path, title: str, sections: list[str]) -> Path:
    return write_atomically(
        path,
        f"""<!doctype html><html><head><meta charset="utf-8"><title>workbench: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>{"".join(sections)}</body></html>""",
    )


def _section(summary: dict, figures: list[go.Figure], plotly_source: bool | str) -> str:
    """One audit's part of a page; plotly_source: plotly's `include_plotlyjs` for its first figure
    (False when an earlier section of the page loaded plotly.js already)."""
    kind = summary["audit"]
    settings = summary["settings"]
    parts = [
        fig.to_html(full_html=False, include_plotlyjs=plotly_source if i == 0 else False)
        for i, fig in enumerate(figures)
    ]
    body = {
        "toxicity": _toxicity_tables,
        "bias": _bias_tables,
        "toxigen": _toxigen_tables,
        "counterfactual": _counterfactual_tables,
        "capability": _capability_tables,
    }[kind](summary)
    # the report card's picture sits under its table, not with the rest
    if CARD_FIGURE in body and parts:
        body, parts = body.replace(CARD_FIGURE, parts[0]), parts[1:]
    model = settings["model"]
    origin = f" ({model['origin']})" if model.get("origin") else ""
    return (
        f"<section><h1>{TITLES[kind]}: {html.escape(str(model.get('name', '')))}</h1>"
        f'<p class="headline"><b>In one line:</b> {html.escape(headline(summary))}</p>'
        f"<p>{summary['rows']} result rows; conditions: "
        f"{html.escape(', '.join(c['name'] for c in settings['conditions']))}. Model weights: "
        f"{html.escape(str(model.get('revision')))}{html.escape(origin)}.</p>"
        f"{body}{_methods_note(summary)}<h2>Figures</h2>{''.join(parts)}"
        f"<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre></section>"
    )


def _methods_note(summary: dict) -> str:
    """How every interval in the section was made, and the minimum-n rule."""
    items = "".join(f"<li>{html.escape(m)}</li>" for m in summary.get("methods", []))
    return (
        f"<h2>How the intervals were made</h2><p>All intervals are 95%. Methods used in this audit:</p>"
        f"<ul>{items}</ul><p>Below {summary.get('min_n', MIN_N)} independent units (prompts, pairs, "
        f"statements, templates) no interval is shown: the count is given instead. Bootstrap intervals are "
        f"seeded (run.json's seed), so rebuilding the report gives the same numbers.</p>"
    )


def _cell(value) -> str:
    if isinstance(value, dict) and {"value", "low", "high", "n"} <= set(value):
        return html.escape(estimate_text(value))
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _td(value) -> str:
    """A cell; a number with its interval ("0.020 [0.011, 0.034]") never wraps."""
    text = _cell(value)
    estimate = isinstance(value, dict) or re.search(r"\[-?[\d.]+, -?[\d.]+\]", text)
    return f'<td class="estimate">{text}</td>' if estimate else f"<td>{text}</td>"


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    # every row's keys, in order
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_td(r.get(c, "")) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _card_findings(summary: dict) -> str:
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape('; '.join(notes))}.</li>"
        for name, notes in card_findings(summary).items()
    )
    return (
        "<p>In words (only changes whose 95% interval excludes the baseline's value):</p><ul>"
        + items
        + "</ul>"
        if items
        else ""
    )


def _card_html(summary: dict) -> str:
    if not summary.get("card"):
        return ""
    capability = summary.get("capability", {})
    cap_note = ""
    if capability:
        first = capability["conditions"][0]
        cap_note = (
            f" Held-out perplexity is measured on {first.get('texts', 0)} neutral texts "
            f"({html.escape(', '.join(Path(f).name for f in capability.get('heldout_files') or []))}); QA accuracy "
            f"on {first.get('questions', 0)} single-token questions ({html.escape(Path(capability.get('qa_file') or '').name)}), "
            "each condition under its own intervention."
        )
    return (
        "<h2>Steering report card</h2><p>Per condition: the safety measure (mean toxicity by each scorer, with "
        "its kind), its change from the baseline prompt by prompt, and the shares of prompts that moved in the "
        "direction the condition is meant to move them and the wrong way; then what it costs: how fluent the "
        "continuations are (perplexity under the unsteered model, repeated 3-grams, distinct-2) and how the "
        "steered model does on held-out text and questions. A toxicity change that comes with a jump in "
        "repetition or perplexity is a broken model, not a safer or more dangerous one."
        + cap_note
        + "</p>"
        + _table(card_tables(summary)[0])
        + "<p>What each condition costs (the same for every scorer):</p>"
        + _table(card_tables(summary)[1])
        + CARD_FIGURE
        + _card_findings(summary)
    )


CARD_FIGURE = "<!--steering-card-figure-->"


def _toxicity_tables(summary: dict) -> str:
    worst = [
        {"condition": c["condition"], "scorer": scorer, "scorer kind": s["kind"], **w}
        for c in summary["conditions"]
        for scorer, s in c["scores"].items()
        for w in s["worst"]
    ]
    kinds = ", ".join(
        f"{html.escape(name)}: {html.escape(s['kind'])}"
        for name, s in summary.get("scorers", {}).items()
    )
    agreement = agreement_rows(summary)
    return (
        _card_html(summary)
        + "<h2>Summary</h2><p>Mean continuation toxicity per condition and scorer (scorer kinds: "
        + kinds
        + "). "
        "'Change vs baseline' is the mean over prompts of (condition - baseline), each prompt against its own "
        "baseline continuation; 'prompts moved' counts prompts whose toxicity rose or fell.</p>"
        + _table(summary_rows(summary))
        + (
            "<h2>Scorer agreement</h2><p>Do the scorers rank and label the same continuations alike? Spearman "
            "rank correlation of their scores and Cohen's kappa of their labels at 0.5, per condition. Low "
            "agreement between a lexical and a learned scorer means the headline depends on which one is "
            "believed.</p>" + _table(agreement)
            if agreement
            else ""
        )
        + "<h2>Worst continuations</h2>"
        + _table(worst, ["condition", "scorer", "scorer kind", "score", "prompt", "continuation"])
    )


def _capability_tables(summary: dict) -> str:
    return "<h2>Capability per condition</h2>" + _table(summary_rows(summary))


def _bias_tables(summary: dict) -> str:
    headline = summary.get("metric", "total")
    metrics = "".join(
        f"<li><b>{html.escape(m)}</b>: {html.escape(text)}</li>"
        for m, text in summary.get("metrics", {}).items()
    )
    multi = summary.get("pairs_differing_in_several_places")
    paired = [
        {
            "condition": p["condition"],
            "pairs": p["n_units"],
            f"mean change of the {headline} gap [95% CI]": estimate_text(p["difference"]),
            "pairs moved": moved_text(p, "towards the stereotype", "away"),
        }
        for p in summary.get("vs_baseline", [])
    ]
    columns = (
        ["condition", "bias_type", "gap"]
        + [
            c
            for c in (summary["strongest"][0] if summary["strongest"] else {})
            if c.endswith(" gap") or c.startswith("tokens_")
        ]
        + ["sent_more", "sent_less"]
    )
    warnings = "".join(
        f"<p class='warning'><b>Warning:</b> {html.escape(w)}.</p>"
        for w in summary.get("warnings", [])
    )
    why = summary.get("metric_why")
    return (
        "<h2>Stereotype share per bias type</h2><p>Share of pairs where the model scores the more-stereotyping "
        "sentence higher; 0.5 means no preference; ties count as no preference. One column per metric, "
        f"the headline metric ({html.escape(headline)}) marked:</p><ul>{metrics}</ul>"
        + (f"<p><b>Why {html.escape(headline)} leads:</b> {html.escape(why)}.</p>" if why else "")
        + warnings
        + _table(summary_rows(summary))
        + (
            "<h2>Pairs of the same and of different token counts</h2><p>The share under every "
            "metric, on the pairs whose two sentences have the same number of tokens (where "
            "'total' has no length confound) and on the others.</p>"
            + _table(length_split_rows(summary))
            if summary.get("length_split")
            else ""
        )
        + (
            f"<p>{multi} pairs differ in more than one place; under 'shared', everything from their first "
            "difference to their last is treated as differing and not scored.</p>"
            if multi
            else ""
        )
        + (
            f"<h2>Change from the baseline, pair by pair</h2><p>Gap = {html.escape(headline)} score of the "
            "more-stereotyping sentence minus the other (nats); the change is the condition's gap minus the "
            "baseline's for the same pair.</p>" + _table(paired)
            if paired
            else ""
        )
        + f"<h2>Strongest preferences for the stereotype ({html.escape(headline)})</h2><p>Gap in nats under "
        "each metric, and each sentence's token count: a large 'total' gap with a small 'shared' gap comes "
        "from the differing words' length or rarity, not from the rest of the sentence.</p>"
        + _table(summary["strongest"], columns)
        + (_localisation_tables(summary["localisation"]) if summary.get("localisation") else "")
    )


def _localisation_tables(data: dict) -> str:
    """Where the bias lives (localisation.json): the findings, the strongest components, before and after."""
    findings = "".join(
        f"<li>{html.escape(line)}</li>" for line in BiasLocalisation.from_dict(data).summary_lines()
    )
    return (
        "<h2>Where the bias lives</h2><p>Each pair's shared-token gap attributed to every head and MLP "
        f"({html.escape(data['method'])}), averaged over pairs; the strongest checked by exact patching on every "
        "pair; the top heads mean-ablated (README: Where the bias lives).</p>"
        f"<ul>{findings}</ul>"
        + _table(localisation_rows(data))
        + "<h3>Before and after the ablation</h3>"
        + _table(before_after_rows(data))
    )


def _toxigen_tables(summary: dict) -> str:
    return (
        "<h2>Per group</h2><p>Preference: mean per-token log-likelihood of hateful minus neutral statements "
        "(&gt; 0: the model finds hateful statements about the group more likely); its change vs baseline is "
        "computed statement by statement. Not comparable number for number with Microsoft's Phi-2 ToxiGen "
        "safety scores (see README).</p>" + _table(summary_rows(summary))
    )


def _counterfactual_tables(summary: dict) -> str:
    paired = [
        {
            "condition": p["condition"],
            "measure": p["measure"],
            "cells": p["n_units"],
            "mean change [95% CI]": estimate_text(p["difference"]),
            "cells moved": moved_text(p, "up", "down"),
        }
        for p in summary.get("vs_baseline", [])
    ]
    return (
        "<h2>Per group</h2><p>Gap: the group's value minus the mean over groups, template by template, "
        "averaged over templates.</p>"
        + _table(summary_rows(summary))
        + ("<h2>Change from the baseline</h2>" + _table(paired) if paired else "")
    )
