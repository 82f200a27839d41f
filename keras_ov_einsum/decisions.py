"""The record of what happened to each patched call (einsum, matmul,
slice_update, multiply) while the patch was enabled."""

import collections
import dataclasses
import logging
import threading

__all__ = ["Decision", "Explanation", "record", "snapshot", "clear"]

logger = logging.getLogger("keras_ov_einsum")

# Eager code can call einsum in a loop; keep the most recent decisions only.
_MAX_RECORDS = 10_000
_records = collections.deque(maxlen=_MAX_RECORDS)
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Decision:
    """One call: its equation (or label), operands, and whether it was
    lowered."""

    equation: str
    shapes: tuple
    dtypes: tuple
    lowered: bool
    reason: str

    def __str__(self):
        operands = ", ".join(
            f"{dtype}{list(shape) if shape is not None else '[?]'}"
            for shape, dtype in zip(self.shapes, self.dtypes)
        )
        verdict = "lowered" if self.lowered else "stock"
        return f"{self.equation!r} ({operands}): {verdict}: {self.reason}"


class Explanation(tuple):
    """The decisions since ``enable()``, oldest first; prints as a table."""

    @property
    def lowered(self):
        return tuple(decision for decision in self if decision.lowered)

    @property
    def declined(self):
        return tuple(decision for decision in self if not decision.lowered)

    def __str__(self):
        if not self:
            return "no patched call seen since enable()"
        header = (
            f"{len(self)} call(s): {len(self.lowered)} lowered, "
            f"{len(self.declined)} left on the stock path"
        )
        return "\n".join([header] + [f"  {decision}" for decision in self])


def record(decision):
    with _lock:
        _records.append(decision)
    logger.debug("%s", decision)


def snapshot():
    with _lock:
        return Explanation(_records)


def clear():
    with _lock:
        _records.clear()
