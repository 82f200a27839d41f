"""Feed a transposed constant to MatMul as ``transpose_b`` instead.

keras-hub's ``ReversibleEmbedding`` computes logits as
``matmul(x, transpose(embeddings))``. OpenVINO folds that Transpose of the
embedding Constant into a second, transposed copy of the table
(docs/lowering.md sizes GPT-2's), which the CPU plugin then transposes back
for its FullyConnected layer. ``MatMul(x, embeddings, transpose_b=True)``
is the same product on the original constant: nothing to fold, nothing
copied.
"""

import math

import openvino.opset13 as ov_opset

from ...core.graph import keras_result, stock_node
from ...core.kernel import (
    constant_source,
    has_matrix_view,
    is_constant_expression,
)
from ...core.outcome import declined, lowered
from ...core.part import BackendHook, Part

__all__ = [
    "MATMUL",
    "PART",
    "lower_transposed_matmul",
    "rewrite_matmul",
    "transposed_constant",
    "untransposed_decline",
]


def lower_transposed_matmul(matmul):
    """Rebuild ``matmul`` if its second input is a transposed constant.

    Returns None when the second input is not a Transpose of a constant (the
    common case, not worth recording), else an ``Outcome``: declined when
    the rewrite is not proven equal.
    """
    found = transposed_constant(matmul.input_value(1))
    if found is None:
        return None
    convert, transpose, data = found
    if is_constant_expression(matmul.input_value(0)):
        return declined("both operands are computed from constants")
    reason = untransposed_decline(transpose, data)
    if reason:
        return declined(reason)
    dims = list(data.get_partial_shape().to_shape())
    attributes = matmul.get_attributes()
    if convert is not None:
        data = ov_opset.convert(data, convert.get_output_element_type(0))
        data = data.output(0)
    output = ov_opset.matmul(
        matmul.input_value(0),
        data,
        attributes["transpose_a"],
        not attributes["transpose_b"],
    ).output(0)
    return lowered(
        output,
        f"MatMul(transpose_b=True) on the untransposed kernel {dims} (no copy)",
    )


def transposed_constant(kernel):
    """(the Convert after it or None, the Transpose, the constant's output)
    when ``kernel`` is a Transpose of a constant, maybe behind a Convert;
    else None."""
    convert = None
    if kernel.get_node().get_type_name() == "Convert":
        convert = kernel.get_node()
        kernel = convert.input_value(0)
    transpose = kernel.get_node()
    if transpose.get_type_name() != "Transpose":
        return None
    data = transpose.input_value(0)
    if constant_source(data) is None:
        return None
    return convert, transpose, data


def untransposed_decline(transpose, data):
    """Why a MatMul with ``transpose_b`` may not read the constant ``data``
    in place of ``transpose(data)``; None when it may."""
    shape = data.get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() < 2:
        return "the transposed kernel has fewer than two axes"
    rank = shape.rank.get_length()
    order = _transpose_order(transpose, rank)
    swap_last_two = list(range(rank - 2)) + [rank - 1, rank - 2]
    if order != swap_last_two:
        return (
            f"the kernel's transpose order {order} is not a swap of its "
            "last two axes"
        )
    dims = tuple(shape.to_shape())
    if has_matrix_view(dims, dims[-1], math.prod(dims[:-1])):
        # Found by the equivalence suite: the CPU plugin keeps one packed
        # copy per buffer and [K, N], so with a plain matmul of the same
        # weights (a tied encoder and decoder) both read one layout.
        return (
            f"the kernel {list(dims)} also reads as the [K, N] matrix of "
            "its transpose (square): OpenVINO's CPU plugin would share "
            "one packed copy between the two"
        )
    return None


def _transpose_order(transpose, rank):
    """The axis order of a Transpose, or None when it is not known here."""
    order = transpose.input_value(1).get_node()
    if order.get_type_name() == "Constant":
        return [int(axis) % rank for axis in order.get_data().ravel()]
    if order.get_type_name() == "Range":
        # keras's transpose(x) (axes=None) builds the reverse order as
        # Range(rank - 1, -1, -1): stop and step are the constant -1.
        stop = order.input_value(1).get_node()
        step = order.input_value(2).get_node()
        if all(
            node.get_type_name() == "Constant"
            and node.get_data().size == 1
            and int(node.get_data().ravel()[0]) == -1
            for node in (stop, step)
        ):
            return list(range(rank - 1, -1, -1))
    return None


def rewrite_matmul(result, x1, x2):
    matmul, convert_to = stock_node(result, "MatMul")
    if matmul is None:
        return None
    return keras_result(lower_transposed_matmul(matmul), convert_to)


MATMUL = BackendHook("numpy.matmul")

PART = Part(
    name="matmul",
    summary="matmul(x, transpose(constant)) (the tied logits) as a MatMul on "
    "the constant itself, not a transposed copy",
    hooks=(MATMUL,),
    rewrite=rewrite_matmul,
    label="matmul(x, transpose(kernel))",
    sources=("core/kernel.py", "parts/ops/matmul.py"),
)
