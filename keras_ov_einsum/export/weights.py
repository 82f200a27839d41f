"""The IR's weights: float32 as traced, float16 or int8 as OpenVINO's own
compressed IRs hold them.

float16 is ``ov.save_model``'s ``compress_to_fp16`` (what optimum-intel's
``--weight-format fp16`` writes): each float32 Constant stored float16
behind a Convert. int8 is what NNCF's weight compression writes for
optimum-intel's ``--weight-format int8`` (asymmetric, a scale and a zero
point per output channel), each kernel of a MatMul and each embedding
table of a Gather as

    Constant u8 -> Convert f32 -> Subtract (Convert f32 of the zero
    point, u8) -> Multiply (scale, f32)

the pattern the CPU plugin keeps compressed (its FullyConnected layers
and Gathers read the u8 weights) and genai's int8 IRs have. NNCF keeps its
scales float16; float32 here, so the plugin's decompression computes
exactly the weights ``dequantized`` gives.
"""

import numpy as np

__all__ = ["WEIGHTS", "compress_int8", "dequantized", "quantized"]

WEIGHTS = ("float32", "float16", "int8")
_LEVELS = 255  # u8
# Smaller kernels stay float32: a Constant this small is no layer's kernel.
_SMALLEST = 1024


def quantized(weight, axis):
    """(u8 values, u8 zero points, float32 scales) of a 2-D ``weight``
    with one scale and zero point per slice along ``axis`` (the axis a
    product sums over), NNCF's asymmetric int8: the range of each slice,
    widened to hold 0, in 255 steps."""
    weight = np.asarray(weight, np.float32)
    low = np.minimum(weight.min(axis=axis, keepdims=True), 0)
    high = np.maximum(weight.max(axis=axis, keepdims=True), 0)
    scale = ((high - low) / _LEVELS).astype(np.float32)
    tiny = np.finfo(np.float32).eps
    scale = np.where(np.abs(scale) < tiny, tiny, scale).astype(np.float32)
    zero_point = np.clip(-np.round(low / scale), 0, _LEVELS)
    values = np.clip(np.round(weight / scale) + zero_point, 0, _LEVELS)
    return (
        values.astype(np.uint8),
        zero_point.astype(np.uint8),
        scale,
    )


def dequantized(weight, axis):
    """The float32 weights the int8 form of ``weight`` computes with."""
    values, zero_point, scale = quantized(weight, axis)
    return (values.astype(np.float32) - zero_point.astype(np.float32)) * scale


def compress_int8(model):
    """Rewrites ``model`` in place: each float32 kernel a MatMul reads as
    its second input (behind Reshapes and Transposes, as the lowering
    parts build its view) and each float32 table a Gather reads rows of,
    in the int8 form (module docstring); a table also read as a kernel
    (tied embeddings) is stored once. Returns how many weights."""
    forms = {}  # (constant's name, views, axis) -> decompressed output
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind == "MatMul":
            port = 1
            weight = _kernel(node.input_value(1))
            # The axis the product sums over, as the MatMul reads it.
            axis = 1 if node.get_attributes()["transpose_b"] else 0
        elif kind == "Gather" and _rows_of_table(node):
            port = 0
            weight = _kernel(node.input_value(0))
            axis = 1
        else:
            continue
        if weight is None:
            continue
        key, array = weight
        key = (*key, axis)
        if key not in forms:
            forms[key] = _decompressed(*quantized(array, axis))
        node.input(port).replace_source_output(forms[key])
    if forms:
        model.validate_nodes_and_infer_types()
    return len(forms)


def _rows_of_table(gather):
    axis = gather.input_value(2).get_node()
    return (
        axis.get_type_name() == "Constant"
        and axis.get_data().tolist() in (0, [0])
        and gather.get_attributes()["batch_dims"] == 0
    )


def _kernel(output):
    """(a key naming the Constant and its views, the 2-D float32 array
    ``output`` reads) where only Reshapes and Transposes by constants lie
    between ``output`` and a float32 Constant of at least ``_SMALLEST``
    values; else None."""
    import openvino as ov

    shape = output.get_partial_shape()
    if shape.is_dynamic or len(shape) != 2:
        return None
    views = []  # the kernel's side first
    node = output.get_node()
    while node.get_type_name() in ("Reshape", "Transpose"):
        operand = node.input_value(1).get_node()
        if operand.get_type_name() != "Constant":
            return None
        if node.get_type_name() == "Transpose":
            views.insert(0, ("Transpose", tuple(operand.get_data())))
        else:
            views.insert(0, ("Reshape", tuple(node.get_output_shape(0))))
        node = node.input_value(0).get_node()
    if (
        node.get_type_name() != "Constant"
        or node.get_element_type() != ov.Type.f32
        or int(np.prod(node.get_output_shape(0))) < _SMALLEST
    ):
        return None
    array = node.get_data()
    for kind, operand in views:
        if kind == "Transpose":
            array = array.transpose(operand)
        else:
            array = array.reshape(operand)
    return (node.get_friendly_name(), tuple(views)), array


def _decompressed(values, zero_point, scale):
    import openvino as ov
    import openvino.opset14 as ov_opset

    def widened(array):
        constant = ov_opset.constant(array, ov.Type.u8)
        return ov_opset.convert(constant, ov.Type.f32)

    centred = ov_opset.subtract(widened(values), widened(zero_point))
    return ov_opset.multiply(centred, ov_opset.constant(scale)).output(0)
