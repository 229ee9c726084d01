"""Toxicity scorers: Detoxify's real code path offline (a tiny checkpoint in its own format), profanity-check, probes."""
from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.scanners.toxicity import DetoxifyScorer, ProfanityCheckScorer, make_scorer

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@pytest.fixture(scope="module")
def tiny_detoxify_checkpoint(tmp_path_factory):
    """A BERT classifier the size of a toy, saved exactly as Detoxify saves its checkpoints."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("detoxify")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "an", "idiot", "have", "a", "nice", "day",
             "stupid", "hello", "friend", "the", "cat"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=512).save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512, num_labels=len(CLASSES))
    config.save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    checkpoint = {"config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                               "model_name": "BertForSequenceClassification",
                                               "tokenizer_name": "BertTokenizer", "num_classes": len(CLASSES)}},
                             "dataset": {"args": {"classes": CLASSES}}},
                  "state_dict": model.state_dict()}
    path = folder / "toxic_tiny.ckpt"
    torch.save(checkpoint, path)
    return path, folder, model


def test_detoxify_tiny_checkpoint_through_detoxify_api(tiny_detoxify_checkpoint):
    path, folder, reference = tiny_detoxify_checkpoint
    scorer = DetoxifyScorer("original", checkpoint=str(path), huggingface_config_path=str(folder), batch_size=2)
    texts = ["you are an idiot", "have a nice day", "hello friend"]
    table = scorer.score(texts)
    assert list(table.columns) == ["scorer", "toxicity", "severe_toxicity", "obscene", "threat", "insult",
                                   "identity_attack"]
    assert (table["scorer"] == "detoxify:original").all() and len(table) == 3
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = torch.sigmoid(reference.eval()(**tokenizer(texts, return_tensors="pt", padding=True)).logits)
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
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no Detoxify checkpoint cached
    assert make_scorer("auto").name == "profanity-check"
    with pytest.raises(wb.InputError, match="unknown scorer"):
        make_scorer("perspective")


def test_probe_scorer(tiny, tmp_path):
    from workbench.probes import train_probes

    texts = ["you are an idiot", "shut up loser", "go away creep", "have a nice day", "thanks friend", "lovely cat"]
    cache = wb.cache_activations(tiny, texts, hooks="blocks.2.hook_resid_post", positions="mean", progress=False)
    probe = train_probes(cache, [1, 1, 1, 0, 0, 0], test_fraction=0.34).best()
    probe.save(tmp_path / "probe")
    table = make_scorer("probe", model=tiny, probe_path=str(tmp_path / "probe")).score(texts[:2])
    assert table["scorer"][0] == "probe:blocks.2.hook_resid_post" and len(table) == 2
    details = make_scorer("probe", model=tiny, probe_path=str(tmp_path / "probe")).details()
    assert details["kind"] == "activation probe" and details["model"] == "tiny-phi" and len(details["checkpoint_sha256"]) == 64
    assert ProfanityCheckScorer().details()["kind"] == "lexical"
