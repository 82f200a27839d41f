"""Install and remove the parts (``registry.py``) on Keras's OpenVINO backend.

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
are checked before anything is touched. A ``wraps`` replacement runs
under ``guard.py`` (stock on its errors); the passes of the parts switched
on are put in force at their extension points (``in_force.py``).
"""

import contextlib
import functools
import inspect
import logging
import re
import threading
import warnings
from collections.abc import Iterator

from . import backend, decisions, guard, in_force
from .registry import PARTS, by_name, default_switches

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
UNTESTED_FROM = {"keras": (3, 17, 0), "openvino": (2026, 5, 0)}

_lock = threading.RLock()
# (owner, attribute, original, whether the owner held it itself), in
# install order
_installed = []


class UnsupportedVersionError(RuntimeError):
    """The installed keras or openvino lacks what the patch hooks into."""


def enable(**switches: bool) -> None:
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
        in_force_now = in_force.switches()
        if in_force_now is not None:
            if in_force_now == wanted:
                logger.info("keras_ov_einsum is already enabled")
            else:
                warnings.warn(
                    "keras_ov_einsum is already enabled with other parts "
                    f"({_describe(in_force_now)}); call disable() first to "
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
        decisions.clear()
        on = _available(on)
        _install_parts(on)
        in_force.put(wanted, [part.name for part in on], _passes(on))
        logger.info("keras_ov_einsum enabled: %s", _describe(wanted))


enable.__doc__ = enable.__doc__.format(
    parts="\n    ".join(
        f"``{part.name}``{'' if part.default else ' (opt-in)'}: {part.summary}"
        for part in PARTS
    )
)


def disable() -> None:
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
        in_force.clear()


def is_enabled() -> bool:
    with _lock:
        return in_force.switches() is not None


@contextlib.contextmanager
def enabled(**switches: bool) -> Iterator[None]:
    """Enable with these switches for the block, then restore what was
    enabled before (or nothing), on exit and on error alike."""
    with _lock:
        before = in_force.switches()
        if before is not None and before != _resolve(switches):
            disable()
        enable(**switches)
    try:
        yield
    finally:
        with _lock:
            if in_force.switches() != before:
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
    """Every part's switch: the given ones, the defaults for the rest. A
    part left at its default is off where a part it requires is off (it
    would act on nothing); one switched on by name raises instead."""
    _check_names(switches)
    known = default_switches()
    wanted = {name: bool(switches.get(name, on)) for name, on in known.items()}
    parts = by_name()
    changed = True
    while changed:  # requirements chain (state_caches -> layer_caches ...)
        changed = False
        for name, on in wanted.items():
            missing = [r for r in parts[name].requires if not wanted[r]]
            if not on or not missing:
                continue
            if name in switches:
                raise ValueError(
                    f"{name}=True needs {missing[0]}=True: the {name} part "
                    f"changes what the {missing[0]} part builds"
                )
            wanted[name] = False
            changed = True
    return wanted


def _describe(switches):
    return ", ".join(name for name, on in switches.items() if on) or "none"


def _install_parts(on):
    hooks = {}  # Hook -> the enabled parts that hook it, in registry order
    for part in on:
        for hook in part.hooks:
            hooked = hooks.setdefault(hook.resolve(), [])
            if part not in hooked:  # two of its hooks moved into one
                hooked.append(part)
    for hook, parts in hooks.items():
        for owner, attribute in hook.sites():
            stock = getattr(owner, attribute)
            _install(owner, attribute, _wrapper(hook, parts, stock))
    # Parts may share a wraps entry (context.GENERATE): it is installed
    # once, so the function is not wrapped twice.
    wraps = {}
    for part in on:
        for hook, factory in part.wraps:
            wraps.setdefault((hook.resolve(), factory), part)
    for (hook, factory), part in wraps.items():
        for owner, attribute in hook.sites():
            # As the owner holds it: a classmethod stays a classmethod.
            original = inspect.getattr_static(owner, attribute)
            label = f"{part.name}: {hook}"
            _install(owner, attribute, _guarded(part, label, factory, original))


def _guarded(part, label, factory, original):
    """``factory``'s replacement of ``original``, under ``guard.guarded``
    (a classmethod or staticmethod: its function, rewrapped)."""
    kind = type(original) if isinstance(original, _DESCRIPTORS) else None
    function = original.__func__ if kind else original
    stock = guard.stock_calls(function)
    replacement = factory(kind(stock) if kind else stock)
    if kind:
        replacement = replacement.__func__
    call = guard.guarded(part, label, replacement, function)
    return kind(call) if kind else call


_DESCRIPTORS = (classmethod, staticmethod)


def _available(on):
    """The parts of ``on`` the installed stack can run, and of the rest
    those that do not require one it cannot; each part left out recorded
    with the reason (``Part.unavailable``)."""
    kept, left_out = [], set()
    for part in on:
        reason = _unavailable_reason(part)
        if reason is None and left_out.intersection(part.requires):
            reason = f"it requires {', '.join(sorted(left_out))}"
        if reason is None:
            kept.append(part)
            continue
        left_out.add(part.name)
        logger.info("%s not installed: %s", part.name, reason)
        decisions.record(
            decisions.Decision(
                equation=f"{part.name}: not installed",
                shapes=(),
                dtypes=(),
                lowered=False,
                reason=reason,
            )
        )
    return kept


def _unavailable_reason(part):
    if part.unavailable is None:
        return None
    try:
        return part.unavailable()
    except Exception as error:  # a check that fails cannot vouch for it
        return f"its check of the installed stack failed: {error!r}"


def _passes(on):
    """ExtensionPoint -> the (part, pass) pairs of the parts ``on``."""
    passes = {}
    for part in on:
        for point, pass_ in part.passes:
            passes.setdefault(point, []).append((part, pass_))
    return passes


def _install(owner, attribute, wrapper):
    # A class may inherit the attribute: restoring then deletes ours.
    own = attribute in vars(owner)
    original = inspect.getattr_static(owner, attribute)
    wrapper.__keras_ov_einsum_original__ = original
    _installed.append((owner, attribute, original, own))
    setattr(owner, attribute, wrapper)


def _wrapper(hook, parts, stock):
    replacing = [part for part in parts if part.replace is not None]
    as_parts_read = hook.arguments or _unchanged

    @functools.wraps(stock)
    def patched(*args, **kwargs):
        called = (args, kwargs)
        args, kwargs = as_parts_read(*args, **kwargs)
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
        result = stock(*called[0], **called[1])
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


def _unchanged(*args, **kwargs):
    return args, kwargs


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
    layout = backend.current()
    if layout is None:
        raise UnsupportedVersionError(
            "keras_ov_einsum: no OpenVINO backend found for keras "
            f"{keras.__version__} (keras 3.12-3.15 carry it, keras 3.16 and "
            f"later need the keras-openvino package); {described}"
        )
    described += f"; backend layout: {layout.name}"
    for part in on:
        for hook in part.hooks + tuple(hook for hook, _ in part.wraps):
            try:
                sites = hook.resolve().sites()
                functions = [getattr(owner, name) for owner, name in sites]
            except (ImportError, AttributeError) as error:
                raise UnsupportedVersionError(
                    f"keras_ov_einsum cannot find {hook} ({error}); {described}"
                ) from error
            if not all(map(callable, functions)):
                raise UnsupportedVersionError(
                    f"keras_ov_einsum: {hook} is not a function; {described}"
                )


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
