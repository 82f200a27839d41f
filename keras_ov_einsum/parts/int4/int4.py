"""Opt-in: keras's int4 layers' kernels kept 4-bit in the OpenVINO graph.

keras 3.15's ``quantize("int4")`` stores a ``Dense`` or ``EinsumDense``
kernel as int8 bytes of two 4-bit values each, ``[K, ceil(N / 2)]`` (the
kernel flattened to [reduced axes, other axes]; the low nibble is the even
column, two's complement), and unpacks them inside the graph at every
call: ``BitwiseAnd``, ``BitwiseRightShift``, ``BitwiseXor``, ``Subtract``,
a ``Concat`` and ``Transpose`` on the constant, which OpenVINO folds when
it compiles into a float32 kernel, four bytes a weight (eight times the
packed bytes). Its default config is weights-only (no activation
quantizer) and grouped: groups of 128 along K, each with a float32 scale
and an int8 zero point a column, the weights ``(q - zero) * scale``;
``block_size=-1`` is one scale a column and no zero point (``Dense``:
``(x @ q) / scale``; ``EinsumDense``: ``x @ (q / scale)``).

Here the packed bytes are read as an ``i4`` Constant of the unpacked
shape (``[groups, 128, N]``), on the kernel's own buffer, no copy: OpenVINO
packs 4-bit elements as keras does, the first in the low nibble. Then
``Convert``, ``Subtract`` of the zero points (int8, behind a ``Convert``),
``Multiply`` by the scales and a ``Reshape`` to ``[K, N]`` feed the
``MatMul``: the weight decompression pattern the CPU plugin keeps
compressed, its FullyConnected layer reading the 4-bit weights, the zero
points and the scales.

The decompressed weights are keras's arithmetic bit for bit, NumPy's
``(q - zero) * scale``: ``q - zero`` is an integer of at most 15 in size
(exact in float32), times the float32 scale, one rounding. Stock's graph
writes the same, but OpenVINO's compile distributes the scale over the
subtraction, ``q * scale - zero * scale``, two roundings: one float32 ulp
off on about 7% of the weights (tests/test_int4.py pins both). The
product is then the float32 MatMul on those weights, which the plugin's
compressed-weight kernel may sum in another order than stock's float32
one: results are stock's within float32 rounding, not bit for bit. The
plugin computes in float32 only under ``INFERENCE_PRECISION_HINT=f32`` and
without dynamic quantization of the inputs: the int8 part's
``compile_options`` adds both (the form is marked as int8's are).

``Dense`` per column: ``Convert(q) * ones`` (the pattern, exact), stock's
``Divide`` by the scales after the product.

A tied int4 ``ReversibleEmbedding``'s logits (keras-hub's GPT-2 and Gemma
heads), ``x @ table.T``: stock unpacks the [vocabulary, hidden] table,
transposes it and dequantizes it, a float32 copy; here the table's own
bytes are the 4-bit Constant, [vocabulary, groups, group size] (the groups
along the hidden axis, a zero point and a scale a row and group: the
layout NNCF gives OpenVINO's own int4 IRs) feeding ``MatMul(transpose_b=
True)``. keras divides the logits by the inputs' scale, ones without an
inputs quantizer: left out, exact. Per row, stock's ``Divide`` by the
rows' scales follows; a soft cap (Gemma) is stock's keras operations.
keras 3.15 builds a table loaded from a saved preset with keras's default
inputs quantizer (int8 rows), which ``quantize("int4")`` does not: its
inputs are quantized by keras's own operations, then the same product.
Per row, int8 x int4 products are integers of at most 2**10 in size, whose
float32 sums over K <= 2**14 are exact: stock's int32 sums, bit for bit.

Declined, with the reason, and left to stock: a ``Dense`` or
``EinsumDense`` whose inputs are quantized (an activation quantizer: int8 x
int4), LoRA, a compute type other than
float32, an eager call, an odd number of columns (keras pads the packed
row), a K that is no whole number of groups (more than one group), a group
index (``g_idx``) that is not keras's contiguous groups, an
``EinsumDense`` whose kernel is not read as [K, N] in its own order, an
``EinsumDense`` per column (keras divides the kernel by the scales: a
multiplication by their inverses rounds otherwise), untied reverse
embeddings (packed along K, two rows a byte), a per-row table of
quantized inputs with K > 2**14, and keras 3.12-3.14's
layers (packed along K). keras 3.16 moved the int4 forward into its
quantization strategies: the part is left out there, with the reason.
"""

