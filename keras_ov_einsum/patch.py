"""Install and remove the lowerings on Keras's OpenVINO backend.

Three functions of ``keras.src.backend.openvino.numpy`` are wrapped:
``einsum`` (see ``lowering.py``), ``matmul`` (see ``matmul.py``) and
``multiply`` (the prescale part, see ``prescale.py``), and two of
``keras.src.backend.openvino.core``: ``slice_update`` (see
``slice_update.py``) and ``align_operand_types`` (see ``align_types.py``;
``numpy.py`` holds it under a second name, wrapped too). Each wrapper runs
the stock function first and rewrites the node it built. The opt-in int8 part
(``int8.py``) also wraps ``openvino.Core.compile_model``, to add the compile
options its exactness needs. The patch is data: part -> (wrapper factory,
the places it goes) in ``_WRAPPERS``. Installing records
``(module, attribute, original)``; removing restores those in reverse order
and forgets them, so a second ``disable()`` is a no-op and the original
function object comes back identical. Versions are checked before anything
is touched.
"""

import contextlib
import functools
import importlib
import logging
import re
import threading
import warnings

from . import decisions
from .align_types import drop_identity_converts
from .int8 import compile_options, lower_int8, lower_int8_matmul
from .lowering import build_lowered, clear_kernel_cache, plan_einsum
from .matmul import lower_transposed_matmul
from .prescale import lower_prescaled_projection
from .slice_update import lower_slice_update

__all__ = [
    "UnsupportedVersionError",
    "disable",
    "enable",
    "enabled",
    "is_enabled",
]

logger = logging.getLogger("keras_ov_einsum")

BACKEND_NUMPY = "keras.src.backend.openvino.numpy"
BACKEND_CORE = "keras.src.backend.openvino.core"
# The oldest releases the patch is tested with (see README, "Compatibility").
MINIMUM_VERSIONS = {"keras": (3, 12, 0), "openvino": (2025, 3, 0)}

_lock = threading.RLock()
_installed = []  # (module, attribute, original), in install order


class UnsupportedVersionError(RuntimeError):
    """The installed keras or openvino lacks what the patch hooks into."""


def enable(
    *,
    einsum=True,
    matmul=True,
    slice_update=True,
    prescale=True,
    align_types=True,
    int8=False,
):
    """Lower constant-kernel einsums to MatMul on Keras's OpenVINO backend.

    ``einsum``: lower einsums with one constant operand (EinsumDense).
    ``matmul``: feed ``matmul(x, transpose(constant))`` (keras-hub's tied
    ReversibleEmbedding logits) to MatMul as ``transpose_b`` instead of a
    folded, transposed copy of the constant.
    ``slice_update``: write ``slice_update``'s trailing axes that are
    written whole (keras-hub's key/value cache) as slabs, one index row per
    slab instead of one per element, in a much smaller graph.
    ``prescale``: ``multiply(x @ kernel + bias, s)`` with ``s`` a power
    of two (Keras ``MultiHeadAttention``'s query scaling for, e.g., 16- or
    64-wide heads) as ``(x * s) @ kernel + bias * s``, exact, so that the CPU
    plugin does not fuse the Multiply into the projection (which gave it
    slower kernels and a second packed copy of the query weights).
    ``align_types``: build no Convert from an operand of a binary op to the
    type it already has (stock converts both operands of every add,
    multiply, ..., a fifth of GPT-2's generate graph; see
    ``align_types.py``).
    All five are on by default; pass False to leave a part on the stock
    path.
    ``int8`` (off by default, needs ``einsum``): lower int8 x int8 einsums
    and matmuls (``quantize("int8")`` EinsumDense and Dense) as exact float32
    MatMuls on the int8 kernel, which the CPU plugin keeps int8 (see
    ``int8.py``); models that hold one are compiled, while enabled, in
    float32 with the plugin's dynamic quantization off, unless the caller
    sets those options.

    Does nothing, with a warning, under any other Keras backend. Calling it
    again while enabled does nothing. Raises ``UnsupportedVersionError`` when
    the installed keras or openvino cannot be patched.
    """
    parts = {
        "einsum": einsum,
        "matmul": matmul,
        "slice_update": slice_update,
        "multiply": prescale,
        "align_operand_types": align_types,
    }
    if int8 and not einsum:
        raise ValueError(
            "int8=True changes how einsums are lowered: it needs einsum=True"
        )
    with _lock:
        if _installed:
            logger.info(
                "keras_ov_einsum is already enabled (%s); call disable() "
                "first to change what is patched",
                ", ".join(attribute for _, attribute, _ in _installed),
            )
            return
        import keras

        backend = keras.config.backend()
        if backend != "openvino":
            warnings.warn(
                f"keras_ov_einsum.enable() does nothing: the Keras backend is "
                f"{backend!r}, not 'openvino'.",
                stacklevel=2,
            )
            return
        wanted = [name for name, on in parts.items() if on]
        modules, tensor_type = _check_versions(keras, wanted)
        for name in wanted:
            factory, places = _WRAPPERS[name]
            for path, attribute in places:
                module = modules[path]
                original = getattr(module, attribute)
                wrapper = factory(original, tensor_type, int8=int8)
                _install(module, attribute, wrapper)
        if int8:
            import openvino

            original = openvino.Core.compile_model
            _install(openvino.Core, "compile_model", _compile_wrapper(original))
            wanted.append("int8")
        decisions.clear()
        logger.info(
            "keras_ov_einsum enabled on %s: %s",
            BACKEND_NUMPY,
            ", ".join(wanted),
        )


