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
class AlignOperandTypesTest(testing.TestCase):
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
