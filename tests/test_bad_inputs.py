"""Every verb, fed bad input, exits 2 with one line naming the problem, writes nothing, shows no traceback.

The table has one row per (verb, bad input): the arguments and words the one-line error
must contain. Files that the rows need (binary, latin-1, deeply nested, ragged, with a lone
surrogate, damaged probes and run.json) are built once in a temporary folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from workbench.cli import main

from .conftest import ROOT, SHARED_DATA

GOOD_PAIRS = str(ROOT / "probes" / "polite_vs_rude_pairs.jsonl")
GOOD_LABELED = str(ROOT / "probes" / "gender.jsonl")
GOOD_TEMPLATES = str(ROOT / "probes" / "counterfactual_templates.txt")
GOOD_PROMPTS = str(ROOT / "workbench" / "data" / "audit_prompts.txt")
TOXIGEN = str(SHARED_DATA / "toxigen")


def _bad_files(base: Path) -> dict[str, str]:
    """name -> path of every damaged or hostile input file the table uses."""
    files = {
        "binary.txt": b"\xff\xfe\x00\x01binary",
        "latin1.jsonl": '{"text": "caf\xe9"}\n'.encode("latin-1"),
        "list.jsonl": b"[1, 2, 3]\n",
        "deep.jsonl": b'{"text": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
        "surrogate.jsonl": b'{"text": "bad \\ud800 text"}\n',
        "empty.txt": b"",
        "blank.txt": b"\n  \n\n",
        "text_number.jsonl": b'{"text": 5}\n',
        "no_field.jsonl": b'{"prompt": "hi"}\n',
        "bad.json.jsonl": b'{"text": "unterminated}\n',
        "unterminated.csv": b'text,label\n"hello,1\nworld,0\n',
        "ragged.csv": b"text,label\nhello,1,extra\n",
        "bigfield.csv": b"text\n" + b"a" * (5 * 2**20) + b"\n",
        "wrong.md": b"# not a prompt file\n",
        "pairs_missing.jsonl": b'{"positive": "nice"}\n',
        "pairs_list.jsonl": b'["a", "b"]\n',
        "pairs_empty_neg.jsonl": b'{"positive": "nice", "negative": "  "}\n',
        "pairs_deep.jsonl": b'{"positive": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
        "pairs_surrogate.jsonl": b'{"positive": "\\udc00", "negative": "x"}\n',
        "labeled_label2.jsonl": b'{"text": "a", "label": 2}\n',
        "labeled_float.jsonl": b'{"text": "a", "label": 0.5}\n',
        "labeled_notext.jsonl": b'{"label": 1}\n',
        "labeled_group.jsonl": b'{"text": "a", "label": 1, "group": {"x": 1}}\n',
        "labeled_one_class.jsonl": b'{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n',
        "bias_nocol.csv": b"a,b\n1,2\n",
        "bias_ragged.csv": b"sent_more,sent_less,stereo_antistereo,bias_type\nx,y,stereo\n",
        "bias_empty.csv": b"sent_more,sent_less,stereo_antistereo,bias_type\n , y,stereo,age\n",
        "bias_quote.csv": b'sent_more,sent_less,stereo_antistereo,bias_type\n"x,y,stereo,age\n',
        "templates_noslot.txt": b"no slot here\n",
        "a_file": b"I am a file, not a folder\n",
        "bias_cluster_empty.csv": b"sent_more,sent_less,stereo_antistereo,bias_type,occupation\n"
        b"He is a nurse.,She is a nurse.,stereo,gender,\n",
        "bias_same.csv": b"sent_more,sent_less,stereo_antistereo,bias_type\n"
        b"He is here today.,He is here today.,stereo,gender\n",
        "long_heldout.txt": b"a short text\nanother\na third\na fourth\n" + b"word " * 3000 + b"\n",
    }
    paths = {}
    for name, data in files.items():
        (base / name).write_bytes(data)
        paths[name] = str(base / name)
    (base / "folder.txt").mkdir()
    paths["folder.txt"] = str(base / "folder.txt")
    (base / "not_a_model").mkdir()
    (base / "not_a_model" / "weights.bin").write_bytes(b"x")
    paths["not_a_model"] = str(base / "not_a_model")
    paths.update(_bad_probes(base))
    no_type = base / "no_model_type"
    no_type.mkdir()
    (no_type / "config.json").write_text('{"hidden_size": 8}')
    paths["no_model_type"] = str(no_type)
    damaged = base / "damaged_audit"
    damaged.mkdir()
    (damaged / "run.json").write_text('{"format": "workbench-audit/1", "conditions": ')
    paths["damaged_audit"] = str(damaged)
    return paths


def _bad_probes(base: Path) -> dict[str, str]:
    """Saved probe folders that must each be refused: bad tensors, bad JSON, another model."""
    from safetensors.torch import save_file

    width = 128  # tiny-phi's d_model
    good = {
        "weight": torch.randn(width),
        "bias": torch.tensor(0.1),
        "mean": torch.zeros(width),
        "std": torch.ones(width),
        "direction": torch.ones(width) / width**0.5,
    }
    meta = {"model": "tiny-phi", "positions": "mean_after_first"}
    cases = {
        "probe_nan": (
            {**good, "weight": torch.full((width,), float("nan"))},
            {"hook": "blocks.1.hook_resid_post"},
        ),
        "probe_inf": (
            {**good, "bias": torch.tensor(float("inf"))},
            {"hook": "blocks.1.hook_resid_post"},
        ),
        "probe_nohook": (good, {}),
        "probe_hook_int": (good, {"hook": 5}),
        "probe_extra": ({**good, "extra": torch.zeros(3)}, {"hook": "blocks.1.hook_resid_post"}),
        "probe_missing": (
            {k: v for k, v in good.items() if k != "std"},
            {"hook": "blocks.1.hook_resid_post"},
        ),
        "probe_int": (
            {**good, "weight": torch.zeros(width, dtype=torch.int64)},
            {"hook": "blocks.1.hook_resid_post"},
        ),
        "probe_shape": ({**good, "mean": torch.zeros(7)}, {"hook": "blocks.1.hook_resid_post"}),
        "probe_std0": ({**good, "std": torch.zeros(width)}, {"hook": "blocks.1.hook_resid_post"}),
        "probe_width": (
            {k: (v[:64] if v.dim() else v) for k, v in good.items()},
            {"hook": "blocks.1.hook_resid_post"},
        ),
        "probe_foreign": (good, {"hook": "blocks.1.hook_resid_post"}),
        "probe_nomodel": (good, {"hook": "blocks.1.hook_resid_post"}),
        "probe_badhook": (good, {"hook": "blocks.99.hook_resid_post"}),
        "probe_glob": (good, {"hook": "blocks.*.hook_resid_post"}),
        "probe_all": (good, {"hook": "blocks.1.hook_resid_post"}),
        "probe_revision": (good, {"hook": "blocks.1.hook_resid_post"}),
        "probe_ok_a": (good, {"hook": "blocks.1.hook_resid_post"}),
        "probe_ok_b": (good, {"hook": "blocks.1.hook_resid_post"}),
    }
    paths = {}
    for name, (tensors, info) in cases.items():
        folder = base / name
        folder.mkdir()
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(folder / "probe.safetensors")
        )
        probe_meta = {
            "probe_foreign": {**meta, "model": "smollm2-135m"},
            "probe_nomodel": {"positions": "mean"},
            "probe_all": {**meta, "positions": "all"},
            "probe_revision": {**meta, "revision": "0123abc"},
        }
        (folder / "probe.json").write_text(
            json.dumps({**info, "metrics": {}, "meta": probe_meta.get(name, meta)})
        )
        paths[name] = str(folder)
    deep = base / "probe_deepjson"
    deep.mkdir()
    save_file(good, str(deep / "probe.safetensors"))
    (deep / "probe.json").write_text("[" * 100000 + "]" * 100000)
    paths["probe_deepjson"] = str(deep)
    return paths


def _rows() -> list[tuple[str, list[str], str]]:
    """(id, argv with {placeholders}, expected words in the error)."""
    rows = []

    def add(argv: str | list[str], expect: str, tag: str = ""):
        args = argv.split() if isinstance(argv, str) else argv
        rows.append((f"{len(rows):03d} {tag or ' '.join(args[:2])}", args, expect))

    generate = "generate --model tiny-phi --prompt hi"
    cache = "cache --model tiny-phi --input {good_txt} --out {out}"
    attention = "attention --model tiny-phi --prompt hello"
    patch = [
        "patch",
        "--model",
        "tiny-phi",
        "--clean",
        "a b c",
        "--corrupt",
        "a b d",
        "--answers",
        " x",
        " y",
    ]
    steer = f"steer --model tiny-phi --pairs {GOOD_PAIRS} --layer 1 --prompt hi"
    train = f"probe train --model tiny-phi --data {GOOD_LABELED} --hooks blocks.1.hook_resid_post --out {{out}}"
    apply = "probe apply --model tiny-phi --text hello --probe"
    tox = f"audit toxicity --model tiny-phi --prompts {GOOD_PROMPTS} --out {{out}} --scorers profanity-check"
    bias = "audit bias --model tiny-phi --pairs {good_csv} --out {out}"
    toxigen = (
        f"audit toxigen --model tiny-phi --data {TOXIGEN} --out {{out}} --scorer profanity-check"
    )
    cf = (
        f"audit counterfactual --model tiny-phi --templates {GOOD_TEMPLATES} --continuations kind "
        "--groups young old --out {out}"
    )

    # Numbers out of range, not finite or not numbers.
    for verb in (
        generate,
        f"{steer}",
        "audit toxigen --model tiny-phi --data {toxigen} --out {out}",
        cf,
        tox,
    ):
        for value, words in (
            ("0", "--max-new-tokens must be between 1 and 4096"),
            ("-1", "between 1 and 4096"),
            ("100000000", "between 1 and 4096"),
            ("x", "invalid int value"),
        ):
            add(f"{verb} --max-new-tokens {value}", words)
    for verb in (cache, tox, bias):
        for value, words in (
            ("0", "--batch-size must be between 1"),
            ("-3", "--batch-size must be between 1"),
            ("x", "invalid int value"),
            ("1.5", "invalid int value"),
        ):
            add(f"{verb} --batch-size {value}", words)
    for verb in (cache, tox, bias, cf):
        for value in ("0", "-1"):
            add(f"{verb} --shard-size {value}", "--shard-size must be between 1")
    for verb in (tox, bias, toxigen, cf):
        for value in ("0", "-5", "50"):
            add(f"{verb} --bootstrap {value}", "--bootstrap must be between 100")
    for value, words in (
        ("0", "--samples must be between 1"),
        ("-1", "--samples must be between 1"),
        ("5000", "--samples must be between 1"),
    ):
        add(f"{tox} --samples {value}", words)
    for verb in (f"{generate} --sample", f"{tox} --samples 2"):
        for value, words in (
            ("0", "--temperature must be between"),
            ("-1", "--temperature must be between"),
            ("nan", "--temperature must be a finite number"),
            ("inf", "--temperature must be a finite number"),
            ("1e9", "between"),
        ):
            add(f"{verb} --temperature {value}", words)
    for verb in (generate, train, tox, bias, cf):
        for value, words in (
            ("-1", "--seed must be between 0"),
            ("123456789012345678901", "--seed must be between 0"),
            ("x", "invalid int value"),
        ):
            add(f"{verb} --seed {value}", words)
    for value, words in (
        ("nan", "--test-fraction must be a finite number"),
        ("-0.5", "strictly between 0 and 1"),
        ("1", "strictly between 0 and 1"),
        ("0", "strictly between 0 and 1"),
    ):
        add(f"{train} --test-fraction {value}", words)
    for value, words in (
        ("nan", "--val-fraction must be a finite number"),
        ("1.5", "strictly between 0 and 1"),
        ("0.8", "their sum must be below 1"),
    ):
        add(f"{train} --val-fraction {value}", words)
    for value, words in (
        ("nan", "--l2 must be a finite number"),
        ("-100", "--l2 must be between 0"),
        ("inf", "finite number"),
    ):
        add(f"{train} --l2 {value}", words)
    add(f"{train} --l2 0.1 0.1", "--l2 repeats a value")
    add(f"{train} --sparse-k 0", "--sparse-k must be between 1")
    steer_args = f"--steer {GOOD_PAIRS} --layer 1"
    for verb in (tox, bias, cf):
        for value, words in (
            ("nan", "--alpha must be a finite number"),
            ("inf", "finite number"),
            ("1e9", "--alpha must be between"),
        ):
            add(f"{verb} {steer_args} --alpha {value}", words)
        add(f"{verb} {steer_args} --alpha 4 4.0", "--alpha repeats a value")
        add(f"{verb} --alpha 4", "--alpha/--ablate need --steer PAIRS and --layer L")
        add(f"{verb} --steer {GOOD_PAIRS} --layer 99 --alpha 4", "layer 99 is out of range")
    for value, words in (
        ("nan", "--alpha must be a finite number"),
        ("4 4", "--alpha repeats a value"),
    ):
        add(f"{steer} --alpha {value}", words)
    add(steer.replace("--layer 1", "--layer 99"), "layer 99 is out of range")
    add(steer.replace("--layer 1", "--layer -1"), "--layer must be between 0")
    add(f"{attention} --layer 99", "layer 99 is out of range")
    add(f"{attention} --head 99", "head 99 is out of range")
    add(f"{attention} --head -1", "--head must be between 0")
    add(f"{attention} --top 0", "--top must be between 1")
    for value in ("-2", "0"):
        add(f"{cache} --truncate --max-length {value}", "--max-length must be between 1")
    add(f"{toxigen} --prompts-per-group 0", "--prompts-per-group must be between 1")
    for value in ("0", "70000", "x"):
        add(f"dashboard --port {value}", "port")

    # Devices, dtypes and models.
    for verb in (generate, "info", "hooks", cache, tox):
        for value, words in (
            ("tpu", "is not a device"),
            ("gpu", "is not a device"),
            ("cuda", "CUDA is not available here"),
            ("cuda:7", "CUDA is not available here"),
        ):
            add(f"{verb} --device {value}", words)
        for value in ("float64", "int8"):
            add(f"{verb} --dtype {value}", "is not supported")
    for verb in ("generate --prompt hi", "info", "hooks"):
        add(f"{verb} --model {{not_a_model}}", "not a model folder (no config.json inside)")
        add(f"{verb} --model {{a_file}}", "is a file, not a model folder")
        add([*verb.split(), "--model", "no such model!"], "neither a registry name")

    # Strings and lists.
    add(["generate", "--model", "tiny-phi", "--prompt", "   "], "--prompt is empty")
    add(
        ["generate", "--model", "tiny-phi", "--prompt", "word " * 5000, "--raw"],
        "exceeds tiny-phi's context",
    )
    add(["attention", "--model", "tiny-phi", "--prompt", ""], "--prompt is empty")
    add(
        ["attention", "--model", "tiny-phi", "--prompt", "word " * 30000],
        "exceeds tiny-phi's context",
    )
    add(["lens", "--model", "tiny-phi", "--prompt", "word " * 30000], "exceeds tiny-phi's context")
    add([*patch[:4], "word " * 30000, *patch[5:]], "exceeds tiny-phi's context")
    add(
        ["lens", "--model", "tiny-phi", "--prompt", "hi", "--answers", "", " x"],
        "--answers is empty",
    )
    add(
        ["lens", "--model", "tiny-phi", "--prompt", "hi", "--answers", " x", " x"],
        "--answers repeats an entry",
    )
    add(
        [
            "lens",
            "--model",
            "tiny-phi",
            "--prompt",
            "hi",
            "--answers",
            " internationalization",
            " x",
        ],
        "not one",
    )
    add([*patch[:4], "", *patch[5:]], "--clean is empty")
    add([*patch, "--kinds", "attn_heads"], "unknown patch kind")
    add([*patch, "--method", "fast"], "invalid choice")
    add([*patch[:-2], " verylongwordthatisnotonetoken", " y"], "not one")
    add(f"{steer} --positive-words great", "give both --positive-words and --negative-words")
    cf_no_groups = [
        "audit",
        "counterfactual",
        "--model",
        "tiny-phi",
        "--templates",
        GOOD_TEMPLATES,
        "--continuations",
        "kind",
        "--out",
        "{out}",
    ]
    add([*cf_no_groups, "--groups", "young", "young"], "--groups repeats an entry")
    add([*cf_no_groups, "--groups", "only"], "give at least two --groups")
    add([*f"{cf}".split(), "--continuations", " "], "--continuations is empty")
    add(f"{tox} --scorers ,", "one name is empty")
    add(f"{tox} --scorers profanity-check,profanity-check", "a scorer is repeated")
    add(f"{tox} --scorers perspective", "unknown scorer")
    add(f"{tox} --scorers probe", "needs at least one --probe")
    add(f"{toxigen} --scorer probe", "takes one text scorer")
    add(f"{toxigen} --groups martians", "unknown ToxiGen group")
    add(f"{train} --split halves", "invalid choice")
    add(f"{cache} --positions first", "invalid choice")
    add(f"{cache} --hooks blocks.0.hook_resid_pst", "hook")
    add("hooks --model tiny-phi --pattern nothing.matches", "nothing.matches")
    add(
        "probe apply --model tiny-phi --probe {probe_nan}", "give exactly one of --text and --input"
    )
    add(
        f"probe apply --model tiny-phi --probe {{probe_nan}} --tokens --input {GOOD_PROMPTS}",
        "--tokens needs --text",
    )

    # Files through the hardened readers: text inputs.
    for key, words in (
        ("binary.txt", "not valid UTF-8"),
        ("latin1.jsonl", "not valid UTF-8"),
        ("list.jsonl", "expected a JSON object"),
        ("deep.jsonl", "JSON nested too deeply"),
        ("surrogate.jsonl", "unpaired surrogate"),
        ("empty.txt", "file has no texts"),
        ("blank.txt", "file has no texts"),
        ("text_number.jsonl", "is int, not a string"),
        ("no_field.jsonl", "field 'text' is missing"),
        ("bad.json.jsonl", "invalid JSON"),
        ("unterminated.csv", "bad CSV"),
        ("ragged.csv", "row has 3 fields"),
        ("bigfield.csv", "bad CSV"),
        ("wrong.md", "unsupported file type"),
        ("folder.txt", "is a folder"),
        ("missing.txt", "file not found"),
    ):
        for verb in (
            "cache --model tiny-phi --out {out} --input",
            f"{tox.replace('--prompts ' + GOOD_PROMPTS, '')} --prompts",
        ):
            add(f"{verb} {{{key}}}", words, tag=f"{verb.split()[0]} {key}")
    # Contrast pairs (steer and every audit's --steer).
    for key, words in (
        ("pairs_missing.jsonl", "field 'negative' is missing"),
        ("pairs_list.jsonl", "expected a JSON object"),
        ("pairs_empty_neg.jsonl", "is empty"),
        ("pairs_deep.jsonl", "JSON nested too deeply"),
        ("pairs_surrogate.jsonl", "unpaired surrogate"),
        ("binary.txt", "not valid UTF-8"),
        ("empty.txt", "no contrast pairs"),
        ("folder.txt", "is a folder"),
        ("missing.txt", "file not found"),
    ):
        add(
            f"steer --model tiny-phi --layer 1 --prompt hi --pairs {{{key}}}",
            words,
            tag=f"steer {key}",
        )
        add(f"{bias} --layer 1 --alpha 2 --steer {{{key}}}", words, tag=f"audit-bias steer {key}")
    # Labeled sets.
    for key, words in (
        ("labeled_label2.jsonl", "field 'label' must be 0 or 1"),
        ("labeled_float.jsonl", "field 'label' must be 0 or 1"),
        ("labeled_notext.jsonl", "field 'text' is missing"),
        ("labeled_group.jsonl", "field 'group' must be a string"),
        ("labeled_one_class.jsonl", "both 0 and 1"),
        ("list.jsonl", "expected a JSON object"),
        ("deep.jsonl", "JSON nested too deeply"),
        ("binary.txt", "not valid UTF-8"),
        ("surrogate.jsonl", "unpaired surrogate"),
        ("missing.txt", "file not found"),
    ):
        add(
            f"probe train --model tiny-phi --out {{out}} --data {{{key}}}",
            words,
            tag=f"probe-train {key}",
        )
    # Bias CSVs.
    for key, words in (
        ("bias_nocol.csv", "no column 'sent_more'"),
        ("bias_ragged.csv", "row has 3 fields"),
        ("bias_empty.csv", "is empty"),
        ("bias_quote.csv", "bad CSV"),
        ("binary.txt", "not valid UTF-8"),
        ("bigfield.csv", "bad CSV"),
        ("folder.txt", "is a folder"),
        ("missing.txt", "file not found"),
    ):
        add(
            f"audit bias --model tiny-phi --out {{out}} --pairs {{{key}}}",
            words,
            tag=f"audit-bias {key}",
        )
    add(
        "audit counterfactual --model tiny-phi --groups a b --continuations x --out {out} "
        "--templates {templates_noslot.txt}",
        "template has no {group} slot",
    )
    add(
        "audit toxigen --model tiny-phi --out {out} --data {folder.txt}",
        "no ToxiGen hate_*/neutral_* files",
    )
    # Saved probes.
    for key, words in (
        ("probe_nan", "holds NaN or infinite values"),
        ("probe_inf", "holds NaN or infinite values"),
        ("probe_nohook", "field 'hook' is missing"),
        ("probe_hook_int", "field 'hook' is missing"),
        ("probe_extra", "tensors must be exactly"),
        ("probe_missing", "tensors must be exactly"),
        ("probe_int", "not floating point"),
        ("probe_shape", "has shape (7,)"),
        ("probe_std0", "'std' must be positive"),
        ("probe_width", "64-wide vectors"),
        ("probe_foreign", "trained on 'smollm2-135m' and cannot score 'tiny-phi'"),
        ("probe_nomodel", "records no model"),
        ("probe_badhook", "blocks.99.hook_resid_post"),
        ("probe_deepjson", "unreadable probe"),
        ("folder.txt", "not a saved probe"),
        ("probe_glob", "is not one of tiny-phi's hook names"),
        ("probe_all", "records positions 'all', which cannot have trained it"),
        ("probe_revision", "at revision '0123abc'"),
    ):
        add(f"{apply} {{{key}}}", words, tag=f"probe-apply {key}")
        add(
            f"{tox.replace('profanity-check', 'profanity-check,probe')} --probe {{{key}}}",
            words,
            tag=f"audit-probe {key}",
        )
    # Output paths and report folders.
    for verb in (cache, tox, bias, train, cf):
        add(
            verb.replace("{out}", "{a_file}"),
            "exists and is not a folder",
            tag=f"{verb.split()[0]} out-file",
        )
        add(
            verb.replace("{out}", "{a_file}/sub"),
            "is not a folder, so",
            tag=f"{verb.split()[0]} out-under-file",
        )
    add(f"{attention} --html {{folder.txt}}", "--html: is a folder")
    add(f"{attention} --html {{a_file}}/x.html", "cannot write in")
    add("report {missing.txt}", "neither an audit folder")
    add("report {folder.txt}", "neither an audit folder")
    add("report {damaged_audit}", "damaged run.json")
    add(f"{tox.replace('{out}', '{damaged_audit}')}", "damaged run.json")

    # Issue 25: what the hostile round still broke.
    for name in ("../../etc", "/etc", "", "./folder"):
        add(["fetch", name], "give a registry name", tag=f"fetch {name!r}")
    add(["fetch", "--model", "/etc"], "a local folder needs no fetching", tag="fetch --model /etc")
    add(cache.split() + ["--hooks", ""], "--hooks '': a name is empty")
    add(cache.split() + ["--hooks", "resid_post,resid_post"], "a name is repeated")
    add("info --model {no_model_type}", "config.json names no model_type")
    add("generate --model {no_model_type} --prompt hi", "config.json names no model_type")
    add(f"{generate} --js", "unrecognized arguments: --js")
    add(["hooks", "--model", "tiny-phi", "--pattern", ""], "--pattern is empty")
    add([*patch, "--kinds", ","], "--kinds ',': a name is empty")
    add([*patch, "--kinds", "attn_out,attn_out"], "--kinds 'attn_out,attn_out': a name is repeated")
    tox_steer = f"{tox} --steer {GOOD_PAIRS} --layer 1 --alpha 2"
    add(f"{tox_steer} --heldout {{good_txt}} {{good_txt}}", "--heldout names a file twice")
    add(f"{tox_steer} --heldout {{long_heldout.txt}}", "held-out text or QA prompt is")
    add(
        f"{bias} --localise --heldout {{long_heldout.txt}}",
        "held-out text or QA prompt is",
        tag="audit-bias localise long heldout",
    )
    add(
        "audit bias --model tiny-phi --out {out} --pairs {bias_same.csv} --localise",
        "the two sentences are the same tokens",
    )
    add(
        "audit bias --model tiny-phi --out {out} --pairs {bias_cluster_empty.csv} "
        "--cluster-column occupation --localise",
        "column 'occupation' (--cluster-column) is empty",
    )
    add(
        f"{tox.replace('profanity-check', 'profanity-check,probe')} --probe {{probe_ok_a}} "
        "--probe {probe_ok_b}",
        "both read blocks.1.hook_resid_post",
        tag="audit-probe two on one hook",
    )
    for verb in (cache, tox, bias, train):
        for value in ("", "file://", "  "):
            add(
                [*verb.replace("--out {out}", "").split(), "--out", value],
                "names no folder",
                tag=f"{verb.split()[0]} out {value!r}",
            )
    add(f"{attention} --html s3://bucket/x.html", "--html writes a local file")
    add(["report", ""], "the folder is empty")
    add("dashboard --results {a_file}", "--results: exists and is not a folder")
    add(["dashboard", "--host", "not a host"], "neither an IP address nor a host name")
    add(f"{cache} --ray local --threads-per-worker 100000", "--threads-per-worker must be between")
    add(f"{cache} --ray local --threads-per-worker 4000", "with --ray local every worker runs")
    search = f"intervene search --model tiny-phi --prompts {GOOD_PROMPTS} --out {{out}}"
    add(f"{search} --methods add steer", "invalid choice: 'steer'")
    add(f"{search} --coefficients 0.1 nan", "--coefficients must be a finite number")
    add(f"{search} --coefficients inf", "--coefficients must be a finite number")
    add(f"{search} --layers 99", "layer 99 is out of range")
    add(f"{search} --budget-qa -1", "--budget-qa must be between 0 and 100")
    add(f"{search} --budget-perplexity -0.5", "--budget-perplexity must be between 0")
    add(f"{search} --samples 0", "--samples must be between 1 and 1000")
    add(f"{search} --validation-share 1", "--validation-share")
    add(f"{search} --methods add conditional --probe {{probe_foreign}}", "was trained on")
    add(f"{search} --methods conditional", "the conditional method needs --probe")
    add(f"{search} --direction toxigen", "--direction toxigen needs --toxigen")
    add(f"{search} --scorers profanity-check,bogus", "unknown scorer 'bogus'")
    add(f"{search} --pairs {{empty.txt}}", "no contrast pairs", tag="search empty pairs")
    add(
        f"{search} --methods add conditional --probe {{probe_nan}}",
        "holds NaN or infinite values",
        tag="search bad gate probe",
    )
    add(f"{search} --direction probe", "--direction probe needs --direction-probe")
    add(
        f"{search} --direction sae --sae {{sae_ok}}",
        "--direction sae needs --sae SAE_DIR and --sae-latent",
    )
    add(
        f"{search} --direction sae --sae {{sae_ok}} --sae-latent 99",
        "--sae-latent 99 is not a latent",
    )
    add(f"{search} --direction sae --sae {{sae_badjson}} --sae-latent 1", "not valid JSON")
    add(f"{search} --direction probe --direction-probe {{probe_foreign}}", "was trained on")
    add(
        "intervene search --model tiny-phi --prompts {empty.txt} --out {out}",
        "empty.txt",
        tag="search empty file",
    )
    add(
        "intervene search --model tiny-phi --prompts {good_txt} {one_prompt} --out {out}",
        "a file needs at least 2",
        tag="search single-prompt file",
    )
    add(
        f"intervene search --model tiny-phi --prompts {GOOD_PROMPTS} {GOOD_PROMPTS} --out {{out}}",
        "names a file twice",
        tag="search same file twice",
    )
    sae_train = "sae train --cache {cache_all} --out {out}"
    add(f"{sae_train} --k 64 --width 64", "k (64) must be smaller than the width (64)")
    add(f"{sae_train} --width 0", "--width must be between 1 and")
    add(f"{sae_train} --k 0", "--k must be between 1 and")
    add(f"{sae_train} --tokens 0", "--tokens must be between 1 and")
    add(f"{sae_train} --batch-tokens 0", "--batch-tokens must be between 1 and")
    add(f"{sae_train} --checkpoint-every 0", "--checkpoint-every must be between 1 and")
    add(f"{sae_train} --lr -1", "--lr must be between")
    add(f"{sae_train} --lr nan", "--lr must be a finite number", tag="sae train lr nan")
    add(f"{sae_train} --hook blocks.3.hook_resid_post", "is not in the cache")
    add(
        f"{sae_train} --hook-out blocks.2.hook_resid_post",
        "is not in the cache",
        tag="sae hook-out",
    )
    add(f"{sae_train} --skip", "a skip connection is for transcoders")
    add("sae train --cache {cache_last} --out {out}", "training needs every position")
    add("sae train --cache {a_file} --out {out}", "no manifest.json", tag="sae train not a cache")
    add("sae train --cache {missing.txt} --out {out}", "missing.txt", tag="sae train missing cache")
    sae_eval = "sae eval --model tiny-phi --texts {good_txt} --out {out} --sae"
    add(f"{sae_eval} {{sae_foreign}}", "trained on 'smollm2-135m'")
    add(f"{sae_eval} {{sae_width}}", "has width 64")
    add(f"{sae_eval} {{sae_badhook}}", "which tiny-phi does not have")
    add(f"{sae_eval} {{sae_badjson}}", "not valid JSON")
    add(f"{sae_eval} {{sae_badweights}}", "not a readable safetensors file")
    add(f"{sae_eval} {{sae_missing}}", "tensor 'b_dec' is missing")
    add(f"{sae_eval} {{sae_shape}}", "has shape")
    add(f"{sae_eval} {{sae_nan}}", "not finite")
    add(f"{sae_eval} {{sae_arch}}", "is not supported")
    add(f"{sae_eval} {{sae_nok}}", "field 'k' is missing")
    add(f"{sae_eval} {{a_file}}", "no SAE here", tag="sae eval a file")
    add(f"{sae_eval} {{missing.txt}}", "no such SAE folder", tag="sae eval missing")
    add(f"{sae_eval} {{sae_ok}} --context 1", "--context must be between 2 and")
    add(f"{sae_eval} {{sae_ok}} --max-windows 0", "--max-windows must be between 1 and")
    add(
        ["sae", "eval", "--model", "tiny-phi", "--sae", "{sae_ok}", "--texts", "{empty.txt}"],
        "empty.txt",
        tag="sae eval empty texts",
    )
    features = "sae features --model tiny-phi --texts {good_txt} --sae {sae_ok}"
    add(f"{features} --latents 99999", "is not a latent of this SAE")
    add(f"{features} --top 0", "--top must be between 1 and")
    sae_tox = f"sae toxigen --model tiny-phi --toxigen {TOXIGEN} --sae {{sae_ok}}"
    add(f"{sae_tox} --ks 0", "--ks must be between 1 and")
    add(f"{sae_tox} --ks 99999", "more latents than this SAE has")
    add(f"{cache} --windows 1", "--windows must be between 2 and")
    add(f"{cache} --max-windows 5", "--max-windows needs --windows")
    add(f"{cache} --windows 8 --truncate", "--windows cuts the texts itself")
    for name, words in (
        ("iv_foreign", "was made for 'smollm2-135m'"),
        ("iv_width", "(d_model 64)"),
        ("iv_method", "unknown method 'steer'"),
        ("iv_nan", "not finite"),
        ("iv_layer", "layer 9 is out of range"),
        ("good_txt", "no intervention.json there"),
    ):
        add(f"{tox} --intervention {{{name}}}", words, tag=f"intervention {name}")
    for row_argv, words in _needs_rows(
        {
            "intervene search": search,
            "audit bias": bias,
            "audit toxicity": tox,
            "audit toxigen": toxigen,
            "audit counterfactual": cf,
            "generate": generate,
            "steer": steer,
            "cache": cache,
        },
        patch,
    ):
        add(row_argv, words, tag=f"needs {' '.join(row_argv[:2])} {row_argv[-1]}")
    return rows


# A value for each option of checks.NEEDS, and what else a row needs so that only that option's
# own requirement is missing (e.g. --steps needs --localise first, then --attribution eap-ig).
NEEDS_VALUES = {
    "top_k": ["3"],
    "attribution": ["atp"],
    "steps": ["3"],
    "skip_bad": [],
    "heldout": ["{good_txt}"],
    "qa": ["qa.jsonl"],
    "cluster_column": ["occupation"],
    "layer": ["1"],
    "positive_means": ["more-toxic"],
    "probe": ["{probe_ok_a}"],
    "temperature": ["0.5"],
    "seed": ["3"],
    "html": ["figures.html"],
    "verify": ["3"],
    "workers": ["2"],
    "threads_per_worker": ["1"],
    "threshold": ["0.3"],
    "coefficients": ["0.1"],
    "instruction": ["Be kind."],
    "common_seeds": [],
    "toxigen": ["{toxigen}"],
    "direction_probe": ["{probe_ok_a}"],
    "sae": ["{sae_ok}"],
    "sae_latent": ["3"],
    "scorer_probe": ["{probe_ok_a}"],
}
NEEDS_SETUP = {
    ("intervene search", "coefficients", "--methods add (or conditional)"): ["--methods", "ablate"],
    ("intervene search", "instruction", "--methods prompt"): ["--methods", "ablate"],
    ("intervene search", "temperature", "--samples K > 1 (one sample is greedy)"): [
        "--samples",
        "1",
    ],
    ("audit bias", "steps", "--attribution eap-ig"): ["--localise", "--attribution", "atp"],
    ("patch", "verify", "an attribution --method (exact needs no check)"): ["--method", "exact"],
}


def _needs_rows(bases: dict[str, str], patch: list[str]):
    """One row per entry of the NEEDS table: the option given without what it needs."""
    from workbench.core.checks import NEEDS

    for verb, option, _, needed in NEEDS:
        base = patch if verb == "patch" else bases[verb].split()
        flag = "--" + option.replace("_", "-")
        setup = NEEDS_SETUP.get((verb, option, needed), [])
        yield [*base, *setup, flag, *NEEDS_VALUES[option]], f"{flag} needs {needed}"


ROWS = _rows()


def test_the_table_is_large_and_covers_every_verb():
    assert len(ROWS) >= 150, len(ROWS)
    verbs = {" ".join(a for a in args[:2] if not a.startswith("-")) for _, args, _ in ROWS}
    for verb in (
        "generate",
        "cache",
        "attention",
        "lens",
        "patch",
        "steer",
        "probe train",
        "probe apply",
        "audit toxicity",
        "audit bias",
        "audit toxigen",
        "audit counterfactual",
        "report",
        "info",
        "hooks",
        "dashboard",
        "intervene search",
        "sae train",
        "sae eval",
        "sae features",
        "sae toxigen",
    ):
        assert any(v.startswith(verb) for v in verbs), verb


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    paths = _bad_files(base)
    paths["missing.txt"] = str(base / "missing.txt")
    good = base / "good.txt"
    good.write_text("Hello there\nAnother text\n")
    paths["good_txt"] = str(good)
    crows = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
    good_csv = base / "good.csv"
    good_csv.write_text("\n".join(crows.read_text(encoding="utf-8").splitlines()[:4]) + "\n")
    paths["good_csv"] = str(good_csv)
    paths["toxigen"] = TOXIGEN
    one = base / "one_prompt.txt"
    one.write_text("Only one prompt here\n")
    paths["one_prompt"] = str(one)
    paths.update(_bad_interventions(base))
    paths.update(_sae_inputs(base))
    return paths


def _sae_inputs(base: Path) -> dict[str, str]:
    """Caches of tiny-phi (every position, and last positions only) and SAE folders that the `sae`
    verbs must refuse: another model or width, a hook tiny-phi lacks, damaged or incomplete files."""
    from safetensors.torch import save_file

    import workbench as wb
    from workbench.interp.sae import SAE, SAEConfig

    model = wb.load("tiny-phi")
    texts = ["Hello there, how are you today?", "Another text that is a little longer than that."]
    for name, positions in (("cache_all", "all"), ("cache_last", "last")):
        wb.cache_activations(
            model,
            texts,
            hooks="blocks.1.hook_resid_post",
            positions=positions,
            out=base / name,
            progress=False,
        )
    hook = "blocks.1.hook_resid_post"
    paths = {"cache_all": str(base / "cache_all"), "cache_last": str(base / "cache_last")}
    for name, cfg in {
        "sae_ok": SAEConfig(d_in=128, d_sae=16, k=2, hook_name=hook, model_name="tiny-phi"),
        "sae_foreign": SAEConfig(
            d_in=128, d_sae=16, k=2, hook_name=hook, model_name="smollm2-135m"
        ),
        "sae_width": SAEConfig(d_in=64, d_sae=16, k=2, hook_name=hook, model_name="tiny-phi"),
        "sae_badhook": SAEConfig(d_in=128, d_sae=16, k=2, hook_name="blocks.9.hook_resid_post"),
    }.items():
        SAE(cfg).save(base / name)
        paths[name] = str(base / name)
    good = base / "sae_ok"
    tensors = {n: p.detach() for n, p in SAE(SAEConfig(d_in=128, d_sae=16, k=2)).named_parameters()}
    cfg_text = (good / "cfg.json").read_text()
    for name, cfg_json, weights in (
        ("sae_badjson", '{"d_in": 128, ', tensors),
        ("sae_badweights", cfg_text, None),
        ("sae_missing", cfg_text, {k: v for k, v in tensors.items() if k != "b_dec"}),
        ("sae_shape", cfg_text, {**tensors, "b_enc": torch.zeros(7)}),
        ("sae_nan", cfg_text, {**tensors, "W_dec": torch.full((16, 128), float("nan"))}),
        ("sae_arch", cfg_text.replace('"topk"', '"gated"'), tensors),
        ("sae_nok", cfg_text.replace('"k": 2,', ""), tensors),
    ):
        folder = base / name
        folder.mkdir()
        (folder / "cfg.json").write_text(cfg_json)
        if weights is None:
            (folder / "sae_weights.safetensors").write_bytes(b"\x00\x01 not safetensors")
        else:
            save_file(weights, str(folder / "sae_weights.safetensors"))
        paths[name] = str(folder)
    return paths


def _bad_interventions(base: Path) -> dict[str, str]:
    """Saved intervention folders that `--intervention` must refuse (written by hand, as a
    damaged or foreign file would be)."""
    from safetensors.torch import save_file

    meta = {
        "format": "workbench-intervention/1",
        "method": "add",
        "name": "add-L1-+0.1",
        "model": {"name": "tiny-phi", "d_model": 128, "n_layers": 4},
        "layers": [1],
        "coefficient": 0.1,
        "norms": {"1": 2.0},
    }
    cases = {
        "iv_foreign": ({**meta, "model": {**meta["model"], "name": "smollm2-135m"}}, 128),
        "iv_width": ({**meta, "model": {**meta["model"], "d_model": 64}}, 64),
        "iv_method": ({**meta, "method": "steer"}, 128),
        "iv_nan": (meta, 128),
        "iv_layer": ({**meta, "layers": [9], "norms": {"9": 2.0}}, 128),
    }
    paths = {}
    for name, (fields, width) in cases.items():
        folder = base / name
        folder.mkdir()
        vector = torch.full((width,), float("nan")) if name == "iv_nan" else torch.ones(width)
        save_file({"direction": vector}, str(folder / "intervention.safetensors"))
        (folder / "intervention.json").write_text(json.dumps(fields))
        paths[name] = str(folder)
    return paths


@pytest.mark.parametrize("row_id,argv,expect", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_exits_2_with_one_line(row_id, argv, expect, bad_files, tmp_path, capsys):
    out = tmp_path / "out"
    places = {"out": str(out), **bad_files}
    args = [re.sub(r"\{([\w.]+)\}", lambda m: places[m.group(1)], a) for a in argv]
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (args, err)
    assert "Traceback" not in captured.err and len(err.splitlines()) == 1, err
    assert expect in err, (expect, err)
    assert not out.exists(), "nothing may be written to --out on bad input"
