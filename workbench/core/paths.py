"""Where workbench keeps converted models and other cached files, and where its own data files are.

`WORKBENCH_CACHE` overrides the default, which is ``$XDG_CACHE_HOME/workbench``
(``~/.cache/workbench`` when XDG_CACHE_HOME is unset).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def cache_root() -> Path:
    """The workbench cache folder (created on demand)."""
    explicit = os.environ.get("WORKBENCH_CACHE")
    if explicit:
        root = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "workbench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Folder holding locally built or converted models, one sub-folder each."""
    path = cache_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_data(*parts: str) -> Path:
    """A file shipped inside the workbench package (``workbench/data/...``): the QA set, the
    held-out texts, the audit prompts, the example pair sets under ``data/probes``. Read through
    importlib.resources, so it is found wherever workbench is installed (a wheel, an editable
    install), never relative to the current folder or to a repository checkout."""
    return Path(str(resources.files("workbench").joinpath("data", *parts)))
