"""Keep a float16 model's kernels float16 in the step model, as OpenVINO's
own IRs do.

keras-hub compiles a float16 model with the f16 precision hint. On a CPU
without float16 arithmetic the plugin then computes in float32 and
converts every float16 Constant to float32 when it compiles: a float32
copy of each kernel beside Keras's float16 one, which every step reads
(docs/parts.md). An IR that optimum-intel exports in float16 holds each
kernel as ``Convert(float32)`` of a float16 Constant marked as a
decompression; the CPU plugin packs such a kernel float16 and widens it
inside its FullyConnected kernel, but only in a model it takes for a
large language model, one holding a state variable (``python -m
benchmarks.bandwidth --weights f16-decompressed [--stateful]`` shows it;
docs/native-gap.md has its figures).

This part gives the stepwise part's step model that form before it is
compiled: each MatMul of a float16 activation and a 2-D float16 kernel
Constant (behind Reshapes and Transposes, as the lowering parts build it)
becomes ``Convert(f16)(MatMul(Convert(f32)(x), decompression(kernel)))``,
the kernel a view of the variable's Constant (no copy; behind a Transpose,
a transposed float16 copy), each Gather from a float16 embedding table
gathers from the table behind a decompression Convert too, and the model
gets one state variable of one float32 that nothing reads: the plugin's
mark of a language model (a step model whose caches the state_caches part
keeps in state is one already, and gets no mark).

Values: on a CPU that computes float16 in float32 the products are stock's
(the plugin widens the same float16 values and rounds the results to
float16 where stock's graph did); on a CPU with float16 arithmetic, where
the plugin computes in float16, the stepwise tests' float16 tokens are
stock's too. bfloat16 is declined: under the f16 hint the plugin packs
bfloat16 kernels behind the decompression as float16, a lossy conversion
(a bfloat16 GPT-2 gave other tokens). Only the CPU plugin is known to pack
this way; on other devices the part declines.
"""

from ...core import decisions
from ...core.kernel import matrix_view
from ...core.part import Part
from . import stepwise

__all__ = ["DECOMPRESSION", "LABEL", "PART", "decline_reason", "keep_float16"]

LABEL = "half_weights: float16 kernels of the step model"
# The rt_info key OpenVINO's MarkDequantizationSubgraph and optimum-intel's
# IRs put on a Convert that decompresses a weight (OpenVINO's
# ``mark_as_decompression``, which Python cannot call): the CPU plugin
# keeps the Constant behind such a Convert in its own type.
DECOMPRESSION = "decompression_0"
_MARK_VARIABLE = "keras_ov_einsum.language_model"


def decline_reason(dtype, device):
    """Why a ``dtype`` model compiled for ``device`` keeps stock's
    kernels; None: it need not."""
    if dtype == "bfloat16":
        return (
            "bfloat16: under the f16 hint the CPU plugin packs a bfloat16 "
            "kernel behind a decompression as float16 (lossy)"
        )
    if dtype != "float16":
        return f"{dtype}: not a float16 model"
    if device.split(".")[0] != "CPU":
        return f"device {device}: the CPU plugin's packing is the one known"
    return None


def _float16_kernel(matmul):
    """The 2-D float16 kernel ``matmul`` reads as its second input, as a
    NumPy array: a view of the Constant's buffer when only Reshapes lie
    between, a transposed copy when a Transpose does (the lowering parts
    transpose an interleaved kernel; stock's compile folds the Transpose
    into a float32 copy, twice this one's size). None when the input is not
    such a kernel."""
    import numpy as np
    import openvino as ov

    output = matmul.input_value(1)
    shape = output.get_partial_shape()
    if shape.is_dynamic or len(shape) != 2:
        return None
    views = []  # the Reshapes and Transposes, the kernel's side first
    node = output.get_node()
    while node.get_type_name() in ("Reshape", "Transpose"):
        if node.input_value(1).get_node().get_type_name() != "Constant":
            return None
        views.insert(0, node)
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    if node.get_element_type() != ov.Type.f16:
        return None
    if all(view.get_type_name() == "Reshape" for view in views):
        return matrix_view(output)
    kernel = node.get_data()
    for view in views:
        if view.get_type_name() == "Transpose":
            kernel = kernel.transpose(view.input_value(1).get_node().get_data())
        else:
            kernel = kernel.reshape(list(view.get_output_shape(0)))
    return np.ascontiguousarray(kernel)


