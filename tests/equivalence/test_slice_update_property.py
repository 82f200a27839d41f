"""The slice_update property: for any shapes, static or dynamic, starts given
as constants or at run time, and dtypes, the fixed graph writes the same
elements as stock and NumPy, and addresses exactly the axes not proven
written whole."""

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from slice_updates import (
    RUNTIME,
    build_slice_update,
    numpy_slice_update,
    run_slice_update,
    scatter_index_width,
)

from .references import event

DTYPES = ("float32", "float16", "int32", "bool")


@dataclasses.dataclass(frozen=True)
class Axis:
    size: int
    extent: int  # of updates along this axis
    start: int
    runtime_start: bool
    data_dynamic: bool
    updates_dynamic: bool

    @property
    def whole(self):
        """Proven written whole at trace time."""
        return (
            not self.runtime_start
            and self.start == 0
            and not self.data_dynamic
            and not self.updates_dynamic
            and self.extent == self.size
        )


@st.composite
def axes(draw):
    size = draw(st.integers(1, 5))
    if draw(st.booleans()):
        # Written whole, as keras-hub's cache writes its last axes; rare
        # if left to chance.
        return Axis(size, size, 0, False, False, False)
    extent = draw(st.integers(1, size))
    # In bounds, counted from the start or (negative) from the end.
    start = draw(st.integers(0, size - extent) | st.integers(-size, -extent))
    return Axis(
        size,
        extent,
        start,
        runtime_start=draw(st.booleans()),
        data_dynamic=draw(st.booleans()),
        updates_dynamic=draw(st.booleans()),
    )


@given(
    case=st.lists(axes(), min_size=1, max_size=4),
    dtype=st.sampled_from(DTYPES),
    start_dtype=st.sampled_from(("int32", "int64")),
    seed=st.integers(0, 2**16),
)
def test_slice_update_equals_stock_and_numpy(case, dtype, start_dtype, seed):
    data_shape = [None if a.data_dynamic else a.size for a in case]
    updates_shape = [None if a.updates_dynamic else a.extent for a in case]
    starts = [RUNTIME if a.runtime_start else a.start for a in case]
    graphs = [
        build_slice_update(
            data_shape,
            updates_shape,
            starts,
            fixed=fixed,
            dtype=dtype,
            start_dtype=start_dtype,
        )
        for fixed in (False, True)
    ]
    stock, fixed = graphs
    (decision,) = fixed.explanation
    assert decision.lowered, decision.reason
    whole = 0
    for axis in reversed(case):
        if not axis.whole:
            break
        whole += 1
    width = max(1, len(case) - whole)
    event(f"slice_update: {width} of {len(case)} axes addressed")
    assert scatter_index_width(fixed.model) == width

    rng = np.random.default_rng(seed)
    data = rng.standard_normal([a.size for a in case]) * 8
    updates = rng.standard_normal([a.extent for a in case]) * 8
    data, updates = data.astype(dtype), updates.astype(dtype)
    runtime = [np.array(a.start, start_dtype) for a in case if a.runtime_start]
    got = run_slice_update(fixed, data, updates, runtime)
    want = run_slice_update(stock, data, updates, runtime)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    reference = numpy_slice_update(data, updates, [a.start for a in case])
    np.testing.assert_array_equal(got, reference)
