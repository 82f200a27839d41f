"""Opt-in, with the int8 part: keras's default int8 layers built whole.

Keras's ``quantize("int8")`` ``EinsumDense`` and ``Dense`` quantize their
inputs inside the graph (``AbsMaxQuantizer``: a scale a row, ``127 /
(max |x| + epsilon)``, the inputs scaled, rounded, clipped and cast to
int8), multiply them by the int8 kernel and divide the product by both
scales: ~16 keras operations a layer, each through keras's type promotion,
and the einsum's int32 promotion and back. Tracing them is what makes the
int8 step model's trace longer than float32's.

Here the layer is built in one go from the same arithmetic in the same
order: ``Abs``, ``ReduceMax``, the ``Add`` of epsilon and the ``Divide``
of 127 by it make the scale; ``Multiply``, ``Round`` (half to even),
``Maximum``, ``Minimum`` and the int8 ``Convert`` the quantized inputs;
the int8 part's exact product on the int8 kernel, kept float32 where it is
exact in float32 (one part of K: keras's int32 round trip changes no
value there); the inputs' scale laid out as the outputs (keras 3.15: the
layer's ``_adjust_scale_for_quant``; keras 3.16: its quantization
geometry, which also names the quantized axes), the ``Multiply`` of the
two scales, its operands in the installed keras's order, and the
``Divide``; then keras's bias and activation as stock adds them. The
results are stock's bit for bit where the int8 part's are (the tests
compare them): fewer nodes to trace and compile, the same decoding step
(the CPU plugin merges the identical quantizations of one input, query,
key and value, itself).

Inside keras-hub's ``generate()`` on a CPU whose int8 dot products sum in
int32 without saturating (VNNI, AMX), the product is the plugin's int8
FullyConnected instead (``int8.int8_dot_product``: a FakeQuantize that
maps each int8 value to itself marks the inputs int8): the same integer
sums, one layer whatever K, the plugin's int8 kernels. A model with a
FakeQuantize is compiled by the plugin's low-precision pipeline, which
turns divisions into multiplications by reciprocals: the layers'
de-scaling and the model's other divisions round differently from stock's
(one float32 ulp here and there), so this form is kept to ``generate()``,
whose results are token ids (the tests compare them with stock's), as the
attention and layer_norm parts are. Elsewhere, and on CPUs whose int8
products saturate, the exact float32 form above. What each form measured:
docs/native-gap.md and docs/parts.md.

Declined, with the reason, and built by stock and the int8 part as
before: another quantizer or value range, LoRA, a compute type other than
float32, an eager call, a quantization geometry of the layer's own (keras
3.16), and the einsums the int8 part does not lower.
"""

import functools

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset

from ...core import backend
from ...core.context import GENERATE, inside_generate
from ...core.outcome import declined, lowered
from ...core.part import FirstOf, Hook, Part
from ...einsum.build import plan_einsum
from .int8 import (
    MAX_INT32_CONTRACTION,
    exact_int8_product,
    int8_dot_product,
    not_fully_connected,
)

__all__ = [
    "DENSE",
    "EINSUM_DENSE",
    "PART",
    "replace_int8_layer",
    "sums_int8_in_int32",
]

# Instruction sets whose int8 dot products accumulate in int32 without an
# int16 intermediate. Where vpmaddubsw is all there is, it saturates pairs
# of products at 2**15, and oneDNN halves the weights.
_INT32_DOT_PRODUCTS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _layer_operands(layer, inputs, *args, **kwargs):
    return (inputs, layer._kernel)


def _as_layer_call(strategy, layer, inputs, training=None):
    """keras 3.16's ``Int8Strategy._call_projection(layer, inputs,
    training)`` read as keras 3.15's ``layer._int8_call(inputs,
    training)``."""
    return (layer, inputs), {"training": training}


