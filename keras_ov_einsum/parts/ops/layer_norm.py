"""Layer normalization in keras-hub's ``generate()`` as one MVN node.

keras's ``ops.layer_normalization`` is backend-agnostic: on OpenVINO it
builds the mean, the variance as ``E[x^2] - E[x]^2`` (``moments``), an
rsqrt, the scale and the shift folded into them, and their converts: 19
operations a layer in GPT-2 Medium's step model, 931 of its 2996 (49 layer
norms). The CPU plugin runs each as ~7 small layers, and every compile
transformation walks them. OpenVINO's MVN operation is the same
normalization as one node, which the plugin runs as one layer with the
scale and shift fused into it: the IR optimum-intel exports from Hugging
Face's LayerNorm has one a norm. Ad hoc (docs/native-gap.md), the step
model compiled in 1.6-1.9 s instead of 1.9-2.45 s.

MVN computes the variance as the mean of ``(x - mean)^2``, not as
``E[x^2] - E[x]^2``: float32 rounding differs (MVN's is the more accurate
one; keras's form cancels where the mean is large against the spread).
So, as the attention part, only while a keras-hub ``CausalLM.generate()``
traces its graph, whose results are token ids (the tests compare them with
stock's); every other call (an encoder's outputs, a causal LM's logits)
keeps keras's own operations and bits.

keras's ``rms_scaling`` (deprecated; it scales by the variance), a
normalization over any axis but the last, and a computation in another
type than float32 (float64 inputs) keep stock's path, with the reason in
``explain()``. float16 and bfloat16 inputs are computed in float32 and
cast back, as keras does. Not upstreamed: keras's op is the same on every
backend, and the choice is keras-hub's generate()'s (as ``attention``).
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
    plus ``beta``, inside generate(), without tracing keras's 19
    operations first (~0.13 s of GPT-2 Medium's step model trace): None
    where the rewrite below decides after stock."""
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
