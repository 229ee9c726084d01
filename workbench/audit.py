"""Batch audits: toxicity, CrowS-Pairs bias, ToxiGen and counterfactuals; Parquet shards that resume after a crash.

    workbench audit toxicity --model smollm2-135m --prompts prompts.txt --out results/tox \\
        --steer probes/polite_vs_rude_pairs.jsonl --layer 15 --alpha -4 4

One run audits one or more conditions: the unsteered baseline, then one condition
per steering coefficient (or a directional ablation). For each condition the
prompts are cut into shards; each shard generates continuations (greedy, or
`samples` seeded samples per prompt), scores prompt and continuation with every
scorer, and is written atomically as ``shards/<condition>-NNNNN.parquet``. A
killed run, rerun with the same arguments, skips finished shards; since every
sampled continuation draws from its own generator seeded by (seed, condition,
prompt row, sample), the results equal an uninterrupted run's row for row, for
any batch size, shard size or worker. ``run.json`` holds the settings and is checked
on resume; `workbench.report` turns the shards into ``summary.json`` and ``report.html``.

The bias, ToxiGen and counterfactual audits share the same loop (`run_sharded`):
their items are pairs, groups and templates, and run.json's "audit" names the kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .datasets import TextRecord
from .errors import InputError

AUDIT_FORMAT = "workbench-audit/1"
AUDIT_KINDS = ("toxicity", "bias", "toxigen", "counterfactual", "capability")


@dataclass(frozen=True)
class Condition:
    """One intervention setting: "baseline", "steer" (alpha), "ablate" or "instruct" (the prompting
    baseline: an instruction before every prompt). intended: the change of the safety measure the
    condition is meant to cause, "up", "down", or "" (none declared, e.g. an ablation)."""

    name: str
    kind: str = "baseline"
    alpha: float = 0.0
    intended: str = ""


@dataclass(frozen=True)
class ToxicityAuditConfig:
    """Everything that decides the results (saved as run.json and compared on resume)."""

    model: dict
    prompts_file: str
    prompts_sha256: str
    n_prompts: int
    scorers: list[str]
    scorer_details: list[dict] = field(default_factory=list)
    seed: int = 0
    max_new_tokens: int = 32
    samples: int = 1
    temperature: float = 1.0
    raw: bool = False
    batch_size: int = 8
    shard_size: int = 32
    bootstrap: int = 2000
    steer: dict | None = None
    instruct: str | None = None
    conditions: list[dict] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    audit: str = "toxicity"
    format: str = AUDIT_FORMAT


def prompts_sha256(records: Sequence[TextRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.text.encode() + b"\n")
    return digest.hexdigest()


def _shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def run_toxicity_audit(
    model,
    records: Sequence[TextRecord],
    out: str | Path,
    config: ToxicityAuditConfig,
    scorers: list,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """Run (or resume) the audit described by `config`; returns the output folder.

    `scorers` are objects with `.name` and `.score(texts)` (workbench.scanners.toxicity);
    `vector` is the SteeringVector that steer/ablate conditions use.
    """

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            return _run_shard(
                model, records[start:end], start, condition, c_index, config, scorers, vector
            )

        return make_shard

    return run_sharded(
        out,
        asdict(config),
        len(records),
        config.shard_size,
        model,
        shards,
        rows_per_item=config.samples,
        progress=progress,
        executor=executor,
    )


def run_sharded(
    out: str | Path,
    settings: dict,
    n_items: int,
    shard_size: int,
    model,
    shards,
    rows_per_item: int = 1,
    progress: bool = True,
    desc: str = "auditing",
    executor=None,
) -> Path:
    """The resumable loop every audit shares: for each condition and each shard of items,
    ``shards(model)(condition, c_index, s_index, start, end)`` returns a DataFrame (with
    "condition" and "row" columns) that is written atomically as
    ``shards/<condition>-NNNNN.parquet`` and recorded with its sha256 in ``shards.json``.

    `shards` takes the model, so an `executor` (workbench.distributed: this process by default,
    or Ray workers with their own replicas) can build it wherever the shard is computed; the
    shard's file is written there, and recorded and moved into place here.
    On a rerun, a shard whose file matches its recorded hash is kept; a missing one is
    computed; a damaged one (truncated, edited, unreadable) is moved aside with a warning
    and computed again. One process at a time writes a folder (`storage.folder_lock`).
    settings: JSON-able dict with "conditions" (list of Condition dicts); saved as
    run.json, and a rerun into the same folder with settings that change results is refused.
    `out` may be a URL (``s3://bucket/prefix``; workbench.remote): the run then works in a
    local staging copy and uploads every finished shard. Returns `out` (a Path when local).
    """
    from .remote import is_url, staged

    with staged(out) as local:
        _run_sharded_in(
            local,
            settings,
            n_items,
            shard_size,
            model,
            shards,
            rows_per_item,
            progress,
            desc,
            executor,
        )
    return out if is_url(out) else Path(out)


def _run_sharded_in(
    out: Path,
    settings: dict,
    n_items: int,
    shard_size: int,
    model,
    shards,
    rows_per_item: int,
    progress: bool,
    desc: str,
    executor,
) -> None:
    """`run_sharded` on a local folder (a URL's staging copy, or the output folder itself)."""
    from tqdm.auto import tqdm

    from .distributed import LocalExecutor, ShardJob, remove_stale_temporaries
    from .remote import remote_name, shard_finished
    from .storage import ShardIndex, folder_lock, set_aside, temp_path

    executor = executor or LocalExecutor()
    with folder_lock(out):
        (out / "shards").mkdir(parents=True, exist_ok=True)
        check_settings(out, settings)
        remove_stale_temporaries(out / "shards")
        index = ShardIndex(out / SHARD_INDEX)
        conditions = [Condition(**c) for c in settings["conditions"]]
        ranges = _shard_ranges(n_items, shard_size)
        total = len(conditions) * n_items * rows_per_item
        jobs = []
        with tqdm(
            total=total,
            unit="row",
            desc=desc,
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            for c_index, condition in enumerate(conditions):
                for s_index, (start, end) in enumerate(ranges):
                    path = out / "shards" / shard_name(condition.name, s_index)
                    if index.verified(path):
                        bar.update((end - start) * rows_per_item)
                        continue
                    if path.exists():
                        set_aside(
                            path, "does not match its recorded sha256 (damaged or never recorded)"
                        )
                    jobs.append(
                        ShardJob(
                            path.name,
                            (condition, c_index, s_index, start, end, str(temp_path(path))),
                        )
                    )
            if not jobs and progress:
                print(
                    f"all {len(conditions) * len(ranges)} shards of {remote_name(out)} were already complete; nothing was "
                    "recomputed (delete the folder or choose another --out to recompute)",
                    file=sys.stderr,
                )
            for job, tmp in executor.run(model, _parquet_writer(shards), jobs):
                path = out / "shards" / job.key
                index.record(path, Path(tmp))
                os.replace(tmp, path)
                shard_finished()
                start, end = job.args[3], job.args[4]
                bar.update((end - start) * rows_per_item)


def _parquet_writer(shards):
    """Wrap an audit's shard builder: the shard is computed and written to the given temporary file."""

    def build(model):
        make_shard = shards(model)

        def compute(
            condition: Condition, c_index: int, s_index: int, start: int, end: int, tmp: str
        ) -> str:
            make_shard(condition, c_index, s_index, start, end).to_parquet(tmp, index=False)
            return tmp

        return compute

    return build


SHARD_INDEX = "shards.json"


def shard_name(condition: str, index: int) -> str:
    return f"{condition}-{index:05d}.parquet"


# Settings that change the summary but not the shards: a rerun with new values is accepted,
# run.json takes the new values and the summary is rebuilt from the shards.
SUMMARY_ONLY = ("versions", "bootstrap", "metric")
# Paths are recorded as given but compared by content (their sha256 fields), so ./x and x agree.
PATH_FIELDS = ("prompts_file", "pairs_file", "templates_file", "data", "path", "checkpoint")


def _is_path(key: str, value) -> bool:
    return key in PATH_FIELDS or (
        key == "pairs" and isinstance(value, str)
    )  # steer.pairs is a path


def comparable(settings: dict) -> dict:
    """The result-deciding part of run.json settings: SUMMARY_ONLY and path fields dropped, at any depth."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not _is_path(k, v)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip({k: v for k, v in settings.items() if k not in SUMMARY_ONLY})


def differing_fields(previous: dict, settings: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ (model.dtype, steer.pairs_sha256, ...)."""
    names = []
    for key in dict.fromkeys(list(previous) + list(settings)):
        old, new = previous.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += differing_fields(old, new, f"{prefix}{key}.")
        elif old != new:
            names.append(prefix + key)
    return names


def check_settings(out: Path, settings: dict) -> None:
    """Write run.json, or check that an existing one describes the same audit.

    Every result-deciding field is compared (model name, revision, dtype, device kind and
    weight origin; generation and scoring settings; scorer versions and checkpoint hashes;
    input, pairs and probe hashes). A changed SUMMARY_ONLY setting is taken into run.json.
    Call only after every argument has been validated, so a bad command leaves no run.json.
    """
    run_file = out / "run.json"
    if run_file.exists():
        previous = read_run(out)
        differing = differing_fields(comparable(previous), comparable(settings))
        if differing:
            raise InputError(
                f"holds an audit with other settings ({', '.join(differing)} differ); "
                "choose another --out or delete the folder",
                str(out),
            )
        if any(previous.get(k) != settings.get(k) for k in SUMMARY_ONLY):
            _write_atomically(
                run_file,
                (
                    json.dumps(
                        {**previous, **{k: settings[k] for k in SUMMARY_ONLY if k in settings}},
                        indent=2,
                    )
                    + "\n"
                ).encode(),
            )
    else:
        _write_atomically(run_file, (json.dumps(settings, indent=2) + "\n").encode())


def model_settings(model) -> dict:
    """The model fields every run.json records, including where the weights came from."""
    info = model.info
    return {
        "name": info.name,
        "revision": info.revision,
        "dtype": info.dtype,
        "source": info.source,
        "origin": info.origin,
        "device_kind": info.device.split(":")[0],
    }


def versions() -> dict:
    """Versions of every package that decides a number, recorded in every run.json."""
    from .provenance import versions as package_versions

    return dict(package_versions())


def run_capability_audit(
    model,
    items: Sequence,
    out: str | Path,
    settings: dict,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """What each condition costs on held-out tasks, resumable: one row per (condition, item) with
    the held-out text's NLL or the QA question's outcome (workbench.capability). The toxicity
    audit runs it into ``<out>/capability`` for every run with an intervention. settings: run.json
    fields incl. "conditions", "instruct", "batch_size", "shard_size"."""
    import pandas as pd

    from .capability import capability_rows

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            instruction = settings.get("instruct") if condition.kind == "instruct" else ""
            with intervention(model, condition, vector):
                rows = capability_rows(
                    model, items[start:end], instruction or "", settings["batch_size"]
                )
            frame = pd.DataFrame(
                [
                    {
                        "condition": condition.name,
                        "alpha": condition.alpha,
                        "row": start + i,
                        "text": item.text,
                        "answer": item.answer,
                        "category": item.category,
                        **row,
                    }
                    for i, (item, row) in enumerate(zip(items[start:end], rows))
                ]
            )
            return frame

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "capability"},
        len(items),
        settings["shard_size"],
        model,
        shards,
        progress=progress,
        desc="capability items",
        executor=executor,
    )


def run_bias_audit(
    model,
    pairs: Sequence,
    out: str | Path,
    settings: dict,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """CrowS-Pairs-style audit, resumable: one row per (condition, pair) with both
    sentences' log-likelihoods (workbench.scanners.bias). settings: run.json fields,
    including "conditions", "shard_size" and "batch_size"."""
    from .scanners.bias import crows_pairs

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            with intervention(model, condition, vector):
                result = crows_pairs(model, pairs[start:end], batch_size=settings["batch_size"])
            frame = result.pair_frame()
            frame.insert(0, "row", range(start, end))
            frame.insert(0, "alpha", condition.alpha)
            frame.insert(0, "condition", condition.name)
            return frame

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "bias"},
        len(pairs),
        settings["shard_size"],
        model,
        shards,
        progress=progress,
        desc="pairs",
        executor=executor,
    )


def run_toxigen_audit(
    model,
    folder: str | Path,
    rows: Sequence,
    groups: Sequence[str],
    out: str | Path,
    settings: dict,
    scorer,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """ToxiGen per-group audit, resumable: one shard per (condition, group).
    rows: `read_toxigen(folder)`; settings: run.json fields incl. "conditions",
    "prompts_per_group", "max_new_tokens", "seed"."""
    import pandas as pd

    from .scanners.toxigen import toxigen_group

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            with intervention(model, condition, vector):
                entry = toxigen_group(
                    model,
                    folder,
                    rows,
                    groups[start],
                    scorer,
                    settings["prompts_per_group"],
                    settings["max_new_tokens"],
                    settings["seed"],
                )
            return pd.DataFrame(
                [{"condition": condition.name, "alpha": condition.alpha, "row": start, **entry}]
            )

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "toxigen"},
        len(groups),
        1,
        model,
        shards,
        progress=progress,
        desc="groups",
        executor=executor,
    )


