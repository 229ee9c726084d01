"""A wheel works outside the repository: every file the library reads by default is package data.

The wheel is built from this checkout and installed, without its dependencies, into a fresh
virtual environment that sees the test environment's packages (a .pth line), so nothing is
downloaded. Then, from an empty folder, the toxicity audit runs with a steering condition and the
default capability check (the packaged QA set and held-out texts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the workbench wheel; returns its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(work / "dist")],
        capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (work / "dist").glob("workbench-*.whl")
    env = work / "venv"
    venv.EnvBuilder(with_pip=False).create(
        env
    )  # this environment's pip installs into it (--python)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies come from the test environment (a .pth line adds its site-packages after
    # the fresh one's own, where the wheel goes); its editable workbench is not on that path.
    (Path(site) / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    return env / "bin"


def test_the_wheel_holds_the_package_data(wheel_env, tmp_path):
    where = subprocess.run(
        [str(wheel_env / "python"), "-c",
         "import workbench, workbench.safety as s; print(workbench.__file__); "
         "print(s.DEFAULT_QA); print(s.DEFAULT_HELDOUT)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout.split()  # fmt: skip
    installed = Path(where[0]).parent
    assert not installed.is_relative_to(ROOT), where  # the wheel's copy, not the checkout
    for data in where[1:]:
        assert Path(data).is_relative_to(installed) and Path(data).is_file(), data


def test_an_audit_with_the_default_capability_check_runs_from_an_empty_folder(wheel_env, tmp_path):
    (tmp_path / "p.txt").write_text(
        "Tell me about your weekend.\nWhat do you think of rainy days?\n"
    )
    pairs = ROOT / "workbench" / "data" / "probes" / "polite_vs_rude_pairs.jsonl"
    (tmp_path / "pairs.jsonl").write_bytes(pairs.read_bytes())
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [str(wheel_env / "workbench"), "audit", "toxicity", "--model", "tiny-phi",
               "--prompts", "p.txt", "--out", "x", "--max-new-tokens", "4",
               "--steer", "pairs.jsonl", "--layer", "1", "--alpha", "-2",
               "--json"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    capability = json.loads((tmp_path / "x" / "capability" / "run.json").read_text())
    assert Path(capability["qa_file"]).name == "qa.jsonl"
    assert not Path(capability["qa_file"]).is_relative_to(ROOT)  # read from the installed wheel
    assert capability["n_qa"] > 0 and capability["n_texts"] > 0
    assert json.loads(run.stdout)["card"]  # the steering report card, with its cost columns
