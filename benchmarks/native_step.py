"""Profile one decoding step of the native IR, beside ``benchmarks.step``.

    python -m benchmarks.native_step [--model gpt2_medium]
                                     [--dtype float32|float16|int8] [--steps 8]
                                     [--dynamic-quantization default|off]

The IR is the harness's own export of the preset (optimum-intel, cached
beside it; ``benchmarks/native.py``), the model openvino-genai's
``LLMPipeline`` runs. Here plain OpenVINO runs it, compiled with the f32
hint as the native rows are: the prompt, then ``--steps`` greedy decoding
steps with the key/value cache in the model's state, three times; the last
run's steps are profiled (``PERF_COUNT``) and the same table as
``benchmarks.step`` prints is printed: milliseconds a step per layer type
and per FullyConnected kernel. ``--dynamic-quantization off`` compiles the
IR without the plugin's dynamic quantization of int8-weight layers' inputs
(openvino-genai leaves it at the plugin's default, on where the CPU has
int8 dot products; the ``int8`` part turns it off for Keras's graphs).
"""

import argparse
import collections
import time

import numpy as np

from benchmarks import models, native
from benchmarks.step import _median_range

__all__ = ["compile_config", "main", "profile"]


def compile_config(dynamic_quantization="default"):
    """The native rows' compile properties (the f32 hint), profiled;
    ``dynamic_quantization`` "off": group size 0, the plugin's off."""
    from keras_ov_einsum.parts.int8.int8 import DYNAMIC_QUANTIZATION

    config = {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
    if dynamic_quantization == "off":  # the int8 part's setting
        config[DYNAMIC_QUANTIZATION] = 0
    elif dynamic_quantization != "default":
        raise ValueError(f"dynamic_quantization {dynamic_quantization!r}")
    return config


def profile(ir, prompt, steps, dynamic_quantization="default"):
    """(step wall times in ms, {layer type: [layers, ms a step]},
    {FullyConnected kernel: [layers, ms a step]})."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(f"{ir}/openvino_model.xml")
    config = compile_config(dynamic_quantization)
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def infer(ids, past):
        feed = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, past + len(ids)), np.int64),
            "position_ids": np.arange(past, past + len(ids))[None],
            "beam_idx": np.zeros(1, np.int32),
        }
        start = time.perf_counter()
        request.infer(feed)
        elapsed = (time.perf_counter() - start) * 1e3
        return int(request.get_tensor("logits").data[0, -1].argmax()), elapsed

    step_ms = []
    for _ in range(3):
        request.reset_state()
        token, _ = infer(prompt, 0)
        for step in range(steps):
            token, elapsed = infer([token], len(prompt) + step)
            step_ms.append(elapsed)
    layers = collections.defaultdict(lambda: [0, 0.0])
    kernels = collections.defaultdict(lambda: [0, 0.0])
    # The counters of the request's last inference: one decoding step.
    for info in request.profiling_info:
        if info.status != info.Status.EXECUTED:
            continue
        ms = info.real_time.total_seconds() * 1e3
        layers[info.node_type][0] += 1
        layers[info.node_type][1] += ms
        if info.node_type.startswith("FullyConnected"):
            kernels[info.exec_type][0] += 1
            kernels[info.exec_type][1] += ms
    return step_ms, dict(layers), dict(kernels)


def _table(title, rows, total, top):
    lines = [f"| {title} | layers | ms a step | share |", "|---|---|---|---|"]
    ordered = sorted(rows.items(), key=lambda item: -item[1][1])[:top]
    for name, (count, ms) in ordered:
        lines.append(f"| {name} | {count} | {ms:.2f} | {ms / total:.0%} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2_medium")
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "int8"], default="float32"
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--dynamic-quantization", choices=["default", "off"], default="default"
    )
    args = parser.parse_args(argv)
    preset = models.build_preset(args.model)
    exported = native.export(preset, args.dtype)
    ir, prompt = exported["ir"], exported["prompt_ids"]
    step_ms, layers, kernels = profile(
        ir, prompt, args.steps, args.dynamic_quantization
    )
    total = sum(ms for _, ms in layers.values())
    print(
        f"{args.model} {args.dtype} IR ({ir}), plain OpenVINO, f32 hint, "
        f"dynamic quantization {args.dynamic_quantization}: "
        f"{args.steps} decoding steps x 3; a step {_median_range(step_ms)} "
        f"ms; a step profiled: {total:.1f} ms"
    )
    print()
    print("\n".join(_table("layer type", layers, total, 12)))
    print()
    print("\n".join(_table("FullyConnected kernel", kernels, total, 12)))


if __name__ == "__main__":
    main()
