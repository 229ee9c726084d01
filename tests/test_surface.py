"""Issue 25's hardening of the surface: what listens, what is read, what may hang, and what fails
in one line. (The one-line refusals of single commands are rows of tests/test_bad_inputs.py;
these are the cases that need a running server, a crafted folder or a look at the sockets.)"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import threading
from pathlib import Path

import pytest

import workbench as wb
from workbench.cli import main
from workbench.core import remote
from workbench.core.errors import InputError
from workbench.core.storage import ShardIndex
from workbench.dashboard.common import plain
from workbench.dashboard.results_root import check_audit_inside
from workbench.model import distributed
from workbench.report.folder import audit_files

from .conftest import ROOT, SHARED_DATA
from .test_hardening import PROMPTS, audit_page, tox

CROWS = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
PAIRS = str(ROOT / "probes" / "polite_vs_rude_pairs.jsonl")


@pytest.fixture()
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def one_line(capsys) -> str:
    """The run's stderr, checked to be one line without a traceback (after any progress bar,
    whose redraws end in carriage returns)."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.split("\n") if line.strip() and "%|" not in line]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ----------------------------------------------------------------------------- 1, 6: Ray


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _listening(psutil) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of this process and its children."""
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    found = []
    for connection in psutil.net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids:
            found.append((connection.laddr.ip, connection.laddr.port, connection.pid))
    return found


def test_ray_local_listens_on_loopback_only_and_refuses_unplaceable_workers(
    prompts, tmp_path, capsys, monkeypatch
):
    ray = pytest.importorskip("ray", reason="Ray is installed by `make setup` (extra 'ray')")
    psutil = pytest.importorskip("psutil")
    if ray.is_initialized():
        ray.shutdown()
    seen: list = []
    received = distributed._received

    def spy(job, result):  # called on the driver as each shard arrives: the workers are up
        seen.extend(_listening(psutil))
        return received(job, result)

    monkeypatch.setattr(distributed, "_received", spy)
    try:
        code = main(tox(prompts, tmp_path / "a", "--ray", "local", "--workers", "1"))
        assert code == 0, capsys.readouterr().err
        assert seen, "no listening socket seen during the run"
        outside = [s for s in seen if not _is_loopback(s[0])]
        assert not outside, outside
        # more workers than the local instance has CPUs: refused, never a wait for ever
        too_many = str(int(ray.cluster_resources()["CPU"]) + 1)
        capsys.readouterr()
        assert main(tox(prompts, tmp_path / "b", "--ray", "local", "--workers", too_many)) == 2
        err = one_line(capsys)
        assert f"--workers {too_many}" in err and "would never start" in err, err
        assert not (tmp_path / "b").exists()
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- 2, 3: dashboard


@pytest.fixture(scope="module")
def steered_audit(tmp_path_factory):
    """A toxicity audit with steering, so it holds a capability/ sub-audit."""
    base = tmp_path_factory.mktemp("steered")
    prompts = base / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = base / "root" / "tox"
    argv = tox(prompts, out, "--steer", PAIRS, "--layer", "1", "--alpha", "2")
    assert main(argv) == 0
    return out


def _copy(folder: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(folder, to, symlinks=True)
    return to


@pytest.mark.parametrize(
    "inside", ["capability/run.json", "capability/shards", "capability", "localisation.json"]
)
def test_every_file_the_report_and_dashboard_read_is_checked_for_containment(
    steered_audit, tmp_path, inside, capsys
):
    root = tmp_path / "root"
    audit = _copy(steered_audit, root / "tox")
    outside = _copy(steered_audit, tmp_path / "elsewhere")
    assert (audit / "capability" / "run.json").is_file()
    assert set(audit_files(audit)) >= {audit / "capability" / "run.json", audit / "shards"}
    check_audit_inside(root, "tox")  # as written: every file inside
    target = audit / inside
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    target.symlink_to(outside / inside)
    with pytest.raises(InputError, match="leads outside"):
        check_audit_inside(root, "tox")
    assert main(["report", str(audit)]) == 2
    assert "leads outside" in one_line(capsys)


def test_user_text_is_plain_in_every_dashboard_message(tmp_path, monkeypatch):
    crafted = "![x](http://127.0.0.1:9/pixel.png) **bold** :red[red] $x^2$"
    escaped = plain(crafted)
    assert "![" not in escaped and "](" not in escaped and "**" not in escaped
    root = tmp_path / "results"
    (root / "a").mkdir(parents=True)
    (root / "a" / "run.json").write_text(
        json.dumps({"format": "workbench-audit/1", "audit": crafted, "conditions": []})
    )
    app = audit_page(root, "a", monkeypatch)
    assert not app.exception
    errors = [e.value for e in app.error]
    assert errors and any("unknown audit kind" in e for e in errors), errors
    assert not any("![x](" in e or "**bold**" in e for e in errors), errors
    assert any(escaped in e for e in errors), errors


# ----------------------------------------------------------------------------- 4: recorded names


def test_names_recorded_in_untrusted_files_must_be_plain(tiny, tmp_path):
    index = tmp_path / "shards.json"
    for name in ("../x.parquet", "/etc/passwd", "a/b.parquet", "..", ""):
        index.write_text(json.dumps({name: {"sha256": "0" * 64, "bytes": 1}}))
        with pytest.raises(InputError, match="not a plain file name"):
            ShardIndex(index)
    cache = wb.cache_activations(
        tiny, ["one text", "two texts"], out=tmp_path / "cache", progress=False
    )
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    for bad in ("../outside.safetensors", "shards/../../x", "/etc/passwd", "shards/"):
        manifest["shards"][0]["file"] = bad
        (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InputError, match="manifest"):
            wb.open_cache(tmp_path / "cache")
    assert cache.hooks
    mirror = remote.Mirror("s3://bucket/x", tmp_path / "staging")
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(InputError, match="not a relative path inside the folder"):
            mirror.fetch(bad)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- 7, 8: hangs


def test_a_store_that_never_answers_is_an_error_after_the_deadline(monkeypatch):
    monkeypatch.setattr(remote, "REMOTE_TIMEOUT_S", 0.2)
    never = threading.Event()
    try:
        with pytest.raises(InputError, match="did not answer in 0.2 s"):
            remote._within_deadline(never.wait, "hdfs://nowhere/x", "--out")
    finally:
        never.set()  # the worker thread ends


def test_gs_at_a_closed_port_fails_in_one_line(prompts, tmp_path, capsys, monkeypatch):
    pytest.importorskip("pyarrow.fs").GcsFileSystem  # noqa: B018 - pyarrow built with GCS
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WORKBENCH_STAGING_DIR", str(tmp_path / "staging"))
    assert main(tox(prompts, "gs://bucket/x")) == 2
    err = one_line(capsys)
    assert "cannot reach the store" in err and "GOOGLE_APPLICATION_CREDENTIALS" in err, err


def test_fifos_and_devices_are_refused_without_reading(tmp_path, capsys):
    fifo = tmp_path / "prompts.txt"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    for source in (str(fifo), "/dev/zero"):
        assert main(tox(source, tmp_path / "o")) == 2
        assert "not a regular file" in one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_read_only_or_file_staging_folder_is_refused_before_work(
    prompts, tmp_path, capsys, monkeypatch
):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("WORKBENCH_STAGING_DIR", str(blocker))
    assert main(tox(prompts, "s3://bucket/x")) == 2
    assert "WORKBENCH_STAGING_DIR" in one_line(capsys)


# ----------------------------------------------------------------------------- 12, 13, 17: one line


def test_a_pickle_with_code_is_refused_in_one_line_and_nothing_of_it_runs(tiny, tmp_path, capsys):
    import torch
    from transformers import AutoConfig

    folder = tmp_path / "model"
    folder.mkdir()
    AutoConfig.from_pretrained(tiny.info.path).save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    assert main(["generate", "--model", str(folder), "--prompt", "hi"]) == 2
    err = one_line(capsys)
    assert "nothing of it ran" in err and "safetensors" in err, err
    assert not marker.exists()


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    from workbench.model import activations

    def full(*args, **kwargs):
        # what safetensors raised on a 64 KiB tmpfs (measured): its own type, not OSError
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(activations, "save_file", full)
    texts = str(ROOT / "probes" / "gender.jsonl")
    argv = ["cache", "--model", "tiny-phi", "--input", texts, "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "cannot write a shard (No space left on device" in one_line(capsys)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "c"))

    monkeypatch.setattr(activations, "save_file", read_only)
    assert main(argv) == 2
    assert "Read-only file system" in one_line(capsys)


def test_json_comes_out_on_every_failure_path(prompts, tmp_path, capsys, monkeypatch):
    from workbench.cli import audit_commands

    def broken(args):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(audit_commands, "cmd_audit_toxicity", broken)
    assert main([*tox(prompts, tmp_path / "o"), "--json"]) == 1
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["exit_code"] == 1 and "RuntimeError" in answer["error"]
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    saved = Path(err.split("traceback in ")[1].rstrip(")"))
    assert "something nobody foresaw" in saved.read_text()
    saved.unlink()


# ----------------------------------------------------------------------------- 15, 16: after the work


def test_a_damaged_localisation_file_is_one_line_in_report(tmp_path, capsys):
    small = tmp_path / "pairs.csv"
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:4]) + "\n")
    out = tmp_path / "b"
    assert (
        main(["audit", "bias", "--model", "tiny-phi", "--pairs", str(small), "--out", str(out)])
        == 0
    )
    capsys.readouterr()
    for damaged, words in (
        ("{not json", "damaged localisation.json"),
        ("[" * 100000 + "]" * 100000, "damaged localisation.json"),
        ('{"components": []}', "lacks or garbles a field"),
        ("[1, 2]", "is not a JSON object"),
    ):
        (out / "localisation.json").write_text(damaged)
        assert main(["report", str(out)]) == 2
        assert words in one_line(capsys)


def test_held_out_texts_longer_than_the_context_are_refused_before_any_work(
    prompts, tmp_path, capsys
):
    long = tmp_path / "long.txt"
    long.write_text("short text\n" + "word " * 3000 + "\n")
    argv = tox(prompts, tmp_path / "o", "--steer", PAIRS, "--layer", "1", "--alpha", "2")
    assert main([*argv, "--heldout", str(long)]) == 2
    err = one_line(capsys)
    assert "held-out text or QA prompt is" in err and f"{long}:2" in err, err
    assert not (tmp_path / "o").exists()
    steer = ["steer", "--model", "tiny-phi", "--pairs", PAIRS, "--layer", "1", "--prompt", "hi"]
    assert main([*steer, "--heldout", str(long)]) == 2
    assert "held-out text or QA prompt is" in one_line(capsys)


# ----------------------------------------------------------------------------- 26: resume


def test_resume_checks_every_recorded_shard_not_only_run_json(prompts, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(tox(prompts, out)) == 0
    settings = json.loads((out / "run.json").read_text())
    settings["model"]["dtype"] = "bfloat16"  # the hand edit of the issue
    (out / "run.json").write_text(json.dumps(settings))
    shards = sorted((out / "shards").glob("*.parquet"))
    shards[-1].unlink()
    before = sorted(p.name for p in (out / "shards").iterdir())
    capsys.readouterr()
    assert main(tox(prompts, out, "--dtype", "bfloat16")) == 2
    err = one_line(capsys)
    assert "computed with other settings" in err, err
    assert sorted(p.name for p in (out / "shards").iterdir()) == before  # nothing computed


def test_a_cache_resume_checks_every_recorded_shard_too(tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "c"
    argv = ["cache", "--model", "tiny-phi", "--input", str(texts), "--shard-size", "2"]
    assert main([*argv, "--out", str(out), "--positions", "last"]) == 0
    settings = json.loads((out / "run.json").read_text())
    settings["positions"] = "mean"  # the hand edit: run.json now claims the other positions
    (out / "run.json").write_text(json.dumps(settings))
    sorted((out / "shards").glob("*.safetensors"))[-1].unlink()
    before = sorted(p.name for p in (out / "shards").iterdir())
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--positions", "mean"]) == 2
    assert "computed with other settings" in one_line(capsys)
    assert sorted(p.name for p in (out / "shards").iterdir()) == before
