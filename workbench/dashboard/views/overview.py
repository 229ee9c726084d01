"""The landing page: what each page shows, with a link to it."""

import streamlit as st

st.header("workbench")
st.markdown("""Interpretability and safety tools on one model (pick it in the sidebar; the prompt there feeds
the attention, logit lens and probe pages). Every page is also reachable by its address, e.g. `/attention`.

| page | what it shows |
|---|---|
| [Model](model) | the model card: layers, widths, dtype, parameters, memory |
| [Attention heads](attention) | previous-token, duplicate-token and induction scores per head; patterns on the prompt |
| [Logit lens and attribution](lens) | the top next token at every layer and position; direct logit attribution of two answers |
| [Patching](patching) | activation and attribution patching of a clean/corrupted pair (attribution first: seconds) |
| [Steering playground](steering) | a contrast-pair or ActAdd vector: unsteered vs steered text, a sweep with toxicity |
| [Probes](probes) | linear probes per layer on a labeled set, and per-token scores of the prompt |
| [Audits](audits) | an audit folder's summary and report card, from `workbench audit ...` |
""")
