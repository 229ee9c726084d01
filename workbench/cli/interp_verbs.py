"""The interpretability verbs: attention, lens, patch, steer."""

from __future__ import annotations

from .common import ATTRIBUTION_METHODS, add_prepend_bos, add_verb


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    sub = add_verb(
        verbs,
        "attention",
        "Head scores (previous-token, duplicate, induction) and a prompt's attention patterns.",
        "interp_commands.cmd_attention",
    )
    sub.add_argument(
        "--prompt", required=True, help="the prompt whose attention patterns are shown"
    )
    add_prepend_bos(sub)
    sub.add_argument(
        "--layer",
        type=int,
        default=None,
        help="layer of the head to show (default: the top induction head)",
    )
    sub.add_argument(
        "--head", type=int, default=None, help="head to show (default: the top induction head)"
    )
    sub.add_argument("--top", type=int, default=10, help="rows of the ranked head table")
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    sub = add_verb(
        verbs,
        "lens",
        "Logit lens of a prompt, and direct logit attribution for two answers.",
        "interp_commands.cmd_lens",
    )
    sub.add_argument("--prompt", required=True, help="the prompt read layer by layer")
    add_prepend_bos(sub)
    sub.add_argument(
        "--answers",
        nargs=2,
        default=None,
        metavar=("ANSWER", "OTHER"),
        help="two single-token answers for DLA, e.g. ' Paris' ' Rome' (default: no DLA)",
    )
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    sub = add_verb(
        verbs,
        "patch",
        "Exact and attribution patching (AtP, AtP*, EAP-IG) of a prompt pair or a batch of pairs.",
        "interp_commands.cmd_patch",
    )
    sub.add_argument(
        "--clean", default=None, help="the prompt whose activations are patched in (or use --pairs)"
    )
    sub.add_argument(
        "--corrupt", default=None, help="the prompt they are patched into (same token length)"
    )
    sub.add_argument(
        "--answers",
        nargs=2,
        default=None,
        metavar=("ANSWER", "OTHER"),
        help="single tokens whose logit difference is the metric, e.g. ' Mary' ' John'",
    )
    sub.add_argument(
        "--pairs",
        default=None,
        help="JSONL of {clean, corrupt, answer, other} (e.g. probes/ioi_pairs.jsonl): patch the batch, "
        "metric averaged over pairs; every prompt must have the same token length",
    )
    sub.add_argument(
        "--method",
        choices=["exact", *ATTRIBUTION_METHODS, "all"],
        default="atp",
        help="exact patching (one forward pass per cell, batched); atp (attribution patching, one "
        "backward pass); atp* (AtP*: softmax recomputed for queries and keys, GradDrop); eap-ig "
        "(integrated gradients, --steps backward passes); all: exact and the three side by side",
    )
    sub.add_argument("--steps", type=int, default=5, help="integration steps of eap-ig (1 = atp)")
    sub.add_argument(
        "--verify",
        type=int,
        default=20,
        metavar="K",
        help="self-check of every attribution result: exact patching of its top K cells and 2K random "
        "others, with Pearson/Spearman r, recall of the exact top K and the largest error "
        "(0 = off; with exact patching run too, every cell is compared)",
    )
    sub.add_argument(
        "--kinds",
        default=None,
        help="comma-separated: resid_pre, attn_head, attn_head_pos, attn_out, mlp_out (default: "
        "resid_pre,attn_head,attn_out,mlp_out; without resid_pre for pairs of several lengths, "
        "whose positions do not line up)",
    )
    sub.add_argument(
        "--seed", type=int, default=0, help="seed of the self-check's random sample of cells"
    )
    add_prepend_bos(sub)
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    sub = add_verb(
        verbs,
        "steer",
        "Steer generation with a vector from contrast pairs over several coefficients.",
        "interp_commands.cmd_steer",
    )
    sub.add_argument(
        "--pairs", required=True, help="JSONL of {positive, negative} pairs (see probes/)"
    )
    sub.add_argument(
        "--layer", type=int, required=True, help="layer whose residual stream is steered"
    )
    sub.add_argument(
        "--alpha",
        type=float,
        nargs="+",
        default=[-4, -2, 0, 2, 4],
        help="steering coefficients, one generation each",
    )
    sub.add_argument("--prompt", required=True, help="the prompt continued under each coefficient")
    sub.add_argument(
        "--max-new-tokens", type=int, default=40, help="tokens to generate per coefficient"
    )
    sub.add_argument(
        "--positive-words",
        nargs="*",
        default=None,
        help="single-token words for a log-probability gap metric, e.g. ' great' ' good'",
    )
    sub.add_argument(
        "--negative-words",
        nargs="*",
        default=None,
        help="single-token words on the other side of the gap, e.g. ' bad' ' awful'",
    )
    sub.add_argument(
        "--qa", default=None, help="QA set for the capability columns (default probes/qa.jsonl)"
    )
    sub.add_argument(
        "--heldout",
        nargs="+",
        default=None,
        help="held-out corpus for perplexity (default probes/heldout_neutral.txt)",
    )
    sub.add_argument(
        "--no-capability", action="store_true", help="skip QA accuracy and held-out perplexity"
    )
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")
