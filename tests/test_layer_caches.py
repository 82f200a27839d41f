"""The layer_caches part: the stepwise step model takes and gives a key
and a value cache a layer, and a one-row generation runs each step on the
prefix of them that holds the filled positions."""

import causal_lms
import numpy as np
import pytest

import keras_ov_einsum
from keras_ov_einsum.parts.generate import stepwise
from keras_ov_einsum.parts.generate.layer_caches import LABEL

LAYERS = 2  # causal_lms' models


def _traced(causal_lm, **switches):
    # The caches as Parameters: state_caches (on by default) takes them
    # into the model's state.
    with keras_ov_einsum.enabled(**{"state_caches": False, **switches}):
        model, layout = stepwise.trace_step_model(causal_lm)
        explanation = keras_ov_einsum.explain()
    return model, layout, [d for d in explanation if d.equation == LABEL]


def _reader_types(parameter):
    return {
        reader.get_node().get_type_name()
        for reader in parameter.output(0).get_target_inputs()
    }


@pytest.mark.parametrize("family", causal_lms.FAMILIES)
def test_each_cache_goes_straight_to_its_write(family):
    """Each layer's key and value caches are Parameters that only the
    layer's cache write reads (and a ShapeOf, for the mask's length), and
    the writes are the model's cache outputs; without the part one stack
    is taken apart by Gathers and put together again by a Concat. The
    same bits either way."""
    causal_lm = causal_lms.causal_lm(family)
    per_layer, layout, (decision,) = _traced(causal_lm)
    whole, whole_layout, none = _traced(causal_lm, layer_caches=False)
    assert decision.lowered and none == []
    assert "4 key and value caches" in decision.reason
    assert layout.per_layer and not whole_layout.per_layer

    caches = per_layer.get_parameters()[1:-1]
    assert len(caches) == 2 * LAYERS
    for cache in caches:
        assert _reader_types(cache) <= {"ScatterNDUpdate", "ShapeOf"}
    written = [r.input_value(0).get_node() for r in per_layer.get_results()]
    assert [node.get_type_name() for node in written[1:]] == [
        "ScatterNDUpdate"
    ] * (2 * LAYERS)

    (stack,) = whole.get_parameters()[1:-1]
    assert "Gather" in _reader_types(stack)
    assert whole.get_results()[1].input_value(0).get_node().get_type_name() == (
        "Concat"
    )

    outputs = [
        causal_lms.prompt_and_step(causal_lms.compile_step_model(m), form)
        for m, form in ((per_layer, layout), (whole, whole_layout))
    ]
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_array_equal(got, want)


def test_float16_caches_cross_in_float32():
    causal_lm = causal_lms.causal_lm("gpt2", "float16")
    model, layout, (decision,) = _traced(causal_lm)
    assert decision.lowered and layout.dtype == "float32"
    for cache in model.get_parameters()[1:-1]:
        assert cache.get_element_type().get_type_name() == "f32"
        assert _reader_types(cache) == {"Convert"}


def test_a_stack_read_whole_keeps_the_whole_cache():
    """A call_with_cache that computes on the stack itself (here: scales
    it) gets the whole cache, and explain() says why."""
    gpt2 = causal_lms.causal_lm("gpt2")

    class Scaling(type(gpt2)):
        def call_with_cache(self, token_ids, cache, cache_update_index):
            return super().call_with_cache(
                token_ids, cache * 1.0, cache_update_index
            )

    causal_lm = Scaling(backbone=gpt2.backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    model, layout, (decision,) = _traced(causal_lm)
    assert not decision.lowered
    assert decision.reason == "a stack of caches is read whole (by Multiply)"
    assert not layout.per_layer
    assert len(model.get_parameters()) == 3


class _Recording:
    """An infer request that notes the length of each cache it is given."""

    def __init__(self, request):
        self.request = request
        self.lengths = []

    def set_input_tensor(self, index, tensor):
        if index == 1:
            self.lengths.append(
                tensor.shape[1 if len(tensor.shape) == 4 else 3]
            )
        self.request.set_input_tensor(index, tensor)

    def __getattr__(self, name):
        return getattr(self.request, name)


def _generate_recorded(causal_lm, prompt, **switches):
    """generate()'s token ids and the cache lengths each inference of its
    second call was given."""
    with keras_ov_einsum.enabled(**{"state_caches": False, **switches}):
        causal_lm.generate_function = None
        causal_lm.generate(prompt, stop_token_ids=None)
        function = causal_lm.generate_function
        recording = _Recording(function._compiled[3])
        function._compiled = (*function._compiled[:3], recording)
        out = causal_lm.generate(prompt, stop_token_ids=None)
    return np.asarray(out["token_ids"]), recording.lengths


@pytest.mark.parametrize("family", causal_lms.FAMILIES)
def test_one_row_runs_on_the_filled_prefix(family, monkeypatch):
    """One row (3 prompt tokens in 16): the prompt pass and each step get
    the caches' prefix that holds the positions filled so far and their
    own, rounded up to a multiple of the prefix step (4 here): 4, then 4,
    8, 8, 8, 8, 12, ... 16; the tokens are those of the whole caches.
    Two rows keep the whole length (a prefix of a row but the last is not
    contiguous)."""
    monkeypatch.setattr(stepwise, "_PREFIX_STEP", 4)
    causal_lm = causal_lms.causal_lm(family)
    one_row = {key: value[:1] for key, value in causal_lms.prompt().items()}
    tokens, lengths = _generate_recorded(causal_lm, one_row)
    whole_tokens, whole_lengths = _generate_recorded(
        causal_lm, one_row, layer_caches=False
    )
    # The prompt pass fills positions 0-2, the steps 3-14 one at a time.
    filled = [3] + list(range(4, 16))
    assert lengths == [-(-n // 4) * 4 for n in filled]
    assert whole_lengths == [16] * len(filled)
    np.testing.assert_array_equal(tokens, whole_tokens)

    _, two_row_lengths = _generate_recorded(causal_lm, causal_lms.prompt())
    assert set(two_row_lengths) == {16}
