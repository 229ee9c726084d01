"""Reading texts from prompt files: ``.txt`` (one per line), ``.jsonl`` (a field) and ``.csv`` (a column).

Every problem is reported as an `InputError` naming the file, the line and what
is wrong, before any model work starts:

    prompts.jsonl:7: invalid JSON (Expecting ',' delimiter at column 18)
    prompts.csv:1: no column 'text' (columns: prompt, label)
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError


@dataclass(frozen=True)
class TextRecord:
    """A text and where it came from (path and 1-based line; None for texts given in code)."""

    text: str
    path: str | None = None
    line: int | None = None


def as_records(texts: Sequence[str] | Sequence[TextRecord]) -> list[TextRecord]:
    """Accept plain strings or records; strings get no file position."""
    records = []
    for i, item in enumerate(texts):
        if isinstance(item, TextRecord):
            records.append(item)
        elif isinstance(item, str):
            records.append(TextRecord(item, None, None))
        else:
            raise InputError(f"text #{i} is a {type(item).__name__}, not a string")
    return records


def read_texts(path: str | Path, field: str = "text", column: str | None = None,
               skip_bad: bool = False) -> list[TextRecord]:
    """Read the texts of a .txt, .jsonl or .csv file.

    Args:
        path: the file; its suffix chooses the format.
        field: the JSONL field holding the text.
        column: the CSV column holding the text (default: `field`).
        skip_bad: skip bad lines instead of raising (`read_texts.last_skipped` counts them).

    Raises:
        InputError: missing/empty file, non-UTF-8 bytes, malformed line, missing field.
    """
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise InputError("file not found", shown)
    if path.is_dir():
        raise InputError("is a folder, not a file of texts", shown)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise InputError(f"unsupported file type {suffix or '(none)'}; use .txt, .jsonl or .csv", shown)
    lines = _decode_lines(path.read_bytes(), shown)
    reader = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv}[suffix]
    records, skipped = reader(lines, shown, field if suffix == ".jsonl" else (column or field), skip_bad)
    read_texts.last_skipped = skipped
    if not records:
        raise InputError("file has no texts" + (f" ({skipped} bad lines skipped)" if skipped else ""), shown)
    return records


read_texts.last_skipped = 0


def _decode_lines(data: bytes, shown: str) -> list[str]:
    """Split into lines, naming the first line that is not valid UTF-8."""
    lines = data.split(b"\n")
    decoded = []
    for number, raw in enumerate(lines, start=1):
        try:
            decoded.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise InputError(f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
                             shown, number) from None
    if decoded and decoded[0].startswith("\ufeff"):
        decoded[0] = decoded[0][1:]
    return decoded


def _read_txt(lines, shown, _field, _skip_bad):
    return [TextRecord(line, shown, n) for n, line in enumerate(lines, start=1) if line.strip()], 0


def _read_jsonl(lines, shown, field, skip_bad):
    records, skipped = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(TextRecord(_jsonl_text(line, field), shown, number))
        except ValueError as error:
            if not skip_bad:
                raise InputError(str(error), shown, number) from None
            skipped += 1
    return records, skipped


def _jsonl_text(line: str, field: str) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object with field {field!r}, got {type(value).__name__}")
    if field not in value:
        raise ValueError(f"field {field!r} is missing (fields: {', '.join(sorted(value)) or 'none'})")
    text = value[field]
    if not isinstance(text, str):
        raise ValueError(f"field {field!r} is {type(text).__name__}, not a string")
    if not text.strip():
        raise ValueError(f"field {field!r} is empty")
    return text


def _read_csv(lines, shown, column, skip_bad):
    reader = csv.reader(io.StringIO("\n".join(lines)))
    try:
        header = next(reader)
    except StopIteration:
        return [], 0
    if column not in header:
        raise InputError(f"no column {column!r} (columns: {', '.join(header)}); choose one with --column",
                         shown, 1)
    index = header.index(column)
    records, skipped = [], 0
    for row in reader:
        number = reader.line_num
        if not row:
            continue
        if len(row) <= index or not row[index].strip():
            if not skip_bad:
                raise InputError(f"column {column!r} is missing or empty", shown, number)
            skipped += 1
            continue
        records.append(TextRecord(row[index], shown, number))
    return records, skipped


# ----------------------------------------------------------------------------- labelled sets


@dataclass(frozen=True)
class LabeledText:
    """A text with a binary label (1 = the concept is present, e.g. hateful) and an optional group."""

    text: str
    label: int
    group: str | None = None
    path: str | None = None
    line: int | None = None


def read_labeled(path: str | Path) -> list[LabeledText]:
    """A probe set: JSONL with "text", "label" (0/1 or true/false) and optional "group"."""
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise InputError("file not found", shown)
    rows = []
    for number, line in enumerate(_decode_lines(path.read_bytes(), shown), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"invalid JSON ({error.msg} at column {error.colno})", shown, number) from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise InputError("field 'text' is missing or empty", shown, number)
        label = item.get("label")
        if label not in (0, 1, True, False):
            raise InputError(f"field 'label' must be 0 or 1, not {label!r}", shown, number)
        group = item.get("group")
        rows.append(LabeledText(item["text"], int(label), str(group) if group is not None else None, shown, number))
    if not rows:
        raise InputError("file has no texts", shown)
    return rows


def read_toxigen(folder: str | Path, parts: tuple[str, ...] = ("prompts", "demonstrations"),
                 dedupe: bool = True) -> list[LabeledText]:
    """ToxiGen statements with label (1 = hate, 0 = neutral) and target group.

    Reads ``prompts/{hate,neutral}_<group>_1k.txt`` (each line a few-shot prompt of
    statements joined by a literal backslash-n-dash, split here into statements) and
    ``demonstrations/<topic>/{hate,neutral}_<group>_sentences.txt`` (one "- statement"
    per line). The prompt lines recombine a small pool, so statements are
    deduplicated (case- and space-insensitive) unless `dedupe` is False; a statement
    seen with both labels is dropped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("ToxiGen folder not found (expected prompts/ and demonstrations/ inside)", str(folder))
    files = []
    if "prompts" in parts:
        files += sorted((folder / "prompts").glob("*_1k.txt"))
    if "demonstrations" in parts:
        files += sorted((folder / "demonstrations").glob("*/*_sentences.txt"))
    if not files:
        raise InputError("no ToxiGen hate_*/neutral_* files found", str(folder))
    rows: list[LabeledText] = []
    for path in files:
        kind, _, rest = path.stem.partition("_")
        if kind not in ("hate", "neutral"):
            continue
        group = rest.removesuffix("_1k").removesuffix("_sentences")
        label = int(kind == "hate")
        for number, line in enumerate(_decode_lines(path.read_bytes(), str(path)), start=1):
            for statement in line.split("\\n-"):
                statement = statement.strip().removeprefix("-").strip()
                if statement:
                    rows.append(LabeledText(statement, label, group, str(path), number))
    if not dedupe:
        return rows
    seen: dict[str, LabeledText] = {}
    conflicted: set[str] = set()
    for row in rows:
        key = " ".join(row.text.lower().split())
        if key in seen and seen[key].label != row.label:
            conflicted.add(key)
        seen.setdefault(key, row)
    return [row for key, row in seen.items() if key not in conflicted]


@dataclass(frozen=True)
class BiasPair:
    """A CrowS-Pairs-style minimal pair: `more` is the more stereotyping sentence."""

    more: str
    less: str
    direction: str
    bias_type: str
    line: int


def read_bias_pairs(path: str | Path, more: str = "sent_more", less: str = "sent_less",
                    direction: str = "stereo_antistereo", bias_type: str = "bias_type") -> list[BiasPair]:
    """CrowS-Pairs CSV (or any CSV with the named columns) as `BiasPair`s."""
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise InputError("file not found", shown)
    reader = csv.DictReader(io.StringIO("\n".join(_decode_lines(path.read_bytes(), shown))))
    columns = reader.fieldnames or []
    for wanted in (more, less, direction, bias_type):
        if wanted not in columns:
            raise InputError(f"no column {wanted!r} (columns: {', '.join(columns)})", shown, 1)
    pairs = []
    for row in reader:
        number = reader.line_num
        if not (row[more] or "").strip() or not (row[less] or "").strip():
            raise InputError(f"column {more!r} or {less!r} is empty", shown, number)
        pairs.append(BiasPair(row[more], row[less], row[direction], row[bias_type], number))
    if not pairs:
        raise InputError("file has no pairs", shown)
    return pairs
