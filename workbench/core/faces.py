"""Package faces that import on first use (PEP 562), so `workbench --help` loads no torch.

A face maps each of its submodules to the names it re-exports (`EXPORTS`); `from
workbench.interp import logit_lens` or `workbench.interp.logit_lens` imports `workbench.interp.lens`
the first time the name is asked for, and `workbench.interp.lens` (any submodule or subpackage)
works the same way. `__all__` lists the same names; `tests/test_layers.py` keeps them equal.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Callable


def lazy_face(
    package: str, exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for the face of `package`.

    exports: {relative submodule (".lens", ".core.errors"): the names it gives}.
    """
    where = {name: module for module, names in exports.items() for name in names}
    face = sys.modules[package]
    children = {info.name for info in pkgutil.iter_modules(face.__path__)}

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
        elif name in children:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(face, name, value)  # asked once: later lookups do not come here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(face)) | set(where) | children)

    return __getattr__, __dir__
