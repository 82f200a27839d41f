"""The core property: with one constant operand, the fixed einsum equals the
stock one (dtype, shape, values, errors) and NumPy's, and the lowered graph
has no Einsum and no new weights; with two variable operands, the fixed
graph is the stock graph."""

import collections
import contextlib
import re

import openvino as ov
import openvino.opset13 as ov_opset
import pytest
from hypothesis import (
    HealthCheck,
    currently_in_test_context,
    example,
    given,
    settings,
    target,
)
from hypothesis import strategies as st

import keras_ov_einsum
from graphs import op_types
from keras_ov_einsum.core import backend
from keras_ov_einsum.einsum.equation import parse_equation
from keras_ov_einsum.einsum.plan import plan_lowering

from .builders import (
    KERNEL_VIEWS,
    Input,
    assert_no_new_weights,
    build,
    build_case,
    case_arrays,
    constant_signature,
    result_dtype,
    run,
)
from .references import (
    assert_close,
    assert_same_error,
    event,
    note,
    numpy_reference,
    values,
)
from .strategies import (
    DTYPE_PAIRS,
    EinsumCase,
    SharedKernel,
    einsum_cases,
    shared_kernels,
)

__all__ = ["check_against_stock"]

ALL_CASES = einsum_cases(
    dtype_pairs=DTYPE_PAIRS, kernel_views=tuple(KERNEL_VIEWS)
)


def _reason_kind(reason):
    """A decline reason without the labels and sizes in it, for event()."""
    reason = re.sub(r"'[^']*'|\([^)]*\)|\[[^]]*\]|\d+", "_", reason)
    return reason.split(":")[0][:60]


def _layout(reason):
    """The kernel layout of a lowered einsum, from its explain() line."""
    if "kernel transposed" in reason:
        return "kernel transposed"
    if "transpose_b=True" in reason:
        return "kernel read as [N, K] (transpose_b)"
    return "kernel read as [K, N]"


def _agrees(got, want, dtype):
    try:
        assert_close(got, want, dtype)
    except AssertionError:
        return False
    return True


