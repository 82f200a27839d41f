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
"""

import argparse
import statistics
import time

import numpy as np
import psutil

__all__ = ["fully_connected_bandwidth", "main"]

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


def fully_connected_bandwidth(shapes, repeats=20, layout="kn"):
    """Bytes per step, [GB/s per repeat], compile seconds, growth bytes."""
    import openvino as ov
    import openvino.opset13 as ov_opset

    rng = np.random.default_rng(0)
    parameters, results, total = [], [], 0
    for rows, columns in shapes:
        weights = rng.standard_normal((rows, columns), dtype=np.float32)
        total += weights.nbytes
        x = ov_opset.parameter([1, rows], ov.Type.f32)
        parameters.append(x)
        if layout == "kn":
            kernel, transpose_b = weights, False
        else:
            kernel, transpose_b = np.ascontiguousarray(weights.T), True
        constant = ov_opset.constant(kernel)
        results.append(ov_opset.matmul(x, constant, False, transpose_b))
        del weights, kernel
    model = ov.Model([r.output(0) for r in results], parameters)
    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    inputs = [np.ones((1, rows), np.float32) for rows, _ in shapes]
    request.infer(inputs)  # first run: weights packed
    compile_s = time.perf_counter() - start
    growth = process.memory_info().rss - before
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer(inputs)
        rates.append(total / (time.perf_counter() - start) / GB)
    return total, rates, compile_s, growth


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bandwidth")
    parser.add_argument(
        "--model", choices=sorted(SHAPES), default="gpt2_medium"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--layout", choices=["kn", "nk", "both"], default="kn")
    args = parser.parse_args(argv)
    layouts = ["kn", "nk"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        total, rates, compile_s, growth = fully_connected_bandwidth(
            SHAPES[args.model], args.repeats, layout
        )
        median = statistics.median(rates)
        print(
            f"{args.model}, layout {layout}: {total / GB:.2f} GB of float32 "
            f"projection weights; compile + first run {compile_s:.2f} s, "
            f"RSS growth {growth / 2**20:.0f} MB"
        )
        print(
            f"  FullyConnected read bandwidth: median {median:.1f} GB/s "
            f"[{min(rates):.1f}-{max(rates):.1f}] over {len(rates)} steps"
        )
        print(
            f"  ceiling: {median * GB / total:.1f} tokens/s "
            f"[{min(rates) * GB / total:.1f}-{max(rates) * GB / total:.1f}]"
        )


if __name__ == "__main__":
    main()
