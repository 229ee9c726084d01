"""The Streamlit dashboard, page by page, through `streamlit.testing.v1.AppTest` on tiny-phi.

Each test opens one page, checks its main widgets, does one interaction and checks
that what is shown changed, with no exception and no error message.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from workbench.cli import main as cli
from workbench.core.errors import InputError
from workbench.dashboard.results_root import list_audits, list_probes, resolve_under

from .conftest import ROOT, SHARED_DATA

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGES = "workbench/dashboard/views/"
AUDIT_RUN = '{"format": "workbench-audit/1", "audit": "bias", "conditions": [{"name": "baseline"}]}'


def shown(element) -> str:
    """What a Markdown element (st.error...) shows: its text with the escapes of
    `workbench.dashboard.common.plain` undone (user text is escaped, never rendered)."""
    return re.sub(r"\\(.)", r"\1", element.value)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results root holding one small bias audit (tiny-phi) and a secret file outside it."""
    base = tmp_path_factory.mktemp("dash")
    root = base / "results"
    root.mkdir()
    (base / "secret").mkdir()
    (base / "secret" / "run.json").write_text("{}")
    pairs = base / "pairs.csv"
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
    gender = base / "gender.csv"
    lines = (ROOT / "probes" / "gender_occupations.csv").read_text().splitlines()
    gender.write_text("\n".join([lines[0]] + lines[1::12]) + "\n")
    heldout = base / "heldout.txt"
    heldout.write_text(
        "\n".join((ROOT / "probes" / "heldout_neutral.txt").read_text().splitlines()[:4]) + "\n"
    )
    qa = base / "qa.jsonl"
    qa.write_text("".join((ROOT / "probes" / "qa.jsonl").read_text().splitlines(True)[:10]))
    assert (
        cli(
            [
                "audit",
                "bias",
                "--model",
                "tiny-phi",
                "--pairs",
                str(gender),
                "--out",
                str(root / "localised"),
                "--bootstrap",
                "100",
                "--localise",
                "--top-k",
                "1",
                "--heldout",
                str(heldout),
                "--qa",
                str(qa),
            ]
        )
        == 0
    )
    prompts = base / "prompts.txt"
    prompts.write_text("Tell me about cats.\nTell me about rain.\nTell me about tea.\n")
    assert (
        cli(
            [
                "audit",
                "toxicity",
                "--model",
                "tiny-phi",
                "--prompts",
                str(prompts),
                "--out",
                str(root / "tox"),
                "--scorers",
                "profanity-check",
                "--max-new-tokens",
                "4",
                "--steer",
                str(ROOT / "probes" / "polite_vs_rude_pairs.jsonl"),
                "--layer",
                "1",
                "--alpha",
                "8",
            ]
        )
        == 0
    )
    return root


@pytest.fixture()
def app(results, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DASHBOARD_MODEL", "tiny-phi")
    monkeypatch.setenv("WORKBENCH_RESULTS", str(results))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception and not at.error
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(PAGES + page).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def chart_titles(at: AppTest) -> list[str]:
    titles = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec).get("layout", {})
        titles.append(layout.get("title", {}).get("text", ""))
    return titles


def test_sidebar_has_model_picker_and_prompt(app):
    assert app.sidebar.selectbox(key="model").value == "tiny-phi"
    assert {"smollm2-135m", "phi-2", "tiny-phi"} <= set(app.sidebar.selectbox(key="model").options)
    assert "Mary" in app.sidebar.text_area(key="prompt").value
    assert "4 layers" in app.sidebar.caption[0].value


def test_model_page_generates(app):
    open_page(app, "model.py")
    assert any("tiny-phi" in str(v) for v in app.dataframe[0].value["value"])
    app.button(key="model_generate").click().run()
    assert not app.exception and app.session_state["model_output_box"]
    # shown as text
    assert any(app.session_state["model_output_box"][:20] in m.value for m in app.markdown)


def test_attention_page_choose_a_head(app):
    open_page(app, "attention.py")
    assert len(app.get("plotly_chart")) == 3 and app.selectbox(key="attn_kind").value == "induction"
    app.number_input(key="attn_layer").set_value(2)
    app.number_input(key="attn_head").set_value(3).run()
    assert not app.exception and not app.error
    titles = chart_titles(app)
    # hidden first token: each map says its colours run to its own largest weight, not to 1
    assert any(t.startswith("L2H3 attention (first token hidden; colours run to") for t in titles)
    assert any(t.startswith("layer 2: every head's attention, first token hidden") for t in titles)
    app.toggle(key="attn_hide_first").set_value(False).run()
    assert "L2H3 attention" in chart_titles(app)
    app.selectbox(key="attn_kind").set_value("previous_token").run()
    assert "previous token score (tiny-phi)" in chart_titles(app)


def test_lens_page_change_answer(app):
    open_page(app, "lens.py")
    assert len(app.get("plotly_chart")) == 2
    before = chart_titles(app)[1]
    app.text_input(key="lens_answer").set_value(" Paris").run()
    assert not app.exception and not app.error
    after = chart_titles(app)[1]
    assert "' Paris'" in after and after != before


