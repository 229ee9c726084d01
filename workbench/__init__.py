"""workbench: interpretability and safety tools for Phi-2 and friends, on hooked models.

Start with `workbench.load("smollm2-135m")` (the embedded default) or
`workbench.load("phi-2")`, then `cache_activations`, `generate`, ...

The library is built in layers, each importing only from those below it (README, "How it is
built"): `core` < `model` < `interp` (and `viz`) < `safety` < `report` < `audit` < `cli`,
`dashboard`. This face re-exports the names a first session needs; each layer's own face
(`workbench.interp`, `workbench.safety`, ...) lists the rest.
"""

from .core.faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".core.errors": (
        "CacheTooLargeError",
        "HookNameError",
        "InputError",
        "ModelUnavailableError",
        "WorkbenchError",
    ),
    ".model.activations": ("cache_activations", "cache_tokens"),
    ".model.corpus_cache": ("open_cache",),
    ".model.generation": ("format_prompt", "generate"),
    ".model.hooks": ("apply_hooks", "hook_names", "resolve_hooks"),
    ".model.loading": ("LoadedModel", "ModelInfo", "fetch", "list_models", "load"),
    ".model.registry": ("DEFAULT_MODEL",),
    ".safety.interventions": ("load_intervention",),
    ".interp.sae": ("SAE", "load_sae"),
    ".interp.sae_train": ("train_sae",),
    ".interp.sae_eval": ("evaluate_sae",),
    ".model.cache_plan": ("chunk_token_ids",),
}

__version__ = "0.1.0"

__all__ = [
    # loading
    "DEFAULT_MODEL", "LoadedModel", "ModelInfo", "load", "fetch", "list_models",
    # hooks, caching, generation
    "hook_names", "resolve_hooks", "apply_hooks", "cache_activations", "cache_tokens", "open_cache",
    "generate", "format_prompt",
    # a saved or shipped intervention (workbench.safety.interventions)
    "load_intervention",
    # sparse autoencoders and transcoders (workbench.interp.sae*)
    "SAE", "load_sae", "train_sae", "evaluate_sae", "chunk_token_ids",
    # errors
    "WorkbenchError", "InputError", "HookNameError", "ModelUnavailableError", "CacheTooLargeError",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
