"""Lower constant-kernel einsums to MatMul on Keras 3's OpenVINO backend.

    import keras_ov_einsum
    keras_ov_einsum.enable()

Every ``EinsumDense`` projection then reaches OpenVINO as a MatMul on a
reshaped view of its kernel, the fully-connected pattern the CPU plugin
compiles without extra copies of the weights. Einsums of two variable inputs
(attention) and anything not proven equal stay on the stock path;
``explain()`` tells which einsum went which way, and why.
"""

from .decisions import Decision, Explanation
from .patch import UnsupportedVersionError, disable, enable, enabled, is_enabled

__all__ = [
    "Decision",
    "Explanation",
    "UnsupportedVersionError",
    "disable",
    "enable",
    "enabled",
    "explain",
    "is_enabled",
]

__version__ = "0.1.0"


def explain():
    """The decisions on every patched call (einsum, matmul, slice_update,
    multiply) seen since ``enable()``, oldest first."""
    from .decisions import snapshot

    return snapshot()
