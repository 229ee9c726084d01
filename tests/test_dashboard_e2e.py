"""End to end: `workbench dashboard` on smollm2-135m, driven by headless Chromium (Selenium).

Every page is opened by its URL; pages whose figures need a click get it. The test
waits until the page's plotly figures have drawn their SVG, checks that no error or
exception is shown, saves a screenshot under artifacts/dashboard/ and records in
artifacts/dashboard/load_times.json each page's load time (from navigation until the page is idle
with its figures drawn, or its button shown) and, apart, the time of the work a button starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from workbench.cli import main as cli

from .conftest import SHARED_DATA

pytestmark = pytest.mark.integration

# page url -> (plotly figures expected, button to press first or None)
PAGES = {
    "overview": (0, None),
    "model": (0, None),
    "attention": (3, None),
    "lens": (2, None),
    "patching": (1, "Run patching"),  # the default: attribution patching of heads (exact on demand)
    "steering": (1, "Run sweep"),
    "probes": (2, "Train probes"),
    "audits": (1, None),
}
EXTRA = {"probes": "span[title]"}  # the per-token shading of the prompt
RUNNING = "return !!document.querySelector('[data-testid=\"stStatusWidget\"]')"  # shown while the script runs
DRAWN = "return [...document.querySelectorAll('.js-plotly-plot')].filter(e => e.querySelector('.main-svg')).length"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "results"
    pairs = root.parent / "pairs.csv"
    crows = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
    pairs.write_text("\n".join(crows.read_text(encoding="utf-8").splitlines()[:9]) + "\n")
    assert (
        cli(
            [
                "audit",
                "bias",
                "--model",
                "tiny-phi",
                "--pairs",
                str(pairs),
                "--out",
                str(root / "bias"),
                "--bootstrap",
                "100",
            ]
        )
        == 0
    )
    port = _free_port()
    log = open(root.parent / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "dashboard",
            "--model",
            "smollm2-135m",
            "--port",
            str(port),
            "--results",
            str(root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )

    def healthy():
        try:
            return (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status
                == 200
            )
        except OSError:
            assert proc.poll() is None, (root.parent / "server.log").read_text()
            return False

    _wait(healthy, 90, "the dashboard server")
    yield f"http://127.0.0.1:{port}", root.parent / "server.log"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "needs Debian's chromium and chromium-driver (make setup installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # The background-networking flags keep Chromium from calling out (these machines have no internet).
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1800",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    yield browser
    browser.quit()


def test_every_page_renders_in_headless_chromium(server, browser, artifacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, log = server
    folder = artifacts / "dashboard"
    folder.mkdir(exist_ok=True)
    loads, clicks = (
        {},
        {},
    )  # seconds: from navigation to the page idle; from a button's click to its figures drawn
    for page, (figures, button) in PAGES.items():
        start = time.monotonic()
        browser.get(f"{url}/{'' if page == 'overview' else page}")  # the first page is served at /
        sidebar = _wait(
            lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"]'),
            120,
            f"the sidebar of {page}",
        )[0]
        _wait(
            lambda: "smollm2-135m: 30 layers" in sidebar.text, 120, "the model card in the sidebar"
        )
        if page == "model":
            _wait(
                lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]'),
                120,
                "model card",
            )
        if button:  # the page's load ends when it is idle with its button shown; the button's work is timed apart
            found = _wait(
                lambda: browser.find_elements(By.XPATH, f"//button[normalize-space()='{button}']"),
                180,
                f"the {button!r} button",
            )
            _wait(lambda: not browser.execute_script(RUNNING), 120, f"{page} to finish loading")
            loads[page] = round(time.monotonic() - start, 1)
            found[0].click()
            start = time.monotonic()
        if page == "audits":
            field = _wait(
                lambda: browser.find_elements(
                    By.CSS_SELECTOR, 'input[aria-label="...or type a path under the results root"]'
                ),
                60,
                "path box",
            )[0]
            field.send_keys("bias", Keys.ENTER)
        if figures:
            _wait(
                lambda: browser.execute_script(DRAWN) >= figures,
                300,
                f"{figures} figures on {page}",
            )
        if page in EXTRA:
            _wait(lambda: browser.find_elements(By.CSS_SELECTOR, EXTRA[page]), 120, EXTRA[page])
        _wait(lambda: not browser.execute_script(RUNNING), 120, f"{page} to finish running")
        if button:
            clicks[f"{page}: {button}"] = round(time.monotonic() - start, 1)
        else:
            loads[page] = round(time.monotonic() - start, 1)
        time.sleep(0.5)  # let the last figure finish its transition before the screenshot
        browser.save_screenshot(str(folder / f"{page}.png"))
        assert "Page not found" not in browser.page_source, f"/{page} is not a working deep link"
        errors = browser.find_elements(
            By.CSS_SELECTOR, '[data-testid="stException"], [data-testid="stAlertContentError"]'
        )
        assert not errors, f"{page}: {[e.text for e in errors]}\n{log.read_text()[-3000:]}"
        assert browser.execute_script(DRAWN) >= figures
        assert (folder / f"{page}.png").stat().st_size > 20_000
        assert not browser.find_elements(By.XPATH, "//button[normalize-space()='Deploy']"), (
            "the Deploy button shows"
        )
    (folder / "load_times.json").write_text(
        json.dumps({"page_load_s": loads, "button_s": clicks}, indent=2) + "\n"
    )
    print("dashboard page load times (s):", loads, "\nwork started by a button (s):", clicks)
