"""An audit summary's tables as plain text rows, every interval written out: for the HTML report,
the dashboard, the command line and notebooks.

    summary_rows(summary)    # the audit's main table
    card_rows(summary)       # the steering report card
    card_findings(summary)   # what the card shows, in words
"""

from __future__ import annotations

from ..core import stats
from ..core.stats import estimate_from_dict


def estimate_text(estimate: dict, digits: int = 3, percent: bool = False) -> str:
    """An Estimate dict (from summary.json) as a table cell: `workbench.core.stats.Estimate.short`."""
    return stats.estimate_from_dict(estimate).short(digits, percent)


def moved_text(paired: dict, up: str, down: str) -> str:
    """ "moved up 9/16, down 3/16" with Wilson intervals where n allows."""
    return (
        f"{up} {estimate_text(paired['up'], 2, True)}; {down} {estimate_text(paired['down'], 2, True)}; "
        f"unchanged {paired['unchanged']}"
    )


def summary_rows(summary: dict) -> list[dict]:
    """The audit's main table as plain text rows (every interval written out), for the report
    and the dashboard."""
    kind = summary["audit"]
    if kind == "toxicity":
        rows = []
        for c in summary["conditions"]:
            for scorer, s in c["scores"].items():
                row = {
                    "condition": c["condition"],
                    "scorer": scorer,
                    "scorer kind": s["kind"],
                    "scorer's own held-out check": summary.get("scorers", {})
                    .get(scorer, {})
                    .get("held_out", ""),
                    "prompts": c["prompts"],
                    "continuations": c["rows"],
                    "mean toxicity [95% CI]": estimate_text(s["mean"]),
                    "share > 0.5 [95% CI]": estimate_text(s["share_above_0.5"], 1, True),
                }
                if "vs_baseline" in s:
                    row["change vs baseline [95% CI]"] = estimate_text(
                        s["vs_baseline"]["difference"]
                    )
                    row["prompts moved"] = moved_text(s["vs_baseline"], "up", "down")
                if "expected_max_toxicity" in s:  # K samples per prompt
                    row["expected max toxicity [95% CI]"] = estimate_text(
                        s["expected_max_toxicity"]
                    )
                    row["toxicity probability [95% CI]"] = estimate_text(
                        s["toxicity_probability"], 1, True
                    )
                if "max_vs_baseline" in s:
                    row["max toxicity change [95% CI]"] = estimate_text(
                        s["max_vs_baseline"]["difference"]
                    )
                    row["prompts' max moved"] = moved_text(s["max_vs_baseline"], "up", "down")
                rows.append(row)
        return rows
    if kind == "bias":
        return bias_rows(summary)
    if kind == "capability":
        return [
            {
                "condition": c["condition"],
                "texts": c["texts"],
                "questions": c["questions"],
                "held-out perplexity [95% CI]": estimate_text(c["heldout_perplexity"], 1)
                if "heldout_perplexity" in c
                else "",
                "QA accuracy [95% CI]": estimate_text(c["qa_accuracy"], 1, True)
                if "qa_accuracy" in c
                else "",
            }
            for c in summary["conditions"]
        ]
    if kind == "toxigen":
        return [
            {
                "condition": g["condition"],
                "group": g["group"],
                "hateful statements": g["hate_statements"],
                "neutral statements": g["neutral_statements"],
                "preference [95% CI]": estimate_text(g["preference"]) if "preference" in g else "",
                "change vs baseline [95% CI]": estimate_text(g["preference_vs_baseline"])
                if "preference_vs_baseline" in g
                else "",
                "toxicity after hateful prompts": estimate_text(g["toxicity_after_hate"])
                if "toxicity_after_hate" in g
                else "",
                "toxicity after neutral prompts": estimate_text(g["toxicity_after_neutral"])
                if "toxicity_after_neutral" in g
                else "",
                "scorer": g.get("scorer") or "",
            }
            for g in summary["groups"]
        ]
    return [
        {
            "condition": r["condition"],
            "group": r["group"],
            "measure": r["measure"],
            "templates": r["templates"],
            "mean [95% CI]": estimate_text(r["mean"]),
            "gap from mean over groups [95% CI]": estimate_text(r["gap"]),
        }
        for r in summary["table"]
    ]


