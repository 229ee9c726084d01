"""The interpretability layer: attention heads, the logit lens and direct logit attribution,
steering and directional ablation, linear and sparse probes, activation / path / attribution
patching (with their self-checks), edge attribution, and sparse autoencoders / transcoders
(trained from caches, evaluated, read as feature cards). It imports `core` and `model` only."""

from ..core.faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".attention": (
        "AttentionPatterns",
        "HeadScores",
        "attention_patterns",
        "head_scores",
        "transformer_lens_scores",
    ),
    ".attribution": ("METHODS", "attribute", "attribution_patch", "self_check"),
    ".edges": ("EdgeResult", "edge_attribution"),
    ".lens": (
        "LensGrid",
        "LogitAttribution",
        "LogitLens",
        "direct_logit_attribution",
        "logit_lens",
        "logit_lens_grid",
    ),
    ".patch_results": ("PatchingResult", "SelfCheck"),
    ".patching": (
        "KINDS",
        "PatchingTask",
        "activation_patch",
        "patch_task",
        "path_patch",
        "prepare",
    ),
    ".probes": ("Probe", "ProbeSweep", "probe_scores", "token_scores", "train_probes"),
    ".sparse_probes": ("SparseProbeTable", "sparse_probes"),
    ".sae": ("SAE", "load_sae"),
    ".sae_config": ("SAEConfig",),
    ".sae_eval": ("SAEEvaluation", "evaluate_sae", "spliced_hooks"),
    ".sae_features": (
        "FeatureCard",
        "FeatureIndex",
        "feature_card",
        "index_features",
        "load_feature_index",
        "search_features",
    ),
    ".sae_formats": ("fetch_sae",),
    ".sae_train": ("TrainOptions", "train_sae"),
    ".steering": (
        "ContrastPair",
        "SteeringVector",
        "ablate",
        "actadd_vector",
        "logprob_gap",
        "mean_difference_vector",
        "read_pairs",
        "steer",
        "steered_generations",
        "sweep",
    ),
}

__all__ = [
    # attention heads
    "AttentionPatterns", "HeadScores", "attention_patterns", "head_scores",
    "transformer_lens_scores",
    # logit lens and direct logit attribution
    "LogitLens", "LensGrid", "LogitAttribution", "logit_lens", "logit_lens_grid",
    "direct_logit_attribution",
    # patching: exact, path, attribution (AtP, AtP*, EAP-IG) with a self-check, edges
    "KINDS", "METHODS", "PatchingTask", "PatchingResult", "SelfCheck", "prepare",
    "activation_patch", "patch_task", "path_patch", "attribution_patch", "attribute",
    "self_check", "EdgeResult", "edge_attribution",
    # probes
    "Probe", "ProbeSweep", "train_probes", "probe_scores", "token_scores", "SparseProbeTable",
    "sparse_probes",
    # sparse autoencoders and transcoders: train, evaluate, read
    "SAE", "SAEConfig", "load_sae", "fetch_sae", "train_sae", "TrainOptions", "evaluate_sae",
    "SAEEvaluation", "spliced_hooks", "FeatureIndex", "FeatureCard", "index_features",
    "load_feature_index", "feature_card", "search_features",
    # steering and ablation
    "ContrastPair", "SteeringVector", "read_pairs", "mean_difference_vector", "actadd_vector",
    "steer", "ablate", "sweep", "logprob_gap", "steered_generations",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
