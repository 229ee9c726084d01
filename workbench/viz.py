"""Plotly figures, one function per picture. Each returns a `plotly.graph_objects.Figure`;
`save_html(fig, path)` writes a self-contained page (plotly.js inlined, works offline)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go


def plain(text) -> str:
    """User text (prompts, tokens, names) made inert for plotly, which reads a few HTML tags in labels
    and titles: < > & become entities, which plotly shows as the characters themselves."""
    return html.escape(str(text), quote=False)


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """Write `fig` as one self-contained HTML file (no network needed to open it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def head_pattern(patterns, layer: int, head: int, hide_first: bool = False) -> go.Figure:
    """Heatmap of one head's attention (query rows, key columns) with token labels.

    hide_first: leave out the first token (query row and key column), where many heads park
    their attention (the "sink"); colours then run to the largest weight shown."""
    labels = [plain(f"{i}:{t}") for i, t in enumerate(patterns.tokens)]
    z = patterns.head(layer, head)
    if hide_first:
        z, labels = z[1:, 1:], labels[1:]
    fig = go.Figure(
        go.Heatmap(
            z=z.numpy(),
            x=labels,
            y=labels,
            colorscale="Blues",
            zmin=0,
            zmax=float(z.max()) if hide_first and z.numel() else 1,
            colorbar=dict(title="attention"),
            hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"L{layer}H{head} attention" + (" (first token hidden)" if hide_first else ""),
        xaxis_title="key",
        yaxis_title="query",
        yaxis_autorange="reversed",
        height=600,
    )
    return fig


def head_score_grid(scores, kind: str = "induction") -> go.Figure:
    """Layer x head grid of one head score."""
    grid = scores.scores[kind].numpy()
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=[f"H{h}" for h in range(grid.shape[1])],
            y=[f"L{l}" for l in range(grid.shape[0])],
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=dict(title=kind),
        )
    )
    fig.update_layout(
        title=f"{kind.replace('_', ' ')} score ({scores.model_name})",
        xaxis_title="head",
        yaxis_title="layer",
        yaxis_autorange="reversed",
        height=600,
    )
    return fig


def _shortened(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def logit_lens_heatmap(lens) -> go.Figure:
    """Probability of each tracked token per layer, top token written in each row."""
    z = lens.probs.numpy()
    text = [[plain(row[0][0])] * max(1, z.shape[1]) for row in lens.top_tokens]
    fig = go.Figure(
        go.Heatmap(
            z=z if z.size else [[p[0][1]] for p in lens.top_tokens],
            x=[plain(repr(t)) for t in lens.tracked] or ["top token"],
            y=lens.layers,
            text=text,
            texttemplate="%{text}",
            colorscale="Purples",
            zmin=0,
            zmax=1,
            colorbar=dict(title="probability"),
        )
    )
    fig.update_layout(
        title=plain(f"logit lens at position {lens.position}: {_shortened(lens.text, 60)!r}"),
        yaxis_autorange="reversed",
        height=max(400, 18 * len(lens.layers)),
    )
    return fig


def logit_lens_grid_heatmap(grid) -> go.Figure:
    """Layer x position map of the logit lens: each cell names the top next token and is coloured
    by its log-probability."""
    import numpy as np

    z = grid.top_logprobs.numpy()
    columns = [plain(f"{p}:{t}") for p, t in enumerate(grid.tokens)]
    text = [[plain(token) for token in row] for row in grid.top_tokens]
    # The colours span the log-probabilities present (2nd percentile, within [-10, -1]): a fixed -10
    # floor left most maps one dark shade, since a late layer's top token usually has log p above -3.
    low = float(np.clip(np.percentile(z, 2), -10.0, -1.0)) if z.size else -10.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=grid.layers,
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=10),
            colorscale="Purples",
            zmin=low,
            zmax=0,
            colorbar=dict(title="log p"),
            hovertemplate="%{y}, after %{x}: next %{text} (log p %{z:.2f})<extra></extra>",
        )
    )
    fig.update_layout(
        title=plain(
            f"logit lens: the top next token at every layer and position of "
            f"{_shortened(grid.text, 50)!r}"
        ),
        xaxis_title="position",
        yaxis_title="layer",
        yaxis_autorange="reversed",
        height=max(420, 20 * len(grid.layers)),
    )
    return fig


