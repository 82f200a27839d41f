"""The stock dtype contract, bit for bit: promotion, int8 x int8 -> int32,
compressed kernels, and Keras's quantized EinsumDense layers."""

import ml_dtypes
import numpy as np
import pytest

from graphs import build_einsum_graph, kernel_path, op_types, run_model
from keras_ov_einsum.core import backend

N = None
EQUATION = "btd,dnh->btnh"

# (input dtype, kernel dtype, lowered?)
PAIRS = [
    ("float32", "float32", True),
    ("float32", "float16", True),  # the Convert stays: compressed kernel
    ("float32", "bfloat16", True),
    ("float32", "int8", True),  # weight-only int8
    ("float16", "float16", True),
    ("bfloat16", "bfloat16", True),
    ("float16", "float32", True),
    ("int32", "float32", True),
    ("int8", "int8", True),  # stock computes in int32
    ("int32", "int32", True),
    ("float64", "float32", True),
    ("int64", "int64", True),  # stock converts both to int32 first
]


def _array(shape, dtype, seed):
    values = np.random.default_rng(seed).integers(-8, 8, shape)
    return values.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


@pytest.mark.parametrize(
    "config",
    [{"INFERENCE_PRECISION_HINT": "f32"}, {}],
    ids=["f32", "default-precision"],
)
@pytest.mark.parametrize(
    "x_dtype, kernel_dtype, lowered",
    PAIRS,
    ids=[f"{x}-{k}" for x, k, _ in PAIRS],
)
def test_same_dtype_shape_and_values_as_stock(
    x_dtype, kernel_dtype, lowered, config
):
    kernel = _array((16, 4, 8), kernel_dtype, 0)
    stock = build_einsum_graph(
        EQUATION, (N, N, 16), kernel, fixed=False, dtype=x_dtype
    )
    fixed = build_einsum_graph(
        EQUATION, (N, N, 16), kernel, fixed=True, dtype=x_dtype
    )
    (decision,) = fixed.explanation
    assert decision.lowered == lowered, decision.reason
    assert ("Einsum" in op_types(fixed.model)) != lowered
    want_type = stock.model.output(0).get_element_type()
    assert fixed.model.output(0).get_element_type() == want_type
    assert fixed.model.output(0).get_partial_shape() == (
        stock.model.output(0).get_partial_shape()
    )
    x = _array((2, 3, 16), x_dtype, 1)
    got = run_model(fixed.model, x, config=config)
    want = run_model(stock.model, x, config=config)
    assert got.dtype == want.dtype
    # Small integers: every product and sum is exact in every type here.
    np.testing.assert_array_equal(got, want)


def test_compressed_kernel_stays_behind_its_convert():
    """A float16 kernel reaches the MatMul as Convert(f16 Constant)."""
    kernel = _array((16, 4, 8), "float16", 0)
    fixed = build_einsum_graph(EQUATION, (N, N, 16), kernel, fixed=True)
    chain, node = kernel_path(fixed.model)
    assert "Convert" in chain
    assert str(node.get_output_element_type(0)) in ("f16", "<Type: 'float16'>")
    assert node.get_byte_size() == kernel.nbytes


# (quantization mode, lowered?): int8 einsums an int8 kernel Constant;
# float8 and int4 compute their kernel (fake-quantize, unpack) in the graph,
# so no operand is a known constant and the stock path keeps them.
QUANTIZED = [("int8", True), ("float8", False), ("int4", False)]


@pytest.mark.parametrize("mode, lowered", QUANTIZED)
def test_quantized_einsum_dense_equals_stock(mode, lowered):
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    import keras_ov_einsum

    keras.utils.set_random_seed(0)
    layer = keras.layers.EinsumDense(
        EQUATION, output_shape=(None, 4, 8), bias_axes="nh"
    )
    layer.build((None, None, 16))
    layer.quantize(mode)
    x = np.random.default_rng(1).standard_normal((2, 3, 16)).astype("float32")

    def compiled_output(fixed):
        parameter = ov_opset.parameter([-1, -1, 16], ov.Type.f32)
        if fixed:
            with keras_ov_einsum.enabled():
                y = layer(OpenVINOKerasTensor(parameter.output(0)))
        else:
            y = layer(OpenVINOKerasTensor(parameter.output(0)))
        model = ov.Model([y.output], [parameter])
        return run_model(model, x), y.dtype

    want, want_dtype = compiled_output(fixed=False)
    got, got_dtype = compiled_output(fixed=True)
    assert got_dtype == want_dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    (decision,) = keras_ov_einsum.explain()
    assert decision.lowered == lowered, decision.reason


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_eager_quantized_layer_equals_stock(mode):
    """Eager calls compute on constants only: nothing to lower.

    Found by the upstream patch's run of keras's own int4 EinsumDense tests:
    the input (a Constant) was taken for the kernel of the unpacked int4
    kernel (computed from constants), and OpenVINO miscompiled the MatMul.
    """
    import keras

    import keras_ov_einsum

    keras.utils.set_random_seed(0)
    layer = keras.layers.EinsumDense("ab,bc->ac", output_shape=(16,))
    layer.build((None, 8))
    layer.quantize(mode)
    x = np.random.default_rng(1).standard_normal((2, 8)).astype("float32")
    want = keras.ops.convert_to_numpy(layer(x))
    with keras_ov_einsum.enabled():
        got = keras.ops.convert_to_numpy(layer(x))
        decisions = keras_ov_einsum.explain()
    np.testing.assert_array_equal(got, want)
    assert not decisions.lowered
