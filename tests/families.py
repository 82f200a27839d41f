"""Tiny keras-hub models of every family that builds offline, for the
breadth tests in ``test_families.py``.

Run as a script (``python tests/families.py stock|fixed``), it builds every
model on one side, stock or under ``keras_ov_einsum.enable()``, and prints
one JSON line: per family, the greedy tokens (causal LMs) or the outputs
(encoders), how many calls the fix lowered, or why the model did not build.
Each side runs in a process of its own, so that nothing one side leaves in
the process (a compiled model, a cache) can reach the other.
"""

import json
import os
import sys

__all__ = ["CAUSAL_LMS", "ENCODERS"]

VOCABULARY = 64
HIDDEN = 16
HEADS = 2
INTERMEDIATE = 32

# family -> (backbone, task, backbone arguments): two layers, two heads of
# 8 (a head of 8 scales its query by 2**-1.5: not a power of two, so the
# prescale part declines; a head of 16 is lowered).
CAUSAL_LMS = {
    "gpt2": (
        "GPT2Backbone",
        "GPT2CausalLM",
        dict(num_heads=HEADS, max_sequence_length=32),
    ),
    "llama": (
        "LlamaBackbone",
        "LlamaCausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=1),
    ),
    "llama3": (
        "Llama3Backbone",
        "Llama3CausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=1),
    ),
    "mistral": (
        "MistralBackbone",
        "MistralCausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=1),
    ),
    "phi3": (
        "Phi3Backbone",
        "Phi3CausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=HEADS),
    ),
    "gemma": (
        "GemmaBackbone",
        "GemmaCausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=1, head_dim=16),
    ),
    "gemma3": (
        "Gemma3Backbone",
        "Gemma3CausalLM",
        dict(
            num_query_heads=HEADS,
            num_key_value_heads=1,
            head_dim=16,
            image_size=16,
            vision_encoder=None,
        ),
    ),
    "qwen2": (
        "Qwen2Backbone",
        "Qwen2CausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=1),
    ),
    "qwen3": (
        "Qwen3Backbone",
        "Qwen3CausalLM",
        dict(num_query_heads=HEADS, num_key_value_heads=1, head_dim=8),
    ),
    "qwen_moe": (
        "QwenMoeBackbone",
        "QwenMoeCausalLM",
        dict(
            num_query_heads=HEADS,
            num_key_value_heads=1,
            moe_intermediate_dim=16,
            shared_expert_intermediate_dim=16,
            num_experts=4,
            top_k=2,
        ),
    ),
    "mixtral": (
        "MixtralBackbone",
        "MixtralCausalLM",
        dict(
            num_query_heads=HEADS, num_key_value_heads=1, num_experts=4, top_k=2
        ),
    ),
    "falcon": (
        "FalconBackbone",
        "FalconCausalLM",
        dict(num_attention_heads=HEADS),
    ),
    "opt": (
        "OPTBackbone",
        "OPTCausalLM",
        dict(num_heads=HEADS, max_sequence_length=32),
    ),
    "bloom": ("BloomBackbone", "BloomCausalLM", dict(num_heads=HEADS)),
    "gpt_neox": (
        "GPTNeoXBackbone",
        "GPTNeoXCausalLM",
        dict(num_heads=HEADS, max_sequence_length=32),
    ),
    "smollm3": (
        "SmolLM3Backbone",
        "SmolLM3CausalLM",
        dict(
            num_attention_heads=HEADS,
            num_key_value_heads=1,
            attention_bias=False,
            attention_dropout=0.0,
            rope_layer_enabled_list=[True, True],
            layer_types=["full_attention", "full_attention"],
            mlp_bias=False,
            layer_norm_epsilon=1e-6,
            max_position_embeddings=32,
            rope_theta=10000.0,
            partial_rotary_factor=1.0,
        ),
    ),
}

