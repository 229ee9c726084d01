"""The house stays standing: the rules of README's "How it is built" that a linter does not check.

`make test` runs `lint-imports` (the layers contract, no cycles; pyproject.toml) and ruff before
these tests; here, on the source itself: no module imports another's underscore name, imports
sit at module top except the slow or optional packages (each with a "# lazy:" comment), the one
hooked forward pass lives in workbench/model/, and files stay small.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
SOURCES = sorted(PACKAGE.rglob("*.py"))
# Packages whose import costs the command line seconds at start, or that are optional or used by
# one scorer only: imported where they are used, with a "# lazy:" comment saying why.
LAZY = {"transformers", "transformer_lens", "scipy", "sklearn", "huggingface_hub", "ray", "kaleido",
        "detoxify", "profanity_check", "h5py", "s3fs",
        # and what `workbench --help` and its argument checks must not load
        "torch", "pyarrow"}  # fmt: skip


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, id(node) in top


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_sources_are_found():
    assert len(SOURCES) > 50


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_an_underscore_name_from_another(path):
    for node, _ in _imports(path):
        if isinstance(node, ast.ImportFrom):
            private = [
                a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"
            ]
            assert not private, f"{path.name}:{node.lineno} imports {private} from {node.module}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_sit_at_module_top_unless_lazy_with_a_reason(path):
    lines = path.read_text(encoding="utf-8").split("\n")
    for node, top in _imports(path):
        if top:
            continue
        names = (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        package = names[0].split(".")[0]
        where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
        assert getattr(node, "level", 0) == 0 and package in LAZY, (
            f"{where}: import it at the module's top"
        )
        above = node.lineno - 2  # the line before, skipping other lazy imports right above it
        while above >= 0 and re.match(r"\s*(from|import) ", lines[above]):
            above -= 1
        assert lines[above].strip().startswith("# lazy:"), (
            f"{where}: say why it is lazy (# lazy: ...)"
        )


def test_the_hooked_forward_pass_is_written_once_in_the_model_layer():
    """Analyses run hooks through workbench.model.run, never the HF model or the hook dict."""
    offenders = []
    for path in SOURCES:
        if path.relative_to(PACKAGE).parts[0] == "model":
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in ("hf_model(", "register_forward_hook", "hook_dict", "hf_model.generate"):
            if pattern in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {pattern}")
    assert not offenders


def test_files_stay_small_and_the_top_level_holds_few_modules():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in SOURCES
        if (n := len(p.read_text().split("\n"))) > 600
    }
    assert not long, f"over 600 lines: {long}"
    top = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 8, top


def test_every_subpackage_has_a_face_with_all():
    for package in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        tree = ast.parse((package / "__init__.py").read_text())
        names = [
            getattr(t, "id", None) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets
        ]  # fmt: skip
        if package.name not in ("cli", "dashboard"):  # front ends: `main`, and Streamlit pages
            assert "__all__" in names, f"{package.name}/__init__.py has no __all__"


@pytest.mark.parametrize(
    "face", ["workbench", "workbench.core", "workbench.model", "workbench.interp",
             "workbench.safety", "workbench.report", "workbench.audit"],
)  # fmt: skip
def test_faces_import_on_first_use_and_export_what_they_list(face):
    """Each face's `__all__` is exactly its EXPORTS table, and every name resolves (importing the
    submodule on first use: `import workbench` alone loads no torch, tests/test_cli_help.py)."""
    module = importlib.import_module(face)
    listed = [name for names in module.EXPORTS.values() for name in names]
    assert sorted(module.__all__) == sorted(listed) and len(set(listed)) == len(listed)
    for name in module.__all__:
        assert getattr(module, name) is not None and name in dir(module)


def test_layer_order_in_the_readme_matches_the_contract():
    """README's map and pyproject's layers contract name the same layers in the same order
    (bottom up in the README; siblings of one layer in either order)."""
    root = PACKAGE.parent
    contract = re.search(r"layers = \[(.*?)\]", (root / "pyproject.toml").read_text(), re.S).group(
        1
    )
    groups = [re.findall(r"workbench\.(\w+)", line) for line in re.findall(r'"([^"]+)"', contract)]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## How it is built") :]
    layer_names = {name for group in groups for name in group}
    shown = [m for m in re.findall(r"^\| `(\w+)(?:/|\.py)?` ", section, re.M) if m in layer_names]
    expected, first = [], 0
    for group in reversed(groups):
        expected.append(set(group))
    got = []
    for group in expected:
        got.append(set(shown[first : first + len(group)]))
        first += len(group)
    assert got == expected and first == len(shown), (shown, groups)


def test_no_import_cycle_anywhere_in_the_package():
    """Module by module (package faces included): no group of modules imports each other round."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    graph = grimp.build_graph("workbench")
    modules = sorted(m for m in graph.modules if m.startswith("workbench"))
    edges = {
        m: sorted(
            i for i in graph.find_modules_directly_imported_by(m) if i.startswith("workbench")
        )
        for m in modules
    }
    # Tarjan's strongly connected components, iteratively: a component of two or more is a cycle.
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    assert len(modules) > 50 and not cycles, cycles
