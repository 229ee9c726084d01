"""Memory, predicted before the work: a load, an activation cache, a patching batch, an attribution pass.

    shape = model_shape("phi-2-shape")                       # from the config alone: nothing is allocated
    load_estimate(shape, "bfloat16").text()                  # "5.18 GiB of weights + 0.45 GiB process = 5.63 GiB"
    check_fits(forward_estimate(shape, "bfloat16", batch=8, seq=512), "cpu", "--batch-size 4")

Every estimate is a `MemoryEstimate`: total bytes and the parts that make it up, so a refusal can
say what would not fit and what to change. The formulas count the tensors that dominate (weights,
the logits, one layer's attention scores and MLP activations, or every layer's saved activations
for a backward pass) and add the process's own baseline (Python, torch and the tokenizer: measured
about 0.45 GiB on CPU). `bench/phi2_shape.py` prints each estimate beside the peak RSS it measures
at Phi-2's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil
import torch

from ..core.errors import CacheTooLargeError, ModelUnavailableError
from .builds import phi2_config
from .loading import parse_dtype, resolve_folder, spec_for

# python + torch + tokenizer, measured on CPU before any weights (bench/phi2_shape.py)
PROCESS_BYTES = int(0.45 * 2**30)
FIT_FRACTION = 0.8  # use at most this share of the free memory


@dataclass(frozen=True)
class ModelShape:
    """What decides memory: parameter count and the widths of the activations."""

    name: str
    n_params: int
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_vocab: int
    n_ctx: int

    @classmethod
    def from_info(cls, info) -> "ModelShape":
        return cls(
            info.name,
            info.n_params,
            info.n_layers,
            info.d_model,
            info.d_mlp,
            info.n_heads,
            info.d_vocab,
            info.n_ctx,
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes of one piece of work, and the parts that make it up."""

    what: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(self.parts.values())

    def text(self) -> str:
        parts = " + ".join(f"{format_bytes(v)} {k}" for k, v in self.parts.items())
        return f"{self.what}: about {format_bytes(self.bytes)} ({parts})"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit in ("GiB", "TiB") else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n} B"


def itemsize(dtype: str | torch.dtype) -> int:
    return torch.empty((), dtype=parse_dtype(dtype)).element_size()


def model_shape(name: str) -> ModelShape:
    """The shape of a registry model, a local folder or a cached hub model, from its config alone:
    the parameter count comes from building the model on the meta device (no memory)."""
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = spec_for(name)
    try:
        config = (
            phi2_config()
            if spec.source == "shape"
            else AutoConfig.from_pretrained(resolve_folder(spec))
        )
    except ModelUnavailableError:
        if spec.name != "phi-2":
            raise
        config = phi2_config()  # Phi-2 itself, not downloaded yet: its config ships with workbench
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    return ModelShape(
        name,
        n_params,
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.vocab_size,
        config.max_position_embeddings,
    )


def load_estimate(shape: ModelShape, dtype: str | torch.dtype) -> MemoryEstimate:
    """Loading: the weights in `dtype`, and the process itself (CPU)."""
    return MemoryEstimate(
        f"loading {shape.name} in {dtype}",
        {"weights": shape.n_params * itemsize(dtype), "process": PROCESS_BYTES},
    )


def forward_estimate(
    shape: ModelShape, dtype: str | torch.dtype, batch: int, seq: int
) -> MemoryEstimate:
    """One no-grad forward of batch x seq tokens, beyond the weights: the logits (in the model's
    dtype and once more in float32, as the scorers read them), and the largest layer's
    transients (attention scores and probabilities, the MLP's two activations, a few residual copies)."""
    size = itemsize(dtype)
    tokens = batch * seq
    return MemoryEstimate(
        f"a forward pass of {batch} x {seq} tokens",
        {
            "logits": tokens * shape.d_vocab * (size + 4),
            "one layer's activations": (
                3 * batch * shape.n_heads * seq * seq
                + 2 * tokens * shape.d_mlp
                + 6 * tokens * shape.d_model
            )
            * size,
        },
    )


def backward_estimate(
    shape: ModelShape, dtype: str | torch.dtype, batch: int, seq: int
) -> MemoryEstimate:
    """A forward and backward pass (attribution patching): every layer keeps what its backward
    needs (attention probabilities, MLP activations, residual-sized inputs), plus the logits and
    their gradient; parameters get no gradient (workbench.interp.patching freezes them)."""
    size = itemsize(dtype)
    tokens = batch * seq
    per_layer = (
        2 * batch * shape.n_heads * seq * seq
        + 3 * tokens * shape.d_mlp
        + 10 * tokens * shape.d_model
    ) * size
    return MemoryEstimate(
        f"a forward and backward pass of {batch} x {seq} tokens",
        {
            "saved activations": shape.n_layers * per_layer,
            "logits and their gradient": 3 * tokens * shape.d_vocab * 4,
        },
    )


def cache_estimate(
    shape: ModelShape,
    dtype: str | torch.dtype,
    n_texts: int,
    max_tokens: int,
    widths: list[int],
    positions: str,
) -> MemoryEstimate:
    """An in-memory activation cache: n_texts x (max_tokens for "all", else 1) x sum(widths)
    values in `dtype` (widths: the stored size per position of each hook, e.g. d_model for
    resid_post)."""
    per_text = sum(widths) * (max_tokens if positions == "all" else 1)
    return MemoryEstimate(
        f"an in-memory cache of {n_texts} texts",
        {"activations": n_texts * per_text * itemsize(dtype)},
    )


def available_bytes(device: str | torch.device) -> int:
    """Free memory where tensors would go: the GPU's free memory, or the machine's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]

    return psutil.virtual_memory().available


def check_fits(estimate: MemoryEstimate, device: str | torch.device, alternative: str) -> None:
    """Raise CacheTooLargeError (exit 2 on the command line) when `estimate` exceeds the usable share
    of the free memory on `device`, saying what would not fit and what to do instead."""
    free = available_bytes(device)
    if estimate.bytes > FIT_FRACTION * free:
        raise CacheTooLargeError(
            f"{estimate.text()} would not fit: {format_bytes(free)} is free on "
            f"{torch.device(device)}; {alternative}"
        )


def largest_batch(
    estimate_for_batch, wanted: int, device: str | torch.device, what: str, alternative: str
) -> int:
    """The largest batch <= wanted whose estimate fits the free memory on `device` (halving), or a
    CacheTooLargeError with the batch-1 estimate when not even one fits."""
    free = available_bytes(device)
    batch = wanted
    while batch >= 1:
        if estimate_for_batch(batch).bytes <= FIT_FRACTION * free:
            return batch
        batch = batch // 2 if batch > 1 else 0
    raise CacheTooLargeError(
        f"{what}: {estimate_for_batch(1).text()} would not fit even one at a time: "
        f"{format_bytes(free)} is free on {torch.device(device)}; {alternative}"
    )
