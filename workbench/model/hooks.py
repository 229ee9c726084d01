"""Hook names: listing, validating (with close-match suggestions) and applying hooks by pattern.

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

from ..core.errors import HookNameError
from . import run
from .run import HookAlias, HookFn

PROBE_LENGTHS = (5, 7)  # two probe lengths tell which dimensions are positions


@dataclass(frozen=True)
class HookInfo:
    """One hook point that fires in a forward pass.

    order: firing order in a forward pass (aliases of one module share it).
    shape: activation shape for one text of `PROBE_LENGTHS[0]` tokens, batch dim included.
    pos_dims: which dimensions are token positions (found by probing two lengths):
        one for most hooks ([batch, pos, ...], or [batch, head, pos, d_head] for some
        rotary hooks), two for attention patterns and scores ([batch, head, q, k]).
    """

    name: str
    order: int
    shape: tuple[int, ...]
    pos_dims: tuple[int, ...]

    @property
    def is_pattern(self) -> bool:
        """True for [batch, head, query_pos, key_pos] tensors (two position dimensions)."""
        return len(self.pos_dims) > 1


def hook_table(model) -> dict[str, HookInfo]:
    """Every hook name that fires in a forward pass, with its firing order, shape and position dims.

    Found once per model by forward passes on two short probes and cached on the model.
    """
    if model.hook_table_cache is not None:
        return model.hook_table_cache
    hook_dict = model.bridge.hook_dict
    runs = [_probe(model, length) for length in PROBE_LENGTHS]
    table = {}
    for name, module in hook_dict.items():
        key = id(module)
        if all(key in run for run in runs):
            (order, shape), (_, other) = runs[0][key], runs[1][key]
            pos_dims = (
                tuple(d for d, (a, b) in enumerate(zip(shape, other)) if a != b)
                if len(shape) == len(other)
                else ()
            )
            table[name] = HookInfo(name, order, shape, pos_dims)
    model.hook_table_cache = dict(sorted(table.items(), key=lambda item: (item[1].order, item[0])))
    return model.hook_table_cache


def _probe(model, length: int) -> dict[int, tuple[int, tuple[int, ...]]]:
    """Forward `length` copies of one token; record each hook point's firing order and shape,
    keyed by the point's id (the aliases of a point share it)."""
    fired: dict[int, tuple[int, tuple[int, ...]]] = {}

    def recorder(key: int) -> run.HookFn:
        def record(value, _hook):
            if key not in fired and isinstance(value, torch.Tensor):
                fired[key] = (len(fired), tuple(value.shape))

        return record

    first_name = {}  # one name per hook point
    for name, point in model.bridge.hook_dict.items():
        first_name.setdefault(id(point), name)
    token = model.tokenizer.eos_token_id or 0
    ids = torch.full((1, length), token, device=model.device)
    run.forward(
        model,
        ids,
        fwd_hooks=[(name, recorder(key)) for key, name in first_name.items()],
        attention_mask=torch.ones_like(ids),  # spares HF a data-dependent check (meta weights)
        use_cache=False,
    )
    return fired


def hook_names(model, aliases: bool = False) -> list[str]:
    """Hook names that fire, in firing order; one name per hook point unless `aliases`."""
    if aliases:
        return list(hook_table(model))
    return list(hook_aliases(model))


def hook_aliases(model) -> dict[str, list[str]]:
    """{canonical name: the other names of the same hook point}, in firing order."""
    by_order: dict[int, list[str]] = {}
    for name, info in hook_table(model).items():
        by_order.setdefault(info.order, []).append(name)
    aliases = {}
    for _, names in sorted(by_order.items()):
        canonical = _preferred_alias(names)
        aliases[canonical] = sorted(n for n in names if n != canonical)
    return aliases


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
    short = (
        pattern
        if pattern.startswith("hook_") or ".hook_" in pattern
        else _with_hook_prefix(pattern)
    )
    return [n for n in canonical if n == short or n.endswith("." + short)] or [
        n for n in all_names if n == short or n.endswith("." + short)
    ]


def _with_hook_prefix(pattern: str) -> str:
    head, _, last = pattern.rpartition(".")
    return f"{head}.hook_{last}" if head else f"hook_{last}"


def _no_match_message(model, pattern: str, all_names: list[str]) -> str:
    if "resid_mid" in pattern and model.info.parallel_attn_mlp:
        return (
            f"hook {pattern!r} does not exist: {model.info.architecture} runs attention and MLP in "
            "parallel on one shared LayerNorm, so there is no residual stream between them. "
            "Use hook_resid_pre (what both read), hook_attn_out / hook_mlp_out (what each adds) "
            "or hook_resid_post"
        )
    shorts = sorted({n.split(".", 2)[-1] if n.startswith("blocks.") else n for n in all_names})
    close = difflib.get_close_matches(pattern, all_names, n=3, cutoff=0.6)
    close += [
        s for s in difflib.get_close_matches(pattern, shorts, n=3, cutoff=0.5) if s not in close
    ]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:4])}?" if close else ""
    return (
        f"no hook matches {pattern!r} in {model.info.name}{hint} "
        "(`workbench hooks --model NAME` lists them all)"
    )


def as_registered(hooks, hook_dict: dict) -> list:
    """TransformerLens (name or filter, fn) hook pairs, as (name, fn) pairs whose fn sees the point
    under `name`. A filter becomes one pair per hook point it matches, named by the matching
    name (TransformerLens' classic one when several aliases of a point match)."""
    wrapped = []
    for name, fn in hooks:
        if isinstance(name, str):
            wrapped.append((name, _named(fn, name)))
            continue
        by_point: dict[int, list[str]] = {}
        for candidate, point in hook_dict.items():
            if name(candidate):
                by_point.setdefault(id(point), []).append(candidate)
        wrapped += [
            (chosen, _named(fn, chosen))
            for chosen in (_preferred_alias(n) for n in by_point.values())
        ]
    return wrapped


def _named(fn: Callable, name: str) -> Callable:
    def hook(activation, hook, **kwargs):
        return fn(activation, hook=HookAlias(hook, name), **kwargs)

    return hook


@contextlib.contextmanager
def apply_hooks(model, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
    """Run `fn(activation, hook)` at each hook matching each pattern inside the block; remove
    them on exit.

    `fn` may return a tensor to replace the activation (patching, steering) or None
    to leave it unchanged. Works for forward passes and for `generate`. The hooks
    are removed even when the block raises, so the model is always left clean.
    """
    resolved = [(name, fn) for pattern, fn in hooks for name in resolve_hooks(model, [pattern])]
    with run.hooks(model, resolved):
        yield


def has_hook_point(model, name: str) -> bool:
    """Whether the model has a hook point of that exact name (it may not fire in every pass)."""
    return name in model.bridge.hook_dict
