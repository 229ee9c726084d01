"""One interface for every way the workbench changes a model's behaviour: build, apply, save, load.

    d = direction_from_pairs(model, "probes/polite_vs_rude_pairs.jsonl", layer=9)
    iv = add(model, d, coefficient=0.1)          # + 10% of the mean residual norm at layer 9
    with iv.applied(model):                      # every forward pass and generation step
        wb.generate(model, "...")
    iv.save("detox/")                            # intervention.json + intervention.safetensors
    iv = load_intervention("detox/", model)      # or a shipped name: "smollm2-135m-detox"
    gens, fired = generate_under(model, iv, prompts, seeds=...)   # what audits call

Methods (`METHODS`):

- ``add`` (CAA, Rimsky et al. 2024): a unit direction added after block L for each L in `layers`,
  scaled by `coefficient` x the mean residual-stream norm there (`norms`, measured on held-out
  neutral text over every token but the first), so 0.1 is 10% of the typical norm at that layer;
  `raw_scales` records what was added. positions "all" adds at every position of every pass;
  "generated" only where a new token is predicted: the last prompt position and each generation
  step (in a teacher-forced pass, such as the capability check's, only the last position);
- ``ablate``: the direction projected out of every residual-stream write and block input;
- ``orthogonalise``: the same as a weight edit (`workbench.interp.weight_edit`);
- ``prompt``: an instruction before every prompt (the prompting baseline), the model untouched;
- ``conditional`` (CAST-like, Lee et al. 2025): `inner` applied only to prompts on which a saved
  probe, read on the unmodified model, scores above `threshold`; `fires` says where.

`intended` is the change of toxicity the intervention is meant to cause ("down" for a
detoxification); audits judge "moved as intended" by it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..core.display import Tabled, clip
from ..core.errors import InputError
from ..core.paths import package_data
from ..core.provenance import versions
from ..interp.probes import Probe, check_probe_fits, probe_scores
from ..interp.steering import ablate as ablate_hooks
from ..interp.weight_edit import orthogonalised
from ..model.generation import generate
from ..model.hooks import apply_hooks
from .capability import capability_rows
from .directions import Direction, direction_from_pairs, residual_norms

FORMAT = "workbench-intervention/1"
METHODS = ("add", "ablate", "orthogonalise", "prompt", "conditional")
POSITIONS = ("all", "generated")
SHIPPED = package_data("interventions")  # named interventions that ship with the package
NORM_TEXTS = package_data("probes", "heldout_neutral.txt")


@dataclass
class Intervention:
    """One intervention (see the module docstring for the methods and their fields)."""

    method: str
    name: str
    model: dict  # name, d_model and n_layers of the model it was made for
    direction: torch.Tensor | None = None  # Float[Tensor, "d_model"], unit length
    layers: list[int] = field(default_factory=list)
    coefficient: float = 0.0  # add: in units of the mean residual norm at each layer
    norms: dict[int, float] = field(default_factory=dict)
    positions: str = "all"
    instruction: str | None = None
    inner: "Intervention | None" = None
    probe: Probe | None = None
    threshold: float = 0.5
    towards: str = ""
    source: dict = field(default_factory=dict)
    intended: str = "down"
    provenance: dict = field(default_factory=dict)
    folder: str | None = None  # where it was loaded from (named in errors)

    def __repr__(self) -> str:
        return f"Intervention({self.describe_text()})"

    @property
    def raw_scales(self) -> dict[int, float]:
        """add: {layer: the norm of the vector added there} = coefficient x measured norm."""
        return {layer: self.coefficient * self.norms[layer] for layer in self.layers}

    def describe_text(self) -> str:
        """One line for reports: method, where, how much, from what."""
        source = self.source.get("path") or self.source.get("kind") or ""
        if self.method == "add":
            scales = ", ".join(f"L{k} {v:.3g}" for k, v in self.raw_scales.items())
            return (
                f"add {self.coefficient:+g} x mean residual norm at layer(s) "
                f"{','.join(map(str, self.layers))} (raw {scales}), positions {self.positions}, "
                f"direction towards {self.towards} from {source}"
            )
        if self.method in ("ablate", "orthogonalise"):
            how = "weight edit" if self.method == "orthogonalise" else "hooks"
            return f"{self.method} ({how}) the layer-{self.layers[0]} direction from {source}"
        if self.method == "prompt":
            return f"prompt: {self.instruction!r} before every prompt"
        return (
            f"conditional on {self.probe.hook} probe > {self.threshold:g}: "
            f"{self.inner.describe_text()}"
        )

    def describe(self) -> dict:
        """The JSON fields that define it (intervention.json, run.json), tensors by sha256."""
        fields = {
            "format": FORMAT,
            "method": self.method,
            "name": self.name,
            "description": self.describe_text(),
            "model": self.model,
            "layers": self.layers,
            "coefficient": self.coefficient,
            "norms": {str(k): v for k, v in self.norms.items()},
            "raw_scales": {str(k): v for k, v in self.raw_scales.items()}
            if self.method == "add"
            else {},
            "positions": self.positions,
            "instruction": self.instruction,
            "threshold": self.threshold if self.method == "conditional" else None,
            "towards": self.towards,
            "source": self.source,
            "intended": self.intended,
        }
        if self.direction is not None:
            fields["direction_sha256"] = _tensor_sha256(self.direction)
        if self.inner is not None:
            fields["inner"] = self.inner.describe()
        if self.probe is not None:
            fields["probe"] = {"hook": self.probe.hook, "meta": self.probe.meta}
        return fields

    def check_fits(self, model) -> None:
        """InputError unless it was made for this model (name and width) and its layers exist."""
        info = model.info
        if self.model.get("d_model") != info.d_model or self.model.get("name") != info.name:
            raise InputError(
                f"intervention {self.name!r} was made for {self.model.get('name')!r} (d_model "
                f"{self.model.get('d_model')}), not {info.name!r} (d_model {info.d_model})",
                self.folder,
            )
        bad = [layer for layer in self.layers if not 0 <= layer < info.n_layers]
        if bad:
            raise InputError(
                f"intervention {self.name!r}: layer {bad[0]} is out of range for {info.name} "
                f"(0 to {info.n_layers - 1})",
                self.folder,
            )
        if self.inner is not None:
            self.inner.check_fits(model)
        if self.probe is not None:
            check_probe_fits(model, self.probe)

    @contextlib.contextmanager
    def applied(self, model) -> Iterator[None]:
        """The model changed by this intervention inside the block (prompt: unchanged)."""
        if self.method == "add":
            hooks = [
                (
                    f"blocks.{layer}.hook_resid_post",
                    _add_hook(self.direction * scale, self.positions),
                )
                for layer, scale in self.raw_scales.items()
            ]
            with apply_hooks(model, hooks):
                yield
        elif self.method == "ablate":
            with ablate_hooks(model, self.direction):
                yield
        elif self.method == "orthogonalise":
            with orthogonalised(model, self.direction):
                yield
        elif self.method == "conditional":
            with self.inner.applied(model):
                yield
        else:
            yield

    @property
    def prefix(self) -> str:
        """The instruction sent before each prompt ("" for the methods that change the model)."""
        if self.method == "prompt":
            return self.instruction or ""
        return self.inner.prefix if self.inner is not None else ""

    def prompt_text(self, prompt: str) -> str:
        """The prompt the intervened model is sent (an instruction, a blank line, the prompt)."""
        return f"{self.prefix}\n\n{prompt}" if self.prefix else prompt

    def fires(self, model, prompts: Sequence[str]) -> list[bool]:
        """Whether it applies to each prompt: always, but for conditional only where the probe,
        read on the unmodified model, scores above the threshold."""
        if self.method != "conditional":
            return [True] * len(prompts)
        if not prompts:
            return []
        return [float(s) > self.threshold for s in probe_scores(model, self.probe, list(prompts))]

    def save(self, folder: str | Path) -> Path:
        """intervention.json (+ intervention.safetensors, + probe/ and inner/ for conditional)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.direction is not None:
            save_file(
                {"direction": self.direction.detach().float().cpu().contiguous()},
                str(folder / "intervention.safetensors"),
            )
        if self.probe is not None:
            self.probe.save(folder / "probe")
        if self.inner is not None:
            self.inner.save(folder / "inner")
        meta = {**self.describe(), "provenance": self.provenance, "versions": dict(versions())}
        (folder / "intervention.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return folder


def _tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _add_hook(vector: torch.Tensor, positions: str):
    def hook(resid: torch.Tensor, _point) -> torch.Tensor:
        add = vector.to(resid.device, resid.dtype)
        if positions == "all" or resid.shape[1] == 1:  # every position, or a generation step
            return resid + add
        out = resid.clone()
        out[:, -1] += add  # the prompt's last position predicts the first new token
        return out

    return hook


def model_fields(model) -> dict:
    info = model.info
    return {"name": info.name, "d_model": info.d_model, "n_layers": info.n_layers}


def _check_direction(model, direction: Direction) -> None:
    if direction.vector.shape != (model.info.d_model,):
        raise InputError(
            f"the direction has shape {list(direction.vector.shape)}, but {model.info.name} has "
            f"d_model {model.info.d_model}"
        )


def check_coefficient(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"coefficient {value} is not finite")
    return value


def add(
    model,
    direction: Direction,
    coefficient: float,
    layers: Sequence[int] | None = None,
    positions: str = "all",
    norm_texts: Sequence[str] | None = None,
) -> Intervention:
    """Add `coefficient` x (mean residual norm at L) x direction after each block L in `layers`
    (default: the direction's own layer). norm_texts: where the norms are measured (default the
    packaged held-out neutral texts)."""
    coefficient = check_coefficient(coefficient)
    _check_direction(model, direction)
    if positions not in POSITIONS:
        raise InputError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
    layers = [int(x) for x in (layers if layers is not None else [direction.layer])]
    if norm_texts is None:
        norm_texts = [t for t in NORM_TEXTS.read_text().splitlines() if t.strip()]
    norms = residual_norms(model, layers, norm_texts)
    name = f"add-L{'+'.join(map(str, layers))}-{coefficient:+g}"
    return Intervention(
        "add", name, model_fields(model), direction.vector, layers, coefficient, norms,
        positions, towards=direction.towards, source=direction.source,
    )  # fmt: skip


def ablate(model, direction: Direction) -> Intervention:
    """Project `direction` out of every residual-stream write and block input (hooks)."""
    _check_direction(model, direction)
    return Intervention(
        "ablate", f"ablate-L{direction.layer}", model_fields(model), direction.vector,
        [direction.layer], towards=direction.towards, source=direction.source, intended="",
    )  # fmt: skip


def orthogonalise(model, direction: Direction) -> Intervention:
    """The same ablation as a weight edit of every residual-stream writer."""
    return replace(
        ablate(model, direction), method="orthogonalise", name=f"orth-L{direction.layer}"
    )


def prompt(model, instruction: str) -> Intervention:
    """The prompting baseline: `instruction`, a blank line, then the prompt."""
    if not instruction or not instruction.strip():
        raise InputError("the instruction is empty")
    return Intervention("prompt", "prompt", model_fields(model), instruction=instruction)


def conditional(model, inner: Intervention, probe_path: str | Path, threshold: float = 0.5):
    """`inner`, applied only to prompts the saved probe scores above `threshold` (0 to 1)."""
    if not 0 <= float(threshold) <= 1:
        raise InputError(f"threshold must be between 0 and 1, not {threshold}")
    probe = Probe.load(probe_path)
    check_probe_fits(model, probe)
    return Intervention(
        "conditional", f"if-{inner.name}-p{float(threshold):g}", model_fields(model),
        inner=inner, probe=probe, threshold=float(threshold), intended=inner.intended,
        source={"kind": "probe", "path": str(probe_path)},
    )  # fmt: skip


def make(
    model,
    method: str,
    direction: Direction | None = None,
    coefficient: float = 0.0,
    instruction: str | None = None,
    positions: str = "all",
) -> Intervention:
    """One intervention by method name (add, ablate, orthogonalise, prompt): what the dashboard's
    and a notebook's pickers call. conditional needs a probe: use `conditional`."""
    if method not in METHODS or method == "conditional":
        raise InputError(
            f"method must be one of add, ablate, orthogonalise, prompt, not {method!r}"
        )
    if method == "prompt":
        return prompt(model, instruction or "")
    if direction is None:
        raise InputError(f"{method} needs a direction")
    if method == "add":
        return add(model, direction, coefficient, positions=positions)
    return ablate(model, direction) if method == "ablate" else orthogonalise(model, direction)


@dataclass(frozen=True)
class InterventionExample(Tabled):
    """One prompt continued without and with an intervention (greedy), each text scored: an
    example of what the intervention does (n = 1), not a measurement."""

    prompt: str
    description: str
    texts: tuple[str, str]
    toxicity: tuple[float | None, float | None]
    scorer: str

    def to_frame(self):
        return pd.DataFrame(
            {"model": ["unmodified", "intervened"], "continuation": self.texts,
             "toxicity": self.toxicity}
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"InterventionExample({clip(self.prompt)}, {clip(self.description, 60)})"


def example(model, iv: Intervention, prompt_text: str, scorer=None, max_new_tokens: int = 32):
    """`prompt_text` continued greedily without and with `iv`, scored by `scorer` (or None)."""
    options = dict(max_new_tokens=max_new_tokens, progress=False)
    plain = generate(model, [prompt_text], **options)[0].text
    changed = generate_under(model, iv, [prompt_text], [0], **options)[0][0].text
    toxicity, name = (None, None), ""
    if scorer is not None:
        scores = scorer.score([plain, changed])
        toxicity = tuple(float(v) for v in scores["toxicity"])
        name = str(scores["scorer"].iloc[0])
    return InterventionExample(prompt_text, iv.describe_text(), (plain, changed), toxicity, name)


def pairs_example(
    model,
    pairs,
    layer: int,
    method: str,
    coefficient: float,
    instruction: str | None,
    prompt_text: str,
    scorer=None,
    max_new_tokens: int = 32,
) -> InterventionExample:
    """`example` for the intervention `make` builds from a contrast-pair file's direction at
    `layer` (not computed for the prompt method): the dashboard's steering page."""
    direction = None if method == "prompt" else direction_from_pairs(model, pairs, layer)
    made = make(model, method, direction, coefficient, instruction)
    return example(model, made, prompt_text, scorer, max_new_tokens)


def load_intervention(where: str | Path, model=None) -> Intervention:
    """A saved intervention folder, or the name of a shipped one; with `model`, checked to fit."""
    folder = Path(where)
    if not folder.exists() and (SHIPPED / str(where)).is_dir():
        folder = SHIPPED / str(where)
    meta_path = folder / "intervention.json"
    if not meta_path.is_file():
        shipped = ", ".join(sorted(p.name for p in SHIPPED.iterdir())) if SHIPPED.is_dir() else ""
        raise InputError(
            f"{where}: no intervention.json there; give a folder written by Intervention.save or "
            f"`workbench intervene search`, or a shipped name ({shipped or 'none'})"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", str(meta_path)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} file (field 'format')", str(meta_path))
    if meta.get("method") not in METHODS:
        raise InputError(
            f"unknown method {meta.get('method')!r} (field 'method'); known: {', '.join(METHODS)}",
            str(meta_path),
        )
    direction = None
    if (folder / "intervention.safetensors").is_file():
        direction = load_file(str(folder / "intervention.safetensors")).get("direction")
        if direction is None or direction.dim() != 1 or not torch.isfinite(direction).all():
            raise InputError("'direction' is missing, not 1-D or not finite", str(folder))
    elif meta["method"] in ("add", "ablate", "orthogonalise"):
        raise InputError("intervention.safetensors is missing", str(folder))
    iv = Intervention(
        meta["method"], str(meta["name"]), dict(meta["model"]), direction,
        [int(x) for x in meta.get("layers", [])], float(meta.get("coefficient", 0.0)),
        {int(k): float(v) for k, v in meta.get("norms", {}).items()},
        meta.get("positions", "all"), meta.get("instruction"),
        load_intervention(folder / "inner") if meta["method"] == "conditional" else None,
        Probe.load(folder / "probe") if meta["method"] == "conditional" else None,
        float(meta.get("threshold") or 0.5), meta.get("towards", ""), meta.get("source", {}),
        meta.get("intended", "down"), meta.get("provenance", {}), str(folder),
    )  # fmt: skip
    if model is not None:
        iv.check_fits(model)
    return iv


def generate_under(
    model,
    iv: Intervention,
    prompts: Sequence[str],
    seeds: Sequence[int],
    fired: Sequence[bool] | None = None,
    **options,
) -> tuple[list, list[bool]]:
    """(generations, fired): each prompt continued under `iv` where it fires, plainly elsewhere;
    `options` go to `workbench.generate`; fired: `iv.fires(model, prompts)` when computed already.
    Rows keep their own seeds, so the text of a row does not depend on which other rows fired."""
    fired = list(fired) if fired is not None else iv.fires(model, prompts)
    out: list = [None] * len(prompts)
    for on in (True, False):
        rows = [i for i, f in enumerate(fired) if f == on]
        if not rows:
            continue
        texts = [iv.prompt_text(prompts[i]) if on else prompts[i] for i in rows]
        with iv.applied(model) if on else contextlib.nullcontext():
            outputs = generate(model, texts, seeds=[seeds[i] for i in rows], **options)
        for i, output in zip(rows, outputs):
            out[i] = output
    return out, fired


def capability_under(model, iv: Intervention, items: Sequence, batch_size: int, on_batch=None):
    """`workbench.safety.capability.capability_rows` under `iv`: each item scored with the
    intervention where it fires on the item's text, plainly elsewhere (item order kept)."""
    fired = iv.fires(model, [item.text for item in items])
    rows: list = [None] * len(items)
    for on in (True, False):
        index = [i for i, f in enumerate(fired) if f == on]
        if not index:
            continue
        with iv.applied(model) if on else contextlib.nullcontext():
            got = capability_rows(
                model, [items[i] for i in index], iv.prefix if on else "", batch_size, on_batch
            )
        for i, row in zip(index, got):
            rows[i] = {**row, "intervened": on}
    return rows
