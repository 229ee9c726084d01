"""What an audit's run.json records, and how a rerun into the same folder is checked against it.

Every result-deciding field is compared on resume (model, generation and scoring settings,
scorer versions and checkpoint hashes, input hashes); settings that change only the summary
(`SUMMARY_ONLY`) are taken over, and paths are compared by the hashes recorded beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import InputError
from ..core.provenance import settings_sha256
from ..core.provenance import versions as package_versions
from ..core.storage import write_atomically
from ..report.folder import read_run

# Settings that change the summary but not the shards: a rerun with new values is accepted,
# run.json takes the new values and the summary is rebuilt from the shards.
SUMMARY_ONLY = ("versions", "bootstrap", "metric")


# Paths are recorded as given but compared by content (their sha256 fields), so ./x and x agree.
PATH_FIELDS = ("prompts_file", "pairs_file", "templates_file", "data", "path", "checkpoint")


def _is_path(key: str, value) -> bool:
    # steer.pairs is a path
    return key in PATH_FIELDS or (key == "pairs" and isinstance(value, str))


def comparable(settings: dict) -> dict:
    """The result-deciding part of run.json settings: SUMMARY_ONLY and path fields dropped, at any depth."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not _is_path(k, v)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip({k: v for k, v in settings.items() if k not in SUMMARY_ONLY})


def settings_fingerprint(settings: dict) -> str:
    """sha256 of the result-deciding settings (`comparable`), recorded beside every shard in
    shards.json so a resume can tell a shard computed under other settings."""
    return settings_sha256(comparable(settings))


def differing_fields(previous: dict, settings: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ (model.dtype, steer.pairs_sha256, ...)."""
    names = []
    for key in dict.fromkeys(list(previous) + list(settings)):
        old, new = previous.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += differing_fields(old, new, f"{prefix}{key}.")
        elif old != new:
            names.append(prefix + key)
    return names


def check_settings(out: Path, settings: dict) -> None:
    """Write run.json, or check that an existing one describes the same audit.

    Every result-deciding field is compared (model name, revision, dtype, device kind and
    weight origin; generation and scoring settings; scorer versions and checkpoint hashes;
    input, pairs and probe hashes). A changed SUMMARY_ONLY setting is taken into run.json.
    Call only after every argument has been validated, so a bad command leaves no run.json.
    """
    run_file = out / "run.json"
    if run_file.exists():
        previous = read_run(out)
        differing = differing_fields(comparable(previous), comparable(settings))
        if differing:
            raise InputError(
                f"holds an audit with other settings ({', '.join(differing)} differ); "
                "choose another --out or delete the folder",
                str(out),
            )
        if any(previous.get(k) != settings.get(k) for k in SUMMARY_ONLY):
            write_atomically(
                run_file,
                (
                    json.dumps(
                        {**previous, **{k: settings[k] for k in SUMMARY_ONLY if k in settings}},
                        indent=2,
                    )
                    + "\n"
                ).encode(),
            )
    else:
        write_atomically(run_file, (json.dumps(settings, indent=2) + "\n").encode())


def model_settings(model) -> dict:
    """The model fields every run.json records, including where the weights came from."""
    info = model.info
    return {
        "name": info.name,
        "revision": info.revision,
        "dtype": info.dtype,
        "source": info.source,
        "origin": info.origin,
        "device_kind": info.device.split(":")[0],
    }


def versions() -> dict:
    """Versions of every package that decides a number, recorded in every run.json."""
    return dict(package_versions())
