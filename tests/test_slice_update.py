"""``slice_update`` as rows of slabs: keras-hub's cache write loses its
per-element index graph, the values and errors stay stock's, and anything
not proven the same elements is declined."""

import numpy as np
import pytest

import keras_ov_einsum
from graphs import op_types
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.ops.slice_update import (
    PART as slice_update_part,
)
from slice_updates import (
    RUNTIME,
    build_slice_update,
    numpy_slice_update,
    run_slice_update,
    scatter_index_width,
)

# Each test both ways: the part's replace, and its rewrite after stock.
pytestmark = pytest.mark.usefixtures("part_paths")

# keras-hub's CachedMultiHeadAttention: cache [batch, length, heads, dim],
# a step's key or value [batch, 1, heads, dim], written at [0, index, 0, 0].
CACHE, STEP, AT_INDEX = (
    (None, 10, 2, 32),
    (None, None, 2, 32),
    (0, RUNTIME, 0, 0),
)
# Stock's per-element index arithmetic.
INDEX_ARITHMETIC = {"ReduceProd", "Mod", "Divide", "Tile"}


def _operations(model):
    """Operations that compute something (15 here against stock's 43)."""
    inert = {"Constant", "Parameter", "Result"}
    return sum(kind not in inert for kind in op_types(model))


