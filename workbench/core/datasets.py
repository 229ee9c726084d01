"""Reading texts from prompt files: ``.txt`` (one per line), ``.jsonl`` (a field) and ``.csv`` (a column).

Every problem is reported as an `InputError` naming the file, the line and what
is wrong, before any model work starts:

    prompts.jsonl:7: invalid JSON (Expecting ',' delimiter at column 18)
    prompts.csv:1: no column 'text' (columns: prompt, label)

Every file format goes through the same hardened steps (`read_lines`, `json_line`,
`csv_rows`, `check_text`): a size limit, UTF-8 with the first bad byte named, JSON
nesting and CSV field limits, strict CSV quoting (an unterminated quote is an
error, not two lines merged), ragged rows refused, and lone surrogates refused.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError

MAX_INPUT_BYTES = 1 << 30  # 1 GiB: larger input files are refused before they are read
MAX_CSV_FIELD = 1 << 20  # characters in one CSV field


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


def read_texts(
    path: str | Path, field: str = "text", column: str | None = None, skip_bad: bool = False
) -> list[TextRecord]:
    """Read the texts of a .txt, .jsonl or .csv file.

    Args:
        path: the file; its suffix chooses the format.
        field: the JSONL field holding the text.
        column: the CSV column holding the text (default: `field`).
        skip_bad: skip bad lines instead of raising (`read_texts.last_skipped` counts them).

    Raises:
        InputError: missing/empty file, non-UTF-8 bytes, malformed line, missing field.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".txt", ".jsonl", ".csv") and Path(path).is_file():
        raise InputError(
            f"unsupported file type {suffix or '(none)'}; use .txt, .jsonl or .csv", str(path)
        )
    shown, lines = read_lines(path, "file of texts")
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise InputError(
            f"unsupported file type {suffix or '(none)'}; use .txt, .jsonl or .csv", shown
        )
    reader = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv}[suffix]
    records, skipped = reader(
        lines, shown, field if suffix == ".jsonl" else (column or field), skip_bad
    )
    read_texts.last_skipped = skipped
    if not records:
        raise InputError(
            "file has no texts" + (f" ({skipped} bad lines skipped)" if skipped else ""), shown
        )
    return records


read_texts.last_skipped = 0


def read_lines(path: str | Path, what: str = "file") -> tuple[str, list[str]]:
    """(shown path, decoded lines) of a text file, after the checks every reader shares."""
    shown = str(path)
    return shown, _decode_lines(read_input_bytes(path, what), shown)


def read_input_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of a user's input file: a regular file (never a FIFO, which would block, nor a
    device such as /dev/zero, which never ends) of at most MAX_INPUT_BYTES, read with that bound
    whatever its size claims. InputError naming the file otherwise."""
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise InputError(f"file not found (expected a {what})", shown)
    if path.is_dir():
        raise InputError(f"is a folder, not a {what}", shown)
    if not path.is_file():
        raise InputError(
            f"is not a regular file (a FIFO, device or socket); give a {what} saved on disk",
            shown,
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise InputError(f"cannot be read ({error.strerror})", shown) from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(
            f"is over {MAX_INPUT_BYTES >> 30} GiB; input files are limited to that", shown
        )
    return data


def _decode_lines(data: bytes, shown: str) -> list[str]:
    """Split into lines, naming the first line that is not valid UTF-8."""
    lines = data.split(b"\n")
    decoded = []
    for number, raw in enumerate(lines, start=1):
        try:
            decoded.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise InputError(
                f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
                shown,
                number,
            ) from None
    if decoded and decoded[0].startswith("\ufeff"):
        decoded[0] = decoded[0][1:]
    return decoded


def json_line(line: str, shown: str, number: int):
    """One JSON value from one line; InputError (file:line) for bad JSON or nesting too deep."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(
            f"invalid JSON ({error.msg} at column {error.colno})", shown, number
        ) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", shown, number) from None


def check_text(value, field: str, shown: str, number: int | None) -> str:
    """A non-empty string without lone surrogates (which cannot be encoded or tokenized)."""
    if not isinstance(value, str):
        raise InputError(f"field {field!r} is {type(value).__name__}, not a string", shown, number)
    if not value.strip():
        raise InputError(f"field {field!r} is empty", shown, number)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"field {field!r} holds an unpaired surrogate (U+{ord(value[error.start]):04X})",
            shown,
            number,
        ) from None
    return value


def csv_rows(lines: list[str], shown: str):
    """(header, [(line number, row), ...]) with strict quoting, a field size limit and no ragged rows."""
    previous = csv.field_size_limit(MAX_CSV_FIELD)
    reader = csv.reader(io.StringIO("\n".join(lines)), strict=True)
    try:
        header = next(reader, None)
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise InputError(
                    f"row has {len(row)} fields; the header has {len(header)}",
                    shown,
                    reader.line_num,
                )
            rows.append((reader.line_num, row))
    except csv.Error as error:
        raise InputError(f"bad CSV ({error})", shown, reader.line_num) from None
    finally:
        csv.field_size_limit(previous)
    return header or [], rows


def _read_txt(lines, shown, _field, _skip_bad):
    return [
        TextRecord(check_text(line, "line", shown, n), shown, n)
        for n, line in enumerate(lines, start=1)
        if line.strip()
    ], 0


