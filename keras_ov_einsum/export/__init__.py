"""Export a keras-hub causal LM as the directory OpenVINO's own pipelines
load: openvino-genai's ``LLMPipeline``, optimum-intel's
``OVModelForCausalLM``, OpenVINO Model Server.

    keras_ov_einsum.export_genai(causal_lm, "out", weights="int8")
    python -m keras_ov_einsum.export PRESET out --weights int8

The directory holds ``openvino_model.xml/.bin`` (the stateful IR:
``model.py``), ``openvino_tokenizer.xml`` and ``openvino_detokenizer.xml``
(``tokenizer.py``), ``config.json`` and ``generation_config.json``
(``config.py``). The IR's ``runtime_options`` are those optimum-intel
writes for a text-generation model: a float16 key/value cache for float
weights (the plugin's default, u8, for int8), so the pipelines compile it
as they compile optimum-intel's IR of the same model, in the device's
default precision (bfloat16 on a CPU with bfloat16 units). Keras's
float32 arithmetic is ``INFERENCE_PRECISION_HINT="f32"``,
``KV_CACHE_PRECISION="f32"`` (and, for int8 weights,
``DYNAMIC_QUANTIZATION_GROUP_SIZE="0"``) given to the pipeline.
"""

import pathlib

from .model import FAMILIES, ExportError
from .weights import WEIGHTS

__all__ = ["FAMILIES", "WEIGHTS", "ExportError", "export_genai"]

MODEL_FILE = "openvino_model.xml"
TOKENIZER_FILE = "openvino_tokenizer.xml"
DETOKENIZER_FILE = "openvino_detokenizer.xml"


def export_genai(causal_lm, directory, weights="float32"):
    """Writes ``causal_lm`` (a float32 keras-hub GPT-2, Llama or Gemma
    causal LM with its preprocessor) into ``directory`` as openvino-genai
    and optimum-intel load it; ``weights``: ``"float32"``, ``"float16"`` or
    ``"int8"`` (NNCF's asymmetric per-channel form). Returns the directory
    as a ``pathlib.Path``. Raises ``ExportError`` naming what a model
    lacks for the export."""
    import openvino as ov

    from . import config, model, tokenizer

    if weights not in WEIGHTS:
        raise ValueError(
            f"weights={weights!r}; expected one of {', '.join(WEIGHTS)}"
        )
    family = model.family_of(causal_lm)
    # Before the trace: a model without a tokenizer fails fast.
    tokenizer_ir, detokenizer_ir = tokenizer.convert(causal_lm)
    ir = model.stateful_model(causal_lm)
    if weights == "int8":
        from .weights import compress_int8

        compress_int8(ir)
    _runtime_options(ir, weights)
    _provenance(ir, weights)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ov.save_model(
        ir, directory / MODEL_FILE, compress_to_fp16=weights == "float16"
    )
    ov.save_model(tokenizer_ir, directory / TOKENIZER_FILE)
    ov.save_model(detokenizer_ir, directory / DETOKENIZER_FILE)
    special_ids = tokenizer.special_ids(causal_lm.preprocessor.tokenizer)
    config.write(directory, causal_lm, family.model_type, special_ids)
    return directory


def _runtime_options(ir, weights):
    """The compile options the IR carries, as optimum-intel's export
    writes them for a text-generation model (OpenVINO applies them unless
    the caller sets its own)."""
    options = {"ACTIVATIONS_SCALE_FACTOR": "8.0"}
    if weights != "int8":
        options["KV_CACHE_PRECISION"] = "f16"
    for name, value in options.items():
        ir.set_rt_info(value, ["runtime_options", name])


def _provenance(ir, weights):
    """Where the IR comes from, beside what optimum-intel records of its
    own exports."""
    from importlib import metadata

    from .. import __version__

    ir.set_rt_info(__version__, ["keras_ov_einsum", "version"])
    ir.set_rt_info(weights, ["keras_ov_einsum", "weights"])
    for package in ("keras", "keras-hub", "openvino"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        ir.set_rt_info(version, ["keras_ov_einsum", f"{package}_version"])
