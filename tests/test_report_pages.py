"""Report pages share one plotly.js: a folder of reports holds one copy (`--plotly shared`, the
default); `--plotly inline` makes every page open on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.cli import main
from workbench.report.html import PLOTLY_FILE


@pytest.fixture(scope="module")
def three_audits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    prompts = root / "p.txt"
    prompts.write_text(
        "".join(f"Tell me about day {i}.\n" for i in range(12))
    )  # n >= 10: intervals
    for name in ("a", "b", "c"):
        command = ["audit", "toxicity", "--model", "tiny-phi", "--prompts", str(prompts)]
        command += ["--out", str(root / "audits" / name), "--scorers", "profanity-check"]
        command += ["--max-new-tokens", "2", "--no-capability", "--bootstrap", "100", "--json"]
        assert main(command) == 0
    return root / "audits"


def test_a_folder_of_reports_holds_one_plotly(three_audits, capsys):
    assert main(["report", str(three_audits), "--json"]) == 0
    copies = sorted(three_audits.rglob(PLOTLY_FILE))
    assert copies == [three_audits / PLOTLY_FILE]
    assert copies[0].stat().st_size > 3_000_000  # plotly.js itself
    for page in [three_audits / "report.html", *three_audits.glob("*/report.html")]:
        text = page.read_text()
        assert page.stat().st_size < 1_000_000, page  # the pages hold no copy of their own
        expected = PLOTLY_FILE if page.parent == three_audits else f"../{PLOTLY_FILE}"
        assert f'src="{expected}"' in text, page


def test_inline_pages_open_on_their_own(three_audits, capsys):
    assert main(["report", str(three_audits / "a"), "--plotly", "inline", "--json"]) == 0
    page = three_audits / "a" / "report.html"
    assert page.stat().st_size > 3_000_000 and f'src="{PLOTLY_FILE}"' not in page.read_text()


def test_every_page_opens_with_its_headline_in_words(three_audits, capsys):
    assert main(["report", str(three_audits), "--json"]) == 0
    for page in [three_audits / "report.html", *three_audits.glob("*/report.html")]:
        text = page.read_text()
        assert 0 < text.index('class="headline"') < text.index("<table"), page
        assert "mean toxicity [95% CI]:" in text  # the main table's first row, in words
        assert 'class="estimate"' in text  # numbers with intervals do not wrap
