"""The part contract and the machinery around it.

``part.py`` (what a part declares: ``Part``, ``Hook``, ``BackendHook``,
``ExtensionPoint``), ``registry.py`` (every part, in the order their
rewrites are tried), ``install.py`` (``enable``/``disable``: stock first,
fall back, record), ``guard.py`` (stock on a part's error),
``extension.py`` and ``in_force.py`` (passes at extension points, the
switches in force), ``backend.py`` (where the installed OpenVINO backend
keeps what the parts hook), ``decisions.py`` (what ``explain()`` returns),
``outcome.py`` (a lowering's result), ``graph.py`` and ``kernel.py``
(graph helpers the rewrites share), ``context.py`` (inside keras-hub's
``generate()`` or not).
"""
