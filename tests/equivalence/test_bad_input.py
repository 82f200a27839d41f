"""Bad input raises the stock exception type, and never kills the process."""

import numpy as np
import pytest

from graphs import build_einsum_graph, op_types

N = None

# (equation, input shape, kernel shape)
BAD = [
    ("btd,dn->btn", (N, N, 7), (8, 4)),  # mismatched label sizes
    ("btd,dn->btq", (N, N, 8), (8, 4)),  # output label not in the input
    ("btd,dn->btnn", (N, N, 8), (8, 4)),  # repeated output label
    ("btd,dn,nm->btm", (N, N, 8), (8, 4)),  # operand count mismatch
    ("bt,dn->btn", (N, N, 8), (8, 4)),  # too few labels for the rank
    ("btdx,dn->btn", (N, N, 8), (8, 4)),  # too many labels for the rank
    ("b1d,dn->bn", (N, N, 8), (8, 4)),  # not a letter
    ("btd,dn->->btn", (N, N, 8), (8, 4)),  # two arrows
    ("btd;dn->btn", (N, N, 8), (8, 4)),  # wrong separator
    ("...d...,dn->...n", (N, N, 8), (8, 4)),  # two ellipses
]


@pytest.mark.parametrize(
    "equation, input_shape, kernel_shape", BAD, ids=[row[0] for row in BAD]
)
def test_same_exception_type_as_stock(equation, input_shape, kernel_shape):
    kernel = np.ones(kernel_shape, "float32")
    try:
        stock = build_einsum_graph(equation, input_shape, kernel, fixed=False)
    except Exception as error:
        with pytest.raises(type(error)):
            build_einsum_graph(equation, input_shape, kernel, fixed=True)
        return
    # Stock accepts it (OpenVINO is laxer than NumPy for some forms): the
    # fix declines and leaves the stock graph as it is.
    fixed = build_einsum_graph(equation, input_shape, kernel, fixed=True)
    (decision,) = fixed.explanation
    assert not decision.lowered
    assert op_types(fixed.model) == op_types(stock.model)
