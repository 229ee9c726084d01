"""`workbench demo` (the main job) and `workbench dashboard` (the Streamlit front end)."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources

from ..dashboard.results_root import results_root
from .common import add_verb
from .demo import run_tour


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    sub = add_verb(
        verbs, "demo", "The main job on one model (default: the embedded smollm2-135m).", cmd_demo
    )
    sub.add_argument("--out", default="results/demo", help="output folder (default results/demo)")

    sub = verbs.add_parser(
        "dashboard",
        help="Start the Streamlit dashboard (localhost only by default).",
        description="Start the Streamlit dashboard: streamlit run app.py, bound to localhost "
        "unless --host says otherwise.",
    )
    sub.set_defaults(func=cmd_dashboard)
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


def cmd_dashboard(args) -> int:
    if args.results:
        os.environ["WORKBENCH_RESULTS"] = args.results
    # resolved now, so the pages see the same folder whatever their working directory
    root = results_root()
    env = dict(os.environ, WORKBENCH_RESULTS=str(root))
    if args.model:
        env["WORKBENCH_DASHBOARD_MODEL"] = args.model
    if args.device:
        env["WORKBENCH_DASHBOARD_DEVICE"] = args.device
    if args.dtype:
        env["WORKBENCH_DASHBOARD_DTYPE"] = args.dtype
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine can use the dashboard",
            file=sys.stderr,
        )
    launcher = resources.files("workbench.dashboard").joinpath("app.py")  # the package's own file
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(launcher),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    print(
        f"workbench dashboard: http://{args.host}:{args.port}  (results root {root}; Ctrl-C stops it)",
        file=sys.stderr,
    )
    # exec, not a child process: Ctrl-C or a kill reaches streamlit itself, and no server is left behind.
    os.execvpe(command[0], command, env)


def cmd_demo(args) -> int:
    summary = run_tour(args.model, args.out, device=args.device)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0
