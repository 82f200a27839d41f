"""The half_weights part: a float16 model's step model keeps its kernels
float16, and the CPU plugin packs them so, computing in float32 (on a CPU
with bfloat16 units the plugin computes keras-hub's f16 hint in bfloat16:
``causal_lms.float32_compute`` makes every CPU compute as one without).

Its tokens are stock's: tests/test_stepwise.py compares them in float16
for each family with every default part on.
"""

import collections
import gc
import json
import sys

import causal_lms
import numpy as np
import openvino as ov
import openvino.opset14 as ov_opset
import pytest

import keras_ov_einsum
from keras_ov_einsum.parts.generate import half_weights, stepwise


def _input_types(compiled, layer_type, index):
    """The element types of input ``index`` of the compiled model's layers
    of ``layer_type``."""
    return collections.Counter(
        node.input(index).get_element_type().get_type_name()
        for node in compiled.get_runtime_model().get_ops()
        if node.get_rt_info()["layerType"].astype(str) == layer_type
    )


def _kernel_types(compiled):
    """The element types of the compiled model's FullyConnected weights."""
    return _input_types(compiled, "FullyConnected", 1)


def _generated(family, dtype, **switches):
    """``family``'s tiny causal LM in ``dtype`` after one stepwise
    generate() under ``enable(**switches)``: its compiled step model and
    the half_weights decisions."""
    causal_lm = causal_lms.causal_lm(family, dtype)
    with causal_lms.float32_compute(), keras_ov_einsum.enabled(**switches):
        causal_lm.generate(causal_lms.prompt(), stop_token_ids=None)
        explanation = keras_ov_einsum.explain()
    decisions = [d for d in explanation if d.equation == half_weights.LABEL]
    return causal_lm.generate_function.compiled_model, decisions


# 2 layers of q, k, v, output and the feed-forward projections (GPT-2's
# two, Gemma's three), and the tied logits; Gemma's query, key and value
# kernels reach their MatMul through a Transpose.
@pytest.mark.parametrize("family, kernels", [("gpt2", 13), ("gemma", 15)])
def test_the_kernels_reach_the_plugin_float16(family, kernels):
    compiled, (decision,) = _generated(family, "float16")
    assert decision.lowered
    assert decision.reason.startswith(
        f"{kernels} float16 kernels and 1 embedding tables kept"
    )
    assert set(_kernel_types(compiled)) == {"f16"}
    # The token embedding's rows are gathered from the float16 table.
    assert _input_types(compiled, "Gather", 0)["f16"] == 1
    # Switched off: stock's float32 copy of each kernel and table.
    compiled, decisions = _generated(family, "float16", half_weights=False)
    assert decisions == []
    assert set(_kernel_types(compiled)) == {"f32"}
    assert "f16" not in _input_types(compiled, "Gather", 0)


def test_bfloat16_is_declined():
    compiled, (decision,) = _generated("llama", "bfloat16")
    assert not decision.lowered
    assert decision.reason.startswith("bfloat16: ")
    assert "f16" not in _kernel_types(compiled)


def test_float32_is_not_its_case():
    _, decisions = _generated("gpt2", "float32")
    assert decisions == []


def test_other_devices_are_declined():
    assert half_weights.decline_reason("float16", "CPU") is None
    assert "GPU.0" in half_weights.decline_reason("float16", "GPU.0")


def test_the_kernels_are_views_of_the_variables():
    """No copy: each rewritten kernel's Constant reads the variable's own
    buffer (GPT-2's kernels reach their MatMul through a Reshape)."""
    causal_lm = causal_lms.causal_lm("gpt2", "float16")
    with keras_ov_einsum.enabled():
        model, _ = stepwise.trace_step_model(causal_lm)
    assert half_weights.keep_float16(model) == (13, 1)
    nodes = [variable.value.output.get_node() for variable in causal_lm.weights]
    buffers = {
        node.get_data().ctypes.data
        for node in nodes
        if node.get_type_name() == "Constant"
    }
    kernels = [
        node.input_value(0).get_node()
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Convert"
        and "decompression_0" in node.get_rt_info()
    ]
    assert len(kernels) == 13 + 1  # and the embedding table itself
    assert {kernel.get_data().ctypes.data for kernel in kernels} <= buffers
    # The model is marked a language model: one state variable.
    assert len(model.get_variables()) == 1
    assert len(model.get_sinks()) == 1


def test_a_view_keeps_its_constant_alive():
    """A view outlives every other reference to the Constant it reads (a
    view taken from the Constant's tensor alone read freed memory)."""
    values = np.arange(64 * 16 * 8, dtype=np.float16).reshape(64, 16, 8)
    x = ov_opset.parameter([1, 64], ov.Type.f16)
    constant = ov_opset.constant(values)
    kernel = ov_opset.reshape(
        constant, ov_opset.constant(np.array([64, 128])), False
    )
    matmul = ov_opset.matmul(x, kernel, False, False)
    view = half_weights._float16_kernel(matmul)
    rebuilt = ov.op.Constant(view, shared_memory=True)
    assert rebuilt.get_data().ctypes.data == constant.get_data().ctypes.data
    del view, matmul, kernel, constant
    gc.collect()
    # Memory freed now would be handed out again and overwritten.
    overwrite = [np.ones(values.size, np.float16) for _ in range(64)]
    np.testing.assert_array_equal(rebuilt.get_data(), values.reshape(64, 128))
    del overwrite


def _first_call_growth(mode):
    """RSS growth (MB) of a 4-layer GPT-2 of GPT-2 Medium's widths in
    float16 over its first generate(), in a fresh process: ``mode`` "on"
    (every default part), "off" (half_weights off) or "unmarked" (on,
    without the language model's mark); state_caches off in each (a model
    with its caches in state is a language model to the plugin, marked
    or not)."""
    return causal_lms.run_fresh(__file__, mode)


def test_one_float16_copy_of_the_kernels_only_in_a_marked_model():
    """The CPU plugin keeps the kernels' float16 bytes once only in a
    model it takes for a language model: without the mark it held 97 MB
    more (its float16 kernels: 96 MB), with the part off 286 MB more (a
    float32 copy of each)."""
    kernels = 4 * 12 * 2**20 * 2 / 2**20  # 4 x 12 M float16 values, MB
    growth = {mode: _first_call_growth(mode) for mode in ("on", "unmarked")}
    assert growth["unmarked"] - growth["on"] > 0.7 * kernels
    assert _first_call_growth("off") - growth["on"] > 1.5 * kernels


def _measure_first_call_growth(mode):
    import keras
    import keras_hub
    import psutil

    if mode == "unmarked":
        half_weights._mark_language_model = lambda model: None
    keras_ov_einsum.enable(half_weights=mode != "off", state_caches=False)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=512,
        num_layers=4,
        num_heads=16,
        hidden_dim=1024,
        intermediate_dim=4096,
        max_sequence_length=32,
        dtype="float16",
    )
    causal_lm = keras_hub.models.GPT2CausalLM(
        backbone=backbone, preprocessor=None
    )
    causal_lm.compile(sampler="greedy")
    token_ids = np.zeros((1, 8), "int32")
    token_ids[0, :2] = [5, 7]
    process = psutil.Process()
    before = process.memory_info().rss
    causal_lm.generate(
        {"token_ids": token_ids, "padding_mask": token_ids != 0},
        stop_token_ids=None,
    )
    return (process.memory_info().rss - before) / 2**20


if __name__ == "__main__":
    with causal_lms.float32_compute():
        print(json.dumps(_measure_first_call_growth(sys.argv[1])))
