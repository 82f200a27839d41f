"""Write a slice as rows of whole slabs, not element by element.

keras's OpenVINO ``slice_update`` (keras-hub's key and value cache writes,
and its sampler's token write) scatters every element of ``updates`` on
its own: a ScatterNDUpdate whose [N, rank] index matrix, one row per
element, is computed in the graph from Range, Divide, Mod, ReduceProd,
Tile and Concat, again at every decoding step (docs/lowering.md counts
them). When the trailing axes of ``updates`` are written whole (start
index the constant 0, the same static size as in ``inputs``), the same
ScatterNDUpdate can address slabs instead: one index row per position on
the leading axes, ``updates`` unflattened, the rows built from a Range
per leading axis. The elements written, their values, the op (version and
attributes) and its errors are stock's; only the index matrix is smaller.
"""

import importlib

import openvino as ov
import openvino.opset13 as ov_opset

from ...core import backend
from ...core.extension import extended
from ...core.graph import keras_result
from ...core.outcome import declined, lowered
from ...core.part import BackendHook, ExtensionPoint, Part

__all__ = [
    "PART",
    "SLAB_INDICES",
    "SLICE_UPDATE",
    "lower_slice_update",
    "replace_slice_update",
    "rewrite_slice_update",
]

SLAB_INDICES = ExtensionPoint(
    "slice_update.slab_indices",
    "how a write's index rows are built (shared_masks: once for every "
    "layer's write of one call): pass_(next, inputs, start_indices, "
    "updates) -> slab_indices(updates, starts), or None for this part's "
    "own rows (_slab_indices)",
)
INDEX_TYPE = ov.Type.i32  # stock's: every start index is converted to i32


def lower_slice_update(scatter, starts, slab_indices=None):
    """Rebuild stock's element-wise ScatterNDUpdate ``scatter`` on slabs.

    ``starts``: the start index of each axis as an ``ov.Output``, as given
    to ``slice_update``. ``slab_indices(updates, starts)`` builds the index
    rows (``_slab_indices`` unless given). Returns None when stock built
    nothing to shrink (a scalar update), else an ``Outcome``: declined when
    the rewrite is not proven equal.
    """
    data = scatter.input_value(0)
    flat_updates = scatter.input_value(2).get_node()
    if flat_updates.get_type_name() != "Reshape":
        return None  # stock's scalar form: one row already
    updates = flat_updates.input_value(0)

    def scatter_like(data, indices, updates):
        return _scatter_like(scatter, data, indices, updates)

    return _on_slabs(data, updates, starts, scatter_like, slab_indices)


def _on_slabs(data, updates, starts, scatter, slab_indices):
    """``scatter(data, indices, updates)`` on the slabs of ``updates``
    (not flattened), or the reason it is not proven equal to stock's."""
    rank = updates.get_partial_shape().rank
    if rank.is_dynamic or data.get_partial_shape().rank.is_dynamic:
        return declined("the rank of inputs or updates is not static")
    rank = rank.get_length()
    if data.get_partial_shape().rank.get_length() != rank:
        return declined("inputs and updates differ in rank")
    if len(starts) != rank or not all(map(_is_one_index, starts)):
        return declined(
            "start_indices are not one scalar index per axis of updates"
        )
    if not all(start.get_element_type().is_integral() for start in starts):
        return declined("a start index is not an integer")
    row_axes = max(1, _first_whole_axis(data, updates, starts))
    indices = (slab_indices or _slab_indices)(updates, starts[:row_axes])
    output = scatter(data, indices, updates)
    whole = rank - row_axes
    if not whole:
        return lowered(
            output,
            "ScatterNDUpdate with stock's index rows, built from a Range per "
            "axis",
        )
    return lowered(
        output,
        f"ScatterNDUpdate on slabs: index rows over the first {row_axes} of "
        f"{rank} axes, the last {whole} written whole (stock: one row per "
        "element)",
    )


def _is_one_index(start):
    shape = start.get_partial_shape()
    return shape.rank.is_static and (
        shape.rank.get_length() == 0
        or (shape.rank.get_length() == 1 and shape.is_static and shape[0] == 1)
    )


def _first_whole_axis(data, updates, starts):
    """The first axis from which every axis is written whole: it starts at
    the constant 0 and has the same static size in ``updates`` and ``data``.
    A dynamic size could be smaller in ``updates``, so it never counts."""
    data_shape = data.get_partial_shape()
    updates_shape = updates.get_partial_shape()
    axis = len(starts)
    while axis > 0:
        previous = axis - 1
        size, whole = updates_shape[previous], data_shape[previous]
        if not (
            _is_constant_zero(starts[previous])
            and size.is_static
            and whole.is_static
            and size.get_length() == whole.get_length()
        ):
            break
        axis = previous
    return axis


def _is_constant_zero(start):
    node = start.get_node()
    return (
        node.get_type_name() == "Constant"
        and int(node.get_data().ravel()[0]) == 0
    )


