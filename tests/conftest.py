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

import pytest
import torch

import workbench as wb

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

    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# A disk cache of 96 texts in 6 shards, and a child-process script that writes it with every shard
# slowed (argv: out, seconds per shard), so a test can SIGKILL it mid-run and compare with SLOW_CACHE.
SLOW_CACHE_TEXTS = [f"Text number {i} says {'hello ' * (i % 7)}" for i in range(96)]
SLOW_CACHE = dict(
    hooks="resid_post,attn.hook_z", positions="mean", batch_size=1, shard_size=16, progress=False
)
SLOW_CACHE_CHILD = f"""
import os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import workbench as wb
from workbench.model import activations as cache
slow = float(sys.argv[2])
original = cache._run_rows
def throttled(*args, **kwargs):
    time.sleep(slow)
    return original(*args, **kwargs)
cache._run_rows = throttled
wb.cache_activations(wb.load("tiny-phi", device="cpu"), {SLOW_CACHE_TEXTS!r}, out=sys.argv[1], **{SLOW_CACHE!r})
"""


def slow_audit_child(seconds: float) -> str:
    """A child-process script that runs `workbench` with every audit shard slowed by `seconds`
    (so a test can kill it mid-run, or overlap a second writer with it)."""
    return f"""
import sys, time
from workbench.audit import toxicity as audit
from workbench.cli import main
original = audit._run_shard
def slow(*args, **kwargs):
    time.sleep({seconds})
    return original(*args, **kwargs)
audit._run_shard = slow
sys.exit(main(sys.argv[1:]))
"""


def gated_audit_child(gate: Path) -> str:
    """A child-process script that runs `workbench` with every audit shard waiting until the file
    `gate` exists: the test, not the machine's speed, decides when the child may go on."""
    return f"""
import sys, time
from pathlib import Path
from workbench.audit import toxicity as audit
from workbench.cli import main
original = audit._run_shard
def gated(*args, **kwargs):
    deadline = time.monotonic() + 900  # never hang a test run for good
    while not Path({str(gate)!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return original(*args, **kwargs)
audit._run_shard = gated
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1, with an empty bucket "bucket".

    Its address and dummy credentials go into this process's environment, so the code under
    test and every child process find it the way a user's MinIO is found (AWS_ENDPOINT_URL).
    Yields a boto3 S3 client for checking what the server holds."""
    moto_server = pytest.importorskip(
        "moto.server", reason="moto[server] is installed by `make setup` (dev extra)"
    )
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    client = boto3.client("s3")
    client.create_bucket(Bucket="bucket")
    try:
        yield client
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_keys(client, prefix: str) -> list[str]:
    """Every key under `prefix` in the test server's "bucket"."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="bucket", Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _git_status() -> str | None:
    """`git status --porcelain` of the checkout, or None outside a git checkout."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def pytest_sessionstart(session):
    session.config.stash[GIT_STATUS] = _git_status()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves the checkout as it found it: every output goes to a temporary folder or
    to a git-ignored one (results/, artifacts/). A change fails the run, naming the files."""
    before = session.config.stash.get(GIT_STATUS, None)
    after = _git_status()
    if before is not None and after is not None and after != before:
        changed = sorted(set(after.splitlines()) - set(before.splitlines()))
        print(f"\nthe test suite changed the checkout (git status --porcelain): {changed}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


GIT_STATUS = pytest.StashKey[str | None]()
