"""SAEs on disk: SAELens' format (ours by default) and sparsify's, read and written exactly.

    sae.save("out/L10")                            # cfg.json + sae_weights.safetensors (SAELens)
    sae.save("out/sp", format="sparsify")          # out/sp/layers.10/{cfg.json, sae.safetensors}
    sae = load_sae("out/L10")                      # either format, found by its files
    sae = load_sae("hf:EleutherAI/sae-SmolLM2-135M-64x", hookpoint="layers.10")   # a hub id

This module reads and writes the files (`read_sae_files`, `write_sae_files`); `load_sae` and
`SAE.save` in `workbench.interp.sae` build the module around them.

SAELens (6.x): ``cfg.json`` (architecture "topk" with ``k``, ``d_in``, ``d_sae``,
``apply_b_dec_to_input``, ``normalize_activations``, ``metadata.{model_name, hook_name}``; the
older flat ``hook_name`` and ``activation_fn_kwargs.k`` are read too) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``). A batchtopk SAE is written as SAELens writes one for inference: "jumprelu" with its
threshold per latent. sparsify (eai-sparsify 1.3): ``<hookpoint>/cfg.json`` (``d_in``, ``k``,
``num_latents``, ``transcode``, ``skip_connection``) and ``<hookpoint>/sae.safetensors``
(``encoder.weight [d_sae, d_in]``, ``encoder.bias``, ``W_dec [d_sae, d_out]``, ``b_dec``,
``W_skip [d_out, d_in]``). sparsify names hookpoints by Hugging Face module (``layers.10`` is the
residual stream after block 10, TransformerLens' ``blocks.10.hook_resid_post``;
``layers.10.mlp`` a transcoder from ``hook_mlp_in`` to ``hook_mlp_out``).

Hub ids are resolved like models: the Hugging Face cache first; a download only through
`fetch_sae` (``workbench sae fetch ID``), never inside a load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from ..core.errors import InputError, ModelUnavailableError
from ..core.storage import write_atomically
from .sae_config import SAEConfig

FORMATS = ("saelens", "sparsify")
SAELENS_WEIGHTS, SPARSIFY_WEIGHTS = "sae_weights.safetensors", "sae.safetensors"


# ----------------------------------------------------------------------------- hook names


def sparsify_hookpoint(cfg: SAEConfig) -> str:
    """sparsify's module name for an SAE's hook (the TransformerLens name where none fits)."""
    resid = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", cfg.hook_name)
    if resid and not cfg.is_transcoder:
        return f"layers.{resid.group(1)}"
    mlp_in = re.fullmatch(r"blocks\.(\d+)\.hook_mlp_in", cfg.hook_name)
    if mlp_in and cfg.hook_name_out == f"blocks.{mlp_in.group(1)}.hook_mlp_out":
        return f"layers.{mlp_in.group(1)}.mlp"
    return cfg.hook_name


def hooks_of_hookpoint(hookpoint: str, transcode: bool) -> tuple[str, str | None]:
    """TransformerLens hook names (in, out) for a sparsify hookpoint."""
    layer = re.fullmatch(r"(?:model\.)?layers\.(\d+)", hookpoint)
    if layer and not transcode:
        return f"blocks.{layer.group(1)}.hook_resid_post", None
    mlp = re.fullmatch(r"(?:model\.)?layers\.(\d+)\.mlp", hookpoint)
    if mlp:
        n = mlp.group(1)
        return (
            (f"blocks.{n}.hook_mlp_in", f"blocks.{n}.hook_mlp_out")
            if transcode
            else (f"blocks.{n}.hook_mlp_out", None)
        )
    return hookpoint, None


# ----------------------------------------------------------------------------- writing


def write_sae_files(
    cfg: SAEConfig, tensors: dict, folder: str | Path, format: str = "saelens"
) -> Path:
    """Write an SAE's config and tensors (SAELens' names) to `folder` (sparsify: to
    `folder/<hookpoint>/`); returns the folder written."""
    if format not in FORMATS:
        raise InputError(f"SAE format must be one of {', '.join(FORMATS)}, not {format!r}")
    folder = Path(folder)
    if format == "sparsify":
        folder = folder / sparsify_hookpoint(cfg)
        tensors = {
            "encoder.weight": tensors["W_enc"].T.contiguous(),
            "encoder.bias": tensors["b_enc"],
            "W_dec": tensors["W_dec"],
            "b_dec": tensors["b_dec"],
            **({"W_skip": tensors["W_skip"].T.contiguous()} if cfg.skip else {}),
        }
        config = {
            "activation": "topk",
            "expansion_factor": max(1, cfg.d_sae // cfg.d_in),
            "normalize_decoder": True,
            "num_latents": cfg.d_sae,
            "k": cfg.k,
            "multi_topk": False,
            "skip_connection": cfg.skip,
            "transcode": cfg.is_transcoder,
            "d_in": cfg.d_in,
            # not sparsify's own keys (its loader drops them): where the SAE belongs
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "hook_name_out": cfg.hook_name_out,
            "workbench": cfg.metadata,
        }
        if cfg.architecture != "topk":
            raise InputError(
                "sparsify's format holds topk SAEs only; save a batchtopk SAE as saelens"
            )
        weights = SPARSIFY_WEIGHTS
    else:
        config = _saelens_config(cfg)
        if cfg.architecture == "batchtopk":
            tensors["threshold"] = torch.full(
                (cfg.d_sae,), cfg.threshold, dtype=tensors["b_enc"].dtype
            )
        weights = SAELENS_WEIGHTS
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / weights, safetensors_bytes(tensors))
    write_atomically(folder / "cfg.json", json.dumps(config, indent=1))
    return folder


def _saelens_config(cfg: SAEConfig) -> dict:
    return {
        "architecture": "jumprelu" if cfg.architecture == "batchtopk" else "topk",
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "d_out": cfg.d_out,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not cfg.is_transcoder,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "k": cfg.k,
        "metadata": {
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "hook_name_out": cfg.hook_name_out,
            "hook_head_index": None,
            "prepend_bos": cfg.prepend_bos,
            "context_size": cfg.context_size,
            "workbench_architecture": cfg.architecture,
            "workbench": cfg.metadata,
        },
    }


# ----------------------------------------------------------------------------- reading


def read_sae_files(path: str | Path, hookpoint: str | None = None) -> tuple[SAEConfig, dict, Path]:
    """(config, tensors under SAELens' names, weights file) from a folder in SAELens' or
    sparsify's format, or from a hub id (``hf:org/name``, or ``org/name`` when no such local
    folder exists) found in the Hugging Face cache.

    hookpoint: the subfolder to read when the folder holds several (sparsify's layout).
    Raises InputError naming the file for anything missing, damaged or inconsistent, and
    ModelUnavailableError (saying how to fetch it) for a hub id not in the cache.
    """
    folder = _resolve(path, hookpoint)
    if (folder / SAELENS_WEIGHTS).is_file():
        return _read_saelens(folder)
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return _read_sparsify(folder)
    inner = (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "cfg.json").is_file())
        if folder.is_dir()
        else []
    )
    if inner:
        raise InputError(
            f"{folder} holds several SAEs ({', '.join(inner[:6])}{', ...' if len(inner) > 6 else ''}): "
            "name one with hookpoint= (--hookpoint)"
        )
    raise InputError(
        f"{folder}: no SAE here (expected cfg.json with {SAELENS_WEIGHTS} (SAELens) or "
        f"{SPARSIFY_WEIGHTS} (sparsify))"
    )


def _resolve(path: str | Path, hookpoint: str | None) -> Path:
    text = str(path)
    local = Path(text).expanduser()
    if not text.startswith("hf:") and (
        local.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", text)
    ):
        if not local.exists():
            raise InputError(f"{local}: no such SAE folder")
        return local / hookpoint if hookpoint else local
    repo = text.removeprefix("hf:")
    snapshot = _hub_snapshot(repo, hookpoint, download=False)
    return snapshot / hookpoint if hookpoint else snapshot


def fetch_sae(repo: str, hookpoint: str | None = None) -> Path:
    """Download an SAE repository (or one hookpoint of it) into the Hugging Face cache."""
    return _hub_snapshot(repo.removeprefix("hf:"), hookpoint, download=True)


def _hub_snapshot(repo: str, hookpoint: str | None, download: bool) -> Path:
    # lazy: reads HF_HUB_OFFLINE when first imported
    from huggingface_hub import constants, snapshot_download

    patterns = [f"{hookpoint}/*"] if hookpoint else None
    try:
        return Path(snapshot_download(repo, local_files_only=True, allow_patterns=patterns))
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        if not download:
            include = f" --include '{hookpoint}/*'" if hookpoint else ""
            raise ModelUnavailableError(
                f"SAE {repo}: not found in the Hugging Face cache {constants.HF_HUB_CACHE} "
                f"(HF_HOME / HF_HUB_CACHE). Fetch it with `workbench sae fetch hf:{repo}"
                f"{' --hookpoint ' + hookpoint if hookpoint else ''}` or `hf download {repo}{include}`, "
                "or pass a local folder"
            ) from None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelUnavailableError(
            f"SAE {repo}: not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading"
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as error:
        raise ModelUnavailableError(
            f"SAE {repo}: download failed ({type(error).__name__}); check the network or pass a local folder"
        ) from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing (an SAE folder needs its cfg.json)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _read_tensors(path: Path, names: list[str], optional: tuple[str, ...] = ()) -> dict:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            present = set(f.keys())
            missing = [n for n in names if n not in present]
            if missing:
                raise InputError(
                    f"{path}: tensor {missing[0]!r} is missing (found {sorted(present)})"
                )
            return {n: f.get_tensor(n) for n in [*names, *optional] if n in present}
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path}: not a readable safetensors file ({error})") from None


def _field(cfg: dict, name: str, path: Path, kind=int):
    value = cfg.get(name)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{path}: field {name!r} must be a whole number, not {value!r}")
    return value


def _read_saelens(folder: Path) -> tuple[SAEConfig, dict, Path]:
    path = folder / "cfg.json"
    raw = _read_json(path)
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    arch = raw.get("architecture", "topk")
    k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
    if arch not in ("topk", "jumprelu"):
        raise InputError(
            f"{path}: architecture {arch!r} is not supported (topk, or jumprelu from batchtopk)"
        )
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise InputError(
            f"{path}: normalize_activations {raw['normalize_activations']!r} is not folded into the "
            "weights; fold it with SAELens first (normalize_activations 'none')"
        )
    d_in, d_sae = _field(raw, "d_in", path), _field(raw, "d_sae", path)
    transcoder_out = meta.get("hook_name_out")
    names = ["W_enc", "b_enc", "W_dec", "b_dec"]
    t = _read_tensors(
        folder / SAELENS_WEIGHTS, names + (["threshold"] if arch == "jumprelu" else []), ("W_skip",)
    )
    d_out = t["W_dec"].shape[-1] if t["W_dec"].dim() == 2 else d_in
    threshold = 0.0
    if arch == "jumprelu":
        thresholds = t["threshold"].float()
        if thresholds.numel() == 0 or not torch.all(thresholds == thresholds[0]):
            raise InputError(
                f"{path}: a jumprelu SAE with one threshold per latent is not supported"
            )
        threshold = float(thresholds[0])
        k = k or meta.get("k") or 1
    if k is None:
        raise InputError(f"{path}: field 'k' is missing (a topk SAE keeps k latents per token)")
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        architecture="batchtopk" if arch == "jumprelu" else "topk",
        hook_name=meta.get("hook_name", raw.get("hook_name", "")) or "",
        hook_name_out=transcoder_out,
        d_out=d_out,
        skip="W_skip" in t,
        model_name=meta.get("model_name", raw.get("model_name", "")) or "",
        threshold=threshold,
        prepend_bos=bool(meta.get("prepend_bos", raw.get("prepend_bos", True))),
        context_size=meta.get("context_size", raw.get("context_size")),
        metadata=meta.get("workbench") or {},
    )
    if raw.get("apply_b_dec_to_input") is False and not cfg.is_transcoder:
        t["__fold_b_dec__"] = torch.ones(())  # `load_sae` folds b_dec into b_enc
    return cfg, t, folder / SAELENS_WEIGHTS


def _read_sparsify(folder: Path) -> tuple[SAEConfig, dict, Path]:
    path = folder / "cfg.json"
    raw = _read_json(path)
    d_in, k = _field(raw, "d_in", path), _field(raw, "k", path)
    if raw.get("activation", "topk") != "topk":
        raise InputError(f"{path}: activation {raw.get('activation')!r} is not supported (topk)")
    t = _read_tensors(
        folder / SPARSIFY_WEIGHTS, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], ("W_skip",)
    )
    transcode = bool(raw.get("transcode", False))
    hook_in, hook_out = hooks_of_hookpoint(folder.name, transcode)
    if raw.get("hook_name"):
        hook_in, hook_out = raw["hook_name"], raw.get("hook_name_out")
    if transcode and hook_out is None:
        hook_out = f"{hook_in}.out"
    tensors = {
        "W_enc": t["encoder.weight"].T.contiguous(),
        "b_enc": t["encoder.bias"],
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
        **({"W_skip": t["W_skip"].T.contiguous()} if "W_skip" in t else {}),
    }
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=tensors["W_enc"].shape[-1],
        k=k,
        hook_name=hook_in,
        hook_name_out=hook_out if transcode else None,
        d_out=tensors["W_dec"].shape[-1] if tensors["W_dec"].dim() == 2 else d_in,
        skip="W_skip" in tensors,
        model_name=raw.get("model_name", "") or "",
        metadata=raw.get("workbench") or {},
    )
    return cfg, tensors, folder / SPARSIFY_WEIGHTS
