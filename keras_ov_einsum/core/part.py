"""What a part of the patch is: its declaration, the functions it hooks,
and the extension points where parts change what another part builds.

A part is one module that ends with a ``PART = Part(...)`` declaration: its
``enable()`` switch, the backend functions it hooks and its rewrite. The
rewrite of a hooked function ``f(*args, **kwargs)`` is called as
``rewrite(stock_result, *args, **kwargs)`` after the stock ``f`` ran, and
answers with an ``Outcome`` (``outcome.py``): the value to return instead
of stock's, or the reason it declined; or None when the call is not its
case. A part may also build a call's result without stock's
(``replace``), where tracing stock's operations only to drop them costs
time. ``install.py`` installs the parts listed in ``registry.py`` and does
the rest (stock first, fall back on any error, record for ``explain()``).
"""

import dataclasses
import importlib
from collections.abc import Callable

from . import backend, in_force
from .outcome import Outcome

__all__ = ["BackendHook", "ExtensionPoint", "FirstOf", "Hook", "Part"]


def _every_argument(*args, **kwargs):
    return args


@dataclasses.dataclass(frozen=True)
class Hook:
    """A function the patch replaces: ``attribute`` of ``module`` (dotted
    for a class attribute, e.g. ``"Core.compile_model"``).

    ``operands(*args, **kwargs)`` picks the tensors of a call whose shapes
    and dtypes ``explain()`` shows. ``arguments(*args, **kwargs)`` gives
    ``(args, kwargs)`` as the parts read them, where the function's own
    differ (one that moved into another class between versions); the
    operands, label, replace and rewrite get those.
    """

    module: str
    attribute: str
    operands: Callable[..., tuple] = _every_argument
    arguments: Callable[..., tuple[tuple, dict]] | None = None

    def resolve(self):
        return self

    def sites(self):
        """The (owner, attribute name) the function is bound at."""
        owner = importlib.import_module(self.module)
        *path, name = self.attribute.split(".")
        for step in path:
            owner = getattr(owner, step)
        return [(owner, name)]

    def __str__(self):
        return f"{self.module}.{self.attribute}"


@dataclasses.dataclass(frozen=True)
class BackendHook:
    """A function of the OpenVINO backend the patch replaces, named by what
    it is (``"numpy.einsum"``, ``"align_operand_types"``: a key of
    ``backend.Layout.targets``), wherever the installed layout binds it."""

    target: str
    operands: Callable[..., tuple] = _every_argument
    arguments: Callable[..., tuple[tuple, dict]] | None = None

    def resolve(self):
        return self

    def sites(self):
        layout = backend.current()
        if layout is None or self.target not in layout.targets:
            where = layout.name if layout else "no backend"
            raise AttributeError(f"{where} layout has no {self.target}")
        sites = []
        for short_name, attribute in layout.targets[self.target]:
            owner = importlib.import_module(layout.modules[short_name])
            *path, name = attribute.split(".")
            for step in path:
                owner = getattr(owner, step)
            sites.append((owner, name))
        return sites

    def __str__(self):
        layout = backend.current()
        where = layout.name if layout else "no backend"
        return f"OpenVINO backend {self.target} ({where} layout)"


@dataclasses.dataclass(frozen=True)
class FirstOf:
    """One function that keras keeps elsewhere from one version to the
    next: the first of ``hooks`` the installed stack has."""

    hooks: tuple[Hook | BackendHook, ...]

    def resolve(self) -> Hook | BackendHook:
        errors = []
        for hook in self.hooks:
            try:
                for owner, name in hook.sites():
                    getattr(owner, name)
            except (ImportError, AttributeError) as error:
                errors.append(f"{hook}: {error}")
                continue
            return hook
        raise AttributeError("; ".join(errors))

    def sites(self):
        return self.resolve().sites()

    def __str__(self):
        return " or ".join(map(str, self.hooks))


@dataclasses.dataclass(frozen=True, eq=False)
class ExtensionPoint:
    """A place where the part that owns it lets other parts change what it
    builds: the owner calls ``extension.extended(POINT, function)`` and
    gets ``function`` with the passes of the parts switched on around it.
    A part registers a pass in its declaration (``Part.passes``); the pass
    is called as ``pass_(next, *args, **kwargs)``, ``next`` being the
    function with the passes before it (registry order) around it."""

    name: str
    doc: str

    def __str__(self):
        return self.name


@dataclasses.dataclass(frozen=True)
class Part:
    """One lowering, switched on and off by ``enable(name=...)``.

    ``rewrite``: see the module docstring. Several parts may hook one
    function; their rewrites are tried in the registry's order and the
    first that lowers the call wins.
    ``label``: ``explain()``'s name for a call, a string or a function of
    the call's arguments (an einsum is named by its equation).
    ``counted``: ``explain()`` counts the part's lowerings (the Outcome's
    ``count``) instead of listing them: for parts that act on most calls.
    ``requires``: the parts that must be on with it.
    ``wraps``: ``(Hook, factory)`` pairs for functions replaced otherwise:
    ``factory(original)`` returns the replacement (``original`` as the
    owner holds it: a classmethod object for a classmethod). An error the
    replacement raises that ``original`` did not falls back to
    ``original``, recorded for ``explain()``.
    ``passes``: ``(ExtensionPoint, pass)`` pairs, each a pass at another
    part's extension point (see ``ExtensionPoint``).
    ``unavailable``: called at ``enable()``, answers why the installed
    stack lacks what the part's rewrite leads to (None: it has it); such a
    part is not installed, and the reason is recorded for ``explain()``.
    ``sources``: this package's modules that carry the part into the keras
    patch (``upstream/``), in dependency order; None: not upstreamed.
    ``replace``: called as ``replace(*args, **kwargs)`` before stock, for a
    part whose rewrite reads nothing of stock's result but its type: a
    lowered ``Outcome`` is returned instead of stock's result, which is
    then never built (a trace spends less time); None runs stock and the
    rewrite as usual, so a replace takes only the calls stock would
    answer (no stock error is lost) and leaves every decline, with its
    reason, to the rewrite.
    """

    name: str
    summary: str
    hooks: tuple[Hook | BackendHook | FirstOf, ...] = ()
    rewrite: Callable[..., Outcome | None] | None = None
    label: str | Callable[..., str] | None = None
    default: bool = True
    counted: bool = False
    requires: tuple[str, ...] = ()
    wraps: tuple[tuple[Hook | BackendHook | FirstOf, Callable], ...] = ()
    passes: tuple[tuple[ExtensionPoint, Callable], ...] = ()
    unavailable: Callable[[], str | None] | None = None
    sources: tuple[str, ...] | None = None
    replace: Callable[..., Outcome | None] | None = None

    def label_of(self, *args, **kwargs) -> str | None:
        if callable(self.label):
            return self.label(*args, **kwargs)
        return self.label

    def is_on(self) -> bool:
        """Whether ``enable()`` has this part switched on now."""
        return in_force.is_on(self.name)
