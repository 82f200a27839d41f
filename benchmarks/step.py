"""Profile one decoding step of keras-hub's generate() on OpenVINO.

    python -m benchmarks.step [--model gpt2_medium] [--fix off|on|...]
                              [--dtype float32|...] [--repeats 3]
                              [--unfuse-gelu] [--graph-only] [--json FILE]

keras-hub compiles generate() into one ov.Model: the prompt pass, then a
Loop whose body is one decoding step (every layer, one token). The CPU
plugin's profiling counters report that Loop as a single layer, so this
tool replays it: the graph up to the Loop runs on the prompt to give the
Loop its first inputs, then the body alone, compiled with keras-hub's
device and configuration, runs step by step, each step's outputs fed back
as the Loop feeds them. The replay must end with the tokens generate()
returned (checked: a replay that computes something else measures nothing).

Per step: the wall time (a body compiled as keras-hub compiles it), the
time of each layer type and kernel (a second copy compiled with
PERF_COUNT, whose counters cost some time of their own), and the weight
bytes the FullyConnected layers read, with the bandwidth that makes.
``--unfuse-gelu`` measures a what-if on the body first (``unfuse_gelu``).
Every record also counts the operations of generate()'s graph as traced,
before OpenVINO compiles it (``graph_operations``); ``--graph-only`` stops
there.
"""

import argparse
import collections
import contextlib
import json
import os
import statistics
import time

import numpy as np

from benchmarks import models
from benchmarks.bandwidth import GB, fully_connected_layers
from benchmarks.models import PROMPT
from benchmarks.runner import DTYPES, FIX_PARTS
from benchmarks.sampler import MB

__all__ = [
    "capture_generate",
    "graph_operations",
    "main",
    "profile_steps",
    "render",
    "unfuse_gelu",
]


@contextlib.contextmanager
def _capturing(captured):
    """Record the ov.Model, device and config keras-hub compiles, and the
    inputs it runs the compiled model on."""
    import openvino as ov
    from keras import tree
    from keras_hub.src.utils import openvino_utils

    compile_model, get_outputs = (
        ov.Core.compile_model,
        openvino_utils.get_outputs,
    )

    def capture_compile(core, model, device_name=None, config=None, **kwargs):
        compiled = compile_model(core, model, device_name, config, **kwargs)
        captured.update(
            model=model,
            device=device_name,
            config=dict(config or {}),
            compiled=compiled,
        )
        return compiled

    def capture_outputs(inputs, *args, **kwargs):
        outputs = get_outputs(inputs, *args, **kwargs)
        # In the order of the model's results (keras-hub flattens both).
        captured["inputs"] = [np.asarray(x) for x in tree.flatten(inputs)]
        captured["outputs"] = [np.asarray(x) for x in tree.flatten(outputs)]
        return outputs

    ov.Core.compile_model = capture_compile
    openvino_utils.get_outputs = capture_outputs
    try:
        yield captured
    finally:
        ov.Core.compile_model = compile_model
        openvino_utils.get_outputs = get_outputs


def capture_generate(causal_lm, max_length):
    """generate() once; returns its text and what keras-hub compiled."""
    captured = {}
    with _capturing(captured):
        text = causal_lm.generate(
            PROMPT, max_length=max_length, stop_token_ids=None
        )
    missing = {"model", "device", "config", "inputs", "outputs"} - set(captured)
    if missing:
        raise RuntimeError(
            f"generate() did not compile through keras-hub: {missing}"
        )
    captured["text"] = text
    return captured


def _the_loop(model):
    loops = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Loop"
    ]
    if len(loops) != 1:
        raise RuntimeError(
            f"expected generate()'s one decoding Loop, found {len(loops)}"
        )
    return loops[0]


