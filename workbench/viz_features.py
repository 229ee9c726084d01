"""Feature figures (sparse autoencoders), beside `workbench.viz` and importing nothing above core:
a latent's card as one self-contained HTML block, its activation histogram, and an SAE's training
curve. They read the result objects of `workbench.interp.sae_features` / `sae_train` by their
fields."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from .viz import plain, token_highlight_html


def feature_histogram(card) -> go.Figure:
    """Bar chart of a latent's non-zero activations (`card.histogram`: counts, bin edges)."""
    counts, edges = card.histogram
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts, marker_color="#c0392b"))
    fig.update_layout(
        title=plain(
            f"latent {card.latent}: non-zero activations ({sum(counts)} of {card.n_tokens} tokens)"
        ),
        xaxis_title="activation",
        yaxis_title="tokens",
        height=260,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    return fig


def feature_card_html(card) -> str:
    """A latent's card: density, logit effects, and its top contexts with each token shaded by
    the activation (relative to the card's maximum)."""
    peak = max([c["max"] for c in card.contexts] or [1.0]) or 1.0
    rows = "".join(
        f"<tr><td>{c['max']:.2f}</td><td>{token_highlight_html(c['tokens'], [a / peak for a in c['activations']])}</td></tr>"
        for c in card.contexts
    )
    promoted = ", ".join(f"<code>{html.escape(repr(t))}</code> {v:+.2f}" for t, v in card.promoted)
    suppressed = ", ".join(
        f"<code>{html.escape(repr(t))}</code> {v:+.2f}" for t, v in card.suppressed
    )
    return (
        f"<div class='feature-card'><h3>Latent {card.latent} <small>{html.escape(card.hook)}</small></h3>"
        f"<p>Active on {card.density:.3%} of {card.n_tokens} tokens.</p>"
        f"<p><b>Promotes</b> (W_dec @ W_U): {promoted}</p><p><b>Suppresses</b>: {suppressed}</p>"
        f"<table><tr><th>max</th><th>top-activating context</th></tr>{rows}</table></div>"
    )


def training_curve(curves: dict, reference: tuple[float, float, str] | None = None) -> go.Figure:
    """FVU against training tokens, one line per name -> SAE metadata["training"]["curve"];
    `reference` (tokens, fvu, label) marks a published point for comparison."""
    fig = go.Figure()
    for name, curve in curves.items():
        fig.add_trace(go.Scatter(x=curve["tokens"], y=curve["fvu"], mode="lines", name=plain(name)))
    if reference is not None:
        fig.add_trace(
            go.Scatter(
                x=[reference[0]],
                y=[reference[1]],
                mode="markers+text",
                text=[plain(reference[2])],
                textposition="top left",
                name=plain(reference[2]),
            )
        )
    fig.update_layout(
        xaxis_type="log",
        xaxis_title="training tokens",
        yaxis_title="FVU (training batches)",
        title="SAE training curve",
        height=360,
    )
    return fig
