"""A small keras-hub GPT-2 (2 layers, random weights) with and without the fix:
same generated tokens, same logits, and a graph whose projection einsums
became MatMuls while the attention einsums stayed."""

import numpy as np
import pytest

import keras_ov_einsum
from graphs import (
    constant_bytes,
    generate,
    gpt2_causal_lm,
    gpt2_prompt,
    op_types,
    run_model,
)
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.generate.stepwise import LABEL
from keras_ov_einsum.parts.ops.matmul import PART as matmul_part
from keras_ov_einsum.parts.ops.prescale import PART as prescale_part
from keras_ov_einsum.parts.ops.slice_update import (
    PART as slice_update_part,
)

LAYERS = 2
# Per layer: query, key, value and output projections; two attention einsums.
PROJECTIONS_PER_LAYER = 4
ATTENTION_PER_LAYER = 2


@pytest.fixture(scope="module")
def causal_lm():
    return gpt2_causal_lm(layers=LAYERS)


def test_generate_same_tokens_and_explained(causal_lm):
    stock_tokens, _, _ = generate(causal_lm)
    # keras-hub's own generate graph (the stepwise part, which replaces it
    # by one step model, has its own tests in test_stepwise.py): it traces
    # the layers for the prompt and for the cached decoding step, every
    # projection lowered, every attention not. keras's explicit attention
    # path (the attention part fuses it at inference: test_attention.py).
    parts = {"stepwise": False, "attention": False}
    fixed_tokens, explanation, _ = generate(causal_lm, parts)
    np.testing.assert_array_equal(fixed_tokens, stock_tokens)
    logits = [d for d in explanation if d.equation == matmul_part.label]
    projections = [
        d
        for d in explanation
        if d.equation in ("abc,cde->abde", "abcd,cde->abe")
    ]
    writes = [d for d in explanation if d.equation == slice_update_part.label]
    scalings = [d for d in explanation if d.equation == prescale_part.label]
    assert not [d for d in explanation if d.equation == LABEL]
    attention = [
        d
        for d in explanation
        if d not in projections + logits + writes + scalings
    ]
    # This GPT-2's heads are 32 wide: its query scale, 1/sqrt(32), is not a
    # power of two, so the scaling stays after the projection.
    assert len(scalings) == 4 and not any(d.lowered for d in scalings)
    assert projections and attention and logits
    # The key/value cache (2 layers x key and value x prompt and step) as
    # slabs, and the sampler's token write.
    assert all(d.lowered for d in writes)
    cache_writes = [d for d in writes if len(d.shapes[0]) == 4]
    assert len(cache_writes) == 8 and len(writes) == 9
    assert all("written whole" in d.reason for d in cache_writes)
    # The tied embedding's logits: MatMul on the table, not on a copy.
    assert all(d.lowered for d in logits)
    assert logits[0].shapes[1] == (64, 512)  # transpose(embeddings)
    assert "untransposed kernel [512, 64]" in logits[0].reason
    assert len(projections) == 2 * len(attention)
    assert all(d.lowered for d in projections)
    assert {d.equation for d in attention} == {
        "aecd,abcd->acbe",
        "acbe,aecd->abcd",
    }
    assert all(d.reason == "no operand is a constant kernel" for d in attention)


def test_generate_is_repeatable_in_one_process(causal_lm):
    """Stock and fixed tokens are compared in one process: that holds only
    if a generate() gives the same tokens whatever ran before it (here:
    twice, then a prompt of another shape, then again)."""
    import keras_hub

    assert isinstance(causal_lm.sampler, keras_hub.samplers.GreedySampler)
    first, _, _ = generate(causal_lm)
    again, _, _ = generate(causal_lm)
    causal_lm.ov_compiled_model = None
    causal_lm.generate_function = None
    shorter = {key: value[:1, :8] for key, value in gpt2_prompt().items()}
    causal_lm.generate(shorter, stop_token_ids=None)
    later, _, _ = generate(causal_lm)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(later, first)


def _logits_graph(causal_lm, fixed):
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    token_ids = ov_opset.parameter([-1, -1], ov.Type.i32)
    padding_mask = ov_opset.parameter([-1, -1], ov.Type.boolean)
    inputs = {
        "token_ids": OpenVINOKerasTensor(token_ids.output(0)),
        "padding_mask": OpenVINOKerasTensor(padding_mask.output(0)),
    }
    if fixed:
        with keras_ov_einsum.enabled():
            logits = causal_lm(inputs)
    else:
        logits = causal_lm(inputs)
    return ov.Model([logits.output], [token_ids, padding_mask])


def test_logits_graph_and_values(causal_lm):
    stock = _logits_graph(causal_lm, fixed=False)
    fixed = _logits_graph(causal_lm, fixed=True)
    stock_types, fixed_types = op_types(stock), op_types(fixed)
    per_layer = PROJECTIONS_PER_LAYER + ATTENTION_PER_LAYER
    assert stock_types.count("Einsum") == LAYERS * per_layer
    assert fixed_types.count("Einsum") == LAYERS * ATTENTION_PER_LAYER
    assert fixed_types.count("MatMul") == stock_types.count("MatMul") + (
        LAYERS * PROJECTIONS_PER_LAYER
    )
    # No kernel copied: only small shape constants were added.
    extra = constant_bytes(fixed) - constant_bytes(stock)
    assert 0 <= extra <= 512 * LAYERS * PROJECTIONS_PER_LAYER

    prompt = gpt2_prompt()
    want = run_model(stock, prompt["token_ids"], prompt["padding_mask"])
    got = run_model(fixed, prompt["token_ids"], prompt["padding_mask"])
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
