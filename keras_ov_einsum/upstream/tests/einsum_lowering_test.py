import numpy as np
import openvino as ov
import openvino.opset16 as ov_opset
import pytest
from absl.testing import parameterized

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


def _types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]


@pytest.mark.skipif(
    backend.backend() != "openvino",
    reason="Tests the graph built by the OpenVINO backend.",
)
class EinsumLoweringTest(testing.TestCase):
    @parameterized.named_parameters(
        ("projection", "btd,dnh->btnh", (None, None, 8), (8, 2, 4)),
        ("output_projection", "btnh,nhd->btd", (None, None, 2, 4), (2, 4, 8)),
        ("dense", "abc,cd->abd", (None, None, 8), (8, 6)),
        ("transpose_b", "bd,nd->bn", (None, 8), (6, 8)),
        ("interleaved", "th,ehi->eti", (None, 8), (3, 8, 4)),
        ("batched", "etm,emh->eth", (3, None, 8), (3, 8, 4)),
        ("ellipsis", "...d,dn->...n", (None, None, 8), (8, 4)),
    )
    def test_constant_kernel_becomes_matmul(
        self, equation, input_shape, kernel_shape
    ):
        rng = np.random.default_rng(0)
        kernel = rng.standard_normal(kernel_shape).astype("float32")
        parameter, x = _parameter(input_shape)
        y = ops.einsum(equation, x, backend.Variable(kernel))
        model = ov.Model([y.output], [parameter])
        self.assertNotIn("Einsum", _types(model))
        self.assertIn("MatMul", _types(model))
        concrete = [2 if size is None else size for size in input_shape]
        x = rng.standard_normal(concrete).astype("float32")
        self.assertAllClose(
            _run(model, x), np.einsum(equation, x, kernel), atol=1e-5
        )

    @parameterized.named_parameters(
        ("attention_scores", "aecd,abcd->acbe"),
        ("attention_values", "acbe,aecd->abcd"),
    )
    def test_two_variable_operands_stay_einsum(self, equation):
        parameter, x = _parameter((None, 4, 4, 4))
        y = ops.einsum(equation, x, x)
        model = ov.Model([y.output], [parameter])
        self.assertIn("Einsum", _types(model))

    def test_multi_head_attention(self):
        layer = layers.MultiHeadAttention(num_heads=2, key_dim=4)
        parameter, x = _parameter((None, 5, 8))
        model = ov.Model([layer(x, x).output], [parameter])
        # The four projections are MatMuls (the attention itself is a
        # ScaledDotProductAttention op).
        self.assertNotIn("Einsum", _types(model))
        inputs = np.random.default_rng(0).standard_normal((2, 5, 8))
        inputs = inputs.astype("float32")
        self.assertAllClose(
            _run(model, inputs), layer(inputs, inputs), atol=1e-5
        )
