"""Tiny keras-hub causal LMs (random weights) and a script that prints
their greedy tokens as JSON, for comparisons in fresh processes.

``python tests/causal_lms.py FAMILY MODE DTYPE``: MODE ``stock`` (no part),
``parts`` (every default part but ``stepwise``) or ``stepwise`` (every
default part). The script generates three times, on the same model: without stop
tokens, then with two stop tokens (one the first call generated in each
row), then with the prompt's padding as the stop token, dropping the
compiled generate function in between as a new model would not have one.
It prints {"plain": ..., "stop": ..., "padding": ..., "decisions": [...],
"half_weights": [...]} with each call's token ids and padding mask and
the stepwise and half_weights parts' decisions.

``python tests/causal_lms.py FAMILY MODE DTYPE edges`` generates instead
where stock's generate raises or nearly does (``edges``) and prints what
each call returned or raised.
"""

import contextlib
import json
import os
import sys

import numpy as np

__all__ = [
    "FAMILIES",
    "SEQUENCE_LENGTH",
    "causal_lm",
    "compile_step_model",
    "float32_compute",
    "prompt",
    "prompt_and_step",
    "run_failing",
    "run_fresh",
]

FAMILIES = ("gpt2", "llama", "gemma")
# GPT-2's max_sequence_length: the rows of its position embedding.
SEQUENCE_LENGTH = 32


