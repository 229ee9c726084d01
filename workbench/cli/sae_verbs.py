"""`workbench sae train|eval|features|toxigen|fetch`: sparse autoencoders and transcoders."""

from __future__ import annotations

from .common import add_model_args


def register(verbs) -> None:
    """Add the `sae` verb and its actions to the `workbench` parser's sub-parsers."""
    sae = verbs.add_parser(
        "sae",
        help="Train, evaluate and read sparse autoencoders (and transcoders).",
        description="Train SAEs from an activation cache, evaluate them like SAEBench, read their "
        "features like Neuronpedia, and compare them with dense probes on ToxiGen.",
    )
    actions = sae.add_subparsers(dest="sae_command", metavar="ACTION", required=True)

    train = actions.add_parser(
        "train",
        help="Train a TopK / BatchTopK SAE or transcoder from a disk cache (resumable).",
        description="Train a TopK / BatchTopK SAE or transcoder from a disk cache written with "
        "`workbench cache --positions all` (rerun the same command to resume).",
    )
    train.set_defaults(func="sae_commands.cmd_sae_train")
    train.add_argument("--cache", required=True, help="activation cache folder (positions all)")
    train.add_argument(
        "--hook",
        "--hook-in",
        dest="hook",
        default=None,
        help="hook read (default: the cache's only hook)",
    )
    train.add_argument(
        "--hook-out", default=None, help="hook a transcoder predicts (default: none, an SAE)"
    )
    train.add_argument(
        "--skip", action="store_true", help="transcoder with a linear skip connection"
    )
    train.add_argument(
        "--architecture", choices=["topk", "batchtopk"], default="topk", help="activation"
    )
    train.add_argument("--k", type=int, default=32, help="active latents per token")
    train.add_argument("--width", type=int, default=4608, help="number of latents")
    train.add_argument(
        "--tokens",
        type=int,
        default=1_000_000,
        help="training tokens (rows), cycling through the cache as needed",
    )
    train.add_argument("--batch-tokens", type=int, default=1024, help="tokens per training step")
    train.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default 2e-4 / sqrt(width / 2^14))",
    )
    train.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    train.add_argument(
        "--keep-first",
        action="store_true",
        help="train on each text's first position too (the start token's outlier)",
    )
    train.add_argument(
        "--checkpoint-every", type=int, default=500_000, help="tokens between checkpoints"
    )
    train.add_argument(
        "--out", required=True, help="folder for the SAE (SAELens format) and its checkpoint"
    )
    train.add_argument(
        "--also-sparsify",
        action="store_true",
        help="also write sparsify's layout under OUT/sparsify/",
    )
    train.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    evaluate = actions.add_parser(
        "eval",
        help="SAEBench-style core metrics on held-out text.",
        description="Explained variance, L0, dead and dense latents, CE-loss recovered and KL on "
        "held-out text, with bootstrap intervals over windows.",
    )
    evaluate.set_defaults(func="sae_commands.cmd_sae_eval")
    add_model_args(evaluate)
    _sae_and_texts(evaluate, context=128, windows=200)
    evaluate.add_argument("--out", default=None, help="write eval.json here (default: print only)")

    features = actions.add_parser(
        "features",
        help="Feature cards: top contexts, logit effects, density, histogram.",
        description="Read latents like Neuronpedia's feature pages, offline: an HTML page of cards.",
    )
    features.set_defaults(func="sae_commands.cmd_sae_features")
    add_model_args(features)
    _sae_and_texts(features, context=64, windows=400)
    features.add_argument(
        "--latents",
        type=int,
        nargs="+",
        default=None,
        help="latents to show (default: 8 live latents drawn with --seed)",
    )
    features.add_argument("--top", type=int, default=20, help="top-activating contexts per latent")
    features.add_argument("--seed", type=int, default=0, help="which latents are drawn by default")
    features.add_argument("--html", default=None, help="write the cards to this HTML file")
    features.add_argument(
        "--index-out",
        default=None,
        help="save the corpus index here (the dashboard's Features page reads it)",
    )

    toxigen = actions.add_parser(
        "toxigen",
        help="Sparse vs dense probes and toxicity features on ToxiGen.",
        description="Group split of ToxiGen: test AUROC of the dense probe and of probes on the "
        "top-k SAE latents; the latents that separate hateful from neutral texts.",
    )
    toxigen.set_defaults(func="sae_commands.cmd_sae_toxigen")
    add_model_args(toxigen)
    toxigen.add_argument("--sae", required=True, help="SAE folder or hub id")
    toxigen.add_argument(
        "--hookpoint", default=None, help="subfolder, when the SAE folder holds several"
    )
    toxigen.add_argument(
        "--toxigen", required=True, help="ToxiGen folder (prompts/ and demonstrations/)"
    )
    toxigen.add_argument(
        "--ks", type=int, nargs="+", default=[1, 5, 20], help="latents per sparse probe"
    )
    toxigen.add_argument("--top", type=int, default=10, help="toxicity features listed")

    fetch = actions.add_parser(
        "fetch",
        help="Download an SAE repository from the Hugging Face hub into its cache.",
        description="Download an SAE repository (or one hookpoint of it) into the Hugging Face cache.",
    )
    fetch.set_defaults(func="sae_commands.cmd_sae_fetch")
    fetch.add_argument("repo", help="hub id, e.g. hf:EleutherAI/sae-SmolLM2-135M-64x")
    fetch.add_argument("--hookpoint", default=None, help="only this subfolder (e.g. layers.10)")
    fetch.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _sae_and_texts(sub, context: int, windows: int) -> None:
    sub.add_argument(
        "--sae", required=True, help="SAE folder (SAELens or sparsify format) or hub id"
    )
    sub.add_argument(
        "--hookpoint", default=None, help="subfolder, when the SAE folder holds several"
    )
    sub.add_argument(
        "--texts", required=True, nargs="+", help="held-out text files (.txt, .jsonl, .csv)"
    )
    sub.add_argument("--context", type=int, default=context, help="tokens per window")
    sub.add_argument("--max-windows", type=int, default=windows, help="windows read from the texts")
    sub.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