def _arrays(batch=3, length=2, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((batch, 10, 2, 32)).astype("float32")
    updates = rng.standard_normal((batch, length, 2, 32)).astype("float32")
    return data, updates


def test_cache_write_addresses_slabs_and_equals_stock():
    stock = build_slice_update(CACHE, STEP, AT_INDEX, fixed=False)
    fixed = build_slice_update(CACHE, STEP, AT_INDEX, fixed=True)
    (decision,) = fixed.explanation
    assert decision.equation == slice_update_part.label and decision.lowered
    assert "first 2 of 4 axes, the last 2 written whole" in decision.reason
    assert INDEX_ARITHMETIC <= set(op_types(stock.model))
    assert INDEX_ARITHMETIC.isdisjoint(op_types(fixed.model))
    assert _operations(fixed.model) < _operations(stock.model) / 2
    # Rows over batch and position; stock has one per element (4 wide).
    assert scatter_index_width(stock.model) == 4
    assert scatter_index_width(fixed.model) == 2
    for batch, length, index in [(1, 1, 0), (3, 2, 7), (2, 1, 9), (1, 3, -4)]:
        data, updates = _arrays(batch, length, seed=abs(index))
        start = np.array(index, "int32")
        want = run_slice_update(stock, data, updates, [start])
        got = run_slice_update(fixed, data, updates, [start])
        np.testing.assert_array_equal(got, want)
        reference = numpy_slice_update(data, updates, (0, index, 0, 0))
        np.testing.assert_array_equal(got, reference)


def test_the_replace_traces_no_stock_slice_update(part_paths, monkeypatch):
    """Its point: stock's ~50 operations a call are not traced only to be
    dropped (the rewrite reads them off stock's result)."""
    core = backend.module("core")

    calls = []
    stock = core.slice_update

    def counted(*args):
        calls.append(args)
        return stock(*args)

    monkeypatch.setattr(core, "slice_update", counted)
    fixed = build_slice_update(CACHE, STEP, AT_INDEX, fixed=True)
    assert scatter_index_width(fixed.model) == 2
    assert len(calls) == (0 if part_paths == "replace" else 1)


def test_a_whole_prefix_write_needs_rows_on_the_batch_axis_only():
    # keras-hub's first write: the prompt's whole cache at [0, 0, 0, 0].
    fixed = build_slice_update(CACHE, CACHE, (0, 0, 0, 0), fixed=True)
    assert scatter_index_width(fixed.model) == 1
    data, updates = _arrays(length=10)
    got = run_slice_update(fixed, data, updates, [])
    np.testing.assert_array_equal(got, updates)


@pytest.mark.parametrize(
    "data_shape, updates_shape, starts, width",
    [
        # A dynamic trailing size may be smaller in updates: a row axis.
        ((None, 10, 2, None), (None, 1, 2, None), (0, RUNTIME, 0, 0), 4),
        # A start of 0 given at run time is not known to be 0.
        ((2, 10, 2, 32), (2, 1, 2, 32), (0, 3, 0, RUNTIME), 4),
        # A smaller static size: that axis still needs rows.
        ((2, 10, 4, 32), (2, 1, 2, 32), (0, 3, 0, 0), 3),
        # A constant start other than 0.
        ((2, 10, 4, 32), (2, 1, 4, 16), (0, 3, 0, 16), 4),
        # Keras-hub's sampler: a token id written into [batch, length].
        ((None, 10), (None, 1), (0, RUNTIME), 2),
    ],
)
def test_only_axes_proven_whole_are_written_as_slabs(
    data_shape, updates_shape, starts, width
):
    stock = build_slice_update(data_shape, updates_shape, starts, fixed=False)
    fixed = build_slice_update(data_shape, updates_shape, starts, fixed=True)
    assert scatter_index_width(fixed.model) == width
    rng = np.random.default_rng(width)
    concrete = [2, 10, 4, 32][: len(data_shape)]
    data = rng.standard_normal(
        [c if s is None else s for s, c in zip(data_shape, concrete)]
    ).astype("float32")
    update_concrete = [
        size if size is not None else (1 if axis == 1 else data.shape[axis])
        for axis, size in enumerate(updates_shape)
    ]
    updates = rng.standard_normal(update_concrete).astype("float32")
    runtime = [
        np.array(5 if axis == 1 else 0, "int32")
        for axis, start in enumerate(starts)
        if start == RUNTIME
    ]
    want = run_slice_update(stock, data, updates, runtime)
    got = run_slice_update(fixed, data, updates, runtime)
    np.testing.assert_array_equal(got, want)


def test_int64_and_int32_starts_and_other_dtypes_keep_stock_types():
    for dtype in ("float16", "int32", "bool"):
        stock = build_slice_update(
            CACHE, STEP, AT_INDEX, fixed=False, dtype=dtype, start_dtype="int64"
        )
        fixed = build_slice_update(
            CACHE, STEP, AT_INDEX, fixed=True, dtype=dtype, start_dtype="int64"
        )
        assert scatter_index_width(fixed.model) == 2
        assert fixed.model.output(0).get_element_type() == (
            stock.model.output(0).get_element_type()
        )
        data, updates = (array.astype(dtype) for array in _arrays(2, 1))
        start = np.array(6, "int64")
        np.testing.assert_array_equal(
            run_slice_update(fixed, data, updates, [start]),
            run_slice_update(stock, data, updates, [start]),
        )


def test_one_start_tensor_for_two_axes_is_declined():
    # Stock concatenates the starts, so one [2] tensor may cover two axes;
    # the rewrite needs one scalar per axis.
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    data = ov_opset.parameter([4, 6], ov.Type.f32)
    updates = ov_opset.parameter([2, 3], ov.Type.f32)
    start = ov_opset.constant(np.array([1, 2], "int32"))
    tensors = [OpenVINOKerasTensor(node.output(0)) for node in (data, updates)]
    with keras_ov_einsum.enabled():
        result = keras.ops.slice_update(
            tensors[0], (OpenVINOKerasTensor(start.output(0)),), tensors[1]
        )
        (decision,) = keras_ov_einsum.explain()
    assert not decision.lowered
    assert "one scalar index per axis" in decision.reason
    model = ov.Model([result.output], [data, updates])
    assert {"ReduceProd", "Mod"} <= set(op_types(model))


def test_stock_errors_are_kept():
    import keras

    data = keras.ops.zeros((4, 6))
    updates = keras.ops.ones((2, 3))
    with keras_ov_einsum.enabled():
        with pytest.raises(ValueError, match="requires integral"):
            keras.ops.slice_update(data, (1.0, 2), updates)
        with pytest.raises(ValueError, match="not supported by openvino"):
            keras.ops.slice_update(data, {0: 1}, updates)


def test_eager_values_equal_numpy():
    import keras

    data = np.arange(24, dtype="float32").reshape(4, 6)
    updates = -np.ones((2, 6), "float32")
    with keras_ov_einsum.enabled():
        got = keras.ops.slice_update(data, (1, 0), updates)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(got),
        numpy_slice_update(data, updates, (1, 0)),
    )


def test_the_switch_leaves_slice_update_stock():
    core = backend.module("core")

    original = core.slice_update
    graph = build_slice_update(
        CACHE, STEP, AT_INDEX, fixed=True, parts={"slice_update": False}
    )
    assert graph.explanation == ()
    assert scatter_index_width(graph.model) == 4
    assert core.slice_update is original
    with keras_ov_einsum.enabled():
        assert core.slice_update.__keras_ov_einsum_original__ is original
    assert core.slice_update is original