# keras 3.16 moved both layers' int8 forward into the int8 mode's strategy
# (reached through ``Layer.quantized_call``): one function for both layers.
_PROJECTION = Hook(
    "keras.src.quantizers.modes.int8",
    "Int8Strategy._call_projection",
    _layer_operands,
    arguments=_as_layer_call,
)
EINSUM_DENSE = FirstOf(
    (
        Hook(
            "keras.src.layers.core.einsum_dense",
            "EinsumDense._int8_call",
            _layer_operands,
        ),
        _PROJECTION,
    )
)
DENSE = FirstOf(
    (
        Hook(
            "keras.src.layers.core.dense", "Dense._int8_call", _layer_operands
        ),
        _PROJECTION,
    )
)


def _is_its_case(layer):
    """A quantized layer that quantizes its inputs (weights-only int8 has
    no inputs quantizer: the int8 part lowers its einsum alone)."""
    return getattr(layer, "inputs_quantizer", None) is not None


def _geometry(layer):
    """The layer's quantization geometry (keras 3.16 and later: how the
    int8 strategy contracts its kernel and lays out its scales), or None
    (keras 3.15: the layer's own ``_int8_call`` does)."""
    geometry = getattr(layer, "_quantization_geometry", None)
    return None if geometry is None else geometry()


def _is_einsum(layer, geometry):
    if geometry is None:
        return hasattr(layer, "equation")
    from keras.src.quantizers.geometry import EinsumProjectionGeometry

    return isinstance(geometry, EinsumProjectionGeometry)


def _why_not(layer, inputs, geometry):
    """Why this int8 layer call is left to stock and the int8 part, or
    None."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")
    from keras.src.quantizers.quantizers import AbsMaxQuantizer

    if geometry is not None:
        from keras.src.quantizers import geometry as geometries

        # A geometry of the layer's own may contract or align otherwise.
        if type(geometry) not in (
            geometries.ProjectionGeometry,
            geometries.EinsumProjectionGeometry,
        ):
            name = type(geometry).__name__
            return f"a quantization geometry of its own ({name})"
    quantizer = layer.inputs_quantizer
    if type(quantizer) is not AbsMaxQuantizer:
        return f"inputs quantized by {type(quantizer).__name__}"
    if (
        tuple(quantizer.value_range) != (-127, 127)
        or quantizer.output_dtype != "int8"
    ):
        return (
            f"inputs quantized to {quantizer.output_dtype} in "
            f"{tuple(quantizer.value_range)}, not int8 in (-127, 127)"
        )
    if layer.lora_enabled:
        return "LoRA is enabled"
    if layer.compute_dtype != "float32":
        return f"compute type {layer.compute_dtype}"
    if not isinstance(inputs, OpenVINOKerasTensor):
        return "the inputs are no traced tensor (an eager call)"
    if inputs.output.get_element_type() != ov.Type.f32:
        return f"inputs of {inputs.output.get_element_type().get_type_name()}"
    rank = inputs.output.get_partial_shape().rank
    if not _is_einsum(layer, geometry) and (
        rank.is_dynamic or not 2 <= rank.get_length() <= 9
    ):
        return "inputs of a dynamic rank or above 9"
    return None


def _inputs_axes(layer, geometry):
    """The axes the inputs quantizer reduces over."""
    if geometry is not None:
        axes = geometry.inputs_quantization_axis
    elif hasattr(layer, "equation"):
        axes = layer.quantization_axis
    else:
        axes = -1
    return (axes,) if isinstance(axes, int) else tuple(axes)


def _output_scale(layer, geometry, inputs_scale, kernel_scale):
    """What the product is divided by: the inputs' scale laid out as the
    outputs times the kernel's, as the installed keras builds it (its
    operands in its order)."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if geometry is not None:
        # keras 3.16: the kernel's scale is stored in the outputs' layout.
        aligned = geometry.align_inputs_scale(OpenVINOKerasTensor(inputs_scale))
        return ov_opset.multiply(aligned.output, kernel_scale)
    if hasattr(layer, "equation"):
        aligned = layer._adjust_scale_for_quant(
            OpenVINOKerasTensor(inputs_scale), "input"
        )
        return ov_opset.multiply(aligned.output, kernel_scale)
    return ov_opset.multiply(kernel_scale, inputs_scale)


