"""Plotly figures, one function per picture. Each returns a `plotly.graph_objects.Figure`;
`save_html(fig, path)` writes a self-contained page (plotly.js inlined, works offline)."""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """Write `fig` as one self-contained HTML file (no network needed to open it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def head_pattern(patterns, layer: int, head: int) -> go.Figure:
    """Heatmap of one head's attention (query rows, key columns) with token labels."""
    labels = [f"{i}:{t}" for i, t in enumerate(patterns.tokens)]
    fig = go.Figure(go.Heatmap(z=patterns.head(layer, head).numpy(), x=labels, y=labels, colorscale="Blues",
                               zmin=0, zmax=1, colorbar=dict(title="attention")))
    fig.update_layout(title=f"L{layer}H{head} attention", xaxis_title="key", yaxis_title="query",
                      yaxis_autorange="reversed", height=600)
    return fig


def head_score_grid(scores, kind: str = "induction") -> go.Figure:
    """Layer x head grid of one head score."""
    grid = scores.scores[kind].numpy()
    fig = go.Figure(go.Heatmap(z=grid, x=[f"H{h}" for h in range(grid.shape[1])],
                               y=[f"L{l}" for l in range(grid.shape[0])], colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title=kind)))
    fig.update_layout(title=f"{kind.replace('_', ' ')} score ({scores.model_name})", xaxis_title="head",
                      yaxis_title="layer", yaxis_autorange="reversed", height=600)
    return fig


def logit_lens_heatmap(lens) -> go.Figure:
    """Probability of each tracked token per layer, top token written in each row."""
    z = lens.probs.numpy()
    text = [[row[0][0]] * max(1, z.shape[1]) for row in lens.top_tokens]
    fig = go.Figure(go.Heatmap(z=z if z.size else [[p[0][1]] for p in lens.top_tokens],
                               x=[repr(t) for t in lens.tracked] or ["top token"], y=lens.layers,
                               text=text, texttemplate="%{text}", colorscale="Purples", zmin=0, zmax=1,
                               colorbar=dict(title="probability")))
    fig.update_layout(title=f"logit lens at position {lens.position}: {lens.text[:60]!r}",
                      yaxis_autorange="reversed", height=max(400, 18 * len(lens.layers)))
    return fig


def dla_bars(attribution, top: int = 20) -> go.Figure:
    """The largest direct logit attribution components as horizontal bars."""
    frame = attribution.to_frame()
    frame = frame.reindex(frame["value"].abs().sort_values(ascending=False).index).head(top)
    fig = go.Figure(go.Bar(x=frame["value"], y=frame["component"], orientation="h",
                           marker_color=["#2b8cbe" if v > 0 else "#e34a33" for v in frame["value"]]))
    fig.update_layout(title=f"direct logit attribution: logit[{attribution.answer!r}] - logit[{attribution.other!r}]"
                            f" = {attribution.logit_diff:.2f}", yaxis_autorange="reversed",
                      xaxis_title="contribution to the logit difference", height=max(400, 22 * len(frame)))
    return fig


def patching_heatmap(result) -> go.Figure:
    """Layer x position or layer x head map of a 2-D patching result (centred on 0)."""
    values = result.values if result.values.dim() == 2 else result.values.reshape(-1, 1)
    x_labels = result.labels[1] if len(result.labels) > 1 else ["all"]
    limit = float(values.abs().max()) or 1.0
    fig = go.Figure(go.Heatmap(z=values.numpy(), x=x_labels, y=result.labels[0], colorscale="RdBu", zmid=0,
                               zmin=-limit, zmax=limit, colorbar=dict(title="normalised")))
    fig.update_layout(title=f"{result.method} patching: {result.kind} (0 = corrupted, 1 = clean)",
                      xaxis_title=result.axes[1] if len(result.axes) > 1 else "", yaxis_title=result.axes[0],
                      yaxis_autorange="reversed", height=600)
    return fig


def exact_vs_attribution(exact, attribution) -> go.Figure:
    """Scatter of attribution estimates against exact patching, cell by cell, with the y = x line."""
    import torch

    x, y = exact.values.flatten(), attribution.values.flatten()
    labels = [" ".join(parts) for parts in _cell_labels(exact)]
    r = float(torch.corrcoef(torch.stack([x, y]))[0, 1]) if len(x) > 1 else float("nan")
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    fig = go.Figure([go.Scatter(x=x.numpy(), y=y.numpy(), mode="markers", text=labels, name="cells"),
                     go.Scatter(x=[low, high], y=[low, high], mode="lines", line=dict(dash="dash"), name="y = x")])
    fig.update_layout(title=f"{exact.kind}: attribution vs exact patching (Pearson r = {r:.3f})",
                      xaxis_title="exact", yaxis_title="attribution", height=550)
    return fig


