"""The `workbench` CLI: summaries, --json, and bad input -> exit 2 with one line naming file and line."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.core.datasets import read_texts


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, name, data: bytes | str):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


BAD_INPUTS = [
    ("missing.txt", None, "missing.txt: file not found"),
    ("empty.txt", "\n\n", "empty.txt: file has no texts"),
    ("bad.jsonl", '{"text": "fine"}\n{"text": "broken"\n', "bad.jsonl:2: invalid JSON"),
    (
        "nofield.jsonl",
        '{"text": "fine"}\n{"prompt": "x"}\n',
        "nofield.jsonl:2: field 'text' is missing",
    ),
    ("latin1.txt", b"fine\ncaf\xe9 au lait\n", "latin1.txt:2: not valid UTF-8"),
    ("nocol.csv", "prompt,label\nhello,1\n", "nocol.csv:1: no column 'text'"),
    ("emptycell.csv", "text,label\nhello,1\n,0\n", "emptycell.csv:3: field 'text' is empty"),
    ("notes.md", "hello\n", "unsupported file type .md"),
]


@pytest.mark.parametrize("name,content,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, name, content, expected):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    code, out, err = run(
        capsys, "cache", "--model", "tiny-phi", "--input", str(path), "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_over_long_text_exits_2_unless_truncated(tmp_path, capsys):
    path = write(tmp_path, "long.txt", "short one\n" + "word " * 30 + "\n")
    code, _, err = run(
        capsys,
        "cache",
        "--model",
        "tiny-phi",
        "--input",
        str(path),
        "--out",
        str(tmp_path / "o1"),
        "--max-length",
        "10",
    )
    assert code == 2 and "long.txt:2: text is" in err and "--truncate" in err
    code, out, _ = run(
        capsys,
        "cache",
        "--model",
        "tiny-phi",
        "--input",
        str(path),
        "--out",
        str(tmp_path / "o2"),
        "--max-length",
        "10",
        "--truncate",
        "--json",
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["token_counts"]["truncated_texts"] == 1 and summary["n_texts"] == 2


def test_cache_cli_json_and_formats(tmp_path, capsys):
    path = write(tmp_path, "texts.csv", 'id,body\n1,"Hello, world"\n2,Second text\n')
    code, out, err = run(
        capsys,
        "cache",
        "--model",
        "tiny-phi",
        "--input",
        str(path),
        "--column",
        "body",
        "--hooks",
        "blocks.1.hook_resid_post,attn.hook_z",
        "--positions",
        "mean",
        "--out",
        str(tmp_path / "c"),
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_texts"] == 2 and summary["positions"] == "mean"
    assert (
        summary["hooks"][0] == "blocks.0.attn.hook_z"
        and "blocks.1.hook_resid_post" in summary["hooks"]
    )
    assert (tmp_path / "c" / "manifest.json").exists()


def test_bad_hook_name_exits_2(tmp_path, capsys):
    path = write(tmp_path, "t.txt", "hello\n")
    code, _, err = run(
        capsys,
        "cache",
        "--model",
        "tiny-phi",
        "--input",
        str(path),
        "--hooks",
        "resid_psot",
        "--out",
        str(tmp_path / "c"),
    )
    assert code == 2 and "did you mean" in err


def test_jsonl_field_and_skip_bad(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"prompt": "a"}\nnot json\n{"prompt": "b"}\n')
    records = read_texts(path, field="prompt", skip_bad=True)
    assert [r.text for r in records] == ["a", "b"] and [r.line for r in records] == [1, 3]
    assert read_texts.last_skipped == 1


def test_info_and_models_json(capsys):
    code, out, _ = run(capsys, "info", "--model", "tiny-phi", "--json")
    info = json.loads(out)
    assert (
        code == 0 and info["n_layers"] == 4 and info["source"] == "built" and info["n_params"] > 0
    )
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and "phi-2" in [m["name"] for m in json.loads(out)["models"]]


def test_fetch_takes_the_model_name_as_argument(capsys):
    code, out, _ = run(capsys, "fetch", "tiny-phi", "--json")
    assert code == 0 and json.loads(out)["model"] == "tiny-phi"
    code, out, _ = run(capsys, "fetch", "--model", "tiny-phi")
    assert code == 0 and "tiny-phi: ready in" in out


def test_generate_cli_rejects_bad_max_new_tokens(capsys):
    code, _, err = run(
        capsys, "generate", "--model", "tiny-phi", "--prompt", "hi", "--max-new-tokens", "0"
    )
    assert code == 2 and "--max-new-tokens" in err
