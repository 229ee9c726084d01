"""Shared fixtures: tiny in-process models for unit tests, the embedded default for integration tests.

Tests never reach a model hub: HF_HUB_OFFLINE=1 is set before anything imports
huggingface_hub.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# On a busy machine (another CPU-bound job beside the suite), two OpenMP threads on two cores
# wait on each other: measured 3x slower than one thread (smollm2, 200 texts cached: 34.8 s
# vs 16.4 s; quiet: 10.9 s vs 17.0 s). So when the machine is already loaded at start, every
# torch in the suite (notebook kernels and child processes too, through the environment) uses one.
if os.getloadavg()[0] >= 0.9 * (os.cpu_count() or 1) / 2 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import workbench as wb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
# Public data sets (ToxiGen, CrowS-Pairs) live beside the checkout, in ../shared/data.
SHARED_DATA = Path(os.environ.get("WORKBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny():
    """tiny-phi: 4-layer random Phi with Phi-2's tokenizer (fp32, CPU)."""
    return wb.load("tiny-phi", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def smol():
    """smollm2-135m: the embedded default, a real trained model (fp32, CPU)."""
    return wb.load("smollm2-135m", device="cpu", dtype="float32")


def hf_reference(folder) -> torch.nn.Module:
    """A plain Hugging Face model from the same folder, never booted: the reference numbers."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def slow_audit_child(seconds: float) -> str:
    """A child-process script that runs `workbench` with every audit shard slowed by `seconds`
    (so a test can kill it mid-run, or overlap a second writer with it)."""
    return f"""
import sys, time
from workbench import audit
from workbench.cli import main
original = audit._run_shard
def slow(*args, **kwargs):
    time.sleep({seconds})
    return original(*args, **kwargs)
audit._run_shard = slow
sys.exit(main(sys.argv[1:]))
"""
