"""The safety layer: toxicity scorers (lexical, learned, activation probe), paired-sentence bias
(CrowS-Pairs) and counterfactual templates, ToxiGen per group, the capability cost of an
intervention, and where a bias lives in the model. It imports `core`, `model` and `interp`."""

from ..core.faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".bias": (
        "DEFAULT_METRIC",
        "METRICS",
        "CounterfactualResult",
        "CrowsPairsResult",
        "counterfactual",
        "crows_pairs",
        "pair_scores",
        "sentence_logprobs",
    ),
    ".capability": (
        "DEFAULT_HELDOUT",
        "DEFAULT_QA",
        "CapabilityItem",
        "capability_rows",
        "continuation_fluency",
        "perplexity",
        "read_heldout",
        "read_qa",
        "summarise_capability",
    ),
    ".detox": ("expected_max_toxicity", "max_toxicity_change", "toxicity_probability"),
    ".directions": (
        "Direction",
        "direction_from_pairs",
        "direction_from_probe",
        "direction_from_texts",
        "residual_norms",
    ),
    ".interventions": ("Intervention", "generate_under", "load_intervention"),
    ".localise": ("BiasLocalisation", "localise_bias", "mean_ablated"),
    ".scorers": (
        "BiLSTMScorer",
        "DetoxifyScorer",
        "ProbeScorer",
        "ProfanityCheckScorer",
        "ScorerEvaluation",
        "ToxicityScorer",
        "evaluate_scorers",
        "fetch_detoxify",
        "make_scorer",
    ),
    ".toxigen": ("toxigen_audit", "toxigen_groups"),
    ".sae_toxicity": (
        "ProbeComparison",
        "TextFeatures",
        "ToxicityFeatures",
        "sparse_vs_dense",
        "text_features",
        "toxicity_features",
    ),
}

__all__ = [
    # toxicity scorers
    "ToxicityScorer", "make_scorer", "ProfanityCheckScorer", "BiLSTMScorer", "DetoxifyScorer",
    "ProbeScorer", "fetch_detoxify", "ScorerEvaluation", "evaluate_scorers",
    # bias: paired sentences and counterfactual templates; ToxiGen per group
    "METRICS", "DEFAULT_METRIC", "CrowsPairsResult", "crows_pairs", "pair_scores",
    "sentence_logprobs", "CounterfactualResult", "counterfactual", "toxigen_audit",
    "toxigen_groups",
    # what an intervention costs
    "CapabilityItem", "DEFAULT_QA", "DEFAULT_HELDOUT", "read_qa", "read_heldout",
    "capability_rows", "continuation_fluency", "summarise_capability", "perplexity",
    # detoxification over K samples per prompt (RealToxicityPrompts' measures)
    "expected_max_toxicity", "toxicity_probability", "max_toxicity_change",
    # interventions (add, ablate, orthogonalise, prompt, conditional: .interventions) and directions
    "Intervention", "load_intervention", "generate_under", "Direction", "direction_from_pairs",
    "direction_from_probe", "direction_from_texts", "residual_norms",
    # an SAE's latents on ToxiGen: sparse vs dense probes, toxicity features
    "TextFeatures", "text_features", "ProbeComparison", "sparse_vs_dense", "ToxicityFeatures",
    "toxicity_features",
    # where a bias lives
    "BiasLocalisation", "localise_bias", "mean_ablated",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