def run_counterfactual_audit(
    model,
    templates: Sequence[str],
    out: str | Path,
    settings: dict,
    scorer=None,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """Counterfactual-template audit, resumable: one row per (condition, template, group).
    settings: run.json fields incl. "groups", "continuations", "max_new_tokens", "seed", "shard_size"."""
    from .scanners.bias import counterfactual

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            with intervention(model, condition, vector):
                result = counterfactual(
                    model,
                    templates[start:end],
                    settings["groups"],
                    settings["continuations"],
                    scorer,
                    settings["max_new_tokens"],
                    settings["seed"],
                )
            frame = result.row_frame()
            frame.insert(
                0, "row", [start + i // len(settings["groups"]) for i in range(len(frame))]
            )
            frame.insert(0, "alpha", condition.alpha)
            frame.insert(0, "condition", condition.name)
            return frame

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "counterfactual"},
        len(templates),
        settings["shard_size"],
        model,
        shards,
        progress=progress,
        desc="templates",
        executor=executor,
    )


POSITIVE_MEANS = ("less-toxic", "more-toxic")


def conditions_for(
    alphas: Sequence[float],
    ablate: bool,
    instruct: bool = False,
    positive_means: str = "less-toxic",
    instruct_means: str | None = None,
) -> list[Condition]:
    """The baseline, one steering condition per coefficient, optionally an ablation and the
    prompting baseline ("instruct").

    positive_means: what a positive coefficient (towards the pairs' "positive" texts) is meant to
    do to toxicity; a negative coefficient is meant to do the opposite. instruct_means: the same
    for the instruction.
    """

    def intended(means: str, sign: float) -> str:
        down = (means == "less-toxic") == (sign > 0)
        return "" if sign == 0 else ("down" if down else "up")

    conditions = [Condition("baseline")] + [
        Condition(f"steer{alpha:+g}", "steer", alpha, intended(positive_means, alpha))
        for alpha in alphas
    ]
    conditions += [Condition("ablate", "ablate")] if ablate else []
    return conditions + (
        [Condition("instruct", "instruct", 0.0, intended(instruct_means, 1.0))] if instruct else []
    )