def check_against_stock(case):
    """The fixed path equals the stock path on ``case``; returns the
    ``Decision`` the fix took."""
    note(repr(case))
    x, kernel = case_arrays(case)
    try:
        stock = build_case(case, kernel, fixed=False)
    except Exception as error:
        event("stock raises while building")
        assert_same_error(error, lambda: build_case(case, kernel, fixed=True))
        return None
    fixed = build_case(case, kernel, fixed=True)
    (decision,) = fixed.explanation
    note(str(decision))
    # A lowering that raised falls back to stock (users never see it), but
    # for the suite it is a bug.
    assert not decision.reason.startswith("internal error"), decision.reason
    if decision.lowered:
        event(f"lowered, {_layout(decision.reason)}")
        event(f"lowered, kernel view: {case.kernel_view}")
        # Steer the search toward lowerings of many axes.
        if currently_in_test_context():
            target(
                float(len(case.x_shape) + len(case.kernel_shape)),
                label="rank of a lowered einsum",
            )
        fixed_ops = op_types(fixed.model)
        assert "Einsum" not in fixed_ops and "MatMul" in fixed_ops
        assert_no_new_weights(stock.model, fixed.model)
    else:
        event(f"stock: {_reason_kind(decision.reason)}")
        # Declined: the fixed graph is the stock graph, node for node.
        assert op_types(fixed.model) == op_types(stock.model)
        assert constant_signature(fixed.model) == constant_signature(
            stock.model
        )
    stock_output = stock.model.output(0)
    fixed_output = fixed.model.output(0)
    assert fixed_output.get_element_type() == stock_output.get_element_type()
    assert fixed_output.get_partial_shape() == stock_output.get_partial_shape()

    try:
        want = run(stock.model, x)
    except RuntimeError as error:  # the CPU plugin rejects some stock graphs
        event("stock graph does not compile or run")
        assert_same_error(error, lambda: run(fixed.model, x))
        return decision
    got = run(fixed.model, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    dtype = result_dtype(fixed.model)
    operands = (kernel, x) if case.kernel_first else (x, kernel)
    try:
        truth = numpy_reference(case.equation, *operands)
    except ValueError as error:  # NumPy rejects a form OpenVINO accepts
        note(f"numpy: {error}")
        event("numpy rejects it")
        truth = None
    if decision.lowered and truth is not None:
        assert_close(got, truth, dtype, "fixed vs numpy float64")
    if truth is not None and not _agrees(want, truth, dtype):
        # Stock OpenVINO itself is wrong here (seen: garbage elements, a
        # different garbage each compile, for einsums with an ellipsis and
        # summed labels): nothing can be equal to it.
        event("stock differs from NumPy")
        return decision
    assert_close(got, want, dtype, "fixed vs stock")
    return decision


# Cases once found to matter, pinned (and run by every profile).
PINNED = [
    # Stock OpenVINO 2026.4 returns a garbage element here; NumPy and the
    # fix agree.
    EinsumCase(
        "db,...aebdc",
        (1, 4, 2, 3, 1, 3, 4),
        (3, 1),
        (False, False, False, False, True, False, True),
        True,
        "float32",
        "float16",
    ),
    # Batched matrix-vector products the CPU plugin miscompiles: declined.
    EinsumCase(
        "bc,...eadcb->...aec", (1, 1, 3, 3, 4), (4, 3), (False,) * 5, True
    ),
    # N = 1: OpenVINO dropped the kernel reshape of the lowered graph.
    EinsumCase("abde,acd->be", (1, 1, 2, 1), (1, 1, 2), (False,) * 4, False),
    # A batch axis of size 1: OpenVINO gave a (2, 2) result for (1, 2), or
    # failed to compile (found by the thorough profile): declined.
    EinsumCase("dac,abc->cb", (1, 2, 1), (2, 2, 1), (False,) * 3, False),
    EinsumCase("dac,abc->bc", (1, 2, 1), (2, 2, 1), (False,) * 3, False),
    # Declined (nothing contracted); stock OpenVINO 2026.4 gets it wrong.
    EinsumCase("...ba,b->...b", (2, 2, 1), (2,), (False,) * 3, False),
    EinsumCase(
        "eadcb,bc->ace",
        (1, 1, 1, 3, 1),
        (1, 3),
        (False, False, False, False, True),
        False,
    ),
    # The kernel first and the output order reversed.
    EinsumCase("dn,btd->nbt", (2, 3, 4), (4, 5), (True, False, False), True),
    # Summed labels on both sides and a batch label.
    EinsumCase("ebxd,edn->ebn", (2, 3, 2, 4), (2, 4, 3), (False,) * 4, False),
    # A size-1 contracted axis and an empty ellipsis.
    EinsumCase("...d,dn->...n", (1,), (1, 3), (True,), False),
    # A dynamic contracted label of x that is 1 where the kernel has 2:
    # NumPy and stock broadcast it; the lowered MatMul raised (K mismatch)
    # or silently read part of the kernel. Now declined.
    EinsumCase("a,ab->b", (1,), (2, 2), (True,), False),
    EinsumCase("ab,acde->bcd", (1, 1), (2, 1, 2, 1), (True, False), False),
    # A batched MatMul with one row (M = 1) behind a reduce and transpose
    # of x: the CPU plugin gave a (2, 1, 2, 2) result for (2, 1, 1, 2), or
    # wrong values (found by the thorough profile): declined.
    EinsumCase(
        "dfea,abce->bcde", (1, 1, 2, 2), (2, 2, 1, 2), (False,) * 4, False
    ),
    EinsumCase(
        "bfea,bacde->cde", (1, 1, 2, 2), (1, 2, 2, 1, 2), (False,) * 4, False
    ),
    # x summed over, then transposed only by moving an axis of size 1: the
    # CPU plugin gave a (2, 1) result for (2, 2) (found by the frameworks
    # suite's thorough run), or for 'feda,ac->dcf' a result buffer of the
    # wrong size that corrupted the heap: declined.
    EinsumCase("beda,bac->cd", (1, 1, 2, 2), (1, 2, 2), (False,) * 4, False),
    EinsumCase("feda,ac->dcf", (1, 2, 3, 3), (3, 3), (False,) * 4, False),
]


@given(case=ALL_CASES)
@example(case=PINNED[0])
@example(case=PINNED[1])
@example(case=PINNED[2])
@example(case=PINNED[3])
@example(case=PINNED[4])
@example(case=PINNED[5])
@example(case=PINNED[6])
@example(case=PINNED[7])
@example(case=PINNED[8])
@example(case=PINNED[9])
@example(case=PINNED[10])
@example(case=PINNED[11])
@example(case=PINNED[12])
@example(case=PINNED[13])
@example(case=PINNED[14])
@example(case=PINNED[15])
def test_constant_kernel_equals_stock_and_numpy(case):
    check_against_stock(case)


@pytest.mark.parametrize("case", PINNED, ids=[case.equation for case in PINNED])
def test_pinned_cases(case):
    """The pins on their own, so that a regression names its case."""
    check_against_stock(case)


# The strategy is only worth its examples if it reaches every path of the
# lowering. Checked on a fixed sample of its draws (graphs only, no
# compilation: cheap): the share of all draws that must be lowered and
# declined, and the share of the lowered ones each feature must reach.
SHARE_OF_DRAWS = {"lowered": 0.3, "declined": 0.2}
SHARE_OF_LOWERED = {
    "kernel read as [K, N]": 0.02,
    "kernel read as [N, K] (transpose_b)": 0.02,
    "kernel transposed": 0.02,
    "a dynamic axis": 0.1,
    "an ellipsis": 0.05,
    "an implicit output": 0.02,
    "the kernel first": 0.1,
    "mixed dtypes": 0.05,
    **{f"kernel view: {view}": 0.02 for view in KERNEL_VIEWS},
    # The lowering's less common branches: rows merged beside a batch, and
    # a kernel permutation that differs from its inverse.
    "a batch label and 2+ row labels": 0.03,
    "2+ contracted labels": 0.1,
    "2+ column labels": 0.1,
    "a kernel permutation that is not its inverse": 0.02,
}


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=ALL_CASES)
def _draw_into(seen, case):
    x, kernel = case_arrays(case)
    seen["drawn"] += 1
    try:
        graph = build_case(case, kernel, fixed=True)
    except Exception:
        return
    (decision,) = graph.explanation
    if not decision.lowered:
        seen["declined"] += 1
        return
    seen["lowered"] += 1
    shapes = [
        tuple(
            None if d else size for size, d in zip(case.x_shape, case.dynamic)
        ),
        case.kernel_shape,
    ]
    if case.kernel_first:
        shapes.reverse()
    equation = parse_equation(case.equation, [len(shape) for shape in shapes])
    plan = plan_lowering(equation, shapes, 0 if case.kernel_first else 1)
    order = plan.kernel_permutation or ()
    features = {
        "a batch label and 2+ row labels": plan.batch and len(plan.rows) > 1,
        "2+ contracted labels": len(plan.contracted) > 1,
        "2+ column labels": len(plan.columns) > 1,
        "a kernel permutation that is not its inverse": any(
            order[order[axis]] != axis for axis in range(len(order))
        ),
        _layout(decision.reason): True,
        "a dynamic axis": any(case.dynamic),
        "an ellipsis": "..." in case.equation,
        "an implicit output": "->" not in case.equation,
        "the kernel first": case.kernel_first,
        "mixed dtypes": case.x_dtype != case.kernel_dtype,
        f"kernel view: {case.kernel_view}": True,
    }
    seen.update(name for name, present in features.items() if present)


