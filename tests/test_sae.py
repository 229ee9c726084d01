"""Sparse autoencoders and transcoders (workbench.interp.sae*, safety.sae_toxicity) on tiny models:
a planted dictionary recovered, the identity and the zero SAE measured by hand, exact round trips
through SAELens' and sparsify's formats (and a file sparsify itself wrote), hub ids resolved
offline-first, a SIGKILLed training run resumed to the same weights, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from workbench.cli import main
from workbench.core.errors import InputError, ModelUnavailableError
from workbench.interp import sae_formats
from workbench.interp.sae import SAE, SAEConfig, load_sae
from workbench.interp.sae_eval import evaluate_sae
from workbench.interp.sae_features import feature_card, index_features, search_features
from workbench.interp.sae_train import train_sae
from workbench.model.activations import cache_activations, cache_tokens
from workbench.model.cache_plan import chunk_token_ids

from .conftest import ROOT

HOOK = "blocks.1.hook_resid_post"
TEXTS = [
    f"The {animal} walked to the {place} on day {i}, and everyone there said hello to it."
    for i, (animal, place) in enumerate(
        [("cat", "market"), ("dog", "river"), ("fox", "school"), ("owl", "harbour")] * 12
    )
]


def _random_sae(cfg: SAEConfig, seed: int = 0, dtype=torch.float32) -> SAE:
    sae = SAE(cfg, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return sae


@pytest.fixture(scope="module")
def windows_cache(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae") / "cache"
    windows = chunk_token_ids(tiny, TEXTS, 16)
    cache_tokens(tiny, windows, hooks=HOOK, positions="all", out=folder, progress=False)
    return folder


# ----------------------------------------------------------------------------- training


def test_a_planted_dictionary_is_recovered():
    """256 unit directions in 64 dimensions, 4 active per sample, with noise: >= 90% of them are
    found by some decoder row with cosine >= 0.9."""
    generator = torch.Generator().manual_seed(0)
    n, d, m, active = 40_000, 64, 256, 4
    dictionary = torch.nn.functional.normalize(torch.randn(m, d, generator=generator), dim=1)
    which = torch.rand(n, m, generator=generator).argsort(1)[:, :active]
    weights = torch.rand(n, active, generator=generator) * 2 + 0.5
    x = torch.einsum("na,nad->nd", weights, dictionary[which])
    x += 0.01 * torch.randn(n, d, generator=generator)
    sae = train_sae(x, k=4, width=512, tokens=400_000, batch_size=1024, lr=3e-3, progress=False)
    decoder = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    best = (dictionary @ decoder.T).max(dim=1).values
    assert (best >= 0.9).float().mean() >= 0.9, best.sort().values[:30]


def test_training_from_a_cache_folder_an_in_memory_cache_and_rows_agree(tiny, windows_cache):
    """The same rows in the same order whatever holds them: a disk cache and its in-memory copy
    train identical SAEs, and the first position of every window is left out."""
    from workbench.model.corpus_cache import open_cache

    disk = open_cache(windows_cache)
    kwargs = dict(k=4, width=64, tokens=3000, batch_size=256, progress=False, group_size=1)
    a = train_sae(disk, **kwargs)
    b = train_sae(disk.to_memory(), **kwargs)
    assert a.cfg.hook_name == HOOK and a.cfg.model_name == "tiny-phi"
    settings = a.cfg.metadata["training"]["settings"]
    assert settings["source_rows"] == int((disk.lengths - 1).sum())
    memory_settings = b.cfg.metadata["training"]["settings"]
    assert memory_settings["source_rows"] == settings["source_rows"]
    for name, parameter in a.named_parameters():
        assert torch.allclose(parameter, dict(b.named_parameters())[name], atol=1e-6), name


def test_batchtopk_and_a_transcoder_with_a_skip_connection_train_and_travel(tmp_path):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 16, generator=generator)
    y = x @ torch.randn(16, 8, generator=generator) + 0.1 * torch.randn(
        4000, 8, generator=generator
    )
    batch = train_sae(
        x, k=3, width=48, tokens=4000, batch_size=500, architecture="batchtopk", progress=False
    )
    assert batch.cfg.threshold > 0 and batch.cfg.architecture == "batchtopk"
    batch.save(tmp_path / "batch")
    again = load_sae(tmp_path / "batch")
    assert torch.equal(again.encode(x[:50]), batch.encode(x[:50]))
    tc = train_sae(
        (x, y),
        k=3,
        width=48,
        tokens=40000,
        batch_size=500,
        lr=0.02,
        hook="blocks.0.hook_mlp_in",
        hook_out="blocks.0.hook_mlp_out",
        skip=True,
        progress=False,
    )
    assert tc.cfg.is_transcoder and tc.W_skip is not None
    fvu = ((tc(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()
    assert fvu < 0.5, fvu  # the skip connection alone can fit this linear map
    tc.save(tmp_path / "sp", format="sparsify")
    assert (tmp_path / "sp" / "layers.0.mlp" / "sae.safetensors").is_file()
    back = load_sae(tmp_path / "sp" / "layers.0.mlp")
    assert back.cfg.hook_name_out == "blocks.0.hook_mlp_out"
    assert torch.equal(back(x[:50]), tc(x[:50]))


def test_a_sigkilled_training_run_resumes_to_the_same_weights(windows_cache, tmp_path):
    """Killed (SIGKILL) right after its first checkpoint, then rerun: torch.equal to a run never
    interrupted. The child blocks after writing the checkpoint until it is killed (no timing)."""
    args = [
        "--cache",
        str(windows_cache),
        "--k",
        "4",
        "--width",
        "64",
        "--tokens",
        "4096",
        "--batch-tokens",
        "256",
        "--checkpoint-every",
        "1024",
    ]
    assert main(["sae", "train", *args, "--out", str(tmp_path / "whole")]) == 0
    ready = tmp_path / "ready"
    child = textwrap.dedent(f"""
        import sys, threading
        from workbench.interp import sae_train
        saved = sae_train._Trainer._save_checkpoint
        def save_then_block(self):
            saved(self)
            open({str(ready)!r}, "w").close()
            threading.Event().wait()
        sae_train._Trainer._save_checkpoint = save_then_block
        from workbench.cli import main
        sys.exit(main(["sae", "train", *{args!r}, "--out", {str(tmp_path / "killed")!r}]))
    """)
    process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        while not ready.exists():
            assert process.poll() is None, "the child ended before its first checkpoint"
            try:
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "killed" / "cfg.json").exists()
    assert main(["sae", "train", *args, "--out", str(tmp_path / "killed")]) == 0
    whole, resumed = load_sae(tmp_path / "whole"), load_sae(tmp_path / "killed")
    for name, parameter in whole.named_parameters():
        assert torch.equal(parameter, dict(resumed.named_parameters())[name]), name
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- evaluation


def _identity(d: int) -> SAE:
    """width = d, k = d: relu passes x + c (c above every |x|), and the decoder bias takes c off."""
    sae = SAE(
        SAEConfig(d_in=d, d_sae=d, k=d, hook_name=HOOK, model_name="tiny-phi"), dtype=torch.float64
    )
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_dec.fill_(-1024.0)
    return sae


def test_the_identity_sae_scores_one_and_the_zero_sae_zero(tiny):
    d = tiny.info.d_model
    identity = evaluate_sae(tiny, _identity(d), TEXTS, context=16, progress=False)
    # float64 SAE on float32 activations: x + 1024 - 1024 is exact to ~1e-13, far below float32's step
    assert identity["explained_variance"] == pytest.approx(1, abs=1e-9)
    assert identity["ce_loss_recovered"] == pytest.approx(1, abs=1e-6)
    assert identity["kl_div"] == pytest.approx(0, abs=1e-7)
    assert identity["l0"] == d and identity["dead_share"] == 0
    zero = SAE(SAEConfig(d_in=d, d_sae=2 * d, k=4, hook_name=HOOK, model_name="tiny-phi"))
    result = evaluate_sae(tiny, zero, TEXTS, context=16, progress=False)
    assert result["explained_variance"] <= 0 and result["ce_loss_recovered"] == 0
    assert result["dead_share"] == 1 and result["l0"] == 0
    assert (
        result.estimates["explained_variance"].has_interval
        and "windows" in result.estimates["fvu"].method
    )


def test_an_sae_of_another_model_or_width_is_refused(tiny):
    d = tiny.info.d_model
    with pytest.raises(InputError, match="trained on 'smollm2-135m'"):
        evaluate_sae(
            tiny,
            SAE(SAEConfig(d_in=d, d_sae=8, k=2, hook_name=HOOK, model_name="smollm2-135m")),
            TEXTS,
        )
    with pytest.raises(InputError, match="width 64"):
        evaluate_sae(
            tiny,
            SAE(SAEConfig(d_in=64, d_sae=8, k=2, hook_name=HOOK, model_name="tiny-phi")),
            TEXTS,
        )


# ----------------------------------------------------------------------------- formats


def test_saelens_and_sparsify_round_trips_are_exact(tmp_path):
    cfg = SAEConfig(
        d_in=12, d_sae=40, k=5, hook_name="blocks.3.hook_resid_post", model_name="tiny-phi"
    )
    sae = _random_sae(cfg)
    x = torch.randn(30, 12)
    sae.save(tmp_path / "lens")
    sae.save(tmp_path / "sp", format="sparsify")
    raw = json.loads((tmp_path / "lens" / "cfg.json").read_text())
    assert (
        raw["architecture"] == "topk"
        and raw["k"] == 5
        and raw["metadata"]["hook_name"] == cfg.hook_name
    )
    for folder in (tmp_path / "lens", tmp_path / "sp" / "layers.3"):
        back = load_sae(folder)
        assert back.cfg.hook_name == cfg.hook_name and back.cfg.model_name == "tiny-phi"
        for name, parameter in sae.named_parameters():
            assert torch.equal(parameter, dict(back.named_parameters())[name]), (folder, name)
        assert torch.equal(back.encode(x), sae.encode(x))
    with pytest.raises(InputError, match="holds several SAEs|hookpoint"):
        (tmp_path / "sp" / "layers.4").mkdir()
        (tmp_path / "sp" / "layers.4" / "cfg.json").write_text("{}")
        load_sae(tmp_path / "sp")
    assert load_sae(tmp_path / "sp", hookpoint="layers.3").cfg.d_sae == 40


def test_a_file_written_by_sparsify_itself_gives_identical_latents(tmp_path):
    import sparsify  # installed by `make setup` (--no-deps beside our pins)

    coder = sparsify.SparseCoder(
        24, sparsify.SparseCoderConfig(num_latents=96, k=6), dtype=torch.float64
    )
    with torch.no_grad():
        for parameter in coder.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(3))
    coder.save_to_disk(tmp_path / "layers.2")
    ours = load_sae(tmp_path / "layers.2")
    assert ours.cfg.hook_name == "blocks.2.hook_resid_post" and ours.W_enc.dtype == torch.float64
    x = torch.randn(50, 24, dtype=torch.float64)
    theirs = coder.encode(x)
    values, indices = ours.encode_sparse(x)
    order_theirs, order_ours = theirs.top_indices.sort(1), indices.sort(1)
    assert torch.equal(order_theirs.values, order_ours.values)
    mine = values.gather(1, order_ours.indices)
    reference = theirs.top_acts.gather(1, order_theirs.indices)
    # float64 both ways; x W^T as a linear layer and x @ W^T as a matmul differ in the last bits
    assert torch.allclose(mine, reference, rtol=0, atol=1e-12)
    assert torch.allclose(ours(x), coder(x).sae_out, rtol=0, atol=1e-12)


def test_saelens_without_b_dec_on_the_input_is_folded_in(tmp_path):
    cfg = SAEConfig(d_in=10, d_sae=20, k=3, hook_name=HOOK)
    sae = _random_sae(cfg, dtype=torch.float64)
    sae.save(tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    raw["apply_b_dec_to_input"] = False
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(raw))
    back = load_sae(tmp_path / "s")
    x = torch.randn(7, 10, dtype=torch.float64)
    direct = torch.relu(
        x @ sae.W_enc + sae.b_enc
    )  # what SAELens computes without b_dec on the input
    assert torch.allclose(back.pre_activations(x), direct, atol=1e-12)


def test_hub_ids_resolve_from_the_cache_and_say_how_to_fetch_when_missing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        ModelUnavailableError, match="workbench sae fetch hf:someone/saes --hookpoint layers.1"
    ):
        load_sae("hf:someone/saes", hookpoint="layers.1")
    repo = tmp_path / "hub" / "models--someone--saes"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    sae = _random_sae(SAEConfig(d_in=8, d_sae=16, k=2, hook_name="blocks.1.hook_resid_post"))
    sae.save(repo / "snapshots" / revision, format="sparsify")
    loaded = load_sae("hf:someone/saes", hookpoint="layers.1")
    assert torch.equal(loaded.W_dec, sae.W_dec)
    assert torch.equal(load_sae("someone/saes", hookpoint="layers.1").W_enc, sae.W_enc)
    assert sae_formats.hooks_of_hookpoint("layers.7.mlp", True) == (
        "blocks.7.hook_mlp_in",
        "blocks.7.hook_mlp_out",
    )


# ----------------------------------------------------------------------------- reading features


def test_feature_cards_and_search_read_the_index(tiny, tmp_path):
    cache = cache_activations(tiny, TEXTS, hooks=HOOK, positions="all", progress=False)
    sae = train_sae(cache, k=4, width=96, tokens=6000, batch_size=256, progress=False)
    index = index_features(tiny, sae, TEXTS, context=16, progress=False)
    index.save(tmp_path)
    from workbench.interp.sae_features import load_feature_index

    again = load_feature_index(tmp_path)
    assert torch.equal(again.values, index.values) and again.hook == HOOK
    density = index.density()
    latent = int(density.argmax())
    card = feature_card(tiny, sae, index, latent, top=5)
    # the density and the top context agree with encoding the windows directly
    assert card.density == pytest.approx(float(density[latent]))
    assert 0 < len(card.contexts) <= 5 and card.contexts[0]["max"] == pytest.approx(
        float(index.activations(latent).max())
    )
    assert len(card.promoted) == 10 and card.promoted[0][1] >= card.promoted[-1][1]
    assert card.suppressed[0][1] <= card.suppressed[-1][1]
    assert sum(card.histogram[0]) == int((index.activations(latent) > 0).sum())
    found = search_features(tiny, sae, index, token=" cat")
    assert found["occurrences"].iloc[0] == 12
    typed = search_features(tiny, sae, index, text="The owl walked to the harbour")
    assert len(typed) > 0 and (typed["max activation"] > 0).all()
    with pytest.raises(InputError, match="latent must be"):
        feature_card(tiny, sae, index, 96)


def test_the_command_line_trains_evaluates_and_reads(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    cache = tmp_path / "cache"
    assert (
        main(
            [
                "cache",
                "--model",
                "tiny-phi",
                "--input",
                str(corpus),
                str(corpus),
                "--windows",
                "16",
                "--positions",
                "all",
                "--hooks",
                HOOK,
                "--out",
                str(cache),
                "--store-dtype",
                "bfloat16",
            ]
        )
        == 0
    )
    capsys.readouterr()
    run = json.loads((cache / "run.json").read_text())
    assert run["store_dtype"] == "bfloat16"
    out = tmp_path / "sae"
    assert (
        main(
            [
                "sae",
                "train",
                "--cache",
                str(cache),
                "--k",
                "4",
                "--width",
                "64",
                "--tokens",
                "2048",
                "--batch-tokens",
                "256",
                "--out",
                str(out),
                "--also-sparsify",
                "--json",
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    assert trained["tokens"] == 2048 and trained["hook"] == HOOK
    assert (out / "sparsify" / "layers.1" / "sae.safetensors").is_file()
    # a rerun reads the finished SAE back instead of training again
    written = (out / "sae_weights.safetensors").stat().st_mtime_ns
    assert (
        main(
            [
                "sae",
                "train",
                "--cache",
                str(cache),
                "--k",
                "4",
                "--width",
                "64",
                "--tokens",
                "2048",
                "--batch-tokens",
                "256",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    assert (
        json.loads(capsys.readouterr().out)["final_training_fvu"] == trained["final_training_fvu"]
    )
    assert (out / "sae_weights.safetensors").stat().st_mtime_ns == written
    assert (
        main(
            [
                "sae",
                "eval",
                "--model",
                "tiny-phi",
                "--sae",
                str(out),
                "--texts",
                str(corpus),
                "--context",
                "16",
                "--out",
                str(tmp_path / "eval"),
                "--json",
            ]
        )
        == 0
    )
    evaluation = json.loads(capsys.readouterr().out)
    assert 0 < evaluation["estimates"]["explained_variance"]["value"] <= 1
    assert (tmp_path / "eval" / "eval.json").is_file()
    html = tmp_path / "cards.html"
    assert (
        main(
            [
                "sae",
                "features",
                "--model",
                "tiny-phi",
                "--sae",
                str(out),
                "--texts",
                str(corpus),
                "--context",
                "16",
                "--latents",
                "0",
                "1",
                "--html",
                str(html),
                "--json",
            ]
        )
        == 0
    )
    assert [c["latent"] for c in json.loads(capsys.readouterr().out)["cards"]] == [0, 1]
    assert "Latent 0" in html.read_text() and "Promotes" in html.read_text()


def test_sparse_and_dense_probes_and_toxicity_features_on_toxigen(tmp_path, capsys):
    from .conftest import SHARED_DATA

    toxigen = SHARED_DATA / "toxigen"
    sae = _random_sae(SAEConfig(d_in=128, d_sae=256, k=8, hook_name=HOOK, model_name="tiny-phi"))
    sae.save(tmp_path / "sae")
    assert (
        main(
            [
                "sae",
                "toxigen",
                "--model",
                "tiny-phi",
                "--sae",
                str(tmp_path / "sae"),
                "--toxigen",
                str(toxigen),
                "--ks",
                "1",
                "5",
                "--top",
                "3",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    probes = result["probes"]
    assert [p["probe"] for p in probes] == ["dense", "SAE latents", "SAE latents"]
    assert [len(p["latents"]) for p in probes] == [0, 1, 5]
    assert all(
        0 <= p["test AUROC"] <= 1 and p["low"] <= p["test AUROC"] <= p["high"] for p in probes
    )
    assert result["split"]["method"].startswith("group") and result["split"]["n_test"] > 50
    assert len(result["toxicity_features"]) == 3


def test_an_sae_latent_gives_the_detox_search_a_direction(tiny, tmp_path):
    """--direction sae: away from a latent's unit decoder row, at its SAE's layer, for add and
    ablate alike."""
    from workbench.audit.intervene import SearchOptions, candidates
    from workbench.safety.directions import direction_from_latent

    sae = _random_sae(
        SAEConfig(
            d_in=128, d_sae=32, k=4, hook_name="blocks.2.hook_resid_post", model_name="tiny-phi"
        )
    )
    sae.save(tmp_path / "sae")
    found = direction_from_latent(tiny, tmp_path / "sae", 5)
    assert found.layer == 2 and found.source["latent"] == 5
    assert torch.allclose(found.vector, sae.W_dec[5].detach() / sae.W_dec[5].detach().norm())
    with pytest.raises(InputError, match="not one of this SAE's"):
        direction_from_latent(tiny, tmp_path / "sae", 32)
    prompts = tmp_path / "p.txt"
    prompts.write_text("You are such a\nI hate the way you\n")
    options = SearchOptions(
        prompts=[str(prompts)],
        out=str(tmp_path / "out"),
        methods=["add", "ablate"],
        coefficients=[0.1],
        direction="sae",
        sae=str(tmp_path / "sae"),
        sae_latent=5,
    )
    options.check()
    made = candidates(tiny, options)
    assert [iv.method for iv in made] == ["add", "ablate"] and all(iv.layers == [2] for iv in made)
    assert all(torch.allclose(iv.direction, -found.vector) for iv in made)
    assert "away from latent 5" in made[0].towards
