"""Opt-in: keep Keras's int8 kernels int8 through the lowering.

Keras's ``quantize("int8")`` EinsumDense computes ``einsum(x, kernel)`` on
int8 activations and an int8 kernel; its OpenVINO ``einsum`` promotes both
to int32, and OpenVINO folds the kernel's Convert into an int32 constant:
four bytes a weight, repacked as float32 by the CPU plugin, whose MatMul
has no int32 kernel. Here the product is a float32 MatMul on the int8
constant behind ``Convert`` and a ``Multiply`` by ones, the weight
decompression pattern the plugin keeps compressed (its FullyConnected
layer reads the int8 weights), converted back to int32. Keras's quantized
``Dense`` (``matmul(x, kernel)``) is lowered the same way.

The result is the exact integer product (NumPy's), so stock's int32 result
bit for bit wherever stock's own float32 sums are exact (always for
K <= 1024), when two things hold:

- every partial sum is an integer float32 holds exactly: an int8 x int8
  product is at most 128 * 128 = 2**14 in size, so a contraction of
  K <= 2**24 / 2**14 = 1024 terms never rounds, in any order. A longer one
  (a feed-forward layer's down projection) is split along K into parts of
  at most 1024, each its own MatMul, summed in int32. (Stock computes its
  int32 MatMul as a float32 FullyConnected: beyond 2**24 it rounds, e.g.
  33032192 for 33032193; this form does not.)
- the plugin computes the layer in float32: no dynamic quantization of its
  activations (on by default for int8 weights), no bfloat16 (the default
  precision on CPUs with bfloat16 units). ``compile_options`` asks for both
  (``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``, ``INFERENCE_PRECISION_HINT=f32``,
  which keras-hub sets for int8 models) when a model holds such a layer
  and the caller set nothing else, on any device that may be the CPU
  (AUTO, HETERO and MULTI hand them on); the opt-in dynamic_quantization
  part leaves the first to the plugin where every int8 layer is a
  weights-only one. Compile while enabled: the graph cannot carry them
  (``COMPILE_OPTIONS_WARNING``).

Weights-only int8 (``quantize("int8", config=Int8QuantizationConfig(
activation_quantizer=None))``, the form of OpenVINO's own int8 IRs)
multiplies float32 inputs by the int8 kernel: stock folds the promoted
kernel into a float32 copy. Here the kernel stays int8 behind the same
pattern and the product is stock's float32 MatMul, summed by the plugin's
int8-weight kernel: stock's within float32 rounding, not bit for bit.

An int8 ``ReversibleEmbedding``'s tied logits, ``matmul(x,
transpose(embeddings))`` (keras-hub's GPT-2 and Gemma heads), get either
form on the untransposed table: stock folds the transpose into a float32
copy, which every decoding step reads whole (docs/native-gap.md has its
share of a step). Int8 einsums that are batched MatMuls (no
FullyConnected layer) or sum an operand first get the ordinary lowering,
with the reason recorded.
"""

import functools
import logging
import warnings

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset

from ...core.extension import extended
from ...core.graph import keras_result, stock_node
from ...core.kernel import matrix_view
from ...core.outcome import declined, lowered
from ...core.part import ExtensionPoint, Hook, Part
from ...einsum.build import (
    build_matmul,
    int64_constant,
    lay_out_kernel,
    plan_einsum,
)
from ..ops.einsum import EINSUM
from ..ops.matmul import MATMUL, transposed_constant, untransposed_decline

__all__ = [
    "COMPILE_OPTIONS_WARNING",
    "DYNAMIC_QUANTIZATION",
    "FORM_MARK",
    "MAX_EXACT_CONTRACTION",
    "MAX_INT32_CONTRACTION",
    "PART",
    "PLUGIN_MAY_QUANTIZE",
    "PRECISION",
    "READ_BACK",
    "WEIGHTS_ONLY",
    "compile_options",
    "compile_wrapper",
    "exact_int8_product",
    "int8_dot_product",
    "lower_int8",
    "lower_int8_matmul",
    "not_fully_connected",
    "rewrite_int8",
]