def _cell_labels(result) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*result.labels))


def steering_sweep(result) -> go.Figure:
    """The chosen metric against the steering coefficient."""
    fig = go.Figure(go.Scatter(x=result.alphas, y=result.values, mode="lines+markers"))
    fig.update_layout(title=f"steering sweep at layer {result.layer} ({result.method})",
                      xaxis_title="coefficient alpha", yaxis_title=result.metric, height=450)
    return fig


def save_html_many(figs: list[go.Figure], path: str | Path, title: str = "workbench") -> Path:
    """Several figures in one self-contained HTML page (plotly.js inlined once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                    f"<body>{''.join(parts)}</body></html>", encoding="utf-8")
    return path


def pattern_thumbnails(patterns, layer: int, columns: int = 6) -> go.Figure:
    """Small attention maps of every head in one layer, in a grid (query rows, key columns)."""
    from plotly.subplots import make_subplots

    n_heads = patterns.patterns.shape[1]
    rows = (n_heads + columns - 1) // columns
    fig = make_subplots(rows=rows, cols=min(columns, n_heads), subplot_titles=[f"L{layer}H{h}" for h in range(n_heads)],
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for head in range(n_heads):
        fig.add_trace(go.Heatmap(z=patterns.head(layer, head).numpy(), colorscale="Blues", zmin=0, zmax=1,
                                 showscale=False, hovertemplate="query %{y}, key %{x}: %{z:.2f}<extra></extra>"),
                      row=head // columns + 1, col=head % columns + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=f"layer {layer}: every head's attention", height=170 * rows + 80,
                      margin=dict(l=10, r=10, t=70, b=10))
    return fig


def probe_curve(sweep) -> go.Figure:
    """Held-out AUROC and accuracy of a probe sweep (ProbeSweep) per hook."""
    import re

    frame = sweep.to_frame()
    labels = [re.sub(r"^blocks\.(\d+)\.hook_", r"L\1 ", hook) for hook in frame["hook"]]  # "L12 resid_post"
    fig = go.Figure()
    for column in ("auroc", "accuracy", "mean_difference_auroc"):
        fig.add_trace(go.Scatter(x=labels, y=frame[column], mode="lines+markers", name=column))
    fig.update_layout(title=f"probe per hook ({sweep.split} split: {sweep.n_train} train, {sweep.n_test} test)",
                      yaxis_title="held-out score", yaxis_range=[0, 1.02], height=420)
    return fig


def token_highlight_html(tokens: list[str], scores) -> str:
    """HTML with each token shaded by its score in [0, 1] (white 0 to red 1); hover shows the score."""
    import html

    spans = []
    for token, score in zip(tokens, [float(s) for s in scores]):
        shade = int(255 * (1 - max(0.0, min(1.0, score))))
        spans.append(f'<span title="{score:.3f}" style="background:rgb(255,{shade},{shade});padding:2px 1px;'
                     f'border-radius:3px;white-space:pre-wrap">{html.escape(token)}</span>')
    return f'<div style="font-family:monospace;line-height:2">{"".join(spans)}</div>'


def steered_toxicity(result) -> go.Figure:
    """Toxicity of the continuation against the steering coefficient (SteeredGenerations)."""
    fig = go.Figure(go.Scatter(x=result.alphas, y=result.toxicity, mode="lines+markers",
                               text=[t[:80] for t in result.texts], hovertemplate="alpha %{x}: %{y:.3f}<br>%{text}"))
    fig.update_layout(title=f"continuation toxicity ({result.scorer}) against the coefficient, layer {result.layer}",
                      xaxis_title="coefficient alpha", yaxis_title="toxicity", height=420)
    return fig


def norms_by_layer(cache, labels: list[str]) -> go.Figure:
    """Norm of each text's cached vector per hook (positions "last"/"mean"), one line per text."""
    import torch

    norms = torch.stack([cache[hook].float().norm(dim=-1) for hook in cache.hooks])  # [hook, text]
    fig = go.Figure([go.Scatter(y=norms[:, i].numpy(), name=label[:30]) for i, label in enumerate(labels)])
    fig.update_layout(title="activation norm by layer", xaxis_title="layer (hook index)", yaxis_title="norm",
                      height=420)
    return fig
