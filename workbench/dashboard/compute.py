"""Cached calls into the library, keyed by the model name and the inputs.

Each function is a one-line call of a library function under the model's lock;
`st.cache_data` keeps the result, so moving a widget back shows it again at once.
"""

from __future__ import annotations

import streamlit as st

from .common import using_model


def _run(model_name: str, function, *args, **kwargs):
    with using_model(model_name) as model:
        return function(model, *args, **kwargs)


@st.cache_data(show_spinner="Scoring every head on repeated random tokens...", max_entries=8)
def head_scores(model_name: str, seq_len: int, n_seqs: int):
    from ..attention import head_scores

    return _run(model_name, head_scores, seq_len=seq_len, n_seqs=n_seqs)


@st.cache_data(show_spinner="Reading attention patterns...", max_entries=16)
def attention_patterns(model_name: str, text: str):
    from ..attention import attention_patterns

    return _run(model_name, attention_patterns, text)


@st.cache_data(show_spinner="Decoding the residual stream...", max_entries=16)
def logit_lens(model_name: str, text: str, tracked: tuple[str, ...]):
    from ..lens import logit_lens

    return _run(model_name, logit_lens, text, list(tracked))


@st.cache_data(
    show_spinner="Decoding the residual stream at every layer and position...", max_entries=16
)
def logit_lens_grid(model_name: str, text: str):
    from ..lens import logit_lens_grid

    return _run(model_name, logit_lens_grid, text)


@st.cache_data(show_spinner="Attributing the logit difference...", max_entries=16)
def direct_logit_attribution(model_name: str, text: str, answer: str, other: str):
    from ..lens import direct_logit_attribution

    return _run(model_name, direct_logit_attribution, text, answer, other)


@st.cache_data(show_spinner="Patching (exact)...", max_entries=16)
def exact_patch(model_name: str, clean: str, corrupt: str, answer: str, other: str, kind: str):
    from ..patching import activation_patch

    return _run(model_name, activation_patch, clean, corrupt, answer, other, kind=kind)


@st.cache_data(show_spinner="Patching (estimate and its self-check)...", max_entries=16)
def attribution_patch(
    model_name: str,
    clean: str,
    corrupt: str,
    answer: str,
    other: str,
    kind: str,
    method: str = "eap-ig",
):
    from ..attribution import attribution_patch

    return _run(
        model_name,
        attribution_patch,
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
    from ..steering import actadd_vector, mean_difference_vector, read_pairs

    if source == "actadd":
        return _run(model_name, actadd_vector, positive, negative, layer)
    return _run(model_name, mean_difference_vector, read_pairs(source), layer, source=source)


@st.cache_resource
def scorer(name: str):
    from ..scanners.toxicity import make_scorer

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
    from ..steering import steered_generations

    return _run(
        model_name,
        steered_generations,
        _vector,
        prompt,
        list(alphas),
        scorer(scorer_name),
        max_new_tokens,
    )


@st.cache_data(show_spinner="Caching activations and training a probe per layer...", max_entries=8)
def train_probes(model_name: str, data: str, positions: str, split: str, seed: int):
    from ..datasets import read_labeled
    from ..probes import train_probes_on_rows

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
    from ..probes import token_scores

    return _run(model_name, token_scores, _probe, text)


def audit(folder) -> tuple:
    """(results frame, summary) of an audit folder, read and summarised once per state of its shards."""
    shards = sorted((folder / "shards").glob("*.parquet"))
    return _audit(str(folder), tuple((p.name, p.stat().st_mtime_ns) for p in shards))


@st.cache_data(show_spinner="Reading the audit...", max_entries=16)
def _audit(folder: str, shards_key: tuple) -> tuple:
    from ..audit import load_results
    from ..report import summarise

    frame = load_results(folder)
    return frame, summarise(folder, frame)
