"""One prompt, one number: the library tokenises as TransformerLens' bridge does (`prepend_bos`).

The IOI pair of the README gives the same logit difference and the same per-head patching values
whether computed by hand through the TL surface (`model.to_tokens`, `model(...)`,
`model.run_with_hooks`) or through the workbench's functions, with the same `prepend_bos`.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from workbench.interp import (
    activation_patch,
    attention_patterns,
    direct_logit_attribution,
    logit_lens,
)
from workbench.model import to_tokens
from workbench.model.activations import cache_activations
from workbench.model.tokens import TokenizationWarning, single_token_id, tokenize_texts

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TEXTS = [CLEAN, " a leading space", "two\n\nlines  and  gaps", "<|endoftext|>x", "日本語 ok"]

# Measured on smollm2-135m (float32, CPU), every one of the 270 heads: max |library - by hand| is
# 1.5e-8 for the normalised patching values and 0 for the logit difference (5.2873); float32's own
# error against the same model in float64 is 1.3e-6 on the patching values and 4.6e-6 on the
# logit difference. The tolerances sit above float32's error and far below the 0.2-0.35 the
# named heads show (L20H0 0.340, L17H4 0.292).
PATCH_TOLERANCE = 1e-5
LOGIT_TOLERANCE = 2e-5


@pytest.mark.parametrize("name", ["tiny", "smol"])
@pytest.mark.parametrize("prepend_bos", [None, True, False])
def test_the_library_tokenises_as_the_bridge_does(request, name, prepend_bos):
    model = request.getfixturevalue(name)
    for text in TEXTS:
        by_bridge = model.to_tokens(text, prepend_bos=prepend_bos, truncate=False)[0].tolist()
        assert tokenize_texts(model, [text], prepend_bos)[0] == by_bridge, text
        assert to_tokens(model, text, prepend_bos)[0].tolist() == by_bridge, text
    batch = tokenize_texts(model, TEXTS, prepend_bos)
    assert batch == [tokenize_texts(model, [t], prepend_bos)[0] for t in TEXTS]


def test_the_default_is_the_bridge_s_default(tiny, smol):
    assert smol.cfg.default_prepend_bos is True and tiny.cfg.default_prepend_bos is False
    assert to_tokens(smol, CLEAN)[0, 0] == smol.tokenizer.bos_token_id
    assert to_tokens(tiny, CLEAN)[0, 0] != tiny.tokenizer.bos_token_id
    with pytest.raises(Exception, match="prepend_bos must be"):
        to_tokens(smol, CLEAN, prepend_bos="yes")


def _logit_diff(logits: torch.Tensor, mary: int, john: int) -> float:
    return float(logits[0, -1, mary] - logits[0, -1, john])


@pytest.mark.parametrize("prepend_bos", [None, False])
def test_ioi_numbers_by_hand_equal_the_library_s(smol, prepend_bos):
    model = smol
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
    clean = model.to_tokens(CLEAN, prepend_bos=prepend_bos)
    corrupt = model.to_tokens(CORRUPT, prepend_bos=prepend_bos)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupt_diff = _logit_diff(model(corrupt), mary, john)
    clean_diff = _logit_diff(clean_logits, mary, john)

    dla = direct_logit_attribution(model, CLEAN, " Mary", " John", prepend_bos=prepend_bos)
    assert dla.logit_diff == pytest.approx(clean_diff, abs=LOGIT_TOLERANCE)
    assert dla.tokens == model.to_str_tokens(CLEAN, prepend_bos=prepend_bos)

    exact = activation_patch(
        model, CLEAN, CORRUPT, " Mary", " John", kind="attn_head", prepend_bos=prepend_bos
    )
    assert exact.clean_metric == pytest.approx(clean_diff, abs=LOGIT_TOLERANCE)
    assert exact.corrupt_metric == pytest.approx(corrupt_diff, abs=LOGIT_TOLERANCE)
    assert exact.tokens == model.to_str_tokens(CLEAN, prepend_bos=prepend_bos)

    # Patch a few heads by hand: the clean hook_z of one head into the corrupted run.
    flat = exact.values.flatten().abs().argsort(descending=True)
    heads = [divmod(int(i), model.info.n_heads) for i in flat[:3]] + [(20, 0), (17, 4)]
    for layer, head in heads:
        name = f"blocks.{layer}.attn.hook_z"

        def patch(z, hook, head=head, name=name):
            z[:, :, head] = clean_cache[name][:, :, head]
            return z

        with torch.no_grad():
            patched = _logit_diff(
                model.run_with_hooks(corrupt, fwd_hooks=[(name, patch)]), mary, john
            )
        by_hand = (patched - corrupt_diff) / (clean_diff - corrupt_diff)
        assert float(exact.values[layer, head]) == pytest.approx(by_hand, abs=PATCH_TOLERANCE), (
            layer,
            head,
        )


def test_every_text_surface_shows_the_tokens_it_used(smol):
    for prepend_bos in (True, False):
        expected = smol.to_str_tokens("The capital of France is", prepend_bos=prepend_bos)
        lens = logit_lens(smol, "The capital of France is", prepend_bos=prepend_bos)
        assert lens.tokens == expected
        patterns = attention_patterns(smol, "The capital of France is", prepend_bos=prepend_bos)
        assert patterns.tokens == expected
        cache = cache_activations(
            smol, ["The capital of France is"], "blocks.0.hook_resid_post", "all",
            progress=False, prepend_bos=prepend_bos,
        )  # fmt: skip
        assert int(cache.lengths[0]) == len(expected)


def test_an_answer_without_its_leading_space_warns_once_and_says_which_was_used(smol):
    with pytest.warns(
        TokenizationWarning, match=r"'Paris' is scored as the token 'Paris'.*' Paris'"
    ):
        assert single_token_id(smol, "Paris") == smol.tokenizer("Paris").input_ids[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single_token_id(smol, " Paris")  # the spaced form: no warning
        single_token_id(smol, "\n")  # not a word: no spaced single token to suggest
