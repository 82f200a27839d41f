"""export_genai: a keras-hub causal LM as the directory openvino-genai's
LLMPipeline and optimum-intel's OVModelForCausalLM load.

Each family (2 layers, hidden 64, random weights, a tokenizer trained
offline) is exported once. The proof is the pipelines' own tokens: greedy
on a batch of prompts of three lengths (left-padded, as both pad) equals
Keras's ``generate()`` row for row; a beam search's scores are the log
probabilities a fresh pass of the IR gives its sequences (the cache rows
followed their beams); the int8 IR's tokens are Keras's on the weights
its compressed form computes with. The pipelines are compiled in float32
with a float32 cache (the IR asks for a float16 cache, as optimum-intel's
do, and this machine's default precision may be bfloat16).
"""

import copy
import dataclasses
import json

import keras
import keras_hub
import numpy as np
import openvino as ov
import pytest

import keras_ov_einsum
from benchmarks import models
from keras_ov_einsum.export import ExportError, export_genai, weights

# The tokenizer IRs' converters (and the tokenizers' trainers here).
for _name in ("openvino_tokenizers", "transformers", "sentencepiece"):
    pytest.importorskip(_name, reason=f"{_name}: pip install '.[export]'")

FAMILIES = ("gpt2", "llama", "gemma")
LAYERS = 2
PROMPTS = ["The quick brown fox is", "Hello world", "def"]
NEW_TOKENS = 8
# float32 arithmetic and cache, no dynamic quantization of activations.
EXACT = {
    "INFERENCE_PRECISION_HINT": "f32",
    "KV_CACHE_PRECISION": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
}


def _genai():
    return pytest.importorskip(
        "openvino_genai", reason="openvino-genai is not installed"
    )


def _optimum():
    return pytest.importorskip(
        "optimum.intel", reason="optimum-intel is not installed"
    )


def causal_lm(family):
    """A 2-layer ``family`` causal LM with its preprocessor (a tokenizer
    trained on this repository's text), greedy sampling."""
    keras.utils.set_random_seed(0)
    size = dict(num_layers=LAYERS, hidden_dim=64, intermediate_dim=128)
    if family == "gpt2":
        vocabulary, merges = models._byte_level_bpe(512)
        tokenizer = keras_hub.models.GPT2Tokenizer(
            vocabulary=vocabulary, merges=merges
        )
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=512,
            num_heads=2,
            max_sequence_length=64,
            **size,
        )
        classes = (
            keras_hub.models.GPT2CausalLMPreprocessor,
            keras_hub.models.GPT2CausalLM,
        )
    else:
        proto = models._sentencepiece(family)
        heads = dict(num_query_heads=4, num_key_value_heads=2)
        if family == "llama":
            tokenizer = keras_hub.models.LlamaTokenizer(proto=proto)
            backbone = keras_hub.models.LlamaBackbone(
                vocabulary_size=tokenizer.vocabulary_size(), **heads, **size
            )
            classes = (
                keras_hub.models.LlamaCausalLMPreprocessor,
                keras_hub.models.LlamaCausalLM,
            )
        else:
            tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
            backbone = keras_hub.models.GemmaBackbone(
                vocabulary_size=tokenizer.vocabulary_size(),
                head_dim=16,
                **heads,
                **size,
            )
            classes = (
                keras_hub.models.GemmaCausalLMPreprocessor,
                keras_hub.models.GemmaCausalLM,
            )
    preprocessor_class, model_class = classes
    preprocessor = preprocessor_class(tokenizer, sequence_length=32)
    model = model_class(backbone=backbone, preprocessor=preprocessor)
    model.compile(sampler="greedy")
    return model


@dataclasses.dataclass
class Exported:
    family: str
    model: object  # the causal LM
    directory: object  # its float32 export
    rows: list  # the prompts' token ids, as Keras packs them
    tokens: list  # Keras's new tokens for each row


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory):
    family = request.param
    model = causal_lm(family)
    directory = export_genai(model, tmp_path_factory.mktemp(family))
    rows = prompt_ids(model)
    return Exported(family, model, directory, rows, keras_tokens(model, rows))


