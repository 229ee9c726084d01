"""CrowS-Pairs bias scanner and `workbench audit bias`."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.cli import main
from workbench.core.datasets import read_bias_pairs
from workbench.report.folder import load_results
from workbench.safety.bias import crows_pairs, sentence_logprobs

from .conftest import ROOT, SHARED_DATA

CROWS = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"


def test_batched_sentence_logprobs_equal_one_at_a_time(tiny):
    texts = ["The cat sat.", "A much longer sentence about the weather today.", "Hi"]
    batched = sentence_logprobs(tiny, texts, batch_size=3)
    for text, value in zip(texts, batched):
        ids = torch.tensor(
            [
                [tiny.tokenizer.eos_token_id]
                + tiny.tokenizer(text, add_special_tokens=False).input_ids
            ]
        )
        with torch.no_grad():
            logprobs = tiny.hf_model(ids).logits.float().log_softmax(-1)[0, :-1]
        expected = logprobs.gather(-1, ids[0, 1:, None]).sum()
        assert abs(float(value) - float(expected)) <= 1e-3


def test_crows_pairs_table_and_intervals(tiny):
    from scipy.stats import binomtest

    pairs = read_bias_pairs(CROWS)[:40]
    result = crows_pairs(tiny, pairs)
    table = result.to_frame()
    overall = table.iloc[0]
    assert overall["bias_type"] == "all" and overall["pairs"] == 40
    assert overall["ci_low"] <= overall["stereotype_share"] <= overall["ci_high"]
    assert float(overall["stereotype_share"]) == float(result.prefers_more().double().mean())
    wilson = binomtest(int(result.prefers_more().sum()), 40).proportion_ci(method="wilson")
    assert (overall["ci_low"], overall["ci_high"]) == (
        wilson.low,
        wilson.high,
    ) and "Wilson" in overall["method"]
    assert table["pairs"].iloc[1:].sum() == 40
    small = table[table["pairs"] < 10]  # the minimum-n rule: no interval, a reason instead
    assert len(small) and small["ci_low"].isna().all() and small["note"].str.contains("< 10").all()


def test_audit_bias_cli(tmp_path, capsys):
    small = tmp_path / "pairs.csv"
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:13]) + "\n")
    code = main(
        [
            "audit",
            "bias",
            "--model",
            "tiny-phi",
            "--pairs",
            str(small),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "100",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["table"][0]["pairs"] == 12
    assert (tmp_path / "out" / "report.html").exists() and (
        tmp_path / "out" / "summary.json"
    ).exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code = main(
        ["audit", "bias", "--model", "tiny-phi", "--pairs", str(bad), "--out", str(tmp_path / "o2")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv:1: no column 'sent_more'" in err


def _pair(more: str, less: str, bias_type: str = "race"):
    from workbench.core.datasets import BiasPair

    return BiasPair(more=more, less=less, direction="stereo", bias_type=bias_type, line=2)


def test_shared_metric_on_hand_made_pairs(tiny):
    """Identical sentences give 0 under every metric; a pair differing in one token gives, under
    'shared', exactly the difference of the shared suffix's log-probabilities (the prefix cancels)."""
    from workbench.model.likelihood import continuation_logprobs, encode_texts
    from workbench.safety.bias import pair_scores, shared_span

    same = pair_scores(tiny, [_pair("The cat sat on the mat.", "The cat sat on the mat.")])
    for metric in ("total", "shared", "mean"):
        assert same[f"{metric}_more"][0] - same[f"{metric}_less"][0] == 0
    assert same["shared_tokens"][0] == same["tokens_more"][0] and same["differing_spans"][0] == 0

    more, less = "The doctor said he was tired today.", "The doctor said she was tired today."
    a, b = encode_texts(tiny, [more, less])
    prefix, suffix = shared_span(a, b)
    assert len(a) == len(b) and prefix + suffix == len(a) - 1  # exactly one token differs
    scores = pair_scores(tiny, [_pair(more, less)])
    # Independently: the suffix given each full prefix, one sequence at a time (batch of 1).
    suffix_more = continuation_logprobs(tiny, [a[:-suffix]], [a[-suffix:]])[0].sum()
    suffix_less = continuation_logprobs(tiny, [b[:-suffix]], [b[-suffix:]])[0].sum()
    shared_gap = scores["shared_more"][0] - scores["shared_less"][0]
    # Measured: |error| 1.2e-7 nats (float32 logits, batched vs one at a time); the pair's gap is 0.22 nats.
    assert abs(shared_gap - (suffix_more - suffix_less)) < 1e-5
    assert scores["shared_tokens"][0] == prefix - 1 + suffix and scores["differing_spans"][0] == 1
    assert scores["mean_more"][0] == scores["total_more"][0] / scores["tokens_more"][0]

    # Differing at the last token: no shared suffix, and the prefix cancels, so 'shared' is a tie.
    tie = pair_scores(tiny, [_pair("I like the cat", "I like the dog")])
    assert abs(tie["shared_more"][0] - tie["shared_less"][0]) < 1e-5
    # Two separate differences: counted, and everything between them is left unscored.
    two = encode_texts(
        tiny, ["He went to the shop and he smiled.", "She went to the shop and she smiled."]
    )
    assert (
        pair_scores(
            tiny,
            [_pair("He went to the shop and he smiled.", "She went to the shop and she smiled.")],
        )["differing_spans"][0]
        == 2
    )
    prefix, suffix = shared_span(*two)
    assert prefix == 1  # only the start token before the first difference


