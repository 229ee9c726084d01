"""Shared pieces of the dashboard pages: the chosen model, cached results, errors in the page.

Models are loaded once per process (`st.cache_resource`) and used under a lock, so two
browser tabs never run hooks on the same model at once. Heavy results are cached by
their inputs (`st.cache_data`). Every page body runs inside `errors_shown()`, which
turns an exception into a message in the page instead of a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Iterator

import streamlit as st

from ..core.errors import WorkbenchError
from ..core.paths import package_data
from ..model.loading import load
from ..model.registry import DEFAULT_MODEL

LOG = logging.getLogger("workbench.dashboard")
DEFAULT_MODEL_ENV = "WORKBENCH_DASHBOARD_MODEL"
DEVICE_ENV, DTYPE_ENV = "WORKBENCH_DASHBOARD_DEVICE", "WORKBENCH_DASHBOARD_DTYPE"
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
# the example sets shipped in the package (probes/ in a checkout)
PROBES_DIR = package_data("probes")


def default_model() -> str:
    return os.environ.get(DEFAULT_MODEL_ENV) or DEFAULT_MODEL


@st.cache_resource(show_spinner="Loading the model (once per server)...")
def get_model(name: str):
    """The LoadedModel `name` (see workbench.load), shared by every session."""
    # `workbench dashboard --device/--dtype` (default: cuda and bf16 when there is a GPU, else cpu/fp32)
    return load(
        name, device=os.environ.get(DEVICE_ENV) or None, dtype=os.environ.get(DTYPE_ENV) or None
    )


@st.cache_resource
def model_lock(name: str) -> threading.Lock:
    """One lock per model: hooks are added to the shared model only while holding it."""
    return threading.Lock()


def model_name() -> str:
    return st.session_state.get("model") or default_model()


def prompt() -> str:
    return st.session_state.get("prompt") or DEFAULT_PROMPT


@contextlib.contextmanager
def using_model(name: str | None = None) -> Iterator:
    """The model `name` (default: the one chosen in the sidebar), held under its lock for the block."""
    name = name or model_name()
    model = get_model(name)
    with model_lock(name):
        yield model


@contextlib.contextmanager
def errors_shown() -> Iterator[None]:
    """Show any error as a message in the page (the full traceback goes to the server log only)."""
    try:
        yield
    except WorkbenchError as error:
        st.error(plain(str(error)))  # errors quote user files (a probe's hook, run.json's audit)
    except Exception as error:  # noqa: BLE001 - the page must survive any failure
        LOG.exception("dashboard page failed")
        st.error(plain(f"{type(error).__name__}: {error}"))


MARKDOWN_CHARACTERS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def plain(text: str) -> str:
    """`text` with every character Markdown gives a meaning to backslash-escaped, so a Streamlit
    element that renders Markdown (st.error, st.subheader, st.caption...) shows it as written: no
    link, no image fetched, no emphasis, LaTeX, colour directive or HTML entity. Every string
    that comes from a user's file or input goes through it (or through st.text)."""
    return MARKDOWN_CHARACTERS.sub(r"\\\1", text)


def pair_sets() -> list[Path]:
    """Contrast-pair files shipped in probes/: ``*_pairs.jsonl`` whose lines hold "positive" and "negative"."""
    if not PROBES_DIR.is_dir():
        return []
    found = []
    for path in sorted(PROBES_DIR.glob("*_pairs.jsonl")):
        first = next(
            (line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()), "{}"
        )
        if {"positive", "negative"} <= set(json.loads(first)):
            found.append(path)
    return found


# What label 1 means in each shipped labeled set (workbench/data/probes/README.md).
LABEL_MEANING = {"toxicity.jsonl": "toxic", "gender.jsonl": "about a woman"}


def labeled_sets() -> list[Path]:
    """Labeled probe sets (JSONL with text and label) shipped in probes/."""
    if not PROBES_DIR.is_dir():
        return []
    return sorted(p for p in PROBES_DIR.glob("*.jsonl") if not p.stem.endswith("_pairs"))


def show_text(text: str, key: str) -> None:
    """Generated text, readable (not a greyed-out text box), kept in st.session_state[key] for tests."""
    st.session_state[key] = text
    with st.container(border=True):
        st.markdown(plain(text).replace("\n", "  \n") if text.strip() else "_(no new text)_")


def plot(fig, key: str) -> None:
    """Show a plotly figure at full width."""
    st.plotly_chart(fig, width="stretch", key=key)
