"""What a lowering made of one call: its output, or the reason it declined.

Every lowering answers with an ``Outcome``: ``lowered(output, description)``
when it rebuilt the call, ``declined(reason)`` when the call stays on the
stock path. An outcome is true when lowered, so callers read
``if outcome: use(outcome.output)``. A lowering that finds the call is not
its case at all (most multiplies are not a scaled projection) returns None
instead: there is nothing to record.
"""

import dataclasses

__all__ = ["Outcome", "declined", "lowered"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """``output``: the rewritten ``openvino.Output`` (or outputs), None when
    declined; ``description``: what was built, or why not; ``count``: how
    many changes it stands for, for a part that ``explain()`` counts."""

    output: object
    description: str
    count: int = 1

    def __bool__(self):
        return self.output is not None

    @property
    def reason(self):
        """Why the call stays on the stock path (None when lowered)."""
        return None if self else self.description


def lowered(output: object, description: str, count: int = 1) -> Outcome:
    return Outcome(output, description, count)


def declined(reason: str) -> Outcome:
    return Outcome(None, reason)
