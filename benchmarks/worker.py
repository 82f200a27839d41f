"""One measured run, in a fresh process: load a preset, generate twice.

Run by the runner as ``python -m benchmarks.worker ...`` with KERAS_BACKEND
set. Stages, each after ``gc.collect()`` (the original report's stages 0-5):
0 start, 1 frameworks imported, 2 model loaded, 3 after the first call
(which compiles), 4 after the second call, 5 after the model is deleted.
Writes one JSON record to ``--result``.
"""

import argparse
import json
import os
import sys
import time

from benchmarks import models
from benchmarks.models import PROMPT, PROMPTS
from benchmarks.runner import DTYPES, FIX_PARTS
from benchmarks.sampler import MB, MemorySampler, anon_file_fields

__all__ = ["load_causal_lm", "main"]

# The OpenVINO runtime layer types reported per configuration.
OV_LAYER_TYPES = (
    "Einsum",
    "MatMul",
    "FullyConnected",
    "Transpose",
    "Broadcast",
    "Reorder",
)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", required=True)
    parser.add_argument("--fix", choices=list(FIX_PARTS), default="off")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--max-length", type=int, default=10)
    parser.add_argument(
        "--new-tokens",
        type=int,
        default=None,
        help="new tokens after the longest prompt (instead of --max-length)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="generate from models.PROMPTS' first N prompts in one call",
    )
    parser.add_argument(
        "--compiled-cache",
        default=None,
        metavar="FOLDER",
        help="with the fix: the compiled_cache part on, its entries here",
    )
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    fix = FIX_PARTS[args.fix]
    if args.compiled_cache:
        if not fix:
            raise SystemExit("--compiled-cache needs --fix (stock has none)")
        os.environ["KERAS_OV_EINSUM_CACHE_DIR"] = args.compiled_cache
        fix = {**fix, "stepwise": True, "compiled_cache": True}
    record = measure(
        args.preset,
        fix,
        args.max_length,
        args.dtype,
        args.new_tokens,
        args.batch,
    )
    with open(args.result, "w") as handle:
        json.dump(record, handle)