def prompt_ids(model):
    """The prompts' token ids as Keras's preprocessor packs them for
    ``generate()`` (the start token first), one list a row."""
    packed = model.preprocessor.generate_preprocess(PROMPTS)
    ids = np.asarray(packed["token_ids"])
    mask = np.asarray(packed["padding_mask"]).astype(bool)
    return [row[kept].tolist() for row, kept in zip(ids, mask)]


def keras_tokens(model, rows):
    """Keras ``generate()``'s new tokens for each row (its greedy sampler,
    every default part on), the rows right-padded as Keras pads them."""
    reference = type(model)(backbone=model.backbone, preprocessor=None)
    reference.compile(sampler="greedy")
    length = max(map(len, rows)) + NEW_TOKENS
    ids = np.zeros((len(rows), length), "int32")
    for row, tokens in zip(ids, rows):
        row[: len(tokens)] = tokens
    with keras_ov_einsum.enabled():
        out = reference.generate(
            {"token_ids": ids, "padding_mask": ids != 0},
            stop_token_ids=None,
        )
    generated = np.asarray(out["token_ids"])
    return [
        generated[i, len(row) : len(row) + NEW_TOKENS].tolist()
        for i, row in enumerate(rows)
    ]


def left_padded(rows, pad=0):
    """(input_ids, attention_mask), int64, each row on the right."""
    length = max(map(len, rows))
    ids = np.full((len(rows), length), pad, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = row
        mask[i, length - len(row) :] = 1
    return ids, mask


def _types(compiled):
    return [
        op.get_rt_info()["layerType"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
    ]


def test_the_directory_holds_what_genai_and_optimum_read(exported):
    """The files; the IR's boundary (the names, types and shapes genai's
    stateful pipeline sets, logits straight from the head's MatMul, which
    genai slices to the last position); a ReadValue a cache, batch
    dynamic and length 0, as genai finds its caches; the runtime options
    optimum-intel writes; compiled, an attention fused with each layer's
    two caches; config.json as Transformers reads it."""
    family, model, directory = (
        exported.family,
        exported.model,
        exported.directory,
    )
    names = {path.name for path in directory.iterdir()}
    assert {
        "openvino_model.xml",
        "openvino_model.bin",
        "openvino_tokenizer.xml",
        "openvino_detokenizer.xml",
        "config.json",
        "generation_config.json",
    } <= names
    ir = ov.Core().read_model(directory / "openvino_model.xml")
    assert [
        (i.get_any_name(), str(i.get_element_type()), str(i.partial_shape))
        for i in ir.inputs
    ] == [
        ("input_ids", "<Type: 'int64_t'>", "[?,?]"),
        ("attention_mask", "<Type: 'int64_t'>", "[?,?]"),
        ("position_ids", "<Type: 'int64_t'>", "[?,?]"),
        ("beam_idx", "<Type: 'int32_t'>", "[?]"),
    ]
    (logits,) = ir.outputs
    vocabulary = model.backbone.vocabulary_size
    assert logits.get_any_name() == "logits"
    assert str(logits.get_element_type()) == "<Type: 'float32'>"
    assert str(logits.partial_shape) == f"[?,?,{vocabulary}]"
    head = logits.get_node().input_value(0).get_node()
    assert head.get_type_name() == "MatMul"
    states = [op for op in ir.get_ops() if op.get_type_name() == "ReadValue"]
    assert len(states) == 2 * LAYERS
    for state in states:
        shape = state.get_input_partial_shape(0)
        assert len(shape) == 4 and shape[0].is_dynamic and shape[1] == 0
    options = ir.get_rt_info()["runtime_options"]
    assert options["KV_CACHE_PRECISION"].astype(str) == "f16"
    compiled = ov.Core().compile_model(ir, "CPU", EXACT)
    assert _types(compiled).count("ScaledDotProductAttention") == LAYERS
    assert _types(compiled).count("MemoryInput") == 2 * LAYERS
    for op in compiled.get_runtime_model().get_ops():
        if op.get_rt_info()["layerType"].astype(str) == "MemoryInput":
            readers = {
                target.get_node().get_rt_info()["layerType"].astype(str)
                for target in op.output(0).get_target_inputs()
            }
            assert readers == {"ScaledDotProductAttention"}

    config = json.loads((directory / "config.json").read_text())
    tokenizer = model.preprocessor.tokenizer
    assert config["model_type"] == family
    assert config["vocab_size"] == vocabulary
    assert config["eos_token_id"] == tokenizer.token_to_id(tokenizer.end_token)
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.AutoConfig.from_pretrained(directory)
    assert hf_config.num_hidden_layers == LAYERS
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["do_sample"] is False


@pytest.mark.parametrize("backend", ["SDPA", "PA"])
def test_genai_greedy_batch_is_kerass(exported, backend):
    """genai's tokenizer IR gives the prompts Keras's ids, left-padded;
    its stateful pipeline (SDPA) and its paged-attention pipeline (PA,
    genai's default, converting the IR) then generate Keras's tokens for
    each row of the ragged batch; the detokenizer reads back a prompt."""
    genai = _genai()
    rows = exported.rows
    pipeline = genai.LLMPipeline(
        str(exported.directory), "CPU", ATTENTION_BACKEND=backend, **EXACT
    )
    encoded = pipeline.get_tokenizer().encode(PROMPTS)
    ids, mask = left_padded(rows)
    np.testing.assert_array_equal(encoded.attention_mask.data, mask)
    np.testing.assert_array_equal(encoded.input_ids.data * mask, ids * mask)
    config = genai.GenerationConfig()
    config.max_new_tokens = NEW_TOKENS
    config.ignore_eos = True
    result = pipeline.generate(encoded, config)
    assert [list(tokens) for tokens in result.tokens] == exported.tokens
    text = pipeline.get_tokenizer().decode([rows[0]])
    assert text == [PROMPTS[0]]


def test_optimum_greedy_batch_is_kerass(exported):
    """optimum-intel's generate() on the left-padded batch: Keras's
    tokens for each row."""
    _optimum()
    import torch
    from optimum.intel import OVModelForCausalLM

    ids, mask = left_padded(exported.rows)
    optimum_model = OVModelForCausalLM.from_pretrained(
        exported.directory, ov_config=EXACT
    )
    out = optimum_model.generate(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        generation_config=_without_end_token(optimum_model),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
    )
    assert out[:, ids.shape[1] :].tolist() == exported.tokens


def _without_end_token(optimum_model):
    """optimum's generation config with no end token: Keras's tokens are
    generated with ``stop_token_ids=None``, so an end token is a token like
    any other. (``min_new_tokens`` would not do: it masks the end token's
    logit, so a row whose argmax is the end token gets another token, and
    beam scores are renormalised without it.)"""
    config = copy.deepcopy(optimum_model.generation_config)
    config.eos_token_id = None
    return config


def log_probability(compiled, prompt, generated):
    """The log probability of ``generated`` after ``prompt`` from one pass
    of the ``compiled`` IR over both (a request of its own: an empty
    cache), float64."""
    sequence = np.array([list(prompt) + list(generated)], np.int64)
    request = compiled.create_infer_request()
    request.infer(
        {
            "input_ids": sequence,
            "attention_mask": np.ones_like(sequence),
            "position_ids": np.arange(sequence.shape[1])[None],
            "beam_idx": np.zeros(1, np.int32),
        }
    )
    logits = request.get_tensor("logits").data[0].astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    start = len(prompt) - 1
    return sum(logs[start + i, token] for i, token in enumerate(generated))


def test_beam_search_scores_are_the_models(exported):
    """Four beams of eight tokens from genai (its stateful pipeline and
    its paged attention) and optimum-intel, for every prompt: each
    sequence's score is its log probability per token from a fresh pass of
    the IR (the stateful cache's rows followed their beams through
    ``beam_idx``). For at least one prompt the beams part before their last
    token, so their cache rows were reordered: which prompt does is the
    random weights' choice (one gemma prompt's beams share seven tokens)."""
    genai = _genai()
    _optimum()
    from optimum.intel import OVModelForCausalLM

    directory = exported.directory
    pipelines = {
        # the stateful pipeline (the IR's state, reordered by beam_idx),
        # then genai's default (its paged attention)
        f"genai {backend}": genai.LLMPipeline(
            str(directory), "CPU", ATTENTION_BACKEND=backend, **EXACT
        )
        for backend in ("SDPA", "PA")
    }
    optimum_model = OVModelForCausalLM.from_pretrained(
        directory, ov_config=EXACT
    )
    compiled = ov.Core().compile_model(
        directory / "openvino_model.xml", "CPU", EXACT
    )
    parted = set()
    for prompt in exported.rows:
        beams = _beams(genai, pipelines, optimum_model, prompt)
        for name, found in beams.items():
            assert len(found) == 4, name
            for tokens, score in found:
                assert len(tokens) == NEW_TOKENS, name
                expected = log_probability(compiled, prompt, tokens)
                np.testing.assert_allclose(
                    score, expected / NEW_TOKENS, rtol=1e-4, err_msg=name
                )
            if len({tuple(tokens[:-1]) for tokens, _ in found}) > 1:
                parted.add(name)
    assert parted == {*pipelines, "optimum"}, parted


def _beams(genai, pipelines, optimum_model, prompt):
    """{who: [(new tokens, score)] for its four beams} for one prompt."""
    import torch

    config = genai.GenerationConfig()
    config.max_new_tokens = NEW_TOKENS
    config.ignore_eos = True
    config.num_beams = config.num_return_sequences = 4
    beams = {}
    for name, pipeline in pipelines.items():
        result = pipeline.generate(ov.Tensor(np.array([prompt])), config)
        beams[name] = list(zip(map(list, result.tokens), result.scores))
    out = optimum_model.generate(
        input_ids=torch.tensor([prompt]),
        generation_config=_without_end_token(optimum_model),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        num_beams=4,
        num_return_sequences=4,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    beams["optimum"] = [
        (sequence[len(prompt) :].tolist(), float(score))
        for sequence, score in zip(out.sequences, out.sequences_scores)
    ]
    return beams


def _contracted_axes(layer, name):
    """The axes of ``layer``'s weight ``name`` a product sums over (the
    export quantizes per slice along them)."""
    if isinstance(layer, keras.layers.EinsumDense):
        inputs, output = layer.equation.split("->")
        kernel = inputs.split(",")[1]
        return tuple(i for i, label in enumerate(kernel) if label not in output)
    if name == "reverse_embeddings":  # [hidden, vocabulary]
        return (0,)
    if isinstance(layer, keras.layers.Dense):
        return (0,)
    return (1,)  # embedding tables: a row a token


def dequantize(model):
    """Sets each kernel and table of ``model`` to the values its int8
    export computes with; returns how many."""
    count = 0
    for layer in model.backbone._flatten_layers():
        for name in ("kernel", "embeddings", "reverse_embeddings"):
            variable = getattr(layer, name, None)
            if variable is None or len(variable.shape) < 2:
                continue
            values = keras.ops.convert_to_numpy(variable)
            axes = _contracted_axes(layer, name)
            variable.assign(weights.dequantized(values, axes))
            count += 1
        table = getattr(layer, "position_embeddings", None)
        if table is not None:
            values = keras.ops.convert_to_numpy(table)
            table.assign(weights.dequantized(values, (1,)))
            count += 1
    return count


def test_int8_weights_are_compressed_and_give_their_tokens(exported, tmp_path):
    """The int8 IR holds each kernel and table as u8 values, a zero point
    and a scale (no large float32 Constant is left; a tied table is stored
    once); compiled, each FullyConnected layer reads u8 weights; genai's
    tokens for the batch are Keras's on the weights that form computes
    with (which may differ from the float32 model's)."""
    genai = _genai()
    directory = export_genai(exported.model, tmp_path, weights="int8")
    ir = ov.Core().read_model(directory / "openvino_model.xml")
    large = [
        str(op.get_element_type())
        for op in ir.get_ops()
        if op.get_type_name() == "Constant"
        and int(np.prod(op.get_output_shape(0))) >= 1024
    ]
    reference = causal_lm(exported.family)
    reference.backbone.set_weights(exported.model.backbone.get_weights())
    assert large == ["<Type: 'uint8_t'>"] * dequantize(reference)
    compiled = ov.Core().compile_model(ir, "CPU", EXACT)
    layers = 0
    for op in compiled.get_runtime_model().get_ops():
        if op.get_rt_info()["layerType"].astype(str) == "FullyConnected":
            kinds = [
                source.get_source_output()
                .get_node()
                .get_rt_info()["outputPrecisions"]
                .astype(str)
                for source in op.inputs()
            ]
            assert "u8" in kinds
            layers += 1
    assert layers > 0
    pipeline = genai.LLMPipeline(
        str(directory), "CPU", ATTENTION_BACKEND="SDPA", **EXACT
    )
    config = genai.GenerationConfig()
    config.max_new_tokens = NEW_TOKENS
    config.ignore_eos = True
    ids, mask = left_padded(exported.rows)
    result = pipeline.generate(
        genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(mask)), config
    )
    tokens = [list(row) for row in result.tokens]
    assert tokens == keras_tokens(reference, exported.rows)


def test_the_cli_exports_a_preset_with_float16_weights(tmp_path):
    """``python -m keras_ov_einsum.export PRESET DIR --weights float16``
    (its main, in this process) on a saved GPT-2 preset: every large
    Constant float16 (behind a Convert); genai's tokens are Keras's on the
    weights rounded to float16."""
    genai = _genai()
    from keras_ov_einsum.export.__main__ import main

    model = causal_lm("gpt2")
    model.save_to_preset(str(tmp_path / "preset"))
    argv = [str(tmp_path / "preset"), str(tmp_path / "out")]
    assert main([*argv, "--weights", "float16"]) == 0
    ir = ov.Core().read_model(tmp_path / "out" / "openvino_model.xml")
    large = {
        str(op.get_element_type())
        for op in ir.get_ops()
        if op.get_type_name() == "Constant"
        and int(np.prod(op.get_output_shape(0))) >= 1024
    }
    assert large == {"<Type: 'float16'>"}
    for variable in model.backbone.weights:
        values = keras.ops.convert_to_numpy(variable)
        variable.assign(values.astype(np.float16).astype(np.float32))
    rows = prompt_ids(model)
    pipeline = genai.LLMPipeline(
        str(tmp_path / "out"), "CPU", ATTENTION_BACKEND="SDPA", **EXACT
    )
    config = genai.GenerationConfig()
    config.max_new_tokens = NEW_TOKENS
    config.ignore_eos = True
    ids, mask = left_padded(rows)
    result = pipeline.generate(
        genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(mask)), config
    )
    tokens = [list(row) for row in result.tokens]
    assert tokens == keras_tokens(model, rows)


def test_what_cannot_be_exported_says_why(tmp_path):
    model = causal_lm("gpt2")
    with pytest.raises(ValueError, match="weights='int4'; expected one"):
        export_genai(model, tmp_path, weights="int4")
    bare = keras_hub.models.GPT2CausalLM(backbone=model.backbone)
    with pytest.raises(ExportError, match="no preprocessor with a tokenizer"):
        export_genai(bare, tmp_path)

    def call_with_cache(self, *args):
        return keras_hub.models.GPT2CausalLM.call_with_cache(self, *args)

    for name, message in (
        ("GPT2CausalLM", "GPT2CausalLM overrides call_with_cache"),
        ("MyCausalLM", "only keras-hub's GPT2CausalLM, LlamaCausalLM"),
    ):
        subclass = type(
            name,
            (keras_hub.models.GPT2CausalLM,),
            {"call_with_cache": call_with_cache},
        )
        other = subclass(backbone=model.backbone, preprocessor=None)
        with pytest.raises(ExportError, match=message):
            export_genai(other, tmp_path)
    backbone = keras_hub.models.GPT2Backbone.from_config(
        {**model.backbone.get_config(), "dtype": "float16"}
    )
    half = keras_hub.models.GPT2CausalLM(
        backbone=backbone, preprocessor=model.preprocessor
    )
    with pytest.raises(ExportError, match="dtype policy is 'float16'"):
        export_genai(half, tmp_path)
    dense = model.backbone.transformer_layers[-1]._feedforward_output_dense
    dense.quantize("int8")  # one layer: keras's quantize() of all is slow
    with pytest.raises(ExportError, match=r"is quantized \(int8\)"):
        export_genai(model, tmp_path)
    assert not any(tmp_path.iterdir())
