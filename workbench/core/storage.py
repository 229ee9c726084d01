"""Writing results safely: one writer per folder, atomic files, hashed shards.

    with folder_lock(out):                      # a second writer exits 2 naming the holder's PID
        write_atomically(out / "summary.json", data)
        index = ShardIndex(out / "shards.json")
        index.record(path)                      # sha256 of a finished shard
        index.verified(path)                    # True when the file is there and its hash matches

The lock is an advisory `fcntl.flock` on ``<folder>/.lock``: the kernel releases
it when its holder dies, so a lock left by a killed run is taken over at once.
Temporary files carry the writer's PID, so two processes never share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from .errors import InputError
from .provenance import file_sha256


@contextlib.contextmanager
def folder_lock(folder: str | Path):
    """Hold the exclusive write lock of `folder` (created if needed) for the duration of the block."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InputError(
                f"another workbench process (PID {holder}) is writing to this folder; wait for it "
                "or stop it, then rerun",
                str(folder),
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def temp_path(path: Path) -> Path:
    """A temporary name beside `path` that no other process uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to a temporary file, then rename it over `path`: readers see the old or the new file."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write ({error.strerror or error})", str(path)) from None
    return path


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged file to ``<name>.damaged-<time>`` and say so on stderr; returns the new path."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    print(f"warning: {path} {reason}; moved aside to {target.name} and recomputed", file=sys.stderr)
    return target


def check_plain_name(name, what: str, where) -> str:
    """`name`, a file name recorded in an untrusted file (a shard index, a manifest), if it is a
    plain file name: a non-empty string with no folder part (no / or \\), not . or .., no NUL.
    Anything else would be joined into a path that leads elsewhere (``../x``, ``/etc/x``):
    InputError naming the file `where` and the name."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or any(c in name for c in "/\\\x00")
    ):
        raise InputError(
            f"the {what} records {name!r}, which is not a plain file name; refused (a damaged or "
            "crafted file: delete it and rerun the command that wrote it)",
            str(where),
        )
    return name


class ShardIndex:
    """``{shard file name: {"sha256": ..., "bytes": ...}}`` kept in one JSON file, written atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                loaded = None
            if not isinstance(loaded, dict):
                raise InputError(
                    "damaged shard index (not a JSON object); delete it and rerun to rebuild it",
                    str(self.path),
                )
            for name in loaded:
                check_plain_name(name, "shard index", self.path)
            self.entries = {
                k: v for k, v in loaded.items() if isinstance(v, dict) and "sha256" in v
            }

    def record(self, shard: Path, written: Path | None = None, settings: str | None = None) -> None:
        """Record `shard`'s hash, read from `written` (the finished temporary file) when given,
        and the fingerprint of the `settings` it was computed with (see `check_settings_of`).

        Callers record *before* moving the temporary file into place: a kill between the two then
        leaves a recorded shard that is missing (recomputed on resume), never a complete shard that
        was not recorded (which a resume would have to set aside as unknown)."""
        source = written or shard
        entry = {"sha256": file_sha256(source), "bytes": source.stat().st_size}
        if settings is not None:
            entry["settings"] = settings
        self.entries[shard.name] = entry
        write_atomically(self.path, json.dumps(self.entries, indent=1, sort_keys=True) + "\n")

    def check_settings_of(self, fingerprint: str, folder) -> None:
        """Refuse a folder holding a shard recorded with settings other than `fingerprint` (a
        run.json edited after the shard was computed, say): resuming would mix shards of two
        settings in one result. Shards recorded before fingerprints were kept are not checked."""
        for name, entry in sorted(self.entries.items()):
            if entry.get("settings", fingerprint) != fingerprint:
                raise InputError(
                    f"shard {name} was computed with other settings than this run's (its recorded "
                    "settings fingerprint differs: run.json edited?); choose another --out or "
                    "delete the folder",
                    str(folder),
                )

    def verified(self, shard: Path) -> bool:
        entry = self.entries.get(shard.name)
        return (
            entry is not None
            and shard.is_file()
            and shard.stat().st_size == entry.get("bytes")
            and file_sha256(shard) == entry["sha256"]
        )


def shard_ranges(n_items: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of consecutive shards of `shard_size` items (the last may be short).
    Caches and audits cut their work this way; the shard is the unit of resuming."""
    return [(start, min(start + shard_size, n_items)) for start in range(0, n_items, shard_size)]
