"""The parts as patches to the code they change upstream: the generator
(``generator.py``), the keras-style tests each patch adds (``tests/``).

    python -m keras_ov_einsum.upstream make-patch|check|apply
"""

from .generator import (
    UPSTREAM,
    PatchError,
    Upstream,
    apply_patch,
    apply_patches,
    check_patch,
    check_patches,
    main,
    make_patch,
)

__all__ = [
    "UPSTREAM",
    "PatchError",
    "Upstream",
    "apply_patch",
    "apply_patches",
    "check_patch",
    "check_patches",
    "main",
    "make_patch",
]