def _install(owner, attribute, wrapper):
    _installed.append((owner, attribute, getattr(owner, attribute)))
    setattr(owner, attribute, wrapper)


def disable():
    """Restore the stock einsum; a no-op when not enabled."""
    with _lock:
        while _installed:
            module, attribute, original = _installed.pop()
            setattr(module, attribute, original)
            logger.info("keras_ov_einsum disabled")
        clear_kernel_cache()


def is_enabled():
    with _lock:
        return bool(_installed)


@contextlib.contextmanager
def enabled(**parts):
    """Enable for the block; restore the previous state on exit or error.

    Takes the same keyword switches as ``enable()``.
    """
    with _lock:
        was_enabled = is_enabled()
        enable(**parts)
    try:
        yield
    finally:
        if not was_enabled:
            disable()


def _check_versions(keras, hooked):
    import openvino

    found = {
        "keras": _version_tuple(keras.__version__),
        "openvino": _version_tuple(openvino.__version__),
    }
    described = (
        f"found keras {keras.__version__} and openvino "
        f"{openvino.__version__.split('-')[0]}; supported: "
        + ", ".join(
            f"{name}>={'.'.join(map(str, version))}"
            for name, version in MINIMUM_VERSIONS.items()
        )
    )
    for name, minimum in MINIMUM_VERSIONS.items():
        if found[name] < minimum:
            raise UnsupportedVersionError(f"keras_ov_einsum: {described}")
    try:
        modules = {
            path: importlib.import_module(path)
            for path in (BACKEND_NUMPY, BACKEND_CORE)
        }
        tensor_type = modules[BACKEND_CORE].OpenVINOKerasTensor
    except (ImportError, AttributeError) as error:
        raise UnsupportedVersionError(
            f"keras_ov_einsum cannot find the OpenVINO backend ({error}); "
            f"{described}"
        ) from error
    for name in hooked:
        for path, attribute in _WRAPPERS[name][1]:
            if not callable(getattr(modules[path], attribute, None)):
                raise UnsupportedVersionError(
                    f"keras_ov_einsum: {path} has no {attribute}; {described}"
                )
    return modules, tensor_type


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _einsum_wrapper(stock_einsum, tensor_type, *, int8):
    @functools.wraps(stock_einsum)
    def einsum(subscripts, *operands, **kwargs):
        # The stock path runs first: it validates the call, raises the stock
        # errors and applies the stock dtype rules. We then replace the
        # Einsum node it built, keeping its (already converted) inputs and
        # its final Convert, so dtypes and shapes are the stock ones.
        result = stock_einsum(subscripts, *operands, **kwargs)
        try:
            return _rewrite_einsum(
                subscripts, operands, result, tensor_type, int8=int8
            )
        except Exception as error:  # Never let the fast path break a model.
            return _fall_back(subscripts, operands, result, error)

    einsum.__keras_ov_einsum_original__ = stock_einsum
    return einsum


def _two_operand_wrapper(label, rewrite):
    """A wrapper factory for a backend function of ``(x1, x2)`` (matmul,
    multiply): as for einsum, stock first, then ``rewrite`` rebuilds the
    node it made."""

    def factory(stock, tensor_type, *, int8):
        @functools.wraps(stock)
        def wrapper(x1, x2):
            result = stock(x1, x2)
            try:
                return rewrite((x1, x2), result, tensor_type, int8=int8)
            except Exception as error:  # Never let the fast path break it.
                return _fall_back(label, (x1, x2), result, error)

        wrapper.__keras_ov_einsum_original__ = stock
        return wrapper

    return factory


