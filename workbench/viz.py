"""Interpretability figures: plotly, one function per picture (attention heads, the logit lens,
direct logit attribution, patching maps and self-checks, steering sweeps, probes), and the save
and show helpers every figure uses: `save_html(fig, path)` writes a self-contained page
(plotly.js inlined, opens offline), `save_static` a PNG, `show` both in a notebook. The audit
figures, drawn from an audit's summary, are in `workbench.report.figures`."""

from __future__ import annotations

import atexit
import html
import itertools
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .core.storage import write_atomically


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
        title=f"L{layer}H{head} attention"
        + (
            f" (first token hidden; colours run to this head's largest remaining weight, "
            f"{float(z.max()) if z.numel() else 0:.3f}, not to 1)"
            if hide_first
            else ""
        ),
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
            y=[f"L{layer}" for layer in range(grid.shape[0])],
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

    # lazy: optional: static images only
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
    hide_first leaves out the first token, as in `head_pattern`, and scales each map to its own
    largest remaining weight, which its title shows."""
    n_heads = patterns.patterns.shape[1]
    first = 1 if hide_first else 0
    rows = (n_heads + columns - 1) // columns
    top = [float(patterns.head(layer, h)[first:, first:].max()) for h in range(n_heads)]
    fig = make_subplots(
        rows=rows,
        cols=min(columns, n_heads),
        subplot_titles=[
            f"L{layer}H{h}" + (f" (max {top[h]:.2f})" if hide_first else "") for h in range(n_heads)
        ],
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
        title=f"layer {layer}: every head's attention"
        + (", first token hidden: each map scaled to its own max" if hide_first else ""),
        height=170 * rows + 80,
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def probe_curve(sweep) -> go.Figure:
    """Validation and test AUROC of a probe sweep (ProbeSweep) per hook, logistic and mean-difference,
    with the hook chosen on validation marked."""
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
    spans = []
    for token, score in zip(tokens, [float(s) for s in scores]):
        shade = int(255 * (1 - max(0.0, min(1.0, score))))
        spans.append(
            f'<span title="{score:.3f}" style="background:rgb(255,{shade},{shade});padding:2px 1px;'
            f'border-radius:3px;white-space:pre-wrap">{html.escape(token)}</span>'
        )
    return f'<div style="font-family:monospace;line-height:2">{"".join(spans)}</div>'


def steered_toxicity(result) -> go.Figure:
    """Toxicity of the continuation against the steering coefficient (SteeredGenerations): one
    greedy continuation per coefficient (n = 1 each, an anecdote, not an estimate), on the scorer's
    whole 0-1 scale so that small wiggles do not look like effects."""
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
        title=f"continuation toxicity ({result.scorer}) against the coefficient, layer {result.layer}"
        "<br><sup>one continuation per coefficient (n = 1): an example, not an estimate; "
        "the audit measures with intervals</sup>",
        xaxis_title="coefficient alpha",
        yaxis_title="toxicity",
        yaxis_range=[0, 1],
        height=420,
    )
    return fig


def norms_by_layer(cache, labels: list[str]) -> go.Figure:
    """Norm of each text's cached vector per hook (positions "last"/"mean"), one line per text."""
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


def pareto_figure(result) -> go.Figure:
    """A detoxification search's candidates (a SearchResult or its search.json as a dict): validation Expected Maximum Toxicity (selection
    scorer) against the cost in QA points (left) and held-out perplexity percent (right), the
    chosen ones ringed, the budgets dashed, the baseline a star."""
    record = result if isinstance(result, dict) else result.record
    rows = record["candidates"]
    budgets = (record["options"]["budget_qa"], record["options"]["budget_perplexity"])
    costs = ("qa loss (points)", "perplexity change (%)")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=costs)
    for col, (cost, budget) in enumerate(zip(costs, budgets), start=1):
        for chosen in (False, True):
            part = [
                r for r in rows if bool(r.get("chosen")) == chosen and r["candidate"] != "baseline"
            ]
            fig.add_trace(
                go.Scatter(
                    x=[r[cost] for r in part], y=[r["select"] for r in part],
                    text=[plain(r["candidate"]) for r in part], mode="markers+text",
                    textposition="top right", textfont=dict(size=9),
                    marker=dict(size=12 if chosen else 8, symbol="circle-open" if chosen else "circle",
                                line=dict(width=3 if chosen else 0)),
                    name="chosen" if chosen else "candidate", showlegend=col == 1,
                    hovertemplate="%{text}<br>cost %{x:.3g}<br>EMT %{y:.3f}<extra></extra>",
                ),  # fmt: skip
                row=1, col=col,
            )  # fmt: skip
        base = next(r for r in rows if r["candidate"] == "baseline")
        fig.add_trace(
            go.Scatter(x=[0], y=[base["select"]], mode="markers", marker=dict(symbol="star", size=14),
                       name="baseline", showlegend=col == 1),
            row=1, col=col,
        )  # fmt: skip
        fig.add_vline(x=budget, line_dash="dash", row=1, col=col)
    fig.update_yaxes(
        title_text=f"validation Expected Maximum Toxicity ({plain(record['select_by'])})", col=1
    )
    fig.update_layout(
        title="Detoxification candidates on the validation prompts: toxicity against cost"
    )
    return fig
