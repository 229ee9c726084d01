"""Patching on batches with any metric, TransformerLens parity, and the attribution methods with their self-check.

Tolerances: values are normalised (0 = corrupted, 1 = clean). Float32 noise between
two ways of computing the same patch measured at most 4.9e-6 on tiny-phi (ours vs
TransformerLens' one-forward-per-cell patching), so 1e-4 is used where the two are
the same computation; exactness "by construction" is checked at 1e-4 as well.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.core.errors import InputError
from workbench.interp.attribution import attribution_patch
from workbench.interp.patch_results import PatchingResult, SelfCheck, summarise_check
from workbench.interp.patching import activation_patch, prepare, run_patches, run_patches_per_pair
from workbench.model.builds import build_phi_folder, tiny_phi_config

from .conftest import ROOT

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
NOISE = 1e-4


def test_exact_and_atp_agree_with_transformerlens(tiny):
    """Our batched exact patching = TL's get_act_patch_attn_head_out_all_pos; our AtP = TL's node EAP."""
    from transformer_lens import patching as tl_patching
    from transformer_lens.tools.analysis import attribution_patching as tl_eap

    task = prepare(tiny, CLEAN, CORRUPT, " Mary", " John")
    _, clean_cache = tiny.bridge.run_with_cache(task.clean_ids)
    metric = lambda logits: task.metric(logits).mean()  # noqa: E731 (TL wants a scalar)
    theirs = tl_patching.get_act_patch_attn_head_out_all_pos(
        tiny.bridge, task.corrupt_ids, clean_cache, metric
    )
    ours = activation_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kind="attn_head")
    assert torch.allclose(task.normalise(theirs.double().cpu()).float(), ours.values, atol=NOISE)

    eap = tl_eap.attribution_patch(tiny.bridge, task.clean_ids, task.corrupt_ids, metric)
    heads = torch.zeros(ours.shape, dtype=torch.float64)
    for node, score in eap.node_scores.items():
        if node.kind == "attn_head_out":
            heads[node.layer, node.head] += score
    atp = attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kinds=("attn_head",))[
        "attn_head"
    ]
    assert torch.allclose(
        task.normalise(heads + task.corrupt_metric).float(), atp.values, atol=NOISE
    )


def test_a_batch_of_pairs_averages_its_pairs(tiny):
    cleans, corrupts = [CLEAN, CORRUPT], [CORRUPT, CLEAN]
    batch = prepare(tiny, cleans, corrupts, [" Mary", " John"], [" John", " Mary"])
    assert batch.n_pairs == 2 and batch.tokens[9] == "*" and batch.tokens[3] == " John"
    patches = [
        ("blocks.1.attn.hook_z", (slice(None), 2, slice(None))),
        ("blocks.2.hook_mlp_out", (slice(None),)),
    ]
    per_pair = run_patches_per_pair(tiny, batch, patches)
    for i in range(2):
        single = prepare(tiny, cleans[i], corrupts[i], [" Mary", " John"][i], [" John", " Mary"][i])
        assert torch.allclose(per_pair[:, i], run_patches(tiny, single, patches), atol=NOISE)
        assert abs(float(batch.clean_values[i]) - single.clean_metric) < NOISE
    result = activation_patch(
        tiny, cleans, corrupts, [" Mary", " John"], [" John", " Mary"], kind="attn_head"
    )
    assert (
        result.shape == (4, 4)
        and abs(result.clean_metric - float(batch.clean_values.mean())) < NOISE
    )


def test_pairs_of_different_lengths_are_right_padded(tiny):
    """Causal attention: a pad never reaches a real token, so each padded pair gives what it gives alone."""
    short = ("Then Mary and John met, John waved to", "Then Mary and John met, Mary waved to")
    batch = prepare(tiny, [CLEAN, short[0]], [CORRUPT, short[1]], " Mary", " John")
    assert batch.lengths.tolist() == [14, 9] and batch.tokens[12] == "*"
    patches = [
        ("blocks.1.attn.hook_z", (slice(None), 2, slice(None))),
        ("blocks.2.hook_attn_out", (slice(None),)),
    ]
    per_pair = run_patches_per_pair(tiny, batch, patches)
    singles = [
        prepare(tiny, CLEAN, CORRUPT, " Mary", " John"),
        prepare(tiny, *short, " Mary", " John"),
    ]
    for i, single in enumerate(singles):
        assert torch.allclose(per_pair[:, i], run_patches(tiny, single, patches), atol=NOISE)
        assert abs(float(batch.clean_values[i]) - single.clean_metric) < NOISE
    pooled = attribution_patch(
        tiny, [CLEAN, short[0]], [CORRUPT, short[1]], " Mary", " John", kinds=("attn_head",)
    )
    alone = [
        attribution_patch(tiny, *pair, " Mary", " John", kinds=("attn_head",))["attn_head"]
        for pair in ((CLEAN, CORRUPT), short)
    ]
    raw = sum(a.values.double() * (a.clean_metric - a.corrupt_metric) for a in alone) / 2
    assert torch.allclose(
        pooled["attn_head"].values.double(),
        raw / (batch.clean_metric - batch.corrupt_metric),
        atol=NOISE,
    )


def test_any_metric_callable(tiny):
    """A metric is any logits -> [pairs] function; the negated logit difference normalises to the same map."""
    mary, john = (
        tiny.tokenizer(w, add_special_tokens=False).input_ids[0] for w in (" Mary", " John")
    )
    flipped = lambda logits: logits[:, -1, john].float() - logits[:, -1, mary].float()  # noqa: E731
    default = activation_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kind="mlp_out")
    custom = activation_patch(tiny, CLEAN, CORRUPT, kind="mlp_out", metric=flipped)
    assert torch.allclose(default.values, custom.values, atol=NOISE)
    assert abs(custom.clean_metric + default.clean_metric) < NOISE
    estimate = attribution_patch(tiny, CLEAN, CORRUPT, kinds=("mlp_out",), metric=flipped)[
        "mlp_out"
    ]
    reference = attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kinds=("mlp_out",))[
        "mlp_out"
    ]
    assert torch.allclose(estimate.values, reference.values, atol=NOISE)


def test_bad_batches_and_metrics(tiny):
    with pytest.raises(InputError, match="pair 2 has 3 tokens but pair 1 has 14: a custom metric"):
        prepare(
            tiny,
            [CLEAN, "When Mary went"],
            [CORRUPT, "When John went"],
            metric=lambda logits: logits[:, -1, 0],
        )
    with pytest.raises(InputError, match="resid_pre patches one position at a time.*3 to 14"):
        activation_patch(
            tiny,
            [CLEAN, "When Mary went"],
            [CORRUPT, "When John went"],
            " Mary",
            " John",
            kind="resid_pre",
        )
    with pytest.raises(InputError, match="2 clean prompts but 1"):
        prepare(tiny, [CLEAN, CLEAN], [CORRUPT], " Mary", " John")
    with pytest.raises(InputError, match="one value per pair"):
        prepare(tiny, CLEAN, CORRUPT, metric=lambda logits: logits[:, -1, :2].sum())
    with pytest.raises(InputError, match="give the two answers"):
        prepare(tiny, CLEAN, CORRUPT)
    with pytest.raises(InputError, match="unknown attribution method 'atp\\+'"):
        attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John", method="atp+")
    with pytest.raises(InputError, match="steps must be at least 1"):
        attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John", method="eap-ig", steps=0)


@pytest.fixture(scope="module")
def linear_attention(tmp_path_factory):
    """One attention layer whose output reaches the logits linearly, and prompts whose difference only its query sees.

    LayerNorm eps 1e12 with weight 1e6 makes every LayerNorm x - mean(x) (in float32 the
    variance vanishes beside eps); the MLP writes nothing. The two prompts differ in their
    last token, and W_K, W_V are projected off that difference, so keys and values are the
    same in both runs and only the last query changes: the attention row moves through the
    softmax, then the metric is linear in it. AtP*'s recomputed softmax is then exact.
    """
    folder = build_phi_folder(
        tmp_path_factory.mktemp("linear") / "phi",
        tiny_phi_config(num_hidden_layers=1, layer_norm_eps=1e12),
        seed=3,
    )
    model = wb.load(str(folder), device="cpu", dtype="float32")
    hf = model.hf_model
    layer = hf.model.layers[0]
    with torch.no_grad():
        for norm in (layer.input_layernorm, hf.model.final_layernorm):
            norm.weight.fill_(1e6)
        layer.mlp.fc2.weight.zero_()
        layer.mlp.fc2.bias.zero_()
        # Saturated attention (a softmax far from linear), and heads that matter beside the direct path.
        for projection, factor in (
            (layer.self_attn.q_proj, 1000),
            (layer.self_attn.k_proj, 1000),
            (layer.self_attn.v_proj, 100),
            (layer.self_attn.dense, 100),
        ):
            projection.weight.mul_(factor)
        ids = [model.tokenizer(t).input_ids[-1] for t in (CLEAN, CLEAN[:-3] + " for")]
        embedded = layer.input_layernorm(hf.model.embed_tokens(torch.tensor(ids)))
        direction = embedded[1] - embedded[0]
        direction = direction / direction.norm()
        for projection in (layer.self_attn.k_proj, layer.self_attn.v_proj):
            projection.weight.sub_(torch.outer(projection.weight @ direction, direction))
    return model, CLEAN, CLEAN[:-3] + " for"


def test_atp_star_is_exact_where_the_linearisation_is_exact_by_construction(linear_attention):
    model, clean, corrupt = linear_attention
    exact = activation_patch(model, clean, corrupt, " Mary", " John", kind="attn_head")
    assert exact.values.abs().max() > 0.3  # the heads matter
    _, cache = model.run_with_cache(model.to_tokens(clean))
    assert cache["pattern", 0][0, :, -1].max() > 0.99  # and the last query's softmax is saturated
    star = attribution_patch(
        model, clean, corrupt, " Mary", " John", kinds=("attn_head",), method="atp*"
    )
    assert torch.allclose(star["attn_head"].values, exact.values, atol=NOISE)


def test_graddrop_changes_nothing_without_cancellation(tmp_path):
    """Layer 1 writes nothing (W_O, MLP out zero), so dropping it removes no path: AtP* = AtP on block outputs."""
    folder = build_phi_folder(tmp_path / "phi", tiny_phi_config(num_hidden_layers=2), seed=4)
    model = wb.load(str(folder), device="cpu", dtype="float32")
    top = model.hf_model.model.layers[1]
    with torch.no_grad():
        for linear in (top.self_attn.dense, top.mlp.fc2):
            linear.weight.zero_()
            linear.bias.zero_()
    kinds = ("attn_out", "mlp_out", "attn_head_pos")
    plain = attribution_patch(model, CLEAN, CORRUPT, " Mary", " John", kinds=kinds, method="atp")
    star = attribution_patch(model, CLEAN, CORRUPT, " Mary", " John", kinds=kinds, method="atp*")
    for kind in (
        "attn_out",
        "attn_head_pos",
    ):  # (layer 0's MLP changes only position 9, which nothing reads)
        assert plain[kind].values.abs().max() > 0.01
    for kind in kinds:
        assert torch.allclose(star[kind].values, plain[kind].values, atol=1e-6), kind


def test_eap_ig_with_one_step_is_atp(tiny):
    one = attribution_patch(
        tiny,
        CLEAN,
        CORRUPT,
        " Mary",
        " John",
        kinds=("attn_head", "resid_pre"),
        method="eap-ig",
        steps=1,
    )
    atp = attribution_patch(
        tiny, CLEAN, CORRUPT, " Mary", " John", kinds=("attn_head", "resid_pre")
    )
    for kind in one:
        assert torch.equal(one[kind].values, atp[kind].values)
        assert one[kind].method == "eap-ig" and atp[kind].method == "atp"


def _result(values) -> PatchingResult:
    values = torch.tensor(values, dtype=torch.float32)
    return PatchingResult(
        "attn_out", "atp", values, ("layer",), ([f"L{i}" for i in range(len(values))],), 1.0, 0.0
    )


def test_self_check_figures_on_a_constructed_case():
    exact = torch.tensor([0.9, 0.8, 0.1, 0.0, 0.7, 0.05], dtype=torch.float64)
    perfect = summarise_check(
        _result(exact.tolist()), list(range(6)), exact, exact, 2, 4, [f"L{i}" for i in range(6)]
    )
    assert perfect.pearson == pytest.approx(1) and perfect.recall == 1 and perfect.max_error == 0
    # The estimate's top 2 are cells 0 and 2; the exact top 2 are cells 0 and 1: recall 1/2.
    estimate = torch.tensor([0.9, 0.0, 0.8, 0.0, 0.1, 0.05], dtype=torch.float64)
    cells = [0, 2, 1, 3, 4, 5]  # top 2 by |estimate| first, then every other cell
    check = summarise_check(
        _result(estimate.tolist()),
        cells,
        exact[cells],
        estimate[cells],
        2,
        4,
        [f"L{i}" for i in range(6)],
    )
    assert check.recall == pytest.approx(0.5)
    assert check.max_error == pytest.approx(0.8) and check.max_error_cell in ("L1", "L2")
    assert check.pearson == pytest.approx(float(np.corrcoef(estimate, exact)[0, 1]))
    assert not check.passed and "FAILED" in check.summary()
    # Half of the other cells sampled (cells 1 and 3), each standing for 4 / 2 = 2 cells: at |exact| 0.8 the
    # estimated count reaches 2 (cell 0, and cell 1 twice), so 0.8 is the bar and only cell 0 clears it: 1/2.
    sampled = summarise_check(
        _result(estimate.tolist()),
        [0, 2, 1, 3],
        exact[[0, 2, 1, 3]],
        estimate[[0, 2, 1, 3]],
        2,
        4,
        [f"L{i}" for i in range(6)],
    )
    assert sampled.recall == pytest.approx(0.5)
    assert sampled.recall_low <= 0.5 and sampled.recall_high == 1.0  # a sample of two: a wide range


def test_self_check_rides_on_the_result(tiny):
    results = attribution_patch(
        tiny,
        CLEAN,
        CORRUPT,
        " Mary",
        " John",
        kinds=("attn_head", "mlp_out"),
        method="atp",
        verify=3,
        seed=1,
    )
    head = results["attn_head"].check
    # 3 + 2 x 3
    assert isinstance(head, SelfCheck) and head.k == 3 and head.checked == 9 and head.cells == 16
    assert (
        head.recall_low <= head.recall <= head.recall_high
        and "recall of exact top-3" in head.summary()
    )
    exact = activation_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kind="attn_head")
    by_label = {
        f"L{layer}H{h}": float(exact.values[layer, h]) for layer in range(4) for h in range(4)
    }
    assert all(
        abs(by_label[label] - value) < NOISE for label, value in zip(head.labels, head.exact)
    )
    assert results["mlp_out"].check.checked == 4  # every cell: recall is exact
    assert "self-check r" in repr(results["attn_head"])
    assert set(head.to_frame().columns) >= {"cell", "exact", "estimate", "top_k"}


def test_edges_add_up_to_the_node_attribution(tiny):
    """The gradient after a writer is the sum of what its readers take: each writer's edges sum to its node
    estimate, for EAP (one step) and EAP-IG (the same averaged gradients on both sides)."""
    from workbench.interp.edges import edge_attribution

    for steps in (1, 3):
        edges = edge_attribution(tiny, CLEAN, CORRUPT, " Mary", " John", steps=steps)
        assert edges.method == ("eap" if steps == 1 else "eap-ig") and edges.scores.shape == (
            4 * 3 * 4 + 4 + 1,
            21,
        )
        nodes = attribution_patch(
            tiny,
            CLEAN,
            CORRUPT,
            " Mary",
            " John",
            kinds=("attn_head", "mlp_out"),
            method="eap-ig",
            steps=steps,
        )
        totals = edges.writer_totals()
        for layer in range(4):
            assert abs(totals[f"MLP{layer}"] - float(nodes["mlp_out"].values[layer])) < NOISE
            for head in range(4):
                assert (
                    abs(totals[f"L{layer}H{head}"] - float(nodes["attn_head"].values[layer, head]))
                    < NOISE
                )
    # not upstream
    assert torch.isnan(edges.scores[edges.readers.index("L0H0.q"), edges.writers.index("L0H1")])
    writer, reader, score = edges.top(1)[0]
    assert abs(score) == float(
        torch.nan_to_num(edges.scores).abs().max()
    ) and f"{writer} -> {reader}" in repr(edges)
    assert len(edges.to_frame()) == int((~torch.isnan(edges.scores)).sum())


def test_patch_cli_methods_self_checks_and_json(capsys):
    from workbench.cli import main

    single = [
        "patch",
        "--model",
        "tiny-phi",
        "--clean",
        CLEAN,
        "--corrupt",
        CORRUPT,
        "--answers",
        " Mary",
        " John",
    ]
    assert (
        main(
            [*single, "--method", "atp*", "--verify", "3", "--kinds", "attn_head,mlp_out", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    check = out["results"]["attn_head"]["atp*"]["self_check"]
    assert (
        check["k"] == 3
        and check["checked"] == 9
        and check["cells"] == 16
        and isinstance(check["passed"], bool)
    )
    assert set(check) >= {"pearson", "spearman", "recall_at_3", "max_error", "max_error_cell"}
    assert out["self_check_thresholds"] == {"pearson": 0.9, "recall": 0.8}

    assert main([*single, "--method", "all", "--kinds", "mlp_out", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["results"]["mlp_out"]
    assert set(out) == {"exact", "atp", "atp*", "eap-ig"} and "self_check" not in out["exact"]
    # against full exact
    assert out["eap-ig"]["self_check"]["checked"] == out["eap-ig"]["self_check"]["cells"] == 4

    assert (
        main(
            [
                "patch",
                "--model",
                "tiny-phi",
                "--pairs",
                str(ROOT / "probes" / "ioi_pairs.jsonl"),
                "--method",
                "atp",
                "--verify",
                "5",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert len(out["pairs"]) == 25 and list(out["results"]) == ["attn_head", "attn_out", "mlp_out"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--verify", "-1"], "--verify"),
        (["--steps", "0"], "--steps"),
        (["--pairs", "PAIRS"], "either --pairs FILE or --clean"),
    ],
)
def test_patch_cli_bad_input_is_one_line(extra, message, capsys):
    from workbench.cli import main

    extra = [str(ROOT / "probes" / "ioi_pairs.jsonl") if e == "PAIRS" else e for e in extra]
    code = main(
        [
            "patch",
            "--model",
            "tiny-phi",
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--answers",
            " Mary",
            " John",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_patch_cli_positions_need_one_length(capsys):
    from workbench.cli import main

    code = main(
        [
            "patch",
            "--model",
            "tiny-phi",
            "--pairs",
            str(ROOT / "probes" / "ioi_pairs.jsonl"),
            "--kinds",
            "resid_pre",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "resid_pre patches one position at a time" in err[0]
