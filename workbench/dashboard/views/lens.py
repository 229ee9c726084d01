"""Logit lens (layer x position, and the last position in detail) and direct logit attribution."""

import streamlit as st

from workbench import viz
from workbench.dashboard import compute
from workbench.dashboard.common import errors_shown, model_name, plot, prompt

st.header("Logit lens and attribution")
st.caption(
    "Each layer's residual stream read through the model's own final norm and unembedding: what the "
    "model would predict next if it stopped there. The last row is the model's real output."
)
with errors_shown():
    name = model_name()
    plot(viz.logit_lens_grid_heatmap(compute.logit_lens_grid(name, prompt())), "lens_grid")
    left, right = st.columns(2)
    answer = left.text_input("Answer token", " Mary", key="lens_answer")
    other = right.text_input("Other token", " John", key="lens_other")
    lens = compute.logit_lens(name, prompt(), (answer, other))
    st.subheader("Last position: top tokens per layer")
    table = lens.to_frame()
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            column: st.column_config.NumberColumn(format="%.3g")
            for column in table.columns
            if column.startswith(("p(", "top_prob"))
        },
    )
    st.subheader("Direct logit attribution")
    attribution = compute.direct_logit_attribution(name, prompt(), answer, other)
    top = st.slider("Components shown", 5, 60, 20, key="lens_top")
    plot(viz.dla_bars(attribution, top=top), "lens_dla")
