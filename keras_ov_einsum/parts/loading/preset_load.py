"""Load a keras-hub preset without drawing the random values its weights
replace.

``from_preset`` builds the backbone from its config, which runs every
layer's initializer, then overwrites every variable with the preset's
saved weights. On Keras's OpenVINO backend an initializer is NumPy drawing
the values in float64 and OpenVINO copying them into a Constant: most of
a stock ``from_preset``, all of it thrown away (docs/parts.md).

While a preset loader builds a backbone whose weights it then loads, this
part gives each new float variable a zero Broadcast instead (no bytes, no
draw); ``load_weights`` then assigns the saved values, as it does stock,
but into a Constant that shares the array read from the weights file
(stock copies every weight once more: a second transient copy of the
model). A weight loaded into a variable of another type is cast once, to
stock's bits, and the Constant shares the cast array (stock copies it once
more): float32 to bfloat16 in NumPy (stock hands OpenVINO a Python list of
every value, as its ``constant()`` does for bfloat16, which NumPy lacks:
most of a bfloat16 load), float32 to float16 by OpenVINO's Convert (faster
than NumPy's ``astype``). After either cast, a weight the mapped_weights
part mapped gives its pages back (``mapped_weights.release_pages``): the
load never holds the whole float32 file beside the cast copies.

Only float variables created inside ``Backbone.from_config`` under a
loader called with ``load_weights=True`` are touched: a task's own layers
(a classifier head the preset may not hold), integer variables (a dropout
layer's seed state, which the weights file does not hold) and
``load_weights=False`` keep their initializers. keras-hub saves and loads
a backbone's weights whole, so none of the zeros survive the load (the
tests check that every backbone variable is a Constant after it).
"""

import functools
import threading

from ...core import backend, decisions
from ...core.context import scoped
from ...core.part import BackendHook, Hook, Part
from . import mapped_weights

__all__ = [
    "BFLOAT16_LABEL",
    "CAST_LABEL",
    "PART",
    "SHARED_LABEL",
    "VARIABLES_LABEL",
]

VARIABLES_LABEL = (
    "preset_load: variables not initialized (the preset's weights replace them)"
)
SHARED_LABEL = "preset_load: weights assigned without a copy"
BFLOAT16_LABEL = (
    "preset_load: float32 weights rounded to bfloat16 in NumPy (stock: "
    "through a Python list)"
)
CAST_LABEL = (
    "preset_load: weights cast to the variable's type once (stock: cast, "
    "then copied)"
)
_PRESET_UTILS = "keras_hub.src.utils.preset_utils"
_scope = threading.local()  # .weights_follow, .in_backbone: per thread


def _loader_wrapper(stock_load):
    """``KerasPresetLoader.load_backbone`` / ``load_task``: notes whether the
    backbone built inside will get the preset's weights."""

    @functools.wraps(stock_load)
    def load(self, cls, load_weights, *args, **kwargs):
        with scoped(_scope, "weights_follow", bool(load_weights)):
            return stock_load(self, cls, load_weights, *args, **kwargs)

    return load


def _load_weights_wrapper(stock_load_weights):
    """``KerasPresetLoader._load_backbone_weights``: the arrays assigned
    inside come straight from the weights file, read for this one use."""

    @functools.wraps(stock_load_weights)
    def load_backbone_weights(self, backbone):
        with scoped(_scope, "assigning_weights", True):
            return stock_load_weights(self, backbone)

    return load_backbone_weights


def _convert_wrapper(stock_convert):
    """``Variable._convert_to_tensor`` of the OpenVINO backend: an array of
    the variable's own type becomes a Constant on the array's memory."""

    @functools.wraps(stock_convert)
    def convert_to_tensor(self, value, dtype=None):
        if getattr(_scope, "assigning_weights", False):
            shared = _shared_constant(value, dtype or self._dtype)
            if shared is not None:
                decisions.count(SHARED_LABEL)
                return shared
            for make, label in (
                (_bfloat16_constant, BFLOAT16_LABEL),
                (_cast_constant, CAST_LABEL),
            ):
                cast = make(value, dtype or self._dtype)
                if cast is not None:
                    decisions.count(label)
                    break
            else:
                cast = stock_convert(self, value, dtype)
            # Copied: a mapped weight's pages go back (mapped_weights).
            mapped_weights.release_pages(value)
            return cast
        return stock_convert(self, value, dtype)

    return convert_to_tensor


def _shared_constant(value, dtype):
    """A Constant sharing ``value``'s memory (which it keeps alive), or None
    when ``value`` is not a plain C-ordered array of exactly ``dtype``."""
    import numpy as np
    import openvino as ov

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if (
        type(value) is not np.ndarray
        or not value.flags.c_contiguous
        or value.dtype.kind not in "fiu"
        or value.dtype != np.dtype(dtype)
    ):
        return None
    constant = ov.op.Constant(value, shared_memory=True)
    return OpenVINOKerasTensor(constant.output(0))


def _cast_constant(value, dtype):
    """A Constant on ``value`` cast to ``dtype`` with stock's bits (its
    ``constant()`` calls NumPy's ``astype``), not copied again into the
    Constant; float32 to float16 by OpenVINO, faster. None when ``value``
    is not a plain array or ``dtype`` not a NumPy number type
    (bfloat16)."""
    import numpy as np
    import openvino as ov

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if type(value) is not np.ndarray or value.dtype.kind not in "fiu":
        return None
    try:
        target = np.dtype(dtype)
    except TypeError:
        return None
    if target.kind not in "fiu":
        return None
    if (
        value.dtype == np.float32
        and target == np.float16
        and value.flags.c_contiguous
        and not np.isnan(value).any()
    ):
        try:
            constant = _float16_by_openvino(value)
            return OpenVINOKerasTensor(constant.output(0))
        except Exception:  # Never let the fast path break a load.
            pass
    cast = np.ascontiguousarray(value.astype(target))
    constant = ov.op.Constant(cast, shared_memory=True)
    return OpenVINOKerasTensor(constant.output(0))


