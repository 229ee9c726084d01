"""The report layer: the audit folder's format (written once, in `folder`), summaries with every
interval, text tables, figures and the HTML report. It reads what an audit writes
and never runs one, so it sits below `workbench.audit`; it imports `core` up to `safety`."""

from ..core.faces import lazy_face

# Imported on first use (workbench.core.faces): `workbench --help` loads no torch.
EXPORTS = {
    ".figures": ("audit_figures", "crows_pairs_shares", "steering_card"),
    ".folder": (
        "AUDIT_FORMAT",
        "LOCALISATION_FILE",
        "TOX_PREFIX",
        "is_audit_folder",
        "load_results",
        "read_localisation",
        "read_run",
        "toxicity_column",
    ),
    ".html": ("TITLES", "audit_folders", "build_report"),
    ".summary": ("report_card", "summarise"),
    ".tables": (
        "agreement_rows",
        "before_after_rows",
        "bias_rows",
        "card_findings",
        "card_rows",
        "estimate_text",
        "localisation_rows",
        "summary_rows",
    ),
}

__all__ = [
    # the audit folder's format
    "AUDIT_FORMAT", "TOX_PREFIX", "LOCALISATION_FILE", "toxicity_column", "read_run",
    "load_results", "is_audit_folder", "read_localisation",
    # summaries, tables, figures, HTML
    "summarise", "report_card", "summary_rows", "card_rows", "card_findings", "agreement_rows",
    "bias_rows", "localisation_rows", "before_after_rows", "estimate_text", "audit_figures",
    "crows_pairs_shares", "steering_card", "TITLES", "build_report", "audit_folders",
]  # fmt: skip

__getattr__, __dir__ = lazy_face(__name__, EXPORTS)