def test_patching_page_runs_and_explains_length_mismatch(app):
    open_page(app, "patching.py")
    # the default everywhere (README: why atp)
    assert not app.get("plotly_chart") and app.radio(key="patch_method").value == "atp"
    assert app.selectbox(key="patch_kind").value == "attention heads (layer x head)"
    app.button(key="patch_run").click().run()
    titles = chart_titles(app)
    assert (
        len(titles) == 2
        and "atp patching: attn_head" in titles[0]
        and "self-check of atp" in titles[1]
    )
    assert "self-check of atp on attn_head: 16 of 16 cells" in (app.success or app.warning)[0].value
    app.checkbox(key="patch_exact").check()
    app.button(key="patch_run").click().run()
    assert not app.exception and not app.error
    titles = chart_titles(app)
    assert len(titles) == 3 and "exact patching: attn_head" in titles[0] and "Pearson" in titles[2]
    app.text_input(key="patch_corrupt").set_value("Mary went home")
    app.button(key="patch_run").click().run()
    assert not app.exception
    assert "same number of tokens" in shown(app.error[0])


def test_steering_page_move_the_coefficient(app):
    open_page(app, "steering.py")
    assert app.selectbox(key="steer_source").value == "polite_vs_rude_pairs.jsonl"
    # its own prompt
    assert app.text_input(key="steer_prompt").value == "Tell me about your weekend."
    unsteered = app.session_state["steer_text_unsteered"]
    before = app.session_state["steer_text_steered"]
    app.slider(key="steer_alpha").set_value(12.0).run()
    assert not app.exception and not app.error
    after = app.session_state["steer_text_steered"]
    assert app.session_state["steer_text_unsteered"] == unsteered  # alpha 0 is untouched
    assert after != before and app.metric[0].label == "toxicity (profanity-check)"
    app.slider(key="steer_points").set_value(3)
    app.button(key="steer_sweep").click().run()
    assert (
        not app.exception and len(app.get("plotly_chart")) == 1 and len(app.dataframe[0].value) == 3
    )


def test_probes_page_train_shade_and_save(app, results):
    open_page(app, "probes.py")
    assert app.selectbox(key="probe_data").value == "gender.jsonl"
    assert not app.get("plotly_chart")
    app.button(key="probe_train").click().run()
    assert not app.exception and not app.error
    titles = chart_titles(app)
    assert "probe per hook, AUROC (random split" in titles[0] and "calibration of" in titles[1]
    # gender.jsonl: 40 texts, so 10 in the test split: the count and a warning, not an interval
    assert any(
        "Chosen on validation" in m.value and "Label 1:** about a woman" in m.value
        for m in app.markdown
    )
    assert "on only 10 test texts: too few for an interval" in app.warning[0].value
    assert "<span title=" in app.get("html")[0].proto.body
    app.text_input(key="probe_save_path").set_value("../outside")
    app.button(key="probe_save").click().run()
    assert (
        "outside the results root" in shown(app.error[0])
        and not (results.parent / "outside").exists()
    )
    app.text_input(key="probe_save_path").set_value("probes/l1")
    app.button(key="probe_save").click().run()
    assert not app.error and (results / "probes" / "l1" / "probe.json").exists()


def test_audits_page_open_folder_and_refuse_escapes(app, results):
    open_page(app, "audits.py")
    # The toxicity audit's capability check (tox/capability) shows on the toxicity audit's page.
    assert app.selectbox(key="audit_pick").options == ["bias", "localised", "tox"]
    assert not app.get("plotly_chart") and "No audit chosen." in app.info[0].value
    app.selectbox(key="audit_pick").set_value("bias").run()
    assert not app.exception and not app.error
    assert "CrowS-Pairs" in chart_titles(app)[0] and len(app.dataframe) >= 2
    app.selectbox(key="audit_pick").set_value("localised").run()
    assert not app.exception and not app.error
    titles = chart_titles(app)
    assert [t.split(":")[0] for t in titles[:2]] == ["CrowS-Pairs", "Where the bias lives"]
    assert titles[2].startswith("Before and after mean-ablating 1 head (L")
    assert "Where the bias lives" in [h.value for h in app.subheader]
    assert "stereotype share: before" in app.text[1].value
    app.selectbox(key="audit_pick").set_value("tox").run()
    assert not app.exception and not app.error
    titles = chart_titles(app)
    assert [t.split(";")[0] for t in titles] == [
        "Steering report card: safety effect against capability cost<br>"
        "<sup>one point per condition and scorer",
        "mean continuation toxicity (profanity-check, lexical)",
        "change from the baseline, prompt by prompt (profanity-check, lexical)",
        "continuation toxicity by condition: profanity-check (lexical)",
    ]
    # the steering report card comes first, as two narrow tables: safety per scorer, then the cost
    # per condition (nothing cut off at the right)
    card, cost = app.dataframe[0].value, app.dataframe[1].value
    assert list(card["condition"]) == ["baseline", "steer+8"] and len(card.columns) <= 7
    assert list(cost["condition"]) == ["baseline", "steer+8"] and "QA accuracy [95% CI]" in cost
    table = app.dataframe[2].value
    assert list(table["condition"]) == ["baseline", "steer+8"] and set(table["scorer kind"]) == {
        "lexical"
    }
    # three prompts: no interval
    assert "no interval: n = 3 < 10" in table["mean toxicity [95% CI]"][0]
    for escape in ("../secret", str(results.parent / "secret")):
        app.text_input(key="audit_path").set_value(escape).run()
        assert not app.exception and "outside the results root" in shown(app.error[0])


