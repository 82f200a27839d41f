"""Stock on any error of a part: the one guard around every function a
part replaces otherwise than by a rewrite (``Part.wraps``) and every pass
at an extension point.

The replacement runs; an error it raises falls back to the stock function
on the same arguments and is recorded for ``explain()``, unless the stock
function raised it (called by the replacement): a stock error is the
caller's, and passes through unchanged.
"""

import functools
import logging

from . import decisions

__all__ = ["guarded", "record_error", "stock_calls"]

logger = logging.getLogger("keras_ov_einsum")

_STOCK_ERROR = "_keras_ov_einsum_raised_by_stock"


def stock_calls(function):
    """``function``, every exception it raises marked as stock's."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            try:
                setattr(error, _STOCK_ERROR, True)
            except AttributeError:  # an exception type without a __dict__
                pass
            raise

    return call


def guarded(part, label, replacement, stock):
    """``replacement``, falling back to ``stock`` (same arguments) on an
    error stock did not raise."""

    @functools.wraps(replacement)
    def call(*args, **kwargs):
        try:
            return replacement(*args, **kwargs)
        except Exception as error:
            if getattr(error, _STOCK_ERROR, False):
                raise
            record_error(part, label, error)
        return stock(*args, **kwargs)

    return call


def record_error(part, label, error):
    """An error of ``part`` (kept on the stock path) for ``explain()``."""
    logger.warning("%s kept on the stock path: %r", part.name, error)
    decisions.record(
        decisions.Decision(
            equation=label,
            shapes=(),
            dtypes=(),
            lowered=False,
            reason=f"{part.name}: internal error: {error!r}; stock's used",
        )
    )
