"""The audit folder's format, written once: what an audit writes and what every reader opens.

    <out>/run.json          the settings ("audit" names the kind, "conditions" lists them)
    <out>/shards/<condition>-NNNNN.parquet, recorded with their sha256 in <out>/shards.json
    <out>/summary.json      written by `workbench.report` (summary), report.html beside it
    <out>/capability/       a toxicity audit's capability check: an audit folder of its own
    <out>/localisation.json a bias audit's localisation (`workbench audit bias --localise`)

A toxicity audit's shards hold one ``<text>_toxicity[<scorer>]`` column per scorer and text
(`toxicity_column`); readers find them by `TOX_PREFIX`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..core.errors import InputError
from ..core.remote import is_url, staged
from ..core.storage import ShardIndex

AUDIT_FORMAT = "workbench-audit/1"
AUDIT_KINDS = ("toxicity", "bias", "toxigen", "counterfactual", "capability")
SHARD_INDEX = "shards.json"


def shard_name(condition: str, index: int) -> str:
    return f"{condition}-{index:05d}.parquet"


def load_results(out: str | Path):
    """The shards of an audit folder as one DataFrame, in condition, row and sample order.

    Only the shards recorded in ``shards.json`` are read (a stray copy in shards/ is
    ignored), and each must match its recorded sha256; folders from before the index read
    the shards named after run.json's conditions.
    """
    if is_url(out):  # s3://...: read from a staging copy
        with staged(out) as local:
            return load_results(local)
    out = Path(out)
    run = read_run(out)
    names = [c["name"] for c in run["conditions"]]
    index_path = out / SHARD_INDEX
    if index_path.exists():
        index = ShardIndex(index_path)
        shards = [out / "shards" / name for name in sorted(index.entries)]
        for shard in shards:
            if not index.verified(shard):
                raise InputError(
                    f"shard {shard.name} is missing or damaged (it does not match its recorded "
                    "sha256); rerun the audit command to recompute it",
                    str(out),
                )
    else:
        pattern = re.compile("^(" + "|".join(re.escape(n) for n in names) + r")-\d{5}\.parquet$")
        shards = sorted(p for p in (out / "shards").glob("*.parquet") if pattern.match(p.name))
    if not shards:
        raise InputError(
            "no result shards (shards/*.parquet): not an audit folder, or nothing finished yet",
            str(out),
        )
    try:
        frame = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    except Exception as error:
        raise InputError(
            f"unreadable shard ({type(error).__name__}); rerun the audit command to recompute it",
            str(out),
        ) from None
    order = {name: i for i, name in enumerate(names)}
    frame["_order"] = frame["condition"].map(order)
    keys = ["_order", "row"] + (["sample"] if "sample" in frame.columns else [])
    return frame.sort_values(keys, ignore_index=True, kind="stable").drop(columns="_order")


def is_audit_folder(folder: str | Path) -> bool:
    """Whether `folder` holds an audit's run.json (activation caches have a run.json too)."""
    try:
        return read_run(folder).get("format") == AUDIT_FORMAT
    except (OSError, ValueError, AttributeError, InputError):
        return False


def read_run(out: str | Path) -> dict:
    """An audit folder's run.json (settings); "audit" says which kind (toxicity for old folders)."""
    path = Path(out) / "run.json"
    if not path.is_file():
        raise InputError("no run.json: not an audit folder", str(out))
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise InputError(f"damaged run.json ({type(error).__name__})", str(path)) from None
    if (
        not isinstance(run, dict)
        or not isinstance(run.get("conditions"), list)
        or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in run["conditions"]
        )
    ):
        raise InputError("run.json is not an audit's settings (no list of conditions)", str(path))
    run.setdefault("audit", "toxicity")
    if run["audit"] not in AUDIT_KINDS:
        raise InputError(f"run.json names an unknown audit kind {run['audit']!r}", str(path))
    return run


TOX_PREFIX = (
    "continuation_toxicity["  # the continuation score columns: toxicity_column("continuation", s)
)


def toxicity_column(text: str, scorer: str) -> str:
    """The shard column of one scorer's toxicity of a prompt's `text` ("prompt" or "continuation")."""
    return f"{text}_toxicity[{scorer}]"


LOCALISATION_FILE = "localisation.json"  # in the bias audit's folder, beside run.json


def read_localisation(folder) -> dict | None:
    """The localisation.json of an audit folder as a dict, or None when there is none."""
    path = Path(folder) / LOCALISATION_FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise InputError(
            f"damaged {LOCALISATION_FILE} ({type(error).__name__}); delete it, or rerun "
            "`workbench audit bias --localise` to write it again",
            str(path),
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{LOCALISATION_FILE} is not a JSON object", str(path))
    return data


SUB_AUDITS = ("capability",)  # audit folders of their own inside an audit (a toxicity audit's)
READ_FILES = ("run.json", SHARD_INDEX, "summary.json", LOCALISATION_FILE, "report.html", "shards")


def audit_files(folder: str | Path) -> list[Path]:
    """Every path a reader of the audit at `folder` opens (the report, the dashboard): its
    run.json, shards.json, summary.json, localisation.json, report.html, shards/ and each file
    in it, and the same for each sub-audit (capability/), the sub-audit folder included. Only
    paths that exist (or are dangling symlinks) are listed; a symlinked folder is listed but
    not entered."""
    folder = Path(folder)
    paths = [folder / name for name in READ_FILES]
    shards = folder / "shards"
    if shards.is_dir() and not shards.is_symlink():
        paths += sorted(shards.iterdir())
    for name in SUB_AUDITS:
        inner = folder / name
        paths.append(inner)
        if inner.is_dir() and not inner.is_symlink():
            paths += audit_files(inner)
    return [p for p in paths if p.exists() or p.is_symlink()]


def check_inside(root: str | Path, folder: str | Path, where: str = "") -> Path:
    """`folder` with every file of `audit_files(folder)` resolved inside `root`; InputError naming
    the first one that leads out (a symlink, say). The one containment check of the dashboard
    (root: the results root) and of `report` (root: the folder it was given). `where` says what
    the root is, for the message."""
    root = Path(root).resolve()
    for path in [Path(folder), *audit_files(folder)]:
        if not path.resolve().is_relative_to(root):
            raise InputError(
                f"refused: {path} leads outside {where or root} (a symlink out of it?); "
                "an audit's files must all lie inside it",
                str(folder),
            )
    return Path(folder)


def search_record(folder: str | Path, root: str | Path) -> dict | None:
    """search.json of the detoxification search (`workbench intervene search`) whose test audit
    `folder` is, else None. The file must resolve inside `root` (a symlink may not lead out)."""
    folder = Path(folder)
    path = folder.parent / "search.json"
    if folder.name != "test" or not path.is_file():
        return None
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise InputError(f"refused: {path} leads outside {root} (a symlink out of it?)")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", str(path)) from None
    if not isinstance(record, dict) or not isinstance(record.get("candidates"), list):
        raise InputError("not a search record (field 'candidates')", str(path))
    return record
