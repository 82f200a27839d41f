"""The align_types property: for any binary op, operand types (tensors or
Python scalars) and broadcast shapes, the fixed graph has no Convert of a
value to its own type, the result type of stock, and stock's exact values;
where stock raises, the fixed path raises the same."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from binary_ops import (
    OPERATIONS,
    binary_graph,
    identity_converts,
    operand,
    random_inputs,
)
from graphs import run_model

from .references import event

_TENSOR_TYPES = ("float32", "float16", "bfloat16", "int8", "int32", "bool")
_SCALARS = (int, float)
_ELEMENTWISE = [name for name in OPERATIONS if name != "matmul"]


def _check(error):
    lines = str(error).splitlines()
    return [line for line in lines if not line.startswith("While validating")]


@st.composite
def _cases(draw):
    name = draw(st.sampled_from([*_ELEMENTWISE, "matmul"]))
    if name == "matmul":
        # matmul takes tensors of one kind: bool is not multiplied.
        types = st.sampled_from(_TENSOR_TYPES[:-1])
        shapes = ((2, 3), (3, 4))
        return name, (draw(types), shapes[0]), (draw(types), shapes[1])
    kinds = st.sampled_from(_TENSOR_TYPES + _SCALARS)
    first = draw(st.sampled_from(_TENSOR_TYPES))  # one tensor at least
    second = draw(kinds)
    # Broadcast shapes: [2, 3] with [3], [1, 3], [2, 1] or [2, 3].
    other = draw(st.sampled_from([(3,), (1, 3), (2, 1), (2, 3)]))
    operands = [(first, (2, 3)), (second, other)]
    if draw(st.booleans()):
        operands.reverse()
    return name, *operands


@given(case=_cases(), seed=st.integers(0, 2**16))
def test_no_identity_convert_and_stock_values(case, seed):
    name, (a_type, a_shape), (b_type, b_shape) = case
    a, b = operand(a_type, a_shape), operand(b_type, b_shape)
    try:
        stock, _ = binary_graph(name, a, b, fixed=False)
    except Exception as stock_error:  # e.g. maximum of bools
        with pytest.raises(type(stock_error)) as error:
            binary_graph(name, a, b, fixed=True)
        # The same check, the same message; only OpenVINO's description of
        # the failing node differs (its inputs: stock's Converts, or the
        # operands themselves).
        assert _check(error.value) == _check(stock_error)
        event(f"align_types: stock raises {type(stock_error).__name__}")
        return
    fixed, _ = binary_graph(name, a, b, fixed=True)
    assert identity_converts(fixed) == []
    assert (
        fixed.output(0).get_element_type() == stock.output(0).get_element_type()
    )
    assert (
        fixed.output(0).get_partial_shape()
        == stock.output(0).get_partial_shape()
    )
    converts = len(identity_converts(stock))
    event(f"align_types: {converts} identity Convert(s) in stock")
    values = random_inputs(stock, seed)
    got, want = run_model(fixed, *values), run_model(stock, *values)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