class _LoopReplay:
    """The Loop's body run by hand, with the Loop's feedback edges."""

    def __init__(self, captured, core):
        import openvino as ov

        model, config = captured["model"], captured["config"]
        self.loop = loop = _the_loop(model)
        self.body = _float32_boundary(loop.get_function().clone())
        iteration, self.condition = loop.get_special_body_ports()
        if iteration >= 0:
            raise RuntimeError("a Loop with an iteration input is not replayed")
        # Everything the Loop takes (trip count, first condition, first
        # values), computed by the graph before it from generate()'s inputs.
        before = _float32_boundary(
            ov.Model(list(loop.input_values()), model.get_parameters()).clone()
        )
        self.prefix = core.compile_model(before, captured["device"], config)
        self.first_inputs = [
            np.array(value)
            for value in self.prefix(captured["inputs"]).to_tuple()
        ]
        self.descriptions = loop.get_input_descriptions()
        kinds = {type(d).__name__ for d in self.descriptions}
        if not kinds <= {"MergedInputDescription", "InvariantInputDescription"}:
            raise RuntimeError(f"Loop inputs not replayed: {sorted(kinds)}")
        self.outputs = loop.get_output_descriptions()
        if {type(d).__name__ for d in self.outputs} != {
            "BodyOutputDescription"
        }:
            raise RuntimeError(
                "only a Loop's last-iteration outputs are replayed"
            )

    def run(self, request, on_step=None):
        """Run the body until its condition is false; returns the Loop's
        outputs. ``on_step(seconds, request)`` after every step."""
        trip_count = int(self.first_inputs[0])
        values = [None] * len(self.body.get_parameters())
        for description in self.descriptions:
            values[description.body_parameter_index] = self.first_inputs[
                description.input_index
            ]
        go_on = bool(self.first_inputs[1])
        steps = 0
        results = None
        while go_on and (trip_count < 0 or steps < trip_count):
            start = time.perf_counter()
            results = [np.array(r) for r in request.infer(values).to_tuple()]
            seconds = time.perf_counter() - start
            steps += 1
            if on_step:
                on_step(seconds, request)
            for description in self.descriptions:
                if type(description).__name__ == "MergedInputDescription":
                    values[description.body_parameter_index] = results[
                        description.body_value_index
                    ]
            go_on = bool(results[self.condition])
        if results is None:
            raise RuntimeError("the Loop ran no step")
        return steps, {
            d.output_index: results[d.body_value_index] for d in self.outputs
        }


def _float32_boundary(model):
    """``model`` with its float16/bfloat16 inputs and outputs in float32,
    converted to their own type inside.

    The Loop keeps the values it feeds back (the cache) inside the compiled
    graph, in the plugin's execution precision: float32 on a CPU without
    float16/bfloat16 units, whatever the f16 hint asks. A replay handing
    them over in their own type rounds them between steps, and computes
    something else: a bfloat16 GPT-2 Medium's replay did not end with
    generate()'s tokens. (The stepwise part's step model crosses its
    boundary in float32 for the same reason.)
    """
    import openvino as ov
    import openvino.opset13 as ov_opset

    low = (ov.Type.f16, ov.Type.bf16)
    for parameter in model.get_parameters():
        element_type = parameter.get_element_type()
        if element_type not in low:
            continue
        readers = list(parameter.output(0).get_target_inputs())
        parameter.set_element_type(ov.Type.f32)
        inside = ov_opset.convert(parameter.output(0), element_type).output(0)
        for reader in readers:
            reader.replace_source_output(inside)
    for result in model.get_results():
        value = result.input_value(0)
        if value.get_element_type() in low:
            outside = ov_opset.convert(value, ov.Type.f32).output(0)
            result.input(0).replace_source_output(outside)
    model.validate_nodes_and_infer_types()
    return model


def graph_operations(model):
    """The operations of generate()'s ov.Model as keras traced it: how
    many before the Loop and in its body, by type, and how many are
    Converts to the type their input already has (see the align_types
    part)."""
    from keras_ov_einsum.parts.ops.align_types import (
        is_identity_convert,
    )

    body = _the_loop(model).get_function()
    counts = {}
    for where, graph in (("before the Loop", model), ("Loop body", body)):
        ops = graph.get_ordered_ops()
        types = collections.Counter(node.get_type_name() for node in ops)
        identity = sum(is_identity_convert(node) for node in ops)
        counts[where] = {
            "operations": len(ops),
            "identity_converts": identity,
            "types": dict(types.most_common()),
        }
    return counts


