"""``config.json`` and ``generation_config.json``: what optimum-intel's
``OVModelForCausalLM`` and openvino-genai read beside the IR.

optimum-intel loads ``config.json`` with Transformers' ``AutoConfig``
(``model_type`` picks the configuration class; layer, head and vocabulary
sizes describe the model), and both read the special token ids: genai's
tokenizer from ``config.json`` when its IR carries none, its pipeline the
end-of-sequence id from ``generation_config.json``. The IR is what runs:
these describe it in Hugging Face's terms for those readers.
"""

import json

__all__ = ["generation_config", "model_config", "write"]


def _gpt2(backbone):
    return {
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": backbone.vocabulary_size,
        "n_positions": backbone.max_sequence_length,
        "n_embd": backbone.hidden_dim,
        "n_layer": backbone.num_layers,
        "n_head": backbone.num_heads,
        "n_inner": backbone.intermediate_dim,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-05,
        "tie_word_embeddings": True,
    }


def _llama(backbone):
    config = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "intermediate_size": backbone.intermediate_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_query_heads,
        "num_key_value_heads": backbone.num_key_value_heads,
        "head_dim": backbone.hidden_dim // backbone.num_query_heads,
        "rms_norm_eps": backbone.layer_norm_epsilon,
        "rope_theta": backbone.rope_max_wavelength,
        "hidden_act": "silu",
        "tie_word_embeddings": backbone.tie_word_embeddings,
    }
    if backbone.rope_position_scaling_factor != 1.0:
        config["rope_scaling"] = {
            "rope_type": "linear",
            "factor": backbone.rope_position_scaling_factor,
        }
    return config


def _gemma(backbone):
    return {
        "architectures": ["GemmaForCausalLM"],
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        # keras-hub's counts the gate and up projections together.
        "intermediate_size": backbone.intermediate_dim // 2,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_query_heads,
        "num_key_value_heads": backbone.num_key_value_heads,
        "head_dim": backbone.head_dim,
        "rms_norm_eps": backbone.layer_norm_epsilon,
        # keras-hub's GELU is the tanh approximation.
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
    }


_ARCHITECTURES = {"gpt2": _gpt2, "llama": _llama, "gemma": _gemma}


def model_config(causal_lm, model_type, special_ids):
    """``config.json``'s content: ``model_type``, the sizes, the special
    token ids (``special_ids``: ``{"bos_token_id": ...}``)."""
    config = {"model_type": model_type}
    config.update(_ARCHITECTURES[model_type](causal_lm.backbone))
    config.update(special_ids)
    config["torch_dtype"] = "float32"
    config["use_cache"] = True
    return config


def generation_config(causal_lm, special_ids):
    """``generation_config.json``'s content: the special token ids and the
    compiled sampler's settings where Transformers has them (greedy,
    top-k, top-p, beam search)."""
    config = dict(special_ids)
    sampler = getattr(causal_lm, "sampler", None)
    kind = type(sampler).__name__
    if kind == "GreedySampler":
        config["do_sample"] = False
    elif kind in ("TopKSampler", "TopPSampler"):
        config["do_sample"] = True
        if getattr(sampler, "k", None):
            config["top_k"] = sampler.k
        if kind == "TopPSampler":
            config["top_p"] = sampler.p
        if getattr(sampler, "temperature", 1.0) != 1.0:
            config["temperature"] = sampler.temperature
    elif kind == "BeamSampler":
        config["do_sample"] = False
        config["num_beams"] = sampler.num_beams
    return config


def write(directory, causal_lm, model_type, special_ids):
    """Writes both files into ``directory`` (a ``pathlib.Path``)."""
    for name, content in (
        ("config.json", model_config(causal_lm, model_type, special_ids)),
        (
            "generation_config.json",
            generation_config(causal_lm, special_ids),
        ),
    ):
        (directory / name).write_text(json.dumps(content, indent=2) + "\n")
