"""The shared_masks part: within one ``call_with_cache`` the decoder layers
share one causal mask, one pair of rotary tables and one set of cache-write
index rows.

That the generated tokens stay stock's is tested where every default part
runs: ``test_stepwise.py`` (the step model) and ``test_families.py``
(stock's generate graph).
"""

import collections

import causal_lms
import keras
import numpy as np
import pytest

import keras_ov_einsum
from keras_ov_einsum.parts.generate import shared_masks, stepwise
from keras_ov_einsum.parts.generate.shared_masks import SHARED_LABEL

LAYERS = 2  # causal_lms' models


def _traced(family, **switches):
    causal_lm = causal_lms.causal_lm(family)
    causal_lm.compile(sampler="greedy")
    with keras_ov_einsum.enabled(**switches):
        model, layout = stepwise.trace_step_model(causal_lm)
        reused = keras_ov_einsum.explain().counts.get(SHARED_LABEL, 0)
    types = collections.Counter(op.get_type_name() for op in model.get_ops())
    return model, layout, types, reused


@pytest.mark.usefixtures("part_paths")
@pytest.mark.parametrize("family", causal_lms.FAMILIES)
def test_the_layers_share_one_copy(family):
    """The step model of a 2-layer model holds one causal mask (its
    GreaterEqual), one sin and cos table, and one Range per axis of the
    cache writes' index rows (2 axes), where each layer had its own; and
    it computes the same bits."""
    shared, layout, types, reused = _traced(family)
    apart, _, apart_types, none = _traced(family, shared_masks=False)
    assert none == 0
    rotary = family != "gpt2"
    # Per layer: the mask; the keys' and values' index rows; the queries'
    # and keys' tables.
    assert reused == (LAYERS - 1) + (2 * LAYERS - 1) * (1 + rotary)
    assert types["GreaterEqual"] == 1
    assert apart_types["GreaterEqual"] == LAYERS
    assert (types["Sin"], types["Cos"]) == (rotary, rotary)
    assert apart_types["Sin"] == apart_types["Cos"] == 2 * LAYERS * rotary
    ranges = apart_types["Range"] - types["Range"]
    # Saved: each other layer's mask (2 Ranges) and 3 of 4 cache writes'
    # rows (2 each), and 2 * LAYERS - 1 tables' positions (1 each).
    assert ranges == 2 * (LAYERS - 1) + 2 * (2 * LAYERS - 1) + rotary * (
        2 * LAYERS - 1
    )
    assert sum(types.values()) < sum(apart_types.values())

    outputs = [
        causal_lms.prompt_and_step(causal_lms.compile_step_model(m), layout)
        for m in (shared, apart)
    ]
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_array_equal(got, want)


def test_nothing_is_shared_outside_call_with_cache():
    """A forward pass (no cache) computes each layer's mask itself, also
    after a call_with_cache ran."""
    causal_lm = causal_lms.causal_lm("llama")
    prompt = causal_lms.prompt()
    with keras_ov_einsum.enabled(stepwise=False):
        causal_lm.generate_function = None
        causal_lm.generate(prompt, stop_token_ids=None)
        before = _reused()
        causal_lm.backbone(prompt)
        assert _reused() == before > 0


def test_an_overridden_call_with_cache_shares_nothing():
    import keras_hub

    class Other(keras_hub.models.GPT2CausalLM):
        def call_with_cache(self, token_ids, cache, cache_update_index):
            return super().call_with_cache(token_ids, cache, cache_update_index)

    gpt2 = causal_lms.causal_lm("gpt2")
    causal_lm = Other(backbone=gpt2.backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    with keras_ov_einsum.enabled():
        stepwise.trace_step_model(causal_lm)
        assert _reused() == 0
        stepwise.trace_step_model(gpt2)
        assert _reused() > 0


def _reused():
    return keras_ov_einsum.explain().counts.get(SHARED_LABEL, 0)


class TestKeys:
    """What counts as the same computation: plain values by value (and
    type), anything else (tensors) by identity; nothing outside a call."""

    def _within_a_call(self, keys):
        built = []
        with shared_masks._sharing():
            results = [
                shared_masks._shared(key, lambda: built.append(key) or key)
                for key in keys
            ]
        return results, built

    def test_equal_plain_values_share(self):
        results, built = self._within_a_call([("mask", 3), ("mask", 3)])
        assert len(built) == 1 and results[1] is results[0]

    def test_equal_arrays_are_not_the_same_tensor(self):
        a, b = np.zeros(3), np.zeros(3)
        _, built = self._within_a_call([("mask", a), ("mask", b)])
        assert len(built) == 2

    def test_a_bool_is_not_an_int(self):
        _, built = self._within_a_call([("mask", 1), ("mask", True)])
        assert len(built) == 2

    def test_outside_a_call_each_builds(self):
        built = []
        for _ in range(2):
            shared_masks._shared("mask", lambda: built.append(1))
        assert len(built) == 2

    def test_rotary_layers_of_other_configurations_do_not_share(self):
        from keras_hub.src.layers.modeling.rotary_embedding import (
            RotaryEmbedding,
        )

        inputs = keras.ops.ones((1, 4, 2, 8))

        with keras_ov_einsum.enabled(), shared_masks._sharing():
            first, second, other = (
                layer._compute_cos_sin_embedding(inputs, start_index=2)
                for layer in (
                    RotaryEmbedding(max_wavelength=10000),
                    RotaryEmbedding(max_wavelength=10000),
                    RotaryEmbedding(max_wavelength=100),
                )
            )
        assert second[0] is first[0]
        assert not np.allclose(
            keras.ops.convert_to_numpy(first[0]),
            keras.ops.convert_to_numpy(other[0]),
        )