import dataclasses

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset

from ...core import backend
from ...core.kernel import matrix_view
from ...core.outcome import declined, lowered
from ...core.part import FirstOf, Hook, Part
from ...einsum.build import build_matmul, int64_constant, plan_einsum
from ..int8 import int8

__all__ = [
    "DENSE",
    "EINSUM_DENSE",
    "INT4_WEIGHTS",
    "PART",
    "int4_constant",
    "replace_int4_layer",
    "rewrite_int4_layer",
]

# The compile options' mark (int8.FORM_MARK) on a 4-bit weight: float32
# inputs, exact only without the plugin's dynamic quantization.
INT4_WEIGHTS = "int4 weights"


def _layer_operands(layer, inputs, *args, **kwargs):
    return (inputs, layer._kernel)


def _table_operands(layer, inputs, *args, **kwargs):
    return (inputs, layer._embeddings)


# keras 3.16 computes the layers' int4 forward in its int4 strategy's
# handlers: hooked there only so that enable() finds the part's functions;
# ``_unavailable`` leaves the part out on that stack.
_STRATEGY = Hook(
    "keras.src.quantizers.modes.int4.projection",
    "Int4ProjectionHandlers._call_projection",
)
_LOOKUP_STRATEGY = Hook(
    "keras.src.quantizers.modes.int4.lookup", "Int4LookupHandlers._call_lookup"
)
EINSUM_DENSE = FirstOf(
    (
        Hook(
            "keras.src.layers.core.einsum_dense",
            "EinsumDense._int4_call",
            _layer_operands,
        ),
        _STRATEGY,
    )
)
DENSE = FirstOf(
    (
        Hook(
            "keras.src.layers.core.dense", "Dense._int4_call", _layer_operands
        ),
        _STRATEGY,
    )
)
REVERSIBLE_EMBEDDING = FirstOf(
    (
        Hook(
            "keras.src.layers.core.reversible_embedding",
            "ReversibleEmbedding._int4_call",
            _table_operands,
        ),
        _LOOKUP_STRATEGY,
    )
)


def _unavailable():
    """keras 3.16 computes int4 layers in its quantization strategies (no
    ``_int4_call``), through other code than the one measured here."""
    for hook in (EINSUM_DENSE, DENSE, REVERSIBLE_EMBEDDING):
        if hook.resolve() in (_STRATEGY, _LOOKUP_STRATEGY):
            return (
                "keras computes int4 layers in its int4 strategy (keras "
                "3.16), not in the layers' _int4_call this part lowers"
            )
    return None


