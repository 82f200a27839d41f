"""Scale a projection's input, not its output, by a power of two.

Keras's ``MultiHeadAttention`` scales the projected query by
``1 / sqrt(key_dim)`` (0.125 for GPT-2's 64-wide heads):
``multiply(x @ W + b, s)``. OpenVINO's CPU plugin fuses that Multiply into
the query's FullyConnected layer, and the fused layer gets another kernel:
in keras-hub's generate graph a 1x1-convolution kernel in the prompt pass
and a brgemm one in the decoding step, each packing its own copy of the
query weights (24 x 4 MB for GPT-2 Medium), and both slower than the plain
FullyConnected kernel. ``(x * s) @ W + b * s`` is the same product with the
Multiply on the input row, which the plugin leaves outside the layer. When
``s`` is a power of two, scaling is exact in binary floating point (only
the exponent changes, barring overflow and underflow), so both forms give
the same numbers; any other scale is declined.

A scale that is infinite in the computation type is the one exception: the
plugin folds a Multiply by it after a MatMul into the layer's weights,
where each product with a zero input element is ``0 * inf``, and every
output comes out NaN. ``sign(x @ W + b) * inf`` is the same IEEE product,
and a Multiply the plugin cannot fold.
"""

import math

import openvino as ov
import openvino.opset13 as ov_opset

from ...core.graph import keras_result
from ...core.kernel import constant_source, is_constant_expression
from ...core.outcome import declined, lowered
from ...core.part import BackendHook, Part

__all__ = ["MULTIPLY", "PART", "lower_prescaled_projection", "rewrite_multiply"]

# Each type the part lowers: its name, and the exponents of its smallest
# and largest normal numbers (a power of two 2**k is a finite normal number
# of the type only within them).
_NORMAL_EXPONENTS = {
    ov.Type.f32: ("float32", -126, 127),
    ov.Type.bf16: ("bfloat16", -126, 127),
    ov.Type.f16: ("float16", -14, 15),
}


def lower_prescaled_projection(multiply):
    """Rebuild ``multiply(projection, scale)`` with the scale moved before
    the projection's MatMul.

    A projection is ``MatMul(x, kernel)``, optionally reshaped, plus an
    optional bias: the kernel a constant (a Keras variable), the bias
    computed from constants only, the scale a scalar constant. Returns None
    when ``multiply`` is not such a product (most are not; nothing to
    record), else an ``Outcome``: declined when the rewrite is not exact.
    """
    for product_index in (0, 1):
        scale = _scalar_constant(multiply.input_value(1 - product_index))
        projection = _projection(multiply.input_value(product_index))
        if scale is not None and projection is not None:
            break
    else:
        return None
    matmul, reshape, bias = projection
    x = matmul.input_value(0)
    element_type = x.get_element_type()
    if (
        element_type not in _NORMAL_EXPONENTS
        or multiply.get_output_element_type(0) != element_type
    ):
        return declined("the projection and its scale differ in type")
    if _infinite_in(scale, element_type):
        return _signed_infinity(multiply, product_index, scale)
    unsafe = _unsafe_scale(scale, element_type)
    if unsafe is not None:
        return declined(unsafe)
    factor = ov_opset.constant(scale, element_type).output(0)
    attributes = matmul.get_attributes()
    output = ov_opset.matmul(
        ov_opset.multiply(x, factor),
        matmul.input_value(1),
        attributes["transpose_a"],
        attributes["transpose_b"],
    ).output(0)
    if reshape is not None:
        output = ov_opset.reshape(
            output,
            reshape.input_value(1),
            reshape.get_attributes()["special_zero"],
        ).output(0)
    if bias is not None:
        bias = ov_opset.multiply(bias, factor).output(0)
        output = ov_opset.add(output, bias).output(0)
    return lowered(
        output,
        f"MatMul on the input scaled by {scale:g} (a power of two), bias "
        "scaled: no Multiply after the projection",
    )


def _signed_infinity(multiply, product_index, scale):
    """``multiply(projection, scale)``, ``scale`` +-inf in its type, as
    ``multiply(sign(projection), scale)``: inf times a nonzero number is
    the infinity of its sign, times zero NaN, so the values are the same.
    The Sign keeps the CPU plugin from folding the Multiply into the
    MatMul's weights (tests/test_openvino_bugs.py)."""
    operands = [
        ov_opset.sign(multiply.input_value(product_index)).output(0),
        multiply.input_value(1 - product_index),
    ]
    if product_index == 1:
        operands.reverse()
    return lowered(
        ov_opset.multiply(*operands).output(0),
        f"Sign(projection) * {scale:g} (infinite): the CPU plugin would "
        "fold the Multiply into the MatMul's weights, every output NaN",
    )


