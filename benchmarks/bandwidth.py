"""Measure this machine's weight-read bandwidth and the tokens/s it allows.

    python -m benchmarks.bandwidth [--model gpt2_medium] [--layout kn|nk|both]

A decoding step of a float32 LM reads every projection weight once, so
tokens/s cannot exceed bandwidth / weight bytes. The bandwidth is measured
the way a decoding step uses it: OpenVINO FullyConnected layers of the
model's own shapes at one row of input, compiled in float32.

``--layout`` compares the two ways to hand OpenVINO a kernel: ``kn``, the
``[K, N]`` reshape of a Keras kernel with ``transpose_b=False`` (what the
lowering builds), and ``nk``, a ``[N, K]`` copy with ``transpose_b=True``:
compile time, memory growth and bandwidth of each.

``--fused gelu`` puts a GELU right after every layer, as keras-hub's
feed-forward GELU follows its first projection; the CPU plugin fuses it
into the layer, which changes the kernel it picks (reported beside the
bandwidth).

``--weights f16|bf16`` stores the weights (and computes the layers) in that
type, as a float16/bfloat16 Keras model does, compiled with the precision
hint keras-hub gives such a model (``f16``; ``--hint`` overrides it): how
many bytes the CPU plugin keeps for them, and the bandwidth and ceiling.
``--weights f16-decompressed`` keeps float32 layers on float16 weights
behind a Convert marked as weight decompression, as an fp16 IR holds them.

``--stateful`` adds a small attention on a state variable beside the
layers: the CPU plugin treats a model holding a ScaledDotProductAttention
and a variable as an LLM (as it does genai's IRs, and not keras-hub's
graphs, which keep no state), which changes the kernels it runs some
weight types with.
"""

import argparse
import statistics
import time

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset
import psutil

from keras_ov_einsum.parts.generate.half_weights import DECOMPRESSION

__all__ = ["fully_connected_bandwidth", "fully_connected_layers", "main"]

GB = 1e9


def _gpt2_shapes(layers, hidden, vocabulary):
    per_layer = [(hidden, 3 * hidden), (hidden, hidden)]
    per_layer += [(hidden, 4 * hidden), (4 * hidden, hidden)]
    return per_layer * layers + [(hidden, vocabulary)]


SHAPES = {
    "gpt2_base": _gpt2_shapes(12, 768, 50257),
    "gpt2_medium": _gpt2_shapes(24, 1024, 50257),
    "gpt2_large": _gpt2_shapes(36, 1280, 50257),
}


# --weights -> (bytes per weight, keras-hub's hint for such a model). i8:
# a Keras int8 EinsumDense as keras's OpenVINO einsum builds it (int8 input
# and kernel each converted to int32, an int32 MatMul); i8-dequantized: the
# same product as a float32 MatMul on the int8 kernel converted and scaled
# (by 1), the pattern OpenVINO keeps compressed, converted back to int32.
WEIGHTS = {
    "f32": (4, "f32"),
    "f16": (2, "f16"),
    "bf16": (2, "f16"),
    "i8": (1, "f32"),
    "i8-dequantized": (1, "f32"),
    "f16-decompressed": (2, "f32"),
}
# --stateful: one query row of this many features a step.
STATE_ROW = (1, 1, 1, 64)


# --fused -> the operation after each layer.
FUSED = {
    "none": lambda y: y,
    "gelu": lambda y: ov_opset.gelu(y, "tanh"),
}


def fully_connected_bandwidth(
    shapes,
    repeats=20,
    layout="kn",
    weights_type="f32",
    hint=None,
    config=None,
    fused="none",
    stateful=False,
):
    """Bytes per step, [GB/s per repeat], compile seconds, growth bytes,
    {FullyConnected kernel: layers}."""
    itemsize, keras_hub_hint = WEIGHTS[weights_type]
    rng = np.random.default_rng(0)
    parameters, results, total = [], [], 0
    for rows, columns in shapes:
        weights = rng.standard_normal((rows, columns), dtype=np.float32)
        if weights_type.startswith("i8"):
            weights = np.clip(np.round(weights * 40), -127, 127)
        total += weights.size * itemsize
        parameter = ov_opset.parameter([1, rows], ov.Type.f32)
        parameters.append(parameter)
        if layout == "kn":
            kernel, transpose_b = weights, False
        else:
            kernel, transpose_b = np.ascontiguousarray(weights.T), True
        y = _projection(parameter, kernel, transpose_b, weights_type)
        results.append(FUSED[fused](y))
        del weights, kernel
    outputs, sinks = [r.output(0) for r in results], []
    if stateful:
        state_input, output, sink = _stateful_attention()
        parameters.append(state_input)
        outputs.append(output)
        sinks.append(sink)
    model = ov.Model(outputs, sinks, parameters)
    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint or keras_hub_hint, **(config or {})},
    )
    request = compiled.create_infer_request()
    inputs = [np.ones((1, rows), np.float32) for rows, _ in shapes]
    if stateful:
        inputs.append(np.ones(STATE_ROW, np.float32))
    request.infer(inputs)  # first run: weights packed
    compile_s = time.perf_counter() - start
    growth = process.memory_info().rss - before
    rates = []
    for _ in range(repeats):
        request.reset_state()  # a state of one row, not a growing one
        start = time.perf_counter()
        request.infer(inputs)
        rates.append(total / (time.perf_counter() - start) / GB)
    return total, rates, compile_s, growth, _kernels(compiled)