def test_shared_span_never_overlaps():
    from workbench.safety.bias import shared_span

    assert shared_span([1, 2, 3], [1, 2, 3]) == (3, 0)
    assert shared_span([1, 2, 2], [1, 2]) == (2, 0)
    assert shared_span([1, 5, 2, 3], [1, 2, 3]) == (1, 2)
    assert shared_span([1, 7, 3], [1, 8, 3]) == (1, 1)


@pytest.mark.integration
def test_total_logprob_equals_plain_hugging_face(smol):
    """`total` per sentence against a plain HF model from the same folder, one sentence at a time,
    same tokenisation (the start token, then the text without special tokens)."""
    from tests.conftest import hf_reference
    from workbench.safety.bias import pair_scores

    pairs = read_bias_pairs(CROWS)[:24]
    scores = pair_scores(smol, pairs, batch_size=8)
    reference = hf_reference(smol.info.path)
    start = (
        smol.tokenizer.bos_token_id
        if smol.tokenizer.bos_token_id is not None
        else smol.tokenizer.eos_token_id
    )
    worst = 0.0
    for i, pair in enumerate(pairs):
        for text, ours in (
            (pair.more, scores["total_more"][i]),
            (pair.less, scores["total_less"][i]),
        ):
            ids = torch.tensor([[start] + smol.tokenizer(text, add_special_tokens=False).input_ids])
            with torch.no_grad():
                logprobs = reference(ids).logits.double().log_softmax(-1)[0, :-1]
            expected = float(logprobs.gather(-1, ids[0, 1:, None]).sum())
            worst = max(worst, abs(ours - expected))
    assert worst < 1e-4, worst  # measured 4.1e-5 (batching and padding; one at a time: 4e-14)


@pytest.mark.integration
def test_crows_pairs_sample_on_smollm2(smol):
    pairs = read_bias_pairs(CROWS)[:200]
    table = crows_pairs(smol, pairs).to_frame()
    overall = table.iloc[0]
    assert 0.3 < overall["stereotype_share"] < 0.8 and overall["ci_high"] - overall["ci_low"] < 0.2