def _generated_loop_outputs(captured, loop):
    """{Loop output index: what generate() returned for it}, for the
    model's results that are Loop outputs (keras-hub's token ids)."""
    expected = {}
    for index, result in enumerate(captured["model"].get_results()):
        source = result.input_value(0)
        if source.get_node().get_friendly_name() == loop.get_friendly_name():
            expected[source.get_index()] = captured["outputs"][index]
    return expected


def _weights(compiled):
    """{FullyConnected layer name: (bytes, type) of its weights input}: its
    second input in the runtime model, a constant subgraph the plugin
    computes once, not every step. A kernel may pack these into its own
    type (a bf16 kernel given float32 weights reads bf16), so the bytes
    are what the layer is handed, not always what it reads."""
    weights = {}
    for node in fully_connected_layers(compiled):
        value = node.input_value(1)
        size = int(np.prod(list(value.get_partial_shape().to_shape())))
        element_type = value.get_element_type()
        weights[node.get_friendly_name()] = (
            size * element_type.size,
            element_type.get_type_name(),
        )
    return weights


def unfuse_gelu(body):
    """A what-if, not something the package does: give every GELU's input
    a second consumer (its shape, as an extra body result), so the CPU
    plugin cannot fuse the GELU into the FullyConnected layer before it and
    keeps that layer on its plain-layer kernel. Returns how many."""
    import openvino.opset13 as ov_opset

    extra = [
        ov_opset.result(ov_opset.shape_of(node.input_value(0)))
        for node in body.get_ordered_ops()
        if node.get_type_name() == "Gelu"
    ]
    body.add_results(extra)  # after the Loop's own: their indices stay
    return len(extra)


