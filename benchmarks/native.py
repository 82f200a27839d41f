"""The native OpenVINO rows' models: the Keras preset's own weights, exported.

Two exports of a preset (random weights, see models.py):

- optimum-intel's: the preset becomes a Hugging Face checkpoint of the same
  architecture with the same weights (keras-hub's Transformers exporter
  maps the weights), which ``optimum-cli export openvino`` writes as an IR
  (``fp32`` for the float32 rows, ``int8``, NNCF weight compression, for
  ``--dtype int8``); openvino-genai and optimum-intel run it;
- this package's: ``python -m keras_ov_einsum.export`` writes the preset
  as the directory genai loads; the ``keras-export`` rows run genai on it,
  without its tokenizer IRs, as optimum-intel's has none.

Each is cached beside the preset, keyed by the preset's files and the
exporting code (packages' versions; this package's sources), so a changed
preset, config or exporter never reuses a stale export, with the seconds
the export took: one fresh process's wall time, imports included
(optimum-cli's, not the checkpoint's writing; the package's, from the
preset to the directory, tokenizer IRs included).

Run by the runner as ``python -m benchmarks.native PRESET DTYPE
[--exporter keras] [--fresh]`` (with any Keras backend); prints the IR
folder, the prompt's token ids and the export's time as JSON.
"""

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from benchmarks.models import PROMPT, PROMPTS

__all__ = [
    "BACKENDS",
    "EXPORTERS",
    "HINTS",
    "WEIGHT_FORMATS",
    "export",
    "export_openvino",
    "hf_checkpoint",
    "main",
    "offline_environment",
    "prompt_ids",
    "weight_format_of",
]

# The native backends: openvino-genai's LLMPipeline and optimum-intel's
# OVModelForCausalLM, both running optimum-intel's IR, and keras-export:
# genai's LLMPipeline on this package's export of the same preset.
BACKENDS = ("openvino-genai", "optimum-intel", "keras-export")
# The export each backend runs.
EXPORTERS = {
    "openvino-genai": "optimum",
    "optimum-intel": "optimum",
    "keras-export": "keras",
}
# INFERENCE_PRECISION_HINT: f32 is the Keras rows' precision (keras-hub
# compiles float32 models with it); "default" leaves the plugin's choice
# (bf16 on a CPU with AMX or AVX-512 BF16), a configuration of its own.
HINTS = ("f32", "default")
# --dtype -> optimum-cli's --weight-format and the package's --weights
# (int8_weights: keras's weights-only int8, which is what the int8 IR holds.
# float16: the float32 preset's weights rounded to float16, as Keras's
# float16 load rounds them. Neither exports bfloat16: bfloat16 has no
# native row; int4 is optimum-cli's alone: export_genai writes no int4.)
WEIGHT_FORMATS = {
    "optimum": {
        "float32": "fp32",
        "float16": "fp16",
        "int8": "int8",
        "int8_weights": "int8",
        # NNCF's int4: groups of 128, asymmetric, as keras's default int4.
        "int4": "int4",
    },
    "keras": {
        "float32": "float32",
        "float16": "float16",
        "int8": "int8",
        "int8_weights": "int8",
    },
}
# Part of every export's cache key: bump it when the export recipe changes.
# 2: the export's time is kept beside it.
_EXPORT_REVISION = 2
# The packages each export runs (the keras export: this package's sources
# too, _package_digest).
_EXPORTING_PACKAGES = {
    "optimum": (
        "keras-hub",
        "optimum-intel",
        "transformers",
        "openvino",
        "nncf",
    ),
    "keras": (
        "keras",
        "keras-hub",
        "openvino",
        "openvino-tokenizers",
        "transformers",
        "tokenizers",
    ),
}
_COMMANDS = {
    "optimum": "optimum-cli export openvino",
    "keras": "python -m keras_ov_einsum.export",
}


def offline_environment(base=None):
    """No process of the native rows may reach the Hugging Face Hub."""
    return dict(
        os.environ if base is None else base,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )


def _package_digest():
    """A digest of this package's sources (the keras export's code), which
    a commit alone would not give for an uncommitted change."""
    import keras_ov_einsum

    digest = hashlib.sha256(keras_ov_einsum.__version__.encode())
    package = pathlib.Path(keras_ov_einsum.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _export_key(preset, exporter="optimum"):
    """A digest of what the export depends on: the preset's files (their
    names, sizes and modification times) and the exporting code."""
    from importlib import metadata

    preset = pathlib.Path(preset)
    files = [
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(preset.iterdir())
        if path.is_file()
    ]
    versions = []
    for name in _EXPORTING_PACKAGES[exporter]:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, None))
    if exporter == "keras":
        versions.append(("keras-ov-einsum", _package_digest()))
    key = json.dumps([_EXPORT_REVISION, str(preset), files, versions])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _native_dir(preset, exporter="optimum"):
    preset = pathlib.Path(preset)
    kind = "native" if exporter == "optimum" else "keras-export"
    key = _export_key(preset, exporter)
    return preset.with_name(f"{preset.name}-{kind}-{key}")


