"""The audit layer: batch audits that resume after a crash. The toxicity audit as one call
(`audit_toxicity`), the bias, ToxiGen, counterfactual and capability audits, the conditions they
compare (baseline, steering, ablation, the prompting baseline) and the shared sharded loop. It
imports every layer below it; the CLI and the dashboard call it."""

from ..core.faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".conditions": ("Condition", "conditions_for", "instructed", "intervention"),
    ".kinds": (
        "run_bias_audit",
        "run_capability_audit",
        "run_counterfactual_audit",
        "run_toxigen_audit",
    ),
    ".runner": ("run_sharded",),
    ".settings": ("check_settings", "model_settings"),
    ".toxicity": (
        "ToxicityAuditConfig",
        "ToxicityAuditOptions",
        "ToxicityAuditRun",
        "audit_toxicity",
        "run_checked",
        "run_toxicity_audit",
    ),
}

__all__ = [
    # the toxicity audit, as the CLI runs it
    "audit_toxicity", "ToxicityAuditOptions", "ToxicityAuditRun", "ToxicityAuditConfig",
    "run_checked", "run_toxicity_audit",
    # the other audits
    "run_bias_audit", "run_toxigen_audit", "run_counterfactual_audit", "run_capability_audit",
    # conditions and the shared loop
    "Condition", "conditions_for", "instructed", "intervention", "run_sharded",
    "check_settings", "model_settings",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