def dla_bars(attribution, top: int = 20) -> go.Figure:
    """The largest direct logit attribution components as horizontal bars, every bar labelled."""
    frame = attribution.to_frame()
    frame = frame.reindex(frame["value"].abs().sort_values(ascending=False).index).head(top)
    fig = go.Figure(
        go.Bar(
            x=frame["value"],
            y=frame["component"],
            orientation="h",
            text=[f"{v:+.2f}" for v in frame["value"]],
            textposition="outside",
            marker_color=["#2b8cbe" if v > 0 else "#e34a33" for v in frame["value"]],
        )
    )
    fig.update_layout(
        title=plain(
            f"direct logit attribution: logit[{attribution.answer!r}] - "
            f"logit[{attribution.other!r}] = {attribution.logit_diff:.2f}"
        ),
        yaxis_autorange="reversed",
        xaxis_title="contribution to the logit difference",
        height=max(400, 24 * len(frame)),
    )
    fig.update_yaxes(
        tickmode="array", tickvals=list(frame["component"]), ticktext=list(frame["component"])
    )
    return fig


def patching_heatmap(result, limit: float | None = None) -> go.Figure:
    """Layer x position or layer x head map of a 2-D patching result (centred on 0).

    limit: the colour range is [-limit, limit] (default: this result's largest |value|); give
    the same limit to maps that are compared side by side."""
    values = result.values if result.values.dim() == 2 else result.values.reshape(-1, 1)
    x_labels = [plain(label) for label in result.labels[1]] if len(result.labels) > 1 else ["all"]
    limit = limit or float(values.abs().max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values.numpy(),
            x=x_labels,
            y=result.labels[0],
            colorscale="RdBu",
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorbar=dict(title="normalised"),
        )
    )
    fig.update_layout(
        title=f"{result.method} patching: {result.kind} (0 = corrupted, 1 = clean)",
        xaxis_title=result.axes[1] if len(result.axes) > 1 else "",
        yaxis_title=result.axes[0],
        yaxis_autorange="reversed",
        height=600,
    )
    return fig


def methods_vs_exact(exact, estimates: list) -> go.Figure:
    """One scatter of every attribution method's estimates against exact patching, cell by cell, one colour
    per method, Pearson r of each in the legend and the title, with the y = x line."""
    import torch

    x = exact.values.flatten()
    labels = [plain(" ".join(parts)) for parts in _cell_labels(exact)]
    traces, titles, low, high = [], [], float(x.min()), float(x.max())
    for estimate in estimates:
        y = estimate.values.flatten()
        r = float(torch.corrcoef(torch.stack([x, y]))[0, 1]) if len(x) > 1 else float("nan")
        traces.append(
            go.Scatter(
                x=x.numpy(),
                y=y.numpy(),
                mode="markers",
                text=labels,
                name=f"{estimate.method} (r = {r:.3f})",
            )
        )
        titles.append(f"{estimate.method} r = {r:.3f}")
        low, high = min(low, float(y.min())), max(high, float(y.max()))
    traces.append(
        go.Scatter(x=[low, high], y=[low, high], mode="lines", line=dict(dash="dash"), name="y = x")
    )
    fig = go.Figure(traces)
    fig.update_layout(
        title=f"{exact.kind}: estimates vs exact patching (Pearson {', '.join(titles)})",
        xaxis_title="exact (normalised)",
        yaxis_title="estimate (normalised)",
        height=550,
    )
    return fig


def self_check_scatter(result) -> go.Figure:
    """An attribution result's self-check: its estimate against exact patching on the checked cells (top k
    and a random sample), with the figures and the verdict in the title."""
    check = result.check
    top = [i < check.k for i in range(check.checked)]
    traces = [
        go.Scatter(
            x=[e for e, t in zip(check.exact, top) if t == wanted],
            y=[v for v, t in zip(check.estimate, top) if t == wanted],
            mode="markers",
            text=[plain(c) for c, t in zip(check.labels, top) if t == wanted],
            name=name,
        )
        for wanted, name in ((True, f"top {check.k} by |estimate|"), (False, "random sample"))
    ]
    low, high = min(check.exact + check.estimate), max(check.exact + check.estimate)
    traces.append(
        go.Scatter(x=[low, high], y=[low, high], mode="lines", line=dict(dash="dash"), name="y = x")
    )
    fig = go.Figure(traces)
    verdict = "passed" if check.passed else "FAILED: verify the ranking by exact patching"
    fig.update_layout(
        title=f"self-check of {check.method} on {check.kind}: Pearson r {check.pearson:.3f}, "
        f"recall of exact top-{check.k} {check.recall:.2f}"
        + (
            ""
            if check.recall_low is None
            else f" [{check.recall_low:.2f}, {check.recall_high:.2f}]"
        )
        + f", largest error {check.max_error:.3f} "
        f"({check.checked} of {check.cells} cells); {verdict}",
        xaxis_title="exact (normalised)",
        yaxis_title=f"{check.method} (normalised)",
        height=550,
    )
    return fig


