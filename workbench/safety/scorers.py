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
- "toxic-comment-classifier": a BiLSTM trained on Jigsaw's toxic comments, shipped
  inside its PyPI package (offline), run by our own torch copy of its network.
- "probe": a saved activation probe (`workbench.interp.probes.Probe`) applied to the
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

import collections
import importlib.util
import io
import pickle
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol, Sequence

import pandas as pd
import torch

from ..core.display import Tabled
from ..core.errors import InputError, ModelUnavailableError
from ..core.provenance import file_sha256, versions
from ..core.stats import auroc_interval, calibration, estimate_from_dict
from ..interp.probes import Probe, check_probe_fits, probe_scores

DETOXIFY_VARIANTS = ("original", "unbiased", "multilingual")
# The architectures Detoxify's own checkpoints use: (model_type = the HF repo its tokenizer and config
# come from, model_name = the transformers class). A checkpoint naming anything else is refused, so a
# crafted one cannot make transformers fetch another repository or build another class.
DETOXIFY_ARCHITECTURES = {
    ("bert-base-uncased", "BertForSequenceClassification"),
    ("roberta-base", "RobertaForSequenceClassification"),
    ("xlm-roberta-base", "XLMRobertaForSequenceClassification"),
}
CHUNK_TOKENS = 510


class ToxicityScorer(Protocol):
    name: str
    kind: str

    def details(self) -> dict:
        """What decides this scorer's numbers: kind, version, checkpoint hash (JSON-able)."""

    def score(self, texts: Sequence[str]):
        """A pandas DataFrame with one row per text: ``scorer``, ``toxicity`` and any other labels."""


def _frame(name: str, columns: dict[str, list[float]]):
    frame = pd.DataFrame(columns)
    frame.insert(0, "scorer", name)
    return frame


@dataclass
class ProfanityCheckScorer:
    """``alt-profanity-check``: probability that a text is offensive."""

    name: str = "profanity-check"
    kind: str = "lexical"

    def details(self) -> dict:
        data = resources.files("profanity_check") / "data"
        return {
            "name": self.name,
            "kind": self.kind,
            "package": "alt-profanity-check",
            "version": versions()["alt-profanity-check"],
            "checkpoint_sha256": {
                f: file_sha256(data / f) for f in ("model.joblib", "vectorizer.joblib")
            },
        }

    def score(self, texts: Sequence[str]):
        # lazy: loaded only by the profanity-check scorer
        from profanity_check import predict_prob

        return _frame(
            self.name,
            {"toxicity": [float(p) for p in predict_prob(list(texts))]}
            if texts
            else {"toxicity": []},
        )


@dataclass
class ProbeScorer:
    """A saved activation probe read on the model's own activations."""

    model: object
    probe: object
    name: str = "probe"
    kind: str = "activation probe"
    path: str | None = None

    def __post_init__(self):
        # another model, width or positions: exit 2 before any work
        check_probe_fits(self.model, self.probe)

    def details(self) -> dict:
        metrics, meta = self.probe.metrics, self.probe.meta
        return {
            "name": f"{self.name}:{self.probe.hook}",
            "kind": self.kind,
            "hook": self.probe.hook,
            "path": self.path,
            "model": meta.get("model"),
            "positions": meta.get("positions"),
            "data": meta.get("data"),
            "data_sha256": meta.get("data_sha256"),
            "checkpoint_sha256": file_sha256(Path(self.path) / "probe.safetensors")
            if self.path
            else None,
            "test_auroc": metrics.get("test_auroc"),
            "test_auroc_interval": metrics.get("test_auroc_interval"),
            "test_ece": metrics.get("test_ece"),
            "n_test": metrics.get("n_test"),
        }

    def score(self, texts: Sequence[str]):
        values = probe_scores(self.model, self.probe, list(texts)).tolist() if texts else []
        return _frame(f"{self.name}:{self.probe.hook}", {"toxicity": values})


JIGSAW_LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
BILSTM_MAXLEN, BILSTM_VOCAB = 100, 20000  # the shipped model's input length and embedding rows
# The only classes the shipped tokenizer pickle may name; anything else is refused (see _read_keras_tokenizer).
_TOKENIZER_CLASSES = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "int"),
}


