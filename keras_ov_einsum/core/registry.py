"""The registry: every part of the patch, imported by name.

Order matters where parts hook the same function: their rewrites are tried
in this order, and the first that lowers a call wins (int8 comes before
the einsum and matmul parts, whose forms it replaces for int8 products).
``enable()``, the benchmark harness, its CLI help and the upstream patch
generator all read ``PARTS``.

Adding a part is one line here: its module's import, at its place in the
order. ``PARTS`` is the ``PART`` of every module imported below, in
import order (tests/test_extension_points.py checks that no module under
``parts/`` that declares a ``PART`` is left out).
"""

# The imports are the parts, in their order: neither sorted nor "unused".
# ruff: noqa: I001, F401
import types

from .part import Part

from ..parts.int8 import int8
from ..parts.int8 import int8_layers
from ..parts.int8 import dynamic_quantization
from ..parts.int4 import int4
from ..parts.ops import einsum
from ..parts.ops import matmul
from ..parts.generate import shared_masks
from ..parts.ops import slice_update
from ..parts.ops import prescale
from ..parts.ops import align_types
from ..parts.ops import attention
from ..parts.ops import layer_norm
from ..parts.loading import preset_load
from ..parts.loading import mapped_weights
from ..parts.loading import saving_skipsets
from ..parts.loading import untracked_vocabulary
from ..parts.loading import quantization_configs
from ..parts.loading import policy_lookups
from ..parts.generate import stepwise
from ..parts.generate import layer_caches
from ..parts.generate import state_caches
from ..parts.generate import half_weights
from ..parts.generate import compiled_cache

__all__ = [
    "PARTS",
    "by_name",
    "default_switches",
    "dependents",
    "markdown_table",
    "required",
]


def _declared(namespace):
    """The ``PART`` of every module in ``namespace``, in its order."""
    return tuple(
        value.PART
        for value in namespace.values()
        if isinstance(value, types.ModuleType)
        and isinstance(getattr(value, "PART", None), Part)
    )


PARTS = _declared(dict(globals()))


def by_name():
    return {part.name: part for part in PARTS}


def default_switches():
    """{part name: on by default}, in ``enable()``'s order: the parts that
    are on by default first, then the opt-in ones."""
    ordered = sorted(PARTS, key=lambda part: not part.default)
    return {part.name: part.default for part in ordered}


def required(name):
    """The parts ``name`` requires, directly or through another part."""
    parts = by_name()
    found, pending = [], list(parts[name].requires)
    while pending:
        other = pending.pop(0)
        if other not in found:
            found.append(other)
            pending.extend(parts[other].requires)
    return tuple(found)


def dependents(name):
    """The parts that require ``name``, directly or through another."""
    return tuple(part.name for part in PARTS if name in required(part.name))


def markdown_table():
    """The parts as the README's table: a line a part, from its summary,
    the default ones first."""
    parts = by_name()
    lines = [
        "| `enable()` switch | default | what it does |",
        "|---|---|---|",
    ]
    for name, on in default_switches().items():
        # An opt-in part says which opt-in parts it needs.
        needs = [
            other for other in parts[name].requires if not parts[other].default
        ]
        default = "on" if on else "off"
        if needs:
            default += f" (with {', '.join(needs)})"
        lines.append(f"| `{name}` | {default} | {parts[name].summary} |")
    return "\n".join(lines) + "\n"
