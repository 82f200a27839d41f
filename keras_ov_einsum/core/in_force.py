"""What ``enable()`` put in force: the switches asked for, the parts
installed (those switched on that the installed stack can run), and the
passes registered at each extension point by the parts installed.

The installer (``install.py``) writes it; a part reads it (``Part.is_on``,
``extension.extended``) without importing the installer.
"""

import threading

__all__ = ["clear", "installed", "is_on", "passes", "put", "switches"]

_lock = threading.Lock()
_switches = None  # {part name: on}, as asked; None: not enabled
_installed = frozenset()  # the names of the parts installed
_passes = {}  # ExtensionPoint -> ((part, pass function), ...)


def put(switches, installed, passes):
    global _switches, _installed, _passes
    with _lock:
        _switches = dict(switches)
        _installed = frozenset(installed)
        _passes = {point: tuple(entries) for point, entries in passes.items()}


def clear():
    global _switches, _installed, _passes
    with _lock:
        _switches = None
        _installed = frozenset()
        _passes = {}


def switches():
    """The switches ``enable()`` was given (a copy, every part named), or
    None when not enabled."""
    with _lock:
        return None if _switches is None else dict(_switches)


def is_on(name):
    """Whether the part ``name`` is installed now."""
    with _lock:
        return name in _installed


def installed():
    """The names of the parts installed now, sorted."""
    with _lock:
        return tuple(sorted(_installed))


def passes(point):
    """The (part, pass) pairs registered at ``point``, in registry order."""
    with _lock:
        return _passes.get(point, ())