class _KerasTokenizerState:
    """Stands in for keras' legacy Tokenizer while its pickled state is read: attributes only."""


def _read_keras_tokenizer(path: Path) -> dict:
    """The word index and settings of the shipped Keras Tokenizer pickle, read by an unpickler that
    builds nothing but dicts, ints and strings (no pickle from outside is ever run as code)."""

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("keras.src.legacy.preprocessing.text", "Tokenizer"):
                return _KerasTokenizerState
            if (module, name) in _TOKENIZER_CLASSES:
                return {
                    "OrderedDict": collections.OrderedDict,
                    "defaultdict": collections.defaultdict,
                    "int": int,
                }[name]
            raise pickle.UnpicklingError(f"{path} names {module}.{name}; refused")

    state = Restricted(io.BytesIO(path.read_bytes())).load()
    if not isinstance(state, _KerasTokenizerState) or not isinstance(
        getattr(state, "word_index", None), dict
    ):
        raise ModelUnavailableError(
            f"{path} is not the Keras tokenizer toxic-comment-classifier ships"
        )
    return {
        k: getattr(state, k)
        for k in ("word_index", "num_words", "filters", "lower", "split", "oov_token")
    }


class _BiLSTM(torch.nn.Module):
    """toxic-comment-classifier's network: embedding, bidirectional LSTM (50 units per direction),
    max over time, dense 50 + ReLU, dense 6 + sigmoid. ids: Long[batch, 100] -> Float[batch, 6]."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(BILSTM_VOCAB, 50)
        self.lstm = torch.nn.LSTM(50, 50, batch_first=True, bidirectional=True)
        self.dense = torch.nn.Linear(100, 50)
        self.out = torch.nn.Linear(50, len(JIGSAW_LABELS))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(ids))
        return torch.sigmoid(self.out(torch.relu(self.dense(states.max(dim=1).values))))


@dataclass
class BiLSTMScorer:
    """``toxic-comment-classifier`` (PyPI, MIT): a Keras BiLSTM trained on the Jigsaw toxic-comment
    data, six labels; "toxicity" is its "toxic" label. Offline: the weights ship in the package.
    Its Keras weights are read with h5py into an equivalent torch network, and its tokenizer
    pickle with a restricted unpickler, so neither TensorFlow nor arbitrary unpickling is needed."""

    name: str = "toxic-comment-classifier"
    kind: str = "learned classifier"
    batch_size: int = 64

    def __post_init__(self):
        spec = importlib.util.find_spec("toxic_classifier")
        if spec is None or spec.origin is None:
            raise ModelUnavailableError(
                "the toxic-comment-classifier scorer needs its package: pip install --no-deps "
                "toxic-comment-classifier==0.3.0 h5py (make setup installs both)"
            )
        self.folder = Path(spec.origin).parent / "model"
        self.tokenizer = _read_keras_tokenizer(self.folder / "tokenizer.pickle")
        self.network = _load_bilstm(self.folder / "model.weights.h5").eval()

    def details(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "package": "toxic-comment-classifier",
            "version": versions().get("toxic-comment-classifier"),
            "checkpoint_sha256": {
                f: file_sha256(self.folder / f) for f in ("model.weights.h5", "tokenizer.pickle")
            },
        }

    def encode(self, text: str) -> list[int]:
        """Keras' legacy ``texts_to_sequences`` then ``pad_sequences(maxlen=100)``: lower-case, the
        filter characters become spaces, words outside the 20,000 most frequent are dropped, the
        last 100 words are kept, zeros are padded in front."""
        t = self.tokenizer
        text = text.lower() if t["lower"] else text
        text = text.translate(str.maketrans({c: t["split"] for c in t["filters"]}))
        ids = [t["word_index"][w] for w in text.split(t["split"]) if w and w in t["word_index"]]
        ids = [i for i in ids if not t["num_words"] or i < t["num_words"]]
        ids = ids[-BILSTM_MAXLEN:]
        return [0] * (BILSTM_MAXLEN - len(ids)) + ids

    def score(self, texts: Sequence[str]):
        values = torch.zeros(len(texts), len(JIGSAW_LABELS))
        for first in range(0, len(texts), self.batch_size):
            ids = torch.tensor(
                [self.encode(t) for t in texts[first : first + self.batch_size]], dtype=torch.long
            )
            with torch.no_grad():
                values[first : first + len(ids)] = self.network(ids)
        return _frame(
            self.name, {label: values[:, j].tolist() for j, label in enumerate(JIGSAW_LABELS)}
        )


def _load_bilstm(path: Path) -> _BiLSTM:
    """The Keras 3 weights file (``layers/<name>/vars/<i>``) into `_BiLSTM`. Keras keeps kernels as
    [in, 4 * units] with gates in the order input, forget, cell, output, which is torch's order."""
    # lazy: loaded only by the toxic-comment-classifier scorer
    import h5py

    network = _BiLSTM()
    with h5py.File(path, "r") as f:

        def var(layer: str, i: int) -> torch.Tensor:
            return torch.from_numpy(f[f"layers/{layer}/vars/{i}"][()])

        state = {
            "embedding.weight": var("embedding", 0),
            "dense.weight": var("dense", 0).T,
            "dense.bias": var("dense", 1),
            "out.weight": var("dense_1", 0).T,
            "out.bias": var("dense_1", 1),
        }
        for direction, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
            cell = f"bidirectional/{direction}/cell"
            state[f"lstm.weight_ih_l0{suffix}"] = var(cell, 0).T
            state[f"lstm.weight_hh_l0{suffix}"] = var(cell, 1).T
            state[f"lstm.bias_ih_l0{suffix}"] = var(cell, 2)
            state[f"lstm.bias_hh_l0{suffix}"] = torch.zeros(4 * 50)
    network.load_state_dict({k: v.contiguous() for k, v in state.items()})
    return network


