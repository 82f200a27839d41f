"""Layer normalization in keras-hub's ``generate()`` as one MVN node.

keras's ``ops.layer_normalization`` is backend-agnostic: on OpenVINO it
builds the mean, the variance as ``E[x^2] - E[x]^2`` (``moments``), an
rsqrt, the folded scale and shift and their converts, 19 operations a
norm, which the CPU plugin runs as several small layers and every compile
pass walks. OpenVINO's MVN is the same normalization as one node, which
the plugin runs as one layer with the scale and shift fused into it: the
form of optimum-intel's IR (docs/native-gap.md has the step model's size
and compile with and without it).

MVN computes the variance as the mean of ``(x - mean)^2``: float32
rounding differs (MVN's is the more accurate; keras's form cancels where
the mean is large against the spread). So, as the attention part, only
while keras-hub's ``generate()`` traces its graph, whose results are token
ids (the tests compare them with stock's); every other call keeps keras's
own operations and bits.

``rms_scaling`` (deprecated; it scales by the variance), a normalization
over any axis but the last, and another compute type than float32
(float64) keep stock's path, the reason in ``explain()``; float16 and
bfloat16 inputs are computed in float32 and cast back, as keras does. Not
upstreamed: keras's op is the same on every backend, and the choice is
keras-hub's ``generate()``'s (as ``attention``).
"""

from ...core import backend
from ...core.context import GENERATE, inside_generate
from ...core.outcome import declined, lowered
from ...core.part import Hook, Part

__all__ = ["LABEL", "PART"]

LABEL = "layer_norm: layer normalization in generate() as one MVN"
_NN = "keras.src.ops.nn"
# keras computes float16 and bfloat16 in float32 and casts back; float64
# in float64, which MVN here does not.
_TYPES = ("float32", "float16", "bfloat16")


def replace_layer_normalization(
    x, gamma=None, beta=None, axis=-1, epsilon=None, rms_scaling=False
):
    """``_layer_normalization(x, ...)`` as an MVN of ``x`` times ``gamma``
    plus ``beta``, inside generate(), without tracing keras's operations
    first (docs/native-gap.md times them): None where the rewrite below
    decides after stock."""
    from keras.src.backend.common.variables import standardize_dtype

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if not inside_generate() or not isinstance(x, OpenVINOKerasTensor):
        return None
    # keras casts its float32 result back to x's type.
    dtype = standardize_dtype(x.dtype)
    if _decline_reason(x, axis, rms_scaling, dtype) is not None:
        return None
    return lowered(_mvn(dtype, x, gamma, beta, epsilon), "MVN")


def rewrite_layer_normalization(
    result, x, gamma=None, beta=None, axis=-1, epsilon=None, rms_scaling=False
):
    """Stock's ``_layer_normalization(x, ...)`` (``result``) as an MVN of
    ``x`` times ``gamma`` plus ``beta``, inside generate(); the reason
    where it is not."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    if not inside_generate():
        return None
    if not isinstance(result, OpenVINOKerasTensor):
        return None  # eager NumPy values: no graph to shrink
    reason = _decline_reason(x, axis, rms_scaling, result.dtype)
    if reason is not None:
        return declined(reason)
    return lowered(_mvn(result.dtype, x, gamma, beta, epsilon), "MVN")


def _decline_reason(x, axis, rms_scaling, dtype):
    """Why keras's normalization of ``x`` (result type ``dtype``) is not
    built as MVN; None when it is."""
    if rms_scaling:
        return "rms_scaling (keras scales by the variance then)"
    if dtype not in _TYPES:
        return f"{dtype} (keras computes it in its own type)"
    rank = len(x.shape)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if sorted(a % rank for a in axes) != [rank - 1]:
        return f"axis {axis}: only the last axis is built as MVN"
    return None


def _mvn(dtype, x, gamma, beta, epsilon):
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")
    get_ov_output = backend.symbol("get_ov_output")

    def in_float32(value):
        output = get_ov_output(value)
        if output.get_element_type() != ov.Type.f32:
            output = ov_opset.convert(output, ov.Type.f32).output(0)
        return output

    if epsilon is None:
        epsilon = keras.config.epsilon()
    normalized = ov_opset.mvn(
        in_float32(x),
        ov_opset.constant([-1], ov.Type.i64),
        normalize_variance=True,
        eps=float(epsilon),
        eps_mode="inside_sqrt",  # keras: rsqrt(variance + epsilon)
    ).output(0)
    if gamma is not None:
        normalized = ov_opset.multiply(normalized, in_float32(gamma)).output(0)
    if beta is not None:
        normalized = ov_opset.add(normalized, in_float32(beta)).output(0)
    # Stock's result type: x's own (keras casts back to it).
    result_type = OPENVINO_DTYPES[dtype]
    if result_type != ov.Type.f32:
        normalized = ov_opset.convert(normalized, result_type).output(0)
    return OpenVINOKerasTensor(normalized)


PART = Part(
    name="layer_norm",
    summary="inside generate(), layer normalization as one MVN node, as in "
    "optimum-intel's IR",
    hooks=(Hook(_NN, "_layer_normalization"),),
    rewrite=rewrite_layer_normalization,
    replace=replace_layer_normalization,
    label=LABEL,
    counted=True,
    wraps=(GENERATE,),
)
