"""Install and remove the parts (``parts.py``) on Keras's OpenVINO backend.

Every hooked backend function gets one wrapper, whatever part hooks it: it
runs the stock function first (its checks, its dtype rules, its errors),
hands the result to the rewrite of each enabled part that hooks it, in the
registry's order, and returns the first lowered output, or stock's result
when every part declined, found nothing to do or failed. A part with a
``replace`` (``part.py``) is asked first, before stock, and its lowered
output skips stock altogether. ``explain()`` records each outcome.
Installing records ``(owner, attribute, original)``; removing restores
those in reverse order and forgets them, so a second ``disable()`` is a
no-op and the original function object comes back identical. Versions
are checked before anything is touched.
"""

import contextlib
import functools
import inspect
import logging
import re
import threading
import warnings

from . import decisions
from .parts import PARTS, by_name, default_switches

__all__ = [
    "UnsupportedVersionError",
    "disable",
    "enable",
    "enabled",
    "is_enabled",
]

logger = logging.getLogger("keras_ov_einsum")

# The oldest releases the patch is tested with (see README, "Compatibility"),
# and the first it has not been: those are patched with a warning.
MINIMUM_VERSIONS = {"keras": (3, 12, 0), "openvino": (2025, 3, 0)}
UNTESTED_FROM = {"keras": (4, 0, 0), "openvino": (2027, 0, 0)}

_lock = threading.RLock()
# (owner, attribute, original, whether the owner held it itself), in
# install order
_installed = []
_switches = None  # the enable() switches in force; None: not enabled


class UnsupportedVersionError(RuntimeError):
    """The installed keras or openvino lacks what the patch hooks into."""


def enable(**switches):
    """Install the parts on Keras's OpenVINO backend.

    Each keyword is a part's switch (True: on); a part not named keeps its
    default. The parts, on by default unless marked opt-in:

    {parts}

    Does nothing, with a warning, under any other Keras backend. Calling it
    again with the same switches does nothing (with other switches: a
    warning, call ``disable()`` first). Raises ``TypeError`` for an unknown
    switch, ``ValueError`` for a part without the parts it requires, and
    ``UnsupportedVersionError`` when keras or openvino cannot be patched.
    """
    _check_names(switches)
    with _lock:
        import keras

        backend = keras.config.backend()
        if backend != "openvino":
            warnings.warn(
                f"keras_ov_einsum.enable() does nothing: the Keras backend is "
                f"{backend!r}, not 'openvino'.",
                stacklevel=2,
            )
            return
        wanted = _resolve(switches)
        if _switches is not None:
            if _switches == wanted:
                logger.info("keras_ov_einsum is already enabled")
            else:
                warnings.warn(
                    "keras_ov_einsum is already enabled with other parts "
                    f"({_describe(_switches)}); call disable() first to "
                    f"enable {_describe(wanted)}",
                    stacklevel=2,
                )
            return
        on = [part for part in PARTS if wanted[part.name]]
        if not on:
            warnings.warn(
                "keras_ov_einsum.enable() with every part off patches nothing",
                stacklevel=2,
            )
            return
        _check_versions(keras, on)
        _install_parts(on)
        _set_switches(wanted)
        decisions.clear()
        logger.info("keras_ov_einsum enabled: %s", _describe(wanted))


enable.__doc__ = enable.__doc__.format(
    parts="\n    ".join(
        f"``{part.name}``{'' if part.default else ' (opt-in)'}: {part.summary}"
        for part in PARTS
    )
)


def disable():
    """Restore every stock function; a no-op when not enabled."""
    with _lock:
        if _installed:
            logger.info("keras_ov_einsum disabled")
        while _installed:
            owner, attribute, original, own = _installed.pop()
            if own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)
        _set_switches(None)


def is_enabled():
    with _lock:
        return _switches is not None


def part_on(name):
    """Whether the part ``name`` is switched on now."""
    with _lock:
        return bool(_switches and _switches.get(name))


@contextlib.contextmanager
def enabled(**switches):
    """Enable with these switches for the block, then restore what was
    enabled before (or nothing), on exit and on error alike."""
    with _lock:
        before = _switches
        if before is not None and before != _resolve(switches):
            disable()
        enable(**switches)
    try:
        yield
    finally:
        with _lock:
            if _switches != before:
                disable()
                if before is not None:
                    enable(**before)


def _check_names(switches):
    known = default_switches()
    unknown = sorted(set(switches) - set(known))
    if unknown:
        raise TypeError(
            f"enable() got unknown part(s) {', '.join(unknown)}; the parts "
            f"are {', '.join(known)}"
        )


def _resolve(switches):
    """Every part's switch: the given ones, the defaults for the rest."""
    _check_names(switches)
    known = default_switches()
    wanted = {name: bool(switches.get(name, on)) for name, on in known.items()}
    parts = by_name()
    for name, on in wanted.items():
        for required in parts[name].requires if on else ():
            if not wanted[required]:
                raise ValueError(
                    f"{name}=True needs {required}=True: the {name} part "
                    f"changes what the {required} part builds"
                )
    return wanted


def _describe(switches):
    return ", ".join(name for name, on in switches.items() if on) or "none"


def _set_switches(switches):
    global _switches
    _switches = switches


