"""Build a scaled projection, stock and fixed, as Keras MultiHeadAttention
scales its query: ``multiply(EinsumDense(x), scale)``."""

import numpy as np

import keras_ov_einsum
from graphs import keras_parameter, patched

__all__ = [
    "multiply_after_projection",
    "numpy_scaled_projection",
    "scaled_projection",
]


def scaled_projection(
    scale,
    *,
    fixed,
    bias=True,
    also_read=False,
    dtype="float32",
    width=8,
    heads=2,
    head=4,
    split_heads=True,
    seed=0,
    parts=None,
):
    """EinsumDense('btd,dnh->btnh') on a [?, ?, width] Parameter into
    ``heads`` x ``head``, times ``scale``. Returns (model, explain(), layer).
    ``fixed``: built under ``enable(**parts)``.
    ``also_read``: something else reads the projection before the multiply
    (a second model output).
    ``split_heads=False``: EinsumDense('btd,de->bte') into ``heads * head``,
    whose lowered MatMul needs no Reshape after it."""
    import keras
    import openvino as ov

    keras.utils.set_random_seed(seed)
    if split_heads:
        equation, output_shape, bias_axes = (
            "btd,dnh->btnh",
            (None, heads, head),
            "nh",
        )
    else:
        equation, output_shape, bias_axes = (
            "btd,de->bte",
            (None, heads * head),
            "e",
        )
    layer = keras.layers.EinsumDense(
        equation,
        output_shape=output_shape,
        bias_axes=bias_axes if bias else None,
        bias_initializer="random_normal",
        dtype=dtype,
    )
    layer.build((None, None, width))
    parameter, x = keras_parameter([-1, -1, width], dtype)
    with patched(fixed, parts):
        projected = layer(x)
        # Read before the multiply: readers added later are not known then.
        other = keras.ops.negative(projected) if also_read else None
        scaled = keras.ops.multiply(
            projected, keras.ops.cast(scale, projected.dtype)
        )
        explanation = keras_ov_einsum.explain() if fixed else ()
    outputs = [scaled.output] + ([other.output] if also_read else [])
    return ov.Model(outputs, [parameter]), explanation, layer


# What a projection ends with: stock's Einsum, the lowered MatMul (and its
# Reshape), or the bias Add.
PROJECTION_OUTPUTS = {"Einsum", "MatMul", "Reshape", "Add"}


def multiply_after_projection(model):
    """Whether a Multiply reads (through Converts) a projection's output."""

    def source(value):
        while value.get_node().get_type_name() == "Convert":
            value = value.get_node().input_value(0)
        return value.get_node().get_type_name()

    return any(
        node.get_type_name() == "Multiply"
        and {source(node.input_value(i)) for i in (0, 1)} & PROJECTION_OUTPUTS
        for node in model.get_ordered_ops()
    )


def numpy_scaled_projection(layer, x, scale):
    import keras

    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    y = np.einsum(layer.equation, x.astype("float64"), kernel)
    if layer.bias is not None:
        y = y + keras.ops.convert_to_numpy(layer.bias)
    return y * scale
