import unittest.mock

import keras
import numpy as np
from absl.testing import parameterized
from keras import ops

from keras_hub.src.layers.modeling import rotary_embedding
from keras_hub.src.layers.modeling import transformer_decoder
from keras_hub.src.models.gemma import gemma_decoder_block
from keras_hub.src.models.gemma.gemma_backbone import GemmaBackbone
from keras_hub.src.models.gemma.gemma_causal_lm import GemmaCausalLM
from keras_hub.src.models.gpt2.gpt2_backbone import GPT2Backbone
from keras_hub.src.models.gpt2.gpt2_causal_lm import GPT2CausalLM
from keras_hub.src.models.llama import llama_decoder
from keras_hub.src.models.llama.llama_backbone import LlamaBackbone
from keras_hub.src.models.llama.llama_causal_lm import LlamaCausalLM
from keras_hub.src.tests.test_case import TestCase
from keras_hub.src.utils.sharing_utils import share_across_layers
from keras_hub.src.utils.sharing_utils import sharing_across_layers

NUM_LAYERS = 2


def _causal_lm(family):
    keras.utils.set_random_seed(0)
    common = dict(vocabulary_size=64, num_layers=NUM_LAYERS)
    common.update(hidden_dim=16, intermediate_dim=32)
    if family == "gpt2":
        backbone = GPT2Backbone(num_heads=2, max_sequence_length=16, **common)
        return GPT2CausalLM(backbone=backbone, preprocessor=None)
    if family == "llama":
        backbone = LlamaBackbone(
            num_query_heads=4, num_key_value_heads=2, **common
        )
        return LlamaCausalLM(backbone=backbone, preprocessor=None)
    backbone = GemmaBackbone(
        num_query_heads=4, num_key_value_heads=2, head_dim=8, **common
    )
    return GemmaCausalLM(backbone=backbone, preprocessor=None)


# Where each family's decoder layers build their causal mask.
CAUSAL_MASKS = {
    "gpt2": transformer_decoder,
    "llama": llama_decoder,
    "gemma": gemma_decoder_block,
}


class SharingUtilsTest(TestCase):
    def _cache(self, causal_lm):
        _, cache = causal_lm._build_cache(np.zeros((1, 8), "int32"))
        return cache

    def _call_with_cache(self, causal_lm, cache, shared=True):
        token_ids = np.array([[5, 17, 42, 9]], "int32")
        call_with_cache = type(causal_lm).call_with_cache
        if not shared:  # the method without its sharing block
            call_with_cache = call_with_cache.__wrapped__
        return call_with_cache(causal_lm, token_ids, cache, 2)

    @parameterized.named_parameters(
        ("gpt2", "gpt2"), ("llama", "llama"), ("gemma", "gemma")
    )
    def test_one_causal_mask_a_call(self, family):
        causal_lm = _causal_lm(family)
        cache = self._cache(causal_lm)
        module = CAUSAL_MASKS[family]
        with unittest.mock.patch.object(
            module,
            "compute_causal_mask",
            wraps=module.compute_causal_mask,
        ) as compute_causal_mask:
            self._call_with_cache(causal_lm, cache)
            self.assertEqual(compute_causal_mask.call_count, 1)
            compute_causal_mask.reset_mock()
            self._call_with_cache(causal_lm, cache, shared=False)
            self.assertEqual(compute_causal_mask.call_count, NUM_LAYERS)

    def test_one_rotary_table_a_call(self):
        # Llama's queries (4 heads) and keys (2 heads) of every layer.
        causal_lm = _causal_lm("llama")
        cache = self._cache(causal_lm)

        def tables(einsum):
            # The product of the positions and the frequencies.
            return [
                c for c in einsum.call_args_list if c.args[0] == "bi,j->bij"
            ]

        with unittest.mock.patch.object(
            rotary_embedding.ops, "einsum", wraps=ops.einsum
        ) as einsum:
            self._call_with_cache(causal_lm, cache)
            self.assertLen(tables(einsum), 1)
            einsum.reset_mock()
            self._call_with_cache(causal_lm, cache, shared=False)
            self.assertLen(tables(einsum), 2 * NUM_LAYERS)

    @parameterized.named_parameters(
        ("gpt2", "gpt2"), ("llama", "llama"), ("gemma", "gemma")
    )
    def test_same_outputs(self, family):
        causal_lm = _causal_lm(family)
        cache = self._cache(causal_lm)
        shared = self._call_with_cache(causal_lm, cache)
        own = self._call_with_cache(causal_lm, cache, shared=False)
        for a, b in zip(shared, own):
            self.assertAllEqual(
                ops.convert_to_numpy(a), ops.convert_to_numpy(b)
            )

    def test_keys_and_blocks(self):
        class Layer(keras.layers.Layer):
            def __init__(self, scale=1, **kwargs):
                super().__init__(**kwargs)
                self.scale = scale
                self.calls = 0

            @share_across_layers(lambda x, flag: (x, flag), layer_config=True)
            def compute(self, x, flag=False):
                self.calls += 1
                return x * self.scale

            def get_config(self):
                return {**super().get_config(), "scale": self.scale}

        first, second, other = Layer(), Layer(), Layer(scale=2)
        x = ops.ones((2,))
        # Outside a block, every call computes.
        first.compute(x)
        second.compute(x)
        self.assertEqual((first.calls, second.calls), (1, 1))
        with sharing_across_layers():
            result = first.compute(x)
            self.assertIs(second.compute(x), result)
            # Another tensor, another flag or another config: computed.
            second.compute(ops.ones((2,)))
            second.compute(x, flag=True)
            self.assertAllClose(other.compute(x), [2.0, 2.0])
            with sharing_across_layers():  # a block of its own
                first.compute(x)
        self.assertEqual((first.calls, second.calls), (3, 3))
        self.assertEqual(other.calls, 1)
