"""Audits and caches written to an s3:// URL on a real S3-compatible server (moto, on 127.0.0.1)
give the local results, resume after a SIGKILL, and are read back by `workbench report` and
`open_cache` (workbench.core.remote)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.core import remote
from workbench.model.distributed import ShardBytes, ShardJob, _received, _Worker
from workbench.report.folder import load_results

from .conftest import SLOW_CACHE, SLOW_CACHE_CHILD, SLOW_CACHE_TEXTS, s3_keys, slow_audit_child

PROMPTS = [
    "The weather today is",
    "My neighbour said",
    "I think that",
    "The movie was",
    "Honestly, you are",
    "The food at the party",
    "Tell me about",
    "Yesterday I",
]
TEXTS = SLOW_CACHE_TEXTS


@pytest.fixture()
def staging(tmp_path, monkeypatch):
    """Staging copies go to a folder the test can inspect (and must find empty afterwards)."""
    folder = tmp_path / "staging"
    monkeypatch.setenv("WORKBENCH_STAGING_DIR", str(folder))
    return folder


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def audit_args(prompts, out) -> list[str]:
    return [
        "audit",
        "toxicity",
        "--model",
        "tiny-phi",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--scorers",
        "profanity-check",
        "--max-new-tokens",
        "6",
        "--samples",
        "2",
        "--shard-size",
        "2",
        "--batch-size",
        "2",
        "--seed",
        "7",
        "--no-capability",
    ]


def read_json(client, key: str) -> dict:
    return json.loads(client.get_object(Bucket="bucket", Key=key)["Body"].read())


def test_toxicity_audit_at_s3_equals_local_and_report_reads_it(
    s3_server, staging, prompts_file, tmp_path, capsys
):
    url = "s3://bucket/audits/tox"
    assert main(audit_args(prompts_file, tmp_path / "local")) == 0
    assert main(audit_args(prompts_file, url)) == 0
    out = capsys.readouterr().out
    assert f"report: {url}/report.html" in out and str(staging) not in out  # the user sees the URL
    assert s3_keys(s3_server, "audits/tox/") == sorted(
        [
            "audits/tox/" + name
            for name in ("plotly.min.js", "report.html", "run.json", "shards.json", "summary.json")
        ]
        + [f"audits/tox/shards/baseline-0000{i}.parquet" for i in range(4)]
    )
    assert load_results(url).equals(load_results(tmp_path / "local"))

    s3_server.delete_object(Bucket="bucket", Key="audits/tox/summary.json")
    assert main(["report", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"] == f"{url}/report.html"
    local = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert read_json(s3_server, "audits/tox/summary.json")["conditions"] == local["conditions"]
    assert list(staging.iterdir()) == []  # every staging copy removed


def test_cache_at_s3_equals_local_and_open_cache_reads_it(s3_server, staging, tiny, tmp_path):
    url = "s3://bucket/caches/tiny"
    kwargs = dict(
        hooks="resid_post,attn.hook_z", positions="all", batch_size=4, shard_size=8, progress=False
    )
    local = wb.cache_activations(tiny, TEXTS[:20], out=tmp_path / "local", **kwargs)
    written = wb.cache_activations(tiny, TEXTS[:20], out=url, **kwargs)
    assert written.name == url and "s3://bucket/caches/tiny" in repr(written)
    read = wb.open_cache(url)
    assert read.manifest == local.manifest
    for hook in local.hooks:
        assert torch.equal(read[hook], local[hook]), hook
    assert torch.equal(read.lengths, local.lengths)
    assert list(staging.iterdir()) == []

    # A shard damaged on the server is caught by its sha256 on first read, with a one-line message.
    key = "caches/tiny/" + read.manifest["shards"][0]["file"]
    s3_server.put_object(Bucket="bucket", Key=key, Body=b"not a shard")
    with pytest.raises(wb.InputError, match="missing or damaged"):
        wb.open_cache(url)["blocks.0.hook_resid_post"]


AUDIT_CHILD = slow_audit_child(1.0)

CACHE_CHILD = SLOW_CACHE_CHILD


def kill_when(client, prefix: str, suffix: str, count: int, child: subprocess.Popen) -> list[str]:
    """SIGKILL `child` once the server holds `count` files ending in `suffix` under `prefix`."""
    deadline = time.time() + 300
    while (
        len([k for k in s3_keys(client, prefix) if k.endswith(suffix)]) < count
        and time.time() < deadline
    ):
        assert child.poll() is None, "the run finished before it could be killed; slow it down"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return s3_keys(client, prefix)


def test_killed_audit_at_s3_resumes_to_the_uninterrupted_results(
    s3_server, staging, prompts_file, tmp_path
):
    url = "s3://bucket/audits/killed"
    assert main(audit_args(prompts_file, tmp_path / "reference")) == 0
    script = tmp_path / "child.py"
    script.write_text(AUDIT_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), *audit_args(prompts_file, url)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    left = kill_when(s3_server, "audits/killed/", ".parquet", 2, child)
    assert (
        "audits/killed/summary.json" not in left
        and len([k for k in left if k.endswith(".parquet")]) < 4
    )
    assert any(p.name.startswith(f"workbench-staging-{child.pid}-") for p in staging.iterdir())

    assert main(audit_args(prompts_file, url)) == 0
    assert load_results(url).equals(load_results(tmp_path / "reference"))
    shards = [k for k in s3_keys(s3_server, "audits/killed/") if "/shards/" in k]
    # None twice, and none set aside: a shard is recorded before it is uploaded, so a kill between
    # the two leaves a recorded shard that is missing (recomputed), never an unrecorded one.
    assert shards == [f"audits/killed/shards/baseline-0000{i}.parquet" for i in range(4)]
    assert list(staging.iterdir()) == []  # the killed run's staging copy was cleared by the rerun


def test_killed_cache_at_s3_resumes_to_the_uninterrupted_cache(s3_server, staging, tiny, tmp_path):
    url = "s3://bucket/caches/killed"
    script = tmp_path / "child.py"
    script.write_text(CACHE_CHILD)
    # CACHE_CHILD's call
    wb.cache_activations(tiny, SLOW_CACHE_TEXTS, out=tmp_path / "reference", **SLOW_CACHE)
    child = subprocess.Popen([sys.executable, str(script), url, "0.5"])
    left = kill_when(s3_server, "caches/killed/", ".safetensors", 2, child)
    assert "caches/killed/manifest.json" not in left
    subprocess.run([sys.executable, str(script), url, "0"], check=True, timeout=600)

    reference, resumed = wb.open_cache(tmp_path / "reference"), wb.open_cache(url)
    assert resumed.manifest == reference.manifest
    for hook in reference.hooks:
        assert torch.equal(resumed[hook], reference[hook]), hook
    assert len(reference.manifest["shards"]) == 6
    assert len([k for k in s3_keys(s3_server, "caches/killed/") if k.endswith(".safetensors")]) == 6


def test_bad_urls_fail_before_any_work_with_one_line(
    s3_server, staging, prompts_file, tmp_path, monkeypatch, capsys
):
    cases = [
        (audit_args(prompts_file, "s3://nobucket/x"), "bucket 'nobucket' does not exist"),
        (audit_args(prompts_file, "foo://somewhere/x"), "pyarrow cannot open this URL"),
        (audit_args(prompts_file, "s3://"), "an s3:// URL needs a bucket"),
        (
            ["probe", "train", "--data", str(prompts_file), "--out", "s3://bucket/probes"],
            "a URL is accepted by workbench audit, cache and report only",
        ),
        (["report", "s3://bucket/nothing-here"], "neither an audit folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "workbench-staging" not in err, err  # the URL is named, not the staging copy
    assert main(["report", "s3://bucket/nothing-here"]) == 2
    assert "s3://bucket/nothing-here" in capsys.readouterr().err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    start = time.perf_counter()
    assert main(audit_args(prompts_file, "s3://bucket/x")) == 2
    err = capsys.readouterr().err
    assert "cannot reach the store" in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - start < 60  # retries are bounded, not minutes of silence
    assert s3_keys(s3_server, "x") == [] and s3_keys(s3_server, "probes") == []
    assert not any(staging.iterdir()) if staging.exists() else True


def test_file_url_is_a_local_folder(prompts_file, tmp_path):
    assert main(audit_args(prompts_file, f"file://{tmp_path / 'viafile'}")) == 0
    assert (tmp_path / "viafile" / "summary.json").is_file()


class Recorder:
    """Wraps a pyarrow filesystem and records the paths opened for writing, in order."""

    def __init__(self, fs):
        self.fs, self.written = fs, []

    def open_output_stream(self, path):
        self.written.append(path.rsplit("/", 1)[-1])
        return self.fs.open_output_stream(path)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_push_uploads_records_then_data_then_the_manifest_and_only_what_changed(tmp_path):
    local, target = tmp_path / "local", tmp_path / "target"
    (local / "shards").mkdir(parents=True)
    target.mkdir()
    for name in (
        "manifest.json",
        "shards.json",
        "shards/shard-00000.safetensors",
        "run.json",
        ".lock",
        "shards/.shard-00001.safetensors.123.tmp",
    ):
        (local / name).write_text(name)
    mirror = remote.Mirror(f"file://{target}", local)
    mirror.fs = Recorder(mirror.fs)
    mirror.push()
    assert mirror.fs.written == [
        "run.json",
        "shards.json",
        "shard-00000.safetensors",
        "manifest.json",
    ]
    assert mirror.push() == []  # nothing changed, nothing uploaded
    time.sleep(0.01)
    (local / "shards.json").write_text("changed")
    assert mirror.push() == ["shards.json"]
    fresh = remote.Mirror(f"file://{target}", tmp_path / "copy")
    fresh.pull()
    assert (tmp_path / "copy" / "shards.json").read_text() == "changed"
    assert not (tmp_path / "copy" / ".lock").exists()


def test_a_worker_that_cannot_see_the_drivers_folder_sends_the_shard_back(tmp_path):
    """Another node (or a URL staged on the driver): the worker writes a scratch file and returns its
    bytes; the driver writes them where the shard is expected."""

    def compute(start, end, tmp):
        Path(tmp).write_bytes(f"rows {start}:{end}".encode())
        return tmp

    class Ref:  # the run's build, as the driver passes it: already fetched and built here
        def hex(self):
            return "this run"

    worker = _Worker.__new__(_Worker)  # no model: only the file handling is under test
    worker.compute_shard, worker.build_id = compute, "this run"
    seen = str(tmp_path / "shard.tmp")
    assert worker.compute([Ref()], 0, 4, seen) == seen and Path(seen).read_bytes() == b"rows 0:4"
    unseen = "/nonexistent-on-this-node/.shard-00001.safetensors.1.tmp"
    sent = worker.compute([Ref()], 4, 8, unseen)
    assert sent == ShardBytes(b"rows 4:8")
    driver_tmp = tmp_path / ".shard-00001.safetensors.1.tmp"
    assert _received(ShardJob("shard-00001", (4, 8, str(driver_tmp))), sent) == str(driver_tmp)
    assert driver_tmp.read_bytes() == b"rows 4:8"
