"""Benchmark models: keras-hub causal LMs built from config, saved as presets.

No preset can be downloaded here, so each model is built from its config with
random weights, given a tokenizer trained offline on text this repository
ships, saved once with ``save_to_preset`` into a local cache, and loaded in
every measured process with ``from_preset``: the real loading path.
"""

import dataclasses
import hashlib
import io
import json
import os
import pathlib

__all__ = [
    "MODELS",
    "PROMPT",
    "PROMPTS",
    "ModelConfig",
    "build_preset",
    "int8_config",
    "corpus",
    "loads_saved",
    "preset_dir",
    "presets_root",
    "SAVED_FORMATS",
    "saved_preset",
    "saved_preset_dir",
]

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The original report's prompt: one token for GPT-2's real tokenizer (and
# Llama's), so its generate(max_length=10) made 8 new tokens after the start
# token. The trained tokenizers see the prompt often enough to learn it as
# one token too, so the measured work is the report's.
PROMPT = "Hello"
# The batch rows' prompts (compare --batch N: the first N), of different
# lengths in every model's tokens, so that a batch is ragged; the first is
# PROMPT. Fixed: a changed prompt changes what every batch row measures.
PROMPTS = (
    PROMPT,
    "Hello, world",
    "Hello, the harness measures",
    "Run keras-hub models on OpenVINO",
    "The report",
    "Greedy generation gives the same token ids",
    "Memory is the RSS",
    "Every projection becomes a MatMul",
)
_PROMPT_REPEATS = 500
# Part of every preset's cache key: bump it when the tokenizer recipe
# changes, so no stale preset (weights and tokenizer) is reused.
_TOKENIZER_REVISION = 2
# Also part of the key: bump it when the weights recipe changes.
# 2: no two weights are bitwise equal (_distinct_weights).
_WEIGHTS_REVISION = 2


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One causal LM: its keras-hub family and backbone arguments.

    ``vocabulary_size=None`` means "the trained tokenizer's size" (the
    SentencePiece families: a vocabulary cannot outgrow the corpus here).
    """

    name: str
    family: str  # gpt2 | llama | gemma
    backbone: dict
    description: str


def _gpt2(name, layers, heads, hidden, description, vocabulary_size=50257):
    return ModelConfig(
        name=name,
        family="gpt2",
        backbone=dict(
            vocabulary_size=vocabulary_size,
            num_layers=layers,
            num_heads=heads,
            hidden_dim=hidden,
            intermediate_dim=4 * hidden,
            max_sequence_length=1024,
        ),
        description=description,
    )


MODELS = {
    config.name: config
    for config in [
        _gpt2("gpt2_base", 12, 12, 768, "GPT-2 base (124M)"),
        _gpt2("gpt2_medium", 24, 16, 1024, "GPT-2 Medium (355M)"),
        _gpt2("gpt2_large", 36, 20, 1280, "GPT-2 Large (774M)"),
        # For the harness's own tests: seconds to build, load and run.
        _gpt2("gpt2_tiny", 2, 2, 64, "GPT-2, 2 layers x 64", 1024),
        ModelConfig(
            name="llama_small",
            family="llama",
            backbone=dict(
                vocabulary_size=None,
                num_layers=16,
                num_query_heads=16,
                num_key_value_heads=4,  # grouped-query attention
                hidden_dim=1024,
                intermediate_dim=2816,  # gated MLP
            ),
            description="Llama-style, 16 layers x 1024, GQA 16/4, SwiGLU",
        ),
        # For the harness's own tests of the Llama family.
        ModelConfig(
            name="llama_tiny",
            family="llama",
            backbone=dict(
                vocabulary_size=None,
                num_layers=2,
                num_query_heads=4,
                num_key_value_heads=2,
                hidden_dim=64,
                intermediate_dim=128,
            ),
            description="Llama-style, 2 layers x 64, GQA 4/2, SwiGLU",
        ),
        ModelConfig(
            name="gemma_small",
            family="gemma",
            backbone=dict(
                vocabulary_size=None,
                num_layers=12,
                num_query_heads=8,
                num_key_value_heads=1,  # multi-query attention
                hidden_dim=1024,
                intermediate_dim=8192,
                head_dim=128,
            ),
            description="Gemma-style, 12 layers x 1024, MQA 8/1, GeGLU",
        ),
    ]
}

# Sizes of the trained vocabularies: the GPT-2 byte-level BPE is padded to
# the model's 50257 ids with unused tokens (so every sampled id decodes);
# SentencePiece vocabularies are what the corpus can support.
_BPE_VOCABULARY = 1000
_SENTENCEPIECE_VOCABULARY = 600


def corpus():
    """The tokenizers' training text, and the prompt, repeated so that it
    becomes a single token.

    The text is frozen in ``tokenizer_corpus.txt`` (this repository's
    Markdown and Python sources as they were on 2026-12-07, a form feed
    between files): trained on the live sources, every commit changed the
    tokenizers, so the tests' models, and whether a test passed, with it.
    """
    text = (pathlib.Path(__file__).parent / "tokenizer_corpus.txt").read_text(
        encoding="utf-8"
    )
    return text.split("\f") + [PROMPT] * _PROMPT_REPEATS


def presets_root():
    default = pathlib.Path.home() / ".cache" / "keras-ov-einsum" / "presets"
    return pathlib.Path(os.environ.get("KERAS_OV_EINSUM_PRESETS", default))


def preset_dir(name):
    """Where the preset of ``name`` lives: keyed by config, so a changed
    config never reuses stale weights."""
    config = MODELS[name]
    key = json.dumps(
        [dataclasses.asdict(config), _TOKENIZER_REVISION, _WEIGHTS_REVISION],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return presets_root() / f"{name}-{digest}"


def build_preset(name):
    """Build ``name`` with random weights and save it; return the folder.

    Runs in whatever Keras backend the calling process has; the saved
    weights load in every backend.
    """
    import keras
    import keras_hub

    target = preset_dir(name)
    if (target / "config.json").exists():
        return target
    config = MODELS[name]
    keras.utils.set_random_seed(0)
    tokenizer = _tokenizer(config, keras_hub)
    arguments = dict(config.backbone)
    if arguments["vocabulary_size"] is None:
        arguments["vocabulary_size"] = tokenizer.vocabulary_size()
    classes = {
        "gpt2": keras_hub.models.GPT2CausalLMPreprocessor,
        "llama": keras_hub.models.LlamaCausalLMPreprocessor,
        "gemma": keras_hub.models.GemmaCausalLMPreprocessor,
    }
    backbones = {
        "gpt2": keras_hub.models.GPT2Backbone,
        "llama": keras_hub.models.LlamaBackbone,
        "gemma": keras_hub.models.GemmaBackbone,
    }
    causal_lms = {
        "gpt2": keras_hub.models.GPT2CausalLM,
        "llama": keras_hub.models.LlamaCausalLM,
        "gemma": keras_hub.models.GemmaCausalLM,
    }
    preprocessor = classes[config.family](tokenizer, sequence_length=64)
    backbone = backbones[config.family](**arguments)
    _distinct_weights(backbone)
    causal_lm = causal_lms[config.family](
        backbone=backbone, preprocessor=preprocessor
    )
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(str(partial))
    partial.rename(target)  # complete presets only, even if interrupted
    return target


def _distinct_weights(backbone, seed=0):
    """Makes every weight's values its own, as in a trained checkpoint.

    keras-hub's Llama and Gemma clone one seeded initializer for their
    projections, so in a fresh backbone a layer's query and output kernels
    hold the same bytes, and so do its key and value kernels. A native
    export writes such twins once and the CPU plugin packs them once, while
    Keras reads both: a benchmark on those weights favours the native row
    (Llama-small: 86 MB fewer weights). Each later twin gets a seeded
    permutation of its own values (the same distribution). Weights of one
    repeated value (fresh norm scales, zero biases) stay as they are.
    Returns the number of weights changed.
    """
    import hashlib

    import numpy as np

    rng = np.random.default_rng(seed)
    seen = set()
    changed = 0
    for weight in backbone.weights:
        values = np.asarray(weight.numpy())
        digest = hashlib.sha256(values.tobytes()).digest()
        if digest in seen and np.unique(values).size > 1:
            while digest in seen:
                values = rng.permutation(values.ravel()).reshape(values.shape)
                digest = hashlib.sha256(values.tobytes()).digest()
            weight.assign(values)
            changed += 1
        seen.add(digest)
    return changed


# The weight formats a Keras row loads from a preset saved in that format,
# as a model is shipped (and as the native rows load an IR written in it):
# int8 after ``backbone.quantize("int8")`` (int4: ``"int4"``), float16
# loaded with that dtype.
SAVED_FORMATS = ("int8", "float16", "int8_weights", "int4")
# The part that makes a keras-hub preset keep a weights-only config: without
# it from_preset builds keras's default int8 layers (which quantize every
# activation row), so a row without it quantizes the float32 preset in its
# load instead (the only way stock keras-hub gets a weights-only model).
_KEEPS_WEIGHTS_ONLY = "quantization_configs"


def loads_saved(weight_format, parts):
    """Whether a Keras row with these parts (None: stock) loads the preset
    saved in ``weight_format`` (else the float32 preset)."""
    if weight_format == "int8_weights":
        return bool(parts and parts.get(_KEEPS_WEIGHTS_ONLY))
    return weight_format in SAVED_FORMATS


def saved_preset_dir(preset, weight_format):
    """Where ``saved_preset`` saves ``preset`` in ``weight_format``."""
    preset = pathlib.Path(preset)
    return preset.with_name(f"{preset.name}-{weight_format}")


def saved_preset(preset, weight_format):
    """``preset`` in ``weight_format`` (SAVED_FORMATS), saved beside it
    (once; rebuilt whenever the float32 preset is, as its folder name is
    the float32 preset's own, which keys the config)."""
    import keras_hub

    if weight_format not in SAVED_FORMATS:
        raise ValueError(f"no saved preset for {weight_format}")
    preset = pathlib.Path(preset)
    target = saved_preset_dir(preset, weight_format)
    if (target / "config.json").exists():
        return target
    if weight_format in ("int8", "int8_weights"):
        causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
        causal_lm.backbone.quantize("int8", config=int8_config(weight_format))
    elif weight_format == "int4":  # keras's default int4 config
        causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
        causal_lm.backbone.quantize("int4")
    else:  # the float32 weights rounded as a float16 load rounds them
        causal_lm = keras_hub.models.CausalLM.from_preset(
            str(preset), dtype=weight_format
        )
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(str(partial))
    if weight_format == "int8_weights":
        # Built under any backend, where enable() does not patch keras-hub:
        # the part's own writer keeps the weights-only config.
        from keras_ov_einsum.parts.loading import quantization_configs

        quantization_configs.save_configs(causal_lm.backbone, str(partial))
    partial.rename(target)
    return target


def int8_config(weight_format):
    """keras's int8 config for ``weight_format``: int8 its default (every
    activation row quantized too), int8_weights the weights only (what
    OpenVINO's int8 IRs hold)."""
    import keras

    if weight_format == "int8":
        return None
    return keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)


def _tokenizer(config, keras_hub):
    if config.family == "gpt2":
        vocabulary, merges = _byte_level_bpe(config.backbone["vocabulary_size"])
        return keras_hub.models.GPT2Tokenizer(
            vocabulary=vocabulary, merges=merges
        )
    proto = _sentencepiece(config.family)
    if config.family == "llama":
        return keras_hub.models.LlamaTokenizer(proto=proto)
    return keras_hub.models.GemmaTokenizer(proto=proto)


def _byte_level_bpe(model_vocabulary_size):
    """GPT-2's byte-level BPE trained on the corpus, padded to the model."""
    import tokenizers

    trainer = tokenizers.ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        corpus(),
        vocab_size=min(_BPE_VOCABULARY, model_vocabulary_size - 1),
        min_frequency=2,
        special_tokens=[],
        show_progress=False,
    )
    vocabulary = dict(trainer.get_vocab())
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merges = [
        merge if isinstance(merge, str) else " ".join(merge)
        for merge in model["merges"]
    ]
    # Unused ids up to the model's size; GPT-2's end token is the last id.
    for index in range(len(vocabulary), model_vocabulary_size - 1):
        vocabulary[f"<|unused{index}|>"] = index
    vocabulary["<|endoftext|>"] = model_vocabulary_size - 1
    return vocabulary, merges


def _sentencepiece(family):
    import sentencepiece

    special = {
        # Llama: <unk>=0, <s>=1, </s>=2 (SentencePiece's defaults)
        "llama": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
        # Gemma: <pad>=0, <eos>=1, <bos>=2, <unk>=3
        "gemma": dict(
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            pad_piece="<pad>",
            eos_piece="<eos>",
            bos_piece="<bos>",
        ),
    }[family]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(
            line for text in corpus() for line in text.splitlines() if line
        ),
        model_writer=model,
        vocab_size=_SENTENCEPIECE_VOCABULARY,
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
        **special,
    )
    return model.getvalue()
