"""Linear probes and the labelled data readers."""

from __future__ import annotations

import json

import pytest
import torch

import workbench as wb
from workbench.core.datasets import read_bias_pairs, read_labeled, read_toxigen
from workbench.core.errors import InputError
from workbench.interp.probes import (
    Probe,
    auroc,
    probe_scores,
    split_indices,
    token_scores,
    train_probes,
)

from .conftest import ROOT, SHARED_DATA

SHARED = SHARED_DATA


def test_auroc_matches_definition():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.8])
    labels = torch.tensor([0, 0, 1, 1, 0])
    pairs = [(p, n) for p in range(5) for n in range(5) if labels[p] == 1 and labels[n] == 0]
    expected = sum(
        1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs
    ) / len(pairs)
    assert abs(auroc(scores, labels) - expected) < 1e-12


def test_splits_are_three_way_stratified_or_grouped():
    labels = [0, 1] * 50
    groups = [f"g{i % 5}" for i in range(100)]
    train, val, test = split_indices(labels, groups, "random", 0.2, 0.2, seed=1)
    assert len(test) == 20 and len(val) == 20 and len(train) == 60
    assert not set(train) & set(test) and not set(train) & set(val) and not set(val) & set(test)
    assert sum(labels[i] for i in test) == 10 and sum(labels[i] for i in val) == 10
    train, val, test = split_indices(labels, groups, "group", 0.2, 0.2, seed=1)
    seen = [{groups[i] for i in rows} for rows in (train, val, test)]
    assert all(seen) and not seen[0] & seen[1] and not seen[0] & seen[2] and not seen[1] & seen[2]
    assert len(train) + len(val) + len(test) == 100
    with pytest.raises(wb.InputError, match="group"):
        split_indices(labels, None, "group")
    with pytest.raises(wb.InputError, match="three groups"):
        split_indices(labels, [f"g{i % 2}" for i in range(100)], "group")
    with pytest.raises(wb.InputError, match="fractions"):
        split_indices(labels, None, "random", 0.6, 0.5)


def test_probe_learns_a_planted_direction_and_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    direction = torch.randn(16, generator=generator)
    acts = {
        "h": torch.randn(200, 16, generator=generator) + labels[:, None] * direction,
        "noise": torch.randn(200, 16, generator=generator),
    }
    sweep = train_probes(acts, labels.tolist(), split="random", seed=0)
    assert (
        sweep.probes["h"].metrics["test_auroc"] > 0.95
        and sweep.probes["noise"].metrics["test_auroc"] < 0.75
    )
    assert sweep.chosen == "h" and sweep.best().hook == "h"
    best = sweep.best().metrics
    assert best["l2"] in sweep.l2_grid and best["val_auroc"] > 0.95
    interval = best[
        "test_auroc_interval"
    ]  # the chosen probe's headline: test AUROC with its interval
    assert (
        interval["low"] <= best["test_auroc"] == interval["value"] <= interval["high"]
        and interval["n"] == 50
    )
    assert (
        0 <= best["test_ece"] < 0.3 and sum(b["count"] for b in best["calibration"]["bins"]) == 50
    )
    # only the chosen probe gets one
    assert "test_auroc_interval" not in sweep.probes["noise"].metrics
    assert sweep.probes["h"].metrics["mean_difference_test_auroc"] > 0.95
    assert (
        torch.nn.functional.cosine_similarity(sweep.probes["h"].direction, direction, dim=0) > 0.9
    )
    # a plain dict carries no provenance
    with pytest.raises(wb.InputError, match="records no model"):
        sweep.best().save(tmp_path / "anonymous")
    trained = train_probes(
        acts, labels.tolist(), seed=0, meta={"model": "tiny-phi", "positions": "mean"}
    )
    saved = trained.best().save(tmp_path / "probe")
    loaded = Probe.load(saved)
    assert torch.equal(loaded.predict_proba(acts["h"]), trained.best().predict_proba(acts["h"]))
    assert json.loads((saved / "probe.json").read_text())["metrics"]["test_auroc"] > 0.95
    with pytest.raises(wb.InputError, match="not a saved probe"):
        Probe.load(tmp_path)


