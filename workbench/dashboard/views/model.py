"""Model page: the model card and a quick generation through the hooked model."""

import pandas as pd
import streamlit as st

from workbench.dashboard.common import (
    errors_shown,
    get_model,
    model_name,
    prompt,
    show_text,
    using_model,
)
from workbench.model.generation import generate

st.header("Model")
with errors_shown():
    info = get_model(model_name()).info
    st.dataframe(
        pd.DataFrame([{"field": k, "value": str(v)} for k, v in info.to_dict().items()]),
        hide_index=True,
        width="stretch",
    )
    st.subheader("Generate")
    new_tokens = st.slider("New tokens", 1, 128, 32, key="model_new_tokens")
    raw = st.checkbox("Raw prompt (no chat / instruct format)", key="model_raw")
    if st.button("Generate from the sidebar prompt", key="model_generate"):
        with st.spinner("Generating..."), using_model() as model:
            output = generate(
                model, [prompt()], max_new_tokens=new_tokens, raw=raw, progress=False
            )[0]
        st.session_state["model_output"] = output.text
    if "model_output" in st.session_state:
        st.markdown("**Continuation (greedy)**")
        show_text(st.session_state["model_output"], "model_output_box")
