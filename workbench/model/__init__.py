"""The model layer: loading (the registry and local builds), hook names, THE hooked forward pass
(`run`), tokens, generation, likelihoods, memory estimates, the corpus activation cache, and Ray.
It imports only `workbench.core`."""

from ..core.faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".activations": ("cache_activations", "cache_tokens"),
    ".corpus_cache": ("CorpusCache", "DiskCorpusCache", "open_cache"),
    ".distributed": ("LocalExecutor", "RayExecutor", "executor_for"),
    ".generation": ("Generation", "format_prompt", "generate"),
    ".hooks": (
        "HookInfo",
        "apply_hooks",
        "hook_aliases",
        "hook_names",
        "hook_table",
        "resolve_hooks",
    ),
    ".likelihood": ("continuation_logprobs", "token_logprobs"),
    ".loading": ("LoadedModel", "ModelInfo", "fetch", "list_models", "load"),
    ".registry": ("DEFAULT_MODEL", "REGISTRY", "ModelSpec"),
    ".memory": ("MemoryEstimate", "check_fits", "forward_estimate", "load_estimate", "model_shape"),
    ".run": ("StopForward", "forward", "record"),
    ".tokens": (
        "TokenizationWarning",
        "check_layer",
        "tokenize_texts",
        "single_token_id",
        "str_tokens",
        "to_tokens",
    ),
}

__all__ = [
    # loading
    "DEFAULT_MODEL", "REGISTRY", "ModelSpec", "ModelInfo", "LoadedModel", "load", "fetch",
    "list_models",
    # hooks and the one hooked forward pass (run.hooks is the context manager)
    "HookInfo", "hook_table", "hook_names", "hook_aliases", "resolve_hooks", "apply_hooks",
    "forward", "record", "StopForward",
    # tokens, generation, likelihoods
    "to_tokens", "tokenize_texts", "str_tokens", "single_token_id", "check_layer",
    "TokenizationWarning", "Generation", "generate",
    "format_prompt", "token_logprobs", "continuation_logprobs",
    # memory, the corpus cache, shards on Ray
    "MemoryEstimate", "model_shape", "load_estimate", "forward_estimate", "check_fits",
    "cache_activations", "cache_tokens", "CorpusCache", "DiskCorpusCache", "open_cache",
    "LocalExecutor", "RayExecutor", "executor_for",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
