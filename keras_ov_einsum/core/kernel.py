"""Find the constant kernel behind an einsum operand, without copying it.

A Keras variable reaches the OpenVINO graph as a ``Constant``; on the way to
the einsum it may pass through a few ops that only change its type or view.
We walk back through an explicit allow-list of such ops (as optimum-intel
does for weight compression) and fold nothing: the operand is used as it is,
so a ``Convert`` from float16/bfloat16/int8 stays between the compressed
constant and the MatMul, which is the pattern OpenVINO keeps compressed.
``has_matrix_view`` then says whether the kernel's buffer reads as a
matrix by a reshape alone, and ``matrix_view`` hands that matrix to NumPy
without a copy.
"""

import math

__all__ = [
    "constant_source",
    "constant_values",
    "has_matrix_view",
    "is_constant_expression",
    "is_constant_operand",
    "matrix_view",
]

# Ops that pass a constant through unchanged in value. The index lists the
# inputs that must themselves be constant for the result to be a constant.
_PASS_THROUGH = {
    "Convert": (),
    "Reshape": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Transpose": (1,),
}
_MAX_DEPTH = 8
# How many nodes ``is_constant_expression`` visits before it concludes that
# an operand depends on a graph input (a model's activations always do, a
# few hundred nodes up; eager Keras calls compute from constants only).
_EXPRESSION_BUDGET = 256


def constant_values(output):
    """The values of the Constant behind ``output`` as a flat list (a
    scalar as one item: axes, orders, repeats), or None for any other
    node."""
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    return node.get_data().reshape(-1).tolist()


def constant_source(output):
    """Return the ``Constant`` node that ``output`` is a view of, or None.

    ``output`` is an ``openvino.Output``. Only ``Constant`` leaves and the
    ops in ``_PASS_THROUGH`` (with constant shape/axes/order inputs) are
    followed; anything else means the operand is not a known constant.
    """
    node = output.get_node()
    for _ in range(_MAX_DEPTH):
        kind = node.get_type_name()
        if kind == "Constant":
            return node
        if kind not in _PASS_THROUGH:
            return None
        for index in _PASS_THROUGH[kind]:
            if index >= node.get_input_size():
                continue
            parameter = node.input_value(index).get_node()
            if parameter.get_type_name() != "Constant":
                return None
        node = node.input_value(0).get_node()
    return None


def is_constant_operand(output):
    return constant_source(output) is not None


def is_constant_expression(output):
    """Whether ``output`` is computed from constants only (an eager call).

    Keras runs eager ops on the OpenVINO backend by building them on
    Constants, e.g. a quantized layer's kernel unpacked with Convert,
    Subtract and Multiply. Such an operand is not a variable input: an
    einsum of it and a constant has no kernel to lay out. A source other
    than a Constant (a Parameter) answers no at once; a search that runs
    out of budget answers no too, the safe side for a deep model graph.
    """
    pending, seen = [output.get_node()], set()
    while pending:
        node = pending.pop()
        key = node.get_instance_id()
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > _EXPRESSION_BUDGET:
            return False
        if node.get_input_size() == 0:
            if node.get_type_name() != "Constant":
                return False
            continue
        pending.extend(value.get_node() for value in node.input_values())
    return True


def has_matrix_view(shape, rows, columns):
    """Whether a buffer of ``shape`` reads as a ``[rows, columns]`` matrix
    by merging its leading and its trailing axes (a reshape, no copy)."""
    for split in range(len(shape) + 1):
        leading = math.prod(shape[:split])
        if leading == rows and math.prod(shape[split:]) == columns:
            return True
    return False


class _HeldView:
    """A NumPy view of a Constant's buffer that holds the Constant.

    An OpenVINO Constant built on an array with ``shared_memory=True``
    keeps that array alive; an array taken from another Constant's tensor
    view does not keep that Constant's buffer alive (it was freed under the
    view when the first Constant went, seen). NumPy keeps the object whose
    ``__array_interface__`` it read as the array's base: this object,
    which holds the Constant.
    """

    def __init__(self, constant, shape):
        self.constant = constant
        view = constant.get_tensor_view().data.reshape(shape)
        self.__array_interface__ = view.__array_interface__


def matrix_view(output):
    """The 2-D Constant ``output`` reads, as a NumPy array on the
    Constant's own buffer (no copy; it keeps the Constant alive), when only
    Reshapes with constant shapes lie between them; else None.

    A Reshape of a row-major buffer reads it in the same order, so the
    array is the Constant's bytes seen in ``output``'s shape; so is any
    run of its rows (``view[a:b]``), which a Constant built on it with
    ``shared_memory=True`` reads in place.
    """
    import numpy as np

    shape = output.get_partial_shape()
    if shape.is_dynamic or len(shape) != 2:
        return None
    node = output.get_node()
    while node.get_type_name() == "Reshape":
        if node.input_value(1).get_node().get_type_name() != "Constant":
            return None
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.asarray(_HeldView(node, list(shape.to_shape())))