def test_chosen_layer_comes_from_validation_not_test():
    """Plant a hook that is perfect on the test rows only: it must not be chosen."""
    generator = torch.Generator().manual_seed(1)
    labels = (torch.arange(200) % 2).tolist()
    _, val, test = split_indices(labels, None, "random", 0.25, 0.2, seed=0)
    good = torch.randn(200, 8, generator=generator) + torch.tensor(labels)[:, None] * 1.5
    cheat = torch.randn(200, 8, generator=generator)
    cheat[test, 0] += torch.tensor(labels)[test].float() * 10  # separable on test, noise elsewhere
    sweep = train_probes({"good": good, "cheat": cheat}, labels, seed=0)
    assert sweep.chosen == "good"
    assert sweep.probes["good"].metrics["val_auroc"] > sweep.probes["cheat"].metrics["val_auroc"]


def test_probe_on_tiny_model_applies_to_texts_and_tokens(tiny):
    texts = [f"I love {w}" for w in ("cats", "dogs", "tea", "rain", "books", "music")] + [
        f"I hate {w}" for w in ("cats", "dogs", "tea", "rain", "books", "music")
    ]
    labels = [1] * 6 + [0] * 6
    cache = wb.cache_activations(tiny, texts, hooks="resid_post", positions="mean", progress=False)
    sweep = train_probes(cache, labels, split="random", test_fraction=0.34, seed=0)
    probe = sweep.probes["blocks.1.hook_resid_post"]
    meta = probe.meta  # everything the cache and the sweep know, with no meta= from the caller
    assert (
        meta["model"] == "tiny-phi"
        and meta["positions"] == "mean"
        and meta["revision"] == "tiny-phi-v1 (seed 0)"
    )
    assert (
        len(meta["texts_sha256"]) == 64
        and len(meta["labels_sha256"]) == 64
        and meta["split"] == "random"
    )
    assert (
        meta["width"] == 128
        and meta["versions"]["scikit-learn"]
        and meta["versions"]["transformer-lens"]
    )
    scores = probe_scores(tiny, probe, texts[:2])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    assert torch.allclose(
        scores, probe.predict_proba(cache["blocks.1.hook_resid_post"][:2]), atol=1e-5
    )
    tokens, per_token = token_scores(tiny, probe, "I love cats")
    assert len(tokens) == len(per_token) == 3
    with pytest.raises(wb.InputError, match="trained on positions 'mean'"):
        probe_scores(tiny, probe, texts[:2], positions="last")
    assert probe_scores(
        tiny, probe, texts[:2], positions="last", allow_other_positions=True
    ).shape == (2,)
    stranger = Probe(
        probe.hook,
        probe.weight,
        probe.bias,
        probe.mean,
        probe.std,
        probe.direction,
        meta={**probe.meta, "model": "smollm2-135m"},
    )
    with pytest.raises(
        wb.InputError, match="trained on 'smollm2-135m' and cannot score 'tiny-phi'"
    ):
        probe_scores(tiny, stranger, texts[:2])
    narrow = Probe(
        probe.hook,
        probe.weight[:64],
        probe.bias,
        probe.mean[:64],
        probe.std[:64],
        probe.direction[:64],
        meta=probe.meta,
    )
    with pytest.raises(wb.InputError, match="64-wide vectors"):
        probe_scores(tiny, narrow, texts[:2])


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
    cache = wb.cache_activations(
        smol, [r.text for r in rows], hooks=hooks, positions="mean_after_first", progress=False
    )
    labels, groups = [r.label for r in rows], [r.group for r in rows]
    random_split = train_probes(cache, labels, groups, split="random", seed=0)
    group_split = train_probes(cache, labels, groups, split="group", seed=0)
    # Measured (closing note of issue 9): test AUROC 0.885-0.923 at these layers, intervals about +-0.05.
    for sweep in (random_split, group_split):
        best = sweep.best().metrics
        assert best["test_auroc"] >= 0.85 and best["test_auroc_interval"]["low"] >= 0.75
        # The mean-difference direction ranks above chance once the first token is left out of the mean.
        assert all(p.metrics["mean_difference_test_auroc"] >= 0.8 for p in sweep.probes.values())