logger = logging.getLogger("keras_ov_einsum")


# float32 holds every integer up to 2**24; an int8 x int8 product is at most
# 2**14 in size (-128 * -128): one float32 MatMul sums at most this many
# products exactly. A longer contraction is cut into parts of this size.
MAX_EXACT_CONTRACTION = 2**24 // 2**14
DYNAMIC_QUANTIZATION = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
PRECISION = "INFERENCE_PRECISION_HINT"
_EXACT_OPTIONS = {DYNAMIC_QUANTIZATION: 0, PRECISION: "f32"}
# Said once a process, when the first int8 form is built: the graph cannot
# carry the options (the CPU plugin reads DYNAMIC_QUANTIZATION_GROUP_SIZE
# from a model's rt_info, but not the precision hint, and HETERO drops it;
# rt_info set on nodes from Python is not saved), so a model saved or
# exported from it is exact only where its compiler passes them.
COMPILE_OPTIONS_WARNING = (
    "keras_ov_einsum: int8 layers kept int8 are exact only when compiled "
    "with INFERENCE_PRECISION_HINT=f32 and DYNAMIC_QUANTIZATION_GROUP_SIZE=0."
    " compile_model adds both while enable(int8=True) is on; a model saved "
    "or exported from this graph and compiled otherwise (a plain Core, "
    "another process) needs the caller to pass them, or its int8 results "
    "may be rounded"
)
# Marks the node that makes a kernel an int8 (or, the int4 part's, a 4-bit)
# FullyConnected weight, so that
# ``compile_options`` finds the models that hold one, with the form: an int8
# x int8 product (exact only without dynamic quantization) or a weights-only
# layer's (float32 inputs, which the dynamic_quantization part lets the
# plugin quantize, as OpenVINO's own pipeline does).
FORM_MARK = "keras_ov_einsum_int8"
_INT8_PRODUCT = "int8 product"
WEIGHTS_ONLY = "weights only"
READ_BACK = "read back"  # no mark: its form cannot be told
# Where a part may let the CPU plugin quantize an int8 model's inputs:
# pass_(next, forms) -> bool, ``forms`` the model's int8 forms (the marks
# WEIGHTS_ONLY, READ_BACK...).
PLUGIN_MAY_QUANTIZE = ExtensionPoint(
    "int8.plugin_may_quantize",
    "whether a model holding these int8 forms compiles with the plugin's "
    "dynamic quantization (default: no, for exact results)",
)


def lower_int8(planned):
    """Build a ``Planned`` einsum with an int8 kernel in the int8 form.

    Returns ``None`` when its kernel is not an int8 kernel promoted by stock
    (nothing to add), else an ``Outcome``: lowered in the int8 form, or
    declined with the reason the int8 form does not apply (the einsum part
    then lowers it as usual). Two products qualify: int8 x int8 (keras's
    default int8 layers quantize their inputs; stock promotes both to
    int32) and float32 x int8 (``Int8QuantizationConfig(
    activation_quantizer=None)``, int8 weights only; stock promotes the
    kernel to float32).
    """
    variable_source = _int8_source(planned.variable, ov.Type.i32)
    kernel_source = _int8_source(planned.kernel, ov.Type.i32)
    if variable_source is not None and kernel_source is not None:
        return _lower_int8_product(planned, variable_source, kernel_source)
    kernel_source = _int8_source(planned.kernel, ov.Type.f32)
    if (
        kernel_source is not None
        and planned.variable.get_element_type() == ov.Type.f32
    ):
        return _lower_int8_weights(planned, kernel_source)
    return None


def not_fully_connected(plan):
    """Why ``plan`` is no FullyConnected layer, or None."""
    if plan.batch:
        return "a batched MatMul is not a FullyConnected layer"
    if plan.variable_summed_axes or plan.kernel_summed_axes:
        return "an operand is summed over before the MatMul"
    return None


