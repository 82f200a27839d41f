"""A keras-hub preset keeps each layer's quantization config.

keras's ``quantize("int8", config=...)`` takes a ``QuantizationConfig``
that chooses the layer's quantizers (``Int8QuantizationConfig(
activation_quantizer=None)``: weights only, the form of OpenVINO's int8
IRs) and serializes it in the layer's own ``get_config``. A keras-hub
preset holds no layer configs: it rebuilds the backbone from its
hyperparameters and a ``DTypePolicyMap`` of quantization modes, so
``from_preset`` builds every int8 layer with keras's default quantizers
and a weights-only model comes back quantizing every activation row:
silently another model, with other outputs (keras 3.15, keras-hub 0.32).
It could only be run by quantizing float32 weights in every process
(docs/native-gap.md has what that cost).

This part writes ``quantization_configs.json`` beside the preset's files
when keras-hub saves a backbone (each layer's path, the key its dtype
policy has in the map, its serialized config) and, while keras-hub loads
a preset that has it, hands each quantized layer its saved config as the
layer builds its quantized variables, as if it had been passed to the
layer. Stock keras-hub ignores the file; a preset without it loads as
stock loads it. An entry keras could not build the layer with and run
(another mode than the layer's policy, a class it cannot find, a field of
the wrong type) leaves that layer keras's defaults, the reason in
``explain()``; a file it cannot use (unreadable, not JSON, not an object)
leaves every layer keras's defaults, with a warning naming it: never a
failed load. Each config is checked where the part builds it, as keras
will use it: an error raised inside keras's build would pass for stock's
own, which the package's guard hands on to the caller. The keras-hub fix
would keep the configs in the preset's config itself (not upstreamed
here: keras-hub's preset format, not keras's OpenVINO backend).
"""

import functools
import json
import logging
import os
import threading
import warnings

from ...core import decisions
from ...core.context import scoped
from ...core.part import Hook, Part

__all__ = ["FILE", "LABEL", "PART", "SAVED_LABEL", "save_configs"]

logger = logging.getLogger("keras_ov_einsum")

FILE = "quantization_configs.json"
LABEL = "quantization_configs: a layer built with its saved quantization config"
SAVED_LABEL = "quantization_configs: a layer's quantization config saved"
_PRESET_UTILS = "keras_hub.src.utils.preset_utils"
# The layers whose quantized_build gets a saved config (from keras 3.16
# each inherits Layer.quantized_build(input_shape, mode, config=None)).
_LAYERS = (
    ("keras.src.layers.core.dense", "Dense"),
    ("keras.src.layers.core.einsum_dense", "EinsumDense"),
    ("keras.src.layers.core.embedding", "Embedding"),
    ("keras.src.layers.core.reversible_embedding", "ReversibleEmbedding"),
)
# .configs: the loading preset's, by layer path (None: no file, or none it
# can use); .verdicts: each distinct entry's check, by its JSON and mode;
# .building: the layer whose quantized_build a wrapper runs.
_scope = threading.local()


def save_configs(backbone, preset_dir):
    """Write the quantization configs of ``backbone``'s layers into the
    preset folder ``preset_dir``, or no file where it has none (a stale
    one from an earlier save would be read back); the count written."""
    from keras.src.saving import serialization_lib

    configs = {}
    for layer in backbone._flatten_layers():
        config = getattr(layer, "quantization_config", None)
        if config is None:
            continue
        try:
            serialized = serialization_lib.serialize_keras_object(config)
            json.dumps(serialized)
        except (TypeError, ValueError) as error:
            # Stock saved the preset: never fail it for an extra file.
            _declined(
                layer.path, f"its config cannot be saved ({error!r})", layer
            )
            continue
        configs[layer.path] = serialized
    path = os.path.join(preset_dir, FILE)
    if configs:
        with open(path, "w") as file:
            json.dump(configs, file, indent=2, sort_keys=True)
    elif os.path.exists(path):
        os.remove(path)
    return len(configs)


def _save_backbone_wrapper(stock_save_backbone):
    """``KerasPresetSaver.save_backbone``: stock's files, then the
    configs."""

    @functools.wraps(stock_save_backbone)
    def save_backbone(self, backbone, *args, **kwargs):
        result = stock_save_backbone(self, backbone, *args, **kwargs)
        saved = save_configs(backbone, self.preset_dir)
        if saved:
            decisions.count(SAVED_LABEL, saved)
        return result

    return save_backbone


def _loader_wrapper(stock_load):
    """``KerasPresetLoader.load_backbone`` / ``load_task``: the preset's
    saved configs, if it has any, for the layers built inside."""

    @functools.wraps(stock_load)
    def load(self, *args, **kwargs):
        # load_task may call load_backbone: the file is read once a load.
        if getattr(_scope, "configs", False) is not False:
            return stock_load(self, *args, **kwargs)
        configs = _read_configs(self.preset)
        with scoped(_scope, "configs", configs), scoped(_scope, "verdicts", {}):
            return stock_load(self, *args, **kwargs)

    return load