def measure(preset, fix, max_length, dtype="float32", new_tokens=None, batch=1):
    """``fix``: the parts to enable (None: stock); ``dtype``: see DTYPES;
    ``new_tokens``: generate that many after the longest prompt (instead
    of up to ``max_length``); ``batch``: one call on the first ``batch``
    of models.PROMPTS (ragged: each row keeps its own prompt and
    generates up to the same ``max_length``)."""
    if batch < 1 or batch > len(PROMPTS):
        raise SystemExit(f"--batch must be 1 to {len(PROMPTS)}")
    # One prompt: the string itself, as generate() was always called.
    prompts = PROMPT if batch == 1 else list(PROMPTS[:batch])
    record = {"stages": []}
    with MemorySampler() as sampler:

        def stage(name):
            return sampler.stage(record["stages"], name)

        stage("start")
        import keras
        import keras_hub

        backend = keras.config.backend()
        if fix:
            if backend != "openvino":
                raise SystemExit("--fix on applies to the openvino backend")
            import keras_ov_einsum

            keras_ov_einsum.enable(**fix)
        before_load = stage("imported")
        start = time.perf_counter()
        causal_lm = load_causal_lm(keras_hub, preset, dtype, fix)
        load_s = time.perf_counter() - start
        weight_mb = _weight_mb(causal_lm)
        # Greedy: the same tokens with and without the fix, run to run.
        causal_lm.compile(sampler="greedy")
        if new_tokens is not None:
            lengths = _prompt_lengths(causal_lm, prompts, _LONGEST_PROMPT)
            max_length = max(lengths) + new_tokens
        loaded = stage("loaded")

        marks = {}
        restore = (
            _mark_compile(sampler, marks) if backend == "openvino" else None
        )
        sampler.reset_peak()
        first_start = time.perf_counter()
        first_text = causal_lm.generate(
            prompts, max_length=max_length, stop_token_ids=None
        )
        first_s = time.perf_counter() - first_start
        first_call_peak = sampler.peak.rss
        after_first = stage("first call")
        if restore:
            restore()

        start = time.perf_counter()
        second_text = causal_lm.generate(
            prompts, max_length=max_length, stop_token_ids=None
        )
        second_s = time.perf_counter() - start
        stage("second call")
        # The memory figures end here: the ids below come from one more,
        # untimed call that the timed ones must not be charged with.
        highest = sampler.highest

        lengths = _prompt_lengths(causal_lm, prompts, max_length)
        # Every row's new tokens after the longest prompt's length, the
        # native rows' count: a shorter prompt's row generates more, up to
        # the same max_length, which its surplus counts apart.
        generated = len(lengths) * (max_length - max(lengths))
        surplus = sum(max_length - length for length in lengths) - generated
        prompt_ids, generated_ids = _token_ids(causal_lm, max_length, prompts)
        graph = _openvino_graph(causal_lm) if backend == "openvino" else None
        decisions = None
        if fix:
            explanation = keras_ov_einsum.explain()
            decisions = {
                "parts": fix,
                "lowered": len(explanation.lowered),
                "declined": len(explanation.declined),
                # Counted, not listed: the align_types part's Converts.
                "counts": dict(explanation.counts),
            }
            if fix.get("compiled_cache"):
                from keras_ov_einsum.parts.generate import compiled_cache

                # What the first call's step model came from.
                decisions["compiled_cache"] = [
                    decision.reason
                    for decision in explanation
                    if decision.equation == compiled_cache.LABEL
                ]
        del causal_lm
        stage("deleted")

    # As in the original report: load = stage 2 - stage 1, first-call
    # growth = stage 3 - stage 2 (both after gc), peak growth = the
    # process's peak RSS above stage 1, i.e. all the model cost on top of
    # the imported frameworks. Peaks come from the 20 ms sampler. Besides:
    # the peaks of RSS's anon and file parts, and the anon peak above
    # stage 1 (anon_growth_mb: memory that only swap can take back).
    record.update(
        backend=backend,
        device=_device(backend),
        versions=_versions(),
        load_mb=round((loaded - before_load) / MB, 1),
        compile_mb=round((after_first - loaded) / MB, 1),
        first_call_peak_mb=round((first_call_peak - loaded) / MB, 1),
        peak_rss_mb=round(highest.rss / MB, 1),
        peak_swap_mb=round(highest.swap / MB, 1),
        growth_mb=round((highest.rss - before_load) / MB, 1),
        **anon_file_fields(highest, sampler.staged["imported"]),
        dtype=dtype,
        weight_mb=round(weight_mb, 3),
        load_s=round(load_s, 3),
        first_s=round(first_s, 6),
        second_s=round(second_s, 6),
        max_length=max_length,
        new_tokens=generated,
        surplus_tokens=surplus,
        tokens_per_s=round(generated / second_s, 3) if second_s else None,
        first_text=first_text,
        second_text=second_text,
        same_text=first_text == second_text,
        prompt_ids=prompt_ids,
        generated_ids=generated_ids,
        graph=graph,
        decisions=decisions,
        timeline=sampler.timeline,
        **_split(marks, first_start, loaded, first_s, after_first),
    )
    return record