def _cell_labels(result) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*result.labels))


def steering_sweep(result) -> go.Figure:
    """The chosen metric against the steering coefficient."""
    fig = go.Figure(go.Scatter(x=result.alphas, y=result.values, mode="lines+markers"))
    fig.update_layout(
        title=f"steering sweep at layer {result.layer} ({result.method})",
        xaxis_title="coefficient alpha",
        yaxis_title=result.metric,
        height=450,
    )
    return fig


def save_html_many(figs: list[go.Figure], path: str | Path, title: str = "workbench") -> Path:
    """Several figures in one self-contained HTML page (plotly.js inlined once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    from .storage import write_atomically

    return write_atomically(
        path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title></head><body>{''.join(parts)}</body></html>",
    )


def save_static(
    fig: go.Figure, path: str | Path, width: int = 1000, height: int | None = None
) -> Path | None:
    """Write `fig` as a PNG (plotly's kaleido, which drives a local Chromium), for places that
    cannot run plotly.js: GitHub's notebook view, a paper. Returns the path, or None after one
    line on stderr when kaleido or Chromium is missing (the interactive figure is unaffected)."""
    import sys
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _start_kaleido()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "kopts ... ignored if using a server"
            fig.write_image(str(path), width=width, height=height or fig.layout.height or 500)
    except Exception as error:  # noqa: BLE001 - kaleido reports a missing browser in several ways
        print(
            f"note: no static image {path.name} ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "pip install kaleido, and install Chromium (make setup does both)",
            file=sys.stderr,
        )
        return None
    return path


_KALEIDO_STARTED = False


def _start_kaleido() -> None:
    """Keep one headless Chromium for every image of this process (about 0.3 s an image instead of
    3 s when each image starts its own browser); stopped at exit."""
    global _KALEIDO_STARTED
    if _KALEIDO_STARTED:
        return
    import atexit

    import kaleido

    kaleido.start_sync_server(silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)
    _KALEIDO_STARTED = True


def show(fig: go.Figure, save_as: str | Path | None = None) -> None:
    """Show `fig` in a notebook and, with `save_as`, also write it as a PNG (save_static)."""
    fig.show()
    if save_as is not None:
        save_static(fig, save_as)


def pattern_thumbnails(
    patterns, layer: int, columns: int = 6, hide_first: bool = False
) -> go.Figure:
    """Small attention maps of every head in one layer, in a grid (query rows, key columns);
    hide_first leaves out the first token, as in `head_pattern`."""
    from plotly.subplots import make_subplots

    n_heads = patterns.patterns.shape[1]
    first = 1 if hide_first else 0
    rows = (n_heads + columns - 1) // columns
    fig = make_subplots(
        rows=rows,
        cols=min(columns, n_heads),
        subplot_titles=[f"L{layer}H{h}" for h in range(n_heads)],
        horizontal_spacing=0.02,
        vertical_spacing=0.08,
    )
    for head in range(n_heads):
        z = patterns.head(layer, head)[first:, first:]
        fig.add_trace(
            go.Heatmap(
                z=z.numpy(),
                colorscale="Blues",
                zmin=0,
                zmax=float(z.max()) if hide_first and z.numel() else 1,
                showscale=False,
                hovertemplate="query %{y}, key %{x}: %{z:.2f}<extra></extra>",
            ),
            row=head // columns + 1,
            col=head % columns + 1,
        )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(
        title=f"layer {layer}: every head's attention",
        height=170 * rows + 80,
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def probe_curve(sweep) -> go.Figure:
    """Validation and test AUROC of a probe sweep (ProbeSweep) per hook, logistic and mean-difference,
    with the hook chosen on validation marked."""
    import re

    frame = sweep.to_frame()
    labels = [
        re.sub(r"^blocks\.(\d+)\.hook_", r"L\1 ", hook) for hook in frame["hook"]
    ]  # "L12 resid_post"
    fig = go.Figure()
    styles = {
        "val_auroc": ("logistic, validation", "solid"),
        "test_auroc": ("logistic, test", "dot"),
        "mean_difference_val_auroc": ("mean difference, validation", "solid"),
        "mean_difference_test_auroc": ("mean difference, test", "dot"),
    }
    for column, (name, dash) in styles.items():
        fig.add_trace(
            go.Scatter(
                x=labels, y=frame[column], mode="lines+markers", name=name, line=dict(dash=dash)
            )
        )
    chosen = labels[list(frame["hook"]).index(sweep.chosen)]
    fig.add_vline(x=chosen, line_dash="dash", line_color="grey")
    fig.add_annotation(
        x=chosen, y=1.02, text=f"chosen on validation: {chosen}", showarrow=False, yanchor="bottom"
    )
    fig.add_hline(y=0.5, line_dash="dot", line_color="lightgrey")
    fig.update_layout(
        title=f"probe per hook, AUROC ({sweep.split} split: {sweep.n_train} train, {sweep.n_val} "
        f"validation, {sweep.n_test} test)",
        xaxis_title="hook",
        yaxis_title="AUROC (0.5 = chance)",
        yaxis_range=[0, 1.08],
        height=440,
    )
    return fig


def reliability_curve(probe) -> go.Figure:
    """Observed frequency of label 1 against the mean predicted probability, per bin, on the test
    rows of a chosen probe (its metrics["calibration"]), with the diagonal of perfect calibration."""
    calibration = probe.metrics["calibration"]
    bins = calibration["bins"]
    fig = go.Figure(
        [
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line=dict(dash="dash", color="grey"),
                name="perfectly calibrated",
            ),
            go.Scatter(
                x=[b["predicted"] for b in bins],
                y=[b["observed"] for b in bins],
                mode="lines+markers",
                marker=dict(size=[6 + 30 * b["count"] / calibration["n"] for b in bins]),
                text=[f"{b['count']} texts" for b in bins],
                name="probe",
            ),
        ]
    )
    fig.update_layout(
        title=f"calibration of {probe.hook} on {calibration['n']} test texts: expected calibration "
        f"error {calibration['ece']:.3f}",
        xaxis_title="mean predicted P(label = 1) in the bin",
        yaxis_title="observed share of label 1",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        height=420,
    )
    return fig


def token_highlight_html(tokens: list[str], scores) -> str:
    """HTML with each token shaded by its score in [0, 1] (white 0 to red 1); hover shows the score."""
    import html

    spans = []
    for token, score in zip(tokens, [float(s) for s in scores]):
        shade = int(255 * (1 - max(0.0, min(1.0, score))))
        spans.append(
            f'<span title="{score:.3f}" style="background:rgb(255,{shade},{shade});padding:2px 1px;'
            f'border-radius:3px;white-space:pre-wrap">{html.escape(token)}</span>'
        )
    return f'<div style="font-family:monospace;line-height:2">{"".join(spans)}</div>'


def steered_toxicity(result) -> go.Figure:
    """Toxicity of the continuation against the steering coefficient (SteeredGenerations)."""
    fig = go.Figure(
        go.Scatter(
            x=result.alphas,
            y=result.toxicity,
            mode="lines+markers",
            text=[t[:80] for t in result.texts],
            hovertemplate="alpha %{x}: %{y:.3f}<br>%{text}",
        )
    )
    fig.update_layout(
        title=f"continuation toxicity ({result.scorer}) against the coefficient, layer {result.layer}",
        xaxis_title="coefficient alpha",
        yaxis_title="toxicity",
        height=420,
    )
    return fig


def norms_by_layer(cache, labels: list[str]) -> go.Figure:
    """Norm of each text's cached vector per hook (positions "last"/"mean"), one line per text."""
    import torch

    norms = torch.stack([cache[hook].float().norm(dim=-1) for hook in cache.hooks])  # [hook, text]
    fig = go.Figure(
        [go.Scatter(y=norms[:, i].numpy(), name=label[:30]) for i, label in enumerate(labels)]
    )
    fig.update_layout(
        title="activation norm by layer",
        xaxis_title="layer (hook index)",
        yaxis_title="norm",
        height=420,
    )
    return fig


# ----------------------------------------------------------------------------- audits
# Each takes an audit's summary (workbench.report.summarise); numbers with uncertainty are
# Estimate dicts, drawn with error bars only where an interval exists (none below the minimum n).

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
    from .report import TOX_PREFIX

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
    from plotly.subplots import make_subplots

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
    from .scanners.bias import METRICS, crows_estimates

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


def toxigen_groups(summary: dict) -> list[go.Figure]:
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
    import numpy as np

    values = np.asarray(localisation["head_effects"])
    limit = float(np.abs(values).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"H{h}" for h in range(values.shape[1])],
            y=[f"L{l}" for l in range(values.shape[0])],
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
    from plotly.subplots import make_subplots

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
