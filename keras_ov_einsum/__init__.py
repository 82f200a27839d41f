"""Make Keras 3's OpenVINO backend run keras-hub models as OpenVINO's own
pipeline does.

    import keras_ov_einsum
    keras_ov_einsum.enable()

Each part is a switch of ``enable()``: constant-kernel einsums and matmuls
as MatMuls on views of the weights, lighter key/value-cache writes and
casts, keras-hub's preset loading without copies, and greedy
``generate()`` as one stateful step model; opt-in int8 parts. What is not
proven equal stays on the stock path; ``explain()`` tells which call went
which way, and why.
"""

from .core.decisions import Decision, Explanation
from .core.install import (
    UnsupportedVersionError,
    disable,
    enable,
    enabled,
    is_enabled,
)
from .export import ExportError, export_genai

__all__ = [
    "Decision",
    "Explanation",
    "ExportError",
    "UnsupportedVersionError",
    "disable",
    "enable",
    "enabled",
    "explain",
    "export_genai",
    "is_enabled",
]

__version__ = "0.1.0"


def explain() -> Explanation:
    """The decisions of every part since ``enable()``, oldest first, and
    the counts of the parts that act on too many calls to list."""
    from .core.decisions import snapshot

    return snapshot()