def _slice_update_wrapper(stock_slice_update, tensor_type, *, int8):
    @functools.wraps(stock_slice_update)
    def slice_update(inputs, start_indices, updates):
        # As for einsum: stock first (its checks and errors), then rebuild
        # the ScatterNDUpdate it made.
        result = stock_slice_update(inputs, start_indices, updates)
        operands = (inputs, updates)
        try:
            return _rewrite_slice_update(
                operands, start_indices, result, tensor_type
            )
        except Exception as error:  # Never let the fast path break a model.
            return _fall_back(SLICE_UPDATE_LABEL, operands, result, error)

    slice_update.__keras_ov_einsum_original__ = stock_slice_update
    return slice_update


def _align_wrapper(stock_align, tensor_type, *, int8):
    del tensor_type, int8  # operands in, operands out; no int8 form

    @functools.wraps(stock_align)
    def align_operand_types(x1, x2, *args, **kwargs):
        # Stock first (its errors, its result type); then its Converts of an
        # operand to that operand's own type are dropped. Older keras takes
        # no force_float: the arguments pass through as given.
        aligned = stock_align(x1, x2, *args, **kwargs)
        try:
            kept, dropped = drop_identity_converts((x1, x2), aligned)
        except Exception as error:  # Never let the fast path break a model.
            logger.warning("%r kept on the stock path: %r", ALIGN_LABEL, error)
            return aligned
        if dropped:
            decisions.count(ALIGN_LABEL, dropped)
        return kept

    align_operand_types.__keras_ov_einsum_original__ = stock_align
    return align_operand_types


def _compile_wrapper(stock_compile_model):
    @functools.wraps(stock_compile_model)
    def compile_model(self, model, device_name=None, config=None, **kwargs):
        # The int8 form is exact only in float32 without the plugin's dynamic
        # quantization (see int8.py); ``openvino.compile_model`` and every
        # Core (keras's, keras-hub's) compile through this method.
        try:
            config = compile_options(model, device_name, config)
        except Exception as error:  # Never let the fast path break a model.
            logger.warning("compile options left as given: %r", error)
        return stock_compile_model(self, model, device_name, config, **kwargs)

    compile_model.__keras_ov_einsum_original__ = stock_compile_model
    return compile_model


MATMUL_LABEL = "matmul(x, transpose(kernel))"
SLICE_UPDATE_LABEL = "slice_update(inputs, start_indices, updates)"
PRESCALE_LABEL = "multiply(x @ kernel + bias, scale)"
INT8_MATMUL_LABEL = "matmul(x, kernel)"
ALIGN_LABEL = "align_operand_types: Converts to the operand's own type left out"


def _fall_back(label, operands, result, error):
    logger.warning("%r kept on the stock path: %r", label, error)
    _record(label, operands, None, f"internal error: {error!r}")
    return result


def _stock_node(result, type_name):
    """The ``type_name`` node behind a stock result, and its final Convert."""
    final = result.output.get_node()
    if final.get_type_name() == "Convert":
        node = final.input_value(0).get_node()
        if node.get_type_name() == type_name:
            return node, final.get_output_element_type(0)
    if final.get_type_name() == type_name:
        return final, None
    return None, None


def _lowered(record, output, convert_to, tensor_type):
    """Record a lowering (label, operands, inputs, description) and return
    its output as the stock result would be: after stock's final Convert."""
    import openvino.opset13 as ov_opset

    _record(*record, lowered=True)
    if convert_to is not None:
        output = ov_opset.convert(output, convert_to).output(0)
    return tensor_type(output)


def _settle(label, operands, inputs, outcome, result, convert_to, tensor_type):
    """Record a lowering ``outcome`` or its ``Declined`` reason, and return
    the tensor to use: the lowered one, or stock's ``result``."""
    if not outcome:
        _record(label, operands, inputs, outcome.reason)
        return result
    record = (label, operands, inputs, outcome.describe())
    return _lowered(record, outcome.output, convert_to, tensor_type)


