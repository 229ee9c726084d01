"""The audit layer: batch audits that resume after a crash. The toxicity audit as one call
(`audit_toxicity`), the bias, ToxiGen, counterfactual and capability audits, the conditions they
compare (baseline, steering, ablation, the prompting baseline) and the shared sharded loop. It
imports every layer below it; the CLI and the dashboard call it."""

from .conditions import Condition, conditions_for, instructed, intervention
from .kinds import run_bias_audit, run_capability_audit, run_counterfactual_audit, run_toxigen_audit
from .runner import run_sharded
from .settings import check_settings, model_settings
from .toxicity import (
    ToxicityAuditConfig, ToxicityAuditOptions, ToxicityAuditRun, audit_toxicity, run_checked,
    run_toxicity_audit,
)  # fmt: skip

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
