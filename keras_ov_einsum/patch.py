"""Install and remove the einsum lowering on Keras's OpenVINO backend.

The patch is data: (module, attribute, wrapper factory). Installing records
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


def enable():
    """Lower constant-kernel einsums to MatMul on Keras's OpenVINO backend.

    Does nothing, with a warning, under any other Keras backend. Calling it
    again while enabled does nothing. Raises ``UnsupportedVersionError`` when
    the installed keras or openvino cannot be patched.
    """
    with _lock:
        if _installed:
            logger.info("keras_ov_einsum is already enabled")
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
        backend_numpy, tensor_type = _check_versions(keras)
        original = backend_numpy.einsum
        backend_numpy.einsum = _make_wrapper(original, tensor_type)
        _installed.append((backend_numpy, "einsum", original))
        decisions.clear()
        logger.info("keras_ov_einsum enabled on %s.einsum", BACKEND_NUMPY)


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
def enabled():
    """Enable for the block; restore the previous state on exit or error."""
    with _lock:
        was_enabled = is_enabled()
        enable()
    try:
        yield
    finally:
        if not was_enabled:
            disable()


def _check_versions(keras):
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
    if not callable(getattr(backend_numpy, "einsum", None)):
        raise UnsupportedVersionError(
            f"keras_ov_einsum: {BACKEND_NUMPY} has no einsum; {described}"
        )
    return backend_numpy, tensor_type


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _make_wrapper(stock_einsum, tensor_type):
    import openvino.opset13 as ov_opset

    @functools.wraps(stock_einsum)
    def einsum(subscripts, *operands, **kwargs):
        # The stock path runs first: it validates the call, raises the stock
        # errors and applies the stock dtype rules. We then replace the
        # Einsum node it built, keeping its (already converted) inputs and
        # its final Convert, so dtypes and shapes are the stock ones.
        result = stock_einsum(subscripts, *operands, **kwargs)
        try:
            return _rewrite(subscripts, operands, result, tensor_type, ov_opset)
        except Exception as error:  # Never let the fast path break a model.
            logger.warning("einsum %r kept on the stock path: %r", subscripts, error)
            _record(subscripts, operands, None, f"internal error: {error!r}")
            return result

    einsum.__keras_ov_einsum_original__ = stock_einsum
    return einsum


def _rewrite(subscripts, operands, result, tensor_type, ov_opset):
    final = result.output.get_node()
    convert_to = None
    einsum_node = final
    if final.get_type_name() == "Convert":
        convert_to = final.get_output_element_type(0)
        einsum_node = final.input_value(0).get_node()
    if einsum_node.get_type_name() != "Einsum":
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
    output = outcome.output
    if convert_to is not None:
        output = ov_opset.convert(output, convert_to).output(0)
    return tensor_type(output)


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