def _install_parts(on):
    hooks = {}  # Hook -> the enabled parts that hook it, in registry order
    for part in on:
        for hook in part.hooks:
            hooks.setdefault(hook, []).append(part)
    for hook, parts in hooks.items():
        owner = hook.owner()
        stock = getattr(owner, hook.name)
        _install(owner, hook.name, _wrapper(hook, parts, stock))
    # Parts may share a wraps entry (part.GENERATE): it is installed once,
    # so the function is not wrapped twice.
    wraps = dict.fromkeys(entry for part in on for entry in part.wraps)
    for hook, factory in wraps:
        owner = hook.owner()
        # As the owner holds it: a classmethod stays a classmethod.
        original = inspect.getattr_static(owner, hook.name)
        _install(owner, hook.name, factory(original))


def _install(owner, attribute, wrapper):
    # A class may inherit the attribute: restoring then deletes ours.
    own = attribute in vars(owner)
    original = inspect.getattr_static(owner, attribute)
    wrapper.__keras_ov_einsum_original__ = original
    _installed.append((owner, attribute, original, own))
    setattr(owner, attribute, wrapper)


def _wrapper(hook, parts, stock):
    replacing = [part for part in parts if part.replace is not None]

    @functools.wraps(stock)
    def patched(*args, **kwargs):
        for part in replacing:
            try:
                outcome = part.replace(*args, **kwargs)
            except Exception as error:  # stock and the rewrite decide
                logger.debug("%s: replace failed: %r", part.name, error)
                continue
            if outcome:
                _lowered(part, hook, args, kwargs, outcome)
                return outcome.output
        # Stock first: it validates the call, raises the stock errors and
        # applies the stock dtype rules; the parts rewrite what it built.
        result = stock(*args, **kwargs)
        declines = []
        for part in parts:
            try:
                outcome = part.rewrite(result, *args, **kwargs)
            except Exception as error:  # Never let a part break a model.
                logger.warning(
                    "%s kept on the stock path: %r", part.name, error
                )
                reason = f"internal error: {error!r}"
                _record(part, hook, args, kwargs, False, reason)
                return result
            if outcome is None:
                continue
            if not outcome:
                declines.append((part, outcome.reason))
                continue
            notes = "".join(f"; {reason}" for _, reason in declines)
            _lowered(part, hook, args, kwargs, outcome, notes)
            return outcome.output
        if declines:
            part = declines[-1][0]
            reason = "; ".join(reason for _, reason in declines)
            _record(part, hook, args, kwargs, False, reason)
        return result

    return patched


def _lowered(part, hook, args, kwargs, outcome, notes=""):
    if part.counted:
        decisions.count(part.label_of(*args, **kwargs), outcome.count)
    else:
        description = outcome.description + notes
        _record(part, hook, args, kwargs, True, description)


def _record(part, hook, args, kwargs, lowered, reason):
    operands = hook.operands(*args, **kwargs)
    decisions.record(
        decisions.Decision(
            equation=part.label_of(*args, **kwargs),
            shapes=tuple(_shape(operand) for operand in operands),
            dtypes=tuple(
                str(getattr(operand, "dtype", type(operand).__name__))
                for operand in operands
            ),
            lowered=lowered,
            reason=reason,
        )
    )


def _shape(operand):
    """A Keras tensor's or array's shape (None for a dynamic size), an
    ``openvino.Output``'s partial shape alike; None when unknown."""
    if hasattr(operand, "get_partial_shape"):
        shape = operand.get_partial_shape()
        if shape.rank.is_dynamic:
            return None
        return tuple(
            None if dim.is_dynamic else dim.get_length() for dim in shape
        )
    shape = getattr(operand, "shape", None)
    return None if shape is None else tuple(shape)


def _check_versions(keras, on):
    import openvino

    found = {
        "keras": _version_tuple(keras.__version__),
        "openvino": _version_tuple(openvino.__version__),
    }
    described = (
        f"found keras {keras.__version__} and openvino "
        f"{openvino.__version__.split('-')[0]}; supported: "
        + ", ".join(
            f"{name}>={'.'.join(map(str, version))}"
            for name, version in MINIMUM_VERSIONS.items()
        )
    )
    for name, minimum in MINIMUM_VERSIONS.items():
        if found[name] < minimum:
            raise UnsupportedVersionError(f"keras_ov_einsum: {described}")
    for name, untested in UNTESTED_FROM.items():
        if found[name] >= untested:
            warnings.warn(
                f"keras_ov_einsum has not been tested with {name} "
                f"{'.'.join(map(str, found[name]))} (tested below "
                f"{'.'.join(map(str, untested))}): patching it anyway",
                stacklevel=3,
            )
    for part in on:
        for hook in part.hooks + tuple(hook for hook, _ in part.wraps):
            try:
                function = getattr(hook.owner(), hook.name, None)
            except (ImportError, AttributeError) as error:
                raise UnsupportedVersionError(
                    f"keras_ov_einsum cannot find {hook} ({error}); {described}"
                ) from error
            if not callable(function):
                raise UnsupportedVersionError(
                    f"keras_ov_einsum: {hook.module} has no {hook.attribute}; "
                    f"{described}"
                )


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
