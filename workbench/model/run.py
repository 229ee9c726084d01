"""The hooked forward pass: register hooks, run the model, remove the hooks. Written once, here.

    with hooks(model, [("blocks.3.hook_resid_post", fn)]):       # TransformerLens' bridge.hooks()
        ...                                                     # every forward and generate sees fn
    logits = forward(model, ids, fwd_hooks=[(name, fn), ...])   # one pass; hooks gone afterwards
    acts = record(model, ids, {"blocks.3.attn.hook_z"})         # one pass, named activations kept

A hook function is TransformerLens' ``fn(activation, hook)``: it returns None to leave the
activation as it is, or a tensor to replace it (patching, steering, ablation). Hooks are
given by exact hook names here; `workbench.model.hooks.apply_hooks` takes patterns
("resid_post", globs) and comes here. Analyses never call the Hugging Face model or the
bridge's hook dictionary themselves: every forward pass with hooks goes through `forward`
(generation and likelihoods run in this layer too).

`forward` runs the Hugging Face model that the bridge wraps, with every bridge component
that carries no hook swapped back to its plain HF module for the pass
(`bypass_unhooked_bridges`): the numbers are bit-identical to the fully wrapped model
(checked on tiny-phi and smollm2) and the pass runs at plain HF speed.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from jaxtyping import Float, Int

HookFn = Callable[[torch.Tensor, object], "torch.Tensor | None"]


class StopForward(Exception):
    """Raised by a hook function to end the forward pass there (the rest is not needed);
    `forward` then returns None."""


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
def hooks(model, fwd_hooks: Iterable[tuple[str, HookFn]] = ()) -> Iterator[None]:
    """Inside the block, `fn(activation, hook)` runs at each named hook point, in every forward
    pass and generation step; the hooks are removed on exit, also when the block raises.

    fwd_hooks: (exact hook name, fn) pairs, registered in order (two functions on one point run
    in that order)."""
    hook_dict = model.bridge.hook_dict
    handles = []
    try:
        for name, fn in fwd_hooks:
            handles.append(register_forward(hook_dict[name], fn, name))
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward(
    model,
    input_ids: Int[torch.Tensor, "batch pos"],
    *,
    fwd_hooks: Iterable[tuple[str, HookFn]] = (),
    attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    use_cache: bool | None = None,
    grad: bool = False,
    embeddings: Float[torch.Tensor, "batch pos d_model"] | None = None,
) -> Float[torch.Tensor, "batch pos vocab"] | None:
    """One forward pass of `model` with `fwd_hooks` applied: the logits, or None when a hook
    raised `StopForward`.

    attention_mask, use_cache: passed to the Hugging Face model when given.
    grad: build the autograd graph, for a backward pass the caller runs on the result. The
        model's parameters are frozen for the pass (their gradients would cost as much memory as
        the weights), so gradients start at the input embeddings, which is all hooked
        activations need.
    embeddings: input embeddings to run instead of those of `input_ids` (the embedding's own
        hooks still fire, on these values); `input_ids` still gives the batch its shape.
    """
    extra = {}
    if attention_mask is not None:
        extra["attention_mask"] = attention_mask
    if use_cache is not None:
        extra["use_cache"] = use_cache
    hf_model = model.hf_model
    frozen = [p for p in hf_model.parameters() if p.requires_grad] if grad else []
    embedding_hooks = []

    def input_embeddings(_module, _inputs, output):
        chosen = embeddings if embeddings is not None else output
        return chosen.requires_grad_() if grad else chosen

    for parameter in frozen:
        parameter.requires_grad_(False)
    if grad or embeddings is not None:
        embed = hf_model.get_input_embeddings()
        embedding_hooks.append(embed.register_forward_hook(input_embeddings))
    try:
        with (
            hooks(model, fwd_hooks),
            bypass_unhooked_bridges(model),
            torch.set_grad_enabled(grad),
        ):
            return hf_model(input_ids, **extra).logits
    except StopForward:
        return None
    finally:
        for handle in embedding_hooks:
            handle.remove()
        for parameter in frozen:
            parameter.requires_grad_(True)
        if grad:
            hf_model.zero_grad(set_to_none=True)


def record(
    model, input_ids: Int[torch.Tensor, "batch pos"], names: Iterable[str]
) -> dict[str, torch.Tensor]:
    """One forward pass (no gradient) keeping a detached copy of each named activation, in the
    layout a hook function sees (``hook_z``: [batch, pos, head, d_head])."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name: str) -> HookFn:
        return lambda activation, _hook: kept.__setitem__(name, activation.detach().clone())

    forward(model, input_ids, fwd_hooks=[(name, keep(name)) for name in names])
    return kept


def input_embeddings(
    model, input_ids: Int[torch.Tensor, "batch pos"]
) -> Float[torch.Tensor, "batch pos d_model"]:
    """The model's input embeddings of `input_ids`, without gradient (for example the two ends of
    an integration path, run through `forward(..., embeddings=...)`)."""
    with torch.no_grad():
        return model.hf_model.get_input_embeddings()(input_ids)


@contextlib.contextmanager
def split_qkv_inputs(model) -> Iterator[None]:
    """Inside the block each head reads its own copy of the residual input (the hook points
    ``blocks.L.hook_q_input``/``k``/``v``, [batch, pos, head, d_model]); switched back on exit."""
    model.bridge.set_use_split_qkv_input(True)
    try:
        yield
    finally:
        model.bridge.set_use_split_qkv_input(False)


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
    # lazy: TransformerLens takes ~2 s to import; only model work needs it
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
    # lazy: TransformerLens takes ~2 s to import; only model work needs it
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
