"""Logit lens (top tokens per layer) and direct logit attribution for an answer pair."""
import streamlit as st

from workbench import viz
from workbench.dashboard import compute
from workbench.dashboard.common import errors_shown, model_name, plot, prompt

st.header("Logit lens and attribution")
with errors_shown():
    name = model_name()
    left, right = st.columns(2)
    answer = left.text_input("Answer token", " Mary", key="lens_answer")
    other = right.text_input("Other token", " John", key="lens_other")
    lens = compute.logit_lens(name, prompt(), (answer, other))
    st.subheader("Top tokens per layer (last position)")
    plot(viz.logit_lens_heatmap(lens), "lens_heatmap")
    st.dataframe(lens.to_frame(), hide_index=True, width="stretch")
    st.subheader("Direct logit attribution")
    attribution = compute.direct_logit_attribution(name, prompt(), answer, other)
    top = st.slider("Components shown", 5, 60, 20, key="lens_top")
    plot(viz.dla_bars(attribution, top=top), "lens_dla")
