"""What ``enable()`` put in force: the switches, and the passes registered
at each extension point by the parts switched on.

The installer (``install.py``) writes it; a part reads it (``Part.is_on``,
``extension.extended``) without importing the installer.
"""

import threading

__all__ = ["clear", "is_on", "passes", "put", "switches"]

_lock = threading.Lock()
_switches = None  # {part name: on}; None: not enabled
_passes = {}  # ExtensionPoint -> ((part, pass function), ...)


def put(switches, passes):
    global _switches, _passes
    with _lock:
        _switches = dict(switches)
        _passes = {point: tuple(entries) for point, entries in passes.items()}


def clear():
    global _switches, _passes
    with _lock:
        _switches = None
        _passes = {}


def switches():
    """The switches in force (a copy), or None when not enabled."""
    with _lock:
        return None if _switches is None else dict(_switches)


def is_on(name):
    with _lock:
        return bool(_switches and _switches.get(name))


def passes(point):
    """The (part, pass) pairs registered at ``point``, in registry order."""
    with _lock:
        return _passes.get(point, ())
