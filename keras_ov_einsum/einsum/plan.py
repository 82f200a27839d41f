"""Decide whether a two-operand einsum with one constant operand is a MatMul.

``plan_lowering`` is a pure function of the parsed equation, the operand
shapes (``None`` for a dynamic dimension) and which operand is the constant
kernel. It returns a ``LoweringPlan`` or a declined ``Outcome`` with the
reason, in the manner of opt_einsum's ``can_blas``. Every label of the
variable operand ``x`` and of the kernel ``w`` falls in one group:

    batch      in x, w and the output   -> MatMul batch dimension
    rows       in x and the output      -> rows of the MatMul (M)
    contracted in x and w only          -> the reduction dimension (K)
    columns    in w and the output      -> columns of the MatMul (N)
    summed     in one operand only      -> reduced before the MatMul

The MatMul is ``x[batch, rows, K] @ w[batch, K, N]``. The kernel's own label
order decides the order inside each group, so that when the kernel already
reads batch-contracted-columns (or batch-columns-contracted, with
``transpose_b``) a reshape of the original constant is all it needs: a view,
never a copy. Only an interleaved kernel needs ``kernel_permutation``.
"""

import dataclasses

from ..core.kernel import has_matrix_view
from ..core.outcome import declined

__all__ = [
    "DECLINES",
    "Decline",
    "LoweringPlan",
    "plan_lowering",
]


@dataclasses.dataclass(frozen=True)
class LoweringPlan:
    """How to build ``x @ w`` for one einsum; all axes refer to the operands.

    The variable operand is reduced over ``variable_summed_axes``, then
    transposed by ``variable_permutation`` into [batch, rows, contracted].
    The kernel is reduced over ``kernel_summed_axes``, then (only if
    ``kernel_permutation`` is not None) physically transposed into
    [batch, contracted, columns]; otherwise it is read in its own order as
    [batch, contracted, columns], or [batch, columns, contracted] when
    ``transpose_b`` is set. The MatMul result [batch, rows, columns] is then
    transposed by ``output_permutation`` into the requested output order.
    """

    batch: str
    rows: str
    contracted: str
    columns: str
    sizes: dict = dataclasses.field(compare=False)
    variable_summed_axes: tuple
    kernel_summed_axes: tuple
    variable_permutation: tuple
    kernel_permutation: tuple
    transpose_b: bool
    output_permutation: tuple

    @property
    def contracted_size(self):
        return _product(self.sizes[label] for label in self.contracted)

    @property
    def columns_size(self):
        return _product(self.sizes[label] for label in self.columns)

    def describe(self):
        """One line for ``explain()``: the MatMul and what the kernel needed."""
        if self.kernel_permutation is not None:
            layout = f"kernel transposed {list(self.kernel_permutation)}"
        else:
            layout = "kernel reshaped (no copy)"
        shape = [self.sizes[label] for label in self.batch]
        shape += [self.contracted_size, self.columns_size]
        if self.transpose_b:
            shape[-2:] = shape[:-3:-1]
        return (
            f"MatMul(transpose_b={self.transpose_b}), kernel {shape}, {layout}"
        )


def plan_lowering(equation, shapes, kernel_index):
    """A ``LoweringPlan`` for ``equation``, or a declined ``Outcome``.

    ``shapes`` holds one tuple per operand with ``None`` for dynamic sizes;
    the kernel's shape, ``shapes[kernel_index]``, must be fully static.
    Three steps: is it a matrix product at all (``_not_a_product``), the
    label algebra (``_label_groups``) and the kernel layout (``_layout``);
    then the forms declined on what those show (``DECLINES``: mostly what
    OpenVINO is known to get wrong).
    """
    reason = _not_a_product(equation, shapes, kernel_index)
    if reason:
        return declined(reason)
    groups = _label_groups(equation, shapes, kernel_index)
    if not groups.contracted:
        # Stock OpenVINO makes this a broadcast multiply, which beats a
        # MatMul with a reduction of length one.
        return declined(
            "no label is contracted: an elementwise or outer product, "
            "not a matrix product"
        )
    plan = _layout(groups)
    for rule in DECLINES:
        if rule.applies(groups, plan):
            reason = rule.reason
            return declined(reason(groups) if callable(reason) else reason)
    return plan


