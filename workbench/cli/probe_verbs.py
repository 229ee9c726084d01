"""`workbench probe train` and `workbench probe apply`."""

from __future__ import annotations

from .common import add_model_args, add_prepend_bos


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    probe = verbs.add_parser(
        "probe",
        help="Train linear probes on activations, or apply a saved one.",
        description="Train linear probes on activations, or apply a saved one.",
    )
    probe_verbs = probe.add_subparsers(dest="probe_command", metavar="ACTION", required=True)
    for action, func, text in (
        (
            "train",
            "probe_commands.cmd_probe_train",
            "Train a probe per hook and report held-out metrics.",
        ),
        (
            "apply",
            "probe_commands.cmd_probe_apply",
            "Score texts (or each token of one text) with a saved probe.",
        ),
    ):
        sub = probe_verbs.add_parser(action, help=text, description=text)
        sub.set_defaults(func=func)
        add_model_args(sub)
    train_cmd = probe_verbs.choices["train"]
    train_cmd.add_argument(
        "--data",
        required=True,
        help="JSONL with text, label (0/1), optional group; or a ToxiGen folder",
    )
    train_cmd.add_argument(
        "--hooks", default="resid_post", help="hook names or patterns (default resid_post)"
    )
    train_cmd.add_argument(
        "--positions",
        choices=["mean_after_first", "mean", "last"],
        default="mean_after_first",
        help="what each text is reduced to (default mean_after_first: the mean without the "
        "first token, whose outsized activation makes plain means track text length)",
    )
    add_prepend_bos(train_cmd)
    train_cmd.add_argument(
        "--split",
        choices=["random", "group"],
        default="random",
        help="random: stratified rows; group: whole groups held out (default random)",
    )
    train_cmd.add_argument(
        "--test-fraction", type=float, default=0.25, help="share held out for test (default 0.25)"
    )
    train_cmd.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share held out for choosing the layer and L2 strength (default 0.2)",
    )
    train_cmd.add_argument(
        "--l2",
        type=float,
        nargs="+",
        default=None,
        metavar="L2",
        help="L2 strengths tried on the validation split (default 0.001 0.01 0.1 1)",
    )
    train_cmd.add_argument(
        "--seed", type=int, default=0, help="split and bootstrap seed (default 0)"
    )
    train_cmd.add_argument(
        "--sparse-k",
        type=int,
        nargs="*",
        default=None,
        metavar="K",
        help="also fit TransformerLens k-sparse probes for these k (with controls); sparse.json",
    )
    train_cmd.add_argument(
        "--out",
        required=True,
        help="folder for the probes: one sub-folder per hook, and chosen/ (the validation choice)",
    )
    apply_cmd = probe_verbs.choices["apply"]
    apply_cmd.add_argument("--probe", required=True, help="a saved probe folder")
    apply_cmd.add_argument("--text", default=None, help="one text to score (or give --input)")
    apply_cmd.add_argument("--input", default=None, help=".txt/.jsonl/.csv of texts")
    apply_cmd.add_argument("--tokens", action="store_true", help="score every token of --text")
    apply_cmd.add_argument(
        "--positions",
        choices=["mean_after_first", "mean", "last"],
        default=None,
        help="positions to read (default: the ones the probe was trained on)",
    )
    apply_cmd.add_argument(
        "--allow-other-positions",
        action="store_true",
        help="read other positions than the probe was trained on (scores not validated)",
    )
