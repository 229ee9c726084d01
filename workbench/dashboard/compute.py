"""Cached calls into the library, keyed by the model name and the inputs.

Each function is a one-line call of a library function under the model's lock;
`st.cache_data` keeps the result, so moving a widget back shows it again at once.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import streamlit as st

from ..core.datasets import read_labeled, read_texts
from ..interp import attention, attribution, lens, probes, sae_features
from ..interp.patching import activation_patch
from ..interp.probes import train_probes_on_rows
from ..interp.sae import load_sae
from ..interp.sae_features import index_features, load_feature_index
from ..interp.steering import actadd_vector, mean_difference_vector, read_pairs, steered_generations
from ..report.folder import load_results
from ..report.summary import summarise
from ..safety.interventions import pairs_example
from ..safety.scorers import make_scorer
from .common import using_model


def _run(model_name: str, function, *args, **kwargs):
    with using_model(model_name) as model:
        return function(model, *args, **kwargs)


@st.cache_data(show_spinner="Scoring every head on repeated random tokens...", max_entries=8)
def head_scores(model_name: str, seq_len: int, n_seqs: int):
    return _run(model_name, attention.head_scores, seq_len=seq_len, n_seqs=n_seqs)


@st.cache_data(show_spinner="Reading attention patterns...", max_entries=16)
def attention_patterns(model_name: str, text: str):
    return _run(model_name, attention.attention_patterns, text)


@st.cache_data(show_spinner="Decoding the residual stream...", max_entries=16)
def logit_lens(model_name: str, text: str, tracked: tuple[str, ...]):
    return _run(model_name, lens.logit_lens, text, list(tracked))


@st.cache_data(
    show_spinner="Decoding the residual stream at every layer and position...", max_entries=16
)
def logit_lens_grid(model_name: str, text: str):
    return _run(model_name, lens.logit_lens_grid, text)


@st.cache_data(show_spinner="Attributing the logit difference...", max_entries=16)
def direct_logit_attribution(model_name: str, text: str, answer: str, other: str):
    return _run(model_name, lens.direct_logit_attribution, text, answer, other)


@st.cache_data(show_spinner="Patching (exact)...", max_entries=16)
def exact_patch(model_name: str, clean: str, corrupt: str, answer: str, other: str, kind: str):
    return _run(model_name, activation_patch, clean, corrupt, answer, other, kind=kind)


@st.cache_data(show_spinner="Patching (estimate and its self-check)...", max_entries=16)
def attribution_patch(
    model_name: str,
    clean: str,
    corrupt: str,
    answer: str,
    other: str,
    kind: str,
    method: str = "atp",
):
    return _run(
        model_name,
        attribution.attribution_patch,
        clean,
        corrupt,
        answer,
        other,
        kinds=(kind,),
        method=method,
        verify=20,
    )[kind]


@st.cache_data(show_spinner="Building the steering vector...", max_entries=16)
def steering_vector(
    model_name: str, source: str, layer: int, positive: str = "", negative: str = ""
):
    """source: a contrast-pair file, or "actadd" with the two prompts."""
    if source == "actadd":
        return _run(model_name, actadd_vector, positive, negative, layer)
    return _run(model_name, mean_difference_vector, read_pairs(source), layer, source=source)


@st.cache_resource
def scorer(name: str):
    return make_scorer(name)


@st.cache_data(show_spinner="Generating...", max_entries=64)
def steered(
    model_name: str,
    _vector,
    vector_key: tuple,
    prompt: str,
    alphas: tuple[float, ...],
    scorer_name: str,
    max_new_tokens: int,
):
    """Steered generations at `alphas` (vector_key identifies `_vector` for the cache)."""
    return _run(
        model_name,
        steered_generations,
        _vector,
        prompt,
        list(alphas),
        scorer(scorer_name),
        max_new_tokens,
    )


@st.cache_data(show_spinner="Generating with and without the intervention...", max_entries=32)
def intervened(
    model_name: str,
    source: str,
    layer: int,
    method: str,
    coefficient: float,
    instruction: str,
    prompt: str,
    scorer_name: str,
    max_new_tokens: int,
):
    """An InterventionExample: `method` with the pair file's direction at `layer` (coefficient in
    units of the mean residual norm there)."""
    return _run(
        model_name, pairs_example, source, layer, method, coefficient, instruction, prompt,
        scorer(scorer_name), max_new_tokens,
    )  # fmt: skip


@st.cache_data(show_spinner="Caching activations and training a probe per layer...", max_entries=8)
def train_probes(model_name: str, data: str, positions: str, split: str, seed: int):
    sweep, _, _ = _run(
        model_name,
        train_probes_on_rows,
        read_labeled(data),
        data,
        positions=positions,
        split=split,
        seed=seed,
        progress=False,
    )
    return sweep


@st.cache_data(show_spinner="Scoring every token...", max_entries=32)
def token_scores(model_name: str, _probe, probe_key: str, text: str):
    return _run(model_name, probes.token_scores, _probe, text)


def audit(folder) -> tuple:
    """(results frame, summary) of an audit folder, read and summarised once per state of its shards."""
    shards = sorted((folder / "shards").glob("*.parquet"))
    return _audit(str(folder), tuple((p.name, p.stat().st_mtime_ns) for p in shards))


@st.cache_data(show_spinner="Reading the audit...", max_entries=16)
def _audit(folder: str, shards_key: tuple) -> tuple:
    frame = load_results(folder)
    return frame, summarise(folder, frame)


@st.cache_resource(show_spinner="Loading the SAE...", max_entries=4)
def sae(folder: str):
    return load_sae(folder)


@st.cache_resource(show_spinner="Encoding the corpus with the SAE (once per SAE)...", max_entries=4)
def feature_index(model_name: str, folder: str):
    """The SAE folder's saved index (`workbench sae features --index-out`), else the tour texts'."""
    if (Path(folder) / "feature_index.safetensors").is_file():
        return load_feature_index(folder)
    texts = read_texts(files("workbench") / "data" / "tour_texts.txt")
    return _run(
        model_name, index_features, sae(folder), texts, context=64, max_windows=200, progress=False
    )


def feature_card(model_name: str, folder: str, latent: int):
    index = feature_index(model_name, folder)  # before the lock: building it takes the lock too
    with using_model(model_name) as model:
        return sae_features.feature_card(model, sae(folder), index, latent)


def search_features(model_name: str, folder: str, token: str | None, text: str | None):
    index = feature_index(model_name, folder)  # before the lock: building it takes the lock too
    with using_model(model_name) as model:
        return sae_features.search_features(model, sae(folder), index, token, text)
