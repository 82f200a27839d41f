"""The native OpenVINO rows' model: the Keras preset's own weights, exported.

A preset (random weights, see models.py) becomes a Hugging Face checkpoint
of the same architecture with the same weights (keras-hub's Transformers
exporter maps the weights), which optimum-intel exports to an OpenVINO IR:
``fp32`` for the float32 rows, ``int8`` (NNCF weight compression) for
``--dtype int8``. Both are cached beside the preset, keyed by the preset's
files and the exporting packages' versions, so a changed preset, config or
exporter never reuses a stale export.

Run by the runner as ``python -m benchmarks.native PRESET DTYPE`` (with any
Keras backend); prints the IR folder and the prompt's token ids.
"""

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

from benchmarks.models import PROMPT

__all__ = [
    "BACKENDS",
    "HINTS",
    "WEIGHT_FORMATS",
    "export_openvino",
    "hf_checkpoint",
    "main",
    "offline_environment",
    "prompt_ids",
    "weight_format_of",
]

# The native backends: openvino-genai's LLMPipeline and optimum-intel's
# OVModelForCausalLM, both running the same exported IR.
BACKENDS = ("openvino-genai", "optimum-intel")
# INFERENCE_PRECISION_HINT: f32 is the Keras rows' precision (keras-hub
# compiles float32 models with it); "default" leaves the plugin's choice
# (bf16 on a CPU with AMX or AVX-512 BF16), a configuration of its own.
HINTS = ("f32", "default")
# --dtype -> optimum-cli's --weight-format
# (int8_weights: keras's weights-only int8, which is what the int8 IR holds.
# float16: the float32 preset's weights rounded to float16, as Keras's
# float16 load rounds them. optimum-cli has no bfloat16 format: bfloat16
# has no native row.)
WEIGHT_FORMATS = {
    "float32": "fp32",
    "float16": "fp16",
    "int8": "int8",
    "int8_weights": "int8",
}
# Part of every export's cache key: bump it when the export recipe changes.
_EXPORT_REVISION = 1
_EXPORTERS = ("keras-hub", "optimum-intel", "transformers", "openvino", "nncf")


def offline_environment(base=None):
    """No process of the native rows may reach the Hugging Face Hub."""
    return dict(
        os.environ if base is None else base,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )


def _export_key(preset):
    """A digest of what the export depends on: the preset's files (their
    names, sizes and modification times) and the exporters' versions."""
    from importlib import metadata

    preset = pathlib.Path(preset)
    files = [
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(preset.iterdir())
        if path.is_file()
    ]
    versions = []
    for name in _EXPORTERS:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, None))
    key = json.dumps([_EXPORT_REVISION, str(preset), files, versions])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _native_dir(preset):
    preset = pathlib.Path(preset)
    folder = preset.with_name(f"{preset.name}-native-{_export_key(preset)}")
    return folder


def prompt_ids(causal_lm):
    """The prompt as the Keras rows' generate() packs it (GPT-2: its start
    token, then "Hello"): the preset's own preprocessor."""
    import keras

    packed = causal_lm.preprocessor.generate_preprocess([PROMPT])
    ids = keras.ops.convert_to_numpy(packed["token_ids"])[0]
    mask = keras.ops.convert_to_numpy(packed["padding_mask"])[0]
    return [int(token) for token, kept in zip(ids, mask) if kept]


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
    """``optimum-cli export openvino`` of ``checkpoint`` into ``out``."""
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
    completed = subprocess.run(
        command, env=offline_environment(), capture_output=True, text=True
    )
    if completed.returncode != 0:
        tail = completed.stderr.strip()[-2000:]
        raise RuntimeError(f"optimum-cli export failed: {tail}")
    return out


def _special_token_ids(tokenizer):
    ids = {}
    for key, token in (
        ("bos_token_id", tokenizer.start_token),
        ("eos_token_id", tokenizer.end_token),
    ):
        if token is not None:
            ids[key] = tokenizer.token_to_id(token)
    return ids


def weight_format_of(dtype):
    """optimum-cli's ``--weight-format`` for ``dtype``; a ValueError saying
    so when it has none (bfloat16)."""
    if dtype not in WEIGHT_FORMATS:
        raise ValueError(
            f"no native row for {dtype}: optimum-cli exports "
            f"{', '.join(sorted(set(WEIGHT_FORMATS.values())))} only"
        )
    return WEIGHT_FORMATS[dtype]


def export(preset, dtype):
    """The IR folder of ``preset`` for ``dtype`` (built once) and the
    prompt's token ids."""
    import keras_hub

    weight_format = weight_format_of(dtype)
    folder = _native_dir(preset)
    ir = folder / f"openvino-{weight_format}"
    prompt_file = folder / "prompt_ids.json"
    if (ir / "openvino_model.xml").exists() and prompt_file.exists():
        return ir, json.loads(prompt_file.read_text())
    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "hf"
    if not (checkpoint / "model.safetensors").exists():
        partial = folder / "hf.partial"
        shutil.rmtree(partial, ignore_errors=True)
        special = _special_token_ids(causal_lm.preprocessor.tokenizer)
        hf_checkpoint(causal_lm, partial, special)
        partial.rename(checkpoint)
    ids = prompt_ids(causal_lm)
    del causal_lm
    partial = ir.with_name(ir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    export_openvino(checkpoint, partial, weight_format)
    partial.rename(ir)  # complete exports only, even if interrupted
    prompt_file.write_text(json.dumps(ids))
    return ir, ids


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native")
    parser.add_argument("preset")
    parser.add_argument("dtype", choices=list(WEIGHT_FORMATS))
    args = parser.parse_args(argv)
    ir, ids = export(args.preset, args.dtype)
    print(json.dumps({"ir": str(ir), "prompt_ids": ids}))


if __name__ == "__main__":
    main()
