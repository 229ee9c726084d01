"""The results root: the only folder the dashboard reads from and writes to.

    root = results_root()                      # $WORKBENCH_RESULTS, default ./results
    folder = resolve_under(root, "demo/toxicity")
    list_audits(root)                          # audit folders (with run.json) under the root

Paths typed by a user are resolved (following symlinks) and refused with an
`InputError` when they land outside the root: ``../``, an absolute path elsewhere,
or a symlink pointing out.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InputError
from ..report.folder import check_inside, is_audit_folder


def results_root() -> Path:
    """$WORKBENCH_RESULTS, or ``results`` in the current folder (created on demand), resolved."""
    root = Path(os.environ.get("WORKBENCH_RESULTS") or "results").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def resolve_under(root: str | Path, path: str | Path) -> Path:
    """`path` (relative to `root`, or absolute) resolved; refused unless it stays inside `root`."""
    root = Path(root).resolve()
    text = str(path).strip()
    if not text or "\x00" in text:
        raise InputError("empty or invalid path")
    candidate = Path(text).expanduser()
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise InputError(
            f"refused: {text!r} is outside the results root {root} "
            "(set WORKBENCH_RESULTS to choose another root)"
        )
    return resolved


def check_audit_inside(root: str | Path, folder: str | Path) -> Path:
    """`folder` and every file a reader of the audit opens in it (`workbench.report.folder.
    audit_files`: run.json, shards, summary, localisation, the capability/ sub-audit...) resolved
    inside `root`; InputError naming the first one that leads out (a symlink, say)."""
    folder = resolve_under(root, folder)
    return check_inside(root, folder, where=f"the results root {Path(root).resolve()}")


def list_audits(root: str | Path, max_depth: int = 4) -> list[Path]:
    """Audit folders (holding run.json) under `root`, as paths relative to it, sorted.

    Folders reached through symlinks that leave the root are skipped, and so are
    activation caches (which also hold a run.json) and an audit's own sub-audits (a toxicity
    audit's capability/, shown with it).
    """
    root = Path(root).resolve()
    audits = [p for p in _find(root, "run.json", max_depth) if is_audit_folder(root / p)]
    # an audit's own sub-audit (a toxicity audit's capability/) is shown on its parent's page
    return [p for p in audits if p.parent not in audits]


def list_probes(root: str | Path, max_depth: int = 5) -> list[Path]:
    """Saved probe folders (holding probe.json) under `root`, relative to it, sorted."""
    return _find(root, "probe.json", max_depth)


def _find(root: str | Path, marker: str, max_depth: int) -> list[Path]:
    root = Path(root).resolve()
    found = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= max_depth:
            dirs[:] = []
        if marker in files:
            try:
                found.append(resolve_under(root, folder).relative_to(root))
            except InputError:
                continue
    return sorted(found)


def list_saes(root: str | Path, max_depth: int = 4) -> list[Path]:
    """SAE folders (SAELens format: cfg.json beside sae_weights.safetensors) under `root`, relative
    to it, sorted; symlinks leading out of the root are skipped."""
    return _find(root, "sae_weights.safetensors", max_depth)
