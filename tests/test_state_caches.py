"""The state_caches part: the stepwise step model keeps each layer's key
and value cache in OpenVINO state, in the form the CPU plugin fuses into
its attention. Its tokens against stock's, in every dtype, are
test_stepwise's (fresh processes, every default part on)."""

import causal_lms
import numpy as np
import openvino as ov
import pytest

import keras_ov_einsum
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.generate import stepwise
from keras_ov_einsum.parts.generate.state_caches import (
    LABEL,
    _repeats,
    repeated_heads,
)

LAYERS = 2  # causal_lms' models


def _generated(family, prompt=None, dtype="float32", **switches):
    """generate()'s token ids, its compiled step model and the part's
    decisions, a new generate function made under ``switches``."""
    causal_lm = causal_lms.causal_lm(family, dtype)
    with keras_ov_einsum.enabled(**switches):
        out = causal_lm.generate(
            prompt or causal_lms.prompt(), stop_token_ids=None
        )
        explanation = keras_ov_einsum.explain()
    # It ran step by step: an inference that fails falls back to stock,
    # whose tokens are the same.
    generated = [d for d in explanation if d.equation == stepwise.LABEL]
    assert [d.lowered for d in generated] == [True], generated
    return (
        np.asarray(out["token_ids"]),
        causal_lm.generate_function.compiled_model,
        [d for d in explanation if d.equation == LABEL],
    )


def _runtime_types(compiled):
    return [
        op.get_rt_info()["layerType"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
    ]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_plugin_appends_to_each_cache_in_its_attention(family, dtype):
    """Inputs: token ids, cache index, beam_idx; one output; a ReadValue
    and an Assign a cache, both held by the plugin's fused attention (one
    a layer, reading the two MemoryInputs of its layer's caches): no cache
    write, no Concat left; the state is kept float32 (the plugin's default
    would quantize it to u8), a float16 model's float16 where the CPU
    computes in float16 (there a float32 state left all but the first
    layer unfused). The tokens are layer_caches' (Llama: through its
    repeated key/value heads)."""
    tokens, compiled, (decision,) = _generated(family, dtype=dtype)
    cache_tokens, _, none = _generated(family, dtype=dtype, state_caches=False)
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    kept = (
        "float16"
        if dtype == "float16" and "FP16" in capabilities
        else "float32"
    )
    assert decision.lowered and none == []
    assert decision.reason.startswith(f"{2 * LAYERS} ReadValue/Assign pairs")
    assert decision.reason.endswith(f"the state kept {kept}")
    np.testing.assert_array_equal(tokens, cache_tokens)

    assert [str(i.get_partial_shape()) for i in compiled.inputs] == [
        "[?,?]",
        "[]",
        "[?]",
    ]
    assert len(compiled.outputs) == 1
    assert str(compiled.get_property("KV_CACHE_PRECISION")) == (
        f"<Type: '{kept}'>"
    )
    types = _runtime_types(compiled)
    assert types.count("MemoryInput") == 2 * LAYERS
    assert "ScatterNDUpdate" not in types
    attentions = [
        op
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str)
        == "ScaledDotProductAttention"
    ]
    assert len(attentions) == LAYERS
    for attention in attentions:
        sources = [
            i.get_source_output().get_node().get_rt_info()["layerType"]
            for i in attention.inputs()
        ]
        assert [s.astype(str) for s in sources].count("MemoryInput") == 2


def test_each_row_reads_its_own_cache():
    """Two rows of different prompts, one row alone: the state keeps each
    row's positions (beam_idx is the identity), and the tokens are
    layer_caches' either way."""
    prompt = causal_lms.prompt()
    for rows in (prompt, {k: v[1:] for k, v in prompt.items()}):
        tokens, _, _ = _generated("gpt2", rows)
        cache_tokens, _, _ = _generated("gpt2", rows, state_caches=False)
        np.testing.assert_array_equal(tokens, cache_tokens)


def test_a_second_call_starts_from_an_empty_state():
    """The state is emptied before each call: after a call on another
    prompt, generate() gives layer_caches' tokens. (Left over, the first
    call's positions would be attended to: the causal mask admits the
    state's first positions.)"""
    other = causal_lms.prompt()
    other["token_ids"][:, :3] = other["token_ids"][:, :3][::-1] + 1
    want, _, _ = _generated("llama", state_caches=False)
    causal_lm = causal_lms.causal_lm("llama")
    with keras_ov_einsum.enabled():
        causal_lm.generate(other, stop_token_ids=None)
        got = causal_lm.generate(causal_lms.prompt(), stop_token_ids=None)
        explanation = keras_ov_einsum.explain()
    np.testing.assert_array_equal(got["token_ids"], want)
    # Both calls ran step by step (a failed one falls back to stock,
    # whose tokens are the same): 13 inferences each, no internal error.
    assert explanation.counts[stepwise.STEPS_LABEL] == 2 * 13
    assert [d.lowered for d in explanation if d.equation == stepwise.LABEL] == [
        True
    ]


def test_attention_by_einsums_keeps_the_cache_parameters():
    """Gemma's attention is two einsums, not the ScaledDotProductAttention
    the plugin appends to in place: the part declines and says why."""
    tokens, compiled, (decision,) = _generated("gemma")
    assert not decision.lowered
    assert decision.reason == "a cache is read by Einsum"
    assert len(compiled.inputs) == 1 + 2 * LAYERS + 1


def test_only_kerass_repeat_of_the_heads_is_rebuilt():
    """keras's repeat(x, 2, axis=2) is recognized, with its count; a take
    of other heads, or a repeat on another axis, is not."""
    import openvino as ov
    import openvino.opset14 as ov_opset
    from keras import ops

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    cache = ov_opset.parameter([-1, -1, 2, 8], ov.Type.f32)
    x = OpenVINOKerasTensor(cache.output(0))

    def gather_of(tensor):
        return tensor.output.get_node()

    with keras_ov_einsum.enabled():
        assert _repeats(gather_of(ops.repeat(x, 2, axis=2)), cache) == 2
        assert _repeats(gather_of(ops.repeat(x, 3, axis=2)), cache) == 3
        assert _repeats(gather_of(ops.take(x, [1, 0], axis=2)), cache) is None
        assert _repeats(gather_of(ops.repeat(x, 2, axis=1)), cache) is None


def test_the_rebuilt_repeat_is_numpys():
    """The Unsqueeze-Broadcast-Reshape that replaces keras's repeat of the
    key/value heads computes np.repeat(cache, r, axis=2): each head r
    times in a row. (Checked on its own: in the step model the plugin's
    fused attention maps heads itself and would hide another order.)"""
    import openvino as ov
    import openvino.opset14 as ov_opset

    cache = ov_opset.parameter([-1, -1, 3, 4], ov.Type.f32)
    model = ov.Model(
        [ov_opset.result(repeated_heads(cache.output(0), 2))], [cache]
    )
    values = np.arange(2 * 5 * 3 * 4, dtype="float32").reshape(2, 5, 3, 4)
    got = ov.Core().compile_model(model, "CPU")(values)[0]
    np.testing.assert_array_equal(got, np.repeat(values, 2, axis=2))


def test_switched_off_the_caches_cross_the_boundary():
    causal_lm = causal_lms.causal_lm("gpt2")
    with keras_ov_einsum.enabled(state_caches=False):
        model, layout = stepwise.trace_step_model(causal_lm)
    assert not layout.in_state and layout.per_layer
    assert len(model.get_parameters()) == 1 + 2 * LAYERS + 1
    assert not model.get_variables()
