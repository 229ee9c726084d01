"""The `workbench` command: one verb per capability.

Every verb prints a human summary (or, with --json, one JSON object on stdout);
progress bars go to stderr. Exit codes: 0 done, 1 model unavailable or other
failure, 2 bad input (one line naming the file, line and problem).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

from .errors import InputError, WorkbenchError

# workbench.attribution.METHODS, spelled out so that parsing (and --help) does not import torch; a test keeps
# the two equal.
ATTRIBUTION_METHODS = ("atp", "atp*", "eap-ig")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help already says it (or the option
    is required); flags read "(default: off)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text + " (default: off)"
        if action.default is None or action.default == []:
            return text + " (default: none)"
        value = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return text + f" (default: {value})".replace("%", "%%")


class _OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (InputError, exit 2), like every other bad input,
    and a default beside every option in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise InputError(message.replace("\n", " "))


def main(argv: list[str] | None = None) -> int:
    from .validate import check_args

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except InputError as error:
        verb = next((a for a in argv if not a.startswith("-")), "")
        return _fail(verb, error, 2, "--json" in argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    verb = args.command
    wants_json = bool(getattr(args, "json", False))
    try:
        check_args(args)  # every argument, before any model work or write
        with _staged_output(args):
            return args.func(args) or 0
    except InputError as error:
        return _fail(verb, error, 2, wants_json)
    except WorkbenchError as error:
        return _fail(verb, error, 1, wants_json)
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _staged_output(args):
    """An audit, cache or report at a URL (s3://...) runs in a local staging copy that is uploaded
    shard by shard (workbench.remote); the verb sees the local folder, the user the URL."""
    from .remote import is_url, staged

    attribute = "folder" if args.command == "report" else "out"
    url = getattr(args, attribute, None)
    if not is_url(url):
        yield
        return
    with staged(url) as local:
        setattr(args, attribute, str(local))
        args.staged = (str(local), url)
        yield


def _fail(verb: str, error: Exception, code: int, wants_json: bool) -> int:
    """One line on stderr; with --json also one JSON object on stdout, so a script always gets JSON."""
    print(f"workbench {verb}: error: {error}".replace("workbench : ", "workbench: "), file=sys.stderr)
    if wants_json:
        print(json.dumps({"error": str(error), "exit_code": code}))
    return code


def _add_model_args(sub: argparse.ArgumentParser) -> None:
    from .models import DEFAULT_MODEL

    sub.add_argument("--model", default=DEFAULT_MODEL,
                     help=f"registry name, local folder or HF id (default {DEFAULT_MODEL})")
    sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    sub.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default by device)")
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _add_steer_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--steer", default=None, help="contrast pairs JSONL for a steering vector")
    sub.add_argument("--layer", type=int, default=None, help="layer of the steering vector")
    sub.add_argument("--alpha", type=float, nargs="+", default=[], help="steering coefficients (one condition each)")
    sub.add_argument("--ablate", action="store_true", help="add a condition with the vector's direction ablated")


OUT_HELP = "audit folder or s3:// URL: shards, run.json, summary.json, report.html (rerun to resume)"


def _add_scale_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--ray", default=None, metavar="ADDRESS",
                     help="run the shards on Ray workers, one model replica each: 'local' (a Ray instance on this "
                          "machine for this run), 'auto' (the cluster of `ray start`) or a cluster address; "
                          "--out may be a folder every node sees or an s3:// URL (README: Beyond one machine)")
    sub.add_argument("--workers", type=int, default=None,
                     help="Ray workers (default: one per GPU, else 2); needs --ray")
    sub.add_argument("--threads-per-worker", type=int, default=None,
                     help="torch threads of each CPU worker (default: this process's thread count, which keeps "
                          "results bit-identical to a run without --ray; fewer is faster when workers share "
                          "cores, and may change float32's last bits); needs --ray")


def _executor(args):
    """The shard executor --ray/--workers ask for, checked before any model work."""
    from .distributed import ModelSpec, RayExecutor, executor_for
    from .models import default_device, default_dtype, parse_dtype

    executor = executor_for(args.ray, args.workers, connect=True, threads=args.threads_per_worker)
    if isinstance(executor, RayExecutor):  # workers load their replicas while this process loads its own
        device = args.device or default_device()
        dtype = str(parse_dtype(args.dtype) or default_dtype(device)).replace("torch.", "")
        executor.start(ModelSpec(args.model, "cuda" if device.startswith("cuda") else "cpu", dtype))
    return executor


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="workbench", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="command", metavar="VERB")

    def verb(name: str, help_text: str, func, model: bool = True) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        if model:
            _add_model_args(sub)
        else:
            sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return sub

    verb("models", "List the models the registry knows.", cmd_models, model=False)
    sub = verb("fetch", "Download or convert a model's weights, or a Detoxify checkpoint (the only verb that "
                        "downloads).", cmd_fetch)
    sub.add_argument("name", nargs="?", default=None,
                     help="model to fetch (same as --model), or detoxify[:original|unbiased|multilingual]")
    sub = verb("info", "Describe a model: layers, widths, vocabulary, context, parameters, memory.", cmd_info)
    sub.add_argument("--no-load", action="store_true",
                     help="only the memory estimate of loading it, from its config (nothing is allocated)")
    sub = verb("hooks", "List the hook names that fire in a forward pass.", cmd_hooks)
    sub.add_argument("--pattern", default="all", help="only names matching this pattern")

    sub = verb("generate", "Continue a prompt (in the model's prompt format unless --raw).", cmd_generate)
    sub.add_argument("--prompt", required=True, help="the text to continue")
    sub.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most")
    sub.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sub.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    sub.add_argument("--seed", type=int, default=0, help="sampling seed (with --sample)")
    sub.add_argument("--raw", action="store_true", help="send the prompt as is, without the prompt format")

    sub = verb("cache", "Cache activations of a corpus to a folder of safetensors shards (resumable).",
               cmd_cache)
    sub.add_argument("--input", required=True, help=".txt (one text per line), .jsonl or .csv")
    sub.add_argument("--field", default="text", help="JSONL field holding the text (default text)")
    sub.add_argument("--column", default=None, help="CSV column holding the text (default text)")
    sub.add_argument("--hooks", default="resid_post", help="hook names or patterns, comma-separated")
    sub.add_argument("--positions", default="last", choices=["all", "last", "mean", "mean_after_first"],
                     help="what is kept per text: every token, the last, the mean, or the mean without the first "
                          "token (the one probe train uses)")
    sub.add_argument("--out", required=True, help="output folder or s3:// URL (rerun the same command to resume)")
    sub.add_argument("--batch-size", type=int, default=8, help="texts per forward pass")
    sub.add_argument("--shard-size", type=int, default=None,
                     help="texts per shard file (default: about 256 MiB per shard)")
    sub.add_argument("--truncate", action="store_true", help="cut texts longer than the context")
    sub.add_argument("--max-length", type=int, default=None, help="token limit (default: the context)")
    _add_scale_args(sub)

    sub = verb("attention", "Head scores (previous-token, duplicate, induction) and a prompt's attention patterns.",
               cmd_attention)
    sub.add_argument("--prompt", required=True, help="the prompt whose attention patterns are shown")
    sub.add_argument("--layer", type=int, default=None, help="layer of the head to show (default: the top induction head)")
    sub.add_argument("--head", type=int, default=None, help="head to show (default: the top induction head)")
    sub.add_argument("--top", type=int, default=10, help="rows of the ranked head table")
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    sub = verb("lens", "Logit lens of a prompt, and direct logit attribution for two answers.", cmd_lens)
    sub.add_argument("--prompt", required=True, help="the prompt read layer by layer")
    sub.add_argument("--answers", nargs=2, default=None, metavar=("ANSWER", "OTHER"),
                     help="two single-token answers for DLA, e.g. ' Paris' ' Rome' (default: no DLA)")
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    sub = verb("patch", "Exact and attribution patching (AtP, AtP*, EAP-IG) of a prompt pair or a batch of pairs.",
               cmd_patch)
    sub.add_argument("--clean", default=None, help="the prompt whose activations are patched in (or use --pairs)")
    sub.add_argument("--corrupt", default=None, help="the prompt they are patched into (same token length)")
    sub.add_argument("--answers", nargs=2, default=None, metavar=("ANSWER", "OTHER"),
                     help="single tokens whose logit difference is the metric, e.g. ' Mary' ' John'")
    sub.add_argument("--pairs", default=None,
                     help="JSONL of {clean, corrupt, answer, other} (e.g. probes/ioi_pairs.jsonl): patch the batch, "
                          "metric averaged over pairs; every prompt must have the same token length")
    sub.add_argument("--method", choices=["exact", *ATTRIBUTION_METHODS, "all"], default="eap-ig",
                     help="exact patching (one forward pass per cell, batched); atp (attribution patching, one "
                          "backward pass); atp* (AtP*: softmax recomputed for queries and keys, GradDrop); eap-ig "
                          "(integrated gradients, --steps backward passes); all: exact and the three side by side")
    sub.add_argument("--steps", type=int, default=5, help="integration steps of eap-ig (1 = atp)")
    sub.add_argument("--verify", type=int, default=20, metavar="K",
                     help="self-check of every attribution result: exact patching of its top K cells and 2K random "
                          "others, with Pearson/Spearman r, recall of the exact top K and the largest error "
                          "(0 = off; with exact patching run too, every cell is compared)")
    sub.add_argument("--kinds", default=None,
                     help="comma-separated: resid_pre, attn_head, attn_head_pos, attn_out, mlp_out (default: "
                          "resid_pre,attn_head,attn_out,mlp_out; without resid_pre for pairs of several lengths, "
                          "whose positions do not line up)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the self-check's random sample of cells")
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    sub = verb("steer", "Steer generation with a vector from contrast pairs over several coefficients.", cmd_steer)
    sub.add_argument("--pairs", required=True, help="JSONL of {positive, negative} pairs (see probes/)")
    sub.add_argument("--layer", type=int, required=True, help="layer whose residual stream is steered")
    sub.add_argument("--alpha", type=float, nargs="+", default=[-4, -2, 0, 2, 4],
                     help="steering coefficients, one generation each")
    sub.add_argument("--prompt", required=True, help="the prompt continued under each coefficient")
    sub.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate per coefficient")
    sub.add_argument("--positive-words", nargs="*", default=None,
                     help="single-token words for a log-probability gap metric, e.g. ' great' ' good'")
    sub.add_argument("--negative-words", nargs="*", default=None,
                     help="single-token words on the other side of the gap, e.g. ' bad' ' awful'")
    sub.add_argument("--qa", default=None, help="QA set for the capability columns (default probes/qa.jsonl)")
    sub.add_argument("--heldout", nargs="+", default=None,
                     help="held-out corpus for perplexity (default probes/heldout_neutral.txt)")
    sub.add_argument("--no-capability", action="store_true", help="skip QA accuracy and held-out perplexity")
    sub.add_argument("--html", default=None, help="write the figures to this HTML file")

    probe = verbs.add_parser("probe", help="Train linear probes on activations, or apply a saved one.",
                             description="Train linear probes on activations, or apply a saved one.")
    probe_verbs = probe.add_subparsers(dest="probe_command", metavar="ACTION", required=True)
    for action, func, text in (("train", cmd_probe_train, "Train a probe per hook and report held-out metrics."),
                               ("apply", cmd_probe_apply, "Score texts (or each token of one text) with a saved probe.")):
        sub = probe_verbs.add_parser(action, help=text, description=text)
        sub.set_defaults(func=func)
        _add_model_args(sub)
    train_cmd = probe_verbs.choices["train"]
    train_cmd.add_argument("--data", required=True,
                           help="JSONL with text, label (0/1), optional group; or a ToxiGen folder")
    train_cmd.add_argument("--hooks", default="resid_post", help="hook names or patterns (default resid_post)")
    train_cmd.add_argument("--positions", choices=["mean_after_first", "mean", "last"], default="mean_after_first",
                           help="what each text is reduced to (default mean_after_first: the mean without the "
                                "first token, whose outsized activation makes plain means track text length)")
    train_cmd.add_argument("--split", choices=["random", "group"], default="random",
                           help="random: stratified rows; group: whole groups held out (default random)")
    train_cmd.add_argument("--test-fraction", type=float, default=0.25, help="share held out for test (default 0.25)")
    train_cmd.add_argument("--val-fraction", type=float, default=0.2,
                           help="share held out for choosing the layer and L2 strength (default 0.2)")
    train_cmd.add_argument("--l2", type=float, nargs="+", default=None, metavar="L2",
                           help="L2 strengths tried on the validation split (default 0.001 0.01 0.1 1)")
    train_cmd.add_argument("--seed", type=int, default=0, help="split and bootstrap seed (default 0)")
    train_cmd.add_argument("--sparse-k", type=int, nargs="*", default=None, metavar="K",
                           help="also fit TransformerLens k-sparse probes for these k (with controls); sparse.json")
    train_cmd.add_argument("--out", required=True,
                           help="folder for the probes: one sub-folder per hook, and chosen/ (the validation choice)")
    apply_cmd = probe_verbs.choices["apply"]
    apply_cmd.add_argument("--probe", required=True, help="a saved probe folder")
    apply_cmd.add_argument("--text", default=None, help="one text to score (or give --input)")
    apply_cmd.add_argument("--input", default=None, help=".txt/.jsonl/.csv of texts")
    apply_cmd.add_argument("--tokens", action="store_true", help="score every token of --text")
    apply_cmd.add_argument("--positions", choices=["mean_after_first", "mean", "last"], default=None,
                           help="positions to read (default: the ones the probe was trained on)")
    apply_cmd.add_argument("--allow-other-positions", action="store_true",
                           help="read other positions than the probe was trained on (scores not validated)")

    audit = verbs.add_parser("audit", help="Batch safety audits: toxicity, toxigen, counterfactual, bias.",
                             description="Batch safety audits: toxicity, toxigen, counterfactual, bias.")
    audit_verbs = audit.add_subparsers(dest="audit_command", metavar="AUDIT", required=True)
    sub = audit_verbs.add_parser("toxicity", help="Generate continuations and score their toxicity.",
                                 description="Generate continuations of each prompt (baseline and any steering "
                                             "conditions), score them, write resumable Parquet shards and a report.")
    sub.set_defaults(func=cmd_audit_toxicity)
    _add_model_args(sub)
    sub.add_argument("--prompts", required=True, help=".txt (one per line), .jsonl (--field) or .csv (--column)")
    sub.add_argument("--field", default="text", help="JSONL field holding the prompt")
    sub.add_argument("--column", default=None, help="CSV column holding the prompt (default: text)")
    sub.add_argument("--skip-bad", action="store_true", help="skip bad lines (counted in the summary)")
    sub.add_argument("--out", required=True, help=OUT_HELP)
    sub.add_argument("--scorers", default="auto", help="comma-separated: auto, profanity-check, toxic-comment-classifier, detoxify[:variant], "
                          "probe")
    sub.add_argument("--probe", action="append", default=[], help="saved probe folder (repeatable), used by 'probe'")
    sub.add_argument("--detoxify-checkpoint", default=None,
                     help="local Detoxify checkpoint file (default: the one `workbench fetch detoxify` saved)")
    sub.add_argument("--detoxify-config", default=None, help="local HF config/tokenizer folder for Detoxify")
    sub.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per continuation")
    sub.add_argument("--samples", type=int, default=1, help="1 = greedy; K > 1 = K seeded samples per prompt")
    sub.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --samples > 1)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the samples and of the bootstrap")
    sub.add_argument("--raw", action="store_true", help="no prompt format")
    _add_steer_args(sub)
    _add_scale_args(sub)
    sub.add_argument("--positive-means", choices=["less-toxic", "more-toxic"], default="less-toxic",
                     help="what a positive --alpha (towards the pairs' 'positive' texts) is meant to do to toxicity, "
                          "for the report card's intended / wrong-way shares (default less-toxic)")
    sub.add_argument("--instruct", default=None, metavar="TEXT",
                     help="the prompting baseline: a condition with TEXT before every prompt, e.g. 'Reply rudely.'")
    sub.add_argument("--instruct-means", choices=["more-toxic", "less-toxic"], default=None,
                     help="what the --instruct instruction is meant to do to toxicity (required with --instruct)")
    sub.add_argument("--qa", default=None, help="single-token QA set for the capability check "
                                                "(JSONL question/answer; default probes/qa.jsonl)")
    sub.add_argument("--heldout", nargs="+", default=None,
                     help="held-out neutral corpus files for perplexity (default probes/heldout_neutral.txt)")
    sub.add_argument("--no-capability", action="store_true",
                     help="skip the capability check (held-out perplexity, QA) that runs with any intervention")
    sub.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    sub.add_argument("--shard-size", type=int, default=32, help="prompts per result shard (the unit of resume)")
    sub.add_argument("--bootstrap", type=int, default=2000,
                     help="bootstrap resamples for the intervals (summary only; default 2000)")

    sub = audit_verbs.add_parser("toxigen", help="Per-group ToxiGen audit: likelihood preference and "
                                                 "continuation toxicity.",
                                 description="Per-group ToxiGen audit: likelihood preference for hateful over "
                                             "neutral statements, and toxicity of continuations of each group's prompts.")
    sub.set_defaults(func=cmd_audit_toxigen)
    _add_model_args(sub)
    sub.add_argument("--data", required=True, help="ToxiGen folder with prompts/ (and demonstrations/)")
    sub.add_argument("--out", required=True, help=OUT_HELP)
    sub.add_argument("--scorer", dest="scorers", default="auto",
                     help="the one text scorer: auto, profanity-check, toxic-comment-classifier, detoxify[:variant]")
    sub.add_argument("--prompts-per-group", type=int, default=4, help="prompts continued per target group")
    sub.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per continuation")
    sub.add_argument("--groups", nargs="*", default=None, help="target groups to audit (default: every group)")
    sub.add_argument("--seed", type=int, default=0, help="prompt choice and bootstrap seed")
    sub.add_argument("--bootstrap", type=int, default=2000,
                     help="bootstrap resamples for the intervals (summary only; default 2000)")
    _add_steer_args(sub)
    _add_scale_args(sub)

    sub = audit_verbs.add_parser("counterfactual", help="Swap a demographic term in templates; compare groups.",
                                 description="Fill each template's {group} slot with every group; report per group "
                                             "the log-probability of chosen continuations and the toxicity of "
                                             "generated continuations, with gaps from the mean over groups.")
    sub.set_defaults(func=cmd_audit_counterfactual)
    _add_model_args(sub)
    sub.add_argument("--templates", required=True, help=".txt, one template with a {group} slot per line")
    sub.add_argument("--groups", nargs="+", required=True, help="the terms put in the {group} slot")
    sub.add_argument("--continuations", nargs="+", required=True, help="e.g. ' kind' ' dangerous'")
    sub.add_argument("--scorer", dest="scorers", default="auto",
                     help="the toxicity scorer for generations (auto, profanity-check, toxic-comment-classifier, "
                          "detoxify[:variant]), or 'none'")
    sub.add_argument("--max-new-tokens", type=int, default=20, help="tokens generated per filled template")
    sub.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sub.add_argument("--shard-size", type=int, default=8, help="templates per result shard")
    sub.add_argument("--bootstrap", type=int, default=2000,
                     help="bootstrap resamples for the intervals (summary only; default 2000)")
    sub.add_argument("--out", required=True, help=OUT_HELP)
    _add_steer_args(sub)
    _add_scale_args(sub)

    sub = audit_verbs.add_parser("bias", help="CrowS-Pairs-style paired-sentence bias.",
                                 description="CrowS-Pairs-style paired-sentence bias: share of pairs where the "
                                             "model prefers the more-stereotyping sentence (50% = none).")
    sub.set_defaults(func=cmd_audit_bias)
    _add_model_args(sub)
    sub.add_argument("--pairs", required=True, help="CSV with sent_more, sent_less, stereo_antistereo, bias_type")
    sub.add_argument("--more-column", default="sent_more", help="column of the more-stereotyping sentence")
    sub.add_argument("--less-column", default="sent_less", help="column of the less-stereotyping sentence")
    sub.add_argument("--direction-column", default="stereo_antistereo",
                     help="column saying 'stereo' or 'antistereo' for each pair")
    sub.add_argument("--type-column", default="bias_type", help="column of the bias type (race-color, gender, ...)")
    sub.add_argument("--bootstrap", type=int, default=2000,
                     help="bootstrap resamples for the paired intervals (summary only; default 2000)")
    sub.add_argument("--metric", choices=["total", "shared", "mean"], default=None,
                     help="the headline metric: drives the strongest-preferences table and the paired change "
                          "(summary only; all three shares are always reported; default: see README, Bias metrics)")
    sub.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sub.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")
    sub.add_argument("--shard-size", type=int, default=128, help="pairs per result shard")
    sub.add_argument("--cluster-column", default=None,
                     help="column grouping pairs that are not independent (e.g. occupation): intervals of the "
                          "localisation resample whole groups (default: pairs are independent)")
    sub.add_argument("--localise", action="store_true",
                     help="after the audit, find the heads and MLPs that carry the bias (attribution of each "
                          "pair's shared-token gap, checked by exact patching), mean-ablate the top heads and "
                          "measure the bias and its cost again; writes localisation.json (README: Where the bias "
                          "lives). Needs pairs of equal token length")
    sub.add_argument("--top-k", type=int, default=10, help="heads to mean-ablate (with --localise)")
    sub.add_argument("--attribution", choices=[*ATTRIBUTION_METHODS, "exact"], default="eap-ig",
                     help="how --localise attributes each pair's gap: a gradient method, or exact patching of every "
                          "head and MLP on every pair (slower, no approximation; use it when the exact check of "
                          "the estimates fails)")
    sub.add_argument("--steps", type=int, default=5, help="integration steps of eap-ig (with --localise)")
    sub.add_argument("--skip-bad", action="store_true",
                     help="with --localise: leave out pairs of unequal token length (default: stop at the first)")
    sub.add_argument("--heldout", default=None,
                     help="held-out neutral text for --localise: first half for the ablation means, second half "
                          "for perplexity (default probes/heldout_neutral.txt)")
    sub.add_argument("--qa", default=None, help="QA set for the ablation's cost (default probes/qa.jsonl)")
    sub.add_argument("--out", required=True, help=OUT_HELP)
    _add_steer_args(sub)
    _add_scale_args(sub)

    sub = verbs.add_parser("report", help="Rebuild summary.json and report.html from an audit folder's shards.",
                           description="Rebuild summary.json and report.html from an audit folder's shards; given "
                                       "a folder of audit folders, also write one report.html showing them all.")
    sub.set_defaults(func=cmd_report)
    sub.add_argument("folder", help="an audit folder, a folder of audit folders, or an s3:// URL of one")
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    sub = verb("demo", "The main job on one model (default: the embedded smollm2-135m).", cmd_demo)
    sub.add_argument("--out", default="results/demo", help="output folder (default results/demo)")

    sub = verbs.add_parser("dashboard", help="Start the Streamlit dashboard (localhost only by default).",
                           description="Start the Streamlit dashboard: streamlit run app.py, bound to localhost "
                                       "unless --host says otherwise.")
    sub.set_defaults(func=cmd_dashboard)
    sub.add_argument("--model", default=None, help="model chosen when a page opens (default smollm2-135m)")
    sub.add_argument("--results", default=None,
                     help="results root: the only folder the dashboard reads and writes "
                          "(default $WORKBENCH_RESULTS, else ./results)")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to your network)")
    sub.add_argument("--port", type=int, default=8501, help="port to listen on")
    sub.add_argument("--device", default=None, help="device of the models the pages load: cpu, cuda, cuda:1 "
                                                    "(default: cuda if available)")
    sub.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: by device)")
    return parser


def _load(args):
    from .models import load

    return load(args.model, device=args.device, dtype=args.dtype)


def _progress(items, desc: str, unit: str):
    """A progress bar on stderr over `items` (for verbs whose steps take seconds each)."""
    from tqdm.auto import tqdm

    return tqdm(list(items), desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def _say(args, message: str) -> None:
    """One line on stderr about a long step, so a slow verb is never silent."""
    print(f"workbench {args.command}: {message}", file=sys.stderr, flush=True)


def _emit(args, summary: dict, human: str) -> None:
    text = json.dumps(summary, indent=2, default=str) if args.json else human
    if getattr(args, "staged", None):  # name the URL, not the staging copy that is about to be deleted
        local, url = args.staged
        text = text.replace(str(Path(local).resolve()), url).replace(local, url)
    print(text)


def cmd_models(args) -> int:
    from .models import list_models

    rows = [{"name": s.name, "source": s.source, "hf_id": s.hf_id, "revision": s.revision,
             "pinned": s.source != "hub" or bool(s.revision), "prompt_format": s.prompt_format, "note": s.note}
            for s in list_models()]
    def pin(r: dict) -> str:
        if r["source"] != "hub":
            return "local build"
        return f"pinned {r['revision'][:12]}" if r["revision"] else "NOT pinned (main)"

    _emit(args, {"models": rows}, "\n".join(f"{r['name']:12s} {r['source']:6s} {pin(r):20s} {r['note']}" for r in rows))
    return 0


def cmd_fetch(args) -> int:
    from .models import fetch

    name = args.name or args.model
    if name == "detoxify" or name.startswith("detoxify:"):
        from .scanners.toxicity import fetch_detoxify

        folder = fetch_detoxify(name.split(":", 1)[1] if ":" in name else "original")
        _emit(args, {"model": name, "path": str(folder)}, f"{name}: ready in {folder}; --scorers auto now uses it")
        return 0
    folder = fetch(name)
    _emit(args, {"model": name, "path": str(folder)}, f"{name}: ready in {folder}")
    return 0


def cmd_info(args) -> int:
    from .memory import format_bytes, load_estimate, model_shape
    from .models import default_device, default_dtype, parse_dtype

    device = args.device or default_device()
    dtype = str(parse_dtype(args.dtype) or default_dtype(device)).replace("torch.", "")
    estimate = load_estimate(model_shape(args.model), dtype)
    if args.no_load:
        _emit(args, {"model": args.model, "dtype": dtype, "load_estimate_bytes": estimate.bytes,
                     "load_estimate": estimate.text()}, estimate.text())
        return 0
    print(estimate.text(), file=sys.stderr, flush=True)
    model = _load(args)
    info = {**model.info.to_dict(), "weights": format_bytes(model.info.weight_bytes),
            "load_estimate": format_bytes(estimate.bytes)}
    width = max(len(k) for k in info)
    _emit(args, info, "\n".join(f"{k:<{width}}  {v}" for k, v in info.items()))
    return 0


def cmd_hooks(args) -> int:
    from .hooks import hook_aliases, hook_table, resolve_hooks

    model = _load(args)
    names = set(resolve_hooks(model, args.pattern))
    table = hook_table(model)
    rows = [{"name": canonical, "aliases": aliases, "shape_for_5_tokens": list(table[canonical].shape)}
            for canonical, aliases in hook_aliases(model).items() if names & {canonical, *aliases}]
    _emit(args, {"model": model.info.name, "hooks": rows},
          "\n".join(f"{r['name']:40s} {str(tuple(r['shape_for_5_tokens'])):20s} "
                    + (f"also: {', '.join(r['aliases'])}" if r["aliases"] else "") for r in rows).rstrip()
          + "\n(one line per hook point: its TransformerLens name, the shape for one text of 5 tokens, "
            "and the other names of the same point)")
    return 0


def cmd_generate(args) -> int:
    from .generation import generate

    from .generation import format_prompt
    from .validate import check_context

    model = _load(args)
    check_context(model, [format_prompt(model, args.prompt, raw=args.raw)], args.max_new_tokens, where="--prompt")
    start = time.perf_counter()
    result = generate(model, [args.prompt], max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                      temperature=args.temperature, seed=args.seed, raw=args.raw)[0]
    seconds = time.perf_counter() - start
    summary = {"model": model.info.name, "prompt": args.prompt, "formatted_prompt": result.formatted_prompt,
               "text": result.text, "new_tokens": len(result.new_tokens), "seconds": round(seconds, 3),
               "sampled": args.sample, "seed": args.seed}
    _emit(args, summary, result.text)
    return 0


def cmd_cache(args) -> int:
    from .cache import cache_activations
    from .memory import format_bytes
    from .datasets import read_texts

    records = read_texts(args.input, field=args.field, column=args.column)  # bad input fails before loading
    executor = _executor(args)
    model = _load(args)
    start = time.perf_counter()
    result = cache_activations(model, records, hooks=args.hooks, positions=args.positions,
                               batch_size=args.batch_size, out=args.out, shard_size=args.shard_size,
                               truncate=args.truncate, max_length=args.max_length, executor=executor)
    seconds = time.perf_counter() - start
    manifest = result.manifest
    size = sum((Path(args.out) / s["file"]).stat().st_size for s in manifest["shards"])
    summary = {"out": str(Path(args.out).resolve()), "model": model.info.name, "n_texts": manifest["n_texts"],
               "hooks": manifest["hooks"], "positions": manifest["positions"],
               "token_counts": manifest["token_counts"], "shards": len(manifest["shards"]),
               "bytes": size, "seconds": round(seconds, 2), "already_complete": result.already_complete}
    truncated = manifest["token_counts"]["truncated_texts"]
    if result.already_complete:
        _emit(args, summary, f"already complete: {args.out} holds this cache ({manifest['n_texts']} texts x "
                             f"{len(manifest['hooks'])} hooks, {len(manifest['shards'])} shards, {format_bytes(size)}); "
                             "nothing was recomputed. To recompute, delete the folder or choose another --out.")
        return 0
    _emit(args, summary,
          f"cached {manifest['n_texts']} texts x {len(manifest['hooks'])} hooks ({args.positions}) "
          f"to {args.out}: {len(manifest['shards'])} shards, {format_bytes(size)}, {seconds:.1f} s"
          + (f"; {truncated} texts truncated" if truncated else ""))
    return 0


def _write_html(args, figs: list, title: str) -> None:
    if args.html:
        from .viz import save_html_many

        path = save_html_many(figs, args.html, title)
        print(f"figures: {path}", file=sys.stderr)


def cmd_attention(args) -> int:
    from .attention import attention_patterns, head_scores
    from .tokens import check_layer
    from .viz import head_pattern, head_score_grid

    model = _load(args)
    from .validate import check_context

    check_context(model, [args.prompt], where="--prompt")
    if args.layer is not None:
        check_layer(model, args.layer)
    if args.head is not None and not 0 <= args.head < model.info.n_heads:
        raise InputError(f"head {args.head} is out of range: {model.info.name} has heads 0..{model.info.n_heads - 1}")
    _say(args, "scoring every head (previous-token, duplicate-token, induction) on repeated random tokens ...")
    scores = head_scores(model)
    table = scores.to_frame()
    best = table.iloc[0]
    layer = args.layer if args.layer is not None else int(best["layer"])
    head = args.head if args.head is not None else int(best["head"])
    patterns = attention_patterns(model, args.prompt)
    top = table.head(args.top)
    summary = {"model": model.info.name, "tokens": patterns.tokens, "top_heads": top.to_dict("records"),
               "shown_head": {"layer": layer, "head": head,
                              "pattern": patterns.head(layer, head).tolist()}}
    _emit(args, summary, top.to_string(index=False))
    _write_html(args, [head_score_grid(scores, "induction"), head_score_grid(scores, "previous_token"),
                       head_pattern(patterns, layer, head)], f"attention: {args.prompt[:40]}")
    return 0


def cmd_lens(args) -> int:
    from .lens import direct_logit_attribution, logit_lens
    from .viz import dla_bars, logit_lens_heatmap

    model = _load(args)
    from .validate import check_context

    check_context(model, [args.prompt], where="--prompt")
    tracked = list(args.answers) if args.answers else []
    lens = logit_lens(model, args.prompt, tracked=tracked)
    summary = {"model": model.info.name, "tokens": lens.tokens, "lens": lens.to_frame().to_dict("records")}
    figs = [logit_lens_heatmap(lens)]
    human = lens.to_frame().to_string(index=False)
    if args.answers:
        dla = direct_logit_attribution(model, args.prompt, *args.answers)
        frame = dla.to_frame()
        summary["dla"] = {"logit_diff": dla.logit_diff, "sum_of_components": float(dla.values.sum()),
                          "components": frame.to_dict("records")}
        top = frame.reindex(frame["value"].abs().sort_values(ascending=False).index).head(10)
        human += f"\n\nlogit diff {dla.logit_diff:.3f}; largest components:\n" + top.to_string(index=False)
        figs.append(dla_bars(dla))
    _emit(args, summary, human)
    _write_html(args, figs, f"lens: {args.prompt[:40]}")
    return 0


def cmd_patch(args) -> int:
    from .attribution import MIN_PEARSON, MIN_RECALL, attribution_patch, self_check_from_exact
    from .patching import KINDS, activation_patch, check_kinds, check_memory, prepare
    from .validate import check_context
    from .viz import methods_vs_exact, patching_heatmap, self_check_scatter

    kinds = [k.strip() for k in (args.kinds or "resid_pre,attn_head,attn_out,mlp_out").split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"unknown patch kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    clean, corrupt, answer, other = _patch_question(args)
    model = _load(args)
    check_context(model, clean + corrupt, where="--pairs" if args.pairs else "--clean/--corrupt")
    methods = ["exact", *ATTRIBUTION_METHODS] if args.method == "all" else [args.method]
    attribution_methods = [m for m in methods if m != "exact"]
    # The pairs, the answers and the memory are checked before the first progress line, so bad input
    # still ends in one line.
    task = prepare(model, clean, corrupt, answer, other)
    if args.kinds is None and not task.one_length:
        kinds.remove("resid_pre")
    check_kinds(model, task, kinds)
    check_memory(model, task, exact="exact" in methods or args.verify > 0, attribution=bool(attribution_methods))
    estimates = {}
    for method in attribution_methods:
        _say(args, f"{method}: " + {"atp": "one clean forward pass, one corrupted forward and backward pass",
                                    "atp*": f"one clean forward pass, {model.info.n_layers + 1} corrupted forward and "
                                            "backward passes (GradDrop), batched",
                                    "eap-ig": f"one clean forward pass, {args.steps} forward and backward passes"}[method]
             + " ...")
        estimates[method] = attribution_patch(model, clean, corrupt, answer, other, kinds=tuple(kinds), method=method,
                                              steps=args.steps, verify=args.verify if "exact" not in methods else 0,
                                              seed=args.seed)
    exact = {kind: activation_patch(model, clean, corrupt, answer, other, kind=kind)
             for kind in (_progress(kinds, "exact patching", "kind") if "exact" in methods else [])}
    results: dict[str, dict] = {}
    figs = []
    lines = [f"{'pair' if task.n_pairs == 1 else f'{task.n_pairs} pairs, mean'}: clean logit diff "
             f"{task.clean_metric:.3f}, corrupted {task.corrupt_metric:.3f}"]
    for kind in kinds:
        entry: dict = {}
        for method in methods:
            result = exact[kind] if method == "exact" else estimates[method][kind]
            if kind in exact and method != "exact" and args.verify:
                result = self_check_from_exact(result, exact[kind], args.verify)
            entry[method] = {"axes": result.axes, "labels": result.labels, "values": result.values.tolist(),
                             "seconds": round(result.seconds, 3)}
            lines.append(f"{kind:14s} {method:7s} max {result.values.max():.3f} min {result.values.min():.3f} "
                         f"({result.seconds:.1f} s)")
            if result.check is not None:
                check = result.check
                entry[method]["self_check"] = {
                    "k": check.k, "checked": check.checked, "cells": check.cells, "pearson": check.pearson,
                    "spearman": check.spearman, f"recall_at_{check.k}": check.recall, "recall_low": check.recall_low,
                    "recall_high": check.recall_high, "max_error": check.max_error,
                    "max_error_cell": check.max_error_cell, "passed": check.passed}
                lines.append(f"{'':14s} {check.summary()}")
            figs.append(patching_heatmap(result))
            if result.check is not None and "exact" not in methods:
                figs.append(self_check_scatter(result))
            if method == "exact":
                exact_result = result
            else:
                estimates[method][kind] = result
        if "exact" in methods and attribution_methods:
            figs.append(methods_vs_exact(exact_result, [estimates[m][kind] for m in attribution_methods]))
        results[kind] = entry
    summary = {"model": model.info.name, "pairs": [{"clean": c, "corrupt": x, "answer": a, "other": o}
                                                   for c, x, a, o in zip(clean, corrupt, answer, other)],
               "metric": "logit difference (answer - other) at the last position, mean over pairs",
               "clean_metric": task.clean_metric, "corrupt_metric": task.corrupt_metric,
               "self_check_thresholds": {"pearson": MIN_PEARSON, "recall": MIN_RECALL},
               "results": results}
    _emit(args, summary, "\n".join(lines))
    _write_html(args, figs, "patching")
    return 0


def _patch_question(args) -> tuple[list[str], list[str], list[str], list[str]]:
    """(clean, corrupt, answer, other) lists from --pairs, or from --clean/--corrupt/--answers (one pair)."""
    single = [args.clean, args.corrupt, args.answers]
    if args.pairs:
        if any(value is not None for value in single):
            raise InputError("give either --pairs FILE or --clean/--corrupt/--answers, not both")
        from .datasets import read_patch_pairs

        pairs = read_patch_pairs(args.pairs)
        return ([p.clean for p in pairs], [p.corrupt for p in pairs], [p.answer for p in pairs],
                [p.other for p in pairs])
    missing = [flag for flag, value in zip(("--clean", "--corrupt", "--answers"), single) if value is None]
    if missing:
        raise InputError(f"patch needs {', '.join(missing)} (or --pairs FILE)")
    return [args.clean], [args.corrupt], [args.answers[0]], [args.answers[1]]


def cmd_steer(args) -> int:
    from .generation import generate
    from .steering import logprob_gap, mean_difference_vector, read_pairs, steer
    from .tokens import check_layer, single_token_id
    from .viz import steering_sweep

    pairs = read_pairs(args.pairs)
    if bool(args.positive_words) != bool(args.negative_words):
        raise InputError("give both --positive-words and --negative-words, or neither")
    if not args.no_capability:
        _capability_inputs(args)  # the files' structure, before the model is loaded
    model = _load(args)
    check_layer(model, args.layer)
    for word in (args.positive_words or []) + (args.negative_words or []):
        single_token_id(model, word)
    from .generation import format_prompt
    from .validate import check_context

    check_context(model, [format_prompt(model, args.prompt)], args.max_new_tokens, where="--prompt")
    from .capability import capability_rows, continuation_fluency, summarise_capability

    items = [] if args.no_capability else _capability_inputs(args, model)
    vector = mean_difference_vector(model, pairs, args.layer, source=str(args.pairs))
    rows = []
    for alpha in _progress(args.alpha, "steering", "coefficient"):
        with steer(model, vector, alpha):
            generation = generate(model, args.prompt, max_new_tokens=args.max_new_tokens)[0]
            row = {"alpha": alpha, "text": generation.text}
            if args.positive_words:
                row["logprob_gap"] = logprob_gap(model, [args.prompt], args.positive_words, args.negative_words)
            capability = summarise_capability(capability_rows(model, items)) if items else {}
        # The report card's columns: what this coefficient costs (fluency judged by the unsteered model).
        fluency = continuation_fluency(model, [generation], batch_size=1)[0]
        if fluency["continuation_scored_tokens"]:
            row["continuation_perplexity"] = math.exp(fluency["continuation_nll"] / fluency["continuation_scored_tokens"])
        row.update(repeated_3grams=fluency["repeated_3grams"], distinct_2=fluency["distinct_2"],
                   **{k: v.to_dict() for k, v in capability.items()})
        rows.append(row)
    summary = {"model": model.info.name, "pairs": str(args.pairs), "n_pairs": len(pairs), "layer": args.layer,
               "vector_norm": float(vector.vector.norm()), "rows": rows}
    _emit(args, summary, "\n".join(_steer_line(r) for r in rows)
          + ("\n(one continuation per coefficient: its fluency has no interval; for intervals over many prompts, "
             "run `workbench audit toxicity --steer ...`)"))
    if args.positive_words:
        from .steering import SweepResult

        _write_html(args, [steering_sweep(SweepResult([r["alpha"] for r in rows], [r["logprob_gap"] for r in rows],
                                                      "logprob_gap", args.layer, vector.method))], "steering")
    return 0


def _steer_line(row: dict) -> str:
    """One coefficient of `workbench steer`: its costs, then its continuation."""
    from .report import estimate_text

    costs = [f"gap {row['logprob_gap']:+.2f}"] if "logprob_gap" in row else []
    if "qa_accuracy" in row:
        costs.append(f"QA {estimate_text(row['qa_accuracy'], 1, True)}")
    if "heldout_perplexity" in row:
        costs.append(f"held-out ppl {estimate_text(row['heldout_perplexity'], 1)}")
    if "continuation_perplexity" in row:
        costs.append(f"continuation ppl {row['continuation_perplexity']:.1f}")
    costs.append(f"repeated 3-grams {row['repeated_3grams']:.2f}")
    return f"alpha {row['alpha']:+g} ({'; '.join(costs)}): {row['text']}"


def cmd_probe_train(args) -> int:
    from .datasets import read_labeled, read_toxigen
    from .probes import L2_GRID, sparse_probes, train_probes_on_rows
    from .stats import estimate_from_dict

    data = Path(args.data)
    rows = read_toxigen(data) if data.is_dir() else read_labeled(data)
    if {r.label for r in rows} != {0, 1}:
        raise InputError("labels must contain both 0 and 1", str(data))
    model = _load(args)
    sweep, cache, seconds = train_probes_on_rows(model, rows, str(data), args.hooks, args.positions, args.split,
                                                 args.test_fraction, args.val_fraction, args.l2 or L2_GRID,
                                                 args.seed)
    out = Path(args.out)
    for hook, probe in sweep.probes.items():
        probe.save(out / hook)
    best = sweep.best()
    best.save(out / "chosen")  # the validation-chosen probe under a fixed name, for scripts (make demo)
    frame = sweep.to_frame()
    interval = estimate_from_dict(best.metrics["test_auroc_interval"])
    summary = {"model": model.info.name, "n_texts": len(rows), "split": args.split, "positions": args.positions,
               "n_train": sweep.n_train, "n_val": sweep.n_val, "n_test": sweep.n_test, "l2_grid": sweep.l2_grid,
               "chosen": {"hook": best.hook, **best.metrics}, "seconds": seconds,
               "per_hook": frame.to_dict("records"), "out": str(out.resolve())}
    columns = ["hook", "l2", "val_auroc", "test_auroc", "test_ece", "mean_difference_val_auroc",
               "mean_difference_test_auroc", "chosen"]
    text = frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    confounded = [r["hook"] for r in summary["per_hook"]
                  if abs(r.get("mean_difference_length_spearman") or 0) > LENGTH_WARNING]
    if confounded:
        warning = (f"warning: at {len(confounded)} hooks (e.g. {confounded[0]}) the mean-difference score tracks text "
                   f"length (|Spearman| > {LENGTH_WARNING}); with --positions mean the first token's outsized "
                   "activation divided by the length dominates; try --positions mean_after_first")
        summary["warnings"] = [warning]
        print(warning, file=sys.stderr)
    if args.sparse_k:
        start = time.perf_counter()
        groups = [r.group for r in rows] if all(r.group for r in rows) else None
        sparse = sparse_probes(cache, [r.label for r in rows], groups, split=args.split, ks=args.sparse_k,
                               test_fraction=args.test_fraction, seed=args.seed).to_frame()
        summary["seconds"]["sparse"] = round(time.perf_counter() - start, 2)
        summary["sparse"] = sparse.to_dict("records")
        (out / "sparse.json").write_text(json.dumps(summary["sparse"], indent=2, default=str) + "\n")
        text += "\n\nk-sparse probes (TransformerLens):\n" + sparse[
            ["hook", "k", "auroc", "random_coordinate_auroc", "label_shuffle_auroc"]].to_string(index=False)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _emit(args, summary, text + f"\nchosen on validation ({sweep.n_val} texts): {best.hook}, L2 {best.metrics['l2']:g}"
          f"\ntest AUROC ({sweep.n_test} texts): {interval.text()}; expected calibration error "
          f"{best.metrics['test_ece']:.3f}\ncaching {seconds['caching']:.1f} s, training {seconds['training']:.1f} s; "
          f"probes in {out}")
    return 0


LENGTH_WARNING = 0.8  # |Spearman| of mean-difference scores with text length above which the CLI warns


def cmd_probe_apply(args) -> int:
    from .datasets import read_texts
    from .probes import Probe, check_probe_fits, probe_scores, token_scores

    if bool(args.text) == bool(args.input):
        raise InputError("give exactly one of --text and --input")
    if args.tokens and not args.text:
        raise InputError("--tokens needs --text")
    probe = Probe.load(args.probe)
    records = read_texts(args.input) if args.input else None
    model = _load(args)
    if args.tokens:
        tokens, scores = token_scores(model, probe, args.text)
        rows = [{"token": t, "score": float(s)} for t, s in zip(tokens, scores)]
    else:
        positions = check_probe_fits(model, probe, args.positions, args.allow_other_positions)
        texts = [r.text for r in records] if records else [args.text]
        scores = probe_scores(model, probe, texts, positions, allow_other_positions=args.allow_other_positions)
        rows = [{"text": t, "score": float(s)} for t, s in zip(texts, scores)]
    summary = {"model": model.info.name, "probe": str(args.probe), "hook": probe.hook, "rows": rows,
               "probe_meta": probe.meta, "probe_test_auroc": probe.metrics.get("test_auroc"),
               "probe_test_ece": probe.metrics.get("test_ece")}
    _emit(args, summary, "\n".join(f"{r['score']:.3f}  {r.get('token', r.get('text'))!r}" for r in rows))
    return 0


def _validate_scorers(names: list[str], probes: list[str]) -> None:
    known = ("auto", "profanity-check", "toxic-comment-classifier", "probe")
    for name in names:
        if name not in known and not (name == "detoxify" or name.startswith("detoxify:")):
            raise InputError(f"unknown scorer {name!r}; choose from auto, profanity-check, toxic-comment-classifier, "
                             "detoxify[:variant], probe")
    if "probe" in names and not probes:
        raise InputError("the 'probe' scorer needs at least one --probe FOLDER")


def _read_steer_pairs(args):
    """Check the steering and bootstrap arguments (before any model work); the pairs, or None."""
    if getattr(args, "bootstrap", 1000) < 100:
        raise InputError(f"--bootstrap must be at least 100, not {args.bootstrap}")
    if (args.alpha or args.ablate) and not (args.steer and args.layer is not None):
        raise InputError("--alpha/--ablate need --steer PAIRS and --layer L")
    if not args.steer:
        return None
    from .steering import read_pairs

    return read_pairs(args.steer)


def _steer_conditions(args, model, pairs):
    """(conditions, vector): the baseline plus one condition per --alpha (and --ablate, and
    --instruct where the verb has it)."""
    from .audit import conditions_for

    instruct = dict(instruct=bool(getattr(args, "instruct", None)),
                    positive_means=getattr(args, "positive_means", "less-toxic"),
                    instruct_means=getattr(args, "instruct_means", None))
    if not pairs:
        return conditions_for([], False, **instruct), None
    from .steering import mean_difference_vector
    from .tokens import check_layer

    check_layer(model, args.layer)
    vector = mean_difference_vector(model, pairs, args.layer, source=str(args.steer))
    return conditions_for(args.alpha, args.ablate, **instruct), vector


def _capability_inputs(args, model=None):
    """The capability check's items (QA questions, then held-out texts), read and checked; with
    `model`, the QA answers are checked to be single tokens of its tokenizer."""
    from .capability import DEFAULT_HELDOUT, DEFAULT_QA, read_heldout, read_qa

    qa = read_qa(args.qa or DEFAULT_QA, model)
    return qa + read_heldout(args.heldout or [DEFAULT_HELDOUT])


def _capability_settings(args, model, pairs, conditions, items) -> dict:
    """run.json of the capability check that sits inside a toxicity audit folder."""
    from .capability import DEFAULT_HELDOUT, DEFAULT_QA, items_sha256

    return _audit_settings(args, model, pairs, conditions, qa_file=str(args.qa or DEFAULT_QA),
                           heldout_files=[str(h) for h in (args.heldout or [DEFAULT_HELDOUT])],
                           items_sha256=items_sha256(items), n_qa=sum(i.kind == "qa" for i in items),
                           n_texts=sum(i.kind == "text" for i in items), instruct=args.instruct,
                           batch_size=args.batch_size, shard_size=64)


def cmd_audit_toxicity(args) -> int:
    from dataclasses import asdict

    from .audit import ToxicityAuditConfig, model_settings, prompts_sha256, run_toxicity_audit, versions
    from .validate import check_context
    from .datasets import read_texts
    from .probes import Probe
    from .report import build_report
    from .scanners.toxicity import ProbeScorer, make_scorer

    # Every check on the input happens before the model is loaded.
    records = read_texts(args.prompts, field=args.field, column=args.column, skip_bad=args.skip_bad)
    skipped = read_texts.last_skipped
    scorer_names = [n.strip() for n in args.scorers.split(",") if n.strip()]
    _validate_scorers(scorer_names, args.probe)
    probes = [Probe.load(p) for p in args.probe]
    if args.samples < 1 or args.max_new_tokens < 1:
        raise InputError("--samples and --max-new-tokens must be at least 1")
    pairs = _read_steer_pairs(args)
    capability = bool(pairs or args.instruct) and not args.no_capability
    if capability:
        _capability_inputs(args)  # the files' structure, before the model is loaded
    executor = _executor(args)
    model = _load(args)
    from .audit import instructed
    from .datasets import TextRecord

    check_context(model, records, args.max_new_tokens)
    if args.instruct:
        check_context(model, [TextRecord(instructed(r.text, args.instruct), r.path, r.line) for r in records],
                      args.max_new_tokens)
    items = _capability_inputs(args, model) if capability else []
    options = {"checkpoint": args.detoxify_checkpoint, "huggingface_config_path": args.detoxify_config}
    scorers = []  # built before the steering vector: a probe for another model is refused before any model work
    for name in scorer_names:
        if name == "probe":
            scorers += [ProbeScorer(model, probe, path=str(Path(path).resolve())) for probe, path in zip(probes, args.probe)]
        else:
            scorers.append(make_scorer(name, **({k: v for k, v in options.items() if v} if name != "profanity-check"
                                                else {})))
    conditions, vector = _steer_conditions(args, model, pairs)
    config = ToxicityAuditConfig(
        model=model_settings(model),
        prompts_file=str(args.prompts), prompts_sha256=prompts_sha256(records), n_prompts=len(records),
        scorers=[s.name if not isinstance(s, ProbeScorer) else f"probe:{s.probe.hook}" for s in scorers],
        scorer_details=[s.details() for s in scorers],
        seed=args.seed, max_new_tokens=args.max_new_tokens, samples=args.samples, temperature=args.temperature,
        raw=args.raw, batch_size=args.batch_size, shard_size=args.shard_size, bootstrap=args.bootstrap,
        steer=_steer_settings(args, pairs), instruct=args.instruct, conditions=[asdict(c) for c in conditions],
        versions=versions())
    start = time.perf_counter()
    run_toxicity_audit(model, records, args.out, config, scorers, vector, executor=executor)
    if items:
        from .audit import run_capability_audit

        run_capability_audit(model, items, Path(args.out) / "capability",
                             _capability_settings(args, model, pairs, conditions, items), vector, executor=executor)
    report = build_report(args.out)
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    summary.update(seconds=round(time.perf_counter() - start, 1), skipped_bad_lines=skipped, report=str(report))
    _emit(args, summary, _table_text(summary) + f"\nreport: {report}"
          + (f" ({skipped} bad lines skipped)" if skipped else ""))
    return 0


def _table_text(summary: dict) -> str:
    """The audit's main table (every interval written out) and how its intervals were made."""
    import pandas as pd

    from .report import summary_rows

    from .report import card_findings, card_rows

    card = card_rows(summary) if summary.get("card") else []
    return (pd.DataFrame(summary_rows(summary)).fillna("").to_string(index=False)
            + ("\n\nsteering report card:\n" + pd.DataFrame(card).fillna("").to_string(index=False) if card else "")
            + "".join(f"\n  {name}: {'; '.join(notes)}" for name, notes in card_findings(summary).items())
            + "\n95% intervals: " + "; ".join(summary["methods"])
            + f". No interval below n = {summary['min_n']} (the count is shown instead)."
            + _localisation_text(summary))


def _localisation_text(summary: dict) -> str:
    """The bias localisation's findings, when the audit has one."""
    if not summary.get("localisation"):
        return ""
    from .localise import BiasLocalisation

    return "\n\nwhere the bias lives:\n" + "\n".join(
        f"  {line}" for line in BiasLocalisation.from_dict(summary["localisation"]).summary_lines())


def cmd_audit_toxigen(args) -> int:
    from .audit import run_toxigen_audit
    from .datasets import read_toxigen
    from .scanners.toxicity import make_scorer
    from .scanners.toxigen import toxigen_groups

    rows = read_toxigen(args.data)
    groups = toxigen_groups(rows, args.groups)  # bad folder or group: exit 2 before the model
    if args.scorers == "probe" or "," in args.scorers:
        raise InputError("the ToxiGen audit takes one text scorer: auto, profanity-check or detoxify[:variant]")
    _validate_scorers([args.scorers], [])
    pairs = _read_steer_pairs(args)
    executor = _executor(args)
    model = _load(args)
    scorer = make_scorer(args.scorers)
    conditions, vector = _steer_conditions(args, model, pairs)
    from .probes import texts_hash

    settings = _audit_settings(args, model, pairs, conditions, data=str(args.data),
                               data_sha256=texts_hash([r.text for r in rows], [r.label for r in rows]), groups=groups,
                               scorer=scorer.name, scorer_details=[scorer.details()],
                               prompts_per_group=args.prompts_per_group,
                               max_new_tokens=args.max_new_tokens)
    return _finish_audit(args, run_toxigen_audit, (model, args.data, rows, groups, args.out, settings, scorer, vector),
                         executor)


def _audit_settings(args, model, pairs, conditions, **fields) -> dict:
    """run.json fields shared by the bias, ToxiGen and counterfactual audits."""
    from .audit import AUDIT_FORMAT, model_settings, versions

    from dataclasses import asdict

    return {"model": model_settings(model), **fields, "seed": args.seed, "bootstrap": args.bootstrap,
            "steer": _steer_settings(args, pairs),
            "conditions": [asdict(c) for c in conditions], "versions": versions(), "format": AUDIT_FORMAT}


def _steer_settings(args, pairs) -> dict | None:
    """The steering source recorded in run.json (None without --steer)."""
    if not pairs:
        return None
    from .provenance import file_sha256

    return {"pairs": str(args.steer), "pairs_sha256": file_sha256(args.steer), "layer": args.layer,
            "n_pairs": len(pairs)}


def _finish_audit(args, runner, runner_args: tuple, executor, after=None) -> int:
    """Run (or resume) an audit, then `after()` if given (bias localisation), build its report, print its table."""
    from .report import build_report

    start = time.perf_counter()
    runner(*runner_args, executor=executor)
    if after is not None:
        after()
    report = build_report(args.out)
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    summary.update(seconds=round(time.perf_counter() - start, 1), report=str(report))
    _emit(args, summary, _table_text(summary) + f"\n{summary['seconds']} s; report: {report}")
    return 0


def cmd_audit_counterfactual(args) -> int:
    from .audit import run_counterfactual_audit
    from .datasets import read_texts
    from .scanners.toxicity import make_scorer

    records = read_texts(args.templates)
    bad = [r for r in records if "{group}" not in r.text]
    if bad:
        raise InputError("template has no {group} slot", bad[0].path, bad[0].line)
    if len(args.groups) < 2:
        raise InputError("give at least two --groups")
    if args.scorers != "none":
        _validate_scorers([args.scorers], [])
    pairs = _read_steer_pairs(args)
    executor = _executor(args)
    model = _load(args)
    scorer = None if args.scorers == "none" else make_scorer(args.scorers)
    conditions, vector = _steer_conditions(args, model, pairs)
    templates = [r.text for r in records]
    settings = _audit_settings(args, model, pairs, conditions, templates_file=str(args.templates),
                               templates=templates, groups=args.groups, continuations=args.continuations,
                               scorer=scorer.name if scorer else None,
                               scorer_details=[scorer.details()] if scorer else [], max_new_tokens=args.max_new_tokens,
                               shard_size=args.shard_size)
    return _finish_audit(args, run_counterfactual_audit, (model, templates, args.out, settings, scorer, vector),
                         executor)


def cmd_report(args) -> int:
    from .report import audit_folders, build_report

    path = build_report(args.folder)
    folder = Path(args.folder)
    if (folder / "run.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
    else:
        summary = {"audits": [str(p) for p in audit_folders(folder)]}
    _emit(args, {**summary, "report": str(path)}, f"report: {path}")
    return 0


def cmd_audit_bias(args) -> int:
    import hashlib

    from .audit import run_bias_audit
    from .datasets import read_bias_pairs
    from .scanners.bias import DEFAULT_METRIC

    pairs = read_bias_pairs(args.pairs, args.more_column, args.less_column, args.direction_column, args.type_column,
                            args.cluster_column)
    steer_pairs = _read_steer_pairs(args)
    executor = _executor(args)
    model = _load(args)
    if args.localise:
        from .localise import check_localisation

        check_localisation(model, pairs, args.top_k, args.attribution, args.steps, args.skip_bad, args.heldout,
                           args.qa, source=str(args.pairs))
    conditions, vector = _steer_conditions(args, model, steer_pairs)
    settings = _audit_settings(args, model, steer_pairs, conditions, pairs_file=str(args.pairs),
                               pairs_sha256=hashlib.sha256(Path(args.pairs).read_bytes()).hexdigest(),
                               n_pairs=len(pairs), batch_size=args.batch_size,
                               shard_size=args.shard_size, metric=args.metric or DEFAULT_METRIC)
    localise = (lambda: _localise(args, model, pairs)) if args.localise else None
    return _finish_audit(args, run_bias_audit, (model, pairs, args.out, settings, vector), executor, localise)


def _localise(args, model, pairs) -> None:
    """The bias localisation of an audit folder: localisation.json (and components.csv) beside the shards."""
    from .localise import LOCALISATION_FILE, localise_bias
    from .storage import write_atomically

    _say(args, f"localising the bias: {args.attribution} on every usable pair, exact check, ablation of the top "
               f"{args.top_k} heads ...")
    result = localise_bias(model, pairs, args.top_k, args.attribution, args.steps, args.skip_bad, args.heldout,
                           args.qa, seed=args.seed, n_boot=args.bootstrap, source=str(args.pairs),
                           progress=True)
    out = Path(args.out)
    write_atomically(out / LOCALISATION_FILE, json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_atomically(out / "localisation_components.csv", result.to_frame().to_csv(index=False))


def cmd_dashboard(args) -> int:
    import os

    from .results import results_root

    if args.results:
        os.environ["WORKBENCH_RESULTS"] = args.results
    root = results_root()  # resolved now, so the pages see the same folder whatever their working directory
    env = dict(os.environ, WORKBENCH_RESULTS=str(root))
    if args.model:
        env["WORKBENCH_DASHBOARD_MODEL"] = args.model
    if args.device:
        env["WORKBENCH_DASHBOARD_DEVICE"] = args.device
    if args.dtype:
        env["WORKBENCH_DASHBOARD_DTYPE"] = args.dtype
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the dashboard",
              file=sys.stderr)
    launcher = Path(__file__).resolve().parent / "dashboard" / "streamlit_app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(launcher), "--server.address", args.host,
               "--server.port", str(args.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    print(f"workbench dashboard: http://{args.host}:{args.port}  (results root {root}; Ctrl-C stops it)",
          file=sys.stderr)
    # exec, not a child process: Ctrl-C or a kill reaches streamlit itself, and no server is left behind.
    os.execvpe(command[0], command, env)


def cmd_demo(args) -> int:
    from .demo import run_tour

    summary = run_tour(args.model, args.out, device=args.device)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