def _float16_by_openvino(value):
    """A float16 Constant of float32 ``value`` (C-ordered, no NaN), cast by
    OpenVINO's constant folding of a Convert: NumPy's bits (round to
    nearest even, overflow to infinity, subnormals; the tests check the
    edges) in less time than NumPy takes (docs/parts.md, docs/native-gap.md).
    Not for NaNs: their payload bits come out otherwise."""
    import openvino as ov
    import openvino.opset13 as ov_opset
    from openvino.passes import ConstantFolding, Manager

    source = ov.op.Constant(value, shared_memory=True)
    model = ov.Model([ov_opset.convert(source, ov.Type.f16)], [])
    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
    folded = model.get_results()[0].input_value(0).get_node()
    if folded.get_type_name() != "Constant":
        raise RuntimeError("OpenVINO did not fold the Convert")
    return folded


def bfloat16_bits(value):
    """The bfloat16 bits OpenVINO makes of float32 ``value`` (its
    ``bfloat16(float)``): half of the last kept bit's weight added to the
    float32 bits, in 32-bit arithmetic (it wraps, as OpenVINO's does), then
    the low 16 bits dropped; NaNs quieted first. Not ml_dtypes'
    round-to-nearest-even: where the last kept bit is 0 nothing is added,
    so values past the halfway point round down (a quarter of random
    float32 values)."""
    import numpy as np

    bits = value.view(np.uint32)
    nan = np.isnan(value)
    if nan.any():
        # Stock's values pass through Python floats (doubles): a signaling
        # NaN comes back quiet.
        bits = bits.copy()
        bits[nan] |= 0x400000
    rounded = bits & 0x10000
    rounded >>= 1
    rounded += bits
    rounded >>= 16
    return rounded.astype(np.uint16)


def _bfloat16_constant(value, dtype):
    """A bfloat16 Constant of float32 ``value``, rounded as stock's
    ``constant(value, bf16)`` rounds it; None for anything else."""
    import numpy as np
    import openvino as ov

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if (
        type(value) is not np.ndarray
        or value.dtype != np.float32
        or str(dtype) != "bfloat16"
    ):
        return None
    bits = bfloat16_bits(np.ascontiguousarray(value))
    tensor = ov.Tensor(bits, list(value.shape), ov.Type.bf16)
    # Copied into the Constant (2 bytes a value): a Constant sharing an
    # ov.Tensor's memory does not keep the array alive.
    constant = ov.op.Constant(tensor, shared_memory=False)
    return OpenVINOKerasTensor(constant.output(0))


def _from_config_wrapper(stock_from_config):
    """``Backbone.from_config`` (a classmethod): the variables it creates
    are the backbone's."""
    function = stock_from_config.__func__

    @functools.wraps(function)
    def from_config(cls, config):
        weights_follow = getattr(_scope, "weights_follow", False)
        with scoped(_scope, "in_backbone", weights_follow):
            return function(cls, config)

    return classmethod(from_config)


def _initialize_wrapper(stock_initialize):
    """``Variable._initialize_with_initializer`` of the OpenVINO backend."""

    @functools.wraps(stock_initialize)
    def initialize_with_initializer(self, initializer):
        # Integer variables keep their initializer: a dropout layer's seed
        # state is one, and not among the saved weights; int8 kernels are
        # cheap to make. The expensive draws are the float weights.
        if not getattr(_scope, "in_backbone", False) or not _is_float(self):
            return stock_initialize(self, initializer)
        self._initialize(_zeros(self._shape, self._dtype))
        decisions.count(VARIABLES_LABEL)

    return initialize_with_initializer


def _is_float(variable):
    from keras.src.backend.common.variables import is_float_dtype

    return is_float_dtype(variable._dtype)


def _zeros(shape, dtype):
    """A zero tensor of ``shape`` that holds no bytes: a Broadcast."""
    import numpy as np
    import openvino.opset13 as ov_opset

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    zero = ov_opset.constant(0, OPENVINO_DTYPES[dtype])
    target = ov_opset.constant(np.asarray(shape, np.int64))
    return OpenVINOKerasTensor(ov_opset.broadcast(zero, target).output(0))


PART = Part(
    name="preset_load",
    summary="from_preset draws no random values for the weights the preset "
    "replaces, and copies no weight twice",
    wraps=(
        (
            Hook(_PRESET_UTILS, "KerasPresetLoader.load_backbone"),
            _loader_wrapper,
        ),
        (Hook(_PRESET_UTILS, "KerasPresetLoader.load_task"), _loader_wrapper),
        (
            Hook(_PRESET_UTILS, "KerasPresetLoader._load_backbone_weights"),
            _load_weights_wrapper,
        ),
        (BackendHook("Variable._convert_to_tensor"), _convert_wrapper),
        (
            Hook("keras_hub.src.models.backbone", "Backbone.from_config"),
            _from_config_wrapper,
        ),
        (
            BackendHook("Variable._initialize_with_initializer"),
            _initialize_wrapper,
        ),
    ),
)