def profile_steps(captured, repeats=3, unfused_gelu=False):
    """Replay the decoding Loop ``repeats`` times, timed and profiled, and
    time generate()'s whole graph and the part before the Loop beside it.
    ``unfused_gelu``: the body changed by ``unfuse_gelu`` first."""
    import openvino as ov
    import psutil

    process = psutil.Process()
    core = ov.Core()
    rss = process.memory_info().rss
    replay = _LoopReplay(captured, core)
    unfused = unfuse_gelu(replay.body) if unfused_gelu else 0
    prefix_mb = (process.memory_info().rss - rss) / MB
    expected = _generated_loop_outputs(captured, replay.loop)
    device, config = captured["device"], captured["config"]
    rss = process.memory_info().rss
    timed = core.compile_model(replay.body, device, config)
    timed_request = timed.create_infer_request()
    replay.run(timed_request)  # the first run packs the weights
    body_mb = (process.memory_info().rss - rss) / MB
    profiled = core.compile_model(
        replay.body, device, {**config, "PERF_COUNT": True}
    )
    profiled_request = profiled.create_infer_request()
    replay.run(profiled_request)
    weights = _weights(profiled)
    whole, prefix, step = [], [], []
    # Summed over every profiled step; divided by their number below.
    profiled_steps = 0
    layer_ms, layer_count = collections.Counter(), collections.Counter()
    kernel_ms, kernel_count = collections.Counter(), collections.Counter()
    kernel_bytes = collections.Counter()
    weight_types = collections.defaultdict(collections.Counter)

    def profiled_step(_seconds, request):
        nonlocal profiled_steps
        profiled_steps += 1
        for info in request.get_profiling_info():
            ms = info.real_time.total_seconds() * 1e3
            layer_ms[info.node_type] += ms
            layer_count[info.node_type] += 1
            # FullyConnectedCompressed: a layer on int8 weights (its
            # runtime layer type is FullyConnected, as _weights finds it).
            if info.node_type.startswith("FullyConnected"):
                size, element_type = weights[info.node_name]
                kernel_ms[info.exec_type] += ms
                kernel_count[info.exec_type] += 1
                kernel_bytes[info.exec_type] += size
                weight_types[info.exec_type][element_type] += 1

    matches = bool(expected)
    for _ in range(repeats):
        whole.append(_seconds(captured["compiled"], captured["inputs"]))
        prefix.append(_seconds(replay.prefix, captured["inputs"]))
        steps, outputs = replay.run(
            timed_request, lambda seconds, _: step.append(seconds)
        )
        replay.run(profiled_request, profiled_step)
        matches &= all(
            np.array_equal(outputs[index], value)
            for index, value in expected.items()
        )
    n = profiled_steps
    kernels = {}
    for kernel, ms in kernel_ms.most_common():
        read = kernel_bytes[kernel] / n
        kernels[kernel] = {
            "layers": kernel_count[kernel] // n,
            "ms": round(ms / n, 3),
            "weight_mb": round(read / MB, 1),
            "weight_types": {
                name: count // n
                for name, count in weight_types[kernel].most_common()
            },
            "gb_per_s": round(read / GB / (ms / n / 1e3), 1),
        }
    return {
        "steps": steps,
        "repeats": repeats,
        "replay_matches_generate": matches,
        "generate_ms": _milliseconds(whole),
        "prefix_ms": _milliseconds(prefix),
        "step_ms": _milliseconds(step),
        "profiled_step_ms": round(sum(layer_ms.values()) / n, 3),
        "prefix_compile_mb": round(prefix_mb, 1),
        "body_compile_mb": round(body_mb, 1),
        "layer_types": {
            name: {"layers": layer_count[name] // n, "ms": round(ms / n, 3)}
            for name, ms in layer_ms.most_common()
        },
        "fully_connected": kernels,
        "weight_bytes": sum(size for size, _ in weights.values()),
        "unfused_gelu": unfused,
        "config": {key: str(value) for key, value in config.items()},
    }


def _seconds(compiled, inputs):
    start = time.perf_counter()
    compiled(inputs)
    return time.perf_counter() - start


def _milliseconds(seconds):
    return [round(value * 1e3, 3) for value in seconds]


def _median_range(values):
    return (
        f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"
    )


def _step_model_operations(causal_lm, parts):
    """The operations of the stepwise part's step model as traced with
    ``parts`` (the part's generate() runs it instead of the Loop this tool
    replays), as inside generate(), where the attention and layer_norm
    parts act."""
    import keras_ov_einsum
    from keras_ov_einsum.core.context import as_in_generate
    from keras_ov_einsum.parts.generate import stepwise

    with keras_ov_einsum.enabled(**parts), as_in_generate():
        model, _ = stepwise.trace_step_model(causal_lm)
    return len(model.get_ordered_ops())


def render_graph(record):
    parts = record["graph_operations"]
    total = sum(part["operations"] for part in parts.values())
    identity = sum(part["identity_converts"] for part in parts.values())
    line = (
        f"generate()'s graph as traced ({record['model']} {record['dtype']}, "
        f"OpenVINO {record['fix']}): {total} operations ("
        + ", ".join(f"{where} {p['operations']}" for where, p in parts.items())
        + f"), {identity} of them Converts to their input's own type"
    )
    if record.get("step_model_operations"):
        line += (
            "; the stepwise part's step model as traced: "
            f"{record['step_model_operations']} operations"
        )
    return line


def render(record, top=12):
    """The record as the text this tool prints."""
    if "profiled_step_ms" not in record:  # --graph-only
        return render_graph(record)
    profiled = record["profiled_step_ms"]
    steps = record["steps"]
    replayed = statistics.median(
        record["prefix_ms"]
    ) + steps * statistics.median(record["step_ms"])
    lines = [
        f"{record['model']} {record['dtype']}, OpenVINO {record['fix']}"
        + (
            f" (what-if: {record['unfused_gelu']} GELUs unfused)"
            if record.get("unfused_gelu")
            else ""
        )
        + ": "
        f"{steps} decoding steps x {record['repeats']} replays; "
        "the replay ends with generate()'s tokens: "
        + ("yes" if record["replay_matches_generate"] else "NO"),
        f"generate()'s graph: {_median_range(record['generate_ms'])} ms; "
        f"the part before the Loop {_median_range(record['prefix_ms'])} ms "
        f"+ {steps} x step {_median_range(record['step_ms'])} ms "
        f"= {replayed:.1f} ms",
        f"a step profiled: {profiled:.1f} ms; RSS growth: compiling the part "
        f"before the Loop {record['prefix_compile_mb']:.0f} MB, the body "
        f"(and its first run) {record['body_compile_mb']:.0f} MB",
        "",
        render_graph(record),
        "",
        "| layer type | layers | ms a step | share |",
        "|---|---|---|---|",
    ]
    for name, layer in list(record["layer_types"].items())[:top]:
        lines.append(
            f"| {name} | {layer['layers']} | {layer['ms']:.2f} | "
            f"{layer['ms'] / profiled:.0%} |"
        )
    lines += [
        "",
        "| FullyConnected kernel | layers | ms a step | weights handed as "
        "| weight MB | GB/s |",
        "|---|---|---|---|---|---|",
    ]
    for kernel, row in record["fully_connected"].items():
        lines.append(
            f"| {kernel} | {row['layers']} | {row['ms']:.2f} | "
            + ", ".join(f"{t} x{c}" for t, c in row["weight_types"].items())
            + f" | {row['weight_mb']:.1f} | {row['gb_per_s']:.1f} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _stock():
    import keras_ov_einsum

    if keras_ov_einsum.is_enabled():
        raise RuntimeError("--fix off needs the stock backend: disable() first")
    yield


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step")
    parser.add_argument(
        "--model", choices=sorted(models.MODELS), default="gpt2_medium"
    )
    parser.add_argument("--fix", choices=list(FIX_PARTS), default="on")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--max-length", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--unfuse-gelu",
        action="store_true",
        help="what-if: keep the plugin from fusing GELUs into the "
        "FullyConnected layers of the step (see unfuse_gelu)",
    )
    parser.add_argument(
        "--graph-only",
        action="store_true",
        help="count the traced graph's operations; no replay, no timing",
    )
    parser.add_argument(
        "--json", default=None, help="also write the record here"
    )
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "openvino"
    import keras_hub

    import keras_ov_einsum
    from benchmarks.worker import load_causal_lm
    from keras_ov_einsum.core.registry import dependents

    parts = step_parts = FIX_PARTS[args.fix]
    stepwise_on = bool(parts and parts.get("stepwise"))
    if parts:
        # This tool replays stock's Loop, which the stepwise part replaces
        # by one step model run from Python: profile the Loop's step (the
        # parts that shape the step model go with it).
        off = dict.fromkeys(("stepwise", *dependents("stepwise")), False)
        parts = {**parts, **off}
    # Enabled for this call only: a second main() in the same process
    # (tests) gets its own parts, or the stock backend. The replay compiles
    # inside too, so that it gets the options the parts add to keras-hub's
    # (the int8 part's: without them the CPU plugin quantizes int8-weight
    # layers' inputs where it has int8 dot products, and the replay ends
    # with other tokens than generate()).
    patched = keras_ov_einsum.enabled(**parts) if parts else _stock()
    with patched:
        preset = str(models.build_preset(args.model))
        causal_lm = load_causal_lm(keras_hub, preset, args.dtype, parts)
        causal_lm.compile(sampler="greedy")
        captured = capture_generate(causal_lm, args.max_length)
        step_model = None
        if stepwise_on:
            step_model = _step_model_operations(causal_lm, step_parts)
        record = dict(
            model=args.model,
            dtype=args.dtype,
            fix=args.fix,
            text=captured["text"],
            graph_operations=graph_operations(captured["model"]),
            step_model_operations=step_model,
        )
        if not args.graph_only:
            record.update(
                profile_steps(captured, args.repeats, args.unfuse_gelu)
            )
    print(render(record))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return 0 if record.get("replay_matches_generate", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
