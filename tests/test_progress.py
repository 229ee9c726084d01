"""Progress you can see: bars move per batch (not per shard), name their unit, and stay quiet
under --json. Each bar's updates are recorded by swapping the tqdm class that
`workbench.core.progress` builds its bars from, so nothing here depends on timing."""

from __future__ import annotations

import pytest
from tqdm import tqdm

import workbench as wb
import workbench.core.progress as progress_module
from workbench.cli import main
from workbench.interp import activation_patch

from .conftest import ROOT, SHARED_DATA

TEXTS = [f"Text number {i} is about the weather and the sea." for i in range(24)]
PAIRS = ROOT / "probes" / "gender_occupations.csv"


class Recorder(tqdm):
    """A tqdm that keeps every bar made and every positive update."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.quiet = bool(kwargs.get("disable"))  # tqdm sets .disable on close
        self.what = (kwargs.get("desc"), kwargs.get("unit"))  # a quiet bar keeps neither
        self.steps: list[float] = []
        Recorder.made.append(self)

    def update(self, n=1):
        if n:
            self.steps.append(n)
        return super().update(n)


@pytest.fixture()
def bars(monkeypatch):
    Recorder.made = []
    monkeypatch.setattr(progress_module, "tqdm", Recorder)
    return Recorder.made


def the_bar(bars, unit: str):
    matching = [b for b in bars if b.what[1] == unit and not b.quiet]
    assert len(matching) == 1, [(b.what, b.quiet) for b in bars]
    return matching[0]


@pytest.mark.parametrize("on_disk", [False, True])
def test_caching_moves_per_batch_of_texts(tiny, bars, tmp_path, on_disk):
    # 24 texts, batches of 2, shards of 8 (one sorting window): 3 shards x 4 batches
    out = tmp_path / "c" if on_disk else None
    wb.cache_activations(
        tiny, TEXTS, "blocks.0.hook_resid_post", batch_size=2, shard_size=8, out=out
    )
    bar = the_bar(bars, "text")
    assert bar.steps == [2] * 12 and bar.n == bar.total == 24 and not bar.quiet


def test_exact_patching_moves_per_forward_pass(tiny, bars):
    clean = "When Mary and John went to the store, John gave"
    corrupt = "When Mary and John went to the store, Mary gave"
    activation_patch(tiny, clean, corrupt, " Mary", " John", kind="attn_head", max_batch=4)
    bar = the_bar(bars, "cell")
    assert len(bar.steps) == 4 and bar.n == bar.total == 16  # 4 layers x 4 heads, 4 per pass


def test_generation_moves_per_token(tiny, bars):
    wb.generate(tiny, "Once upon a time", max_new_tokens=6, progress=True)
    bar = the_bar(bars, "token")
    assert bar.n == bar.total == 6 and len(bar.steps) >= 6


def test_a_long_generation_shows_a_bar_by_default_and_a_short_one_does_not(tiny, bars):
    wb.generate(tiny, "Once upon a time", max_new_tokens=3)
    wb.generate(tiny, "Once upon a time", max_new_tokens=64)
    assert [b.quiet for b in bars] == [True, False]


def test_a_toxicity_audit_moves_per_batch_of_rows_and_is_quiet_under_json(
    tiny, bars, tmp_path, capsys
):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"Say something about day {i}." for i in range(12)) + "\n")
    command = ["audit", "toxicity", "--model", "tiny-phi", "--prompts", str(prompts)]
    command += ["--scorers", "profanity-check", "--max-new-tokens", "2", "--no-capability"]
    command += ["--shard-size", "4", "--batch-size", "1"]  # 3 shards x 4 batches
    assert main(command + ["--out", str(tmp_path / "a")]) == 0
    bar = the_bar(bars, "row")
    assert bar.steps == [1] * 12 and bar.n == 12 and not bar.quiet

    bars.clear()
    capsys.readouterr()
    assert main(command + ["--out", str(tmp_path / "b"), "--json"]) == 0
    assert bars and all(b.quiet for b in bars)
    assert "row/s" not in capsys.readouterr().err


def test_a_bias_audit_moves_per_batch_of_pairs(tiny, bars, tmp_path):
    lines = PAIRS.read_text().splitlines()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(lines[:13]) + "\n")  # 12 pairs
    command = ["audit", "bias", "--model", "tiny-phi", "--pairs", str(pairs), "--out"]
    command += [str(tmp_path / "a"), "--shard-size", "4", "--batch-size", "2", "--bootstrap", "100"]
    assert main(command) == 0
    bar = the_bar(bars, "row")
    assert len(bar.steps) >= 12 and bar.n == 12  # a pair per batch of two sentences


def test_the_other_audits_move_within_their_shards(tiny, bars, tmp_path):
    """Counterfactual templates (counted per template), ToxiGen groups (a row per group, counted in
    quarters) and the capability check (a row per item, counted per batch)."""
    templates = tmp_path / "t.txt"
    templates.write_text(
        "\n".join(f"The {{group}} person number {i} said" for i in range(3)) + "\n"
    )
    command = ["audit", "counterfactual", "--model", "tiny-phi", "--templates", str(templates)]
    command += ["--groups", "young", "old", "--continuations", " kind", "--scorer", "none"]
    assert main(command + ["--out", str(tmp_path / "cf")]) == 0
    assert the_bar(bars, "row").steps == [1, 1, 1]  # the audit counts templates

    bars.clear()
    command = ["audit", "toxigen", "--model", "tiny-phi", "--data", str(SHARED_DATA / "toxigen")]
    command += ["--groups", "women", "asian", "--prompts-per-group", "1", "--max-new-tokens", "2"]
    command += ["--scorer", "profanity-check", "--out", str(tmp_path / "tg")]
    assert main(command) == 0
    assert the_bar(bars, "row").steps == [0.25] * 8  # two groups, four steps each

    bars.clear()
    prompts, qa = tmp_path / "p.txt", tmp_path / "qa.jsonl"
    prompts.write_text("Say hello.\n")
    qa.write_text("".join((ROOT / "probes" / "qa.jsonl").read_text().splitlines(True)[:12]))
    command = ["audit", "toxicity", "--model", "tiny-phi", "--prompts", str(prompts), "--qa"]
    command += [str(qa), "--heldout", str(ROOT / "probes" / "heldout_neutral.txt")]
    command += ["--scorers", "profanity-check", "--max-new-tokens", "2", "--batch-size", "4"]
    command += ["--instruct", "Be kind.", "--instruct-means", "less-toxic"]  # the check runs
    assert main(command + ["--out", str(tmp_path / "tox")]) == 0
    capability = [b for b in bars if b.what[1] == "row" and not b.quiet][1]
    assert len(capability.steps) > 2 and max(capability.steps) <= 4  # per batch of 4 items
