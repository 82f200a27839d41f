"""The opt-in int8_layers part: keras's default int8 EinsumDense and Dense
(inputs quantized in the graph) built whole, stock's results bit for bit
in fewer nodes, the kernel kept int8."""

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset
import pytest
from test_int8 import (
    LAYERS,
    _activations,
    _compiled,
    _equals_stock,
    _fully_connected_weight_types,
    _quantized_layer,
    _weights_only,
)

import keras_ov_einsum
from graphs import generate, gpt2_causal_lm, op_types
from keras_ov_einsum.core import backend
from keras_ov_einsum.core.context import as_in_generate
from keras_ov_einsum.parts.int8 import int8, int8_layers

BOTH = {"int8": True, "int8_layers": True}
IDS = ["query", "attention-output", "dense-up", "dense-down"]


def _traced(layer, tail, parts):
    """``layer`` traced on a Parameter under ``parts``: the ov.Model."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter([-1, -1, *tail], ov.Type.f32)
    with keras_ov_einsum.enabled(**parts):
        y = layer(OpenVINOKerasTensor(parameter.output(0)))
    return ov.Model([y.output], [parameter])


@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_tail", LAYERS, ids=IDS
)
def test_the_layer_is_stocks_bit_for_bit_in_fewer_nodes(
    equation, output_shape, bias_axes, input_tail
):
    layer, tail = _quantized_layer(
        equation, output_shape, bias_axes, input_tail
    )
    fixed, decisions = _equals_stock(layer, tail, BOTH)

    (decision,) = decisions
    assert decision.lowered, decision.reason
    assert decision.reason.startswith("int8 layer built whole")
    assert decision.reason.endswith("int8 kernel kept int8")  # one part
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8]
    # One part of K: no int32 round trip, no Einsum, and fewer nodes than
    # keras's operations under the int8 part alone (the query: 41 against
    # 48, the align_types part having left out keras's no-op Converts).
    whole = _traced(layer, tail, BOTH)
    alone = _traced(layer, tail, {"int8": True})
    types = op_types(whole)
    assert "Einsum" not in types
    assert not any(
        node.get_type_name() == "Convert"
        and node.get_output_element_type(0) == ov.Type.i32
        for node in whole.get_ops()
    )
    assert len(whole.get_ops()) < len(alone.get_ops())


def test_bias_and_activation_are_stocks():
    """A Dense with a bias and a gelu, as keras adds them after the
    de-scaling."""
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(96, activation="gelu")
    layer.build((None, None, 64))
    layer.quantize("int8")
    _, decisions = _equals_stock(layer, (64,), BOTH)
    (decision,) = decisions
    assert decision.lowered, decision.reason
    # Built whole, not the int8 part's product inside stock's layer.
    assert decision.reason.startswith("int8 layer built whole")


def test_a_longer_contraction_is_summed_in_exact_parts(monkeypatch):
    """K cut into parts (small here: the parts are read at call time), each
    exact, summed in int32 and converted once: stock's bits."""
    monkeypatch.setattr(int8, "MAX_EXACT_CONTRACTION", 300)
    layer, tail = _quantized_layer("dense", 256, None, 1024)
    fixed, decisions = _equals_stock(layer, tail, BOTH)
    (decision,) = decisions
    assert decision.reason.startswith("int8 layer built whole")
    assert "in 4 exact parts of K (views of its rows, no copy)" in (
        decision.reason
    )
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8] * 4


def test_weights_only_int8_is_not_its_case():
    """No inputs quantizer: the int8 part lowers the einsum alone."""
    layer, tail = _quantized_layer(
        *LAYERS[0][:3], LAYERS[0][3], config=_weights_only()
    )
    _, decisions = _compiled(layer, tail, BOTH)
    (decision,) = decisions
    assert decision.lowered
    assert decision.equation == LAYERS[0][0]
    assert decision.reason.endswith("(weights only)")


def test_lora_is_declined_with_the_reason():
    layer, tail = _quantized_layer(*LAYERS[2])
    layer.enable_lora(2)
    fixed, decisions = _equals_stock(layer, tail, BOTH)
    declined = [d for d in decisions if d.equation.startswith("Dense int8")]
    assert [(d.lowered, d.reason) for d in declined] == [
        (False, "LoRA is enabled")
    ]
    # Stock built the layer; the int8 part kept its product int8.
    assert any(d.lowered and d.reason.endswith("kept int8") for d in decisions)


