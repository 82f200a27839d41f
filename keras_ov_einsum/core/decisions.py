"""The record of what happened to each patched call (einsum, matmul,
slice_update, multiply) while the patch was enabled, and counts for the
part that acts on too many calls to list one by one (align_types)."""

import collections
import dataclasses
import logging
import threading

__all__ = ["Decision", "Explanation", "clear", "count", "record", "snapshot"]

logger = logging.getLogger("keras_ov_einsum")

# Eager code can call einsum in a loop; keep the most recent decisions only.
_MAX_RECORDS = 10_000
_records = collections.deque(maxlen=_MAX_RECORDS)
_counts = collections.Counter()
_dropped = 0  # records pushed out of the full deque since clear()
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
    """The decisions since ``enable()``, oldest first; prints as a table.

    ``counts``: {label: how many times} for what is counted, not listed.
    ``dropped``: how many older decisions are no longer kept (only the
    last ``_MAX_RECORDS`` are).
    """

    def __new__(cls, decisions=(), counts=None, dropped=0):
        explanation = super().__new__(cls, decisions)
        explanation.counts = dict(counts or {})
        explanation.dropped = dropped
        return explanation

    @property
    def lowered(self):
        return tuple(decision for decision in self if decision.lowered)

    @property
    def declined(self):
        return tuple(decision for decision in self if not decision.lowered)

    def __str__(self):
        if not self and not self.counts:
            return "no patched call seen since enable()"
        header = (
            f"{len(self)} call(s): {len(self.lowered)} lowered, "
            f"{len(self.declined)} left on the stock path"
        )
        if self.dropped:
            header += (
                f" (the last {len(self)}; {self.dropped} older call(s) dropped)"
            )
        counted = [f"  {label}: {n}" for label, n in self.counts.items()]
        return "\n".join(
            [header] + [f"  {decision}" for decision in self] + counted
        )


def record(decision):
    global _dropped
    with _lock:
        if len(_records) == _records.maxlen:
            _dropped += 1
        _records.append(decision)
    logger.debug("%s", decision)


def count(label, times=1):
    with _lock:
        _counts[label] += times


def snapshot():
    with _lock:
        return Explanation(_records, _counts, _dropped)


def clear():
    global _dropped
    with _lock:
        _records.clear()
        _counts.clear()
        _dropped = 0
