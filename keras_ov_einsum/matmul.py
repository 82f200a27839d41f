"""Feed a transposed constant to MatMul as ``transpose_b`` instead.

keras-hub's ``ReversibleEmbedding`` computes logits as
``matmul(x, transpose(embeddings))``. OpenVINO folds that Transpose of the
embedding Constant into a second, transposed copy of the table (206 MB for
GPT-2's 50257 x 1024), and the CPU plugin then transposes it back for its
FullyConnected layer. ``MatMul(x, embeddings, transpose_b=True)`` is the
same product on the original constant: nothing to fold, nothing copied.
"""

import dataclasses
import math

import openvino as ov
import openvino.opset13 as ov_opset

from .kernel import constant_source, is_constant_expression
from .plan import Declined, has_matrix_view

__all__ = ["TransposedKernel", "lower_transposed_matmul"]


@dataclasses.dataclass(frozen=True)
class TransposedKernel:
    """The MatMul rebuilt on the untransposed constant."""

    output: ov.Output
    kernel_shape: tuple

    def __bool__(self):
        return True

    def describe(self):
        return (
            f"MatMul(transpose_b=True) on the untransposed kernel "
            f"{list(self.kernel_shape)} (no copy)"
        )


def lower_transposed_matmul(matmul):
    """Rebuild ``matmul`` if its second input is a transposed constant.

    Returns None when the second input is not a Transpose of a constant (the
    common case, not worth recording), a ``Declined`` when it is but the
    rewrite is not proven equal, or a ``TransposedKernel``.
    """
    kernel = matmul.input_value(1)
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
    if is_constant_expression(matmul.input_value(0)):
        return Declined("both operands are computed from constants")
    shape = data.get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() < 2:
        return Declined("the transposed kernel has fewer than two axes")
    rank = shape.rank.get_length()
    order = _transpose_order(transpose, rank)
    swap_last_two = list(range(rank - 2)) + [rank - 1, rank - 2]
    if order != swap_last_two:
        return Declined(
            f"the kernel's transpose order {order} is not a swap of its "
            "last two axes"
        )
    dims = tuple(shape.to_shape())
    if has_matrix_view(dims, dims[-1], math.prod(dims[:-1])):
        # Found by the equivalence suite: the CPU plugin keeps one packed
        # copy per buffer and [K, N], so with a plain matmul of the same
        # weights (a tied encoder and decoder) both read one layout.
        return Declined(
            f"the kernel {list(dims)} also reads as the [K, N] matrix of "
            "its transpose (square): OpenVINO's CPU plugin would share "
            "one packed copy between the two"
        )
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
    return TransposedKernel(output=output, kernel_shape=tuple(shape.to_shape()))


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
