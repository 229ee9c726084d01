"""The audit figures: one plotly figure per picture, each drawn from an audit's summary
(`workbench.report.summary.summarise`). Numbers with uncertainty are Estimate dicts, drawn with
error bars only where an interval exists (none below the minimum n: the bar is hatched and
labelled with its count).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..safety.bias import METRICS, crows_estimates
from ..viz import plain
from .folder import TOX_PREFIX

TOXICITY_BINS = dict(start=0.0, end=1.0, size=0.05)  # one set of bins for every condition


def _error_bars(estimates: list[dict]) -> dict:
    """Plotly error bars from Estimate dicts; a point without an interval gets none."""
    return dict(
        type="data",
        symmetric=False,
        array=[(e["high"] - e["value"]) if e.get("high") is not None else 0 for e in estimates],
        arrayminus=[(e["value"] - e["low"]) if e.get("low") is not None else 0 for e in estimates],
    )


def _interval_note(estimates: list[dict]) -> str:
    methods = sorted({e["method"] for e in estimates if e.get("low") is not None})
    missing = sum(1 for e in estimates if e.get("low") is None)
    note = "; ".join(methods) if methods else "no intervals"
    return note + (f"; {missing} without interval (n below the minimum)" if missing else "")


def _alpha_axis(steer: dict | None) -> str:
    source = plain(Path(steer["pairs"]).name) if steer else "the contrast pairs"
    return (
        f"steering coefficient alpha (> 0: towards the 'positive' texts of {source}, "
        f"< 0: towards its 'negative' texts; 0 = baseline)"
    )


def toxicity_histograms(frame, summary: dict) -> list[go.Figure]:
    """Per scorer: continuation-toxicity histograms of every condition on the same bins."""
    figures = []
    for column in [c for c in frame.columns if c.startswith(TOX_PREFIX)]:
        scorer = plain(column[len(TOX_PREFIX) : -1])
        kind = plain(
            summary.get("scorers", {})
            .get(column[len(TOX_PREFIX) : -1], {})
            .get("kind", "unknown kind")
        )
        fig = go.Figure()
        for name, group in frame.groupby("condition", sort=False):
            fig.add_trace(
                go.Histogram(
                    x=group[column],
                    name=plain(name),
                    opacity=0.6,
                    xbins=TOXICITY_BINS,
                    autobinx=False,
                )
            )
        fig.update_layout(
            barmode="overlay",
            title=f"continuation toxicity by condition: {scorer} ({kind})",
            xaxis_title=f"toxicity score from {scorer} ({kind}), 0 to 1, bins of 0.05",
            yaxis_title="continuations",
            xaxis_range=[0, 1],
            height=400,
        )
        figures.append(fig)
    return figures


def toxicity_by_coefficient(summary: dict) -> list[go.Figure]:
    """Per scorer: mean continuation toxicity against the steering coefficient (a numeric axis), the
    baseline at 0 and an ablation as a horizontal line; then the paired change from the baseline."""
    figures = []
    steer = summary["settings"].get("steer")
    conditions = summary["conditions"]
    for key in conditions[0]["scores"] if conditions else {}:
        scorer, kind = plain(key), plain(conditions[0]["scores"][key]["kind"])
        points = [
            c
            for c in conditions
            if c["condition"] == "baseline" or c["condition"].startswith("steer")
        ]
        points.sort(key=lambda c: c["alpha"])
        means = [c["scores"][key]["mean"] for c in points]
        fig = go.Figure(
            go.Scatter(
                x=[c["alpha"] for c in points],
                y=[m["value"] for m in means],
                error_y=_error_bars(means),
                mode="lines+markers",
                name="mean",
                text=[plain(c["condition"]) for c in points],
            )
        )
        for c in conditions:
            if c["condition"] == "ablate":
                fig.add_hline(
                    y=c["scores"][key]["mean"]["value"],
                    line_dash="dash",
                    annotation_text="direction ablated",
                )
        fig.update_layout(
            title=f"mean continuation toxicity ({scorer}, {kind}); bars: {_interval_note(means)}",
            xaxis_title=_alpha_axis(steer),
            yaxis_title="mean toxicity",
            height=420,
        )
        figures.append(fig)
        changed = [c for c in points if "vs_baseline" in c["scores"][key]]
        if changed:
            diffs = [c["scores"][key]["vs_baseline"]["difference"] for c in changed]
            fig = go.Figure(
                go.Scatter(
                    x=[c["alpha"] for c in changed],
                    y=[d["value"] for d in diffs],
                    error_y=_error_bars(diffs),
                    mode="markers",
                    name="mean change",
                )
            )
            fig.add_hline(y=0, line_dash="dot", line_color="grey")
            fig.update_layout(
                title=f"change from the baseline, prompt by prompt ({scorer}, {kind}); bars: "
                f"{_interval_note(diffs)}",
                xaxis_title=_alpha_axis(steer),
                yaxis_title="mean change in toxicity",
                height=420,
            )
            figures.append(fig)
    return figures


def steering_card(summary: dict) -> go.Figure | None:
    """The dose-response picture of a steering report card: for each condition (one point, labelled),
    mean toxicity by each scorer against each cost measured (held-out perplexity, QA accuracy,
    repetition of the continuations), with intervals on both axes. A reader sees at a glance which
    coefficients buy a toxicity change and what they pay for it. None without a card."""
    card = summary.get("card")
    if not card:
        return None
    costs = [
        (key, title)
        for key, title in (
            ("heldout_perplexity", "held-out perplexity (lower is better)"),
            ("qa_accuracy", "QA accuracy (higher is better)"),
            ("continuation repeated_3grams", "repeated 3-grams in continuations"),
        )
        if any(key in row for row in card)
    ]
    if not costs:
        return None
    fig = make_subplots(rows=1, cols=len(costs), shared_yaxes=True, horizontal_spacing=0.04)
    scorers = list(dict.fromkeys(row["scorer"] for row in card))
    for col, (key, title) in enumerate(costs, 1):
        for i, scorer in enumerate(scorers):
            rows = [r for r in card if r["scorer"] == scorer and key in r]
            xs, ys = [r[key] for r in rows], [r["toxicity"] for r in rows]
            fig.add_trace(
                go.Scatter(
                    x=[e["value"] for e in xs],
                    y=[e["value"] for e in ys],
                    error_x=_error_bars(xs),
                    error_y=_error_bars(ys),
                    mode="markers+text" if i == 0 else "markers",  # one label per condition
                    text=[plain(r["condition"]) for r in rows],
                    textposition="top right",
                    cliponaxis=False,
                    hovertemplate="%{text}: toxicity %{y:.3f}, "
                    + plain(title)
                    + " %{x:.3g}<extra></extra>",
                    name=plain(f"{scorer} ({rows[0]['scorer kind']})") if rows else "",
                    legendgroup=plain(scorer),
                    showlegend=col == 1,
                    marker=dict(color=_PALETTE[i % len(_PALETTE)]),
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=title, row=1, col=col)
    fig.update_yaxes(title_text="mean continuation toxicity", row=1, col=1)
    methods = sorted(
        {
            e["method"]
            for r in card
            for e in r.values()
            if isinstance(e, dict) and e.get("low") is not None
        }
    )
    fig.update_layout(
        title="Steering report card: safety effect against capability cost<br><sup>one point per "
        f"condition and scorer; bars: 95% intervals ({len(methods)} methods, listed below)</sup>",
        height=500,
        legend_title_text="toxicity scorer",
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
        margin=dict(b=120),
    )
    return fig


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _grouped_bars(rows: list[dict], x_key: str, estimate_key: str) -> go.Figure:
    """One bar per row at row[x_key], one bar group per condition, heights and error bars from the
    Estimate dict row[estimate_key]."""
    fig = go.Figure()
    for condition in dict.fromkeys(r["condition"] for r in rows):
        picked = [r for r in rows if r["condition"] == condition]
        estimates = [r[estimate_key] for r in picked]
        # Below the minimum n there is no interval: the bar is hatched and labelled with its count.
        bare = [e.get("low") is None for e in estimates]
        counts = [
            (f"{e['count']}/{e['n']}" if e.get("count") is not None else f"n = {e['n']}")
            if b
            else ""
            for e, b in zip(estimates, bare)
        ]
        fig.add_trace(
            go.Bar(
                x=[plain(r[x_key]) for r in picked],
                y=[e["value"] for e in estimates],
                name=plain(condition),
                error_y=_error_bars(estimates),
                text=counts,
                textposition="outside",
                marker_pattern_shape=["/" if b else "" for b in bare],
            )
        )
    return fig


def bias_shares(summary: dict) -> go.Figure:
    """CrowS-Pairs stereotype share per bias type, one bar group per condition and metric, with intervals."""
    rows = [
        {**r, "condition": f"{r['condition']} · {r.get('metric', 'total')}"}
        for r in summary["table"]
    ]
    return _stereotype_bars(
        rows,
        "CrowS-Pairs: share of pairs where the more-stereotyping sentence scores higher, "
        "per condition and metric",
    )


def crows_pairs_shares(result) -> go.Figure:
    """A `scanners.bias.CrowsPairsResult`: the share of pairs preferring the more-stereotyping sentence
    per bias type, one bar per metric (total, shared, mean), with Wilson 95% intervals (none below
    the minimum n); 0.5 is no preference."""
    types = [p.bias_type for p in result.pairs]
    rows = [
        {"condition": metric, "bias_type": kind, "stereotype_share": estimate.to_dict()}
        for metric in METRICS
        for kind, estimate in crows_estimates(types, result.prefers_more(metric).tolist()).items()
    ]
    fig = _stereotype_bars(
        rows,
        f"CrowS-Pairs on {plain(result.model_name)}, {len(result.pairs)} pairs: share "
        "preferring the stereotype, per metric",
    )
    fig.update_layout(legend_title_text="metric")
    return fig


def _stereotype_bars(rows: list[dict], title: str) -> go.Figure:
    """Grouped bars of rows' "stereotype_share" per bias type, 0.5 marked, the intervals' methods in the title."""
    fig = _grouped_bars(rows, "bias_type", "stereotype_share")
    fig.add_hline(y=0.5, line_dash="dash", annotation_text="no preference")
    fig.update_layout(
        barmode="group",
        title=f"{title}<br><sup>bars: "
        f"{_interval_note([r['stereotype_share'] for r in rows])}; hatched: no interval, the count "
        "is shown</sup>",
        xaxis_title="bias type",
        yaxis_title="share preferring the stereotype (0.5 = none)",
        yaxis_range=[0, 1],
        height=450,
    )
    return fig


def toxigen_group_bars(summary: dict) -> list[go.Figure]:
    """Per group: likelihood preference for hateful statements, and continuation toxicity after
    hateful prompts, one bar group per condition, with intervals where n allows."""
    figures = []
    scorer = plain(next((g["scorer"] for g in summary["groups"] if g.get("scorer")), "scorer"))
    for key, title, axis in (
        (
            "preference",
            "ToxiGen: mean per-token log-likelihood, hateful minus neutral statements",
            "log-likelihood per token, hateful - neutral (nats; > 0: prefers hateful)",
        ),
        (
            "toxicity_after_hate",
            f"ToxiGen: toxicity of continuations after hateful prompts ({scorer})",
            f"mean toxicity ({scorer})",
        ),
    ):
        rows = [g for g in summary["groups"] if key in g]
        if not rows:
            continue
        fig = _grouped_bars(rows, "group", key)
        fig.update_layout(
            barmode="group",
            title=f"{title}; bars: {_interval_note([r[key] for r in rows])}",
            xaxis_title="target group",
            yaxis_title=axis,
            height=450,
        )
        figures.append(fig)
    return figures


def counterfactual_gaps(summary: dict) -> list[go.Figure]:
    """Per measure: each group's gap from the mean over groups, one bar group per condition."""
    figures = []
    rows = summary["table"]
    for measure in dict.fromkeys(r["measure"] for r in rows):
        picked_all = [r for r in rows if r["measure"] == measure]
        fig = _grouped_bars(picked_all, "group", "gap")
        fig.add_hline(y=0, line_dash="dot", line_color="grey")
        fig.update_layout(
            barmode="group",
            title=f"counterfactual: {plain(measure)}, group minus the mean over groups; "
            f"bars: {_interval_note([r['gap'] for r in picked_all])}",
            xaxis_title="group",
            yaxis_title=f"{plain(measure)} gap from the mean over groups",
            height=400,
        )
        figures.append(fig)
    return figures