def card_findings(summary: dict) -> dict[str, list[str]]:
    """What the steering report card shows, in words, per intervened condition: every change from
    the baseline whose 95% interval excludes no change (toxicity by each scorer; fluency; held-out
    perplexity; QA accuracy), and a wrong-way share of a quarter or more (with an interval, so not
    below the minimum n). Conservative: a change
    whose interval reaches the baseline's value is not mentioned. {} for audits without a card."""
    if not summary.get("card"):
        return {}
    conditions = summary["conditions"]
    base = next((c for c in conditions if c["condition"] == "baseline"), None)
    capability = {c["condition"]: c for c in summary.get("capability", {}).get("conditions", [])}
    if base is None:
        return {}

    def above(new: dict | None, old: dict | None) -> bool:
        return bool(
            new
            and old
            and new.get("low") is not None
            and old.get("high") is not None
            and new["low"] > old["high"]
        )

    findings = {}
    for c in conditions:
        if c["condition"] == "baseline":
            continue
        notes = []
        for scorer, s in c["scores"].items():
            change = s.get("vs_baseline", {}).get("difference", {})
            if change.get("low") is not None and (change["low"] > 0 or change["high"] < 0):
                notes.append(
                    f"toxicity by {scorer} ({s['kind']}) {'rises' if change['value'] > 0 else 'falls'} by "
                    f"{abs(change['value']):.3f} [{change['low']:.3f}, {change['high']:.3f}]"
                )
            if c.get("intended") in ("up", "down") and "vs_baseline" in s:
                wrong = s["vs_baseline"]["down" if c["intended"] == "up" else "up"]
                # below the minimum n: the table's count
                if wrong["value"] >= 0.25 and wrong.get("low") is not None:
                    notes.append(
                        f"{estimate_text(wrong, 0, True)} of prompts moved the wrong way by {scorer}"
                    )
        fluency, base_fluency = c.get("fluency", {}), base.get("fluency", {})
        if above(fluency.get("repeated_3grams"), base_fluency.get("repeated_3grams")):
            notes.append(
                f"continuations repeat themselves: {fluency['repeated_3grams']['value']:.0%} of their 3-grams "
                f"repeat (baseline {base_fluency['repeated_3grams']['value']:.0%})"
            )
        if above(fluency.get("perplexity"), base_fluency.get("perplexity")):
            notes.append(
                f"continuations are less fluent: perplexity {fluency['perplexity']['value']:.1f} under the "
                f"unsteered model (baseline {base_fluency['perplexity']['value']:.1f})"
            )
        cap, base_cap = capability.get(c["condition"], {}), capability.get("baseline", {})
        if not (c.get("kind") == "instruct" or c.get("prefix")) and above(
            cap.get("heldout_perplexity"), base_cap.get("heldout_perplexity")
        ):
            notes.append(
                f"held-out perplexity {cap['heldout_perplexity']['value']:.1f} "
                f"(baseline {base_cap['heldout_perplexity']['value']:.1f})"
            )
        qa = cap.get("qa_vs_baseline", {})
        if qa.get("difference", {}).get("high") is not None and qa["difference"]["high"] < 0:
            notes.append(
                f"QA accuracy {cap['qa_accuracy']['value']:.1%} (baseline {base_cap['qa_accuracy']['value']:.1%}; "
                f"{qa['down']['count']} questions lost, {qa['up']['count']} gained)"
            )
        findings[c["condition"]] = notes or ["no change whose interval excludes the baseline"]
    return findings


COST_WORDS = (
    ("repeat themselves", "repetition"),
    ("less fluent", "fluency"),
    ("held-out perplexity", "held-out perplexity"),
    ("QA accuracy", "QA accuracy"),
)