@dataclasses.dataclass(frozen=True)
class _Packed:
    """A layer's packed int4 weights: ``packed`` holds the [rows, columns]
    matrix, two values a byte along the columns. ``contracted_rows``: the
    product contracts the rows (a kernel, [K, N]), else the columns (the
    tied embedding table, [N, K]). ``block_size``: groups along the
    contracted axis, each with ``zero`` and ``scale`` a row or column
    (None: one ``scale``, applied by the caller)."""

    packed: object
    rows: int
    columns: int
    contracted_rows: bool
    block_size: int | None
    zero: object = None
    scale: object = None
    groups: object = None

    @property
    def contracted(self):
        return self.rows if self.contracted_rows else self.columns

    @property
    def group(self):
        return min(self.block_size, self.contracted)

    def shape(self):
        """The 4-bit Constant's shape: the groups split out of K."""
        if self.block_size is None:
            return [self.rows, self.columns]
        count = self.contracted // self.group
        if self.contracted_rows:
            return [count, self.group, self.columns]
        return [self.rows, count, self.group]

    def why_not(self):
        if self.columns % 2:
            return f"{self.columns} columns: keras pads each packed row"
        if self.block_size is None:
            return None
        k = self.contracted
        if k > self.block_size and k % self.block_size:
            return f"K = {k} is no whole number of groups of {self.block_size}"
        from keras import ops

        groups = ops.convert_to_numpy(self.groups)
        if not np.array_equal(groups, np.arange(k) // self.block_size):
            return "a group index (g_idx) other than contiguous groups"
        return None

    def describe(self):
        if self.block_size is None:
            return "a scale a column"
        return f"groups of {self.group} with zero points"


def _block_size(layer):
    block_size = getattr(layer, "_int4_block_size", None)
    return None if block_size in (None, -1) else block_size


def _is_table(layer):
    return hasattr(layer, "tie_weights")


def _sizes(layer):
    """(rows K, columns N) of the unpacked kernel."""
    if hasattr(layer, "equation"):
        return layer._int4_rows, layer._int4_unpacked_column_size
    return layer._orig_input_dim, layer._orig_output_dim


def _packed(layer):
    """The layer's ``_Packed`` weights."""
    block_size = _block_size(layer)
    if _is_table(layer):
        rows, columns = layer.input_dim, layer.output_dim
        weights = layer._embeddings
        zero = getattr(layer, "embeddings_zero", None)
        scale = layer.embeddings_scale
    else:
        (rows, columns), weights = _sizes(layer), layer._kernel
        zero = getattr(layer, "kernel_zero", None)
        scale = layer.kernel_scale
    return _Packed(
        packed=weights,
        rows=rows,
        columns=columns,
        contracted_rows=not _is_table(layer),
        block_size=block_size,
        zero=zero,
        scale=scale,
        groups=getattr(layer, "g_idx", None),
    )


def _why_not(layer, inputs, reverse=True):
    """Why this int4 layer call stays on stock's path, or None."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if not hasattr(layer, "_int4_block_size"):
        # keras 3.12-3.14: the kernel packed along its rows, and per column.
        return "a packed layout before keras 3.15's (not measured)"
    quantizer = getattr(layer, "inputs_quantizer", None)
    if quantizer is not None and not _is_table(layer):
        return "inputs quantized (int8 x int4): not lowered"
    if quantizer is not None and not _int8_rows(quantizer):
        return f"inputs quantized by {type(quantizer).__name__} otherwise"
    if layer.lora_enabled:
        return "LoRA is enabled"
    if layer.compute_dtype != "float32":
        return f"compute type {layer.compute_dtype}"
    if not isinstance(inputs, OpenVINOKerasTensor):
        return "the inputs are no traced tensor (an eager call)"
    if inputs.output.get_element_type() != ov.Type.f32:
        return f"inputs of {inputs.output.get_element_type().get_type_name()}"
    if _is_table(layer) and not layer.tie_weights:
        return "untied reverse embeddings (packed along K): not lowered"
    if (
        quantizer is not None
        and _block_size(layer) is None
        and layer.output_dim > MAX_EXACT_CONTRACTION
    ):
        return (
            f"K = {layer.output_dim} int8 x int4 products: a float32 sum "
            "may round where stock's int32 one does not"
        )
    if hasattr(layer, "equation") and _block_size(layer) is None:
        return (
            "per-column int4 EinsumDense: keras divides the kernel by its "
            "scales, which the plugin's decompression cannot"
        )
    return _packed(layer).why_not()


# An int8 x int4 product is at most 128 * 8 = 2**10 in size: a float32 sum
# of this many holds every partial sum exactly (stock sums them in int32).
MAX_EXACT_CONTRACTION = 2**24 // 2**10


def _int8_rows(quantizer):
    """Whether ``quantizer`` is keras's default inputs quantizer: int8
    values in (-127, 127), a scale a row."""
    from keras.src.quantizers.quantizers import AbsMaxQuantizer

    return (
        type(quantizer) is AbsMaxQuantizer
        and tuple(quantizer.value_range) == (-127, 127)
        and quantizer.output_dtype == "int8"
        and quantizer.axis in (None, (-1,))
    )


def int4_constant(packed, shape):
    """The 4-bit Constant of ``shape`` on the bytes of ``packed`` (an int8
    Output, keras's packed kernel: a Constant behind Reshapes), with no
    copy; None when ``packed`` is no such Constant."""
    matrix = matrix_view(packed)
    if matrix is None:
        return None
    nibbles = matrix.reshape(-1).view(np.uint8)
    tensor = ov.Tensor(nibbles, ov.Shape(list(shape)), ov.Type.i4)
    return ov.op.Constant(tensor, shared_memory=True).output(0)


def _weights(packed, kernel):
    """The float32 weights, [K, N] (a kernel) or [N, K] (a table),
    decompressed from the 4-bit ``kernel`` (Constant, ``packed.shape()``)
    by the pattern the plugin keeps compressed, and marked."""
    from keras import ops

    weights = ov_opset.convert(kernel, ov.Type.f32)
    if packed.block_size is None:
        shape = (1, packed.columns) if packed.contracted_rows else (-1, 1)
        ones = np.ones(packed.rows if shape[0] == -1 else packed.columns)
        ones = ones.astype(np.float32).reshape(shape)
        weights = ov_opset.multiply(weights, ov_opset.constant(ones))
    else:
        # A zero point and a scale a group: [groups, 1, N] or [N, groups, 1].
        grouped = (
            [-1, 1, packed.columns]
            if packed.contracted_rows
            else [packed.rows, -1, 1]
        )
        zero = ops.convert_to_tensor(packed.zero).output
        zero = ov_opset.reshape(zero, int64_constant(grouped), False)
        scale = ops.convert_to_tensor(packed.scale).output
        scale = ov_opset.reshape(scale, int64_constant(grouped), False)
        weights = ov_opset.subtract(
            weights, ov_opset.convert(zero, ov.Type.f32)
        )
        weights = ov_opset.multiply(weights, scale)
    weights.get_rt_info()[int8.FORM_MARK] = INT4_WEIGHTS
    if packed.block_size is not None:
        matrix = [packed.rows, packed.columns]
        weights = ov_opset.reshape(weights, int64_constant(matrix), False)
    return weights.output(0)


def _four_bit(layer):
    """(``_Packed``, its 4-bit Constant or None)."""
    from keras import ops

    packed = _packed(layer)
    data = ops.convert_to_tensor(packed.packed).output
    return packed, int4_constant(data, packed.shape())


def replace_int4_layer(layer, inputs, *args, **kwargs):
    """The int4 layer's output on its 4-bit kernel (the module docstring),
    or None: stock builds it (the rewrite records why)."""
    if _is_table(layer):
        return _replace_logits(layer, inputs, *args, **kwargs)
    if _why_not(layer, inputs):
        return None
    from keras import ops

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")
    packed, kernel = _four_bit(layer)
    if kernel is None:
        return None
    x = inputs.output
    if hasattr(layer, "equation"):
        planned = _planned(layer, x, kernel)
        if not planned or _not_a_matrix(planned.plan, packed):
            return None
        y = build_matmul(planned.plan, x, _weights(packed, kernel))
        described = planned.plan.describe()
    else:
        y = ov_opset.matmul(x, _weights(packed, kernel), False, False)
        if packed.block_size is None:
            # Stock divides the product by the scales: so does this.
            scale = ops.convert_to_tensor(layer.kernel_scale).output
            y = ov_opset.divide(y, scale)
        y = y.output(0)
        described = f"MatMul, kernel [{packed.rows}, {packed.columns}]"
    y = OpenVINOKerasTensor(y)
    if layer.bias is not None:
        y = ops.add(y, layer.bias)
    if layer.activation is not None:
        y = layer.activation(y)
    return lowered(
        y, f"{described}, int4 kernel kept 4-bit ({packed.describe()})"
    )


def _replace_logits(layer, inputs, reverse=False):
    """A tied int4 ``ReversibleEmbedding``'s logits, ``x @ table.T``, on
    the [N, K] table's 4-bit Constant: ``MatMul(transpose_b=True)``,
    where stock unpacks a transposed copy. Its inputs as keras gives them
    (float32, or quantized to int8 by its inputs quantizer, which keras
    3.15 builds for a table loaded from a saved preset), then keras's
    divisions: by the inputs' scale (ones without a quantizer: left out,
    exact), times the rows' scales per row."""
    if not reverse or _why_not(layer, inputs):
        return None
    from keras import ops

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")
    packed, table = _four_bit(layer)
    if table is None:
        return None
    x, inputs_scale = inputs, None
    if layer.inputs_quantizer is not None:
        x, inputs_scale = layer.inputs_quantizer(inputs)
    x = ov_opset.convert(x.output, ov.Type.f32)
    y = ov_opset.matmul(x, _weights(packed, table), False, True).output(0)
    if packed.block_size is None:
        scale = ops.convert_to_tensor(layer.embeddings_scale)
        if inputs_scale is not None:
            scale = ops.multiply(inputs_scale, scale)
        y = ov_opset.divide(y, scale.output).output(0)
    elif inputs_scale is not None:
        y = ov_opset.divide(y, inputs_scale.output).output(0)
    logits = OpenVINOKerasTensor(y)
    if layer.logit_soft_cap is not None:
        cap = layer.logit_soft_cap
        logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap)
    quantized = ", inputs quantized" if inputs_scale is not None else ""
    return lowered(
        logits,
        f"MatMul(transpose_b=True), table [{packed.rows}, {packed.columns}], "
        f"int4 table kept 4-bit ({packed.describe()}){quantized}",
    )


