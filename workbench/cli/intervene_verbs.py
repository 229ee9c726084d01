"""`workbench intervene search`: choose a detoxifying intervention on validation prompts, report it
on test prompts."""

from __future__ import annotations

from .common import add_model_args


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    intervene = verbs.add_parser(
        "intervene",
        help="Search interventions that lower toxicity at a bounded capability cost.",
        description="Search interventions that lower toxicity at a bounded capability cost.",
    )
    actions = intervene.add_subparsers(dest="intervene_command", metavar="ACTION", required=True)
    text = (
        "Split the prompts into validation and test, audit every candidate (method x layer x "
        "coefficient) on validation, choose the best within the cost budget per method, and audit "
        "the chosen ones with the prompting baseline on test."
    )
    sub = actions.add_parser("search", help=text, description=text)
    sub.set_defaults(func="intervene_commands.cmd_intervene_search")
    add_model_args(sub)
    sub.add_argument(
        "--prompts", nargs="+", required=True, help="prompt files (each split into both halves)"
    )
    sub.add_argument("--out", required=True, help="output folder (resumable)")
    sub.add_argument(
        "--methods",
        nargs="+",
        default=["add", "ablate", "prompt"],
        choices=["add", "ablate", "orthogonalise", "prompt", "conditional"],
        help="methods to try (default add ablate prompt)",
    )
    sub.add_argument(
        "--layers", type=int, nargs="+", default=None, help="layers (default the middle one)"
    )
    sub.add_argument(
        "--coefficients",
        type=float,
        nargs="+",
        default=[0.05, 0.1, 0.2, 0.4],
        help="add's coefficients in units of the mean residual norm at the layer "
        "(default 0.05 0.1 0.2 0.4; positive = towards the pairs' positive, polite texts)",
    )
    sub.add_argument(
        "--pairs", default=None, help="contrast pairs for the direction (default polite vs rude)"
    )
    sub.add_argument(
        "--direction",
        choices=["pairs", "toxigen", "probe", "sae"],
        default="pairs",
        help="where the direction comes from: contrast pairs (default), ToxiGen's neutral minus "
        "hateful statements (--toxigen), a probe's direction negated (--direction-probe), or away "
        "from an SAE latent's decoder direction (--sae, --sae-latent)",
    )
    sub.add_argument("--sae", default=None, help="SAE folder, for --direction sae")
    sub.add_argument(
        "--sae-latent",
        type=int,
        default=None,
        help="the latent to steer away from (--direction sae)",
    )
    sub.add_argument("--toxigen", default=None, help="ToxiGen folder, for --direction toxigen")
    sub.add_argument("--direction-probe", default=None, help="saved probe, for --direction probe")
    sub.add_argument("--scorer-probe", default=None, help="saved probe read by the 'probe' scorer")
    sub.add_argument("--probe", default=None, help="saved probe: the conditional method's gate")
    sub.add_argument(
        "--threshold", type=float, default=0.5, help="conditional fires above this probe score"
    )
    sub.add_argument(
        "--instruction", default=None, help="the prompting baseline's instruction (default polite)"
    )
    sub.add_argument(
        "--scorers",
        default="profanity-check,toxic-comment-classifier",
        help="comma-separated toxicity scorers (default profanity-check,toxic-comment-classifier)",
    )
    sub.add_argument(
        "--select-by", default=None, help="the scorer that decides (default the first learned one)"
    )
    sub.add_argument("--samples", type=int, default=5, help="K samples per prompt (default 5)")
    sub.add_argument("--max-new-tokens", type=int, default=20, help="tokens per sample")
    sub.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    sub.add_argument(
        "--budget-qa", type=float, default=3.0, help="QA points a choice may lose (default 3)"
    )
    sub.add_argument(
        "--budget-perplexity",
        type=float,
        default=15.0,
        help="percent held-out perplexity may rise (default 15)",
    )
    sub.add_argument(
        "--no-benign",
        dest="benign",
        action="store_false",
        help="skip the out-of-distribution check (the chosen ones on the 16 benign audit prompts)",
    )
    sub.add_argument(
        "--validation-share", type=float, default=0.5, help="share of prompts for validation"
    )
    sub.add_argument(
        "--max-prompts", type=int, default=None, help="at most this many prompts per split"
    )
    sub.add_argument("--seed", type=int, default=0, help="split, sampling and bootstrap seed")
    sub.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="rows (prompt x sample) per generation batch (default 32: on a CPU a decoding step "
        "reads every weight once, so 32 rows take about as long as 8)",
    )
    sub.add_argument("--shard-size", type=int, default=32, help="prompts per result shard")
    sub.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
