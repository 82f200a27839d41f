"""Build Keras binary ops on OpenVINO Parameters, stock and fixed, and find
the Converts of an operand to its own type that stock's
``align_operand_types`` adds."""

import contextlib

import keras_ov_einsum

__all__ = ["OPERATIONS", "binary_graph", "identity_converts", "operand"]

# keras.ops functions and Python operators that align their two operands.
OPERATIONS = {
    "add": lambda ops, a, b: ops.add(a, b),
    "subtract": lambda ops, a, b: ops.subtract(a, b),
    "multiply": lambda ops, a, b: ops.multiply(a, b),
    "maximum": lambda ops, a, b: ops.maximum(a, b),
    "greater": lambda ops, a, b: ops.greater(a, b),
    "matmul": lambda ops, a, b: ops.matmul(a, b),
    "+": lambda ops, a, b: a + b,
    "*": lambda ops, a, b: a * b,
}


def operand(dtype, shape):
    """A Parameter of ``dtype`` and ``shape`` as a Keras tensor, or a
    Python scalar when ``dtype`` is ``int`` or ``float``."""
    if dtype in (int, float):
        return dtype(3)
    import openvino.opset13 as ov_opset
    from keras.src.backend.openvino.core import (
        OPENVINO_DTYPES,
        OpenVINOKerasTensor,
    )

    parameter = ov_opset.parameter(list(shape), OPENVINO_DTYPES[dtype])
    return OpenVINOKerasTensor(parameter.output(0))


def binary_graph(name, a, b, *, fixed, parts=None):
    """``OPERATIONS[name](a, b)`` as an ov.Model on the operands'
    Parameters; ``fixed``: built under ``enable(**parts)``.

    Returns (model, explain() or ())."""
    import keras
    import openvino as ov

    if fixed:
        context = keras_ov_einsum.enabled(**(parts or {}))
    else:
        context = contextlib.nullcontext()
    with context:
        result = OPERATIONS[name](keras.ops, a, b)
        explanation = keras_ov_einsum.explain() if fixed else ()
    parameters = [x.output.get_node() for x in (a, b) if hasattr(x, "output")]
    return ov.Model([result.output], parameters), explanation


def identity_converts(model):
    """The model's Converts whose output type is their input's."""
    return [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Convert"
        and node.get_output_element_type(0)
        == node.input_value(0).get_element_type()
    ]