def _decompressed(kernel, plan, form=_INT8_PRODUCT):
    """``Convert(kernel) * ones``: the weight decompression pattern the CPU
    plugin keeps int8 (a scale of ones: exact); with no Multiply it folds
    the Convert into a float32 copy, four bytes a weight. Marked with its
    ``form`` (``compile_options`` reads it)."""
    ones = np.ones(plan.columns_size, np.float32)
    scale = ov_opset.constant(
        ones.reshape((-1, 1) if plan.transpose_b else (1, -1))
    )
    weights = ov_opset.multiply(ov_opset.convert(kernel, ov.Type.f32), scale)
    weights.get_rt_info()[FORM_MARK] = form
    return weights


def _lower_int8_weights(planned, kernel_source):
    """float32 x int8 kernel: stock's float32 MatMul, on the int8 kernel
    decompressed inside the layer instead of a float32 copy of it."""
    plan = planned.plan
    reason = not_fully_connected(plan)
    if reason:
        return declined(reason)
    kernel = lay_out_kernel(kernel_source, plan)

    def product(x, kernel, transpose_b):
        weights = _decompressed(kernel, plan, WEIGHTS_ONLY)
        return ov_opset.matmul(x, weights, False, transpose_b).output(0)

    output = build_matmul(plan, planned.variable, kernel, product)
    warnings.warn(COMPILE_OPTIONS_WARNING, UserWarning, stacklevel=2)
    return lowered(
        output, f"{plan.describe()}, int8 kernel kept int8 (weights only)"
    )


def _lower_int8_product(planned, variable_source, kernel_source):
    """int8 x int8: the exact integer product, in float32 MatMuls on the
    int8 kernel (parts of K at most ``MAX_EXACT_CONTRACTION``)."""
    plan = planned.plan
    reason = not_fully_connected(plan)
    if reason:
        return declined(reason)
    variable = ov_opset.convert(variable_source, ov.Type.f32).output(0)
    output, described = exact_int8_product(plan, variable, kernel_source)
    return lowered(output, described)


def exact_int8_product(plan, variable, kernel_source, as_float=False):
    """``plan``'s MatMul of ``variable`` (float32 holding int8 values) and
    the int8 ``kernel_source``: the exact integer product, int32, and what
    was built. ``as_float``: float32 instead, which holds the product
    exactly when K takes one part (no int32 round trip); several parts are
    summed in int32 and converted."""
    kernel = lay_out_kernel(kernel_source, plan)
    # Read at call time, so that tests can make the parts small.
    parts = _split_sizes(plan.contracted_size, MAX_EXACT_CONTRACTION)
    row_views = None
    if len(parts) > 1 and not plan.transpose_b:
        row_views = _row_views(kernel, parts)

    def exact_product(x, kernel, transpose_b):
        """sum over parts of K of int32(x_part @ kernel_part), each part a
        float32 MatMul on an int8 kernel, exact; summed in int32."""
        if len(parts) == 1:
            weights = _decompressed(kernel, plan)
            y = ov_opset.matmul(x, weights, False, transpose_b).output(0)
            if as_float:
                return y
            return ov_opset.convert(y, ov.Type.i32).output(0)
        lengths = int64_constant(parts)
        x_parts = ov_opset.variadic_split(
            x, int64_constant(-1), lengths
        ).outputs()
        kernel_parts = row_views
        if kernel_parts is None:
            axis = int64_constant(-1 if transpose_b else -2)
            kernel_parts = ov_opset.variadic_split(
                kernel, axis, lengths
            ).outputs()
        total = None
        for x_part, kernel_part in zip(x_parts, kernel_parts):
            weights = _decompressed(kernel_part, plan)
            y = ov_opset.matmul(x_part, weights, False, transpose_b)
            y = ov_opset.convert(y, ov.Type.i32).output(0)
            total = y if total is None else ov_opset.add(total, y).output(0)
        if as_float:
            return ov_opset.convert(total, ov.Type.f32).output(0)
        return total

    output = build_matmul(plan, variable, kernel, exact_product)
    warnings.warn(COMPILE_OPTIONS_WARNING, UserWarning, stacklevel=2)
    described = f"{plan.describe()}, int8 kernel kept int8"
    if len(parts) > 1:
        described += f" in {len(parts)} exact parts of K " + (
            "(split: a copy of its int8 bytes)"
            if row_views is None
            else "(views of its rows, no copy)"
        )
    return output, described


