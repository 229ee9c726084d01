"""Audits: open an audit folder under the results root; summary figures, tables, worst examples."""

import pandas as pd
import streamlit as st

from workbench import viz
from workbench.dashboard import compute
from workbench.dashboard.common import errors_shown, plain, plot
from workbench.dashboard.results_root import check_audit_inside, list_audits, results_root
from workbench.report.figures import audit_figures
from workbench.report.folder import TOX_PREFIX, search_record
from workbench.report.html import TITLES
from workbench.report.tables import (
    agreement_rows,
    before_after_rows,
    card_tables,
    length_split_rows,
    localisation_rows,
    summary_rows,
)
from workbench.safety.localise import BiasLocalisation

st.header("Audits")
with errors_shown():
    root = results_root()
    st.caption(
        f"Results root: {root} (set WORKBENCH_RESULTS to change it). Run audits with `workbench audit ...`."
    )
    found = [str(p) for p in list_audits(root)]
    left, right = st.columns(2)
    picked = left.selectbox(
        "Audit folder", found, index=None, placeholder="choose an audit", key="audit_pick"
    )
    typed = right.text_input("...or type a path under the results root", key="audit_path")
    chosen = typed.strip() or picked
    if not chosen:
        st.info(
            "No audit chosen."
            if found
            else f"No audit folders (with run.json) under {plain(str(root))}."
        )
    else:
        # the folder and every file it reads stay under the root
        folder = check_audit_inside(root, chosen)
        frame, summary = compute.audit(folder)
        settings = summary["settings"]
        search = search_record(folder, root)
        if search is not None:
            st.subheader("Detoxification search: chosen on validation, reported on test")
            goal = search.get("goal", {})
            st.text(
                f"chosen: {search.get('chosen') or 'none within the budget lowered toxicity'}; "
                f"selected by {search.get('select_by')}; goal "
                f"{'met' if goal.get('met') else 'not met'} (>= 40% lower Expected Maximum Toxicity "
                "by every independent learned scorer, paired interval excluding 0, within budget, "
                "better than prompting). This audit below is the test card."
            )
            plot(viz.pareto_figure(search), "search_pareto")
            st.dataframe(pd.DataFrame(search["candidates"]), hide_index=True, width="stretch")
        st.subheader(TITLES[summary["audit"]])
        # Text from run.json is shown as plain text, never as markdown or HTML.
        st.text(
            f"model: {settings['model'].get('name', '')} ({settings['model'].get('origin', '')})\n"
            f"{summary['rows']} result rows; conditions: "
            f"{', '.join(str(c['name']) for c in settings['conditions'])}; seed {settings.get('seed')}"
        )
        if summary.get("card"):
            st.markdown(
                "**Steering report card**: the safety measure beside what each condition costs "
                "(fluency of the continuations, held-out perplexity, QA accuracy)."
            )
            safety, cost = card_tables(summary)  # two narrow tables: nothing cut off at the right
            st.dataframe(pd.DataFrame(safety), hide_index=True, width="stretch")
            st.markdown("**What each condition costs** (the same for every scorer)")
            st.dataframe(pd.DataFrame(cost), hide_index=True, width="stretch")
        st.dataframe(pd.DataFrame(summary_rows(summary)), hide_index=True, width="stretch")
        if summary["audit"] == "bias":
            for warning in summary.get("warnings", []):
                st.warning(plain(warning))
            if summary.get("metric_why"):
                st.caption(plain(f"Why {summary['metric']} leads: {summary['metric_why']}."))
            if summary.get("length_split"):
                st.markdown("**Pairs of the same and of different token counts**")
                st.dataframe(
                    pd.DataFrame(length_split_rows(summary)), hide_index=True, width="stretch"
                )
        if summary["audit"] == "toxicity" and agreement_rows(summary):
            st.markdown("**Scorer agreement** (Spearman on scores, Cohen's kappa at 0.5)")
            st.dataframe(pd.DataFrame(agreement_rows(summary)), hide_index=True, width="stretch")
        st.caption(
            "95% intervals: "
            + "; ".join(summary.get("methods", []))
            + f". No interval below n = {summary.get('min_n')}: the count is shown instead."
        )
        if summary.get("localisation"):
            localisation = summary["localisation"]
            st.subheader("Where the bias lives")
            st.text("\n".join(BiasLocalisation.from_dict(localisation).summary_lines()))
            st.dataframe(
                pd.DataFrame(localisation_rows(localisation)), hide_index=True, width="stretch"
            )
            st.dataframe(
                pd.DataFrame(before_after_rows(localisation)), hide_index=True, width="stretch"
            )
        for i, fig in enumerate(audit_figures(summary, frame)):
            plot(fig, f"audit_fig_{i}")
        st.subheader("Rows (click a column header to sort)")
        sort_by = [c for c in frame.columns if c.startswith(TOX_PREFIX)] or [
            c for c in ("preference_logprob_per_token", "gap") if c in frame.columns
        ]
        shown = frame.sort_values(sort_by[0], ascending=False) if sort_by else frame
        st.dataframe(shown, hide_index=True, width="stretch", height=400)
        with st.expander("Settings (run.json)"):
            st.json(settings)
