"""The seven notebooks in notebooks/ run top to bottom (nbclient) and are stored without outputs.

Each has a parameter cell reading WORKBENCH_NOTEBOOK_MODEL. The quickstart runs on the real
embedded model; the others run on tiny-phi here (NOTEBOOKS says why), and their text
describes a run on smollm2-135m (about 3 minutes for all five on 2 CPU cores). Run times are written to
artifacts/notebook_times.json. Each run also writes the notebook's static PNG figures (to a
temporary folder here), and the text of 01-05 shows the committed copies in notebooks/figures/.
"""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest

from .conftest import ROOT, SHARED_DATA

# What the notebooks find on the real model is asserted on smollm2-135m elsewhere, so here they
# run on tiny-phi (except the quickstart) to keep the suite short: induction heads, the IOI
# patching and steering's monotone sweep in tests/test_interp.py (test_smollm2_*), the ToxiGen
# probe in tests/test_probes.py, the audit in tests/test_card.py and tests/test_bias.py.
NOTEBOOKS = {
    "01_quickstart": "smollm2-135m",
    "02_attention_and_induction_heads": "tiny-phi",
    "03_activation_and_attribution_patching": "tiny-phi",
    "04_probes": "tiny-phi",
    "05_steering": "tiny-phi",
    "06_toxicity_and_bias_audit": "tiny-phi",
    "07_features": "tiny-phi",
}


def prose_words(book) -> int:
    return sum(
        len(re.sub(r"!\[[^\]]*\]\([^)]*\)", "", c.source).split())
        for c in book.cells
        if c.cell_type == "markdown"
    )


def test_notebooks_tell_their_story_and_show_static_figures():
    """Prose that interprets (word counts printed), and a committed PNG for every image the text shows,
    so the figures appear on GitHub although notebooks are stored without outputs."""
    counts = {}
    for name in NOTEBOOKS:
        book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        counts[name] = prose_words(book)
        text = "\n".join(c.source for c in book.cells if c.cell_type == "markdown")
        for image in re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", text):
            assert (ROOT / "notebooks" / "figures" / image).is_file(), (
                f"{name} shows figures/{image}, not committed"
            )
        assert counts[name] >= 300 and "figures/" in text, (name, counts[name])
    print("prose words per notebook:", counts)


def test_every_notebook_is_listed_and_stored_without_outputs():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and "parameters" in code[0].metadata.get("tags", [])
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{name} has stored outputs"
        )


@pytest.mark.integration
@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch, artifacts):
    from nbclient import NotebookClient

    monkeypatch.setenv("WORKBENCH_NOTEBOOK_MODEL", NOTEBOOKS[name])
    monkeypatch.setenv("WORKBENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_SHARED_DATA", str(SHARED_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # not into the repository
    monkeypatch.setenv("WORKBENCH_NOTEBOOK_FIGURES", str(tmp_path / "figures"))
    book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(
        book,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    seconds = round(time.perf_counter() - start, 1)
    figures = sum(
        1
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    )
    assert figures >= 1, f"{name} showed no plotly figure"
    # Every static image the notebook's text shows was written again by this run (kaleido + Chromium).
    shown = re.findall(
        r"!\[[^\]]*\]\(figures/([^)]+)\)",
        "\n".join(c.source for c in book.cells if c.cell_type == "markdown"),
    )
    assert all((tmp_path / "figures" / image).stat().st_size > 10_000 for image in shown), shown
    record = artifacts / "notebook_times.json"
    times = json.loads(record.read_text()) if record.exists() else {}
    times[name] = {"model": NOTEBOOKS[name], "seconds": seconds, "figures": figures}
    record.write_text(json.dumps(times, indent=2) + "\n")
    print(f"{name} on {NOTEBOOKS[name]}: {seconds} s, {figures} figures")