def run_fresh(script, *args):
    """The JSON that ``python script *args`` prints last, run in a fresh
    process on the OpenVINO backend with this repository importable."""
    completed = _run_script(script, *args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_failing(script, *args):
    """The standard error of ``python script *args``, run as ``run_fresh``
    runs it, which must fail."""
    completed = _run_script(script, *args)
    assert completed.returncode != 0, completed.stdout[-3000:]
    return completed.stderr


def _run_script(script, *args):
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="openvino", PYTHONPATH=root)
    return subprocess.run(
        [sys.executable, script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def causal_lm(family, dtype="float32", seed=0):
    """A 2-layer ``family`` causal LM, vocabulary 512, weights drawn from
    ``seed``, greedy sampling, no preprocessor. Llama and Gemma have fewer
    key/value heads than query heads (the cache holds the key/value
    heads)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    common = dict(vocabulary_size=512, num_layers=2, dtype=dtype)
    if family == "gpt2":
        backbone = keras_hub.models.GPT2Backbone(
            num_heads=2,
            hidden_dim=64,
            intermediate_dim=128,
            max_sequence_length=SEQUENCE_LENGTH,
            **common,
        )
        model_class = keras_hub.models.GPT2CausalLM
    elif family == "llama":
        backbone = keras_hub.models.LlamaBackbone(
            num_query_heads=4,
            num_key_value_heads=2,
            hidden_dim=64,
            intermediate_dim=128,
            **common,
        )
        model_class = keras_hub.models.LlamaCausalLM
    elif family == "gemma":
        backbone = keras_hub.models.GemmaBackbone(
            num_query_heads=4,
            num_key_value_heads=2,
            hidden_dim=64,
            intermediate_dim=128,
            head_dim=16,
            **common,
        )
        model_class = keras_hub.models.GemmaCausalLM
    else:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    model = model_class(backbone=backbone, preprocessor=None)
    # The constructor compiles with keras-hub's default, top-k sampling.
    model.compile(sampler="greedy")
    return model


@contextlib.contextmanager
def float32_compute():
    """Inside the block, a compile asked for ``INFERENCE_PRECISION_HINT=f16``
    computes in float32. keras-hub compiles float16 and bfloat16 models
    with that hint (and the stepwise part its step model of them), which
    the CPU plugin computes in float32 on a CPU without float16 or bfloat16
    units and in bfloat16 on one with bfloat16 units (AVX512_BF16, AMX):
    there two graphs that round at different places may pick different
    tokens at a near tie. The contract the tests check (stock's tokens, the
    kernels the plugin keeps) is under float32 compute, on any CPU."""
    import openvino as ov

    stock_compile_model = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kwargs):
        config = dict(config or {})
        if str(config.get("INFERENCE_PRECISION_HINT", "")).lower() == "f16":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        return stock_compile_model(self, model, device_name, config, **kwargs)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = stock_compile_model


def prompt():
    """Two rows of different lengths (3 and 5 tokens), padded to 16."""
    token_ids = np.zeros((2, 16), "int32")
    token_ids[0, :3] = [5, 17, 42]
    token_ids[1, :5] = [7, 7, 300, 1, 99]
    return {"token_ids": token_ids, "padding_mask": token_ids != 0}


def compile_step_model(model):
    """The stepwise part's float32 step ``model`` compiled for the CPU."""
    from keras_ov_einsum.parts.generate import stepwise

    return stepwise.compile_step_model(model, "CPU", "float32")


def prompt_and_step(compiled, layout):
    """A ``compiled`` step model (cache ``layout`` as ``_trace`` gives it)
    run on the first 3 tokens of both prompt rows with a cache of 16, then
    on their 4th: [the prompt pass's probabilities, its cache, the step's
    probabilities, its cache], each cache as the stack keras-hub's
    ``call_with_cache`` returns, whatever the layout."""
    tokens = prompt()["token_ids"][:, :5]
    caches = [np.zeros(shape, "float32") for shape in layout.shapes(2, 16)]
    count = len(caches)
    prompt_pass = compiled([tokens[:, :3], *caches, np.int32(0)])
    caches = [prompt_pass[i].copy() for i in range(1, count + 1)]
    step = compiled([tokens[:, 3:4], *caches, np.int32(3)])
    step_caches = [step[i] for i in range(1, count + 1)]
    return [
        prompt_pass[0],
        _stacked(caches, layout),
        step[0],
        _stacked(step_caches, layout),
    ]


def _stacked(caches, layout):
    """The cache as keras-hub stacks it: [batch, layers, 2, length, heads,
    head_dim]."""
    if not layout.per_layer:
        (cache,) = caches
        return cache
    pairs = [
        np.stack(caches[i : i + 2], axis=1) for i in range(0, len(caches), 2)
    ]
    return np.stack(pairs, axis=1)


def _generate(model, stop_token_ids):
    model.generate_function = None
    model.ov_compiled_model = None
    out = model.generate(prompt(), stop_token_ids=stop_token_ids)
    return {
        "token_ids": np.asarray(out["token_ids"]).tolist(),
        "padding_mask": np.asarray(out["padding_mask"]).tolist(),
    }


def edges(model):
    """{call: outcome} for the prompt's token ids as int32 and as int64,
    and padded to ``SEQUENCE_LENGTH`` and one position past it; an
    outcome is {"token_ids", "dtype"} or {"error": the exception's type
    name, "message"}."""
    calls = {"int32": prompt(), "int64": prompt()}
    calls["int64"]["token_ids"] = calls["int64"]["token_ids"].astype("int64")
    for name, length in [
        ("all_positions", SEQUENCE_LENGTH),
        ("past_positions", SEQUENCE_LENGTH + 1),
    ]:
        token_ids = np.zeros((2, length), "int32")
        token_ids[:, :16] = prompt()["token_ids"]
        calls[name] = {"token_ids": token_ids, "padding_mask": token_ids != 0}
    outcomes = {}
    for name, inputs in calls.items():
        model.generate_function = None
        model.ov_compiled_model = None
        try:
            out = model.generate(inputs, stop_token_ids=None)
        except Exception as error:
            outcomes[name] = {
                "error": type(error).__name__,
                "message": str(error),
            }
        else:
            token_ids = np.asarray(out["token_ids"])
            outcomes[name] = {
                "token_ids": token_ids.tolist(),
                "dtype": str(token_ids.dtype),
            }
    return outcomes


def main(family, mode, dtype, calls="generate"):
    with float32_compute():
        if calls == "edges":
            import keras_ov_einsum

            if mode != "stock":
                keras_ov_einsum.enable(stepwise=mode == "stepwise")
            print(json.dumps(edges(causal_lm(family, dtype))))
        else:
            _main(family, mode, dtype)


def _main(family, mode, dtype):
    import keras_ov_einsum

    if mode != "stock":
        keras_ov_einsum.enable(stepwise=mode == "stepwise")
    model = causal_lm(family, dtype)
    plain = _generate(model, None)
    # Both rows stop early: generation ends before the sequence does.
    stop_token_ids = [plain["token_ids"][0][6], plain["token_ids"][1][8]]
    stop = _generate(model, stop_token_ids)
    # The prompt's padding (0) is a stop token: every row is done before
    # the first step, which OpenVINO's Loop runs all the same.
    padding = _generate(model, [0])
    from keras_ov_einsum.parts.generate import half_weights, stepwise

    def decisions(label):
        return [
            {"lowered": decision.lowered, "reason": decision.reason}
            for decision in keras_ov_einsum.explain()
            if decision.equation == label
        ]

    print(
        json.dumps(
            {
                "plain": plain,
                "stop": stop,
                "padding": padding,
                "decisions": decisions(stepwise.LABEL),
                "half_weights": decisions(half_weights.LABEL),
                "not_installed": [
                    decision.equation.split(":")[0]
                    for decision in keras_ov_einsum.explain()
                    if decision.equation.endswith(": not installed")
                ],
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "openvino")
    main(*sys.argv[1:])
