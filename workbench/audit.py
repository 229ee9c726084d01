"""Batch toxicity audits: generate continuations, score them, write Parquet shards, resume after a crash.

    workbench audit toxicity --model smollm2-135m --prompts prompts.txt --out results/tox \\
        --steer probes/polite_vs_rude_pairs.jsonl --layer 15 --alpha -4 4

One run audits one or more conditions: the unsteered baseline, then one condition
per steering coefficient (or a directional ablation). For each condition the
prompts are cut into shards; each shard generates continuations (greedy, or
`samples` seeded samples per prompt), scores prompt and continuation with every
scorer, and is written atomically as ``shards/<condition>-NNNNN.parquet``. A
killed run, rerun with the same arguments, skips finished shards; since every
shard's batches and seeds depend only on its index, the results equal an
uninterrupted run's row for row. ``run.json`` holds the settings and is checked
on resume; `workbench.report` turns the shards into ``summary.json`` and ``report.html``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .datasets import TextRecord
from .errors import InputError

AUDIT_FORMAT = "workbench-audit/1"


@dataclass(frozen=True)
class Condition:
    """One intervention setting: "baseline", "steer" (alpha) or "ablate"."""

    name: str
    kind: str = "baseline"
    alpha: float = 0.0


@dataclass(frozen=True)
class ToxicityAuditConfig:
    """Everything that decides the results (saved as run.json and compared on resume)."""

    model: dict
    prompts_file: str
    prompts_sha256: str
    n_prompts: int
    scorers: list[str]
    seed: int = 0
    max_new_tokens: int = 32
    samples: int = 1
    temperature: float = 1.0
    raw: bool = False
    batch_size: int = 8
    shard_size: int = 32
    steer: dict | None = None
    conditions: list[dict] = field(default_factory=list)
    format: str = AUDIT_FORMAT


def prompts_sha256(records: Sequence[TextRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.text.encode() + b"\n")
    return digest.hexdigest()


def _shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def run_toxicity_audit(model, records: Sequence[TextRecord], out: str | Path, config: ToxicityAuditConfig,
                       scorers: list, vector=None, progress: bool = True) -> Path:
    """Run (or resume) the audit described by `config`; returns the output folder.

    `scorers` are objects with `.name` and `.score(texts)` (workbench.scanners.toxicity);
    `vector` is the SteeringVector that steer/ablate conditions use.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    settings = asdict(config)
    run_file = out / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        differing = [k for k in settings if previous.get(k) != settings[k] and k != "model"]
        differing += ["model"] if previous.get("model", {}).get("name") != config.model.get("name") else []
        if differing:
            raise InputError(f"holds an audit with other settings ({', '.join(differing)} differ); "
                             "choose another --out or delete the folder", str(out))
    else:
        _write_atomically(run_file, (json.dumps(settings, indent=2) + "\n").encode())
    conditions = [Condition(**c) for c in config.conditions]
    ranges = _shard_ranges(len(records), config.shard_size)
    total = len(conditions) * len(records) * config.samples
    with tqdm(total=total, unit="row", desc="auditing", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        for c_index, condition in enumerate(conditions):
            for s_index, (start, end) in enumerate(ranges):
                path = out / "shards" / f"{condition.name}-{s_index:05d}.parquet"
                if not path.exists():
                    frame = _run_shard(model, records[start:end], start, condition, config, scorers, vector,
                                       seed=config.seed + 1000 * c_index + s_index)
                    tmp = path.with_suffix(".tmp")
                    frame.to_parquet(tmp, index=False)
                    os.replace(tmp, path)
                bar.update((end - start) * config.samples)
    return out


def conditions_for(alphas: Sequence[float], ablate: bool) -> list[Condition]:
    """The baseline, one steering condition per coefficient, and optionally an ablation."""
    conditions = [Condition("baseline")] + [Condition(f"steer{alpha:+g}", "steer", alpha) for alpha in alphas]
    return conditions + ([Condition("ablate", "ablate")] if ablate else [])


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
    return contextlib.nullcontext()


def _run_shard(model, records: Sequence[TextRecord], first_index: int, condition: Condition,
               config: ToxicityAuditConfig, scorers: list, vector, seed: int):
    import pandas as pd

    from .generation import generate

    prompts = [r.text for r in records]
    rows = []
    with _intervention(model, condition, vector):
        for sample in range(config.samples):
            outputs = generate(model, prompts, max_new_tokens=config.max_new_tokens, do_sample=config.samples > 1,
                               temperature=config.temperature, seed=seed * 100 + sample, raw=config.raw,
                               batch_size=config.batch_size)
            for i, (record, output) in enumerate(zip(records, outputs)):
                rows.append({"condition": condition.name, "alpha": condition.alpha, "row": first_index + i,
                             "sample": sample, "line": record.line, "prompt": record.text,
                             "continuation": output.text, "new_tokens": len(output.new_tokens)})
    frame = pd.DataFrame(rows)
    for scorer in scorers:
        for column, texts in (("prompt", frame["prompt"].tolist()), ("continuation", frame["continuation"].tolist())):
            scores = scorer.score(texts)
            frame[f"{column}_toxicity[{scores['scorer'].iloc[0] if len(scores) else scorer.name}]"] = \
                scores["toxicity"].to_numpy()
    return frame


def load_results(out: str | Path):
    """All shards of an audit folder as one DataFrame, in condition, row and sample order."""
    import pandas as pd

    shards = sorted((Path(out) / "shards").glob("*.parquet"))
    if not shards:
        raise InputError("no result shards (shards/*.parquet): not an audit folder, or nothing finished yet",
                         str(out))
    frame = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    run = json.loads((Path(out) / "run.json").read_text())
    order = {c["name"]: i for i, c in enumerate(run["conditions"])}
    frame["_order"] = frame["condition"].map(order)
    return frame.sort_values(["_order", "row", "sample"], ignore_index=True).drop(columns="_order")


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