def _planned(layer, x, kernel):
    """The einsum's plan, made on a float32 view of the 4-bit ``kernel`` in
    the layer's kernel shape, built for the plan only (it reaches no
    result); or the declined Outcome."""
    shaped = ov_opset.reshape(
        ov_opset.convert(kernel, ov.Type.f32),
        int64_constant(list(layer.original_kernel_shape)),
        False,
    ).output(0)
    return plan_einsum(layer.equation, [x, shaped])


def _not_a_matrix(plan, packed):
    """Why ``plan`` does not read the kernel as keras's [K, N], or None."""
    if (
        plan.batch
        or plan.variable_summed_axes
        or plan.kernel_summed_axes
        or plan.kernel_permutation is not None
        or plan.transpose_b
        or (plan.contracted_size, plan.columns_size)
        != (packed.rows, packed.columns)
    ):
        return "the kernel is not read as [K, N] in its own order"
    return None


def rewrite_int4_layer(result, layer, inputs, *args, **kwargs):
    """After stock: why the layer was left to stock (its replace declined
    it); None for an embedding lookup (not its case)."""
    if _is_table(layer) and not kwargs.get("reverse", args[:1] == (True,)):
        return None
    reason = _why_not(layer, inputs)
    if reason is None:
        packed, kernel = _four_bit(layer)
        if kernel is None:
            reason = "the packed weights are no Constant"
        elif hasattr(layer, "equation"):
            planned = _planned(layer, inputs.output, kernel)
            reason = (
                _not_a_matrix(planned.plan, packed)
                if planned
                else planned.reason
            )
    return declined(reason) if reason else None


def _label(layer, *args, **kwargs):
    if _is_table(layer):
        return f"{type(layer).__name__} int4 logits matmul(x, transpose(table))"
    if hasattr(layer, "equation"):
        return f"{type(layer).__name__} int4 {layer.equation}"
    return f"{type(layer).__name__} int4 matmul(x, kernel)"


PART = Part(
    name="int4",
    summary="keras's int4 Dense, EinsumDense and tied logits on their 4-bit "
    "weights, which the plugin keeps 4-bit, not a float32 copy",
    hooks=(EINSUM_DENSE, DENSE, REVERSIBLE_EMBEDDING),
    rewrite=rewrite_int4_layer,
    replace=replace_int4_layer,
    label=_label,
    default=False,
    unavailable=_unavailable,
    # The compile options that keep the layers float32, shared with int8.
    wraps=((Hook("openvino", "Core.compile_model"), int8.compile_wrapper),),
)
