"""Build Keras binary ops on OpenVINO Parameters, stock and fixed, and find
the Converts of an operand to its own type that stock's
``align_operand_types`` adds."""

import ml_dtypes
import numpy as np

import keras_ov_einsum
from graphs import keras_parameter, patched

__all__ = [
    "OPERATIONS",
    "binary_graph",
    "identity_converts",
    "operand",
    "random_inputs",
]

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
    return keras_parameter(shape, dtype)[1]


def binary_graph(name, a, b, *, fixed, parts=None):
    """``OPERATIONS[name](a, b)`` as an ov.Model on the operands'
    Parameters; ``fixed``: built under ``enable(**parts)``.

    Returns (model, explain() or ())."""
    import keras
    import openvino as ov

    with patched(fixed, parts):
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


def random_inputs(model, seed=0):
    """Values for the model's Parameters, drawn from N(0, 8**2) and cast
    to each Parameter's type (bool: the positive ones)."""
    rng = np.random.default_rng(seed)
    values = []
    for parameter in model.get_parameters():
        shape = list(parameter.get_shape())
        dtype = parameter.get_element_type().get_type_name()
        drawn = rng.standard_normal(shape) * 8
        if dtype == "boolean":
            values.append(drawn > 0)
        elif dtype == "bf16":
            values.append(drawn.astype(ml_dtypes.bfloat16))
        else:
            values.append(drawn.astype(parameter.get_element_type().to_dtype()))
    return values