def detoxify_checkpoint_path(variant: str) -> Path:
    """Where torch hub keeps Detoxify's checkpoint for `variant` (it may not exist yet)."""
    # lazy: loaded only by the Detoxify scorer
    from detoxify.detoxify import MODEL_URLS

    url = MODEL_URLS[variant]
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


DETOXIFY_TOKENIZERS = {
    "original": "bert-base-uncased",
    "unbiased": "roberta-base",
    "multilingual": "xlm-roberta-base",
}


def fetch_detoxify(variant: str = "original") -> Path:
    """Download Detoxify's checkpoint for `variant` into the torch hub cache, and the Hugging Face
    config and tokenizer it is built with into the HF cache, so that `make_scorer("auto")` uses it
    offline afterwards. The only place Detoxify is downloaded (`workbench fetch detoxify[:variant]`).
    Offline, raises ModelUnavailableError naming both sources and where the files go."""
    # lazy: loaded only by the Detoxify scorer
    from detoxify.detoxify import MODEL_URLS

    if variant not in DETOXIFY_TOKENIZERS:
        raise InputError(
            f"unknown Detoxify variant {variant!r}; choose from {', '.join(DETOXIFY_VARIANTS)}"
        )
    path, url, repo = (
        detoxify_checkpoint_path(variant),
        MODEL_URLS[variant],
        DETOXIFY_TOKENIZERS[variant],
    )
    plan = (
        f"the checkpoint {url} into {path}, and the config and tokenizer of the Hugging Face repository "
        f"{repo!r} into the HF cache"
    )
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path))
        # lazy: transformers takes ~1 s to import; only model work needs it
        from transformers import AutoConfig, AutoTokenizer

        AutoConfig.from_pretrained(repo)
        AutoTokenizer.from_pretrained(repo)
    except Exception as error:  # no network, hub offline mode, HTTP errors: say what was tried
        raise ModelUnavailableError(
            f"Detoxify {variant}: could not download {plan} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Fix: run this on a machine "
            "with internet (and HF_HUB_OFFLINE unset), or copy the checkpoint to that path "
            "by hand and pass --detoxify-config with a local copy of the repository"
        ) from None
    DetoxifyScorer(variant)  # loads it once: a damaged download fails here, not in the first audit
    return path


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
        # lazy: loaded only by the Detoxify scorer
        from detoxify import Detoxify
        from detoxify.detoxify import MODEL_URLS, get_model_and_tokenizer

        if self.variant not in MODEL_URLS:
            raise InputError(
                f"unknown Detoxify variant {self.variant!r}; choose from {', '.join(DETOXIFY_VARIANTS)}"
            )
        path = Path(self.checkpoint) if self.checkpoint else detoxify_checkpoint_path(self.variant)
        if not path.exists():
            if self.checkpoint or not self.download:
                raise ModelUnavailableError(
                    f"Detoxify {self.variant}: no checkpoint at {path}. Fix: pass a local checkpoint file, or allow "
                    f"the download from {MODEL_URLS[self.variant]} (download=True / `--scorer-download`); "
                    "or use the offline 'profanity-check' scorer"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(MODEL_URLS[self.variant], str(path))
        try:
            loaded = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:
            raise ModelUnavailableError(
                f"Detoxify checkpoint {path} could not be loaded safely "
                f"(weights_only=True): {type(error).__name__}: {error}"
            ) from None
        if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
            raise ModelUnavailableError(
                f"{path} is not a Detoxify checkpoint (needs 'config' and 'state_dict')"
            )
        try:
            arch = dict(loaded["config"]["arch"]["args"])
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
        except (KeyError, TypeError, ValueError):
            raise ModelUnavailableError(
                f"{path} is not a Detoxify checkpoint (no config.arch.args or "
                "config.dataset.args.classes)"
            ) from None
        if (arch.get("model_type"), arch.get("model_name")) not in DETOXIFY_ARCHITECTURES:
            raise InputError(
                f"Detoxify checkpoint {path} names architecture {arch.get('model_type')!r} / "
                f"{arch.get('model_name')!r}; only Detoxify's own "
                f"({', '.join(sorted(t for t, _ in DETOXIFY_ARCHITECTURES))}) are accepted"
            )
        unexpected = set(arch) - {"model_type", "model_name", "tokenizer_name", "num_classes"}
        if arch.get("tokenizer_name", "BertTokenizer") not in (
            "BertTokenizer",
            "RobertaTokenizer",
            "XLMRobertaTokenizer",
        ):
            unexpected.add(f"tokenizer_name={arch['tokenizer_name']!r}")
        if unexpected or not all(isinstance(c, str) for c in classes):
            raise InputError(
                f"Detoxify checkpoint {path} has unexpected architecture arguments "
                f"({', '.join(sorted(unexpected)) or 'class names'})"
            )
        if self.huggingface_config_path:  # build offline from a local config/tokenizer folder
            arch["model_type"] = self.huggingface_config_path
        model, tokenizer = get_model_and_tokenizer(
            **arch,
            state_dict=loaded["state_dict"],
            huggingface_config_path=self.huggingface_config_path,
        )
        renames = {
            "toxic": "toxicity",
            "identity_hate": "identity_attack",
            "severe_toxic": "severe_toxicity",
        }
        # Detoxify's own object and predict(), minus its unsafe loader
        detox = Detoxify.__new__(Detoxify)
        detox.model, detox.tokenizer, detox.device = (
            model.to(self.device).eval(),
            tokenizer,
            self.device,
        )
        detox.class_names = [renames.get(c, c) for c in classes]
        self.detoxify = detox
        self.name = f"detoxify:{self.variant}"
        self.checkpoint_path = path

    def details(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "package": "detoxify",
            "version": versions()["detoxify"],
            "checkpoint": str(self.checkpoint_path),
            "checkpoint_sha256": file_sha256(self.checkpoint_path),
        }

    def _chunks(self, text: str) -> list[str]:
        ids = self.detoxify.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= CHUNK_TOKENS:
            return [text]
        return [
            self.detoxify.tokenizer.decode(ids[i : i + CHUNK_TOKENS])
            for i in range(0, len(ids), CHUNK_TOKENS)
        ]

    def score(self, texts: Sequence[str]):
        pieces, owner = [], []
        for i, text in enumerate(texts):
            for chunk in self._chunks(text):
                pieces.append(chunk)
                owner.append(i)
        labels = self.detoxify.class_names
        best = torch.full((len(texts), len(labels)), float("-inf"))
        for first in range(0, len(pieces), self.batch_size):
            batch = pieces[first : first + self.batch_size]
            result = self.detoxify.predict(batch)
            values = torch.tensor(
                [[result[label]] if len(batch) == 1 else result[label] for label in labels]
            ).T
            for row, i in enumerate(owner[first : first + self.batch_size]):
                best[i] = torch.maximum(best[i], values[row].reshape(-1))
        return _frame(self.name, {label: best[:, j].tolist() for j, label in enumerate(labels)})


@dataclass(frozen=True)
class ScorerEvaluation(Tabled):
    """How well each scorer ranks toxic above non-toxic texts it was not trained on.

    rows: one dict per scorer: scorer, kind, auroc (Estimate dict: stratified BCa bootstrap),
    ece (expected calibration error at 10 bins), positives, negatives.
    """

    rows: list[dict]
    data: str

    def to_frame(self):
        return pd.DataFrame(
            [
                {
                    "scorer": r["scorer"],
                    "kind": r["kind"],
                    "AUROC [95% CI]": estimate_from_dict(r["auroc"]).short(3),
                    "ECE": round(r["ece"], 3),
                    "toxic / non-toxic texts": f"{r['positives']} / {r['negatives']}",
                }
                for r in self.rows
            ]
        )

    def __repr__(self) -> str:
        best = self.best()
        return (
            f"ScorerEvaluation({len(self.rows)} scorers on {self.data}; best {best['scorer']} "
            f"({best['kind']}) AUROC {estimate_from_dict(best['auroc']).text(3)})"
        )

    def best(self) -> dict:
        """The row of the scorer with the highest AUROC."""
        return max(self.rows, key=lambda r: r["auroc"]["value"])


def evaluate_scorers(
    scorers: Sequence, texts: Sequence[str], labels: Sequence[int], data: str = "", seed: int = 0
) -> ScorerEvaluation:
    """Score `texts` (held out from every scorer's training) with each scorer; AUROC with a
    stratified bootstrap interval and calibration error against `labels` (1 = toxic)."""
    rows = []
    for scorer in scorers:
        values = scorer.score(list(texts))["toxicity"].to_numpy(dtype=float)
        rows.append(
            {
                "scorer": getattr(scorer, "details", lambda: {})().get("name", scorer.name),
                "kind": scorer.kind,
                "auroc": auroc_interval(values, labels, seed=seed).to_dict(),
                "ece": calibration(values, labels).ece,
                "positives": int(sum(labels)),
                "negatives": int(len(labels) - sum(labels)),
            }
        )
    return ScorerEvaluation(rows, data)


def make_scorer(name: str, model=None, probe_path: str | None = None, **options) -> ToxicityScorer:
    """A scorer by name: "auto", "profanity-check", "detoxify[:variant]" or "probe" (needs model + probe_path)."""
    if name == "auto":
        variant = options.pop("variant", "original")
        if options.get("checkpoint") or detoxify_checkpoint_path(variant).exists():
            return DetoxifyScorer(variant, **options)
        return ProfanityCheckScorer()
    if name == "profanity-check":
        return ProfanityCheckScorer()
    if name == "toxic-comment-classifier":
        return BiLSTMScorer()
    if name.startswith("detoxify"):
        variant = name.split(":", 1)[1] if ":" in name else options.pop("variant", "original")
        return DetoxifyScorer(variant, **options)
    if name == "probe":
        if model is None or not probe_path:
            raise InputError("the probe scorer needs a model and a saved probe folder")
        return ProbeScorer(model, Probe.load(probe_path), path=str(probe_path))
    raise InputError(
        f"unknown scorer {name!r}; choose auto, profanity-check, toxic-comment-classifier, "
        "detoxify[:variant] or probe"
    )


FIXED_SCORERS = (
    "auto",
    "profanity-check",
    "toxic-comment-classifier",
    "probe",
)  # and detoxify[:variant]
SCORER_NAMES = (*FIXED_SCORERS[:3], "detoxify[:variant]", "probe")  # as the messages list them


def check_scorer_names(names: Sequence[str], probes: Sequence[str] = ()) -> None:
    """Every name is a scorer `make_scorer` knows, and 'probe' comes with probe folders; checked
    before any model work (InputError naming the bad one)."""
    for name in names:
        if name not in FIXED_SCORERS and not (name == "detoxify" or name.startswith("detoxify:")):
            raise InputError(f"unknown scorer {name!r}; choose from {', '.join(SCORER_NAMES)}")
    if "probe" in names and not probes:
        raise InputError("the 'probe' scorer needs at least one --probe FOLDER")