def test_the_strategy_exercises_every_lowering_path():
    seen = collections.Counter()
    _draw_into(seen)
    missed = {
        name: seen[name] / seen["drawn"]
        for name, share in SHARE_OF_DRAWS.items()
        if seen[name] < share * seen["drawn"]
    }
    missed.update(
        (name, seen[name] / seen["lowered"])
        for name, share in SHARE_OF_LOWERED.items()
        if seen[name] < share * seen["lowered"]
    )
    assert not missed, (missed, seen)


@given(
    case=einsum_cases(dtype_pairs=DTYPE_PAIRS),
    second_dynamic=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_two_variable_operands_keep_the_stock_graph(case, second_dynamic):
    """Attention-like einsums: both operands are graph inputs, the fix must
    leave the graph exactly as stock built it."""
    note(repr(case))
    first_shape, second_shape = case.operand_shapes
    dtypes = (
        (case.kernel_dtype, case.x_dtype)
        if case.kernel_first
        else (case.x_dtype, case.kernel_dtype)
    )
    operands = (
        Input(
            tuple(
                None if dynamic else size
                for size, dynamic in zip(first_shape, case.dynamic)
            ),
            dtypes[0],
        ),
        Input(
            tuple(
                None if dynamic else size
                for size, dynamic in zip(second_shape, second_dynamic)
            ),
            dtypes[1],
        ),
    )
    try:
        stock = build(case.equation, operands, fixed=False)
    except Exception as error:
        event("stock raises while building")
        assert_same_error(
            error, lambda: build(case.equation, operands, fixed=True)
        )
        return
    fixed = build(case.equation, operands, fixed=True)
    (decision,) = fixed.explanation
    assert not decision.lowered
    assert decision.reason == "no operand is a constant kernel"
    assert op_types(fixed.model) == op_types(stock.model)
    assert constant_signature(fixed.model) == constant_signature(stock.model)
    arrays = [
        values(shape, dtype, seed=seed)
        for seed, (shape, dtype) in enumerate(zip(case.operand_shapes, dtypes))
    ]
    try:
        want = run(stock.model, *arrays)
    except RuntimeError as error:
        event("stock graph does not compile or run")
        assert_same_error(error, lambda: run(fixed.model, *arrays))
        return
    got = run(fixed.model, *arrays)
    dtype = result_dtype(stock.model)
    try:
        truth = numpy_reference(case.equation, *arrays)
    except ValueError:
        truth = None
    if truth is not None and not _agrees(want, truth, dtype):
        event("stock differs from NumPy")  # nondeterministic: see above
        return
    # The same graph compiled twice: the same bits.
    assert got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


def _shared_kernel_model(shared, kernel, fixed):
    import keras

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    variable = keras.Variable(kernel, trainable=False)
    parameters, outputs = [], []
    with keras_ov_einsum.enabled() if fixed else contextlib.nullcontext():
        for equation, shape in zip(shared.equations, shared.x_shapes):
            # Rows dynamic: the contracted sizes are the kernel's.
            parameter = ov_opset.parameter(
                [
                    -1 if label in "xy" else size
                    for label, size in zip(equation, shape)
                ],
                ov.Type.f32,
            )
            parameters.append(parameter)
            x = OpenVINOKerasTensor(parameter.output(0))
            outputs.append(keras.ops.einsum(equation, x, variable).output)
        explanation = keras_ov_einsum.explain() if fixed else ()
    return ov.Model(outputs, parameters), explanation


# Tied kernels once found to matter: stock right, the fix wrong (the CPU
# plugin's weights cache mixed up two layouts of one buffer with the same
# [K, N]: MatMul(transpose_b) on the original kernel beside a plain read).
SHARED_PINNED = [
    SharedKernel(
        kernel_shape=(4, 4, 4),
        equations=("xbya,abc->xcy", "xbc,abc->ax", "xa,abc->xbc"),
        x_shapes=((2, 4, 3, 4), (4, 4, 4), (4, 4)),
    ),
    SharedKernel(
        kernel_shape=(3, 2, 3, 3),
        equations=("cbydx,abcd->xay", "yacxb,abcd->dxy"),
        x_shapes=((3, 2, 3, 3, 1), (2, 3, 3, 1, 2)),
    ),
]


@settings(max_examples=settings.default.max_examples // 3)
@given(shared=shared_kernels())
@example(shared=SHARED_PINNED[0])
@example(shared=SHARED_PINNED[1])
def test_one_kernel_in_several_einsums(shared):
    """Tied weights: one kernel in several einsums of one graph, each
    contracting other axes. Wherever stock is right, the fix is too."""
    note(repr(shared))
    kernel = values(shared.kernel_shape, "float32", seed=2)
    xs = [
        values(shape, "float32", seed=seed)
        for seed, shape in enumerate(shared.x_shapes)
    ]
    stock, _ = _shared_kernel_model(shared, kernel, fixed=False)
    fixed, explanation = _shared_kernel_model(shared, kernel, fixed=True)
    assert all(decision.lowered for decision in explanation), str(explanation)
    assert "Einsum" not in op_types(fixed)
    assert_no_new_weights(stock, fixed)
    event(
        "layouts: "
        + ", ".join(sorted({_layout(d.reason) for d in explanation}))
    )
    compiled = [
        ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        for m in (stock, fixed)
    ]
    want, got = (model(xs) for model in compiled)
    truths = [
        numpy_reference(equation, x, kernel)
        for equation, x in zip(shared.equations, xs)
    ]
    if not all(
        _agrees(want[i], truth, "float32") for i, truth in enumerate(truths)
    ):
        # Stock OpenVINO 2026.4 is itself wrong on many tied kernels (the
        # same weights cache): nothing to be equal to.
        event("stock differs from NumPy")
        return
    for index, equation in enumerate(shared.equations):
        assert_close(got[index], truths[index], "float32", equation)
        assert_close(got[index], want[index], "float32", equation)
