"""Build and run ``keras.ops.slice_update`` graphs, stock and fixed."""

import dataclasses

import openvino as ov
import openvino.opset13 as ov_opset

import keras_ov_einsum
from graphs import F32
from keras_ov_einsum.core import backend

__all__ = [
    "RUNTIME",
    "SliceUpdateGraph",
    "build_slice_update",
    "numpy_slice_update",
    "run_slice_update",
    "scatter_index_width",
]

# A start index given as a runtime scalar (a Parameter), not a Python int.
RUNTIME = "runtime"


@dataclasses.dataclass
class SliceUpdateGraph:
    model: ov.Model
    explanation: tuple


def build_slice_update(
    data_shape,
    updates_shape,
    starts,
    *,
    fixed,
    dtype="float32",
    start_dtype="int32",
    parts=None,
):
    """``slice_update(data, starts, updates)`` on Parameters.

    ``None`` in a shape is a dynamic dimension. Each start is a Python int
    or ``RUNTIME`` (a scalar ``start_dtype`` Parameter, fed after ``data``
    and ``updates`` in axis order).
    """
    import keras

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    def parameter(shape, element_type):
        shape = [-1 if size is None else size for size in shape]
        return ov_opset.parameter(shape, OPENVINO_DTYPES[element_type])

    parameters = [
        parameter(data_shape, dtype),
        parameter(updates_shape, dtype),
    ]
    start_indices = []
    for start in starts:
        if start == RUNTIME:
            parameters.append(parameter([], start_dtype))
            start = OpenVINOKerasTensor(parameters[-1].output(0))
        start_indices.append(start)
    data, updates = (OpenVINOKerasTensor(p.output(0)) for p in parameters[:2])
    if fixed:
        with keras_ov_einsum.enabled(**(parts or {})):
            result = keras.ops.slice_update(data, start_indices, updates)
            explanation = keras_ov_einsum.explain()
    else:
        result = keras.ops.slice_update(data, start_indices, updates)
        explanation = ()
    return SliceUpdateGraph(ov.Model([result.output], parameters), explanation)


def run_slice_update(graph, data, updates, starts):
    """Run on arrays; ``starts`` are the runtime starts' values, in order."""
    compiled = ov.Core().compile_model(graph.model, "CPU", F32)
    return compiled([data, updates, *starts])[0]


def numpy_slice_update(data, updates, starts):
    """NumPy's ``data[start:start + size, ...] = updates``; a negative start
    counts from the end, as OpenVINO's ScatterNDUpdate reads it."""
    result = data.copy()
    window = tuple(
        slice(start % size, start % size + extent)
        for start, size, extent in zip(starts, data.shape, updates.shape)
    )
    result[window] = updates
    return result


def scatter_index_width(model):
    """The index width of the model's one ScatterNDUpdate: how many leading
    axes its index rows address."""
    (scatter,) = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "ScatterNDUpdate"
    ]
    return scatter.input_value(1).get_partial_shape()[-1].get_length()
