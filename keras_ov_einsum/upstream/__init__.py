"""The parts as patches to the code they change upstream: the generator
(``generator.py``), the keras-style tests each patch adds (``tests/``).

    python -m keras_ov_einsum.upstream make-patch|check|apply
"""

from .generator import (
    TARGETS,
    UPSTREAM,
    PatchError,
    Target,
    Upstream,
    apply_patches,
    check_patches,
    main,
    make_patch,
)

__all__ = [
    "TARGETS",
    "UPSTREAM",
    "PatchError",
    "Target",
    "Upstream",
    "apply_patches",
    "check_patches",
    "main",
    "make_patch",
]