def _read_configs(preset):
    """The preset's saved configs by layer path; None where it has no file,
    or one this part cannot use (a warning names it)."""
    from keras_hub.src.utils import preset_utils

    path = os.path.join(str(preset), FILE)
    try:
        if not preset_utils.check_file_exists(preset, FILE):
            return None
        path = preset_utils.get_file(preset, FILE)
        configs = preset_utils.load_json(preset, FILE)
        if not isinstance(configs, dict):
            raise ValueError(
                f"a JSON {type(configs).__name__}, not an object of configs"
            )
    except Exception as error:  # stock's load goes on without the file
        message = (
            f"keras_ov_einsum: {path} cannot be used ({error!r}): every "
            "quantized layer is built with keras's default quantizers, as "
            "stock keras-hub builds it"
        )
        logger.warning("%s", message)
        warnings.warn(message, UserWarning, stacklevel=2)
        _declined(path, f"cannot be read ({error!r})")
        return None
    return configs


def _quantized_build_wrapper(stock_quantized_build):
    """A layer's ``quantized_build``: its saved config where keras-hub
    passes none."""

    @functools.wraps(stock_quantized_build)
    def quantized_build(self, shape, mode, config=None):
        saved = getattr(_scope, "configs", None)
        # From keras 3.16 a subclass's wrapper (ReversibleEmbedding's)
        # calls its base class's (Embedding's, both on the inherited
        # method): the outer one decides, once.
        outer = getattr(_scope, "building", False) is self
        if config is None and saved and self.path in saved and not outer:
            config = _restored(self, mode, saved[self.path])
        with scoped(_scope, "building", self):
            return stock_quantized_build(self, shape, mode, config)

    return quantized_build


def _restored(layer, mode, serialized):
    """The layer's saved config, set as its own; None (keras's defaults,
    the reason recorded) where keras could not build the layer with it and
    run it."""
    from keras.src.saving import serialization_lib

    try:
        # Runs the config's and its quantizers' own checks.
        config = serialization_lib.deserialize_keras_object(serialized)
    except Exception as error:
        return _declined(
            layer.path, f"the saved config cannot be read ({error!r})", layer
        )
    verdicts = getattr(_scope, "verdicts", None)
    if verdicts is None:
        verdicts = {}
    key = (json.dumps(serialized, sort_keys=True), mode)
    if key not in verdicts:
        verdicts[key] = _unusable(config, mode)
    if verdicts[key] is not None:
        return _declined(layer.path, verdicts[key], layer)
    layer.quantization_config = config
    decisions.count(LABEL)
    return config


def _unusable(config, mode):
    """Why keras could not use ``config`` for a layer of ``mode``, checked
    as keras uses it: its mode, its quantizers' types, its activation
    quantizer called (on every input of the layer's call), the config
    serialized again (with the layer's, on the next save). None: usable."""
    import keras
    import numpy as np
    from keras.src.saving import serialization_lib

    if not isinstance(config, keras.quantizers.QuantizationConfig):
        return (
            f"the saved entry is a {type(config).__name__}, not a "
            "QuantizationConfig"
        )
    try:
        saved_mode = config.mode
    except (AttributeError, NotImplementedError):  # a base class: no mode
        saved_mode = None
    if saved_mode != mode:
        return (
            f"the saved config is for mode {saved_mode!r}, the layer's "
            f"policy is {mode!r}"
        )
    for name in ("weight_quantizer", "activation_quantizer"):
        quantizer = getattr(config, name, None)
        if quantizer is not None and not isinstance(
            quantizer, keras.quantizers.Quantizer
        ):
            return (
                f"its {name} is a {type(quantizer).__name__}, not a keras "
                "Quantizer"
            )
    try:
        quantizer = getattr(config, "activation_quantizer", None)
        if quantizer is not None:
            # A pair, as the layer's call unpacks it.
            quantized, scale = quantizer(np.ones((1, 4), "float32"), axis=-1)
        serialization_lib.serialize_keras_object(config)
    except Exception as error:
        return f"the saved config fails as keras uses it ({error!r})"
    return None


def _declined(subject, why, layer=None):
    """Recorded for ``explain()``: ``subject`` (a layer's path, or the
    file) gets keras's default quantizers."""
    decisions.record(
        decisions.Decision(
            equation=LABEL,
            shapes=(),
            dtypes=() if layer is None else (type(layer).__name__,),
            lowered=False,
            reason=f"{subject}: {why}: keras's default quantizers",
        )
    )


PART = Part(
    name="quantization_configs",
    summary="presets keep each layer's quantization config: a weights-only "
    "int8 model loads weights-only",
    wraps=(
        (
            Hook(_PRESET_UTILS, "KerasPresetSaver.save_backbone"),
            _save_backbone_wrapper,
        ),
        (
            Hook(_PRESET_UTILS, "KerasPresetLoader.load_backbone"),
            _loader_wrapper,
        ),
        (Hook(_PRESET_UTILS, "KerasPresetLoader.load_task"), _loader_wrapper),
        *(
            (Hook(module, f"{name}.quantized_build"), _quantized_build_wrapper)
            for module, name in _LAYERS
        ),
    ),
)
