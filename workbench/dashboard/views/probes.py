"""Probes: train a probe per layer (or load a saved one), its per-layer curve, per-token shading."""

from pathlib import Path

import streamlit as st

from workbench import viz
from workbench.core.stats import MIN_N, estimate_from_dict
from workbench.dashboard import compute
from workbench.dashboard.common import (
    LABEL_MEANING,
    errors_shown,
    labeled_sets,
    model_name,
    plain,
    plot,
    prompt,
)
from workbench.dashboard.results_root import list_probes, resolve_under, results_root
from workbench.interp.probes import Probe

st.header("Probes")
st.caption(
    "Logistic probes on every layer's residual stream. The layer and L2 strength are chosen on a validation "
    "split; the test split is used once, for the chosen probe's AUROC and calibration. Then one probe is "
    "applied to every token of the sidebar prompt."
)
with errors_shown():
    name = model_name()
    root = results_root()
    train_tab, load_tab = st.tabs(["Train", "Load a saved probe"])
    with train_tab:
        sets = {p.name: p for p in labeled_sets()}
        left, middle, right = st.columns(3)
        data = left.selectbox("Labeled set (probes/)", list(sets), key="probe_data")
        positions = middle.selectbox(
            "Positions", ["mean_after_first", "mean", "last"], key="probe_positions"
        )
        split = right.selectbox("Split", ["random", "group"], key="probe_split")
        if st.button("Train probes", type="primary", key="probe_train"):
            st.session_state["probe_request"] = (str(sets[data]), positions, split)
        request = st.session_state.get("probe_request")
        if request:
            sweep = compute.train_probes(name, *request, 0)
            plot(viz.probe_curve(sweep), "probe_curve")
            chosen = sweep.best()
            test = estimate_from_dict(chosen.metrics["test_auroc_interval"])
            meaning = LABEL_MEANING.get(Path(request[0]).name, "as the file's labels say")
            st.markdown(
                f"**Chosen on validation:** {plain(chosen.hook)} (L2 {chosen.metrics['l2']:g}). "
                f"**Label 1:** {meaning}."
            )
            if sweep.n_test < 2 * MIN_N:
                st.warning(
                    f"Test AUROC {test.value:.3f} on only {sweep.n_test} test texts: too few for an "
                    f"interval (the workbench gives one from {2 * MIN_N} texts up), and an AUROC on so few "
                    "says little. Train on a larger labeled set."
                )
            else:
                st.markdown(f"**Test AUROC:** {test.text()}.")
            plot(viz.reliability_curve(chosen), "probe_calibration")
            hooks = list(sweep.probes)
            best = sweep.best().hook
            hook = st.selectbox("Probe to apply", hooks, index=hooks.index(best), key="probe_hook")
            st.session_state["probe_active"] = (f"trained:{request}:{hook}", sweep.probes[hook])
            target = st.text_input(
                "Save it under the results root as", f"probes/{hook}", key="probe_save_path"
            )
            if st.button("Save probe", key="probe_save"):
                folder = sweep.probes[hook].save(resolve_under(root, target))
                st.success(plain(f"saved to {folder}"))
    with load_tab:
        saved = [str(p) for p in list_probes(root)]
        if not saved:
            st.info(
                f"No saved probes under {plain(str(root))} yet (train one, or `workbench probe train --out` there)."
            )
        else:
            choice = st.selectbox("Saved probe", saved, key="probe_saved")
            if st.button("Load", key="probe_load"):
                folder = resolve_under(root, choice)
                st.session_state["probe_active"] = (f"saved:{folder}", Probe.load(folder))
    active = st.session_state.get("probe_active")
    if active:
        probe_key, probe = active
        st.subheader(plain(f"Per-token score: {probe.hook}"))
        tokens, scores = compute.token_scores(name, probe, probe_key, prompt())
        st.html(viz.token_highlight_html(tokens, scores))
        test = probe.metrics.get("test_auroc_interval")
        quality = (
            f"test AUROC {estimate_from_dict(test).text()}"
            if test
            else f"test AUROC {probe.metrics.get('test_auroc', float('nan')):.3f} (not the chosen hook)"
        )
        st.caption(
            f"white = 0, red = 1 (P(label = 1)) at every token; the probe was validated on "
            f"{plain(str(probe.meta.get('positions', '?')))} positions, so per-token shading is a picture, not a score; "
            f"{quality}"
        )
