"""The attention part: inside keras-hub's generate(), a MultiHeadAttention
with dropout, called at inference, runs keras's dot_product_attention
branch (one fused ScaledDotProductAttention); training calls, calls
returning the scores and every call outside generate() keep stock's
explicit path (and its bits)."""

import numpy as np
import openvino as ov
import pytest

import keras_ov_einsum
from graphs import generate, gpt2_causal_lm, keras_parameter, patched, run_model
from keras_ov_einsum.core.context import as_in_generate
from keras_ov_einsum.parts.ops.attention import LABEL

HEADS, KEY_DIM, WIDTH = 2, 8, 16


@pytest.fixture
def generating():
    """As inside CausalLM.generate(), where keras-hub traces its graph."""
    with as_in_generate():
        yield


def _layer(dropout=0.1):
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.MultiHeadAttention(HEADS, KEY_DIM, dropout=dropout)
    layer.build((None, None, WIDTH), (None, None, WIDTH))
    return layer


def _traced(layer, fixed, mask=True, **call):
    """(ov.Model of ``layer(query, value)``, explain() or ()), traced on
    Parameters of 5 query and 7 value positions (and a boolean mask)."""
    query, query_tensor = keras_parameter([-1, 5, WIDTH])
    value, value_tensor = keras_parameter([-1, 7, WIDTH])
    parameters = [query, value]
    arguments = dict(call)
    if mask:
        mask_parameter, mask_tensor = keras_parameter([-1, 5, 7], "bool")
        parameters.append(mask_parameter)
        arguments["attention_mask"] = mask_tensor
    with patched(fixed):
        output = layer(query_tensor, value_tensor, **arguments)
        if isinstance(output, tuple):
            output = output[0]
        explanation = keras_ov_einsum.explain() if fixed else ()
    model = ov.Model([output.output.get_node()], parameters)
    return model, explanation


def _types(model):
    return {node.get_type_name() for node in model.get_ordered_ops()}


def _inputs():
    rng = np.random.default_rng(1)
    query = rng.standard_normal((2, 5, WIDTH)).astype("float32")
    value = rng.standard_normal((2, 7, WIDTH)).astype("float32")
    mask = rng.random((2, 5, 7)) < 0.7
    mask[..., 0] = True  # every query attends somewhere
    return query, value, mask


@pytest.mark.parametrize("mask", [True, False], ids=["mask", "no-mask"])
def test_inference_with_dropout_is_one_fused_attention(generating, mask):
    layer = _layer()
    stock, _ = _traced(layer, False, mask)
    fixed, explanation = _traced(layer, True, mask)
    assert "Softmax" in _types(stock)
    assert "ScaledDotProductAttention" not in _types(stock)
    assert "ScaledDotProductAttention" in _types(fixed)
    assert "Softmax" not in _types(fixed)
    assert explanation.counts[LABEL] == 1
    # The layer's own rate is back after the call.
    assert layer.get_config()["dropout"] == 0.1
    inputs = _inputs() if mask else _inputs()[:2]
    got, want = run_model(fixed, *inputs), run_model(stock, *inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call",
    [{"training": True}, {"return_attention_scores": True}],
    ids=["training", "scores"],
)
def test_training_and_scores_keep_stocks_path(generating, call):
    fixed, explanation = _traced(_layer(), True, **call)
    assert "Softmax" in _types(fixed)
    assert "ScaledDotProductAttention" not in _types(fixed)
    assert LABEL not in explanation.counts


def test_outside_generate_the_layer_keeps_stocks_path_and_bits():
    layer = _layer()
    stock, _ = _traced(layer, False)
    fixed, explanation = _traced(layer, True)
    assert "ScaledDotProductAttention" not in _types(fixed)
    assert LABEL not in explanation.counts
    inputs = _inputs()
    np.testing.assert_array_equal(
        run_model(fixed, *inputs), run_model(stock, *inputs)
    )


def test_a_layer_without_dropout_is_stocks_own_branch(generating):
    fixed, explanation = _traced(_layer(dropout=0.0), True)
    assert "ScaledDotProductAttention" in _types(fixed)
    assert LABEL not in explanation.counts  # nothing for the part to do


def test_gpt2_generates_stocks_tokens():
    causal_lm = gpt2_causal_lm()
    stock_tokens, _, _ = generate(causal_lm)
    tokens, explanation, _ = generate(causal_lm, {})
    np.testing.assert_array_equal(tokens, stock_tokens)
    # Two layers, traced once into the stepwise part's step model.
    assert explanation.counts[LABEL] == 2


class TestLlama:
    """keras-hub's Llama attention takes its own dot_product_attention
    branch inside generate() (its fused_attention_op_available() answers
    yes there), and its einsums elsewhere."""

    def _step_model(self, **switches):
        import causal_lms

        from keras_ov_einsum.parts.generate import stepwise

        causal_lm = causal_lms.causal_lm("llama")
        causal_lm.compile(sampler="greedy")
        # The caches as inputs (prompt_and_step feeds them): state_caches
        # off.
        with keras_ov_einsum.enabled(state_caches=False, **switches):
            model, layout = stepwise.trace_step_model(causal_lm)
            counts = keras_ov_einsum.explain().counts
        return model, layout, counts

    def test_in_generate_one_fused_attention_a_layer(self, generating):
        import causal_lms

        from keras_ov_einsum.parts.ops.attention import LLAMA_LABEL

        fused, layout, counts = self._step_model()
        stock, _, stock_counts = self._step_model(attention=False)
        types = [node.get_type_name() for node in fused.get_ordered_ops()]
        stock_types = [n.get_type_name() for n in stock.get_ordered_ops()]
        # 2 layers; the sampler's Softmax stays.
        assert types.count("ScaledDotProductAttention") == 2
        assert "ScaledDotProductAttention" not in stock_types
        assert (types.count("Softmax"), stock_types.count("Softmax")) == (1, 3)
        assert counts[LLAMA_LABEL] == 2 and LLAMA_LABEL not in stock_counts
        got, want = (
            causal_lms.prompt_and_step(causal_lms.compile_step_model(m), layout)
            for m in (fused, stock)
        )
        for index in (0, 2):  # the prompt pass's and the step's probabilities
            np.testing.assert_allclose(
                got[index], want[index], rtol=1e-5, atol=1e-7
            )

    def test_outside_generate_its_einsums(self):
        from keras_ov_einsum.parts.ops.attention import LLAMA_LABEL

        model, _, counts = self._step_model()
        types = [node.get_type_name() for node in model.get_ordered_ops()]
        assert "ScaledDotProductAttention" not in types
        assert LLAMA_LABEL not in counts
