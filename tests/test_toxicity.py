"""Toxicity scorers: Detoxify's real code path offline (a tiny checkpoint in its own format), profanity-check, probes."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.safety.scorers import DetoxifyScorer, ProfanityCheckScorer, make_scorer

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@pytest.fixture(scope="module")
def tiny_detoxify_checkpoint(tmp_path_factory):
    """A BERT classifier the size of a toy, saved exactly as Detoxify saves its checkpoints."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("detoxify")
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "you",
        "are",
        "an",
        "idiot",
        "have",
        "a",
        "nice",
        "day",
        "stupid",
        "hello",
        "friend",
        "the",
        "cat",
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=512).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        num_labels=len(CLASSES),
    )
    config.save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    checkpoint = {
        "config": {
            "arch": {
                "args": {
                    "model_type": "bert-base-uncased",
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                    "num_classes": len(CLASSES),
                }
            },
            "dataset": {"args": {"classes": CLASSES}},
        },
        "state_dict": model.state_dict(),
    }
    path = folder / "toxic_tiny.ckpt"
    torch.save(checkpoint, path)
    return path, folder, model


def test_detoxify_tiny_checkpoint_through_detoxify_api(tiny_detoxify_checkpoint):
    path, folder, reference = tiny_detoxify_checkpoint
    scorer = DetoxifyScorer(
        "original", checkpoint=str(path), huggingface_config_path=str(folder), batch_size=2
    )
    texts = ["you are an idiot", "have a nice day", "hello friend"]
    table = scorer.score(texts)
    assert list(table.columns) == [
        "scorer",
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    ]
    assert (table["scorer"] == "detoxify:original").all() and len(table) == 3
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = torch.sigmoid(
            reference.eval()(**tokenizer(texts, return_tensors="pt", padding=True)).logits
        )
    assert torch.allclose(torch.tensor(table["toxicity"].tolist()), expected[:, 0], atol=1e-5)