def _slab_indices(updates, starts):
    """[n_0, ..., n_k-1, k]: start + position on each of the first k axes,
    for every position of ``updates`` on them (a grid of Ranges)."""
    row_axes = len(starts)
    sizes = ov_opset.shape_of(updates, INDEX_TYPE).output(0)
    if row_axes > 1:  # each column is broadcast to [n_0, ..., n_k-1, 1]
        grid_shape = ov_opset.concat(
            [
                ov_opset.slice(
                    sizes, _ints([0]), _ints([row_axes]), _ints([1])
                ),
                _ints([1]),
            ],
            axis=0,
        ).output(0)
    columns = []
    for axis, start in enumerate(starts):
        start = _scalar_index(start)
        size = ov_opset.gather(sizes, _ints(axis), _ints(0)).output(0)
        stop = ov_opset.add(start, size).output(0)
        column = ov_opset.range(start, stop, _ints(1), INDEX_TYPE).output(0)
        # Along its own axis of the grid, constant along the others.
        other_axes = [a for a in range(row_axes + 1) if a != axis]
        column = ov_opset.unsqueeze(column, _ints(other_axes)).output(0)
        if row_axes > 1:
            column = ov_opset.broadcast(column, grid_shape).output(0)
        columns.append(column)
    if row_axes == 1:
        return columns[0]
    return ov_opset.concat(columns, axis=row_axes).output(0)


def _scalar_index(start):
    if start.get_element_type() != INDEX_TYPE:
        start = ov_opset.convert(start, INDEX_TYPE).output(0)
    if start.get_partial_shape().rank.get_length() == 1:
        start = ov_opset.squeeze(start, _ints([0])).output(0)
    return start


def _scatter_like(scatter, data, indices, updates):
    """A ScatterNDUpdate of the same opset version and attributes as
    stock's (keras's opset decides, e.g., how negative indices read)."""
    opset = importlib.import_module(
        f"openvino.{scatter.get_type_info().version_id}"
    )
    return opset.scatter_nd_update(
        data, indices, updates, **scatter.get_attributes()
    ).output(0)


def _ints(values):
    return ov_opset.constant(values, INDEX_TYPE).output(0)


def rewrite_slice_update(
    result, inputs, start_indices, updates, slab_indices=None
):
    if slab_indices is None:
        slab_indices = _passes_slab_indices(inputs, start_indices, updates)
    get_ov_output = backend.symbol("get_ov_output")

    scatter = result.output.get_node()
    if scatter.get_type_name() != "ScatterNDUpdate":
        return declined("the stock path built no ScatterNDUpdate")
    starts = [get_ov_output(start) for start in start_indices]
    return keras_result(lower_slice_update(scatter, starts, slab_indices))


def replace_slice_update(inputs, start_indices, updates, slab_indices=None):
    """The slabs' ScatterNDUpdate built from the call's own arguments, as
    the rewrite builds it from stock's, without tracing stock's index matrix
    first (docs/native-gap.md times that). None, for stock and the rewrite to
    decide, where stock raises (start_indices not a sequence, a start index
    not an integer, inputs and updates of two types) or builds its scalar
    form."""
    if slab_indices is None:
        slab_indices = _passes_slab_indices(inputs, start_indices, updates)
    import numpy as np

    core = backend.module("core")

    if isinstance(start_indices, (list, np.ndarray)):
        start_indices = tuple(start_indices)
    if not isinstance(start_indices, tuple):
        return None
    data = core.get_ov_output(inputs)
    updates = core.get_ov_output(updates)
    rank = updates.get_partial_shape().rank
    if rank.is_dynamic or rank.get_length() == 0:
        return None
    if data.get_element_type() != updates.get_element_type():
        return None
    starts = [core.get_ov_output(start) for start in start_indices]

    def scatter(data, indices, updates):
        # The function stock's slice_update calls: its opset, its defaults.
        return core.ov_opset.scatter_nd_update(data, indices, updates).output(0)

    outcome = _on_slabs(data, updates, starts, scatter, slab_indices)
    return keras_result(outcome) if outcome else None


def _passes_slab_indices(inputs, start_indices, updates):
    """The index rows' builder the passes at ``SLAB_INDICES`` give, None
    for this part's own."""
    return extended(SLAB_INDICES, lambda *arguments: None)(
        inputs, start_indices, updates
    )


def _data_and_updates(inputs, start_indices, updates):
    return inputs, updates


SLICE_UPDATE = BackendHook("core.slice_update", operands=_data_and_updates)

PART = Part(
    name="slice_update",
    summary="key/value-cache writes address whole slabs: one index row a "
    "slab, not one an element",
    hooks=(SLICE_UPDATE,),
    rewrite=rewrite_slice_update,
    replace=replace_slice_update,
    label="slice_update(inputs, start_indices, updates)",
    sources=("parts/ops/slice_update.py",),
)