def _projection(value):
    """(MatMul, Reshape or None, bias or None) when ``value`` is a constant-
    kernel projection whose result nothing else reads, else None. Looks
    through the type-preserving Converts keras inserts between ops."""
    value = _skip_noop_converts(value)
    bias = None
    node = value.get_node()
    if node.get_type_name() == "Add" and _only_reader(value):
        for index in (0, 1):
            # A bias a Keras initializer made (zeros: a Broadcast of a
            # Constant) is an expression of constants, not a Constant.
            if is_constant_expression(node.input_value(1 - index)):
                bias = node.input_value(1 - index)
                value = _skip_noop_converts(node.input_value(index))
                break
        else:
            return None
    reshape = None
    if value.get_node().get_type_name() == "Reshape" and _only_reader(value):
        reshape = value.get_node()
        value = _skip_noop_converts(reshape.input_value(0))
    matmul = value.get_node()
    if (
        matmul.get_type_name() != "MatMul"
        or not _only_reader(value)
        or constant_source(matmul.input_value(1)) is None
        or constant_source(matmul.input_value(0)) is not None
    ):
        return None
    return matmul, reshape, bias


def _only_reader(value):
    """Whether one operation reads ``value`` (so the unscaled result can go:
    a second reader would keep a second MatMul on the same kernel)."""
    return len(value.get_target_inputs()) == 1


def _skip_noop_converts(value):
    """Step back through Converts to the same type that only one operation
    reads (keras's operand alignment adds them)."""
    while (
        value.get_node().get_type_name() == "Convert"
        and value.get_node().input_value(0).get_element_type()
        == value.get_element_type()
        and _only_reader(value)
    ):
        value = value.get_node().input_value(0)
    return value


def _scalar_constant(value):
    node = value.get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    data = node.get_data()
    if data.size != 1 or data.dtype.kind != "f":
        return None
    return float(data.ravel()[0])


def _is_power_of_two(scale):
    if scale == 0 or not math.isfinite(scale):
        return False
    mantissa, _ = math.frexp(abs(scale))
    return mantissa == 0.5


def _infinite_in(scale, element_type):
    """Whether ``scale`` (as stored) is +-inf in ``element_type``: infinite
    already, or at least 2**(largest exponent + 1). A scale just below
    that which rounds to inf is not caught: it stays declined."""
    largest = _NORMAL_EXPONENTS[element_type][2]
    return math.isinf(scale) or (
        math.isfinite(scale) and abs(scale) >= 2.0 ** (largest + 1)
    )


def _unsafe_scale(scale, element_type):
    """Why scaling the input by ``scale`` might not give the scaled
    product's numbers in ``element_type``, or None when it does.

    ``scale`` is the constant as stored, before any Convert to the
    computation type: a power of two there may be subnormal in that type
    (2**-30 in float16), or infinite (2**16 in float16: those are
    ``_signed_infinity``'s), and an infinite scale on the input would give
    NaN everywhere (inf * 0, inf - inf inside the sum) where stock's scaled
    result is +-inf. Scaling by 2**k is exact only while no value
    leaves the type's normal range: an input within 2**|k| of its largest
    (smallest normal) magnitude overflows (turns subnormal) where the
    scaled product, after a kernel that shrinks (grows) it, would not. No
    input range is known here, so only scales within the square root of
    the range are lowered: those move out of range only values already
    beyond the square root of the type's limits.
    """
    type_name, smallest, largest = _NORMAL_EXPONENTS[element_type]
    if math.isnan(scale):
        return "the scale is not a number (NaN)"
    if not _is_power_of_two(scale):
        return (
            f"the scale {scale:g} is not a power of two: scaling the input "
            "instead would round differently"
        )
    exponent = math.frexp(abs(scale))[1] - 1
    if not smallest <= exponent <= largest:
        return (
            f"the scale 2**{exponent} is not a normal {type_name} number "
            "(infinite or subnormal there): scaling the input by it gives "
            "NaN or zeros where stock's scaled result does not"
        )
    if not smallest // 2 <= exponent <= largest // 2:
        return (
            f"the scale 2**{exponent} can overflow or underflow {type_name} "
            "on the input where the scaled result would not (only scales "
            f"2**{smallest // 2} to 2**{largest // 2} are lowered)"
        )
    return None


def rewrite_multiply(result, x1, x2):
    multiply = result.output.get_node()
    if multiply.get_type_name() != "Multiply":
        return None
    return keras_result(lower_prescaled_projection(multiply))


MULTIPLY = BackendHook("numpy.multiply")

PART = Part(
    name="prescale",
    summary="attention's power-of-two query scale applied before the "
    "projection: exact, and kept out of it",
    hooks=(MULTIPLY,),
    rewrite=rewrite_multiply,
    label="multiply(x @ kernel + bias, scale)",
    sources=("core/kernel.py", "parts/ops/prescale.py"),
)