def _rewrite_einsum(subscripts, operands, result, tensor_type, *, int8):
    einsum_node, convert_to = _stock_node(result, "Einsum")
    if einsum_node is None:
        _record(subscripts, operands, None, "the stock path built no Einsum")
        return result
    inputs = [
        einsum_node.input_value(index)
        for index in range(einsum_node.get_input_size())
    ]
    planned = plan_einsum(subscripts, inputs)
    if not planned:
        _record(subscripts, operands, inputs, planned.reason)
        return result
    int8_note = ""
    if int8:
        outcome = lower_int8(planned)
        if outcome:
            record = (subscripts, operands, inputs, outcome.describe())
            return _lowered(record, outcome.output, convert_to, tensor_type)
        if outcome is not None:
            int8_note = f"; int8 part not used: {outcome.reason}"
    outcome = build_lowered(planned)
    record = (subscripts, operands, inputs, outcome.plan.describe() + int8_note)
    return _lowered(record, outcome.output, convert_to, tensor_type)


def _rewrite_matmul(operands, result, tensor_type, *, int8):
    matmul_node, convert_to = _stock_node(result, "MatMul")
    if matmul_node is None:
        return result
    inputs = [matmul_node.input_value(0), matmul_node.input_value(1)]
    if int8:
        outcome = lower_int8_matmul(matmul_node)
        if outcome:
            record = (INT8_MATMUL_LABEL, operands, inputs, outcome.describe())
            return _lowered(record, outcome.output, convert_to, tensor_type)
        if outcome is not None:
            reason = f"int8 part not used: {outcome.reason}"
            _record(INT8_MATMUL_LABEL, operands, inputs, reason)
            return result
    outcome = lower_transposed_matmul(matmul_node)
    if outcome is None:  # not a transposed constant: nothing to record
        return result
    return _settle(
        MATMUL_LABEL, operands, inputs, outcome, result, convert_to, tensor_type
    )


def _rewrite_slice_update(operands, start_indices, result, tensor_type):
    from keras.src.backend.openvino.core import get_ov_output

    scatter = result.output.get_node()
    if scatter.get_type_name() != "ScatterNDUpdate":
        reason = "the stock path built no ScatterNDUpdate"
        _record(SLICE_UPDATE_LABEL, operands, None, reason)
        return result
    starts = [get_ov_output(start) for start in start_indices]
    outcome = lower_slice_update(scatter, starts)
    if outcome is None:  # a scalar update: one index row already
        return result
    # The data and the updates before stock flattened them.
    updates = scatter.input_value(2).get_node().input_value(0)
    inputs = [scatter.input_value(0), updates]
    return _settle(
        SLICE_UPDATE_LABEL, operands, inputs, outcome, result, None, tensor_type
    )


def _rewrite_multiply(operands, result, tensor_type, *, int8):
    del int8  # the int8 part does not change multiplies
    multiply = result.output.get_node()
    if multiply.get_type_name() != "Multiply":
        return result
    outcome = lower_prescaled_projection(multiply)
    if outcome is None:  # not a scaled projection: nothing to record
        return result
    inputs = [multiply.input_value(0), multiply.input_value(1)]
    return _settle(
        PRESCALE_LABEL, operands, inputs, outcome, result, None, tensor_type
    )


def _record(subscripts, operands, inputs, reason, lowered=False):
    if inputs is not None:
        shapes = tuple(
            tuple(
                None if dim.is_dynamic else dim.get_length()
                for dim in value.get_partial_shape()
            )
            if value.get_partial_shape().rank.is_static
            else None
            for value in inputs
        )
    else:
        shapes = tuple(getattr(operand, "shape", None) for operand in operands)
    dtypes = tuple(
        str(getattr(operand, "dtype", type(operand).__name__))
        for operand in operands
    )
    decisions.record(
        decisions.Decision(
            equation=subscripts,
            shapes=shapes,
            dtypes=dtypes,
            lowered=lowered,
            reason=reason,
        )
    )


# part -> (wrapper factory, the (backend module, attribute) it replaces)
_WRAPPERS = {
    "einsum": (_einsum_wrapper, ((BACKEND_NUMPY, "einsum"),)),
    "matmul": (
        _two_operand_wrapper(MATMUL_LABEL, _rewrite_matmul),
        ((BACKEND_NUMPY, "matmul"),),
    ),
    "slice_update": (_slice_update_wrapper, ((BACKEND_CORE, "slice_update"),)),
    "multiply": (
        _two_operand_wrapper(PRESCALE_LABEL, _rewrite_multiply),
        ((BACKEND_NUMPY, "multiply"),),
    ),
    # numpy.py imports it as _align_operand_types; core.py's operators and
    # functions call it by its own name.
    "align_operand_types": (
        _align_wrapper,
        (
            (BACKEND_CORE, "align_operand_types"),
            (BACKEND_NUMPY, "_align_operand_types"),
        ),
    ),
}