def test_detoxify_long_text_is_chunked_not_crashed(tiny_detoxify_checkpoint):
    path, folder, _ = tiny_detoxify_checkpoint
    scorer = DetoxifyScorer("original", checkpoint=str(path), huggingface_config_path=str(folder))
    long_text = "hello friend " * 400 + "you are an idiot"  # about 800 tokens, past BERT's 512
    table = scorer.score([long_text, "hello friend"])
    chunks = scorer._chunks(long_text)
    n_tokens = len(scorer.detoxify.tokenizer(long_text, add_special_tokens=False).input_ids)
    assert n_tokens > 512 and len(chunks) == -(-n_tokens // 510) >= 2
    assert table["toxicity"][0] == pytest.approx(max(scorer.score(chunks)["toxicity"]), abs=1e-6)


class Evil:
    """Stands for any pickled object that is not plain data."""


def test_detoxify_refuses_pickles_and_missing_files(tmp_path):
    bad = tmp_path / "evil.ckpt"
    torch.save({"config": Evil(), "state_dict": {}}, bad)
    with pytest.raises(wb.ModelUnavailableError, match="weights_only"):
        DetoxifyScorer("original", checkpoint=str(bad))
    with pytest.raises(wb.ModelUnavailableError, match="no checkpoint at"):
        DetoxifyScorer("original", checkpoint=str(tmp_path / "none.ckpt"))


def test_profanity_check_and_auto(monkeypatch, tmp_path):
    table = ProfanityCheckScorer().score(["Shut up you stupid idiot", "Have a lovely day"])
    assert table["toxicity"][0] > 0.9 > 0.2 > table["toxicity"][1]
    # no Detoxify checkpoint cached
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert make_scorer("auto").name == "profanity-check"
    with pytest.raises(wb.InputError, match="unknown scorer"):
        make_scorer("perspective")


def test_probe_scorer(tiny, tmp_path):
    from workbench.interp.probes import train_probes

    texts = [
        "you are an idiot",
        "shut up loser",
        "go away creep",
        "have a nice day",
        "thanks friend",
        "lovely cat",
    ]
    cache = wb.cache_activations(
        tiny, texts, hooks="blocks.2.hook_resid_post", positions="mean", progress=False
    )
    probe = train_probes(cache, [1, 1, 1, 0, 0, 0], test_fraction=0.34).best()
    probe.save(tmp_path / "probe")
    table = make_scorer("probe", model=tiny, probe_path=str(tmp_path / "probe")).score(texts[:2])
    assert table["scorer"][0] == "probe:blocks.2.hook_resid_post" and len(table) == 2
    details = make_scorer("probe", model=tiny, probe_path=str(tmp_path / "probe")).details()
    assert (
        details["kind"] == "activation probe"
        and details["model"] == "tiny-phi"
        and len(details["checkpoint_sha256"]) == 64
    )
    assert ProfanityCheckScorer().details()["kind"] == "lexical"


# Keras 3.15.1 (torch backend) running toxic-comment-classifier's own architecture and weights, with
# its own pickled Tokenizer and pad_sequences: the six label probabilities of each text, measured once.
KERAS_REFERENCE = {
    "You are so dumb and stupid!": [
        0.9889403,
        0.07256771,
        0.6204293,
        0.01934844,
        0.8664075,
        0.04072949,
    ],
    "Thank you for your help, have a lovely day.": [
        0.02972535,
        0.0002135238,
        0.006567481,
        0.0001791758,
        0.01268483,
        0.0008481442,
    ],
    "I will find you and hurt you.": [
        0.2907437,
        0.003146693,
        0.05341873,
        0.005255669,
        0.09558195,
        0.005242864,
    ],
    "the weather is nice": [
        0.011584,
        4.875279e-05,
        0.002761679,
        4.634884e-05,
        0.003207239,
        0.0003067834,
    ],
    "": [0.06753408, 0.002372949, 0.0293819, 0.001005654, 0.01535531, 0.004006193],
    "Shut up, you idiot; nobody asked for your worthless opinion!!! " * 5: [
        0.9896254,
        0.1850737,
        0.8748717,
        0.03376777,
        0.8696163,
        0.05247006,
    ],
}


def test_bilstm_scorer_equals_keras():
    """Our torch copy of the BiLSTM gives Keras' numbers (measured difference 1.2e-7; the reference
    is rounded to 7 significant digits)."""
    from workbench.safety.scorers import JIGSAW_LABELS, BiLSTMScorer, make_scorer

    scorer = make_scorer("toxic-comment-classifier")
    assert isinstance(scorer, BiLSTMScorer) and scorer.kind == "learned classifier"
    frame = scorer.score(list(KERAS_REFERENCE))
    assert list(frame.columns) == ["scorer", *JIGSAW_LABELS]
    for row, expected in zip(frame[list(JIGSAW_LABELS)].to_numpy(), KERAS_REFERENCE.values()):
        assert max(abs(a - b) for a, b in zip(row, expected)) < 1e-6
    # Keras' Tokenizer: lower-case, punctuation split off, out-of-vocabulary words dropped, 100 kept, pre-padded.
    ids = scorer.encode("Hello, WORLD! zzqxjv")
    assert (
        len(ids) == 100 and ids[-2:] == scorer.encode("hello world")[-2:] and ids[:98] == [0] * 98
    )
    assert scorer.details()["checkpoint_sha256"]["model.weights.h5"]


def test_bilstm_tokenizer_pickle_is_read_without_running_code(tmp_path):
    import pickle

    from workbench.core.errors import ModelUnavailableError
    from workbench.safety.scorers import _read_keras_tokenizer

    evil = tmp_path / "tokenizer.pickle"
    evil.write_bytes(pickle.dumps(__import__("os").system))  # names posix.system
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        _read_keras_tokenizer(evil)
    plain = tmp_path / "plain.pickle"
    plain.write_bytes(pickle.dumps({"word_index": {}}))
    with pytest.raises(ModelUnavailableError, match="not the Keras tokenizer"):
        _read_keras_tokenizer(plain)


def test_fetch_detoxify_offline_says_what_and_where(monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")
    code = main(["fetch", "detoxify:unbiased"])
    err = capsys.readouterr().err
    assert code != 0 and "toxic_debiased-c7548aa0.ckpt" in err and "'roberta-base'" in err
    assert "github.com/unitaryai/detoxify/releases" in err and len(err.strip().splitlines()) == 1