def _mark_compile(sampler, marks):
    """Time and RSS where keras-hub's first OpenVINO call moves from tracing
    generate() into an ov.Model to compiling it, and from compiling to
    running it: keras-hub's compile_model() (and the stepwise part's, which
    compiles its step model instead) is wrapped for the first call.
    Returns the function that unwraps it."""
    try:
        from keras_hub.src.utils import openvino_utils

        targets = [(openvino_utils, "compile_model")]
    except (ImportError, AttributeError):  # another keras-hub layout
        return None
    from keras_ov_einsum.parts.generate import stepwise

    targets.append((stepwise, "compile_step_model"))
    originals = [getattr(owner, name) for owner, name in targets]

    def marked(original):
        def compile_model(*args, **kwargs):
            marks.setdefault("traced", (time.perf_counter(), sampler.sample()))
            compiled = original(*args, **kwargs)
            marks.setdefault(
                "compiled", (time.perf_counter(), sampler.sample())
            )
            return compiled

        return compile_model

    for (owner, name), original in zip(targets, originals):
        setattr(owner, name, marked(original))

    def restore():
        for (owner, name), original in zip(targets, originals):
            setattr(owner, name, original)

    return restore


def _split(marks, start, loaded, first_s, after_first):
    """The first call in three parts: trace (keras builds the ov.Model),
    compile (OpenVINO), run (the first inference, which packs weights).
    MB: RSS growth over each part (the first two without a gc)."""
    if set(marks) != {"traced", "compiled"}:
        return {}
    (traced_t, traced), (compiled_t, compiled) = (
        marks["traced"],
        marks["compiled"],
    )
    return dict(
        split_trace_s=round(traced_t - start, 3),
        split_compile_s=round(compiled_t - traced_t, 3),
        split_run_s=round(start + first_s - compiled_t, 3),
        split_trace_mb=round((traced - loaded) / MB, 1),
        split_compile_mb=round((compiled - traced) / MB, 1),
        split_run_mb=round((after_first - compiled) / MB, 1),
    )


def load_causal_lm(keras_hub, preset, dtype, parts=None):
    """The preset under a weight format (DTYPES), for a row with ``parts``
    (None: stock). int8, float16 and int8_weights load the preset saved in
    that format (``models.saved_preset``, built beside ``preset`` once,
    before any measured run, by the runner), but a row that cannot load
    int8_weights' saved preset weights-only (``models.loads_saved``)
    quantizes the float32 preset here."""
    if models.loads_saved(dtype, parts):
        saved = str(models.saved_preset(preset, dtype))
        # keras-hub loads a float16 preset as float32 unless told (its
        # _resolve_dtype); an int8 preset keeps its quantized policies.
        policy = {"dtype": dtype} if dtype == "float16" else {}
        causal_lm = keras_hub.models.CausalLM.from_preset(saved, **policy)
    elif dtype == "int8_weights":
        causal_lm = keras_hub.models.CausalLM.from_preset(preset)
        causal_lm.backbone.quantize(
            "int8", config=models.int8_config("int8_weights")
        )
    elif dtype == "float32":  # the preset's own policy, as the report loads
        causal_lm = keras_hub.models.CausalLM.from_preset(preset)
    else:
        causal_lm = keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)
    if dtype == "int8_weights":
        _check_weights_only(causal_lm)
    return causal_lm


def _check_weights_only(causal_lm):
    """A row labeled int8_weights must not measure another quantization."""
    quantizing = [
        layer.path
        for layer in causal_lm.backbone._flatten_layers()
        if getattr(layer, "inputs_quantizer", None) is not None
    ]
    if quantizing:
        raise RuntimeError(
            f"int8_weights: {len(quantizing)} layers quantize their inputs "
            f"(e.g. {quantizing[0]}): not the weights-only model"
        )


def _weight_mb(causal_lm):
    """MB of the backbone's variables as stored (int8 kernels: 1 byte)."""
    import keras

    total = 0
    for variable in causal_lm.backbone.weights:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        size = 1
        for dim in variable.shape:
            size *= dim
        total += size * (2 if dtype == "bfloat16" else _itemsize(dtype))
    return total / MB


def _itemsize(dtype):
    import numpy as np

    return np.dtype(dtype).itemsize


# Longer than any of models.PROMPTS in any model's tokens.
_LONGEST_PROMPT = 256


