"""The prescale property: for any projection shape, with or without bias,
and any power-of-two scale, the fixed graph has no Multiply after the
projection and gives stock's numbers and NumPy's."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from graphs import run_model
from keras_ov_einsum.parts.ops.prescale import PART as prescale_part
from prescales import (
    multiply_after_projection,
    numpy_scaled_projection,
    scaled_projection,
)

from .references import event


# Sizes of 1 on the kernel's contracted or free side keep the einsum stock
# (plan.py declines matrix-vector products), so there is no MatMul to
# prescale: the property draws projections the einsum part lowers.
@given(
    width=st.integers(2, 8),
    heads=st.integers(1, 3),
    head=st.integers(2, 5),
    exponent=st.integers(-12, 12),
    negative=st.booleans(),
    bias=st.booleans(),
    rows=st.tuples(st.integers(1, 3), st.integers(1, 4)),
    seed=st.integers(0, 2**16),
)
def test_power_of_two_scale_equals_stock_and_numpy(
    width, heads, head, exponent, negative, bias, rows, seed
):
    scale = (-1.0 if negative else 1.0) * 2.0**exponent
    shape = dict(width=width, heads=heads, head=head, seed=seed, bias=bias)
    stock, _, layer = scaled_projection(scale, fixed=False, **shape)
    fixed, explanation, _ = scaled_projection(scale, fixed=True, **shape)
    (decision,) = [d for d in explanation if d.equation == prescale_part.label]
    assert decision.lowered, decision.reason
    assert not multiply_after_projection(fixed)
    event(f"prescale: bias={bias}")
    x = np.random.default_rng(seed).standard_normal((*rows, width))
    x = x.astype("float32")
    got, want = run_model(fixed, x), run_model(stock, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    # Exact in exact arithmetic; the CPU plugin may pick another kernel
    # (summation order) for the unfused projection.
    tolerance = 1e-6 * abs(scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=tolerance * 10)
    np.testing.assert_allclose(
        got,
        numpy_scaled_projection(layer, x, scale),
        rtol=1e-5,
        atol=tolerance * 100,
    )
