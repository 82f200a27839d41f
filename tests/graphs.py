"""Build, inspect and run small OpenVINO graphs through ``keras.ops.einsum``."""

import contextlib
import dataclasses

import ml_dtypes
import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset

import keras_ov_einsum
from keras_ov_einsum.core import backend

__all__ = [
    "EinsumGraph",
    "build_einsum_graph",
    "constant_bytes",
    "generate",
    "gpt2_causal_lm",
    "gpt2_prompt",
    "kernel_path",
    "keras_parameter",
    "op_types",
    "patched",
    "run_model",
]

# This CPU runs bf16 by default (AMX); compare float32 graphs in float32.
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclasses.dataclass
class EinsumGraph:
    model: ov.Model
    kernel_node: object
    explanation: tuple


def build_einsum_graph(
    equation, input_shape, kernel, *, fixed, kernel_first=False, dtype="float32"
):
    """``einsum(equation, x, kernel)``, ``x`` a Parameter of ``input_shape``.

    ``None`` in ``input_shape`` is a dynamic dimension. ``kernel`` becomes a
    ``keras.Variable``, i.e. an OpenVINO Constant, as in a real layer.
    """
    import keras

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    # OpenVINO's Python API reads bfloat16 NumPy arrays as float16 bytes:
    # bfloat16 inputs are fed as float32 and converted inside the graph.
    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in input_shape],
        OPENVINO_DTYPES["float32" if dtype == "bfloat16" else dtype],
    )
    variable = keras.Variable(kernel, dtype=str(kernel.dtype), trainable=False)
    x = parameter.output(0)
    if dtype == "bfloat16":
        x = ov_opset.convert(x, OPENVINO_DTYPES[dtype]).output(0)
    x = OpenVINOKerasTensor(x)
    operands = (variable, x) if kernel_first else (x, variable)
    with patched(fixed):
        result = keras.ops.einsum(equation, *operands)
        explanation = keras_ov_einsum.explain() if fixed else ()
    model = ov.Model([result.output], [parameter])
    return EinsumGraph(
        model=model,
        kernel_node=variable.value.output.get_node(),
        explanation=explanation,
    )


def kernel_path(model):
    """(op types between the single MatMul and its kernel, the Constant)."""
    (matmul,) = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "MatMul"
    ]
    chain = []
    node = matmul.input_value(1).get_node()
    while node.get_type_name() != "Constant":
        chain.append(node.get_type_name())
        node = node.input_value(0).get_node()
    return chain, node


def op_types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]


def constant_bytes(model):
    return sum(
        node.get_byte_size()
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Constant"
    )


def run_model(model, *inputs, config=F32):
    compiled = ov.Core().compile_model(model, "CPU", config)
    result = compiled(list(inputs))[0]
    # bfloat16 results come back as float16 bytes, as keras's
    # convert_to_numpy knows: reinterpret them.
    if compiled.output(0).get_element_type() == ov.Type.bf16:
        result = result.view(ml_dtypes.bfloat16)
    return result


def patched(fixed, parts=None):
    """Where a graph is built: under ``enable(**parts)`` when ``fixed``,
    else on the stock backend."""
    if fixed:
        return keras_ov_einsum.enabled(**(parts or {}))
    return contextlib.nullcontext()


def keras_parameter(shape, dtype="float32"):
    """An OpenVINO Parameter of ``shape`` (-1: dynamic) and ``dtype``, and
    the Keras tensor on it."""
    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter(list(shape), OPENVINO_DTYPES[dtype])
    return parameter, OpenVINOKerasTensor(parameter.output(0))


def gpt2_causal_lm(
    *,
    layers=2,
    hidden_dim=64,
    intermediate_dim=128,
    quantize=None,
    quantize_config=None,
):
    """A small keras-hub GPT-2 with random weights (seed 0): 2 heads, 512
    tokens, greedy sampling, no preprocessor (``generate`` feeds token
    ids). ``quantize``: a mode for ``backbone.quantize`` first (with
    ``quantize_config``, a ``keras.quantizers`` config). The heads are
    ``hidden_dim / 2`` wide, which decides the query scale.

    The sampler is set in ``compile``: keras-hub's CausalLM takes no
    ``sampler`` argument at construction (it ignored one and sampled top-k
    at random, a new seed each generate())."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=512,
        num_layers=layers,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=32,
    )
    if quantize:
        backbone.quantize(quantize, config=quantize_config)
    causal_lm = keras_hub.models.GPT2CausalLM(
        backbone=backbone, preprocessor=None
    )
    causal_lm.compile(sampler="greedy")
    return causal_lm


def gpt2_prompt():
    """Two padded rows of token ids (all below 512) and their mask."""
    token_ids = np.zeros((2, 16), "int32")
    token_ids[0, :3] = [5, 17, 42]
    token_ids[1, :5] = [7, 7, 300, 1, 99]
    return {"token_ids": token_ids, "padding_mask": token_ids != 0}


def generate(causal_lm, parts=None):
    """A keras-hub causal LM's tokens for ``gpt2_prompt()``, traced
    and compiled afresh under ``enable(**parts)`` (None: stock).

    Returns (token ids, explain() or (), the compiled OpenVINO model).
    """
    prompt = gpt2_prompt()
    # Drop the compiled generate graph so that this call builds its own.
    causal_lm.ov_compiled_model = None
    causal_lm.generate_function = None
    if parts is None:
        out = causal_lm.generate(prompt, stop_token_ids=None)
        return out["token_ids"], (), causal_lm.ov_compiled_model
    with keras_ov_einsum.enabled(**parts):
        out = causal_lm.generate(prompt, stop_token_ids=None)
        explanation = keras_ov_einsum.explain()
    return out["token_ids"], explanation, causal_lm.ov_compiled_model
