"""Directional ablation as a weight edit (Arditi et al. 2024, "Refusal in language models is
mediated by a single direction"): orthogonalise every matrix that writes to the residual stream
against a unit direction r, so the model can never write r.

    with orthogonalised(model, direction):      # edits the weights in place, restores them on exit
        wb.generate(model, "...")
    save_orthogonalised(model, direction, "edited-model")   # a model folder `wb.load` reads

The writers are the token embedding (rows E -> E - (E r) r^T), each attention block's output
projection and each MLP's output projection (W -> W - r (r^T W), b -> b - (b . r) r). Nothing
else writes to the residual stream of the architectures below, so the stream never carries r and
this equals hook-based ablation (`workbench.interp.steering.ablate`, which also projects each
block's input) up to float rounding. Tied input and output embeddings are untied first: only the
embedding is edited, never the unembedding.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch
from jaxtyping import Float
from safetensors.torch import save_file

from ..core.errors import InputError

# For each Hugging Face architecture: the attention and MLP output projections of a decoder layer.
WRITERS = {
    "PhiForCausalLM": ("self_attn.dense", "mlp.fc2"),
    "LlamaForCausalLM": ("self_attn.o_proj", "mlp.down_proj"),
}


def _writers(model) -> tuple[torch.nn.Embedding, list[torch.nn.Linear]]:
    hf = model.hf_model
    kind = type(hf).__name__
    if kind not in WRITERS:
        raise InputError(
            f"orthogonalise knows the residual-stream writers of {', '.join(WRITERS)}, not {kind}; "
            "use the hook-based 'ablate' method instead"
        )
    layers = hf.model.layers
    linears = [layer.get_submodule(name) for layer in layers for name in WRITERS[kind]]
    return hf.model.embed_tokens, linears


def _unit(direction: torch.Tensor, model) -> torch.Tensor:
    direction = direction.detach().double().flatten()
    if direction.shape[0] != model.info.d_model:
        raise InputError(
            f"the direction has {direction.shape[0]} dimensions but {model.info.name} has "
            f"d_model {model.info.d_model}"
        )
    norm = direction.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise InputError("the direction is zero or not finite")
    return direction / norm


@torch.no_grad()
def _edit(model, unit: torch.Tensor) -> list[tuple[torch.nn.Module, str, torch.nn.Parameter]]:
    """Orthogonalise the writers in place (computed in float64); returns what to restore."""
    embedding, linears = _writers(model)
    undo = [(embedding, "weight", embedding.weight)]
    weight = embedding.weight.double()
    r = unit.to(weight.device)
    # a new Parameter, so a tied unembedding keeps the original matrix
    embedding.weight = torch.nn.Parameter(
        (weight - (weight @ r)[:, None] * r[None, :]).to(embedding.weight.dtype),
        requires_grad=False,
    )
    for linear in linears:
        for name in ("weight", "bias"):
            param = getattr(linear, name, None)
            if param is None:
                continue
            undo.append((linear, name, param))
            value = param.double()
            edited = (
                value - r[:, None] * (r @ value)[None, :]
                if name == "weight"
                else (value - (value @ r) * r)
            )
            setattr(linear, name, torch.nn.Parameter(edited.to(param.dtype), requires_grad=False))
    return undo


@contextlib.contextmanager
def orthogonalised(model, direction: Float[torch.Tensor, " d_model"]) -> Iterator[None]:
    """The model with every residual-stream writer orthogonalised against `direction` inside the
    block; the original weights are put back on exit, also when the block raises."""
    undo = _edit(model, _unit(direction, model))
    try:
        yield
    finally:
        for module, name, param in undo:
            setattr(module, name, param)


def _hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The wrapped model's weights under the plain Hugging Face names (the bridge registers each
    HF module under `_original_component` and under aliases; the aliases are left out)."""
    # lazy: transformers takes ~1 s to import; only model work needs it
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        names = set(AutoModelForCausalLM.from_config(model.hf_model.config).state_dict())
    state = {}
    for key, value in model.hf_model.state_dict().items():
        name = key.replace("._original_component", "").replace("_original_component.", "")
        if name in names and name not in state:
            state[name] = value.detach().contiguous().clone()
    missing = names - set(state)
    if missing:
        raise InputError(f"could not find these weights in the loaded model: {sorted(missing)[:3]}")
    return state


def save_orthogonalised(model, direction, folder: str | Path) -> Path:
    """Write the orthogonalised model as a Hugging Face folder (model.safetensors, config,
    tokenizer) that `workbench.load(folder)` reads; the loaded model itself is left unchanged.
    The saved config unties the embeddings: the unembedding keeps the original matrix."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = model.hf_model
    unembedding = hf.lm_head.weight.detach().clone()
    with orthogonalised(model, direction):
        state = _hf_state_dict(model)
    state["lm_head.weight"] = unembedding.contiguous()
    config = hf.config.to_dict()
    config["tie_word_embeddings"] = False
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    if getattr(hf, "generation_config", None) is not None:
        hf.generation_config.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder
