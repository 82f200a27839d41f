"""Run a function with the passes parts registered at its extension point
(``part.ExtensionPoint``)."""

from . import guard, in_force

__all__ = ["extended"]


def extended(point, function):
    """``function`` with the passes registered at ``point`` by the parts
    switched on around it: the registry's first part's pass innermost.
    A pass that fails falls back to the function inside it."""
    composed = function
    for part, pass_ in in_force.passes(point):
        composed = _with_pass(part, point, pass_, composed)
    return composed


def _with_pass(part, point, pass_, inner):
    marked = guard.stock_calls(inner)

    def call(*args, **kwargs):
        return pass_(marked, *args, **kwargs)

    return guard.guarded(part, f"{part.name}: its pass at {point}", call, inner)
