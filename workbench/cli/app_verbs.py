"""`workbench demo` (the main job) and `workbench dashboard` (the Streamlit front end)."""

from __future__ import annotations

from .common import add_verb


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    sub = add_verb(
        verbs,
        "demo",
        "The main job on one model (default: the embedded smollm2-135m).",
        "app_commands.cmd_demo",
    )
    sub.add_argument("--out", default="results/demo", help="output folder (default results/demo)")

    sub = verbs.add_parser(
        "dashboard",
        help="Start the Streamlit dashboard (localhost only by default).",
        description="Start the Streamlit dashboard: streamlit run app.py, bound to localhost "
        "unless --host says otherwise.",
    )
    sub.set_defaults(func="app_commands.cmd_dashboard")
    sub.add_argument(
        "--model", default=None, help="model chosen when a page opens (default smollm2-135m)"
    )
    sub.add_argument(
        "--results",
        default=None,
        help="results root: the only folder the dashboard reads and writes "
        "(default $WORKBENCH_RESULTS, else ./results)",
    )
    sub.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to your network)",
    )
    sub.add_argument("--port", type=int, default=8501, help="port to listen on")
    sub.add_argument(
        "--device",
        default=None,
        help="device of the models the pages load: cpu, cuda, cuda:1 (default: cuda if available)",
    )
    sub.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16 (default: by device)"
    )