def test_a_quantization_geometry_of_its_own_is_declined():
    """keras 3.16's int8 strategy contracts a layer's kernel and lays out
    its scales through the layer's geometry: one of the layer's own may do
    either otherwise, so the layer is left to stock and the int8 part."""
    geometries = pytest.importorskip(
        "keras.src.quantizers.geometry",
        reason="keras before 3.16 has no quantization geometries: each "
        "layer's own _int8_call is hooked",
    )
    import keras

    class Geometry(geometries.ProjectionGeometry):
        pass

    class OwnGeometryDense(keras.layers.Dense):
        def _quantization_geometry(self):
            return Geometry(self)

    keras.utils.set_random_seed(0)
    layer = OwnGeometryDense(96)
    layer.build((None, None, 64))
    layer.quantize("int8")
    _, decisions = _equals_stock(layer, (64,), BOTH)
    declined = [d for d in decisions if d.equation.startswith("OwnGeometry")]
    assert [(d.lowered, d.reason) for d in declined] == [
        (False, "a quantization geometry of its own (Geometry)")
    ]
    assert any(d.lowered and d.reason.endswith("kept int8") for d in decisions)


@pytest.mark.parametrize("int8_dot_products", [False, True])
def test_a_quantized_gpt2_generates_stocks_tokens(
    int8_dot_products, monkeypatch
):
    """A 2-layer GPT-2, ``quantize("int8")``, its down projection's K =
    1100: stock's tokens, every projection built whole in the stepwise
    part's step model; the down projection in two exact parts, or, on a
    CPU with int8 dot products that sum in int32, in one int8 layer."""
    if int8_dot_products and not int8_layers.sums_int8_in_int32():
        pytest.skip("this CPU's int8 dot products may saturate (no VNNI)")
    monkeypatch.setattr(
        int8_layers, "sums_int8_in_int32", lambda: int8_dot_products
    )
    causal_lm = gpt2_causal_lm(
        intermediate_dim=int8.MAX_EXACT_CONTRACTION + 76, quantize="int8"
    )
    stock_tokens, _, _ = generate(causal_lm)
    tokens, decisions, _ = generate(causal_lm, BOTH)
    np.testing.assert_array_equal(tokens, stock_tokens)
    whole = [d for d in decisions if d.reason.startswith("int8 layer built")]
    # q, k, v, output, up and down a layer, once in the step model.
    assert len(whole) == 2 * 6 and all(d.lowered for d in whole)
    split = sum("in 2 exact parts" in d.reason for d in whole)
    dot = sum(d.reason.endswith("int8 dot products") for d in whole)
    assert (split, dot) == ((0, 12) if int8_dot_products else (2, 0))


def _int8_layers_of(compiled):
    """The compiled model's FullyConnected layers that take int8 inputs
    (not only int8 weights)."""
    return [
        node
        for node in compiled.get_runtime_model().get_ops()
        if node.get_rt_info()["layerType"].astype(str) == "FullyConnected"
        and node.input(0).get_element_type() == ov.Type.i8
    ]


@pytest.mark.skipif(
    not int8_layers.sums_int8_in_int32(),
    reason="this CPU's int8 dot products may saturate (no VNNI)",
)
@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_tail", LAYERS, ids=IDS
)
def test_inside_generate_int8_dot_products_sum_the_layer(
    equation, output_shape, bias_axes, input_tail
):
    """Inside generate() on a CPU whose int8 dot products sum in int32: one
    int8 FullyConnected layer; the same integer sums, but the plugin's
    low-precision pipeline turns the divisions by the scales into
    multiplications by reciprocals: float32 rounding, not stock's bits."""
    layer, tail = _quantized_layer(
        equation, output_shape, bias_axes, input_tail
    )
    x = _activations(tail)
    stock, _ = _compiled(layer, tail, None)
    with as_in_generate():
        fixed, decisions = _compiled(layer, tail, BOTH)
    (decision,) = decisions
    assert decision.reason.endswith(
        "summed in int32 by the CPU's int8 dot products"
    )
    assert len(_int8_layers_of(fixed)) == 1
    assert not _int8_layers_of(stock)
    want, got = stock(x)[0], fixed(x)[0]
    np.testing.assert_allclose(
        got, want, rtol=0, atol=4e-7 * np.abs(want).max()
    )