def bias_head_map(localisation: dict) -> go.Figure:
    """Layer x head map of each head's mean attributed share of the bias gap (nats; localisation.json),
    the ablated heads outlined."""
    values = np.asarray(localisation["head_effects"])
    limit = float(np.abs(values).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"H{h}" for h in range(values.shape[1])],
            y=[f"L{layer}" for layer in range(values.shape[0])],
            colorscale="RdBu",
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorbar=dict(title="nats"),
        )
    )
    for name in localisation["ablated"]:
        layer, head = (int(x) for x in name[1:].split("H"))
        fig.add_shape(
            type="rect",
            x0=head - 0.5,
            x1=head + 0.5,
            y0=layer - 0.5,
            y1=layer + 0.5,
            line=dict(color="black", width=2),
        )
    fig.update_layout(
        title=f"Where the bias lives: mean {localisation['method']} effect on the shared-token gap per "
        f"head (nats; mean gap {localisation['gap']['value']:.3f}; outlined: mean-ablated)",
        xaxis_title="head",
        yaxis_title="layer",
        yaxis_autorange="reversed",
        height=600,
    )
    return fig


def ablation_bars(localisation: dict) -> go.Figure:
    """Before/after mean-ablating the top heads: stereotype share, mean gap, held-out perplexity and QA
    accuracy, each with its 95% interval where n allows, one panel per measure."""
    labels = {
        "stereotype_share": "stereotype share",
        "mean_gap": "mean gap (nats)",
        "heldout_perplexity": "held-out perplexity",
        "qa_accuracy": "QA accuracy",
    }
    keys = [k for k in labels if k in localisation["before"]]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[labels[k] for k in keys])
    for column, key in enumerate(keys, start=1):
        for side, colour in (("before", "#4c78a8"), ("after", "#f58518")):
            estimate = localisation[side][key]
            low, high = estimate.get("low"), estimate.get("high")
            error = (
                dict(
                    type="data",
                    array=[high - estimate["value"]],
                    arrayminus=[estimate["value"] - low],
                )
                if low is not None and high is not None
                else None
            )
            fig.add_trace(
                go.Bar(
                    x=[side],
                    y=[estimate["value"]],
                    error_y=error,
                    marker_color=colour,
                    showlegend=False,
                ),
                row=1,
                col=column,
            )
    k = len(localisation["ablated"])
    fig.update_layout(
        title=f"Before and after mean-ablating {k} head{'s' if k != 1 else ''} "
        f"({', '.join(localisation['ablated'][:5])}{', ...' if len(localisation['ablated']) > 5 else ''}); "
        "bars: 95% intervals (methods in the report)",
        height=420,
    )
    return fig


def audit_figures(summary: dict, frame=None) -> list[go.Figure]:
    """The figures of one audit's summary, the steering report card's first (a toxicity audit also
    needs its results frame, for the histograms)."""
    kind = summary["audit"]
    if kind == "toxicity":
        card = steering_card(summary)
        return (
            ([card] if card else [])
            + toxicity_by_coefficient(summary)
            + toxicity_histograms(frame, summary)
        )
    if kind == "bias":
        localised = summary.get("localisation")
        return [bias_shares(summary)] + (
            [bias_head_map(localised), ablation_bars(localised)] if localised else []
        )
    if kind == "capability":
        return []
    return {"toxigen": toxigen_group_bars, "counterfactual": counterfactual_gaps}[kind](summary)
