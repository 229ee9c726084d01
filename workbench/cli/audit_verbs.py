"""The batch audits (toxicity, toxigen, counterfactual, bias) and `workbench report`."""

from __future__ import annotations

from .common import (
    ATTRIBUTION_METHODS,
    add_audit_args,
    add_verb,
)


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    audit = verbs.add_parser(
        "audit",
        help="Batch safety audits: toxicity, toxigen, counterfactual, bias.",
        description="Batch safety audits: toxicity, toxigen, counterfactual, bias.",
    )
    audit_verbs = audit.add_subparsers(dest="audit_command", metavar="AUDIT", required=True)
    sub = add_verb(
        audit_verbs,
        "toxicity",
        "Generate continuations and score their toxicity.",
        "audit_commands.cmd_audit_toxicity",
        description="Generate continuations of each prompt (baseline and any steering "
        "conditions), score them, write resumable Parquet shards and a report.",
    )
    sub.add_argument(
        "--prompts", required=True, help=".txt (one per line), .jsonl (--field) or .csv (--column)"
    )
    sub.add_argument("--field", default="text", help="JSONL field holding the prompt")
    sub.add_argument("--column", default=None, help="CSV column holding the prompt (default: text)")
    sub.add_argument(
        "--skip-bad", action="store_true", help="skip bad lines (counted in the summary)"
    )
    sub.add_argument(
        "--scorers",
        default="auto",
        help="comma-separated: auto, profanity-check, toxic-comment-classifier, detoxify[:variant], probe",
    )
    sub.add_argument(
        "--probe",
        action="append",
        default=[],
        help="saved probe folder (repeatable), used by 'probe'",
    )
    sub.add_argument(
        "--detoxify-checkpoint",
        default=None,
        help="local Detoxify checkpoint file (default: the one `workbench fetch detoxify` saved)",
    )
    sub.add_argument(
        "--detoxify-config", default=None, help="local HF config/tokenizer folder for Detoxify"
    )
    sub.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens generated per continuation"
    )
    sub.add_argument(
        "--samples", type=int, default=1, help="1 = greedy; K > 1 = K seeded samples per prompt"
    )
    sub.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (with --samples > 1)"
    )
    sub.add_argument("--seed", type=int, default=0, help="seed of the samples and of the bootstrap")
    sub.add_argument(
        "--common-seeds",
        action="store_true",
        help="every condition samples with the same random numbers (common random numbers), so a "
        "prompt's change from the baseline reflects the condition, not another draw",
    )
    sub.add_argument("--raw", action="store_true", help="no prompt format")
    add_audit_args(sub)
    sub.add_argument(
        "--positive-means",
        choices=["less-toxic", "more-toxic"],
        default="less-toxic",
        help="what a positive --alpha (towards the pairs' 'positive' texts) is meant to do to toxicity, "
        "for the report card's intended / wrong-way shares (default less-toxic)",
    )
    sub.add_argument(
        "--intervention",
        action="append",
        default=[],
        metavar="DIR",
        help="a saved intervention (folder, or a shipped name such as smollm2-135m-detox) audited "
        "as one more condition (repeatable)",
    )
    sub.add_argument(
        "--instruct",
        default=None,
        metavar="TEXT",
        help="the prompting baseline: a condition with TEXT before every prompt, e.g. 'Reply rudely.'",
    )
    sub.add_argument(
        "--instruct-means",
        choices=["more-toxic", "less-toxic"],
        default=None,
        help="what the --instruct instruction is meant to do to toxicity (required with --instruct)",
    )
    sub.add_argument(
        "--qa",
        default=None,
        help="single-token QA set for the capability check "
        "(JSONL question/answer; default probes/qa.jsonl)",
    )
    sub.add_argument(
        "--heldout",
        nargs="+",
        default=None,
        help="held-out neutral corpus files for perplexity (default probes/heldout_neutral.txt)",
    )
    sub.add_argument(
        "--no-capability",
        action="store_true",
        help="skip the capability check (held-out perplexity, QA) that runs with any intervention",
    )
    sub.add_argument(
        "--batch-size", type=int, default=8, help="rows (prompt x sample) per generation batch"
    )
    sub.add_argument(
        "--shard-size", type=int, default=32, help="prompts per result shard (the unit of resume)"
    )

    sub = add_verb(
        audit_verbs,
        "toxigen",
        "Per-group ToxiGen audit: likelihood preference and continuation toxicity.",
        "audit_commands.cmd_audit_toxigen",
        description="Per-group ToxiGen audit: likelihood preference for hateful over "
        "neutral statements, and toxicity of continuations of each group's prompts.",
    )
    sub.add_argument(
        "--data", required=True, help="ToxiGen folder with prompts/ (and demonstrations/)"
    )
    sub.add_argument(
        "--scorer",
        dest="scorers",
        default="auto",
        help="the one text scorer: auto, profanity-check, toxic-comment-classifier, detoxify[:variant]",
    )
    sub.add_argument(
        "--prompts-per-group", type=int, default=4, help="prompts continued per target group"
    )
    sub.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens generated per continuation"
    )
    sub.add_argument(
        "--groups", nargs="*", default=None, help="target groups to audit (default: every group)"
    )
    sub.add_argument("--seed", type=int, default=0, help="prompt choice and bootstrap seed")
    add_audit_args(sub)

    sub = add_verb(
        audit_verbs,
        "counterfactual",
        "Swap a demographic term in templates; compare groups.",
        "audit_commands.cmd_audit_counterfactual",
        description="Fill each template's {group} slot with every group; report per group "
        "the log-probability of chosen continuations and the toxicity of "
        "generated continuations, with gaps from the mean over groups.",
    )
    sub.add_argument(
        "--templates", required=True, help=".txt, one template with a {group} slot per line"
    )
    sub.add_argument("--groups", nargs="+", required=True, help="the terms put in the {group} slot")
    sub.add_argument("--continuations", nargs="+", required=True, help="e.g. ' kind' ' dangerous'")
    sub.add_argument(
        "--scorer",
        dest="scorers",
        default="auto",
        help="the toxicity scorer for generations (auto, profanity-check, toxic-comment-classifier, "
        "detoxify[:variant]), or 'none'",
    )
    sub.add_argument(
        "--max-new-tokens", type=int, default=20, help="tokens generated per filled template"
    )
    sub.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sub.add_argument("--shard-size", type=int, default=8, help="templates per result shard")
    add_audit_args(sub)

    sub = add_verb(
        audit_verbs,
        "bias",
        "CrowS-Pairs-style paired-sentence bias.",
        "audit_commands.cmd_audit_bias",
        description="CrowS-Pairs-style paired-sentence bias: share of pairs where the "
        "model prefers the more-stereotyping sentence (50% = none).",
    )
    sub.add_argument(
        "--pairs", required=True, help="CSV with sent_more, sent_less, stereo_antistereo, bias_type"
    )
    sub.add_argument(
        "--more-column", default="sent_more", help="column of the more-stereotyping sentence"
    )
    sub.add_argument(
        "--less-column", default="sent_less", help="column of the less-stereotyping sentence"
    )
    sub.add_argument(
        "--direction-column",
        default="stereo_antistereo",
        help="column saying 'stereo' or 'antistereo' for each pair",
    )
    sub.add_argument(
        "--type-column",
        default="bias_type",
        help="column of the bias type (race-color, gender, ...)",
    )
    sub.add_argument(
        "--metric",
        choices=["auto", "total", "shared", "mean"],
        default=None,
        help="the headline metric: drives the strongest-preferences table and the paired change "
        "(summary only; every metric's share is always reported). auto (default): total on pairs "
        "of equal token count, shared on the others (README, Bias metrics)",
    )
    sub.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sub.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")
    sub.add_argument("--shard-size", type=int, default=128, help="pairs per result shard")
    sub.add_argument(
        "--cluster-column",
        default=None,
        help="column grouping pairs that are not independent (e.g. occupation): intervals of the "
        "localisation resample whole groups (default: pairs are independent)",
    )
    sub.add_argument(
        "--localise",
        action="store_true",
        help="after the audit, find the heads and MLPs that carry the bias (attribution of each "
        "pair's shared-token gap, checked by exact patching), mean-ablate the top heads and "
        "measure the bias and its cost again; writes localisation.json (README: Where the bias "
        "lives). Needs pairs of equal token length",
    )
    sub.add_argument("--top-k", type=int, default=10, help="heads to mean-ablate (with --localise)")
    sub.add_argument(
        "--attribution",
        choices=[*ATTRIBUTION_METHODS, "exact"],
        default="eap-ig",
        help="how --localise attributes each pair's gap: a gradient method, or exact patching of every "
        "head and MLP on every pair (slower, no approximation; use it when the exact check of "
        "the estimates fails)",
    )
    sub.add_argument(
        "--steps", type=int, default=5, help="integration steps of eap-ig (with --localise)"
    )
    sub.add_argument(
        "--skip-bad",
        action="store_true",
        help="with --localise: leave out pairs of unequal token length (default: stop at the first)",
    )
    sub.add_argument(
        "--heldout",
        default=None,
        help="held-out neutral text for --localise: first half for the ablation means, second half "
        "for perplexity (default probes/heldout_neutral.txt)",
    )
    sub.add_argument(
        "--qa", default=None, help="QA set for the ablation's cost (default probes/qa.jsonl)"
    )
    add_audit_args(
        sub, bootstrap_help="bootstrap resamples for the paired intervals (summary only)"
    )

    sub = verbs.add_parser(
        "report",
        help="Rebuild summary.json and report.html from an audit folder's shards.",
        description="Rebuild summary.json and report.html from an audit folder's shards; given "
        "a folder of audit folders, also write one report.html showing them all.",
    )
    sub.set_defaults(func="audit_commands.cmd_report")
    sub.add_argument(
        "folder", help="an audit folder, a folder of audit folders, or an s3:// URL of one"
    )
    sub.add_argument(
        "--plotly",
        choices=["shared", "inline", "cdn"],
        default="shared",
        help="where the pages find plotly.js (4.8 MB): shared (one plotly.min.js in FOLDER for "
        "all its pages), inline (in each page: a single file that opens anywhere) or cdn "
        "(plotly's CDN: small pages that need the internet)",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