# An int8 x int8 sum of K terms stays within int32 up to this K (each
# product at most 2**14 in size).
MAX_INT32_CONTRACTION = 2**31 // 2**14


def int8_dot_product(plan, variable, kernel_source):
    """``plan``'s MatMul of ``variable`` (float32 holding int8 values) and
    the int8 ``kernel_source`` as the CPU plugin's int8 FullyConnected: a
    FakeQuantize that maps every int8 value to itself marks ``variable``
    int8, and the plugin sums the products in int32 with its int8 dot
    products, one layer whatever K (up to ``MAX_INT32_CONTRACTION``); its
    float32 output is the int32 sum rounded once. Exact only where those
    dot products cannot saturate (VNNI, AMX: the caller checks). A model
    holding a FakeQuantize is compiled by the plugin's low-precision
    pipeline, which turns the model's divisions into multiplications by
    a reciprocal: float32 rounding elsewhere in the model moves too.
    Returns (float32 output, what was built)."""
    kernel = lay_out_kernel(kernel_source, plan)
    low = ov_opset.constant(np.float32(-128))
    high = ov_opset.constant(np.float32(127))

    def product(x, kernel, transpose_b):
        marked = ov_opset.fake_quantize(x, low, high, low, high, 256)
        weights = _decompressed(kernel, plan)
        return ov_opset.matmul(marked, weights, False, transpose_b).output(0)

    output = build_matmul(plan, variable, kernel, product)
    warnings.warn(COMPILE_OPTIONS_WARNING, UserWarning, stacklevel=2)
    return output, (
        f"{plan.describe()}, int8 kernel kept int8, summed in int32 by the "
        "CPU's int8 dot products"
    )