# family -> (backbone, arguments): forward outputs compared.
ENCODERS = {
    "bert": (
        "BertBackbone",
        dict(num_heads=HEADS, max_sequence_length=32),
    ),
    "roberta": (
        "RobertaBackbone",
        dict(num_heads=HEADS, max_sequence_length=32),
    ),
    "deberta_v3": (
        "DebertaV3Backbone",
        dict(num_heads=HEADS, max_sequence_length=32, bucket_size=8),
    ),
    "albert": (
        "AlbertBackbone",
        dict(
            num_heads=HEADS,
            embedding_dim=8,
            num_groups=1,
            num_inner_repetitions=1,
            max_sequence_length=32,
        ),
    ),
    "t5": (
        "T5Backbone",
        dict(num_heads=HEADS, key_value_dim=8),
    ),
    "bart": (
        "BartBackbone",
        dict(num_heads=HEADS, max_sequence_length=32),
    ),
    "whisper": (
        "WhisperBackbone",
        dict(
            num_heads=HEADS,
            num_mels=8,
            max_encoder_sequence_length=16,
            max_decoder_sequence_length=16,
        ),
    ),
}


def _prompt(length=12):
    import numpy as np

    token_ids = np.zeros((2, length), "int32")
    token_ids[0, :3] = [5, 17, 42]
    token_ids[1, :4] = [7, 7, 30, 1]
    return {"token_ids": token_ids, "padding_mask": token_ids != 0}


def _generate(family):
    import keras
    import keras_hub

    backbone_name, task_name, arguments = CAUSAL_LMS[family]
    keras.utils.set_random_seed(0)
    backbone = getattr(keras_hub.models, backbone_name)(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE,
        **arguments,
    )
    causal_lm = getattr(keras_hub.models, task_name)(
        backbone=backbone, preprocessor=None
    )
    causal_lm.compile(sampler="greedy")
    out = causal_lm.generate(_prompt(), stop_token_ids=None)
    return out["token_ids"].tolist()


def _encoder_inputs(family):
    import numpy as np

    prompt = _prompt(8)
    if family == "whisper":
        features = np.random.default_rng(1).standard_normal((2, 16, 8))
        return {
            "encoder_features": features.astype("float32"),
            "decoder_token_ids": prompt["token_ids"],
            "decoder_padding_mask": prompt["padding_mask"],
        }
    if family in ("t5", "bart"):
        return {
            "encoder_token_ids": prompt["token_ids"],
            "encoder_padding_mask": prompt["padding_mask"],
            "decoder_token_ids": prompt["token_ids"],
            "decoder_padding_mask": prompt["padding_mask"],
        }
    if family in ("bert", "albert"):
        prompt["segment_ids"] = np.zeros_like(prompt["token_ids"])
    return prompt


def _forward(family):
    import keras
    import keras_hub
    import numpy as np

    backbone_name, arguments = ENCODERS[family]
    keras.utils.set_random_seed(0)
    backbone = getattr(keras_hub.models, backbone_name)(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE,
        **arguments,
    )
    outputs = backbone.predict(_encoder_inputs(family), verbose=0)
    if isinstance(outputs, dict):
        return {k: np.asarray(v).tolist() for k, v in sorted(outputs.items())}
    return np.asarray(outputs).tolist()


def run_side(fixed):
    """{family: {"result": ..., "lowered": n} or {"error": why}}."""
    import keras_ov_einsum

    results = {}
    jobs = [(name, _generate) for name in CAUSAL_LMS]
    jobs += [(name, _forward) for name in ENCODERS]
    for family, job in jobs:
        if fixed:
            keras_ov_einsum.enable()
        try:
            result = job(family)
            lowered = (
                sum(d.lowered for d in keras_ov_einsum.explain())
                if fixed
                else 0
            )
            results[family] = {"result": result, "lowered": lowered}
        except Exception as error:  # reported per family, as a skip
            message = f"{type(error).__name__}: {error}"
            results[family] = {"error": message.splitlines()[0][:300]}
        finally:
            keras_ov_einsum.disable()
    return results


def _compile_in_float32():
    """Compile every model with INFERENCE_PRECISION_HINT=f32 unless told
    otherwise (keras-hub's generate already asks for it; keras's predict
    does not): the fix's values are stock's bits under that hint only, and
    on a CPU with bfloat16 units the default is bfloat16."""
    import openvino

    stock_compile_model = openvino.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kwargs):
        config = {"INFERENCE_PRECISION_HINT": "f32", **(config or {})}
        return stock_compile_model(self, model, device_name, config, **kwargs)

    openvino.Core.compile_model = compile_model


if __name__ == "__main__":
    os.environ["KERAS_BACKEND"] = "openvino"
    _compile_in_float32()
    side = sys.argv[1]
    print(json.dumps(run_side(fixed=side == "fixed")))