def instructed(prompt: str, instruction: str | None) -> str:
    """The prompt the instruct condition sends: the instruction, a blank line, then the prompt
    (the model's prompt format is applied to the whole, as to any prompt)."""
    return f"{instruction}\n\n{prompt}" if instruction else prompt


def intervention(model, condition: Condition, vector):
    """The context manager that applies `condition` (nothing for the baseline)."""
    return _intervention(model, condition, vector)


def _intervention(model, condition: Condition, vector):
    import contextlib

    from .steering import ablate, steer

    if condition.kind == "steer":
        return steer(model, vector, condition.alpha)
    if condition.kind == "ablate":
        return ablate(model, vector.direction)
    return (
        contextlib.nullcontext()
    )  # baseline, and instruct (which changes the prompt, not the model)


def _run_shard(
    model,
    records: Sequence[TextRecord],
    first_index: int,
    condition: Condition,
    c_index: int,
    config: ToxicityAuditConfig,
    scorers: list,
    vector,
):
    """One shard's rows. Sampled continuations draw from one generator per (seed, condition,
    prompt row, sample), so they do not depend on the batch size, the shard size or the worker."""
    import pandas as pd

    from .generation import generate, row_seed

    from .capability import continuation_fluency

    instruction = config.instruct if condition.kind == "instruct" else None
    prompts = [instructed(r.text, instruction) for r in records]
    rows, generations = [], []
    with _intervention(model, condition, vector):
        for sample in range(config.samples):
            seeds = [
                row_seed(config.seed, c_index, first_index + i, sample) for i in range(len(records))
            ]
            outputs = generate(
                model,
                prompts,
                max_new_tokens=config.max_new_tokens,
                do_sample=config.samples > 1,
                temperature=config.temperature,
                raw=config.raw,
                batch_size=config.batch_size,
                seeds=seeds,
            )
            generations += outputs
            for i, (record, output) in enumerate(zip(records, outputs)):
                rows.append(
                    {
                        "condition": condition.name,
                        "alpha": condition.alpha,
                        "row": first_index + i,
                        "sample": sample,
                        "line": record.line,
                        "prompt": record.text,
                        "continuation": output.text,
                        "new_tokens": len(output.new_tokens),
                    }
                )
    # Fluency is judged by the unsteered model (outside the intervention), on the exact prompt tokens,
    # one continuation at a time: no padding, so the numbers do not depend on the batch or shard size.
    for row, fluency in zip(rows, continuation_fluency(model, generations, batch_size=1)):
        row.update(fluency)
    frame = pd.DataFrame(rows)
    for scorer in scorers:
        for column, texts in (
            ("prompt", frame["prompt"].tolist()),
            ("continuation", frame["continuation"].tolist()),
        ):
            scores = scorer.score(texts)
            frame[
                f"{column}_toxicity[{scores['scorer'].iloc[0] if len(scores) else scorer.name}]"
            ] = scores["toxicity"].to_numpy()
    return frame


