"""``matmul(x, transpose(constant))`` -> ``MatMul(x, constant, transpose_b)``:
the graph holds no Transpose of the constant, and the numbers are stock's."""

import numpy as np
import pytest

import keras_ov_einsum
from graphs import constant_bytes, op_types, run_model
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.ops.matmul import PART as matmul_part


def _graph(make_kernel, x_shape, kernel, *, fixed, x_dtype="float32", **parts):
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter(x_shape, OPENVINO_DTYPES[x_dtype])
    variable = keras.Variable(kernel, dtype=str(kernel.dtype), trainable=False)
    x = OpenVINOKerasTensor(parameter.output(0))
    if fixed:
        with keras_ov_einsum.enabled(**parts):
            y = keras.ops.matmul(x, make_kernel(variable))
            explanation = keras_ov_einsum.explain()
    else:
        y = keras.ops.matmul(x, make_kernel(variable))
        explanation = ()
    return ov.Model([y.output], [parameter]), explanation


def _transposed_constants(model):
    return [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Transpose"
        and node.input_value(0).get_node().get_type_name() == "Constant"
    ]


def _transpose(axes):
    import keras

    return lambda kernel: keras.ops.transpose(kernel, axes)


# (name, how the kernel is transposed, input shape, kernel shape)
LOWERED = [
    ("reverse", _transpose(None), [-1, -1, 8], (12, 8)),  # keras: Range order
    ("explicit", _transpose((1, 0)), [-1, 8], (12, 8)),  # a Constant order
    ("batched", _transpose((0, 2, 1)), [3, -1, 8], (3, 12, 8)),
]


@pytest.mark.parametrize(
    "make_kernel, x_shape, kernel_shape",
    [row[1:] for row in LOWERED],
    ids=[row[0] for row in LOWERED],
)
def test_transposed_constant_lowered(make_kernel, x_shape, kernel_shape):
    kernel = np.random.default_rng(0).standard_normal(kernel_shape)
    kernel = kernel.astype("float32")
    stock, _ = _graph(make_kernel, x_shape, kernel, fixed=False)
    fixed, explanation = _graph(make_kernel, x_shape, kernel, fixed=True)
    (decision,) = explanation
    assert decision.equation == matmul_part.label and decision.lowered
    assert len(_transposed_constants(stock)) == 1
    assert _transposed_constants(fixed) == []
    (matmul,) = [
        n for n in fixed.get_ordered_ops() if n.get_type_name() == "MatMul"
    ]
    assert matmul.get_attributes()["transpose_b"] is True
    assert constant_bytes(fixed) <= constant_bytes(stock)

    concrete = [2 if size == -1 else size for size in x_shape]
    x = np.random.default_rng(1).standard_normal(concrete).astype("float32")
    want = run_model(stock, x)
    got = run_model(fixed, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(
        got, x @ np.swapaxes(kernel, -1, -2), rtol=1e-5, atol=1e-5
    )


def test_compressed_kernel_keeps_its_convert():
    kernel = np.random.default_rng(0).standard_normal((12, 8)).astype("float16")
    stock, _ = _graph(_transpose(None), [-1, 8], kernel, fixed=False)
    fixed, (decision,) = _graph(_transpose(None), [-1, 8], kernel, fixed=True)
    assert decision.lowered
    (matmul,) = [
        n for n in fixed.get_ordered_ops() if n.get_type_name() == "MatMul"
    ]
    assert matmul.input_value(1).get_node().get_type_name() == "Convert"
    x = np.random.default_rng(1).standard_normal((2, 8)).astype("float32")
    np.testing.assert_array_equal(run_model(fixed, x), run_model(stock, x))


def test_other_orders_declined_with_the_order():
    kernel = np.ones((3, 12, 8), "float32")  # transposed to (12, 3, 8)
    fixed, (decision,) = _graph(
        _transpose((1, 0, 2)), [12, -1, 3], kernel, fixed=True
    )
    assert not decision.lowered
    assert (
        "order [1, 0, 2] is not a swap of its last two axes" in decision.reason
    )
    assert len(_transposed_constants(fixed)) == 1


def test_plain_matmul_is_not_recorded():
    kernel = np.ones((8, 12), "float32")
    fixed, explanation = _graph(lambda k: k, [-1, 8], kernel, fixed=True)
    assert explanation == ()
    assert "Transpose" not in op_types(fixed)


def test_switched_off_leaves_matmul_stock():
    backend_numpy = backend.module("numpy")

    original = backend_numpy.matmul
    kernel = np.ones((12, 8), "float32")
    with keras_ov_einsum.enabled(matmul=False):
        assert backend_numpy.matmul is original
        assert hasattr(backend_numpy.einsum, "__keras_ov_einsum_original__")
    fixed, explanation = _graph(
        _transpose(None), [-1, 8], kernel, fixed=True, matmul=False
    )
    assert explanation == ()
    assert len(_transposed_constants(fixed)) == 1


def test_reversible_embedding_logits():
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    layer = keras.layers.ReversibleEmbedding(50, 8)
    layer.build((None, None))
    parameter = ov_opset.parameter([-1, -1, 8], ov.Type.f32)
    hidden = OpenVINOKerasTensor(parameter.output(0))
    with keras_ov_einsum.enabled():
        logits = layer(hidden, reverse=True)
    (decision,) = keras_ov_einsum.explain()
    assert decision.lowered
    model = ov.Model([logits.output], [parameter])
    assert _transposed_constants(model) == []
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype("float32")
    table = keras.ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_allclose(
        run_model(model, x), x @ table.T, rtol=1e-5, atol=1e-5
    )