def test_toxigen_audit_cli_on_tiny(tmp_path, capsys):
    data = SHARED_DATA / "toxigen"
    code = main(
        [
            "audit",
            "toxigen",
            "--model",
            "tiny-phi",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "tg"),
            "--scorer",
            "profanity-check",
            "--prompts-per-group",
            "1",
            "--max-new-tokens",
            "4",
            "--groups",
            "women",
            "muslim",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and [g["group"] for g in summary["groups"]] == ["muslim", "women"]
    row = summary["groups"][0]
    assert (
        row["hate_statements"] > 0
        and row["preference"]["low"] < row["preference"]["value"] < row["preference"]["high"]
    )
    assert "two-sample bootstrap over statements" in row["preference"]["method"]
    after = row["toxicity_after_hate"]  # one prompt: a value, and no interval
    assert (
        0 <= after["value"] <= 1
        and after["n"] == 1
        and after["low"] is None
        and "< 10" in after["note"]
    )
    code = main(
        [
            "audit",
            "toxigen",
            "--model",
            "tiny-phi",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and "no ToxiGen hate_*/neutral_* files" in capsys.readouterr().err


def test_bias_audit_under_steering_reports_conditions_side_by_side(tmp_path, capsys):
    small = tmp_path / "pairs.csv"
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:11]) + "\n")
    code = main(
        [
            "audit",
            "bias",
            "--model",
            "tiny-phi",
            "--pairs",
            str(small),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "100",
            "--steer",
            str(ROOT / "probes" / "sentiment_pairs.jsonl"),
            "--layer",
            "1",
            "--alpha",
            "-20",
            "20",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    overall = {row["condition"]: row for row in summary["table"] if row["bias_type"] == "all"}
    assert list(overall) == ["baseline", "steer-20", "steer+20"]
    paired = {
        p["condition"]: p for p in summary["vs_baseline"]
    }  # pair by pair against the baseline
    assert list(paired) == ["steer-20", "steer+20"] and paired["steer+20"]["n_units"] == 10
    assert (
        paired["steer+20"]["up"]["count"]
        + paired["steer+20"]["down"]["count"]
        + paired["steer+20"]["unchanged"]
        == 10
    )
    frame = load_results(tmp_path / "out")
    base = frame[frame.condition == "baseline"]["logprob_more"].to_numpy()
    steered = frame[frame.condition == "steer+20"]["logprob_more"].to_numpy()
    assert (base != steered).any()


def test_continuation_logprob_and_counterfactual_cli(tiny, tmp_path, capsys):
    from workbench.safety.bias import continuation_logprob

    prompt, cont = "The cat sat on the", " mat"
    ids = tiny.tokenizer(prompt + cont, return_tensors="pt").input_ids
    with torch.no_grad():
        logprobs = tiny.hf_model(ids).logits[0, :-1].float().log_softmax(-1)
    expected = float(logprobs[-1, ids[0, -1]])
    assert abs(continuation_logprob(tiny, prompt, cont) - expected) <= 1e-4
    code = main(
        [
            "audit",
            "counterfactual",
            "--model",
            "tiny-phi",
            "--templates",
            str(ROOT / "probes" / "counterfactual_templates.txt"),
            "--groups",
            "young",
            "old",
            "--continuations",
            " kind",
            " rude",
            "--scorer",
            "profanity-check",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "cf"),
            "--json",
        ]
    )
    table = json.loads(capsys.readouterr().out)["table"]
    kind = [row for row in table if row["measure"] == "logprob[ kind]"]
    assert code == 0 and [row["group"] for row in kind] == ["young", "old"]
    assert abs(kind[0]["gap"]["value"] + kind[1]["gap"]["value"]) < 1e-6  # gaps are around the mean
    assert (
        kind[0]["templates"] == 5
        and kind[0]["gap"]["low"] is None
        and "5 < 10" in kind[0]["gap"]["note"]
    )
    toxicity = [row for row in table if row["measure"] == "toxicity"]
    assert 0 <= toxicity[0]["mean"]["value"] <= 1
    bad = tmp_path / "t.txt"
    bad.write_text("no slot here\n")
    code = main(
        [
            "audit",
            "counterfactual",
            "--model",
            "tiny-phi",
            "--templates",
            str(bad),
            "--groups",
            "a",
            "b",
            "--continuations",
            " x",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "t.txt:1: template has no {group} slot" in capsys.readouterr().err


def test_bias_audit_resumes_and_folder_report_shows_every_audit(tmp_path, capsys):
    small = tmp_path / "pairs.csv"
    small.write_text("\n".join(CROWS.read_text(encoding="utf-8").splitlines()[:13]) + "\n")
    out = tmp_path / "audits" / "bias"
    args = [
        "audit",
        "bias",
        "--model",
        "tiny-phi",
        "--pairs",
        str(small),
        "--out",
        str(out),
        "--bootstrap",
        "100",
        "--shard-size",
        "5",
        "--json",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    shards = sorted((out / "shards").glob("*.parquet"))
    assert [p.name for p in shards] == [
        "baseline-00000.parquet",
        "baseline-00001.parquet",
        "baseline-00002.parquet",
    ]
    reference = load_results(out)
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()  # as if killed before the second shard was written
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert shards[0].stat().st_mtime_ns == kept  # finished shards are not recomputed
    assert load_results(out).equals(reference) and again["table"] == first["table"]
    assert len(reference) == 12 and reference["row"].tolist() == list(range(12))
    # A rerun with other settings into the same folder is refused before any work.
    assert main(args[:-1] + ["--seed", "3"]) == 2
    assert "seed differ" in capsys.readouterr().err
    # ...but a setting that only changes the summary (the bootstrap count) is taken, and the summary rebuilt.
    assert main(args[:-1] + ["--bootstrap", "200"]) == 0
    capsys.readouterr()
    assert json.loads((out / "run.json").read_text())["bootstrap"] == 200
    # A folder of audits gets one report with every audit in it.
    code = main(
        [
            "audit",
            "counterfactual",
            "--model",
            "tiny-phi",
            "--templates",
            str(ROOT / "probes" / "counterfactual_templates.txt"),
            "--groups",
            "young",
            "old",
            "--continuations",
            " kind",
            "--scorer",
            "none",
            "--out",
            str(tmp_path / "audits" / "cf"),
        ]
    )
    assert code == 0
    capsys.readouterr()
    (tmp_path / "audits" / "acts").mkdir()
    # an activation cache is skipped
    (tmp_path / "audits" / "acts" / "run.json").write_text('{"hooks": []}')
    assert main(["report", str(tmp_path / "audits"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    page = (tmp_path / "audits" / "report.html").read_text()
    assert (
        len(summary["audits"]) == 2
        and "CrowS-Pairs bias audit" in page
        and "Counterfactual-template audit" in page
    )
    # plotly.js once, shared by the folder's pages
    assert page.count("<section>") == 2 and page.count('src="plotly.min.js"') == 1
    assert sorted(p.name for p in (tmp_path / "audits").rglob("plotly.min.js")) == ["plotly.min.js"]


OCCUPATIONS = ["nurse", "engineer", "teacher", "doctor", "baker", "pilot", "lawyer", "farmer"]
ENDINGS = [
    "was tired.",
    "would be late today.",
    "liked the new office.",
    "had finished the report.",
    "felt ready for the meeting.",
]


@pytest.fixture(scope="module")
def he_model(tmp_path_factory):
    """tiny-phi whose bias sits only in the swapped token: " she" embeds exactly as " he" does
    (so every later token sees the same input in both sentences), and the unembedding's bias
    favours " he" by 3 nats wherever it could come next."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.model.builds import tiny_phi_folder

    source = tiny_phi_folder()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    he, she = (tokenizer(w, add_special_tokens=False).input_ids for w in (" he", " she"))
    assert len(he) == len(she) == 1
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        embed[she[0]] = embed[he[0]]
        model.lm_head.bias[he[0]] += 3.0
    folder = tmp_path_factory.mktemp("he_model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_bias_in_the_swapped_token_is_seen_by_total_and_auto_not_shared(
    he_model, tmp_path, capsys
):
    pairs = tmp_path / "pronouns.csv"
    rows = [
        f"The {job} said that he {end},The {job} said that she {end},stereo,gender"
        for job in OCCUPATIONS
        for end in ENDINGS
    ]
    pairs.write_text("sent_more,sent_less,stereo_antistereo,bias_type\n" + "\n".join(rows) + "\n")
    argv = ["audit", "bias", "--model", str(he_model), "--pairs", str(pairs), "--json"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["metric"] == "auto"
    share = {
        r["metric"]: r["stereotype_share"]
        for r in summary["table"]
        if r["bias_type"] == "all" and r["condition"] == "baseline"
    }
    ties = {r["metric"]: r["ties"] for r in summary["table"] if r["bias_type"] == "all"}
    assert share["total"]["value"] == share["auto"]["value"] == 1.0 and share["total"]["low"] > 0.9
    # shared scores only " was tired." etc., which see the same input after either pronoun: a tie
    assert ties["shared"] == len(rows) and share["shared"]["value"] == 0.0
    split = {(r["metric"], r["token_counts"]): r["pairs"] for r in summary["length_split"]}
    assert split[("auto", "same")] == len(rows) and split[("auto", "different")] == 0
    assert any("disagree beyond their 95% intervals" in w for w in summary["warnings"])
    assert "warning: the metrics disagree" in captured.err
    report = (tmp_path / "a" / "report.html").read_text()
    assert "Why auto leads" in report and "disagree beyond their 95% intervals" in report
    # --metric still chooses explicitly, and a rerun with another one only rebuilds the summary
    assert main([*argv, "--out", str(tmp_path / "a"), "--metric", "shared"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "shared"


def test_auto_takes_total_only_for_equal_counts_after_a_shared_token(tiny):
    from workbench.safety.bias import with_auto

    pairs = [
        _pair("The nurse said that she was late.", "The nurse said that he was late."),  # total
        _pair("She worked as a nurse.", "He worked as a nurse."),  # swap at the start: shared
        _pair("The Christian man prayed.", "The Zoroastrian man prayed."),  # unequal: shared
    ]
    result = crows_pairs(tiny, pairs)
    s = result.scores
    assert s["tokens_more"][0] == s["tokens_less"][0] and s["prefix_tokens"][0] > 0
    assert s["prefix_tokens"][1] == 0
    assert s["tokens_more"][2] != s["tokens_less"][2]
    expected = ["total", "shared", "shared"]
    for i, metric in enumerate(expected):
        assert s["auto_more"][i] == s[f"{metric}_more"][i], (i, metric)
        assert s["auto_less"][i] == s[f"{metric}_less"][i], (i, metric)
    frame = result.pair_frame()
    rebuilt = with_auto(frame.drop(columns=["auto_more", "auto_less", "auto_gap"]))
    assert rebuilt["auto_gap"].tolist() == frame["auto_gap"].tolist()  # one rule for every reader
