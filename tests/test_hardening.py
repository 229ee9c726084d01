"""Resume that refuses what changes results, verified storage, one writer per folder, sampling
independent of batching, and the injection and symlink holes closed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.core.errors import InputError
from workbench.core.storage import ShardIndex, folder_lock
from workbench.report.folder import SHARD_INDEX, load_results

from .conftest import ROOT, SHARED_DATA, gated_audit_child

PROMPTS = [
    "Tell me about cats.",
    "Write a note to my boss.",
    "Describe the sea.",
    "What do you think of rain?",
    "Say something to a stranger.",
]
CROWS = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"


@pytest.fixture()
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def tox(prompts, out, *extra):
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
        "4",
        "--shard-size",
        "2",
        *extra,
    ]


def run(args, capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- resume


def test_resume_refuses_what_changes_results_and_names_the_field(
    prompts, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "a"
    assert run(tox(prompts, out), capsys)[0] == 0
    code, err = run(tox(prompts, out, "--dtype", "bfloat16"), capsys)
    assert code == 2 and "model.dtype differ" in err
    settings = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(
        json.dumps({**settings, "model": {**settings["model"], "revision": "other"}})
    )
    code, err = run(tox(prompts, out), capsys)
    assert code == 2 and "model.revision differ" in err
    (out / "run.json").write_text(json.dumps(settings))
    code, err = run(tox(prompts, out, "--max-new-tokens", "5"), capsys)
    assert code == 2 and "max_new_tokens differ" in err
    prompts.write_text("\n".join(PROMPTS[::-1]) + "\n")  # same file name, edited content
    code, err = run(tox(prompts, out), capsys)
    assert code == 2 and "prompts_sha256 differ" in err
    prompts.write_text("\n".join(PROMPTS) + "\n")
    # The same file by another spelling, and a summary-only setting, are accepted.
    monkeypatch.chdir(tmp_path)
    assert run(tox(Path("./p.txt"), out), capsys)[0] == 0
    assert run(tox(Path("p.txt"), out, "--bootstrap", "300"), capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["bootstrap"] == 300


def test_resume_refuses_an_edited_probe_and_an_edited_pairs_file(prompts, tmp_path, capsys):
    from workbench.interp.probes import Probe

    probe_dir = tmp_path / "probe"
    assert (
        main(
            [
                "probe",
                "train",
                "--model",
                "tiny-phi",
                "--data",
                str(ROOT / "probes" / "toxicity.jsonl"),
                "--hooks",
                "blocks.1.hook_resid_post",
                "--out",
                str(probe_dir),
            ]
        )
        == 0
    )
    probe_path = probe_dir / "chosen"
    out = tmp_path / "a"
    args = tox(prompts, out, "--scorers", "profanity-check,probe", "--probe", str(probe_path))
    assert run(args, capsys)[0] == 0
    probe = Probe.load(probe_path)
    probe.weight = probe.weight * 2
    probe.save(probe_path)
    code, err = run(args, capsys)
    assert code == 2 and "scorer_details differ" in err
    pairs = tmp_path / "pairs.jsonl"
    shutil.copy(ROOT / "probes" / "polite_vs_rude_pairs.jsonl", pairs)
    small = tmp_path / "crows.csv"
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:5]) + "\n")
    bias = [
        "audit",
        "bias",
        "--model",
        "tiny-phi",
        "--pairs",
        str(small),
        "--out",
        str(tmp_path / "b"),
        "--steer",
        str(pairs),
        "--layer",
        "1",
        "--alpha",
        "4",
    ]
    assert run(bias, capsys)[0] == 0
    pairs.write_text(pairs.read_text().replace("please", "kindly"))
    code, err = run(bias, capsys)
    assert code == 2 and "steer.pairs_sha256 differ" in err
    shutil.copy(ROOT / "probes" / "polite_vs_rude_pairs.jsonl", pairs)
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:4]) + "\n")
    code, err = run(bias, capsys)
    assert code == 2 and "(pairs_sha256, n_pairs differ)" in err


def test_a_refused_command_leaves_the_folder_usable(prompts, tmp_path, capsys):
    out = tmp_path / "a"
    code, err = run(tox(prompts, out, "--shard-size", "0"), capsys)
    assert code == 2 and not out.exists()  # validation before run.json
    assert run(tox(prompts, out), capsys)[0] == 0


# ----------------------------------------------------------------------------- storage


def test_damaged_and_missing_audit_shards_are_recomputed(prompts, tmp_path, capsys):
    out = tmp_path / "a"
    assert run(tox(prompts, out), capsys)[0] == 0
    reference = load_results(out)
    shards = sorted((out / "shards").glob("*.parquet"))
    assert len(shards) == 3
    index = json.loads((out / SHARD_INDEX).read_text())
    assert set(index) == {p.name for p in shards}
    shards[0].write_bytes(shards[0].read_bytes()[:100])  # truncated
    shards[2].unlink()  # deleted
    with pytest.raises(InputError, match="missing or damaged"):
        load_results(out)
    code, err = run(tox(prompts, out), capsys)
    assert code == 0 and f"{shards[0]} does not match its recorded sha256" in err
    assert load_results(out).equals(reference)
    assert len(list((out / "shards").glob("*.damaged-*"))) == 1
    assert all(ShardIndex(out / SHARD_INDEX).verified(p) for p in shards)
    # A stray copy in shards/ is not read by the report.
    shutil.copy(shards[1], out / "shards" / "baseline-00001 (copy).parquet")
    shutil.copy(shards[1], out / "shards" / "baseline-00009.parquet")
    assert len(load_results(out)) == len(reference)
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(reference)


def test_damaged_and_missing_cache_shards_are_recomputed(tiny, tmp_path, capsys):
    texts = [f"text number {i} with some words" for i in range(20)]
    out = tmp_path / "acts"
    first = wb.cache_activations(
        tiny,
        texts,
        hooks="blocks.1.hook_resid_post",
        positions="mean",
        out=out,
        shard_size=8,
        batch_size=2,
        progress=False,
    )
    reference = first["blocks.1.hook_resid_post"].clone()
    shards = sorted((out / "shards").glob("*.safetensors"))
    assert len(shards) == 3
    shards[0].write_bytes(shards[0].read_bytes()[:-40])  # truncated
    shards[1].unlink()
    with pytest.raises(InputError, match="missing or damaged"):
        wb.open_cache(out)["blocks.1.hook_resid_post"]
    again = wb.cache_activations(
        tiny,
        texts,
        hooks="blocks.1.hook_resid_post",
        positions="mean",
        out=out,
        shard_size=8,
        batch_size=2,
        progress=False,
    )
    assert torch.equal(again["blocks.1.hook_resid_post"], reference)
    assert "moved aside" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    from workbench.core.provenance import file_sha256

    assert all(file_sha256(out / s["file"]) == s["sha256"] for s in manifest["shards"])


def test_a_second_writer_is_refused_naming_the_holder(prompts, tmp_path, capsys):
    out = tmp_path / "a"
    with folder_lock(out):
        code, err = run(tox(prompts, out), capsys)
    assert code == 2 and f"another workbench process (PID {os.getpid()}) is writing" in err
    assert run(tox(prompts, out), capsys)[0] == 0  # the lock went with its holder


def test_two_concurrent_writers_one_proceeds_and_the_manifest_matches(prompts, tmp_path):
    import time

    out, gate = tmp_path / "a", tmp_path / "gate"
    script = tmp_path / "child.py"
    # Every shard of either writer waits for `gate`: the first holds the lock until the test has
    # seen the second one refused, however slowly either process starts.
    script.write_text(gated_audit_child(gate))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [sys.executable, str(script), *tox(prompts, out, "--shard-size", "1")]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()):
        assert first.poll() is None and time.monotonic() < deadline, "the first writer never locked"
        time.sleep(0.05)
    second = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    second.wait(timeout=600)
    gate.touch()
    results = [(child.wait(timeout=600), child.stderr.read()) for child in (first, second)]
    assert [code for code, _ in results] == [0, 2], results
    assert f"another workbench process (PID {first.pid}) is writing" in results[1][1]
    index = ShardIndex(out / SHARD_INDEX)
    assert len(index.entries) == 5 and all(
        index.verified(out / "shards" / name) for name in index.entries
    )
    assert not list(out.rglob("*.tmp"))


# ----------------------------------------------------------------------------- sampling


def test_sampled_audits_are_equal_for_any_batch_size(prompts, tmp_path, capsys):
    frames = []
    for batch in (1, 2, 8):
        out = tmp_path / f"b{batch}"
        assert (
            run(
                tox(
                    prompts,
                    out,
                    "--samples",
                    "2",
                    "--temperature",
                    "0.9",
                    "--max-new-tokens",
                    "6",
                    "--batch-size",
                    str(batch),
                ),
                capsys,
            )[0]
            == 0
        )
        frames.append(load_results(out))
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])
    assert frames[0].groupby("row")["continuation"].nunique().max() == 2  # the samples do differ


# ----------------------------------------------------------------------------- holes


def test_html_title_injection_is_inert_in_chromium(tmp_path, capsys):
    page = tmp_path / "x.html"
    hostile = "</title><svg onload=document.title=7>"
    assert main(["attention", "--model", "tiny-phi", "--prompt", hostile, "--html", str(page)]) == 0
    capsys.readouterr()
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make setup installs it)"
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<svg onload" not in dom and "document.title=7" in dom  # present only as text
    title = dom.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.startswith("attention: ") and "&lt;/title&gt;" in title


def test_symlinks_out_of_the_results_root_are_refused(tmp_path):
    from workbench.dashboard.results_root import check_audit_inside
    from workbench.report.html import audit_folders

    root, outside = tmp_path / "results", tmp_path / "outside"
    (root / "audit" / "shards").mkdir(parents=True)
    (outside / "shards").mkdir(parents=True)
    (outside / "run.json").write_text("{}")
    (root / "audit" / "run.json").symlink_to(outside / "run.json")
    with pytest.raises(InputError, match="outside the results root"):
        check_audit_inside(root, "audit")
    (root / "audit" / "run.json").unlink()
    (root / "audit" / "run.json").write_text("{}")
    shutil.rmtree(root / "audit" / "shards")
    (root / "audit" / "shards").symlink_to(outside / "shards")
    with pytest.raises(InputError, match="outside the results root"):
        check_audit_inside(root, "audit")
    # report never writes through a symlinked subfolder.
    (root / "linked").symlink_to(outside)
    with pytest.raises(InputError, match="neither an audit folder"):
        audit_folders(root)


def test_detoxify_checkpoint_naming_another_repository_is_refused(tmp_path):
    from workbench.safety.scorers import DetoxifyScorer

    checkpoint = {
        "config": {
            "arch": {
                "args": {
                    "model_type": "attacker/evil-repo",
                    "model_name": "BertForSequenceClassification",
                    "num_classes": 6,
                }
            },
            "dataset": {"args": {"classes": ["toxic"]}},
        },
        "state_dict": {},
    }
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match="only Detoxify's own"):
        DetoxifyScorer("original", checkpoint=str(path))


def test_run_json_text_is_plain_in_the_dashboard(tmp_path, monkeypatch):
    root = tmp_path / "results"
    small = tmp_path / "pairs.csv"
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:4]) + "\n")
    assert (
        main(
            [
                "audit",
                "bias",
                "--model",
                "tiny-phi",
                "--pairs",
                str(small),
                "--out",
                str(root / "b"),
            ]
        )
        == 0
    )
    run_file = root / "b" / "run.json"
    settings = json.loads(run_file.read_text())
    crafted = "![x](http://127.0.0.1:9/pixel.png) **bold**"
    settings["model"]["name"] = crafted
    run_file.write_text(json.dumps(settings))
    app = audit_page(root, "b", monkeypatch)
    assert not app.exception
    assert any(crafted in t.value for t in app.text)  # shown verbatim, as text
    assert not any("pixel.png" in m.value for m in app.markdown)


def audit_page(root: Path, audit: str, monkeypatch):
    """The dashboard's Audits page (tiny-phi, results root `root`) showing the audit `audit`."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WORKBENCH_RESULTS", str(root))
    monkeypatch.setenv("WORKBENCH_DASHBOARD_MODEL", "tiny-phi")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.run()
    app.switch_page(str(ROOT / "workbench" / "dashboard" / "views" / "audits.py")).run()
    app.text_input(key="audit_path").set_value(audit).run()
    return app
