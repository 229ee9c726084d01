"""What the app verbs do once their arguments are parsed (`app_verbs` declares them;
this module is imported only when one of them runs, so --help loads no torch)."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources

from ..dashboard.results_root import results_root
from .demo import run_tour


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
