"""Activation and attribution patching: residual (layer x position) and head (layer x head) maps."""

import streamlit as st

from workbench import viz
from workbench.dashboard import compute
from workbench.dashboard.common import errors_shown, model_name, plot

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
KINDS = {
    "attention heads (layer x head)": "attn_head",
    "residual stream (layer x position)": "resid_pre",
    "attention output (per layer)": "attn_out",
    "MLP output (per layer)": "mlp_out",
}

st.header("Patching")
st.caption(
    "Patch clean activations into the corrupted run, one cell at a time: 1 = clean behaviour restored, "
    "0 = corrupted. The estimates come from gradients (seconds) and check themselves: exact patching of "
    "their top 20 cells and 40 random others."
)
with errors_shown():
    name = model_name()
    clean = st.text_input("Clean prompt", CLEAN, key="patch_clean")
    corrupt = st.text_input(
        "Corrupted prompt (same number of tokens)", CORRUPT, key="patch_corrupt"
    )
    left, right = st.columns(2)
    answer = left.text_input("Answer (clean)", " Mary", key="patch_answer")
    other = right.text_input("Answer (corrupted)", " John", key="patch_other")
    left, right = st.columns(2)
    kind = KINDS[left.selectbox("What to patch", list(KINDS), key="patch_kind")]
    method = right.radio(
        "Estimate",
        ["atp", "eap-ig", "atp*"],
        index=0,
        horizontal=True,
        key="patch_method",
        help="atp (the default everywhere: the best recall of exact patching's top cells in the "
        "README's benchmark): attribution patching, one backward pass; eap-ig: integrated "
        "gradients, 5 backward passes; atp*: AtP* (softmax recomputed for queries and keys, "
        "GradDrop)",
    )
    with_exact = right.checkbox(
        "Exact patching of every cell too",
        value=False,
        key="patch_exact",
        help="one forward pass per cell, batched: minutes for the residual stream of a long prompt",
    )
    if st.button("Run patching", type="primary", key="patch_run"):
        st.session_state["patch_request"] = (
            clean,
            corrupt,
            answer,
            other,
            kind,
            method,
            with_exact,
        )
    request = st.session_state.get("patch_request")
    if request is None:
        st.info("Set the prompts and press Run patching.")
    else:
        clean, corrupt, answer, other, kind, method, with_exact = request
        estimate = compute.attribution_patch(name, clean, corrupt, answer, other, kind, method)
        exact = (
            compute.exact_patch(name, clean, corrupt, answer, other, kind) if with_exact else None
        )
        shown = [r for r in (exact, estimate) if r is not None]
        st.caption(
            f"clean logit difference {shown[0].clean_metric:.3f}, corrupted {shown[0].corrupt_metric:.3f}"
        )
        (st.success if estimate.check.passed else st.warning)(estimate.check.summary())
        if not estimate.check.passed and exact is None:
            if st.button("Patch every cell exactly", key="patch_fix", type="primary"):
                st.session_state["patch_request"] = request[:-1] + (True,)
                st.rerun()
        columns = st.columns(len(shown))
        # one colour range for maps side by side
        limit = max(float(r.values.abs().max()) for r in shown) or 1.0
        for column, result in zip(columns, shown):
            with column:
                plot(viz.patching_heatmap(result, limit=limit), f"patch_map_{result.method}")
                st.caption(f"{result.method}: {result.seconds:.2f} s")
        if exact is not None:
            plot(viz.methods_vs_exact(exact, [estimate]), "patch_scatter")
        else:
            plot(viz.self_check_scatter(estimate), "patch_scatter")
