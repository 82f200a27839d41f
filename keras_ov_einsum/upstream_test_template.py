"""The keras-style test file that the upstream patch adds to keras.

``TEST_SOURCE`` becomes ``keras/src/backend/openvino/einsum_lowering_test.py``
verbatim. It is written for keras's repository (its ``testing.TestCase``,
``parameterized.named_parameters``, single-line imports, ruff at 80 columns)
and runs there under every backend: keras's CI collects all test files, so
the class skips itself unless the backend is OpenVINO.
"""

__all__ = ["TEST_SOURCE"]

TEST_SOURCE = """\
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

    def test_tied_embedding_logits_read_the_table(self):
        layer = layers.ReversibleEmbedding(20, 8)
        layer.build((None, None))
        parameter, hidden = _parameter((None, None, 8))
        logits = layer(hidden, reverse=True)
        model = ov.Model([logits.output], [parameter])
        self.assertNotIn("Transpose", _types(model))
        hidden = np.random.default_rng(0).standard_normal((2, 3, 8))
        hidden = hidden.astype("float32")
        table = ops.convert_to_numpy(layer.embeddings)
        self.assertAllClose(_run(model, hidden), hidden @ table.T, atol=1e-5)

    def test_power_of_two_scale_moves_before_the_projection(self):
        # Attention's query scaling, 1/sqrt(64): the input is scaled, not
        # the projection's output.
        layer = layers.EinsumDense(
            "abc,cde->abde", (None, 2, 4), bias_axes="de"
        )
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

    def test_operands_are_converted_only_to_another_type(self):
        # align_operand_types: float32 + float32 needs no Convert; an int32
        # operand of a float32 op is converted, once.
        parameter, x = _parameter((None, 4))
        integers = ov_opset.parameter([-1, 4], ov.Type.i32)
        integers_tensor = OpenVINOKerasTensor(integers.output(0))
        y = ops.add(ops.multiply(x, x), integers_tensor)
        model = ov.Model([y.output], [parameter, integers])
        (convert,) = [
            node
            for node in model.get_ordered_ops()
            if node.get_type_name() == "Convert"
        ]
        self.assertEqual(convert.input_value(0).get_element_type(), ov.Type.i32)
        self.assertEqual(y.dtype, "float32")
        inputs = np.arange(8, dtype="float32").reshape(2, 4)
        result = _run(model, inputs, inputs.astype("int32"))
        self.assertAllClose(result, inputs * inputs + inputs)

    def test_cache_write_addresses_slabs(self):
        # A key/value cache write: [batch, length, heads, dim] at
        # [0, index, 0, 0]; heads and dim are written whole.
        cache, cache_tensor = _parameter((None, 6, 2, 4))
        update, update_tensor = _parameter((None, None, 2, 4))
        index = ov_opset.parameter([], ov.Type.i32)
        written = ops.slice_update(
            cache_tensor,
            [0, OpenVINOKerasTensor(index.output(0)), 0, 0],
            update_tensor,
        )
        model = ov.Model([written.output], [cache, update, index])
        self.assertNotIn("Mod", _types(model))
        (scatter,) = [
            node
            for node in model.get_ordered_ops()
            if node.get_type_name() == "ScatterNDUpdate"
        ]
        self.assertEqual(scatter.input_value(1).get_partial_shape()[-1], 2)
        rng = np.random.default_rng(0)
        data = rng.standard_normal((2, 6, 2, 4)).astype("float32")
        new = rng.standard_normal((2, 3, 2, 4)).astype("float32")
        compiled = ov.Core().compile_model(model, "CPU")
        got = compiled([data, new, np.array(2, "int32")])[0]
        expected = data.copy()
        expected[:, 2:5] = new
        self.assertAllClose(got, expected)
"""
