"""The registry: every part of the patch, imported by name.

Order matters where parts hook the same function: their rewrites are tried
in this order, and the first that lowers a call wins (int8 comes before
the einsum and matmul parts, whose forms it replaces for int8 products).
``enable()``, the benchmark harness, its CLI help and the upstream patch
generator all read ``PARTS``; adding a part is one line here.
"""

from ..parts.generate import (
    half_weights,
    layer_caches,
    shared_masks,
    state_caches,
    stepwise,
)
from ..parts.int8 import dynamic_quantization, int8, int8_layers
from ..parts.loading import (
    mapped_weights,
    policy_lookups,
    preset_load,
    quantization_configs,
    saving_skipsets,
    untracked_vocabulary,
)
from ..parts.ops import (
    align_types,
    attention,
    einsum,
    layer_norm,
    matmul,
    prescale,
    slice_update,
)

__all__ = [
    "PARTS",
    "by_name",
    "default_switches",
    "dependents",
    "markdown_table",
    "required",
]

PARTS = (
    int8.PART,
    int8_layers.PART,
    dynamic_quantization.PART,
    einsum.PART,
    matmul.PART,
    shared_masks.PART,
    slice_update.PART,
    prescale.PART,
    align_types.PART,
    attention.PART,
    layer_norm.PART,
    preset_load.PART,
    mapped_weights.PART,
    saving_skipsets.PART,
    untracked_vocabulary.PART,
    quantization_configs.PART,
    policy_lookups.PART,
    stepwise.PART,
    layer_caches.PART,
    state_caches.PART,
    half_weights.PART,
)


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
