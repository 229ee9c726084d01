"""Toxicity scorers behind one protocol: texts in, a table of named scores out.

Backends (`make_scorer(name)`):

- "detoxify" (``detoxify:original``, ``detoxify:unbiased``, ``detoxify:multilingual``):
  Detoxify's transformer classifiers. Checkpoints come from a local file
  (``checkpoint=``), the torch hub cache, or Detoxify's GitHub release (downloaded
  explicitly on first use). They are read with ``torch.load(weights_only=True)``
  (Detoxify's own loader unpickles arbitrary objects) and the model is built by
  Detoxify's own ``get_model_and_tokenizer``. Texts longer than 512 tokens are
  scored in 510-token chunks and each label takes the maximum over chunks.
- "profanity-check": the ``alt-profanity-check`` package (a linear model shipped
  inside the package; offline). Lexical: strong on insults and swearing, weak on
  implicit hate.
- "probe": a saved activation probe (`workbench.probes.Probe`) applied to the
  model's own activations on the text.
- "auto": Detoxify when its checkpoint is on disk, else profanity-check.

Every table has a ``scorer`` column saying what produced it, and a ``toxicity``
column in [0, 1]. No scorer calls a web API. Every scorer declares its ``kind``
(``lexical``, ``learned classifier`` or ``activation probe``) and its
``details()``: what decides its numbers (package version, checkpoint sha256, and
for a probe its model, hook, positions, test AUROC and calibration error), which
audits record in run.json and reports print beside every number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import torch

from ..errors import InputError, ModelUnavailableError

DETOXIFY_VARIANTS = ("original", "unbiased", "multilingual")
# The architectures Detoxify's own checkpoints use: (model_type = the HF repo its tokenizer and config
# come from, model_name = the transformers class). A checkpoint naming anything else is refused, so a
# crafted one cannot make transformers fetch another repository or build another class.
DETOXIFY_ARCHITECTURES = {("bert-base-uncased", "BertForSequenceClassification"),
                          ("roberta-base", "RobertaForSequenceClassification"),
                          ("xlm-roberta-base", "XLMRobertaForSequenceClassification")}
CHUNK_TOKENS = 510


class ToxicityScorer(Protocol):
    name: str
    kind: str

    def details(self) -> dict:
        """What decides this scorer's numbers: kind, version, checkpoint hash (JSON-able)."""

    def score(self, texts: Sequence[str]):
        """A pandas DataFrame with one row per text: ``scorer``, ``toxicity`` and any other labels."""


def _frame(name: str, columns: dict[str, list[float]]):
    import pandas as pd

    frame = pd.DataFrame(columns)
    frame.insert(0, "scorer", name)
    return frame


@dataclass
class ProfanityCheckScorer:
    """``alt-profanity-check``: probability that a text is offensive."""

    name: str = "profanity-check"
    kind: str = "lexical"

    def details(self) -> dict:
        from importlib import resources

        from ..provenance import file_sha256, versions

        data = resources.files("profanity_check") / "data"
        return {"name": self.name, "kind": self.kind, "package": "alt-profanity-check",
                "version": versions()["alt-profanity-check"],
                "checkpoint_sha256": {f: file_sha256(data / f) for f in ("model.joblib", "vectorizer.joblib")}}

    def score(self, texts: Sequence[str]):
        from profanity_check import predict_prob

        return _frame(self.name, {"toxicity": [float(p) for p in predict_prob(list(texts))]} if texts else
                      {"toxicity": []})


@dataclass
class ProbeScorer:
    """A saved activation probe read on the model's own activations."""

    model: object
    probe: object
    name: str = "probe"
    kind: str = "activation probe"
    path: str | None = None

    def __post_init__(self):
        from ..probes import check_probe_fits

        check_probe_fits(self.model, self.probe)  # another model, width or positions: exit 2 before any work

    def details(self) -> dict:
        from ..provenance import file_sha256

        metrics, meta = self.probe.metrics, self.probe.meta
        return {"name": f"{self.name}:{self.probe.hook}", "kind": self.kind, "hook": self.probe.hook,
                "path": self.path, "model": meta.get("model"), "positions": meta.get("positions"),
                "data": meta.get("data"), "data_sha256": meta.get("data_sha256"),
                "checkpoint_sha256": file_sha256(Path(self.path) / "probe.safetensors") if self.path else None,
                "test_auroc": metrics.get("test_auroc"), "test_auroc_interval": metrics.get("test_auroc_interval"),
                "test_ece": metrics.get("test_ece"), "n_test": metrics.get("n_test")}

    def score(self, texts: Sequence[str]):
        from ..probes import probe_scores

        values = probe_scores(self.model, self.probe, list(texts)).tolist() if texts else []
        return _frame(f"{self.name}:{self.probe.hook}", {"toxicity": values})


def detoxify_checkpoint_path(variant: str) -> Path:
    """Where torch hub keeps Detoxify's checkpoint for `variant` (it may not exist yet)."""
    from detoxify.detoxify import MODEL_URLS

    url = MODEL_URLS[variant]
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


