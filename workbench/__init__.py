"""workbench: interpretability and safety tools for Phi-2 and friends, on hooked models.

Start with `workbench.load("smollm2-135m")` (the embedded default) or
`workbench.load("phi-2")`, then `cache_activations`, `generate`, ...
"""

from .cache import cache_activations, cache_tokens, open_cache
from .errors import (
    CacheTooLargeError,
    HookNameError,
    InputError,
    ModelUnavailableError,
    WorkbenchError,
)
from .generation import format_prompt, generate
from .hooks import apply_hooks, hook_names, resolve_hooks
from .models import DEFAULT_MODEL, LoadedModel, ModelInfo, fetch, list_models, load

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelInfo",
    "load",
    "fetch",
    "list_models",
    "hook_names",
    "resolve_hooks",
    "apply_hooks",
    "cache_activations",
    "cache_tokens",
    "open_cache",
    "generate",
    "format_prompt",
    "WorkbenchError",
    "InputError",
    "HookNameError",
    "ModelUnavailableError",
    "CacheTooLargeError",
]
