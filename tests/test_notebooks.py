"""The six notebooks in notebooks/ run top to bottom (nbclient) and are stored without outputs.

Five run on the real embedded model (about 3 minutes together on 2 CPU cores).
Each has a parameter cell reading WORKBENCH_NOTEBOOK_MODEL, so a slower machine or
model can switch a notebook to tiny-phi here. 06 (the audit with its report card and
150 CrowS-Pairs) runs on tiny-phi: on smollm2-135m it takes 3 minutes, and the same
audit on the real model is checked by tests/test_card.py and tests/test_bias.py. Run times are written to
artifacts/notebook_times.json.
"""
from __future__ import annotations

import json
import time

import nbformat
import pytest

from .conftest import ROOT, SHARED_DATA

NOTEBOOKS = {
    "01_quickstart": "smollm2-135m",
    "02_attention_and_induction_heads": "smollm2-135m",
    "03_activation_and_attribution_patching": "smollm2-135m",
    "04_probes": "smollm2-135m",
    "05_steering": "smollm2-135m",
    "06_toxicity_and_bias_audit": "tiny-phi",
}


def test_every_notebook_is_listed_and_stored_without_outputs():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and "parameters" in code[0].metadata.get("tags", [])
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has stored outputs"


@pytest.mark.integration
@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch, artifacts):
    from nbclient import NotebookClient

    monkeypatch.setenv("WORKBENCH_NOTEBOOK_MODEL", NOTEBOOKS[name])
    monkeypatch.setenv("WORKBENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_SHARED_DATA", str(SHARED_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    seconds = round(time.perf_counter() - start, 1)
    figures = sum(1 for c in book.cells if c.cell_type == "code" for o in c.outputs
                  if "application/vnd.plotly.v1+json" in o.get("data", {}))
    assert figures >= 1, f"{name} showed no plotly figure"
    record = artifacts / "notebook_times.json"
    times = json.loads(record.read_text()) if record.exists() else {}
    times[name] = {"model": NOTEBOOKS[name], "seconds": seconds, "figures": figures}
    record.write_text(json.dumps(times, indent=2) + "\n")
    print(f"{name} on {NOTEBOOKS[name]}: {seconds} s, {figures} figures")