def replace_int8_layer(layer, inputs, training=None):
    """The int8 layer's output built whole (the module docstring), or None:
    stock and the int8 part build it (the rewrite records why, the int8
    part its einsum's own decision)."""
    if not _is_its_case(layer):
        return None
    geometry = _geometry(layer)
    if _why_not(layer, inputs, geometry):
        return None
    from keras import ops

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    x = inputs.output
    kernel = ops.convert_to_tensor(layer._kernel).output
    if _is_einsum(layer, geometry):
        equation = layer.equation
    else:
        rows = "abcdefgh"[: x.get_partial_shape().rank.get_length() - 1]
        equation = f"{rows}k,kn->{rows}n"
    quantizer = layer.inputs_quantizer
    low, high = quantizer.value_range
    # AbsMaxQuantizer's arithmetic, in its order and its float32 constants.
    magnitude = ov_opset.reduce_max(
        ov_opset.abs(x),
        ov_opset.constant(list(_inputs_axes(layer, geometry)), ov.Type.i32),
        True,
    )
    scale = ov_opset.divide(
        _float32(high), ov_opset.add(magnitude, _float32(quantizer.epsilon))
    ).output(0)
    rounded = ov_opset.round(ov_opset.multiply(x, scale), "half_to_even")
    clipped = ov_opset.minimum(
        ov_opset.maximum(rounded, _float32(low)), _float32(high)
    )
    quantized = ov_opset.convert(
        ov_opset.convert(clipped, ov.Type.i8), ov.Type.f32
    ).output(0)
    # Planned on float32 operands (plan_einsum wants one element type); the
    # Convert is built for the plan only and reaches no result.
    kernel_as_float = ov_opset.convert(kernel, ov.Type.f32).output(0)
    planned = plan_einsum(equation, [quantized, kernel_as_float])
    if not planned or not_fully_connected(planned.plan):
        return None  # the int8 part records why, on stock's einsum
    if (
        inside_generate()
        and sums_int8_in_int32()
        and planned.plan.contracted_size <= MAX_INT32_CONTRACTION
    ):
        product, described = int8_dot_product(planned.plan, quantized, kernel)
    else:
        product, described = exact_int8_product(
            planned.plan, quantized, kernel, as_float=True
        )

    kernel_scale = ops.convert_to_tensor(layer.kernel_scale).output
    scales = _output_scale(layer, geometry, scale, kernel_scale)
    y = OpenVINOKerasTensor(ov_opset.divide(product, scales).output(0))
    if layer.bias is not None:
        y = ops.add(y, layer.bias)
    if layer.activation is not None:
        y = layer.activation(y)
    return lowered(y, f"int8 layer built whole: inputs quantized, {described}")


@functools.cache
def sums_int8_in_int32():
    """Whether this CPU's int8 dot products sum in int32 exactly (VNNI,
    AMX; read from /proc/cpuinfo, False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(f in flags for f in _INT32_DOT_PRODUCTS)
    except OSError:
        pass
    return False


def _float32(value):
    return ov_opset.constant(np.float32(value))


def rewrite_int8_layer(result, layer, inputs, *args, **kwargs):
    """After stock: why the layer was not built whole (its einsum's own
    decision is recorded beside it), or None when it is not its case."""
    if not _is_its_case(layer):
        return None
    reason = _why_not(layer, inputs, _geometry(layer))
    return declined(reason) if reason else None


def _label(layer, *args, **kwargs):
    if hasattr(layer, "equation"):
        return f"{type(layer).__name__} int8 {layer.equation}"
    return f"{type(layer).__name__} int8 matmul(x, kernel)"


PART = Part(
    name="int8_layers",
    summary="keras's default int8 EinsumDense and Dense built whole: stock's "
    "arithmetic in fewer nodes",
    hooks=(EINSUM_DENSE, DENSE),
    rewrite=rewrite_int8_layer,
    replace=replace_int8_layer,
    label=_label,
    default=False,
    requires=("int8",),
    wraps=(GENERATE,),
)
