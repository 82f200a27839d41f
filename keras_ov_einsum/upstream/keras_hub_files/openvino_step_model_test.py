import os
import unittest.mock

import keras
import numpy as np
import openvino as ov
import pytest
from absl.testing import parameterized

from keras_hub.src.models.gemma.gemma_backbone import GemmaBackbone
from keras_hub.src.models.gemma.gemma_causal_lm import GemmaCausalLM
from keras_hub.src.models.gpt2.gpt2_backbone import GPT2Backbone
from keras_hub.src.models.gpt2.gpt2_causal_lm import GPT2CausalLM
from keras_hub.src.models.llama.llama_backbone import LlamaBackbone
from keras_hub.src.models.llama.llama_causal_lm import LlamaCausalLM
from keras_hub.src.tests.test_case import TestCase
from keras_hub.src.utils.openvino_step_model import StepModelGenerateFunction
from keras_hub.src.utils.openvino_step_model import build_step_model
from keras_hub.src.utils.openvino_step_model import compile_step_model
from keras_hub.src.utils.openvino_step_model import use_step_model

NUM_LAYERS = 2


def _causal_lm(family, dtype="float32", **kwargs):
    """A tiny causal LM with random weights and greedy sampling. Llama and
    Gemma have fewer key/value heads than query heads."""
    keras.utils.set_random_seed(0)
    common = dict(vocabulary_size=64, num_layers=NUM_LAYERS, dtype=dtype)
    common.update(hidden_dim=16, intermediate_dim=32, **kwargs)
    if family == "gpt2":
        backbone = GPT2Backbone(num_heads=2, max_sequence_length=16, **common)
        causal_lm = GPT2CausalLM(backbone=backbone, preprocessor=None)
    elif family == "llama":
        backbone = LlamaBackbone(
            num_query_heads=4, num_key_value_heads=2, **common
        )
        causal_lm = LlamaCausalLM(backbone=backbone, preprocessor=None)
    else:
        backbone = GemmaBackbone(
            num_query_heads=4, num_key_value_heads=2, head_dim=8, **common
        )
        causal_lm = GemmaCausalLM(backbone=backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    return causal_lm


def _runtime_layer_types(compiled_model):
    return [
        op.get_rt_info()["layerType"].astype(str)
        for op in compiled_model.get_runtime_model().get_ops()
    ]


class _Float32Compute:
    """Compiles every model with `INFERENCE_PRECISION_HINT=f32` on a CPU
    reported without float16 arithmetic: where the CPU computes in
    bfloat16 or float16, two graphs rounding at different places may pick
    different tokens at a near tie."""

    def __enter__(self):
        compile_model = ov.Core.compile_model
        get_property = ov.Core.get_property

        def float32_compile_model(core, model, device=None, config=None):
            config = {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
            return compile_model(core, model, device, config)

        def float32_get_property(core, *args):
            value = get_property(core, *args)
            if args[-1] == "OPTIMIZATION_CAPABILITIES":
                value = [item for item in value if item != "FP16"]
            return value

        self._patches = [
            unittest.mock.patch.object(ov.Core, name, function)
            for name, function in (
                ("compile_model", float32_compile_model),
                ("get_property", float32_get_property),
            )
        ]
        for patch in self._patches:
            patch.start()

    def __exit__(self, *args):
        for patch in self._patches:
            patch.stop()


@pytest.mark.skipif(
    keras.config.backend() != "openvino",
    reason="OpenVINO tests only run with OpenVINO backend",
)
class OpenVINOStepModelTest(TestCase):
    def setUp(self):
        super().setUp()
        # Two rows of different lengths (3 and 5 tokens), padded to 12.
        token_ids = np.zeros((2, 12), "int32")
        token_ids[0, :3] = [5, 17, 42]
        token_ids[1, :5] = [7, 7, 30, 1, 49]
        self.input_data = {
            "token_ids": token_ids,
            "padding_mask": token_ids != 0,
        }

    def _generate(
        self, causal_lm, step_model, inputs=None, stop_token_ids=None
    ):
        # A new generate function, as a new model would have: the Loop's
        # compiled model is kept on the model, whatever the stop tokens.
        causal_lm.generate_function = None
        causal_lm.ov_compiled_model = None
        switch = {"KERAS_HUB_OPENVINO_STEP_MODEL": "1" if step_model else "0"}
        with unittest.mock.patch.dict(os.environ, switch):
            outputs = causal_lm.generate(
                inputs or self.input_data, stop_token_ids=stop_token_ids
            )
        self.assertEqual(
            isinstance(causal_lm.generate_function, StepModelGenerateFunction),
            step_model,
        )
        return outputs

    def _assert_same_generation(self, outputs, expected):
        self.assertAllEqual(outputs["token_ids"], expected["token_ids"])
        self.assertAllEqual(outputs["padding_mask"], expected["padding_mask"])

    @parameterized.named_parameters(
        ("gpt2", "gpt2"), ("llama", "llama"), ("gemma", "gemma")
    )
    def test_generates_the_loops_tokens(self, family):
        causal_lm = _causal_lm(family)
        loop = self._generate(causal_lm, step_model=False)
        self._assert_same_generation(
            self._generate(causal_lm, step_model=True), loop
        )
        # Both rows stop early, each on a token of its own.
        stop_token_ids = (
            int(loop["token_ids"][0, 6]),
            int(loop["token_ids"][1, 8]),
        )
        self._assert_same_generation(
            self._generate(causal_lm, True, stop_token_ids=stop_token_ids),
            self._generate(causal_lm, False, stop_token_ids=stop_token_ids),
        )

    def test_caches_are_state_the_plugin_attends_to_in_place(self):
        # keras's MultiHeadAttention without dropout is one
        # ScaledDotProductAttention, which the CPU plugin fuses with its
        # two caches: it reads them from state and appends to them.
        causal_lm = _causal_lm("gpt2", dropout=0.0)
        model = build_step_model(causal_lm, "CPU")
        self.assertEqual(
            [i.get_partial_shape().to_string() for i in model.inputs],
            ["[?,?]", "[]", "[?]"],
        )
        self.assertEqual(len(model.outputs), 1)
        self.assertEqual(len(model.get_variables()), 2 * NUM_LAYERS)
        compiled_model = compile_step_model(model, "CPU", "float32")
        types = _runtime_layer_types(compiled_model)
        self.assertEqual(types.count("MemoryInput"), 2 * NUM_LAYERS)
        self.assertNotIn("ScatterNDUpdate", types)
        attentions = [
            op
            for op in compiled_model.get_runtime_model().get_ops()
            if op.get_rt_info()["layerType"].astype(str)
            == "ScaledDotProductAttention"
        ]
        self.assertEqual(len(attentions), NUM_LAYERS)
        for attention in attentions:
            sources = [
                i.get_source_output().get_node().get_rt_info()["layerType"]
                for i in attention.inputs()
            ]
            self.assertEqual(
                [source.astype(str) for source in sources].count("MemoryInput"),
                2,
            )
        loop = self._generate(causal_lm, step_model=False)
        self._assert_same_generation(
            self._generate(causal_lm, step_model=True), loop
        )

    def test_each_call_starts_from_an_empty_state(self):
        causal_lm = _causal_lm("llama")
        expected = self._generate(causal_lm, step_model=False)
        other = {key: value.copy() for key, value in self.input_data.items()}
        other["token_ids"][:, :3] = other["token_ids"][:, :3][::-1] + 1
        causal_lm.generate_function = None
        causal_lm.generate(other, stop_token_ids=None)
        # Left over, the first call's positions would be attended to.
        outputs = causal_lm.generate(self.input_data, stop_token_ids=None)
        self.assertIsInstance(
            causal_lm.generate_function, StepModelGenerateFunction
        )
        self._assert_same_generation(outputs, expected)

    def test_one_row_and_a_prompt_that_fills_the_sequence(self):
        causal_lm = _causal_lm("gemma")
        one_row = {k: v[1:] for k, v in self.input_data.items()}
        self._assert_same_generation(
            self._generate(causal_lm, True, inputs=one_row),
            self._generate(causal_lm, False, inputs=one_row),
        )
        full = {"token_ids": np.full((1, 4), 3, "int32")}
        full["padding_mask"] = np.ones((1, 4), bool)
        outputs = self._generate(causal_lm, True, inputs=full)
        self.assertAllEqual(outputs["token_ids"], full["token_ids"])

    def test_weights_assigned_since_are_traced_again(self):
        causal_lm = _causal_lm("gpt2")
        self._generate(causal_lm, step_model=True)
        first_compiled_model = causal_lm.generate_function.compiled_model
        rng = np.random.default_rng(1)
        weights = causal_lm.get_weights()
        causal_lm.set_weights(
            [rng.normal(size=w.shape).astype(w.dtype) for w in weights]
        )
        outputs = causal_lm.generate(self.input_data, stop_token_ids=None)
        self.assertIsNot(
            causal_lm.generate_function.compiled_model, first_compiled_model
        )
        self._assert_same_generation(
            outputs, self._generate(causal_lm, step_model=False)
        )

    def test_float16_generates_the_loops_tokens(self):
        causal_lm = _causal_lm("llama", dtype="float16")
        with _Float32Compute():
            loop = self._generate(causal_lm, step_model=False)
            outputs = self._generate(causal_lm, step_model=True)
            compiled_model = causal_lm.generate_function.compiled_model
        self._assert_same_generation(outputs, loop)
        # The cache is kept in the Loop's execution precision: float32.
        self.assertEqual(
            compiled_model.get_property("KV_CACHE_PRECISION"), ov.Type.f32
        )

    def test_float16_cache_where_the_cpu_computes_in_float16(self):
        causal_lm = _causal_lm("gpt2", dtype="float16")
        outputs = self._generate(causal_lm, step_model=True)
        self.assertAllEqual(
            outputs["token_ids"][:, :3], self.input_data["token_ids"][:, :3]
        )
        capabilities = ov.Core().get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        )
        expected = ov.Type.f16 if "FP16" in capabilities else ov.Type.f32
        compiled_model = causal_lm.generate_function.compiled_model
        self.assertEqual(
            compiled_model.get_property("KV_CACHE_PRECISION"), expected
        )

    def test_other_samplers_and_models_keep_the_loop(self):
        causal_lm = _causal_lm("gpt2")
        self.assertTrue(use_step_model(causal_lm))
        with unittest.mock.patch.dict(
            os.environ, {"KERAS_HUB_OPENVINO_STEP_MODEL": "0"}
        ):
            self.assertFalse(use_step_model(causal_lm))
        # A mock of the instance's method (as keras-hub's early stopping
        # tests do) is not the cache code the step model knows.
        with unittest.mock.patch.object(
            causal_lm, "call_with_cache", wraps=causal_lm.call_with_cache
        ):
            self.assertFalse(use_step_model(causal_lm))
        self.assertTrue(use_step_model(causal_lm))

        class OwnCacheCausalLM(GPT2CausalLM):
            def call_with_cache(self, *args, **kwargs):
                return super().call_with_cache(*args, **kwargs)

        subclass = OwnCacheCausalLM(backbone=causal_lm.backbone)
        subclass.compile(sampler="greedy")
        self.assertFalse(use_step_model(subclass))
        causal_lm.compile(sampler="top_k")
        self.assertFalse(use_step_model(causal_lm))