def headline(summary: dict) -> str:
    """The audit in one line of words, for the top of its page: per intervened condition, how many
    scorers see toxicity fall or rise (95% interval excluding no change) and what it costs; without
    interventions, the first row of the main table."""
    findings = card_findings(summary)
    if findings:
        n_scorers = len(summary.get("scorers") or []) or None
        parts = []
        for condition, notes in findings.items():
            falls = sum("falls by" in note for note in notes)
            rises = sum("rises by" in note for note in notes)
            of = f" of {n_scorers}" if n_scorers else ""
            effect = (
                f"toxicity falls by {falls}{of} scorers" if falls and not rises
                else f"toxicity rises by {rises}{of} scorers" if rises and not falls
                else f"toxicity falls by {falls} and rises by {rises}{of} scorers" if falls
                else "no scorer sees toxicity change"
            )  # fmt: skip
            costs = [word for key, word in COST_WORDS if any(key in note for note in notes)]
            parts.append(
                f"{condition}: {effect}; "
                + (f"costs {', '.join(costs)}" if costs else "no measured cost")
            )
        return ". ".join(parts) + " (95% intervals against the baseline; details below)."
    rows = summary_rows(summary)
    if not rows:
        return "no rows"
    return "; ".join(f"{key}: {value}" for key, value in rows[0].items() if value != "") + "."


def card_rows(summary: dict) -> list[dict]:
    """The steering report card (`report_card`) as plain text rows, every interval written out."""
    rows = []
    for r in summary.get("card", []):
        row = {
            "condition": r["condition"],
            "meant to move toxicity": r["intended"] or "(not declared)",
            "scorer (kind)": f"{r['scorer']} ({r['scorer kind']})",
            "mean toxicity [95% CI]": estimate_text(r["toxicity"]),
        }
        if "change" in r:
            row["change vs baseline [95% CI]"] = estimate_text(r["change"])
        if "moved as intended" in r:
            row["prompts moved as intended"] = estimate_text(r["moved as intended"], 1, True)
            row["prompts moved the wrong way"] = estimate_text(r["moved the wrong way"], 1, True)
        for key, label, digits in (
            ("continuation perplexity", "continuation perplexity (unsteered model)", 1),
            ("continuation repeated_3grams", "repeated 3-grams", 3),
            ("continuation distinct_2", "distinct-2", 3),
            ("heldout_perplexity", "held-out perplexity", 1),
        ):
            if key in r:
                row[label + " [95% CI]"] = estimate_text(r[key], digits)
        if "heldout_perplexity" in r and (r.get("kind") == "instruct" or r.get("prefix")):
            row["held-out perplexity [95% CI]"] += f" ({INSTRUCT_PERPLEXITY_NOTE})"
        if "qa_accuracy" in r:
            row["QA accuracy [95% CI]"] = estimate_text(r["qa_accuracy"], 1, True)
        if "qa_vs_baseline" in r:
            q = r["qa_vs_baseline"]
            row["QA questions lost / gained"] = (
                f"{q['down']['count']} / {q['up']['count']} of {q['n_units']}"
            )
        rows.append(row)
    order = list(dict.fromkeys(key for key in CARD_COLUMNS if any(key in row for row in rows)))
    return [{key: row.get(key, "") for key in order} for row in rows]


SAFETY_COLUMNS = ("condition", "meant to move toxicity", "scorer (kind)", "mean toxicity [95% CI]",
                  "change vs baseline [95% CI]", "prompts moved as intended",
                  "prompts moved the wrong way")  # fmt: skip


def card_tables(summary: dict) -> tuple[list[dict], list[dict]]:
    """The report card as two narrower tables: (safety, cost). Safety has a row per condition and
    scorer; cost a row per condition, since fluency, perplexity and QA do not depend on the scorer."""
    rows = card_rows(summary)
    safety = [{k: v for k, v in row.items() if k in SAFETY_COLUMNS} for row in rows]
    cost, seen = [], set()
    for row in rows:
        if row["condition"] not in seen:
            seen.add(row["condition"])
            cost.append(
                {k: v for k, v in row.items() if k == "condition" or k not in SAFETY_COLUMNS}
            )
    return safety, cost


# Measured on smollm2-135m: the held-out texts' perplexity is 119 after the start token alone and 64-75
# after any short prefix ("Reply rudely.", "Reply politely.", "Here is a sentence.", "Hello."), so
# the instruct condition's value measures the prefix, not a capability cost.
INSTRUCT_PERPLEXITY_NOTE = (
    "texts scored after the instruction: any prefix changes it, not comparable with the baseline"
)


