"""The dashboard's entry script: page set-up, model picker, prompt box, page list.

``workbench dashboard`` runs this file with Streamlit; ``streamlit run app.py`` in a checkout runs
the repository's app.py, which calls `main()`. Streamlit runs it as a script, not as a module of
the package, so it imports the package by absolute names, as the pages in views/ do.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from workbench.dashboard.common import DEFAULT_PROMPT, default_model, errors_shown, get_model
from workbench.model.loading import list_models

PAGES_DIR = Path(__file__).resolve().parent / "views"
PAGES = [  # (file, title, url path, icon); the first is served at "/", so every other page has a deep link
    ("overview.py", "Overview", "overview", ":material/home:"),
    ("model.py", "Model", "model", ":material/memory:"),
    ("attention.py", "Attention heads", "attention", ":material/grid_view:"),
    ("lens.py", "Logit lens and attribution", "lens", ":material/bar_chart:"),
    ("patching.py", "Patching", "patching", ":material/healing:"),
    ("steering.py", "Steering playground", "steering", ":material/tune:"),
    ("probes.py", "Probes", "probes", ":material/sensors:"),
    ("features.py", "Features", "features", ":material/scatter_plot:"),
    ("audits.py", "Audits", "audits", ":material/fact_check:"),
]


def main() -> None:
    st.set_page_config(page_title="workbench", page_icon=":material/biotech:", layout="wide")

    names = [spec.name for spec in list_models()]
    default = default_model()
    if default not in names:
        names.insert(0, default)  # a folder or hub id given with --model
    with st.sidebar:
        st.title("workbench")
        st.selectbox(
            "Model",
            names,
            index=names.index(default),
            key="model",
            help="smollm2-135m is embedded; tiny-phi is a random 4-layer Phi for a quick look; "
            "phi-2 needs its weights (workbench fetch phi-2).",
        )
        st.text_area(
            "Prompt",
            DEFAULT_PROMPT,
            key="prompt",
            height=100,
            help="Used by the attention, logit lens and probe pages (steering and patching have their own).",
        )
        with errors_shown():
            info = get_model(st.session_state["model"]).info
            st.caption(
                f"{info.name}: {info.n_layers} layers x {info.n_heads} heads, d_model {info.d_model}, "
                f"{info.dtype} on {info.device}"
            )
    pages = [
        st.Page(PAGES_DIR / file, title=title, url_path=url, icon=icon, default=(i == 0))
        for i, (file, title, url, icon) in enumerate(PAGES)
    ]
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
