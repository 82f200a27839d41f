"""Install and remove the lowerings on Keras's OpenVINO backend.

Two functions of ``keras.src.backend.openvino.numpy`` are wrapped: ``einsum``
(see ``lowering.py``) and ``matmul`` (see ``matmul.py``). Each wrapper runs
the stock function first and rewrites the node it built. The patch is data:
(attribute, wrapper factory) in ``_WRAPPERS``. Installing records
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
from .lowering import clear_kernel_cache, lower_einsum
from .matmul import lower_transposed_matmul

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


def enable(*, einsum=True, matmul=True):
    """Lower constant-kernel einsums to MatMul on Keras's OpenVINO backend.

    ``einsum``: lower einsums with one constant operand (EinsumDense).
    ``matmul``: feed ``matmul(x, transpose(constant))`` (keras-hub's tied
    ReversibleEmbedding logits) to MatMul as ``transpose_b`` instead of a
    folded, transposed copy of the constant. Both are on by default; pass
    False to leave that part on the stock path.

    Does nothing, with a warning, under any other Keras backend. Calling it
    again while enabled does nothing. Raises ``UnsupportedVersionError`` when
    the installed keras or openvino cannot be patched.
    """
    parts = {"einsum": einsum, "matmul": matmul}
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
        backend_numpy, tensor_type = _check_versions(keras, wanted)
        for name in wanted:
            original = getattr(backend_numpy, name)
            wrapper = _WRAPPERS[name](original, tensor_type)
            setattr(backend_numpy, name, wrapper)
            _installed.append((backend_numpy, name, original))
        decisions.clear()
        logger.info(
            "keras_ov_einsum enabled on %s: %s",
            BACKEND_NUMPY,
            ", ".join(wanted),
        )


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
        backend_numpy = importlib.import_module(BACKEND_NUMPY)
        tensor_type = importlib.import_module(BACKEND_CORE).OpenVINOKerasTensor
    except (ImportError, AttributeError) as error:
        raise UnsupportedVersionError(
            f"keras_ov_einsum cannot find the OpenVINO backend ({error}); "
            f"{described}"
        ) from error
    for name in hooked:
        if not callable(getattr(backend_numpy, name, None)):
            raise UnsupportedVersionError(
                f"keras_ov_einsum: {BACKEND_NUMPY} has no {name}; {described}"
            )
    return backend_numpy, tensor_type


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _einsum_wrapper(stock_einsum, tensor_type):
    @functools.wraps(stock_einsum)
    def einsum(subscripts, *operands, **kwargs):
        # The stock path runs first: it validates the call, raises the stock
        # errors and applies the stock dtype rules. We then replace the
        # Einsum node it built, keeping its (already converted) inputs and
        # its final Convert, so dtypes and shapes are the stock ones.
        result = stock_einsum(subscripts, *operands, **kwargs)
        try:
            return _rewrite_einsum(subscripts, operands, result, tensor_type)
        except Exception as error:  # Never let the fast path break a model.
            return _fall_back(subscripts, operands, result, error)

    einsum.__keras_ov_einsum_original__ = stock_einsum
    return einsum


def _matmul_wrapper(stock_matmul, tensor_type):
    @functools.wraps(stock_matmul)
    def matmul(x1, x2):
        # As for einsum: stock first, then rebuild the MatMul it made.
        result = stock_matmul(x1, x2)
        try:
            return _rewrite_matmul((x1, x2), result, tensor_type)
        except Exception as error:  # Never let the fast path break a model.
            return _fall_back(MATMUL_LABEL, (x1, x2), result, error)

    matmul.__keras_ov_einsum_original__ = stock_matmul
    return matmul


_WRAPPERS = {"einsum": _einsum_wrapper, "matmul": _matmul_wrapper}
MATMUL_LABEL = "matmul(x, transpose(kernel))"


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


def _finish(output, convert_to, tensor_type):
    import openvino.opset13 as ov_opset

    if convert_to is not None:
        output = ov_opset.convert(output, convert_to).output(0)
    return tensor_type(output)


def _rewrite_einsum(subscripts, operands, result, tensor_type):
    einsum_node, convert_to = _stock_node(result, "Einsum")
    if einsum_node is None:
        _record(subscripts, operands, None, "the stock path built no Einsum")
        return result
    inputs = [
        einsum_node.input_value(index)
        for index in range(einsum_node.get_input_size())
    ]
    outcome = lower_einsum(subscripts, inputs)
    if not outcome:
        _record(subscripts, operands, inputs, outcome.reason)
        return result
    _record(subscripts, operands, inputs, outcome.plan.describe(), lowered=True)
    return _finish(outcome.output, convert_to, tensor_type)


def _rewrite_matmul(operands, result, tensor_type):
    matmul_node, convert_to = _stock_node(result, "MatMul")
    if matmul_node is None:
        return result
    outcome = lower_transposed_matmul(matmul_node)
    if outcome is None:  # not a transposed constant: nothing to record
        return result
    inputs = [matmul_node.input_value(0), matmul_node.input_value(1)]
    if not outcome:
        _record(MATMUL_LABEL, operands, inputs, outcome.reason)
        return result
    _record(MATMUL_LABEL, operands, inputs, outcome.describe(), lowered=True)
    return _finish(outcome.output, convert_to, tensor_type)


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