CARD_COLUMNS = (
    "condition",
    "meant to move toxicity",
    "scorer (kind)",
    "mean toxicity [95% CI]",
    "change vs baseline [95% CI]",
    "prompts moved as intended",
    "prompts moved the wrong way",
    "continuation perplexity (unsteered model) [95% CI]",
    "repeated 3-grams [95% CI]",
    "distinct-2 [95% CI]",
    "held-out perplexity [95% CI]",
    "QA accuracy [95% CI]",
    "QA questions lost / gained",
)


def agreement_rows(summary: dict) -> list[dict]:
    """Scorer agreement per condition and pair of scorers, as plain text rows."""
    kinds = {name: s["kind"] for name, s in summary.get("scorers", {}).items()}
    return [
        {
            "condition": c["condition"],
            "scorers": " vs ".join(f"{n} ({kinds.get(n, '?')})" for n in a["scorers"]),
            "Spearman [95% CI]": estimate_text(a["spearman"]),
            "Cohen's kappa at 0.5 [95% CI]": estimate_text(a["kappa"]),
            "same side of 0.5 [95% CI]": estimate_text(a["same_side"], 1, True),
        }
        for c in summary["conditions"]
        for a in c.get("agreement", [])
    ]


def bias_rows(summary: dict) -> list[dict]:
    """One text row per condition and bias type, one stereotype-share column per metric, so the
    metrics are read side by side (the headline metric is marked)."""
    headline = summary.get("metric", "total")
    rows: dict = {}
    for r in summary["table"]:
        row = rows.setdefault(
            (r["condition"], r["bias_type"]),
            {"condition": r["condition"], "bias type": r["bias_type"], "pairs": r["pairs"]},
        )
        metric = r.get("metric", "total")
        mark = " (headline)" if metric == headline and len(summary.get("metrics", {})) > 1 else ""
        row[f"{metric}{mark} [95% CI]"] = estimate_text(r["stereotype_share"], 1, True)
    return list(rows.values())


def length_split_rows(summary: dict) -> list[dict]:
    """One row per condition and token-count group ("same" / "different" token count), one
    stereotype-share column per metric: where the metrics part ways, and on how many pairs."""
    headline = summary.get("metric", "total")
    rows: dict = {}
    for r in summary.get("length_split", []):
        row = rows.setdefault(
            (r["condition"], r["token_counts"]),
            {
                "condition": r["condition"],
                "token counts": r["token_counts"],
                "pairs": r["pairs"],
            },
        )
        mark = " (headline)" if r["metric"] == headline else ""
        row[f"{r['metric']}{mark} [95% CI]"] = estimate_text(r["stereotype_share"], 1, True)
    return list(rows.values())


def localisation_rows(data: dict, top: int = 15) -> list[dict]:
    """Table rows for a report or a page: the `top` components by |mean effect| with their intervals."""
    rows = []
    for component in data["components"][:top]:
        effect = estimate_from_dict(component["effect"])
        rows.append(
            {
                "component": component["name"],
                "mean effect (nats) [95% CI]": effect.short(),
                "exact (nats)": "" if component["exact"] is None else f"{component['exact']:.3f}",
                "ablated": "yes" if component["name"] in data["ablated"] else "",
            }
        )
    return rows


def before_after_rows(data: dict) -> list[dict]:
    """Table rows: each measure before and after the ablation, with intervals and methods."""
    labels = {
        "stereotype_share": "stereotype share (shared-token metric)",
        "mean_gap": "mean gap (nats)",
        "heldout_perplexity": "held-out perplexity",
        "qa_accuracy": "QA accuracy",
    }
    return [
        {
            "measure": label,
            "before [95% CI]": estimate_from_dict(data["before"][key]).short(),
            f"after ablating {len(data['ablated'])} head{'s' * (len(data['ablated']) != 1)} [95% CI]": estimate_from_dict(
                data["after"][key]
            ).short(),
            "interval": estimate_from_dict(data["before"][key]).method,
        }
        for key, label in labels.items()
        if key in data["before"]
    ]