def prompt_ids(preprocessor, prompt=PROMPT):
    """The prompt as the Keras rows' generate() packs it (GPT-2: its start
    token, then "Hello"): the preset's own preprocessor."""
    import keras

    packed = preprocessor.generate_preprocess([prompt])
    ids = keras.ops.convert_to_numpy(packed["token_ids"])[0]
    mask = keras.ops.convert_to_numpy(packed["padding_mask"])[0]
    return [int(token) for token, kept in zip(ids, mask) if kept]


def _prompts_ids(preset):
    """Each of models.PROMPTS as prompt_ids packs it (the batch rows')."""
    import keras_hub

    preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
        str(preset)
    )
    return [prompt_ids(preprocessor, prompt) for prompt in PROMPTS]


def _hf_config_and_weights(backbone):
    """(config dict, {name: Keras weight}) of the Hugging Face model with
    the backbone's architecture, from keras-hub's Transformers exporter.

    keras-hub keys its exporter by class name and knows Llama only as
    Llama3Backbone; its Llama 3 mapping holds for LlamaBackbone, whose
    layers and attributes are the same (Llama3Backbone subclasses it).
    """
    from keras_hub.src.utils.transformers.export import gemma, gpt2, llama3

    exporters = {
        "GPT2Backbone": (gpt2.get_gpt2_config, gpt2.get_gpt2_weights_map),
        "LlamaBackbone": (
            llama3.get_llama3_config,
            llama3.get_llama3_weights_map,
        ),
        "GemmaBackbone": (gemma.get_gemma_config, gemma.get_gemma_weights_map),
    }
    name = type(backbone).__name__
    if name not in exporters:
        raise ValueError(f"no Hugging Face export for {name}")
    get_config, get_weights = exporters[name]
    config = dict(get_config(backbone))
    architectures = {
        "GPT2Backbone": "GPT2LMHeadModel",
        "LlamaBackbone": "LlamaForCausalLM",
        "GemmaBackbone": "GemmaForCausalLM",
    }
    config["architectures"] = [architectures[name]]
    config["torch_dtype"] = "float32"
    if name == "GemmaBackbone":
        # keras-hub's Gemma config leaves these to Transformers' defaults;
        # say the preset's own (keras-hub's GELU is the tanh approximation).
        config["hidden_act"] = "gelu_pytorch_tanh"
        config["hidden_activation"] = "gelu_pytorch_tanh"
        config["rms_norm_eps"] = backbone.layer_norm_epsilon
    return config, get_weights(backbone, include_lm_head=True)