def _split_sizes(size, largest):
    """``size`` cut into as few parts of at most ``largest`` as possible."""
    count = -(-size // largest)
    return [largest] * (count - 1) + [size - largest * (count - 1)]


def _row_views(kernel, parts):
    """The [K, N] int8 kernel's parts of K as Constants on runs of its rows,
    which lie one after the other in the variable's buffer: no copy. A
    VariadicSplit of the Constant (the other way) is folded into new
    Constants when the model compiles, a copy of the int8 bytes
    (docs/native-gap.md, "Memory"). None when the kernel is no Constant
    behind Reshapes."""
    matrix = matrix_view(kernel)
    if matrix is None:
        return None
    bounds = np.cumsum([0, *parts])
    return [
        ov.op.Constant(matrix[start:stop], shared_memory=True).output(0)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def lower_int8_matmul(matmul):
    """``lower_int8`` for keras's ``matmul(x, kernel)`` (a quantized
    ``Dense``): the same product as the einsum ``...k,kn->...n``; and for
    ``matmul(x, transpose(kernel))`` (an int8 ``ReversibleEmbedding``'s
    tied logits: int8 ``x`` by default, float32 ``x`` weights-only) the
    einsum ``...k,nk->...n`` on the untransposed kernel, as the matmul part
    builds it."""
    attributes = matmul.get_attributes()
    if attributes["transpose_a"] or attributes["transpose_b"]:
        return None
    x, kernel = matmul.input_value(0), matmul.input_value(1)
    x_rank = x.get_partial_shape().rank
    if x_rank.is_dynamic or kernel.get_partial_shape().rank != 2:
        return None
    rows = "abcdefgh"[: x_rank.get_length() - 1]
    if len(rows) != x_rank.get_length() - 1:
        return None
    untransposed = _transposed_int8_kernel(x, kernel)
    if untransposed is None:
        planned = plan_einsum(f"{rows}k,kn->{rows}n", [x, kernel])
    else:
        promoted = ov_opset.convert(untransposed, x.get_element_type())
        planned = plan_einsum(f"{rows}k,nk->{rows}n", [x, promoted.output(0)])
    if not planned:
        return None  # stock's MatMul stays, as without the int8 part
    return lower_int8(planned)


def _transposed_int8_kernel(x, kernel):
    """The int8 [N, K] Constant behind ``kernel`` = promoted(transpose(it))
    when ``x`` is float32 (the kernel promoted to float32) or int8 promoted
    to int32 (both promoted to int32), else None: the form the matmul part
    would feed untransposed (a kernel it declines, a square one, is left to
    it)."""
    found = transposed_constant(kernel)
    if found is None:
        return None
    promoted = x.get_element_type()
    if promoted != ov.Type.f32 and _int8_source(x, ov.Type.i32) is None:
        return None
    convert, transpose, data = found
    if (
        convert is None
        or convert.get_output_element_type(0) != promoted
        or data.get_element_type() != ov.Type.i8
        or untransposed_decline(transpose, data)
    ):
        return None
    return data


def compile_options(model, device_name, config):
    """``config`` for compiling ``model`` on ``device_name``.

    When the model holds an int8 lowering (built here, or read back from a
    saved or exported IR) and the device may be the CPU (where this is
    measured: "CPU", no device, "AUTO", "HETERO:CPU", "MULTI:...,CPU",
    ...; the virtual devices hand the options on to the CPU), the two
    settings its exactness needs are added where the caller set nothing:
    dynamic quantization off, and float32 inference precision (under
    bfloat16, the CPU default where it has bfloat16 units, the layer's
    output is rounded to bfloat16; stock's int32 MatMul is not). A caller's
    own value stands, with a warning when it rounds; a device that cannot
    be the CPU gets a warning that the form's exactness is not measured
    there.
    """
    # ``openvino.compile_model`` hands on the ov.Model's inner pybind model:
    # anything with ops is a model here; a path is not.
    forms = _int8_forms(model) if hasattr(model, "get_ops") else set()
    if not forms:
        return config
    if not _may_run_on_cpu(device_name):
        logger.warning(
            "a model with int8 layers kept int8 is compiled for %s: their "
            "exactness is measured on the CPU only",
            device_name,
        )
        return config
    config = dict(config or {})
    options = dict(_EXACT_OPTIONS)
    if _plugin_may_quantize(forms):
        del options[DYNAMIC_QUANTIZATION]
    for key, exact in options.items():
        if key not in config:
            config[key] = exact
        elif _option_text(config[key]) not in (str(exact), "float32"):
            logger.warning(
                "a model with int8 layers kept int8 is compiled with %s=%s: "
                "their results are rounded (exact with %s)",
                key,
                config[key],
                exact,
            )
    return config


# Virtual devices that compile on the devices they list ("HETERO:GPU,CPU"),
# or on any device when they list none ("AUTO").
_VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")


def _may_run_on_cpu(device_name):
    """Whether ``device_name`` can compile on the CPU: no device (OpenVINO's
    default picks one), the CPU, or a virtual device listing it or none."""
    if device_name is None:
        return True
    name, _, listed = str(device_name).upper().partition(":")
    if name.startswith("CPU"):
        return True
    if name not in _VIRTUAL_DEVICES:
        return False
    if not listed:
        return True
    # "AUTO:GPU,CPU", "MULTI:CPU(2),GPU(2)", "BATCH:CPU(4)"
    return any(device.strip().startswith("CPU") for device in listed.split(","))


def _option_text(value):
    """ "f32" for ov.Type.f32 as for the string; "0" for 0."""
    if hasattr(value, "to_string"):
        return value.to_string()
    return str(value).lower()


def _plugin_may_quantize(forms):
    """Whether the plugin may quantize the inputs of a model whose int8
    layers take ``forms`` (``_int8_forms``): no, for exact results, unless
    a part says otherwise at ``PLUGIN_MAY_QUANTIZE`` (the
    dynamic_quantization part)."""
    return extended(PLUGIN_MAY_QUANTIZE, lambda forms: False)(forms)


def _int8_forms(model):
    """The forms of ``model``'s int8 weights (empty: it holds none): each
    marked one's (``_decompressed``), ``READ_BACK`` for one read back from
    an IR, whose mark OpenVINO does not save."""
    forms = set()
    for node in model.get_ops():
        rt_info = node.get_rt_info()
        if FORM_MARK in rt_info:
            forms.add(rt_info[FORM_MARK].astype(str))
        elif _is_int8_weight(node):
            forms.add(READ_BACK)
    return forms


def _is_int8_weight(node):
    """Whether ``node`` is the int8 form's weight, ``Convert(int8 Constant)
    * ones``, in a model read back from an IR: OpenVINO does not save the
    rt_info mark set here, and a Multiply by ones is this part's own
    pattern (the ones may be saved compressed, behind a Convert)."""
    if node.get_type_name() != "Multiply":
        return False
    constants = [_constant_behind_views(node.input_value(i)) for i in (0, 1)]
    if any(constant is None for constant in constants):
        return False
    int8 = [c for c in constants if c.get_element_type() == ov.Type.i8]
    others = [c for c in constants if c.get_element_type() != ov.Type.i8]
    return (
        len(int8) == 1
        and len(others) == 1
        and bool(np.all(others[0].get_data() == 1))
    )


# What the int8 form puts between the kernel's Constant and its Convert: the
# layout (``lay_out_kernel``) and the split into exact parts.
_KERNEL_VIEWS = {"Convert", "Reshape", "Transpose", "VariadicSplit"}


def _constant_behind_views(value):
    node = value.get_node()
    while node.get_type_name() in _KERNEL_VIEWS:
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def _int8_source(value, promoted):
    """The int8 tensor behind stock's promotion of it to ``promoted``
    (int32 beside another int8 operand, float32 beside a float32 one), or
    None.

    keras's ``matmul`` may add a Convert to the same type after it (it
    aligns the operand types once more): looked through.
    """
    if value.get_element_type() != promoted:
        return None
    for _ in range(3):
        node = value.get_node()
        if node.get_type_name() != "Convert":
            return None
        value = node.input_value(0)
        if value.get_element_type() == ov.Type.i8:
            return value
        if value.get_element_type() != promoted:
            return None
    return None


def rewrite_int8(result, *args, **kwargs):
    """The int8 form of stock's ``einsum`` (arguments: subscripts, operands)
    or ``matmul`` (x1, x2) result; None when it is not an int8 x int8
    product. A declined outcome says why, and the einsum or matmul part
    then tries its own form."""
    is_einsum = isinstance(args[0], str)
    node, convert_to = stock_node(result, "Einsum" if is_einsum else "MatMul")
    if node is None:
        return None
    if is_einsum:
        planned = plan_einsum(args[0], node.input_values())
        if not planned:
            return None  # the einsum part records why
        outcome = lower_int8(planned)
    else:
        outcome = lower_int8_matmul(node)
    if outcome is not None and not outcome:
        return declined(f"int8 part not used: {outcome.reason}")
    return keras_result(outcome, convert_to)


def compile_wrapper(stock_compile_model):
    @functools.wraps(stock_compile_model)
    def compile_model(self, model, device_name=None, config=None, **kwargs):
        # The int8 form is exact only in float32 without the plugin's dynamic
        # quantization; ``openvino.compile_model`` and every Core (keras's,
        # keras-hub's) compile through this method.
        config = compile_options(model, device_name, config)
        return stock_compile_model(self, model, device_name, config, **kwargs)

    return compile_model


def _label(*args, **kwargs):
    return args[0] if isinstance(args[0], str) else "matmul(x, kernel)"


PART = Part(
    name="int8",
    summary="int8 x int8 and weights-only int8 products as exact MatMuls on "
    "the int8 kernel, which the plugin keeps int8",
    # Tried before the einsum and matmul parts, which build the other form.
    hooks=(EINSUM, MATMUL),
    rewrite=rewrite_int8,
    label=_label,
    default=False,
    requires=("einsum",),
    wraps=((Hook("openvino", "Core.compile_model"), compile_wrapper),),
)
