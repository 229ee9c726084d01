"""Linear probes and the labelled data readers."""
from __future__ import annotations

import json

import pytest
import torch

import workbench as wb
from workbench.datasets import read_bias_pairs, read_labeled, read_toxigen
from workbench.errors import InputError
from workbench.probes import Probe, auroc, probe_scores, split_indices, token_scores, train_probes

from .conftest import ROOT, SHARED_DATA

SHARED = SHARED_DATA


def test_auroc_matches_definition():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.8])
    labels = torch.tensor([0, 0, 1, 1, 0])
    pairs = [(p, n) for p in range(5) for n in range(5) if labels[p] == 1 and labels[n] == 0]
    expected = sum(1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs) / len(pairs)
    assert abs(auroc(scores, labels) - expected) < 1e-12


def test_splits_are_stratified_or_grouped():
    labels = [0, 1] * 50
    groups = [f"g{i % 5}" for i in range(100)]
    train, test = split_indices(labels, groups, "random", 0.2, seed=1)
    assert len(test) == 20 and not set(train) & set(test)
    assert sum(labels[i] for i in test) == 10
    train, test = split_indices(labels, groups, "group", 0.2, seed=1)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    with pytest.raises(wb.InputError, match="group"):
        split_indices(labels, None, "group")


def test_probe_learns_a_planted_direction_and_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    direction = torch.randn(16, generator=generator)
    acts = {"h": torch.randn(200, 16, generator=generator) + labels[:, None] * direction,
            "noise": torch.randn(200, 16, generator=generator)}
    sweep = train_probes(acts, labels.tolist(), split="random", seed=0)
    assert sweep.probes["h"].metrics["auroc"] > 0.95 and sweep.probes["noise"].metrics["auroc"] < 0.75
    assert sweep.best().hook == "h"
    assert torch.nn.functional.cosine_similarity(sweep.probes["h"].direction, direction, dim=0) > 0.9
    saved = sweep.best().save(tmp_path / "probe")
    loaded = Probe.load(saved)
    assert torch.equal(loaded.predict_proba(acts["h"]), sweep.best().predict_proba(acts["h"]))
    assert json.loads((saved / "probe.json").read_text())["metrics"]["auroc"] > 0.95
    with pytest.raises(wb.InputError, match="not a saved probe"):
        Probe.load(tmp_path)


def test_probe_on_tiny_model_applies_to_texts_and_tokens(tiny):
    texts = [f"I love {w}" for w in ("cats", "dogs", "tea", "rain", "books", "music")] + \
            [f"I hate {w}" for w in ("cats", "dogs", "tea", "rain", "books", "music")]
    labels = [1] * 6 + [0] * 6
    cache = wb.cache_activations(tiny, texts, hooks="resid_post", positions="mean", progress=False)
    sweep = train_probes(cache, labels, split="random", test_fraction=0.34, seed=0,
                         meta={"positions": "mean", "model": "tiny-phi"})
    probe = sweep.probes["blocks.1.hook_resid_post"]
    scores = probe_scores(tiny, probe, texts[:2])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    assert torch.allclose(scores, probe.predict_proba(cache["blocks.1.hook_resid_post"][:2]), atol=1e-5)
    tokens, per_token = token_scores(tiny, probe, "I love cats")
    assert len(tokens) == len(per_token) == 3


def test_readers_on_shared_data():
    rows = read_toxigen(SHARED / "toxigen")
    assert 650 <= len(rows) <= 800  # deduplicated statements
    assert {r.label for r in rows} == {0, 1} and len({r.group for r in rows}) >= 13
    assert len({" ".join(r.text.lower().split()) for r in rows}) == len(rows)
    pairs = read_bias_pairs(SHARED / "crows_pairs" / "crows_pairs_anonymized.csv")
    assert len(pairs) == 1508 and {p.direction for p in pairs} == {"stereo", "antistereo"}


def test_labeled_reader_errors(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n')
    with pytest.raises(wb.InputError, match=r"p.jsonl:2: field 'label' must be 0 or 1"):
        read_labeled(path)
    with pytest.raises(wb.InputError, match="no column 'sent_more'"):
        bad = tmp_path / "pairs.csv"
        bad.write_text("a,b\n1,2\n")
        read_bias_pairs(bad)


@pytest.mark.integration
def test_toxigen_probe_on_smollm2(smol):
    rows = read_toxigen(SHARED / "toxigen")
    hooks = "blocks.12.hook_resid_post,blocks.13.hook_resid_post"
    cache = wb.cache_activations(smol, [r.text for r in rows], hooks=hooks, positions="mean", progress=False)
    labels, groups = [r.label for r in rows], [r.group for r in rows]
    random_split = train_probes(cache, labels, groups, split="random", seed=0)
    group_split = train_probes(cache, labels, groups, split="group", seed=0)
    assert random_split.best().metrics["auroc"] >= 0.88
    assert group_split.best().metrics["auroc"] >= 0.88


def test_probe_cli_train_and_apply(tmp_path, capsys):
    from workbench.cli import main

    code = main(["probe", "train", "--model", "tiny-phi", "--data", str(ROOT / "probes" / "gender.jsonl"),
                 "--hooks", "blocks.1.hook_resid_post,blocks.3.hook_resid_post", "--split", "group",
                 "--out", str(tmp_path / "p"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["split"] == "group" and summary["n_train"] + summary["n_test"] == 40
    assert (tmp_path / "p" / "blocks.1.hook_resid_post" / "probe.safetensors").exists()
    code = main(["probe", "apply", "--model", "tiny-phi", "--probe", str(tmp_path / "p" / "blocks.1.hook_resid_post"),
                 "--text", "The queen smiled", "--tokens", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0 and [r["token"] for r in rows] == ["The", " queen", " smiled"]
    code = main(["probe", "apply", "--model", "tiny-phi", "--probe", str(tmp_path), "--text", "x"])
    assert code == 2 and "not a saved probe" in capsys.readouterr().err


def test_sparse_probe_finds_the_planted_feature_and_controls_do_not():
    from workbench.probes import sparse_probes

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(240, 48, generator=generator)
    y = (torch.rand(240, generator=generator) < 0.5).long()
    x[:, 11] += 2.0 * (2 * y - 1)  # the only informative coordinate
    groups = [f"g{i % 6}" for i in range(240)]
    for split in ("random", "group"):
        frame = sparse_probes({"h": x}, y.tolist(), groups, split=split, ks=(1, 8), seed=0).to_frame()
        first = frame[frame.k == 1].iloc[0]
        assert first["features"] == [11] and first["auroc"] > 0.95
        assert first["random_coordinate_auroc"] < 0.8  # k random coordinates rarely include it
    with pytest.raises(InputError, match="both 0 and 1"):
        sparse_probes({"h": x}, [0] * 240)


def test_probe_cli_sparse_k(tmp_path, capsys):
    from workbench.cli import main

    code = main(["probe", "train", "--model", "tiny-phi", "--data", str(ROOT / "probes" / "gender.jsonl"),
                 "--hooks", "blocks.2.hook_resid_post", "--sparse-k", "1", "4", "--out", str(tmp_path / "p"),
                 "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and [row["k"] for row in summary["sparse"]] == [1, 4]
    assert all(0 <= row["auroc"] <= 1 and len(row["features"]) == row["k"] for row in summary["sparse"])
    assert json.loads((tmp_path / "p" / "sparse.json").read_text()) == summary["sparse"]