def hf_checkpoint(causal_lm, folder, special_token_ids=None):
    """Write ``causal_lm``'s backbone as a float32 Hugging Face checkpoint
    (config.json, model.safetensors, generation_config.json) in
    ``folder``. ``special_token_ids``: bos/eos ids to record, if any."""
    import keras
    import numpy as np
    from safetensors.numpy import save_file

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config, weights = _hf_config_and_weights(causal_lm.backbone)
    config.update(special_token_ids or {})
    tensors = {}
    for name, weight in weights.items():
        value = keras.ops.convert_to_numpy(weight)
        tensors[name] = np.ascontiguousarray(value, dtype=np.float32)
    # A tied lm_head is the embedding itself: Transformers ties it again
    # on loading, and safetensors refuses two names for one buffer.
    if config.get("tie_word_embeddings", True) and "lm_head.weight" in tensors:
        del tensors["lm_head.weight"]
    save_file(tensors, str(folder / "model.safetensors"), {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    # The native rows generate a fixed number of tokens, as the Keras rows
    # do with stop_token_ids=None: no end-of-sequence stops them.
    generation = {"do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def export_openvino(checkpoint, out, weight_format, python=None):
    """``optimum-cli export openvino`` of ``checkpoint`` into ``out``;
    returns the seconds it took."""
    python = python or sys.executable
    command = [
        str(pathlib.Path(python).parent / "optimum-cli"),
        "export",
        "openvino",
        "--model",
        str(checkpoint),
        "--task",
        "text-generation-with-past",
        "--weight-format",
        weight_format,
        # The rows hand token ids to the model: no tokenizer is converted.
        "--disable-convert-tokenizer",
        str(out),
    ]
    return _timed(command, offline_environment(), "optimum-cli export")


def export_keras(preset, out, weights, python=None):
    """``python -m keras_ov_einsum.export`` of ``preset`` into ``out``;
    returns the seconds it took."""
    python = python or sys.executable
    command = [python, "-m", "keras_ov_einsum.export", str(preset), str(out)]
    command += ["--weights", weights]
    env = offline_environment()
    # The export traces on Keras's OpenVINO backend, whatever the caller's.
    env["KERAS_BACKEND"] = "openvino"
    return _timed(command, env, "python -m keras_ov_einsum.export")


def _timed(command, env, name):
    """Run an export's command in a fresh process; its wall time."""
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = completed.stderr.strip()[-2000:]
        raise RuntimeError(f"{name} failed: {tail}")
    return round(seconds, 2)


def _special_token_ids(tokenizer):
    ids = {}
    for key, token in (
        ("bos_token_id", tokenizer.start_token),
        ("eos_token_id", tokenizer.end_token),
    ):
        if token is not None:
            ids[key] = tokenizer.token_to_id(token)
    return ids


def weight_format_of(dtype, exporter="optimum"):
    """The export's weight format for ``dtype``; a ValueError saying so
    when it has none (bfloat16)."""
    formats = WEIGHT_FORMATS[exporter]
    if dtype not in formats:
        raise ValueError(
            f"no native row for {dtype}: {_COMMANDS[exporter]} exports "
            f"{', '.join(sorted(set(formats.values())))} only"
        )
    return formats[dtype]


def export(preset, dtype, exporter="optimum", fresh=False):
    """``preset``'s export for ``dtype`` (made once, or again with
    ``fresh``): {"ir": folder, "prompt_ids": [...], "prompts_ids": [[...],
    ...] (models.PROMPTS'), "export_s": seconds, "exported": when}."""
    weight_format = weight_format_of(dtype, exporter)
    folder = _native_dir(preset, exporter)
    name = weight_format if exporter == "keras" else f"openvino-{weight_format}"
    ir, timing = folder / name, folder / f"{name}.json"
    prompt_file = folder / "prompt_ids.json"
    made = (ir / "openvino_model.xml").exists() and timing.exists()
    if fresh or not made or not prompt_file.exists():
        make = _export_optimum if exporter == "optimum" else _export_keras
        ids, seconds = make(preset, folder, weight_format, ir)
        prompt_file.write_text(json.dumps(ids))
        exported = {
            "export_s": seconds,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        timing.write_text(json.dumps(exported))
    # The batch rows' prompts: from the preset's preprocessor, beside an
    # export made before they were (which they leave as it is).
    prompts_file = folder / f"prompts_ids-{_prompts_digest()}.json"
    if not prompts_file.exists():
        prompts_file.write_text(json.dumps(_prompts_ids(preset)))
    return {
        "ir": str(ir),
        "prompt_ids": json.loads(prompt_file.read_text()),
        "prompts_ids": json.loads(prompts_file.read_text()),
        **json.loads(timing.read_text()),
    }


def _prompts_digest():
    """A digest of models.PROMPTS: a changed list is tokenized again."""
    return hashlib.sha256(json.dumps(PROMPTS).encode()).hexdigest()[:8]


def _replace(partial, ir):
    """Complete exports only, even if interrupted: ``partial`` becomes
    ``ir``, replacing an older one."""
    shutil.rmtree(ir, ignore_errors=True)
    partial.rename(ir)


def _export_optimum(preset, folder, weight_format, ir):
    import keras_hub

    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "hf"
    if not (checkpoint / "model.safetensors").exists():
        partial = folder / "hf.partial"
        shutil.rmtree(partial, ignore_errors=True)
        special = _special_token_ids(causal_lm.preprocessor.tokenizer)
        hf_checkpoint(causal_lm, partial, special)
        partial.rename(checkpoint)
    ids = prompt_ids(causal_lm.preprocessor)
    del causal_lm
    partial = ir.with_name(ir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    seconds = export_openvino(checkpoint, partial, weight_format)
    _replace(partial, ir)
    return ids, seconds


def _export_keras(preset, folder, weights, ir):
    import keras_hub

    # The preprocessor alone: the export's own process loads the weights.
    preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
        str(preset)
    )
    ids = prompt_ids(preprocessor)
    folder.mkdir(parents=True, exist_ok=True)
    whole = ir.with_name(f"{ir.name}-export")
    partial = whole.with_name(whole.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    seconds = export_keras(preset, partial, weights)
    _replace(partial, whole)
    partial = ir.with_name(ir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _without_tokenizers(whole, partial)
    _replace(partial, ir)
    return ids, seconds


# The export's tokenizer IRs. The rows hand genai token ids, and
# optimum-intel's IR has none (its checkpoint has no tokenizer): loading
# them would charge the keras-export row alone with loading
# openvino-tokenizers' extension, its time and memory.
_TOKENIZER_FILES = ("openvino_tokenizer", "openvino_detokenizer")


def _without_tokenizers(export_dir, view):
    """``view``: hard links to the files of ``export_dir`` but its
    tokenizer IRs (the same pages, no copy)."""
    view.mkdir()
    for path in sorted(export_dir.iterdir()):
        if path.is_file() and not path.name.startswith(_TOKENIZER_FILES):
            os.link(path, view / path.name)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native")
    parser.add_argument("preset")
    parser.add_argument("dtype", choices=list(WEIGHT_FORMATS["optimum"]))
    parser.add_argument(
        "--exporter", choices=list(WEIGHT_FORMATS), default="optimum"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="export again, even if cached"
    )
    args = parser.parse_args(argv)
    print(
        json.dumps(export(args.preset, args.dtype, args.exporter, args.fresh))
    )


if __name__ == "__main__":
    main()