def _not_a_product(equation, shapes, kernel_index):
    """Why ``equation`` is not one matrix product with a static kernel, or
    None."""
    if len(equation.inputs) != 2:
        return (
            f"{len(equation.inputs)} operand(s); only two-operand einsums are "
            "lowered"
        )
    x_labels = equation.inputs[1 - kernel_index]
    w_labels = equation.inputs[kernel_index]
    x_shape, w_shape = shapes[1 - kernel_index], shapes[kernel_index]
    if not x_labels or not w_labels:
        return "a scalar operand is not a matrix product"
    if equation.ellipsis_inputs[kernel_index]:
        return "the kernel has an ellipsis ('...')"
    for name, labels in (("input", x_labels), ("kernel", w_labels)):
        repeated = sorted(
            {label for label in labels if labels.count(label) > 1}
        )
        if repeated:
            return (
                f"label {repeated[0]!r} repeats within the {name} "
                f"({labels!r}): a diagonal, not a matrix product"
            )
    if any(size is None for size in w_shape):
        return f"the kernel shape {tuple(w_shape)} is not static"
    sizes = dict(zip(w_labels, w_shape))
    for label, size in zip(x_labels, x_shape):
        if label in sizes and size is not None and size != sizes[label]:
            return (
                f"label {label!r} has size {size} in the input but "
                f"{sizes[label]} in the kernel"
            )
    return None


@dataclasses.dataclass(frozen=True)
class _Groups:
    """The label algebra of ``x @ w``: see the module docstring."""

    x_labels: str
    w_labels: str
    output: str
    batch: str
    rows: str
    contracted: str
    columns: str
    variable_summed: tuple  # axes of x
    kernel_summed: tuple  # axes of w
    sizes: dict  # label -> size, from the kernel (static)
    x_sizes: dict  # label -> size in x (None: dynamic)
    w_shape: tuple
    dynamic_shared: str  # labels of x and w that are dynamic in x

    @property
    def matrix(self):
        """[K, N] of the MatMul."""
        return [
            _product(self.sizes[label] for label in self.contracted),
            _product(self.sizes[label] for label in self.columns),
        ]


def _label_groups(equation, shapes, kernel_index):
    x_labels = equation.inputs[1 - kernel_index]
    w_labels = equation.inputs[kernel_index]
    x_shape, w_shape = shapes[1 - kernel_index], shapes[kernel_index]
    output = equation.output
    in_output = set(output)
    x_sizes = dict(zip(x_labels, x_shape))
    return _Groups(
        x_labels=x_labels,
        w_labels=w_labels,
        output=output,
        batch="".join(
            label
            for label in w_labels
            if label in x_labels and label in in_output
        ),
        rows="".join(
            label
            for label in output
            if label in x_labels and label not in w_labels
        ),
        contracted="".join(
            label
            for label in w_labels
            if label in x_labels and label not in in_output
        ),
        columns="".join(
            label
            for label in w_labels
            if label not in x_labels and label in in_output
        ),
        variable_summed=tuple(
            axis
            for axis, label in enumerate(x_labels)
            if label not in w_labels and label not in in_output
        ),
        kernel_summed=tuple(
            axis
            for axis, label in enumerate(w_labels)
            if label not in x_labels and label not in in_output
        ),
        sizes=dict(zip(w_labels, w_shape)),
        x_sizes=x_sizes,
        w_shape=tuple(w_shape),
        dynamic_shared="".join(
            label
            for label in x_labels
            if label in w_labels and x_sizes[label] is None
        ),
    )


def _layout(groups):
    """The plan: the kernel read in its own label order (a view) unless it
    is interleaved; the input and output brought to MatMul's order."""
    batch, contracted, columns = groups.batch, groups.contracted, groups.columns
    in_output = set(groups.output)
    x_kept = "".join(
        label
        for label in groups.x_labels
        if label in in_output or label in groups.w_labels
    )
    w_kept = "".join(
        label
        for label in groups.w_labels
        if label in in_output or label in groups.x_labels
    )
    kernel_permutation = None
    transpose_b = False
    if w_kept == batch + contracted + columns:
        pass
    elif w_kept == batch + columns + contracted and (
        groups.kernel_summed
        or not has_matrix_view(groups.w_shape, *groups.matrix)
    ):
        # The kernel is already [N, K]: MatMul reads it transposed for free.
        transpose_b = True
    else:
        # An interleaved kernel, or an [N, K] one whose buffer also reads
        # as a [K, N] matrix (a square one, say). Found by the equivalence
        # suite: the CPU plugin keeps one packed copy per buffer and
        # [K, N], so a transpose_b read and a plain read of the same
        # weights (tied, elsewhere in the graph) got the same layout.
        target = batch + contracted + columns
        kernel_permutation = tuple(w_kept.index(label) for label in target)
    return LoweringPlan(
        batch=batch,
        rows=groups.rows,
        contracted=contracted,
        columns=columns,
        sizes=groups.sizes,
        variable_summed_axes=groups.variable_summed,
        kernel_summed_axes=groups.kernel_summed,
        variable_permutation=_permutation(
            x_kept, batch + groups.rows + contracted
        ),
        kernel_permutation=kernel_permutation,
        transpose_b=transpose_b,
        output_permutation=_permutation(
            batch + groups.rows + columns, groups.output
        ),
    )


