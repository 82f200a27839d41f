"""An einsum with a constant kernel as a MatMul on a view of the kernel.

Read top to bottom: ``plan_einsum`` finds the kernel behind an operand
(``core/kernel.py``), parses the equation (``equation.py``) and decides the
MatMul (``plan.py``); ``build_lowered`` lays the kernel out (a reshape of
the original constant, transposed only when its label order is
interleaved) and builds the MatMul. The einsum part
(``parts/ops/einsum.py``) puts that in place of the Einsum node stock
built. Operands are ``openvino.Output`` values already converted to the
compute type (exactly what the stock backend hands to ``opset.einsum``);
the result has the same element type and shape. Only small shape and axis
constants are added to the graph.
"""

import dataclasses

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset

from ..core.kernel import (
    constant_source,
    constant_values,
    is_constant_expression,
)
from ..core.outcome import declined, lowered
from .equation import EquationError, parse_equation
from .plan import plan_lowering

__all__ = [
    "Planned",
    "build_lowered",
    "build_matmul",
    "int64_constant",
    "lay_out_kernel",
    "lower_einsum",
    "plan_einsum",
]

# The stock Einsum decomposes into a MatMul too; for these types the CPU
# plugin's MatMul was measured to give the stock results bit for bit (int32
# included: int8 x int8 einsums compute in int32, overflow wraps alike).
# float64/int64 run through plugin-specific conversions: left on stock.
_MATMUL_TYPES = (ov.Type.f32, ov.Type.f16, ov.Type.bf16, ov.Type.i32)


@dataclasses.dataclass(frozen=True)
class Planned:
    """A plan and the two operands it refers to."""

    plan: object
    variable: ov.Output
    kernel: ov.Output


def lower_einsum(subscripts, inputs):
    """Lower ``einsum(subscripts, *inputs)`` to a MatMul, or say why not."""
    planned = plan_einsum(subscripts, inputs)
    if not planned:
        return planned
    return build_lowered(planned)


def build_lowered(planned):
    """The MatMul of a ``Planned`` einsum, on a view of its kernel."""
    plan = planned.plan
    kernel = lay_out_kernel(planned.kernel, plan)
    output = build_matmul(plan, planned.variable, kernel)
    return lowered(output, plan.describe())


def plan_einsum(subscripts, inputs):
    """The ``Planned`` MatMul of ``einsum(subscripts, *inputs)``, or a
    declined ``Outcome`` saying why not."""
    if len(inputs) != 2:
        return declined(
            f"{len(inputs)} operand(s); only two-operand einsums are lowered"
        )
    kernel_flags = [constant_source(value) is not None for value in inputs]
    if all(kernel_flags):
        return declined("both operands are constants (an eager call)")
    if not any(kernel_flags):
        return declined("no operand is a constant kernel")
    kernel_index = kernel_flags.index(True)
    if is_constant_expression(inputs[1 - kernel_index]):
        # An eager call (e.g. an int4 layer's unpacked kernel times a
        # constant input): OpenVINO miscompiled such a MatMul, and there is
        # no model graph to gain from.
        return declined("both operands are computed from constants")

    shapes = []
    for value in inputs:
        shape = value.get_partial_shape()
        if shape.rank.is_dynamic:
            return declined("an operand has a dynamic rank")
        shapes.append(
            tuple(None if dim.is_dynamic else dim.get_length() for dim in shape)
        )
    element_type = inputs[0].get_element_type()
    if element_type != inputs[1].get_element_type():
        return declined("the operands have different element types")
    if element_type not in _MATMUL_TYPES:
        return declined(
            f"element type {element_type.get_type_name()} is not lowered"
        )
    try:
        equation = parse_equation(subscripts, [len(shape) for shape in shapes])
    except EquationError as error:
        return declined(str(error))
    plan = plan_lowering(equation, shapes, kernel_index)
    if not plan:  # a declined Outcome; a plan is always true
        return plan
    return Planned(plan, inputs[1 - kernel_index], inputs[kernel_index])


