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


def _types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]


@pytest.mark.skipif(
    backend.backend() != "openvino",
    reason="Tests the graph built by the OpenVINO backend.",
)
class TransposedMatmulTest(testing.TestCase):
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
