"""Build one einsum into an OpenVINO model, with and without the fix.

The variable operands are Parameters (``None`` in a shape is a dynamic,
-1, dimension); the kernel is a ``keras.Variable``, i.e. a Constant, as in a
real layer, reached either directly or through one of the views Keras code
puts between a weight and an einsum (a transpose, a reshape, a squeeze):
the ops ``kernel.py``'s allow-list has to look through.
"""

import collections
import dataclasses
import math

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset

import keras_ov_einsum
from graphs import run_model
from keras_ov_einsum.core import backend

__all__ = [
    "Built",
    "Input",
    "KERNEL_VIEWS",
    "Kernel",
    "assert_no_new_weights",
    "build",
    "build_case",
    "case_arrays",
    "constant_signature",
    "result_dtype",
    "run",
    "run_outputs",
]

# How the kernel reaches einsum: view -> (what the Variable stores, the
# Keras op that gives the kernel back from it).
KERNEL_VIEWS = {
    "variable": (lambda k: k, lambda ops, v, shape: v),
    "transposed": (
        lambda k: k.transpose(tuple(reversed(range(k.ndim)))),
        lambda ops, v, shape: ops.transpose(
            v, tuple(reversed(range(len(shape))))
        ),
    ),
    "reshaped": (
        lambda k: k.reshape(-1),
        lambda ops, v, shape: ops.reshape(v, shape),
    ),
    "squeezed": (
        lambda k: k[np.newaxis],
        lambda ops, v, shape: ops.squeeze(v, axis=0),
    ),
}

# The lowering adds shape and axis constants (int64, a few elements) and
# nothing else: the kernel is reshaped in place, never copied.
SMALL_CONSTANT = ("i64", 16)

# OpenVINO element type name -> Keras dtype, for the result of a model.
_RESULT_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "i8": "int8",
    "i32": "int32",
    "i64": "int64",
}


@dataclasses.dataclass(frozen=True)
class Input:
    """A graph input (Parameter) of ``shape``; ``None`` is dynamic."""

    shape: tuple
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
    """A constant operand: ``array`` as a Variable, seen through ``view``."""

    array: np.ndarray
    view: str = "variable"


@dataclasses.dataclass
class Built:
    model: ov.Model
    explanation: tuple  # keras_ov_einsum.explain() after the call; () stock


def build(equation, operands, *, fixed, parts=None):
    """``keras.ops.einsum(equation, *operands)`` as a model of its inputs.

    ``parts``: the ``enable()`` switches when ``fixed`` (default: its
    defaults). Raises whatever the einsum call raises (the stock errors are
    part of the contract the fix keeps).
    """
    import keras

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameters, tensors = [], []
    for operand in operands:
        if isinstance(operand, Kernel):
            store, view = KERNEL_VIEWS[operand.view]
            # Contiguous: openvino 2026.4 makes a Constant of a strided
            # float16 array an int16 one holding the raw bits (so Keras's
            # Variable of it holds garbage, stock or fixed alike).
            stored = np.ascontiguousarray(store(operand.array))
            variable = keras.Variable(
                stored, dtype=str(stored.dtype), trainable=False
            )
            tensors.append(view(keras.ops, variable, operand.array.shape))
            continue
        # OpenVINO's Python API reads bfloat16 NumPy arrays as float16
        # bytes: bfloat16 inputs are fed as float32 and converted inside.
        fed = "float32" if operand.dtype == "bfloat16" else operand.dtype
        parameter = ov_opset.parameter(
            [-1 if size is None else size for size in operand.shape],
            OPENVINO_DTYPES[fed],
        )
        parameters.append(parameter)
        output = parameter.output(0)
        if operand.dtype == "bfloat16":
            output = ov_opset.convert(
                output, OPENVINO_DTYPES["bfloat16"]
            ).output(0)
        tensors.append(OpenVINOKerasTensor(output))
    if fixed:
        with keras_ov_einsum.enabled(**(parts or {})):
            result = keras.ops.einsum(equation, *tensors)
            explanation = keras_ov_einsum.explain()
    else:
        result = keras.ops.einsum(equation, *tensors)
        explanation = ()
    return Built(ov.Model([result.output], parameters), explanation)


def build_case(case, kernel, *, fixed, parts=None):
    """The model of an ``EinsumCase`` (see strategies.py)."""
    x = Input(
        tuple(
            None if dynamic else size
            for size, dynamic in zip(case.x_shape, case.dynamic)
        ),
        case.x_dtype,
    )
    k = Kernel(kernel, case.kernel_view)
    operands = (k, x) if case.kernel_first else (x, k)
    return build(case.equation, operands, fixed=fixed, parts=parts)


def case_arrays(case):
    """The input and kernel values of a case, always the same for it."""
    from .references import values

    return (
        values(case.x_shape, case.x_dtype, seed=1),
        values(case.kernel_shape, case.kernel_dtype, seed=2),
    )


def run(model, *arrays):
    """Compile for the CPU in float32 precision and run on ``arrays``."""
    fed = [
        array.astype("float32") if array.dtype.name == "bfloat16" else array
        for array in arrays
    ]
    return run_model(model, *fed)


def run_outputs(model, *arrays):
    """Every result of a float32 model, compiled in float32 precision."""
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    results = compiled(list(arrays))
    return [results[output] for output in compiled.outputs]


def result_dtype(model):
    """The Keras dtype of the model's (only) result."""
    return _RESULT_DTYPES[model.output(0).get_element_type().to_string()]


def constant_signature(model):
    """The (element type, shape) of every Constant, sorted: what a graph
    holds in weights, independent of node names."""
    return sorted(
        (
            node.get_output_element_type(0).to_string(),
            tuple(node.get_output_shape(0)),
        )
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Constant"
    )


def assert_no_new_weights(
    stock, fixed, *, small=SMALL_CONSTANT[1], scales=False, row_views=False
):
    """The fixed model holds every Constant of the stock one and, beyond
    them, only int64 shape and axis constants of at most ``small``
    elements: no copied weights. ``scales``: float32 scales of one row or
    one column (the int8 form's ones) are allowed too. ``row_views``: the
    int8 form cut an int8 kernel into Constants on views of its rows (no
    copy; test_int8 checks the buffers): those stand for the kernel, as
    many int8 elements as it has, and the shape constants of the
    kernel's Reshapes (the views are taken past them) need not stay."""
    added = collections.Counter(constant_signature(fixed))
    added.subtract(constant_signature(stock))
    if row_views:
        int8 = {sig: n for sig, n in added.items() if sig[0] == "i8" and n}
        elements = sum(n * math.prod(shape) for (_, shape), n in int8.items())
        assert any(n < 0 for n in int8.values()) and elements == 0, int8
        for signature in int8:
            del added[signature]
        for (kind, shape), n in list(added.items()):
            if n < 0 and kind in ("i32", "i64") and len(shape) <= 1:
                del added[(kind, shape)]
    lost = [signature for signature, n in added.items() if n < 0]
    assert not lost, f"the fixed graph lost stock constants {lost}"
    for (kind, shape), count in added.items():
        if count <= 0:
            continue
        if scales and kind == "f32":
            assert len(shape) == 2 and 1 in shape, shape
            continue
        assert kind == SMALL_CONSTANT[0], (kind, shape)
        assert len(shape) <= 1 and sum(shape) <= small, shape