def keep_float16(model):
    """Rewrites ``model`` (an ``ov.Model``) in place as the module's
    docstring says; returns how many kernels and embedding tables it
    rewrote (none: the model is left as it was)."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul":
            continue
        if node.input_value(0).get_element_type() != ov.Type.f16:
            continue
        kernel = _float16_kernel(node)
        if kernel is None:
            continue
        attributes = node.get_attributes()
        product = ov_opset.matmul(
            ov_opset.convert(node.input_value(0), ov.Type.f32),
            _decompressed(ov.op.Constant(kernel, shared_memory=True)),
            attributes["transpose_a"],
            attributes["transpose_b"],
        )
        _replace_with_float16(node, product)
        rewritten += 1
    tables = _decompress_float16_tables(model)
    if rewritten or tables:
        if not model.get_variables():  # state_caches' caches mark it already
            _mark_language_model(model)
        model.validate_nodes_and_infer_types()
    return rewritten, tables


def _decompress_float16_tables(model):
    """Each Gather of rows of a float16 Constant (an embedding table) as
    ``Convert(f16)(Gather(decompression(table), ids))``, as in OpenVINO's
    float16 IRs: the plugin then gathers from the float16 table instead of
    a float32 copy of it. Returns how many."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Gather":
            continue
        table = node.input_value(0).get_node()
        axis = node.input_value(2).get_node()
        if (
            table.get_type_name() != "Constant"
            or table.get_element_type() != ov.Type.f16
            or axis.get_type_name() != "Constant"
            or axis.get_data().tolist() not in (0, [0])
            or node.get_attributes()["batch_dims"] != 0
        ):
            continue
        rows = ov_opset.gather(_decompressed(table), node.input_value(1), axis)
        _replace_with_float16(node, rows)
        rewritten += 1
    return rewritten


def _decompressed(constant):
    """``constant`` (float16) widened to float32 by a Convert marked as a
    weight's decompression."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    widened = ov_opset.convert(constant, ov.Type.f32)
    widened.get_rt_info()[DECOMPRESSION] = ""
    return widened


def _replace_with_float16(node, float32_result):
    """Every reader of ``node``'s output reads ``float32_result`` narrowed
    to float16 (``node``'s type) instead."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    result = ov_opset.convert(float32_result, ov.Type.f16)
    for target in list(node.output(0).get_target_inputs()):
        target.replace_source_output(result.output(0))


def _mark_language_model(model):
    """One float32 state variable, read and written back, nothing else: the
    CPU plugin compiles a model holding state as a language model. (With
    an initial value the plugin failed to compile it: "dead weak ptr".)"""
    import openvino as ov
    import openvino.opset14 as ov_opset

    info = ov.op.util.VariableInfo()
    info.data_shape = ov.PartialShape([1])
    info.data_type = ov.Type.f32
    info.variable_id = _MARK_VARIABLE
    variable = ov.op.util.Variable(info)
    model.add_variables([variable])
    model.add_sinks([ov_opset.assign(ov_opset.read_value(variable), variable)])


def _keep_half_weights(compile_step_model, model, device, dtype):
    """The pass at ``stepwise.COMPILE``: the float16 kernels kept before
    the step model is compiled."""
    reason = decline_reason(dtype, device)
    if dtype in ("float16", "bfloat16"):
        lowered = False
        if reason is None:
            kernels, tables = keep_float16(model)
            lowered = kernels + tables > 0
            reason = (
                f"{kernels} float16 kernels and {tables} embedding "
                "tables kept float16 behind a decompression Convert; "
                "the model marked a language model"
                if lowered
                else "no float16 kernel or embedding table"
            )
        decisions.record(
            decisions.Decision(
                equation=LABEL,
                shapes=(),
                dtypes=(dtype,),
                lowered=lowered,
                reason=reason,
            )
        )
    return compile_step_model(model, device, dtype)


PART = Part(
    name="half_weights",
    summary="a float16 step model's kernels kept float16 behind "
    "decompression Converts, as in OpenVINO's IRs",
    requires=("stepwise",),
    passes=((stepwise.COMPILE, _keep_half_weights),),
)