def build_matmul(plan, variable, kernel, product=None):
    """``plan``'s MatMul of ``variable`` and a kernel already laid out.

    ``kernel`` is [batch..., K, N] ([batch..., N, K] with ``transpose_b``),
    as ``lay_out_kernel`` makes it. ``product(x, kernel, transpose_b)``
    builds the matrix product itself (default: one MatMul).
    """
    batch, rows = len(plan.batch), len(plan.rows)
    x = variable
    if plan.variable_summed_axes:
        x = _reduce_sum(x, plan.variable_summed_axes)
    if plan.variable_permutation is not None:
        x = _transpose(x, plan.variable_permutation)
    x_laid_out = x

    # special_zero reshapes copy the leading batch/row sizes, which may be
    # dynamic; only the contracted sizes (known from the kernel) are merged.
    if batch == 0:
        x_shape = [0] * rows + [plan.contracted_size]
    elif rows == 1:
        x_shape = [0] * (batch + 1) + [plan.contracted_size]
    elif rows == 0:
        x_shape = [0] * batch + [1, plan.contracted_size]
    else:
        x_shape = [0] * batch + [-1, plan.contracted_size]
    # One contracted axis already in place needs no reshape: every node
    # saved here is one less for OpenVINO's passes to visit at compile time.
    if len(plan.contracted) != 1 or len(x_shape) != batch + rows + 1:
        x = _reshape(x, x_shape)

    if product is None:
        y = ov_opset.matmul(x, kernel, False, plan.transpose_b).output(0)
    else:
        y = product(x, kernel, plan.transpose_b)

    columns = [plan.sizes[label] for label in plan.columns]
    if (batch == 0 or rows == 1) and len(columns) == 1:
        pass  # already [batch..., rows..., N]
    elif batch == 0 or rows == 1:
        y = _reshape(y, [0] * (batch + rows) + columns)
    elif rows == 0:
        y = _reshape(y, [0] * batch + columns)
    else:
        # Several row axes were merged into one; their sizes may be dynamic.
        row_sizes = ov_opset.gather(
            ov_opset.shape_of(x_laid_out, ov.Type.i64),
            int64_constant(list(range(batch, batch + rows))),
            int64_constant(0),
        )
        target = ov_opset.concat(
            [int64_constant([0] * batch), row_sizes, int64_constant(columns)], 0
        )
        y = ov_opset.reshape(y, target, special_zero=True).output(0)
    if plan.output_permutation is not None:
        y = _transpose(y, plan.output_permutation)
    return y


def lay_out_kernel(kernel, plan):
    """The kernel as [batch..., K, N] ([batch..., N, K] with transpose_b)."""
    w = kernel
    if plan.kernel_summed_axes:
        w = _reduce_sum(w, plan.kernel_summed_axes)
    if plan.kernel_permutation is not None:
        w = _transposed_kernel(w, plan.kernel_permutation)
    shape = [plan.sizes[label] for label in plan.batch]
    if plan.transpose_b:
        shape += [plan.columns_size, plan.contracted_size]
    else:
        shape += [plan.contracted_size, plan.columns_size]
    if list(w.get_partial_shape().to_shape()) != shape:
        # A reshape of a constant is a view: no bytes are copied.
        w = _reshape(w, shape, special_zero=False)
    return w


def _transposed_kernel(kernel, permutation):
    """Transpose an interleaved kernel once and share it between einsums.

    OpenVINO folds each Transpose of a constant into a new constant (the CPU
    plugin merges identical ones when it compiles, but the model handed to
    it holds both). The Transpose another einsum already built on the same
    kernel is found among the kernel's readers, which the graph owns: it
    lives exactly as long as a graph uses it. (A module-level cache of the
    nodes kept every dropped model's kernels alive until ``disable()``.) Two
    threads lowering one kernel at once may each build one: a second copy,
    never a wrong result."""
    order = list(permutation)
    for target in kernel.get_target_inputs():
        node = target.get_node()
        if (
            node.get_type_name() == "Transpose"
            and target.get_index() == 0
            and constant_values(node.input_value(1)) == order
        ):
            return node.output(0)
    return _transpose(kernel, order)


def int64_constant(values):
    """A small int64 constant: shapes, axes, orders and lengths."""
    return ov_opset.constant(np.asarray(values, dtype=np.int64)).output(0)


def _reshape(x, shape, special_zero=True):
    return ov_opset.reshape(x, int64_constant(shape), special_zero).output(0)


def _transpose(x, permutation):
    return ov_opset.transpose(x, int64_constant(list(permutation))).output(0)


def _reduce_sum(x, axes):
    return ov_opset.reduce_sum(x, int64_constant(list(axes)), False).output(0)