def _prompt_lengths(causal_lm, prompts, sequence_length):
    """Each prompt's length in tokens as generate() packs it (GPT-2: the
    start token too) into ``sequence_length``; generate() fills every
    position after it up to max_length when no stop token is given."""
    rows = [prompts] if isinstance(prompts, str) else prompts
    packed = causal_lm.preprocessor.generate_preprocess(
        rows, sequence_length=sequence_length
    )
    return [int(row.sum()) for row in _numpy(packed["padding_mask"])]


def _token_ids(causal_lm, max_length, prompts=PROMPT):
    """(prompt ids, generated ids) of generate(prompts): the same call on
    the same packed prompts, with the preprocessor detached so that
    generate() returns token ids instead of text. One prompt: two lists;
    a batch: a list a row of each, each row's generated ids cut to those
    after the longest prompt's (what the native rows generate: as many a
    row)."""
    rows = [prompts] if isinstance(prompts, str) else prompts
    preprocessor = causal_lm.preprocessor
    packed = preprocessor.generate_preprocess(rows, sequence_length=max_length)
    causal_lm.preprocessor = None
    try:
        output = causal_lm.generate(
            packed, max_length=max_length, stop_token_ids=None
        )
    finally:
        causal_lm.preprocessor = preprocessor
    lengths = [int(row.sum()) for row in _numpy(packed["padding_mask"])]
    count = max_length - max(lengths)
    prompt_ids, generated_ids = [], []
    for row, length in zip(_numpy(output["token_ids"]), lengths):
        ids = [int(token) for token in row]
        prompt_ids.append(ids[:length])
        generated_ids.append(ids[length : length + count])
    if isinstance(prompts, str):
        return prompt_ids[0], generated_ids[0]
    return prompt_ids, generated_ids


def _device(backend):
    """The device keras-hub compiles for (its own choice: GPU if any);
    None for the other backends, which choose theirs without telling."""
    if backend != "openvino":
        return None
    from keras_hub.src.utils import openvino_utils

    return openvino_utils.get_device()


def _numpy(value):
    import keras

    return keras.ops.convert_to_numpy(value)


def _openvino_graph(causal_lm):
    # The stepwise part's generate function holds its step model; stock's
    # whole-generate model is the causal LM's.
    compiled = getattr(causal_lm.generate_function, "compiled_model", None)
    if compiled is None:
        compiled = getattr(causal_lm, "ov_compiled_model", None)
    if compiled is None:
        return None
    runtime = compiled.get_runtime_model()
    counts = {name: 0 for name in OV_LAYER_TYPES}
    constant_bytes = 0
    for node in runtime.get_ordered_ops():
        layer_type = node.get_rt_info()["layerType"].astype(str)
        if layer_type in counts:
            counts[layer_type] += 1
        if layer_type == "Const":
            output = node.output(0)
            shape = output.get_partial_shape()
            if shape.is_static:
                size = 1
                for dim in shape.to_shape():
                    size *= dim
                constant_bytes += size * output.get_element_type().size
    counts["constant_mb"] = round(constant_bytes / MB, 1)
    return counts


def _versions():
    from importlib import metadata

    names = ["keras", "keras-hub", "openvino", "numpy"]
    backend = os.environ.get("KERAS_BACKEND")
    names += {"tensorflow": ["tensorflow"], "torch": ["torch"]}.get(
        backend, ["jax", "jaxlib"] if backend == "jax" else []
    )
    versions = {"python": sys.version.split()[0]}
    for name in names:
        versions[name] = _version(metadata, name)
    # keras >= 3.16's OpenVINO backend is a package of its own.
    if backend == "openvino" and _version(metadata, "keras-openvino"):
        versions["keras-openvino"] = _version(metadata, "keras-openvino")
    return versions


def _version(metadata, name):
    """The installed version of ``name``, or of its nightly distribution
    (keras-nightly installs keras's modules), or None."""
    for distribution in (name, f"{name}-nightly"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


if __name__ == "__main__":
    main()
