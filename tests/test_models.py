"""Loading: registry, the bridge's logits against plain Hugging Face, clear errors for missing weights."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import workbench as wb
from workbench.model.builds import build_phi_folder, tiny_phi_config
from workbench.model.registry import REGISTRY

from .conftest import hf_reference

TEXTS = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b  # sum"]


def max_logit_diff(model, reference) -> float:
    worst = 0.0
    for text in TEXTS:
        ids = model.tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            ours = model.bridge(ids, return_type="logits")
            theirs = reference(ids).logits
        worst = max(worst, (ours - theirs).abs().max().item())
    return worst


def test_registry_names_and_prompt_formats():
    names = [s.name for s in wb.list_models()]
    assert names[:3] == ["phi-2", "phi-1_5", "phi-1"]
    assert {"smollm2-135m", "tiny-phi"} <= set(names)
    spec = REGISTRY["phi-2"]
    assert spec.hf_id == "microsoft/phi-2" and len(spec.revision) == 40
    assert spec.prompt_format == "instruct"
    assert REGISTRY["smollm2-135m"].prompt_format == "chat"


def test_tiny_phi_keeps_phi2_structure(tiny):
    cfg = tiny.hf_model.config
    assert tiny.info.architecture == "PhiForCausalLM"
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.4 and not cfg.tie_word_embeddings
    assert tiny.info.parallel_attn_mlp
    assert tiny.info.d_vocab == 51200 and len(tiny.tokenizer) == 50295
    # Phi-2's whitespace-run tokens: two spaces are one token (id 50286).
    assert tiny.tokenizer("a  b").input_ids == [64, 50286, 65]
    assert tiny.info.n_params == sum(p.numel() for p in tiny.hf_model.parameters())


def test_tiny_phi_logits_equal_hugging_face(tiny):
    assert max_logit_diff(tiny, hf_reference(tiny.info.path)) <= 1e-5


@pytest.mark.parametrize(
    "overrides",
    [
        dict(
            num_attention_heads=8, hidden_size=128, partial_rotary_factor=0.5, num_hidden_layers=2
        ),
        dict(
            num_attention_heads=2,
            hidden_size=64,
            intermediate_size=256,
            partial_rotary_factor=0.25,
            num_hidden_layers=3,
        ),
        dict(
            num_attention_heads=4,
            hidden_size=96,
            intermediate_size=384,
            partial_rotary_factor=1.0,
            num_hidden_layers=5,
            num_key_value_heads=2,
        ),
    ],
    ids=["8heads-rot0.5-2layers", "2heads-rot0.25-3layers", "4heads-rot1.0-5layers-gqa"],
)
def test_phi_configs_logits_equal_hugging_face(overrides, tmp_path):
    folder = build_phi_folder(tmp_path / "phi", tiny_phi_config(**overrides), seed=1)
    model = wb.load(str(folder), device="cpu", dtype="float32")  # the path a downloaded Phi-2 takes
    assert model.info.n_layers == overrides["num_hidden_layers"]
    assert model.info.n_heads == overrides["num_attention_heads"]
    assert max_logit_diff(model, hf_reference(folder)) <= 1e-5


def test_qk_layernorm_is_refused_clearly(tmp_path):
    folder = build_phi_folder(
        tmp_path / "phi-qk", tiny_phi_config(num_hidden_layers=1, qk_layernorm=True)
    )
    with pytest.raises(wb.ModelUnavailableError, match="qk_layernorm"):
        wb.load(str(folder), device="cpu")


def test_missing_hub_weights_say_what_was_tried(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(wb.ModelUnavailableError) as error:
        wb.load("phi-2", device="cpu")
    message = str(error.value)
    for needed in [
        "microsoft/phi-2",
        str(tmp_path),
        "5.6 GB",
        "workbench fetch phi-2",
        "hf download",
        "--model /path/to",
    ]:
        assert needed in message
    assert "\n" not in message


def test_cli_info_phi2_without_weights_prints_message_not_traceback(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "info", "--model", "phi-2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "weights for microsoft/phi-2" in done.stderr and "workbench fetch phi-2" in done.stderr


def test_info_record(tiny):
    info = tiny.info.to_dict()
    assert (
        info["n_layers"] == 4
        and info["d_model"] == 128
        and info["n_heads"] == 4
        and info["d_head"] == 32
    )
    assert info["d_mlp"] == 512 and info["n_ctx"] == 2048 and info["dtype"] == "float32"


@pytest.mark.integration
def test_smollm2_logits_equal_hugging_face(smol):
    assert smol.info.architecture == "LlamaForCausalLM"
    assert 134e6 < smol.info.n_params < 135e6
    assert max_logit_diff(smol, hf_reference(smol.info.path)) <= 1e-5