def load_results(out: str | Path):
    """The shards of an audit folder as one DataFrame, in condition, row and sample order.

    Only the shards recorded in ``shards.json`` are read (a stray copy in shards/ is
    ignored), and each must match its recorded sha256; folders from before the index read
    the shards named after run.json's conditions.
    """
    import pandas as pd

    from .remote import is_url, staged
    from .storage import ShardIndex

    if is_url(out):  # s3://...: read from a staging copy
        with staged(out) as local:
            return load_results(local)
    out = Path(out)
    run = read_run(out)
    names = [c["name"] for c in run["conditions"]]
    index_path = out / SHARD_INDEX
    if index_path.exists():
        index = ShardIndex(index_path)
        shards = [out / "shards" / name for name in sorted(index.entries)]
        for shard in shards:
            if not index.verified(shard):
                raise InputError(
                    f"shard {shard.name} is missing or damaged (it does not match its recorded "
                    "sha256); rerun the audit command to recompute it",
                    str(out),
                )
    else:
        pattern = re.compile("^(" + "|".join(re.escape(n) for n in names) + r")-\d{5}\.parquet$")
        shards = sorted(p for p in (out / "shards").glob("*.parquet") if pattern.match(p.name))
    if not shards:
        raise InputError(
            "no result shards (shards/*.parquet): not an audit folder, or nothing finished yet",
            str(out),
        )
    try:
        frame = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    except Exception as error:
        raise InputError(
            f"unreadable shard ({type(error).__name__}); rerun the audit command to recompute it",
            str(out),
        ) from None
    order = {name: i for i, name in enumerate(names)}
    frame["_order"] = frame["condition"].map(order)
    keys = ["_order", "row"] + (["sample"] if "sample" in frame.columns else [])
    return frame.sort_values(keys, ignore_index=True, kind="stable").drop(columns="_order")


def is_audit_folder(folder: str | Path) -> bool:
    """Whether `folder` holds an audit's run.json (activation caches have a run.json too)."""
    try:
        return read_run(folder).get("format") == AUDIT_FORMAT
    except (OSError, ValueError, AttributeError, InputError):
        return False


def read_run(out: str | Path) -> dict:
    """An audit folder's run.json (settings); "audit" says which kind (toxicity for old folders)."""
    path = Path(out) / "run.json"
    if not path.is_file():
        raise InputError("no run.json: not an audit folder", str(out))
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise InputError(f"damaged run.json ({type(error).__name__})", str(path)) from None
    if (
        not isinstance(run, dict)
        or not isinstance(run.get("conditions"), list)
        or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in run["conditions"]
        )
    ):
        raise InputError("run.json is not an audit's settings (no list of conditions)", str(path))
    run.setdefault("audit", "toxicity")
    if run["audit"] not in AUDIT_KINDS:
        raise InputError(f"run.json names an unknown audit kind {run['audit']!r}", str(path))
    return run


def _write_atomically(path: Path, data: bytes) -> None:
    from .storage import write_atomically

    write_atomically(path, data)