def _read_jsonl(lines, shown, field, skip_bad):
    records, skipped = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(TextRecord(_jsonl_text(line, field, shown, number), shown, number))
        except InputError:
            if not skip_bad:
                raise
            skipped += 1
    return records, skipped


def _jsonl_text(line: str, field: str, shown: str, number: int) -> str:
    value = json_line(line, shown, number)
    if not isinstance(value, dict):
        raise InputError(
            f"expected a JSON object with field {field!r}, got {type(value).__name__}",
            shown,
            number,
        )
    if field not in value:
        raise InputError(
            f"field {field!r} is missing (fields: {', '.join(sorted(value)) or 'none'})",
            shown,
            number,
        )
    return check_text(value[field], field, shown, number)


def _read_csv(lines, shown, column, skip_bad):
    header, rows = csv_rows(lines, shown)
    if not header:
        return [], 0
    if column not in header:
        raise InputError(
            f"no column {column!r} (columns: {', '.join(header)}); choose one with --column",
            shown,
            1,
        )
    index = header.index(column)
    records, skipped = [], 0
    for number, row in rows:
        try:
            records.append(TextRecord(check_text(row[index], column, shown, number), shown, number))
        except InputError:
            if not skip_bad:
                raise
            skipped += 1
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
    shown, lines = read_lines(path, "labeled set")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = json_line(line, shown, number)
        if not isinstance(item, dict):
            raise InputError(
                f"expected a JSON object with 'text' and 'label', got {type(item).__name__}",
                shown,
                number,
            )
        text = check_text(item.get("text"), "text", shown, number) if "text" in item else None
        if text is None:
            raise InputError("field 'text' is missing", shown, number)
        label = item.get("label")
        if label not in (0, 1, True, False) or isinstance(label, float):
            raise InputError(f"field 'label' must be 0 or 1, not {label!r}", shown, number)
        group = item.get("group")
        if group is not None and not isinstance(group, (str, int)):
            raise InputError(
                f"field 'group' must be a string, not {type(group).__name__}", shown, number
            )
        rows.append(
            LabeledText(text, int(label), str(group) if group is not None else None, shown, number)
        )
    if not rows:
        raise InputError("file has no texts", shown)
    return rows


def read_toxigen(
    folder: str | Path, parts: tuple[str, ...] = ("prompts", "demonstrations"), dedupe: bool = True
) -> list[LabeledText]:
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
        raise InputError(
            "ToxiGen folder not found (expected prompts/ and demonstrations/ inside)", str(folder)
        )
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
        for number, line in enumerate(
            _decode_lines(read_input_bytes(path, "ToxiGen file"), str(path)), start=1
        ):
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
    cluster: str = ""


def read_bias_pairs(
    path: str | Path,
    more: str = "sent_more",
    less: str = "sent_less",
    direction: str = "stereo_antistereo",
    bias_type: str = "bias_type",
    cluster: str | None = None,
) -> list[BiasPair]:
    """CrowS-Pairs CSV (or any CSV with the named columns) as `BiasPair`s; `cluster` names an optional column
    whose value groups pairs that are not independent (a template, an occupation) for clustered intervals."""
    shown, lines = read_lines(path, "pairs file")
    columns, rows = csv_rows(lines, shown)
    wanted_columns = (more, less, direction, bias_type) + ((cluster,) if cluster else ())
    for wanted in wanted_columns:
        if wanted not in columns:
            raise InputError(f"no column {wanted!r} (columns: {', '.join(columns)})", shown, 1)
    index = {name: columns.index(name) for name in wanted_columns}
    pairs = []
    for number, row in rows:
        texts = [check_text(row[index[name]], name, shown, number) for name in (more, less)]
        if cluster and not row[index[cluster]].strip():
            # an empty label would put every unlabeled pair in one cluster, or none in any
            raise InputError(
                f"column {cluster!r} (--cluster-column) is empty; every pair needs its cluster "
                "label",
                shown,
                number,
            )
        pairs.append(
            BiasPair(
                texts[0],
                texts[1],
                row[index[direction]],
                row[index[bias_type]],
                number,
                row[index[cluster]] if cluster else "",
            )
        )
    if not pairs:
        raise InputError("file has no pairs", shown)
    return pairs


@dataclass(frozen=True)
class PatchPair:
    """A clean/corrupted prompt pair for patching, with the answer the clean prompt should get and the other."""

    clean: str
    corrupt: str
    answer: str
    other: str
    line: int


def read_patch_pairs(path: str | Path) -> list[PatchPair]:
    """JSONL of {clean, corrupt, answer, other} (probes/ioi_pairs.jsonl) as `PatchPair`s."""
    shown, lines = read_lines(path, "pairs file")
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = json_line(line, shown, number)
        if not isinstance(record, dict):
            raise InputError(
                f"expected a JSON object with clean, corrupt, answer, other; got "
                f"{type(record).__name__}",
                shown,
                number,
            )
        for name in ("clean", "corrupt", "answer", "other"):
            if name not in record:
                raise InputError(
                    f"missing field {name!r} (a pair needs clean, corrupt, answer, other)",
                    shown,
                    number,
                )
        pairs.append(
            PatchPair(
                *(
                    check_text(record[name], name, shown, number)
                    for name in ("clean", "corrupt", "answer", "other")
                ),
                number,
            )
        )
    if not pairs:
        raise InputError("file has no pairs", shown)
    return pairs
