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
    assert results["sae_training"]["tokens_per_second"]["cpu"] > 0
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


def test_sae_bench_runs_end_to_end_on_tiny_phi(tmp_path):
    """bench/sae.py's every step (cache, train, evaluate, cards, probes, speed against sparsify's
    trainer, peak RSS at 1x and 4x tokens) on tiny-phi with a few hundred windows."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sae.py"),
            "--model",
            "tiny-phi",
            "--layer",
            "1",
            "--windows",
            "120",
            "--tokens",
            "8192",
            "--width",
            "256",
            "--k",
            "8",
            "--eval-windows",
            "10",
            "--compare-tokens",
            "2048",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["cache"]["windows"] == 120 and results["training"]["tokens_seen"] == 8192
    assert 0 < results["evaluation"]["values"]["l0"] <= 8
    assert [r["probe"] for r in results["probes"]["rows"]][0] == "dense" and len(
        results["cards"]
    ) == 3
    speed = results["speed"]
    assert speed["ratio"] > 0 and "sparsify_error" not in speed, speed
    assert (tmp_path / "cards.html").stat().st_size > 1000 and (tmp_path / "curve.html").is_file()
