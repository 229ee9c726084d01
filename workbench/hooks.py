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
    modules = {id(m): m for m in hook_dict.values()}
    runs = [_probe(model, modules, length) for length in PROBE_LENGTHS]
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


def _probe(model, modules: dict, length: int) -> dict[int, tuple[int, tuple[int, ...]]]:
    """Forward `length` copies of one token; record each hook module's firing order and shape."""
    fired: dict[int, tuple[int, tuple[int, ...]]] = {}

    def record(value, point):
        if id(point) not in fired and isinstance(value, torch.Tensor):
            fired[id(point)] = (len(fired), tuple(value.shape))

    handles = [register_forward(module, record) for module in modules.values()]
    token = model.tokenizer.eos_token_id or 0
    try:
        with torch.no_grad():
            model.hf_model(torch.full((1, length), token, device=model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
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


HookFn = Callable[[torch.Tensor, object], "torch.Tensor | None"]


class HookAlias:
    """A hook point seen under the name a hook function was registered with.

    TransformerLens 4.3's bridge hands hook functions its canonical point, whose `name` can be
    another alias (``blocks.0.hook_out`` for ``blocks.0.hook_resid_post``); code that dispatches
    on ``hook.name`` then breaks. Everything but `name` is the point's own."""

    def __init__(self, point, name: str):
        self._point, self.name = point, name

    def __getattr__(self, attribute: str):
        return getattr(self._point, attribute)

    def __repr__(self) -> str:
        return f"HookAlias({self.name!r} -> {self._point.name!r})"


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


def register_forward(point, fn: HookFn, name: str | None = None):
    """Register `fn(activation, point)` on a hook point, with TransformerLens' semantics
    (`fn` sees the point as `name` when given: HookAlias).

    Some hook points hold a tensor in an internal layout (``hook_z`` sees the
    flattened heads); like TransformerLens' own `add_hook`, the activation is
    converted to the documented layout ([batch, pos, head, d_head]) before `fn`
    sees it, and a returned replacement is converted back. Returns the handle.
    """
    conversion = getattr(point, "hook_conversion", None)
    seen = (
        HookAlias(point, name)
        if name is not None and name != getattr(point, "name", None)
        else point
    )

    def forward_hook(_module, _inputs, output):
        value = conversion.convert(output) if conversion is not None else output
        result = fn(value, seen)
        if result is None:
            return None
        return conversion.revert(result) if conversion is not None else result

    return point.register_forward_hook(forward_hook)


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
                handles.append(register_forward(hook_dict[name], fn, name))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _is_bridge_plumbing(fn) -> bool:
    """TransformerLens' blocks wire 'capture' pre-hooks on their norm bridges at the first forward
    (feeding hook_mlp_in and split-qkv inputs). They are not user hooks: when the norm bridge is
    bypassed they simply do not run, and any hook point they feed is checked on its own."""
    return "_maybe_wire_capture_hooks" in getattr(fn, "__qualname__", "")


def _has_hooks(module: torch.nn.Module) -> bool:
    """True when a hook point or bridge component in the subtree carries a hook.

    Hooks on the plain HF modules inside do not count: those modules run whether or not
    their bridge wrapper is bypassed (transformers installs such hooks itself to capture
    attentions), so they fire either way.
    """
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    for m in module.modules():
        if not isinstance(m, (HookPoint, GeneralizedComponent)):
            continue
        if m._forward_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
        if any(not _is_bridge_plumbing(fn) for fn in m._forward_pre_hooks.values()):
            return True
        if getattr(m, "fwd_hooks", None) or getattr(m, "bwd_hooks", None):
            return True
    return False


@contextlib.contextmanager
def bypass_unhooked_bridges(model) -> Iterator[int]:
    """Inside the block, bridge components with no hook anywhere below them run as plain HF modules.

    The bridge wraps every HF submodule in Python that computes hook-point values
    (norm scales, rotary tables, ...) even when nothing listens, which costs about a
    third of the speed of token-by-token generation on a small model. Here each
    wrapped component whose subtree holds no hook is swapped back to the HF module
    it wraps; components with a hook (say, a steering hook on layer 12) stay wrapped
    whole, so every hook still fires exactly as before. The swap is undone on exit,
    also when the block raises. Yields the number of components bypassed.
    """
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def visit(parent: torch.nn.Module) -> None:
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            original = (
                child._modules.get("_original_component")
                if isinstance(child, GeneralizedComponent)
                else None
            )
            if original is not None and not _has_hooks(child):
                parent._modules[name] = original
                swaps.append((parent, name, child))
                visit(original)
            elif not isinstance(child, GeneralizedComponent):
                visit(child)

    try:
        visit(model.hf_model)
        yield len(swaps)
    finally:
        for parent, name, child in reversed(swaps):
            parent._modules[name] = child
