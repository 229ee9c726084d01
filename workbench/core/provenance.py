"""What made a number: package versions and file hashes, recorded in every saved result.

run.json of audits, cache manifests and saved probes call `versions()`; scorers
and probes hash their checkpoint files with `file_sha256`.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import InputError

# Every package whose version can change a number the workbench prints (distribution names).
NUMBER_PACKAGES = (
    "workbench",
    "torch",
    "transformers",
    "transformer-lens",
    "numpy",
    "scipy",
    "scikit-learn",
    "detoxify",
    "alt-profanity-check",
    "toxic-comment-classifier",
    "h5py",
    "gguf",
)


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """{distribution: version} for NUMBER_PACKAGES ("not installed" where absent)."""
    found = {}
    for name in NUMBER_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


@lru_cache(maxsize=64)
def _hash_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (remembered per path, size and modification time). A FIFO or a
    device has no end to hash: InputError."""
    if not Path(path).is_file():
        raise InputError("is not a regular file; cannot record its sha256", str(path))
    stat = Path(path).stat()
    return _hash_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def settings_sha256(settings: dict) -> str:
    """sha256 of a JSON-able dict of settings (keys sorted): the fingerprint recorded beside each
    shard in shards.json, so a resume can tell a shard computed under other settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
