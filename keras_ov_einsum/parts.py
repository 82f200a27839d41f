"""The registry: every part of the patch, by the module that declares it.

Order matters where parts hook the same function: their rewrites are tried
in this order, and the first that lowers a call wins (int8 comes before
the einsum and matmul parts, whose forms it replaces for int8 products).
``enable()``, the benchmark harness, its CLI help and the upstream patch
generator all read this tuple; adding a part is one name here.
"""

import importlib

__all__ = ["PARTS", "by_name", "default_switches"]

PARTS = tuple(
    importlib.import_module(f"{__package__}.{module}").PART
    for module in (
        "int8",
        "int8_layers",
        "dynamic_quantization",
        "lowering",
        "matmul",
        "shared_masks",
        "slice_update",
        "prescale",
        "align_types",
        "attention",
        "layer_norm",
        "preset_load",
        "mapped_weights",
        "saving_skipsets",
        "untracked_vocabulary",
        "quantization_configs",
        "policy_lookups",
        "stepwise",
        "layer_caches",
        "state_caches",
        "half_weights",
    )
)


def by_name():
    return {part.name: part for part in PARTS}


def default_switches():
    """{part name: on by default}, in ``enable()``'s order: the parts that
    are on by default first, then the opt-in ones."""
    ordered = sorted(PARTS, key=lambda part: not part.default)
    return {part.name: part.default for part in ordered}
