"""The bottom layer: errors, paths, provenance, statistics, storage, remote folders, input readers
and argument checks. It imports no other layer and holds no model code."""

from .faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".agreement": ("agreement", "spearman"),
    ".checks": ("check_args", "check_context"),
    ".datasets": (
        "BiasPair",
        "LabeledText",
        "PatchPair",
        "TextRecord",
        "read_bias_pairs",
        "read_labeled",
        "read_patch_pairs",
        "read_texts",
        "read_toxigen",
    ),
    ".errors": (
        "CacheTooLargeError",
        "HookNameError",
        "InputError",
        "ModelUnavailableError",
        "WorkbenchError",
    ),
    ".paths": ("cache_root", "package_data"),
    ".provenance": ("file_sha256", "versions"),
    ".remote": ("is_url", "staged"),
    ".stats": (
        "Estimate",
        "auroc",
        "auroc_interval",
        "calibration",
        "difference_of_means",
        "estimate_from_dict",
        "mean",
        "paired_difference",
        "proportion",
        "ratio",
        "share",
    ),
    ".storage": ("ShardIndex", "folder_lock", "write_atomically"),
}

__all__ = [
    # errors
    "WorkbenchError", "InputError", "HookNameError", "ModelUnavailableError", "CacheTooLargeError",
    # readers (one-line errors naming file, line and field)
    "TextRecord", "LabeledText", "BiasPair", "PatchPair",
    "read_texts", "read_labeled", "read_toxigen", "read_bias_pairs", "read_patch_pairs",
    # statistics: every number with its interval, method and n
    "Estimate", "proportion", "share", "mean", "ratio", "difference_of_means", "paired_difference",
    "auroc", "auroc_interval", "calibration", "agreement", "spearman", "estimate_from_dict",
    # provenance, storage, remote folders, paths, argument checks
    "versions", "file_sha256", "folder_lock", "write_atomically", "ShardIndex", "is_url", "staged",
    "cache_root", "package_data", "check_args", "check_context",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