@dataclass
class DetoxifyScorer:
    """Detoxify, loaded safely (see module docstring)."""

    variant: str = "original"
    checkpoint: str | None = None
    huggingface_config_path: str | None = None
    device: str = "cpu"
    batch_size: int = 16
    download: bool = False
    name: str = field(init=False)
    kind: str = "learned classifier"

    def __post_init__(self):
        from detoxify import Detoxify
        from detoxify.detoxify import MODEL_URLS, get_model_and_tokenizer

        if self.variant not in MODEL_URLS:
            raise InputError(f"unknown Detoxify variant {self.variant!r}; choose from {', '.join(DETOXIFY_VARIANTS)}")
        path = Path(self.checkpoint) if self.checkpoint else detoxify_checkpoint_path(self.variant)
        if not path.exists():
            if self.checkpoint or not self.download:
                raise ModelUnavailableError(
                    f"Detoxify {self.variant}: no checkpoint at {path}. Fix: pass a local checkpoint file, or allow "
                    f"the download from {MODEL_URLS[self.variant]} (download=True / `--scorer-download`); "
                    "or use the offline 'profanity-check' scorer")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(MODEL_URLS[self.variant], str(path))
        try:
            loaded = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:
            raise ModelUnavailableError(f"Detoxify checkpoint {path} could not be loaded safely "
                                        f"(weights_only=True): {type(error).__name__}: {error}") from None
        if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
            raise ModelUnavailableError(f"{path} is not a Detoxify checkpoint (needs 'config' and 'state_dict')")
        try:
            arch = dict(loaded["config"]["arch"]["args"])
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
        except (KeyError, TypeError, ValueError):
            raise ModelUnavailableError(f"{path} is not a Detoxify checkpoint (no config.arch.args or "
                                        "config.dataset.args.classes)") from None
        if (arch.get("model_type"), arch.get("model_name")) not in DETOXIFY_ARCHITECTURES:
            raise InputError(f"Detoxify checkpoint {path} names architecture {arch.get('model_type')!r} / "
                             f"{arch.get('model_name')!r}; only Detoxify's own "
                             f"({', '.join(sorted(t for t, _ in DETOXIFY_ARCHITECTURES))}) are accepted")
        unexpected = set(arch) - {"model_type", "model_name", "tokenizer_name", "num_classes"}
        if arch.get("tokenizer_name", "BertTokenizer") not in ("BertTokenizer", "RobertaTokenizer",
                                                               "XLMRobertaTokenizer"):
            unexpected.add(f"tokenizer_name={arch['tokenizer_name']!r}")
        if unexpected or not all(isinstance(c, str) for c in classes):
            raise InputError(f"Detoxify checkpoint {path} has unexpected architecture arguments "
                             f"({', '.join(sorted(unexpected)) or 'class names'})")
        if self.huggingface_config_path:  # build offline from a local config/tokenizer folder
            arch["model_type"] = self.huggingface_config_path
        model, tokenizer = get_model_and_tokenizer(**arch, state_dict=loaded["state_dict"],
                                                   huggingface_config_path=self.huggingface_config_path)
        renames = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
        detox = Detoxify.__new__(Detoxify)  # Detoxify's own object and predict(), minus its unsafe loader
        detox.model, detox.tokenizer, detox.device = model.to(self.device).eval(), tokenizer, self.device
        detox.class_names = [renames.get(c, c) for c in classes]
        self.detoxify = detox
        self.name = f"detoxify:{self.variant}"
        self.checkpoint_path = path

    def details(self) -> dict:
        from ..provenance import file_sha256, versions

        return {"name": self.name, "kind": self.kind, "package": "detoxify", "version": versions()["detoxify"],
                "checkpoint": str(self.checkpoint_path), "checkpoint_sha256": file_sha256(self.checkpoint_path)}

    def _chunks(self, text: str) -> list[str]:
        ids = self.detoxify.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= CHUNK_TOKENS:
            return [text]
        return [self.detoxify.tokenizer.decode(ids[i:i + CHUNK_TOKENS]) for i in range(0, len(ids), CHUNK_TOKENS)]

    def score(self, texts: Sequence[str]):
        pieces, owner = [], []
        for i, text in enumerate(texts):
            for chunk in self._chunks(text):
                pieces.append(chunk)
                owner.append(i)
        labels = self.detoxify.class_names
        best = torch.full((len(texts), len(labels)), float("-inf"))
        for first in range(0, len(pieces), self.batch_size):
            batch = pieces[first:first + self.batch_size]
            result = self.detoxify.predict(batch)
            values = torch.tensor([[result[label]] if len(batch) == 1 else result[label] for label in labels]).T
            for row, i in enumerate(owner[first:first + self.batch_size]):
                best[i] = torch.maximum(best[i], values[row].reshape(-1))
        return _frame(self.name, {label: best[:, j].tolist() for j, label in enumerate(labels)})


def make_scorer(name: str, model=None, probe_path: str | None = None, **options) -> ToxicityScorer:
    """A scorer by name: "auto", "profanity-check", "detoxify[:variant]" or "probe" (needs model + probe_path)."""
    if name == "auto":
        variant = options.pop("variant", "original")
        if options.get("checkpoint") or detoxify_checkpoint_path(variant).exists():
            return DetoxifyScorer(variant, **options)
        return ProfanityCheckScorer()
    if name == "profanity-check":
        return ProfanityCheckScorer()
    if name.startswith("detoxify"):
        variant = name.split(":", 1)[1] if ":" in name else options.pop("variant", "original")
        return DetoxifyScorer(variant, **options)
    if name == "probe":
        from ..probes import Probe

        if model is None or not probe_path:
            raise InputError("the probe scorer needs a model and a saved probe folder")
        return ProbeScorer(model, Probe.load(probe_path), path=str(probe_path))
    raise InputError(f"unknown scorer {name!r}; choose auto, profanity-check, detoxify[:variant] or probe")
