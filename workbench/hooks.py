"""Hook names: listing, validating (with close-match suggestions) and applying hooks.

Hook names are TransformerLens' (``blocks.3.hook_resid_post``, ``blocks.3.attn.hook_z``,
``blocks.3.attn.hook_pattern``, ``blocks.3.mlp.hook_post``, ``ln_final.hook_normalized``...).
Patterns accepted wherever hooks are chosen:

- an exact name: ``blocks.3.hook_resid_post``
- a short name matching every layer: ``resid_post``, ``hook_resid_post``, ``attn.hook_z``
- a glob: ``blocks.1?.hook_resid_post``, ``blocks.*.mlp.hook_post``
- ``all`` or ``*``: every hook that fires in a forward pass (aliases counted once)
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .errors import HookNameError

# Hooks whose tensors are [batch, head, query_pos, key_pos] rather than [batch, pos, ...].
PATTERN_HOOK_SUFFIXES = ("hook_pattern", "hook_attn_scores")


@dataclass(frozen=True)
class HookInfo:
    """One hook point that fires in a forward pass.

    order: firing order in a forward pass (aliases of one module share it).
    shape: activation shape for one text of `probe_len` tokens, batch dim included.
    """

    name: str
    order: int
    shape: tuple[int, ...]
    probe_len: int

    @property
    def is_pattern(self) -> bool:
        return self.name.endswith(PATTERN_HOOK_SUFFIXES)


def hook_table(model) -> dict[str, HookInfo]:
    """Every hook name that fires in a forward pass, with its firing order and shape.

    Found once per model by a forward pass on a 5-token probe and cached on the model.
    """
    if model.hook_table_cache is not None:
        return model.hook_table_cache
    probe_len = 5
    hook_dict = model.bridge.hook_dict
    fired: dict[int, tuple[int, tuple[int, ...]]] = {}
    handles = []

    def record(module, _inputs, output):
        if id(module) not in fired and isinstance(output, torch.Tensor):
            fired[id(module)] = (len(fired), tuple(output.shape))

    for module in {id(m): m for m in hook_dict.values()}.values():
        handles.append(module.register_forward_hook(record))
    token = model.tokenizer.eos_token_id or 0
    try:
        with torch.no_grad():
            model.hf_model(torch.full((1, probe_len), token, device=model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    table = {}
    for name, module in hook_dict.items():
        if id(module) in fired:
            order, shape = fired[id(module)]
            table[name] = HookInfo(name, order, shape, probe_len)
    model.hook_table_cache = dict(sorted(table.items(), key=lambda item: (item[1].order, item[0])))
    return model.hook_table_cache


def hook_names(model, aliases: bool = False) -> list[str]:
    """Hook names that fire, in firing order; one name per hook point unless `aliases`."""
    table = hook_table(model)
    if aliases:
        return list(table)
    by_order: dict[int, list[str]] = {}
    for name, info in table.items():
        by_order.setdefault(info.order, []).append(name)
    return [_preferred_alias(names) for _, names in sorted(by_order.items())]


def _preferred_alias(names: list[str]) -> str:
    """Prefer TransformerLens' classic names (hook_resid_post) over generic hook_in/hook_out."""
    classic = [n for n in names if not n.endswith((".hook_in", ".hook_out"))]
    return sorted(classic or names, key=len)[0]


def resolve_hooks(model, patterns: str | Sequence[str]) -> list[str]:
    """Expand hook patterns into hook names, in firing order, without duplicates.

    Raises `HookNameError` naming the pattern and the closest real names.
    """
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    table = hook_table(model)
    all_names = list(table)
    chosen: list[str] = []
    for raw in patterns:
        pattern = raw.strip()
        matches = _match(pattern, all_names, hook_names(model))
        if not matches:
            raise HookNameError(_no_match_message(model, pattern, all_names))
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen, key=lambda name: (table[name].order, name))


def _match(pattern: str, all_names: list[str], canonical: list[str]) -> list[str]:
    if pattern in ("all", "*"):
        return canonical
    if pattern in all_names:
        return [pattern]
    if any(ch in pattern for ch in "*?["):
        return [n for n in all_names if fnmatch.fnmatchcase(n, pattern)]
    short = pattern if pattern.startswith("hook_") or ".hook_" in pattern else _with_hook_prefix(pattern)
    return [n for n in canonical if n == short or n.endswith("." + short)] or \
           [n for n in all_names if n == short or n.endswith("." + short)]


def _with_hook_prefix(pattern: str) -> str:
    head, _, last = pattern.rpartition(".")
    return f"{head}.hook_{last}" if head else f"hook_{last}"


def _no_match_message(model, pattern: str, all_names: list[str]) -> str:
    if "resid_mid" in pattern and model.info.parallel_attn_mlp:
        return (f"hook {pattern!r} does not exist: {model.info.architecture} runs attention and MLP in "
                "parallel on one shared LayerNorm, so there is no residual stream between them. "
                "Use hook_resid_pre (what both read), hook_attn_out / hook_mlp_out (what each adds) "
                "or hook_resid_post")
    shorts = sorted({n.split(".", 2)[-1] if n.startswith("blocks.") else n for n in all_names})
    close = difflib.get_close_matches(pattern, all_names, n=3, cutoff=0.6)
    close += [s for s in difflib.get_close_matches(pattern, shorts, n=3, cutoff=0.5) if s not in close]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:4])}?" if close else ""
    return (f"no hook matches {pattern!r} in {model.info.name}{hint} "
            "(`workbench hooks --model NAME` lists them all)")


HookFn = Callable[[torch.Tensor, object], "torch.Tensor | None"]


@contextlib.contextmanager
def apply_hooks(model, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
    """Run `fn(activation, hook)` at each named hook inside the block; remove them on exit.

    `fn` may return a tensor to replace the activation (patching, steering) or None
    to leave it unchanged. Works for forward passes and for `generate`. The hooks
    are removed even when the block raises, so the model is always left clean.
    """
    hook_dict = model.bridge.hook_dict
    handles = []
    try:
        for pattern, fn in hooks:
            for name in resolve_hooks(model, [pattern]):
                point = hook_dict[name]
                handles.append(point.register_forward_hook(_wrap(fn, point)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _wrap(fn: HookFn, point):
    def forward_hook(_module, _inputs, output):
        return fn(output, point)

    return forward_hook
