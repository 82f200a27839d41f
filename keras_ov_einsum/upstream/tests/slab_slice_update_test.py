import numpy as np
import openvino as ov
import openvino.opset16 as ov_opset
import pytest

from keras.src import backend
from keras.src import ops
from keras.src import testing
from keras.src.backend.openvino.core import OpenVINOKerasTensor


def _parameter(shape):
    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in shape], ov.Type.f32
    )
    return parameter, OpenVINOKerasTensor(parameter.output(0))


def _types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]


@pytest.mark.skipif(
    backend.backend() != "openvino",
    reason="Tests the graph built by the OpenVINO backend.",
)
class SlabSliceUpdateTest(testing.TestCase):
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
