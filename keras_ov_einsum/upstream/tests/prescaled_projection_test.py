import numpy as np
import openvino as ov
import openvino.opset16 as ov_opset
import pytest

from keras.src import backend
from keras.src import layers
from keras.src import ops
from keras.src import testing
from keras.src.backend.openvino.core import OpenVINOKerasTensor


def _parameter(shape):
    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in shape], ov.Type.f32
    )
    return parameter, OpenVINOKerasTensor(parameter.output(0))


def _run(model, *inputs):
    # On CPUs with bf16 support the plugin infers in bf16 unless told not to.
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled(list(inputs))[0]


@pytest.mark.skipif(
    backend.backend() != "openvino",
    reason="Tests the graph built by the OpenVINO backend.",
)
class PrescaledProjectionTest(testing.TestCase):
    def test_power_of_two_scale_moves_before_the_projection(self):
        # Attention's query scaling, 1/sqrt(64): the input is scaled, not
        # the projection's output. (A Dense projection is a MatMul on stock
        # keras; an EinsumDense one is once the einsum lowering is in.)
        layer = layers.Dense(6)
        layer.build((None, None, 8))
        parameter, x = _parameter((None, None, 8))
        y = ops.multiply(layer(x), 0.125)
        model = ov.Model([y.output], [parameter])
        (matmul,) = [
            node
            for node in model.get_ordered_ops()
            if node.get_type_name() == "MatMul"
        ]
        self.assertEqual(
            matmul.input_value(0).get_node().get_type_name(), "Multiply"
        )
        inputs = np.random.default_rng(0).standard_normal((2, 3, 8))
        inputs = inputs.astype("float32")
        self.assertAllClose(
            _run(model, inputs), layer(inputs) * 0.125, atol=1e-6
        )

    def test_infinite_scale_multiplies_the_projections_sign(self):
        # The CPU plugin folds a Multiply by inf after a MatMul into its
        # weights, where 0 * inf makes every output NaN; sign(y) * inf is
        # the same product, which it cannot fold.
        layer = layers.Dense(6, bias_initializer="random_normal")
        layer.build((None, None, 8))
        parameter, x = _parameter((None, None, 8))
        y = ops.multiply(layer(x), float("inf"))
        model = ov.Model([y.output], [parameter])
        types = [node.get_type_name() for node in model.get_ordered_ops()]
        self.assertIn("Sign", types)
        inputs = np.random.default_rng(0).standard_normal((2, 3, 8))
        inputs = inputs.astype("float32")
        kernel = ops.convert_to_numpy(layer.kernel).astype("float64")
        bias = ops.convert_to_numpy(layer.bias)
        expected = (inputs.astype("float64") @ kernel + bias) * np.inf
        got = _run(model, inputs)
        self.assertFalse(np.isnan(got).any())
        self.assertAllClose(got, expected)