def test_resolve_under_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "run.json").write_text(AUDIT_RUN)
    os.symlink(tmp_path / "elsewhere", root / "link_out")
    os.symlink(root / "a", root / "link_in")
    assert resolve_under(root, "a") == (root / "a").resolve()
    assert resolve_under(root, str(root / "a")) == (root / "a").resolve()
    # a symlink that stays inside is fine
    assert resolve_under(root, "link_in") == (root / "a").resolve()
    for escape in (
        "../elsewhere",
        "a/../../elsewhere",
        str(tmp_path / "elsewhere"),
        "link_out",
        "link_out/run.json",
        "/etc/passwd",
        "~/x",
    ):
        with pytest.raises(InputError, match="outside the results root"):
            resolve_under(root, escape)
    (root / "a" / "run.json").write_text(AUDIT_RUN)
    (root / "acts").mkdir()
    (root / "acts" / "run.json").write_text('{"hooks": []}')  # an activation cache, not an audit
    assert [str(p) for p in list_audits(root)] == ["a"]  # link_out's run.json is not listed
    assert list_probes(root) == []


def test_missing_phi2_weights_give_a_message_not_a_traceback(app):
    app.sidebar.selectbox(key="model").set_value("phi-2").run()
    assert not app.exception
    assert "workbench fetch phi-2" in shown(app.error[0])
    app.switch_page(PAGES + "attention.py").run()
    assert not app.exception and any("workbench fetch phi-2" in shown(e) for e in app.error)


def test_steering_page_interventions_in_norm_units(app):
    open_page(app, "steering.py")
    assert app.selectbox(key="iv_method").value == "add"
    plain = app.session_state["iv_text_plain"]
    assert any("x mean residual norm at layer(s)" in t.value for t in app.text)
    app.slider(key="iv_coefficient").set_value(0.5).run()
    assert not app.exception and not app.error
    assert app.session_state["iv_text_plain"] == plain  # the unmodified text stays
    app.selectbox(key="iv_method").set_value("prompt").run()
    assert not app.exception and not app.error
    assert any(t.value.startswith("prompt: ") for t in app.text)


def test_audits_page_shows_a_search_with_its_pareto_figure(tmp_path, monkeypatch):
    root = tmp_path / "results"
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"Prompt number {i} says\n" for i in range(6)))
    args = [
        "intervene", "search", "--model", "tiny-phi", "--prompts", str(prompts),
        "--out", str(root / "detox"), "--methods", "add", "prompt", "--coefficients", "1",
        "--layers", "1", "--samples", "2", "--max-new-tokens", "3", "--scorers",
        "profanity-check", "--bootstrap", "100", "--no-benign", "--json",
    ]  # fmt: skip
    assert cli(args) == 0
    monkeypatch.setenv("WORKBENCH_DASHBOARD_MODEL", "tiny-phi")
    monkeypatch.setenv("WORKBENCH_RESULTS", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    open_page(at, "audits.py")
    assert at.selectbox(key="audit_pick").options == ["detox/test", "detox/validation"]
    at.selectbox(key="audit_pick").set_value("detox/test").run()
    assert not at.exception and not at.error
    assert chart_titles(at)[0].startswith("Detoxification candidates on the validation prompts")
    assert "Detoxification search" in at.subheader[0].value
    assert list(at.dataframe[0].value["candidate"])[0] == "baseline"


def test_features_page_reads_a_latent_and_searches(tmp_path, monkeypatch):
    from workbench.interp.sae import SAE, SAEConfig

    results = tmp_path / "results"
    sae = SAE(
        SAEConfig(
            d_in=128, d_sae=32, k=4, hook_name="blocks.1.hook_resid_post", model_name="tiny-phi"
        )
    )
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(0))
    sae.save(results / "sae" / "tiny")
    monkeypatch.setenv("WORKBENCH_DASHBOARD_MODEL", "tiny-phi")
    monkeypatch.setenv("WORKBENCH_RESULTS", str(results))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    app.run()
    open_page(app, "features.py")
    assert app.selectbox(key="sae_folder").value == "sae/tiny"
    card = app.get("html")[0].proto.body
    assert "Latent 0" in card and "Promotes" in card and "tokens." in card
    app.number_input(key="sae_latent").set_value(3).run()
    assert not app.exception and "Latent 3" in app.get("html")[0].proto.body
    app.text_input(key="sae_text").set_value("The cat sat on the mat").run()
    assert not app.exception and not app.error
    assert list(app.dataframe[0].value.columns) == ["latent", "max activation"]