def _stateful_attention():
    """(its input, its output, its Assign): one query row attending to a
    state variable that each inference extends by that row."""
    info = ov.op.util.VariableInfo()
    *batch_heads, _, features = STATE_ROW
    info.data_shape = ov.PartialShape([*batch_heads, -1, features])
    info.data_type = ov.Type.f32
    info.variable_id = "bandwidth_state"
    variable = ov.op.util.Variable(info)
    row = ov_opset.parameter(list(STATE_ROW), ov.Type.f32)
    empty = ov_opset.broadcast(
        ov_opset.constant(np.float32(0)),
        ov_opset.constant(np.array([*batch_heads, 0, features], np.int64)),
    )
    state = ov_opset.read_value(empty, variable)
    keys = ov_opset.concat([state, row], 2)
    attention = ov_opset.scaled_dot_product_attention(row, keys, keys)
    return row, attention.output(0), ov_opset.assign(keys, variable)


def fully_connected_layers(compiled):
    """The FullyConnected layers of a compiled model's runtime graph."""
    for node in compiled.get_runtime_model().get_ordered_ops():
        if node.get_rt_info()["layerType"].astype(str) == "FullyConnected":
            yield node


def _kernels(compiled):
    kernels = {}
    for node in fully_connected_layers(compiled):
        kernel = node.get_rt_info()["primitiveType"].astype(str)
        kernels[kernel] = kernels.get(kernel, 0) + 1
    return kernels


def _projection(parameter, kernel, transpose_b, weights_type):
    """``parameter @ kernel`` with the kernel stored as ``weights_type``."""
    if weights_type == "f16-decompressed":
        constant = ov_opset.constant(kernel, dtype=ov.Type.f16)
        weights = ov_opset.convert(constant, ov.Type.f32)
        weights.get_rt_info()[DECOMPRESSION] = ""  # half_weights' mark
        return ov_opset.matmul(parameter, weights, False, transpose_b)
    if weights_type in ("f32", "f16", "bf16"):
        element_type = getattr(ov.Type, weights_type)
        x = parameter
        if weights_type != "f32":  # activations in the weights' type
            x = ov_opset.convert(parameter, element_type)
        constant = ov_opset.constant(kernel, dtype=element_type)
        return ov_opset.matmul(x, constant, False, transpose_b)
    x = ov_opset.convert(parameter, ov.Type.i8)
    constant = ov_opset.constant(kernel.astype(np.int8))
    if weights_type == "i8":
        x = ov_opset.convert(x, ov.Type.i32)
        return ov_opset.matmul(
            x, ov_opset.convert(constant, ov.Type.i32), False, transpose_b
        )
    columns = kernel.shape[0] if transpose_b else kernel.shape[1]
    scale_shape = (columns, 1) if transpose_b else (1, columns)
    w = ov_opset.multiply(
        ov_opset.convert(constant, ov.Type.f32),
        ov_opset.constant(np.ones(scale_shape, np.float32)),
    )
    y = ov_opset.matmul(ov_opset.convert(x, ov.Type.f32), w, False, transpose_b)
    return ov_opset.convert(y, ov.Type.i32)


def _config(text):
    key, _, value = text.partition("=")
    return key, value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bandwidth")
    parser.add_argument(
        "--model", choices=sorted(SHAPES), default="gpt2_medium"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--layout", choices=["kn", "nk", "both"], default="kn")
    parser.add_argument("--weights", choices=sorted(WEIGHTS), default="f32")
    parser.add_argument("--fused", choices=list(FUSED), default="none")
    parser.add_argument(
        "--config",
        type=_config,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another CPU plugin property, e.g. "
        "DYNAMIC_QUANTIZATION_GROUP_SIZE=0",
    )
    parser.add_argument(
        "--stateful",
        action="store_true",
        help="add an attention on a state variable: the CPU plugin then "
        "treats the model as an LLM, as it does genai's IRs",
    )
    parser.add_argument(
        "--hint",
        choices=["f32", "f16", "bf16"],
        default=None,
        help="INFERENCE_PRECISION_HINT (default: keras-hub's for the weights)",
    )
    args = parser.parse_args(argv)
    hint = args.hint or WEIGHTS[args.weights][1]
    layouts = ["kn", "nk"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        total, rates, compile_s, growth, kernels = fully_connected_bandwidth(
            SHAPES[args.model],
            args.repeats,
            layout,
            args.weights,
            hint,
            dict(args.config),
            args.fused,
            args.stateful,
        )
        median = statistics.median(rates)
        print(
            f"{args.model}, layout {layout}: {total / GB:.2f} GB of "
            f"{args.weights} projection weights (hint {hint}"
            + "".join(f", {key}={value}" for key, value in args.config)
            + (", stateful" if args.stateful else "")
            + "); compile + "
            f"first run {compile_s:.2f} s, RSS growth {growth / 2**20:.0f} MB"
        )
        print(
            f"  FullyConnected read bandwidth: median {median:.1f} GB/s "
            f"[{min(rates):.1f}-{max(rates):.1f}] over {len(rates)} steps; "
            "kernels: "
            + ", ".join(f"{kernel} x{n}" for kernel, n in kernels.items())
            + ("" if args.fused == "none" else f" (each with {args.fused})")
        )
        print(
            f"  ceiling: {median * GB / total:.1f} tokens/s "
            f"[{min(rates) * GB / total:.1f}-{max(rates) * GB / total:.1f}]"
        )


if __name__ == "__main__":
    main()