@dataclasses.dataclass(frozen=True)
class Decline:
    """A form left on the stock path, checked in ``DECLINES``' order.

    ``openvino_bug``: a workaround for a form OpenVINO compiles wrong,
    declined until it does not; ``reproducer``: the strict-xfail test in
    tests/test_openvino_bugs.py that shows the bug on a plain OpenVINO
    graph (it starts passing, and so fails, the day an upgrade fixes it),
    or None where the equivalence suite found the bug and it is not yet
    reduced to one.
    """

    applies: object  # (groups, plan) -> bool
    reason: object  # a str, or (groups) -> str
    openvino_bug: bool = True
    reproducer: str = None


def _dynamic_shared_reason(groups):
    label = groups.dynamic_shared[0]
    return (
        f"label {label!r} is dynamic in the input: its size against the "
        f"kernel's {groups.sizes[label]} is only known at run time"
    )


DECLINES = (
    # Found by the equivalence suite: OpenVINO's transformations miscompile
    # some MatMuls whose K or N is 1, or whose batch axis is 1 (a kernel
    # reshape dropped, a reshape of the wrong size, a wrong output shape).
    # Projections never have such a side.
    Decline(
        applies=lambda groups, plan: (
            1 in groups.matrix
            or any(groups.sizes[label] == 1 for label in groups.batch)
        ),
        reason="a matrix-vector product (K or N is 1) or a batch axis of "
        "size 1 is not reliably compiled by OpenVINO",
    ),
    # Found by the equivalence suite ('dfea,abce->bcde'): a batched MatMul
    # with one static row (M = 1) behind the input's reduce and transpose
    # came out of the CPU plugin with a wrong output shape.
    Decline(
        applies=lambda groups, plan: (
            bool(groups.batch)
            and all(groups.x_sizes[label] == 1 for label in groups.rows)
        ),
        reason="a batched matrix-vector product (one row per batch) is not "
        "reliably compiled by OpenVINO",
    ),
    # Not a bug: NumPy and stock broadcast a size of 1 against the
    # kernel's (and raise on other sizes), but a MatMul checks K only when
    # compiled, not at run time (found by the equivalence suite: it
    # raised, or read part of the kernel without a word).
    Decline(
        applies=lambda groups, plan: bool(groups.dynamic_shared),
        reason=_dynamic_shared_reason,
        openvino_bug=False,
    ),
    # Found by the equivalence suite ('beda,bac->cd' with b = 1): the CPU
    # plugin turns such a transpose into a reshape, and the reshapes after
    # it read the shape of the tensor before it: a wrong output shape, a
    # run-time error, or ('feda,ac->dcf' with f = 1) a result buffer of the
    # wrong size that corrupts the heap.
    Decline(
        applies=lambda groups, plan: (
            bool(groups.variable_summed)
            and _moves_only_size_1_axes(
                plan.variable_permutation,
                [
                    groups.x_sizes[label]
                    for label in groups.x_labels
                    if label in groups.output or label in groups.w_labels
                ],
            )
        ),
        reason="the input is summed over, then transposed only by moving "
        "axes of size 1: not reliably compiled by OpenVINO",
        reproducer="test_reduce_transpose_of_size_1_axis_then_special_zero_"
        "reshape",
    ),
)


def _moves_only_size_1_axes(permutation, sizes):
    """A transpose that keeps every axis not of static size 1 in place
    relative to the others: the same bytes as a reshape."""
    if permutation is None:
        return False
    others = [axis for axis in permutation if sizes[axis] != 1]
    return others == sorted(others)


def _permutation(source, target):
    """Axes of ``source`` in ``target`` order; None when already in order."""
    if source == target:
        return None
    return tuple(source.index(label) for label in target)


def _product(values):
    result = 1
    for value in values:
        result *= value
    return result
