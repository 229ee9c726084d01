"""The GPU check script runs end to end on tiny-phi on the CPU (--dry-run-cpu), so it cannot rot
between the rare sessions that have a GPU; and without a GPU `bench/gpu.py` says so and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from .conftest import ROOT


def test_gpu_script_dry_run_on_cpu():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run-cpu"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["probe_hooks"] == 4 and results["tokens_per_second"] > 0
    assert set(results["ratios_to_plain_forward"]) == {
        "bridge_forward",
        "cache_resid_post",
        "cache_every_hook",
        "tl_run_with_cache_every_hook",
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_a_gpu_says_so():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "no GPU here" in done.stdout
