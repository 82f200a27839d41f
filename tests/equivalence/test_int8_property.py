"""The opt-in int8 part as a property: for any int8 x int8 einsum with a
constant int8 kernel, the fixed graph with ``int8=True`` gives stock's
int32 result bit for bit (and NumPy's), adds no weights, and keeps the
kernel int8 whenever it says so."""

import dataclasses
from unittest import mock

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import keras_ov_einsum
from graphs import op_types
from keras_ov_einsum.parts.int8 import int8

from .builders import (
    KERNEL_VIEWS,
    SMALL_CONSTANT,
    assert_no_new_weights,
    build_case,
    run,
)
from .references import event, note, numpy_reference
from .strategies import EinsumCase, einsum_cases

INT8_CASES = einsum_cases(
    dtype_pairs=(("int8", "int8"),), kernel_views=tuple(KERNEL_VIEWS)
)


def _full_range(shape, seed):
    """int8 values over the whole range, -128 and 127 included."""
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, shape).astype(np.int8)


_CUT_IN_ROWS = EinsumCase(
    equation="a,ab->b",
    x_shape=(2,),
    kernel_shape=(2, 2),
    dynamic=(False,),
    kernel_first=False,
    x_dtype="int8",
    kernel_dtype="int8",
    kernel_view="variable",
)


@settings(max_examples=max(settings.default.max_examples // 3, 1))
@given(
    case=INT8_CASES,
    seed=st.integers(0, 2**32 - 1),
    # The largest part of K one MatMul takes: the real 1024 never splits
    # these small einsums; 1 to 3 split them into parts (the path of long
    # contractions), with a short last part when it does not divide K.
    part=st.sampled_from([int8.MAX_EXACT_CONTRACTION, 1, 2, 3]),
)
# Found by Hypothesis: a kernel cut into Constants on views of its rows
# holds no Constant of the kernel's own shape (nor, past a Reshape of it,
# the Reshape's shape constant).
@example(case=_CUT_IN_ROWS, seed=0, part=1)
@example(
    case=dataclasses.replace(_CUT_IN_ROWS, kernel_view="reshaped"),
    seed=0,
    part=1,
)
def test_int8_part_equals_stock_and_numpy(case, seed, part):
    with mock.patch.object(int8, "MAX_EXACT_CONTRACTION", part):
        _check_int8_part(case, seed)


def _check_int8_part(case, seed):
    note(repr(case))
    x = _full_range(case.x_shape, seed)
    kernel = _full_range(case.kernel_shape, seed + 1)
    try:
        stock = build_case(case, kernel, fixed=False)
    except Exception:
        event("stock raises while building")
        return  # the error contract is test_properties' job
    fixed = build_case(case, kernel, fixed=True, parts={"int8": True})
    (decision,) = fixed.explanation
    note(str(decision))
    assert not decision.reason.startswith("internal error"), decision.reason
    if "int8 kernel kept int8" in decision.reason:
        split = "in parts" if "exact parts" in decision.reason else "whole"
        event(f"lowered, int8 kernel kept int8, {split}")
        assert "Einsum" not in op_types(fixed.model)
        assert "Multiply" in op_types(fixed.model)
    elif decision.lowered:
        event(
            "lowered as int32: "
            + decision.reason.split("int8 part not used: ")[-1][:40]
        )
    else:
        event("stock")
    # Beyond stock's constants: shape/axis constants, the int8 form's split
    # lengths (one per part of K, so up to the kernel's size with parts of 1)
    # and its float32 scale of ones (one per kernel column).
    assert_no_new_weights(
        stock.model,
        fixed.model,
        small=max(SMALL_CONSTANT[1], kernel.size),
        scales=True,
        row_views="views of its rows" in decision.reason,
    )
    assert fixed.model.output(0).get_element_type() == (
        stock.model.output(0).get_element_type()
    )
    try:
        want = run(stock.model, x)
    except RuntimeError:
        event("stock graph does not compile or run")
        return
    with keras_ov_einsum.enabled(int8=True):  # compile with its options
        got = run(fixed.model, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    operands = (kernel, x) if case.kernel_first else (x, kernel)
    try:
        truth = numpy_reference(case.equation, *operands)
    except ValueError:
        truth = None
    if truth is not None and not np.array_equal(want, truth):
        event("stock differs from NumPy")
    else:
        np.testing.assert_array_equal(got, want)
    if truth is not None and decision.lowered:
        np.testing.assert_array_equal(got, truth)