def test_probe_cli_train_and_apply(tmp_path, capsys):
    from workbench.cli import main

    code = main(
        [
            "probe",
            "train",
            "--model",
            "tiny-phi",
            "--data",
            str(ROOT / "probes" / "gender.jsonl"),
            "--hooks",
            "blocks.1.hook_resid_post,blocks.3.hook_resid_post",
            "--split",
            "group",
            "--out",
            str(tmp_path / "p"),
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert (
        code == 0
        and summary["split"] == "group"
        and summary["n_train"] + summary["n_val"] + summary["n_test"] == 40
    )
    assert (
        summary["chosen"]["chosen_on"].startswith("validation")
        and summary["positions"] == "mean_after_first"
    )
    assert (tmp_path / "p" / "blocks.1.hook_resid_post" / "probe.safetensors").exists()
    code = main(
        [
            "probe",
            "apply",
            "--model",
            "tiny-phi",
            "--probe",
            str(tmp_path / "p" / "blocks.1.hook_resid_post"),
            "--text",
            "The queen smiled",
            "--tokens",
            "--json",
        ]
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0 and [r["token"] for r in rows] == ["The", " queen", " smiled"]
    code = main(["probe", "apply", "--model", "tiny-phi", "--probe", str(tmp_path), "--text", "x"])
    assert code == 2 and "not a saved probe" in capsys.readouterr().err
    # A probe trained on another model is refused with exit 2 and one line.
    foreign = tmp_path / "p" / "blocks.3.hook_resid_post" / "probe.json"
    info = json.loads(foreign.read_text())
    foreign.write_text(json.dumps({**info, "meta": {**info["meta"], "model": "smollm2-135m"}}))
    code = main(
        ["probe", "apply", "--model", "tiny-phi", "--probe", str(foreign.parent), "--text", "x"]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "trained on 'smollm2-135m' and cannot score 'tiny-phi'" in err
        and len(err.splitlines()) == 1
    )


def test_sparse_probe_finds_the_planted_feature_and_controls_do_not():
    from workbench.interp.sparse_probes import sparse_probes

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(240, 48, generator=generator)
    y = (torch.rand(240, generator=generator) < 0.5).long()
    x[:, 11] += 2.0 * (2 * y - 1)  # the only informative coordinate
    groups = [f"g{i % 6}" for i in range(240)]
    for split in ("random", "group"):
        frame = sparse_probes(
            {"h": x}, y.tolist(), groups, split=split, ks=(1, 8), seed=0
        ).to_frame()
        first = frame[frame.k == 1].iloc[0]
        assert first["features"] == [11] and first["auroc"] > 0.95
        assert first["random_coordinate_auroc"] < 0.8  # k random coordinates rarely include it
    with pytest.raises(InputError, match="both 0 and 1"):
        sparse_probes({"h": x}, [0] * 240)


def test_probe_cli_sparse_k(tmp_path, capsys):
    from workbench.cli import main

    code = main(
        [
            "probe",
            "train",
            "--model",
            "tiny-phi",
            "--data",
            str(ROOT / "probes" / "gender.jsonl"),
            "--hooks",
            "blocks.2.hook_resid_post",
            "--sparse-k",
            "1",
            "4",
            "--out",
            str(tmp_path / "p"),
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and [row["k"] for row in summary["sparse"]] == [1, 4]
    assert all(
        0 <= row["auroc"] <= 1 and len(row["features"]) == row["k"] for row in summary["sparse"]
    )
    assert json.loads((tmp_path / "p" / "sparse.json").read_text()) == summary["sparse"]
