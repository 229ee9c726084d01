"""Attention heads: head-score grid, per-layer thumbnails, one head's full pattern, ranked table."""

import streamlit as st

from workbench import viz
from workbench.dashboard import compute
from workbench.dashboard.common import errors_shown, get_model, model_name, plot, prompt
from workbench.interp.attention import SCORE_KINDS

st.header("Attention heads")
with errors_shown():
    name = model_name()
    info = get_model(name).info
    st.caption(
        "Scores come from repeated random tokens: previous-token heads attend one back, duplicate-token "
        "heads to the earlier copy of the current token, induction heads to the token after it."
    )
    left, right = st.columns(2)
    kind = left.selectbox(
        "Score", SCORE_KINDS, index=SCORE_KINDS.index("induction"), key="attn_kind"
    )
    seq_len = right.slider("Random sequence length", 10, 100, 40, step=10, key="attn_seq_len")
    scores = compute.head_scores(name, seq_len, 8)
    plot(viz.head_score_grid(scores, kind), "attn_grid")
    st.subheader("Ranked heads")
    st.dataframe(
        scores.to_frame().sort_values(kind, ascending=False),
        hide_index=True,
        height=260,
        width="stretch",
    )

    st.subheader("Patterns on the sidebar prompt")
    patterns = compute.attention_patterns(name, prompt())
    top = scores.top(kind, 1).iloc[0]
    left, right = st.columns(2)
    layer = left.number_input("Layer", 0, info.n_layers - 1, int(top["layer"]), key="attn_layer")
    head = right.number_input("Head", 0, info.n_heads - 1, int(top["head"]), key="attn_head")
    hide = st.toggle(
        "Hide the first token",
        value=True,
        key="attn_hide_first",
        help="Many heads park most of their attention on the first token (an attention sink), which "
        "washes out everything else; hidden, the colours run to the largest weight shown.",
    )
    plot(viz.pattern_thumbnails(patterns, int(layer), hide_first=hide), "attn_thumbs")
    plot(viz.head_pattern(patterns, int(layer), int(head), hide_first=hide), "attn_head_pattern")
