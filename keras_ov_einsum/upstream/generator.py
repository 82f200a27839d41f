"""The lowerings as patches to the OpenVINO backend they change, one per
part and per target, and their checker.

    python -m keras_ov_einsum.upstream make-patch [--target T] [--src DIR]
        [--out-dir DIR]
    python -m keras_ov_einsum.upstream check [--target T] [--src DIR]
        [--patch F ...]
    python -m keras_ov_einsum.upstream apply --src DIR [--target T]
        [--patch F ...]

A target is a project whose source tree holds the backend (``TARGETS``):
``keras`` (keras 3.12-3.15, ``keras/src/backend/openvino/``) or
``keras-openvino`` (keras 3.16 and later load the backend from that
package, ``keras_openvino/src/``). ``make-patch`` writes one unified diff
per upstreamed part (``UPSTREAM``, in the order they are meant to be
applied) against the target's tree: ``patches/TARGET-VERSION-PART.patch``.
Each adds the part's module beside the backend's ``numpy.py`` and
``core.py`` (``outcome.py`` and the part's own ``sources`` merged into one:
a single source of truth for the monkeypatch and the patch), the part's
keras-style test file (``tests/``) beside it and its call in ``numpy.py``
or ``core.py``; the align_types part only fixes ``align_operand_types`` in
place (the monkeypatch wraps it instead). Every patch is made against the
unpatched file, and each part's lines sit apart from the others' (its
import at its own place), so each applies alone and all apply one after
the other. ``check`` and ``apply`` run ``git apply`` on a tree (by default
the installed package's, whose layout is the repository's).
"""

import argparse
import ast
import dataclasses
import difflib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

from ..core.registry import by_name

__all__ = [
    "TARGETS",
    "UPSTREAM",
    "PatchError",
    "Target",
    "Upstream",
    "apply_patches",
    "check_patches",
    "junit_outcomes",
    "main",
    "make_patch",
]

PACKAGE = pathlib.Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent
PATCHES = ROOT / "patches"
# The keras-style test files the patches add, one per part, written for
# keras's layout (``Target.test_text`` moves their imports to another's):
# keras's files, not ours (pyproject's testpaths leaves them out of our
# test run).
UPSTREAM_TESTS = PACKAGE / "upstream" / "tests"
# Every part module starts from the result type its lowering answers with.
SHARED_SOURCES = ("core/outcome.py",)
# A part module's declaration (``PART = Part(...)``, its ``Hook``s) and the
# functions only they name are the monkeypatch's glue: keras calls the
# lowerings itself.
_GLUE_CLASSES = ("Part", "Hook", "BackendHook", "ExtensionPoint")


def _dotted(path):
    """The module a source path names: ``a/b/c.py`` -> ``a.b.c``."""
    return path.removesuffix(".py").replace("/", ".")


@dataclasses.dataclass(frozen=True)
class Target:
    """A project the patches are made for: where its OpenVINO backend keeps
    what the parts change, and so where a part's module, call and test go.

    ``name``: ``--target``, and the patches' file names
    (``NAME-VERSION-PART.patch``); ``title``: the backend, as a patch's
    header names it. ``package``: its top-level package; the
    folder holding it is the root of a source tree, as of a checkout.
    ``numpy``, ``core``: the backend's ``numpy.py`` and ``core.py``;
    ``align``: the file defining ``align_operand_types``. ``modules``: the
    folder the parts' modules go in, beside the numpy.py and core.py that
    import them; a part's test goes beside its module (align_types':
    beside ``align``). ``version_file``; ``version``: the version the
    committed patches are made against; ``release``: how upstream names
    that version (``{version}`` filled in); ``same_as``: other trees the
    committed patches are for, whose files they change are the same.
    ``pytest_options``: what pytest needs to run a test in the tree (the
    patch's header says so).
    """

    name: str
    title: str
    package: str
    numpy: str
    core: str
    align: str
    modules: str
    version_file: str
    version: str
    release: str
    same_as: str = ""
    pytest_options: tuple = ()

    @property
    def core_module(self):
        return _dotted(self.core)

    def module_path(self, module):
        return f"{self.modules}/{module}.py"

    def module_import(self, module):
        return f"{_dotted(self.modules)}.{module}"

    @property
    def folder(self):
        """The backend's folder, as a patch's header names it."""
        return os.path.commonpath([self.numpy, self.core, self.align])

    def test_text(self, template):
        """A test file written for keras's layout, importing from this
        target's modules instead."""
        for keras_path, path in (
            (KERAS.numpy, self.numpy),
            (KERAS.core, self.core),
        ):
            template = template.replace(
                f"from {_dotted(keras_path)} import",
                f"from {_dotted(path)} import",
            )
        return template

    def patch_name(self, part, version=None):
        return f"{self.name}-{version or self.version}-{part}.patch"

    def describe(self, version):
        """What a patch made against ``version`` targets, for its header."""
        if version == "unknown":
            return f"an unknown {self.name} version"
        release = self.release.format(version=version)
        if version == self.version and self.same_as:
            release += f"; the same files as {self.same_as}"
        return f"{self.name} {version} ({release})"


_IN_KERAS = "keras/src/backend/openvino"
KERAS = Target(
    name="keras",
    title="keras's OpenVINO backend",
    package="keras",
    numpy=f"{_IN_KERAS}/numpy.py",
    core=f"{_IN_KERAS}/core.py",
    align=f"{_IN_KERAS}/core.py",
    modules=_IN_KERAS,
    version_file="keras/src/version.py",
    version="3.15.1",
    release="git tag v{version}",
)
# keras-team/keras-openvino's backend: the ops modules keras.ops dispatches
# to in ops/, the dtype helpers (align_operand_types among them) in utils.py.
# The parts' modules go into ops/, beside the numpy.py and core.py that call
# them, as in keras's backend folder.
KERAS_OPENVINO = Target(
    name="keras-openvino",
    title="keras-openvino, Keras's OpenVINO backend",
    package="keras_openvino",
    numpy="keras_openvino/src/ops/numpy.py",
    core="keras_openvino/src/ops/core.py",
    align="keras_openvino/src/utils.py",
    modules="keras_openvino/src/ops",
    version_file="keras_openvino/src/version.py",
    version="0.0.1",
    release="the PyPI release",
    # Its numpy.py, core.py and utils.py are byte for byte the wheel's.
    same_as="keras-team/keras-openvino at cba2a787ad45",
    # keras_openvino cannot be imported before keras: its src/__init__.py
    # imports keras, which imports the half-initialized package back as its
    # backend (NameError: name 'Variable' is not defined). pytest imports a
    # test inside the package as keras_openvino.src...; "-p keras" makes it
    # import keras first, as a plugin. (A conftest.py at the repository's
    # root could; each patch adding one, they would not apply together.)
    pytest_options=("-p", "keras"),
)
TARGETS = {target.name: target for target in (KERAS, KERAS_OPENVINO)}

# Each part's edits of numpy.py and core.py, written for any target (the
# import of its module added by ``_from_import``). No patch's context may
# hold another part's lines, so that the patches apply together: numpy.py's
# import block has one place a backend module sorts to that is the same in
# keras 3.15.1, keras master and keras-openvino (after the last import from
# the backend's core), the einsum part's; the matmul and prescale parts
# import inside the function they change, as the backend does elsewhere
# (math.py, nn.py).
EINSUM_IMPORT_ANCHOR = "from {} import while_loop\n"
EINSUM_ANCHOR = "    result = ov_opset.einsum(inputs, subscripts).output(0)\n"
EINSUM_CALL = """\
    # An einsum with a constant kernel (a Keras variable), as in EinsumDense,
    # is a MatMul on a reshaped view of the kernel: nothing left for OpenVINO
    # to decompose, broadcast and constant-fold into copies of the weights.
    lowered = lower_einsum(subscripts, inputs)
    if lowered:
        result = lowered.output
    else:
        result = ov_opset.einsum(inputs, subscripts).output(0)
"""
MATMUL_DEF = "def matmul(x1, x2):\n"
MATMUL_ANCHOR = (
    "    return OpenVINOKerasTensor(ov_opset.matmul(x1, x2, False, False)"
    ".output(0))\n"
)
MATMUL_CALL = """\

    result = ov_opset.matmul(x1, x2, False, False)
    # matmul(x, transpose(constant)), as in tied embedding logits, reads the
    # constant with transpose_b instead of folding a transposed copy of it.
    lowered = lower_transposed_matmul(result)
    if lowered:
        return OpenVINOKerasTensor(lowered.output)
    return OpenVINOKerasTensor(result.output(0))
"""
MULTIPLY_DEF = "def multiply(x1, x2):\n"
MULTIPLY_ANCHOR = (
    "    return OpenVINOKerasTensor(ov_opset.multiply(x1, x2).output(0))\n"
)
MULTIPLY_CALL = """\

    result = ov_opset.multiply(x1, x2)
    # A projection scaled by a power of two (attention's query scaling)
    # scales its input instead: exact, and the CPU plugin then keeps the
    # Multiply out of the projection's FullyConnected layer.
    lowered = lower_prescaled_projection(result)
    if lowered:
        return OpenVINOKerasTensor(lowered.output)
    return OpenVINOKerasTensor(result.output(0))
"""
CORE_IMPORT_ANCHOR = (
    "from keras.src.backend.common.stateless_scope import StatelessScope\n"
)
SLICE_UPDATE_DEF = "def slice_update(inputs, start_indices, updates):\n"
SLICE_UPDATE_ANCHOR = "    return OpenVINOKerasTensor(result)\n"
SLICE_UPDATE_CALL = """\
    # Trailing axes written whole (a key/value cache write) need no index
    # row per element: one row per slab of the leading axes.
    lowered = lower_slice_update(
        result.get_node(), [get_ov_output(index) for index in start_indices]
    )
    if lowered:
        result = lowered.output
    return OpenVINOKerasTensor(result)
"""
ALIGN_ANCHOR = """\
    if x1_type != result_type:
        x1 = ov_opset.convert(x1, result_type).output(0)
    if x2_type != result_type:
        x2 = ov_opset.convert(x2, result_type).output(0)
"""
ALIGN_FIX = """\
    # x1_type and x2_type are Keras dtype names, which never equal an
    # OpenVINO type: compare the operands' own types, so that an operand
    # already of the result type gets no Convert.
    if x1.element_type != result_type:
        x1 = ov_opset.convert(x1, result_type).output(0)
    if x2.element_type != result_type:
        x2 = ov_opset.convert(x2, result_type).output(0)
"""
# The package imports an older opset than keras for older OpenVINOs; inside
# the backend the module uses whatever opset the backend's numpy.py uses.
OPSET_IMPORT = re.compile(r"^import openvino\.opset\d+ as ov_opset$", re.M)
_VERSION = re.compile(r'__version__ = "([^"]+)"')


class PatchError(RuntimeError):
    """A patch cannot be generated for, or applied to, a source tree."""


def _from_import(module, name, indent=""):
    """``from module import name`` as ruff's isort writes it under the
    targets' settings (force-single-line, 80 columns): in parentheses only
    when the line would be longer."""
    line = f"{indent}from {module} import {name}"
    if len(line) <= 80:
        return line + "\n"
    return f"{indent}from {module} import (\n{indent}    {name},\n{indent})\n"


# Each edit maps (the stock file's text, the target, the part's module as
# imported there) to the patched text.


def _einsum_numpy(text, target, module):
    anchor = EINSUM_IMPORT_ANCHOR.format(target.core_module)
    _expect_once(
        target.numpy,
        text,
        [
            (anchor, "the import of while_loop"),
            (EINSUM_ANCHOR, "the Einsum in einsum()"),
        ],
    )
    import_line = _from_import(module, "lower_einsum")
    text = text.replace(anchor, anchor + import_line, 1)
    return text.replace(EINSUM_ANCHOR, EINSUM_CALL, 1)


def _matmul_numpy(text, target, module):
    _expect_once(target.numpy, text, [(MATMUL_DEF, "def matmul(x1, x2)")])
    return _replace_last_line(
        target.numpy,
        text,
        MATMUL_DEF,
        MATMUL_ANCHOR,
        _from_import(module, "lower_transposed_matmul", "    ") + MATMUL_CALL,
    )


def _prescale_numpy(text, target, module):
    _expect_once(target.numpy, text, [(MULTIPLY_DEF, "def multiply(x1, x2)")])
    return _replace_last_line(
        target.numpy,
        text,
        MULTIPLY_DEF,
        MULTIPLY_ANCHOR,
        _from_import(module, "lower_prescaled_projection", "    ")
        + MULTIPLY_CALL,
    )


def _slice_update_core(text, target, module):
    _expect_once(
        target.core,
        text,
        [
            (CORE_IMPORT_ANCHOR, "the import of StatelessScope"),
            (SLICE_UPDATE_DEF, "def slice_update()"),
        ],
    )
    text = text.replace(
        CORE_IMPORT_ANCHOR,
        CORE_IMPORT_ANCHOR + _from_import(module, "lower_slice_update"),
        1,
    )
    return _replace_last_line(
        target.core,
        text,
        SLICE_UPDATE_DEF,
        SLICE_UPDATE_ANCHOR,
        SLICE_UPDATE_CALL,
    )


def _align_types(text, target, module):
    _expect_once(
        target.align,
        text,
        [(ALIGN_ANCHOR, "align_operand_types()'s two Converts")],
    )
    return text.replace(ALIGN_ANCHOR, ALIGN_FIX, 1)


@dataclasses.dataclass(frozen=True)
class Upstream:
    """What one part's patch gives the backend.

    ``part``: the part's name in the registry; ``outcome.py`` and its
    ``sources`` make up ``module``. ``module``: the new module's name in the
    backend, None when the part adds none. ``test``: its keras-style test
    file in ``tests/``, added beside the module under the same name.
    ``summary``: what it changes, for the patch's header and the module's
    docstring. ``edits``: ``(file, edit)`` pairs, ``file`` the ``Target``
    field naming the file it changes (``"numpy"``, ``"core"``,
    ``"align"``), ``edit`` mapping its stock text to the patched one.
    """

    part: str
    module: str | None
    test: str
    summary: str
    edits: tuple

    def module_path(self, target):
        return target.module_path(self.module) if self.module else None

    def test_path(self, target):
        """Beside the module, or beside the file the part fixes."""
        if self.module:
            folder = target.modules
        else:
            folder = os.path.dirname(getattr(target, self.edits[0][0]))
        return f"{folder}/{self.test}"

    @property
    def sources(self):
        """This package's modules merged into ``module``, in order."""
        return SHARED_SOURCES + tuple(by_name()[self.part].sources)

    def patch_path(self, target):
        """The committed patch, for the version ``target`` pins."""
        return PATCHES / target.patch_name(self.part)


# In the order the patches are meant to be applied and reviewed: the
# smallest first (patches/README.md).
UPSTREAM = (
    Upstream(
        part="align_types",
        module=None,
        test="align_operand_types_test.py",
        summary="Convert a binary op's operands only when their OpenVINO "
        "type differs\nfrom the result type.",
        edits=(("align", _align_types),),
    ),
    Upstream(
        part="einsum",
        module="einsum_lowering",
        test="einsum_lowering_test.py",
        summary="Lower einsums with a constant kernel (EinsumDense) to a "
        "MatMul on a view\nof the kernel.",
        edits=(("numpy", _einsum_numpy),),
    ),
    Upstream(
        part="matmul",
        module="transposed_matmul",
        test="transposed_matmul_test.py",
        summary="Feed matmul(x, transpose(constant)) to MatMul as "
        "transpose_b, not a\ntransposed copy of the constant.",
        edits=(("numpy", _matmul_numpy),),
    ),
    Upstream(
        part="slice_update",
        module="slab_slice_update",
        test="slab_slice_update_test.py",
        summary="Write slice_update's whole trailing axes as slabs: one "
        "index row per\nslab, not per element.",
        edits=(("core", _slice_update_core),),
    ),
    Upstream(
        part="prescale",
        module="prescaled_projection",
        test="prescaled_projection_test.py",
        summary="Scale a projection's input, not its output, by a power "
        "of two\n(attention's query scaling).",
        edits=(("numpy", _prescale_numpy),),
    ),
)


def default_target():
    """keras-openvino where its package is installed (keras 3.16 and later
    load the backend from it), else keras."""
    installed = importlib.util.find_spec(KERAS_OPENVINO.package) is not None
    return KERAS_OPENVINO if installed else KERAS


def installed_root(target):
    """The folder holding the installed ``target.package``."""
    spec = importlib.util.find_spec(target.package)
    if spec is None or spec.origin is None:
        raise PatchError(f"{target.package} is not installed")
    root = pathlib.Path(spec.origin).parent.parent
    if not (root / target.numpy).exists():
        raise PatchError(
            f"the installed {target.package} has no {target.numpy}: not the "
            f"{target.name} target (--target)"
        )
    return root


def version(tree, target):
    """The ``__version__`` in ``tree``'s version file, or "unknown"."""
    version_file = pathlib.Path(tree) / target.version_file
    if version_file.exists():
        match = _VERSION.search(version_file.read_text())
        if match:
            return match.group(1)
    return "unknown"


# ---------------------------------------------------------------- generate


def generated_module(upstream, opset_import=None):
    """A part's keras module: ``outcome.py`` and the part's sources merged."""
    names = ",".join(filename[:-3] for filename in upstream.sources)
    docstring = (
        f"{upstream.summary}\n\n"
        "Generated from keras-ov-einsum's\n"
        f"keras_ov_einsum/{{{names}}}.py\n"
        "by `python -m keras_ov_einsum.upstream make-patch`: change it "
        "there and\nregenerate."
    )
    return merge_modules(upstream.sources, docstring, opset_import)


def merge_modules(filenames, docstring, opset_import=None):
    """This package's ``filenames`` merged into one module.

    Module docstrings become comments, relative imports and ``__all__`` go,
    the other imports are gathered at the top (``opset_import`` replacing
    the package's opset import when given). A name defined in two modules
    stops the generator rather than letting one shadow the other.
    """
    imports, sections, defined_in = [], [], {}
    for filename in filenames:
        source = (PACKAGE / filename).read_text()
        tree = ast.parse(source)
        lines = source.splitlines(keepends=True)
        module_doc = ast.get_docstring(tree, clean=True) or ""
        glue = _glue(tree)
        drop = set()
        for node in tree.body:
            span = range(node.lineno - 1, node.end_lineno)
            if node is tree.body[0] and module_doc:
                drop.update(span)
            elif node in glue:
                drop.update(span)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                drop.update(span)
                if isinstance(node, ast.ImportFrom) and node.level:
                    continue  # the names it imports are merged in as well
                statement = "".join(lines[i] for i in span).strip()
                if opset_import and OPSET_IMPORT.match(statement):
                    statement = opset_import
                if statement not in imports:
                    imports.append(statement)
            elif _is_dunder_all(node):
                drop.update(span)
            else:
                for name in _defined_names(node):
                    if name in defined_in:
                        raise PatchError(
                            f"{name!r} is defined in both {defined_in[name]} "
                            f"and {filename}: rename one before generating"
                        )
                    defined_in[name] = filename
        body = "".join(
            line for index, line in enumerate(lines) if index not in drop
        ).strip("\n")
        title = f"# --- from keras_ov_einsum/{filename} "
        comment = [title + "-" * (79 - len(title))]
        comment += [f"# {line}".rstrip() for line in module_doc.splitlines()]
        sections.append("\n".join(comment) + "\n\n\n" + body + "\n")
    header = f'"""{docstring}\n"""\n\n'
    return header + _import_block(imports) + "\n" + "\n\n".join(sections)


def _glue(tree):
    """The top-level statements of a part module that only the monkeypatch
    uses: its ``Part``/``Hook``/``ExtensionPoint`` declarations, the
    functions they name, and the private functions only those name."""
    declarations = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in _GLUE_CLASSES
    ]
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }
    named = _names_in(declarations)
    glue = declarations + [functions[name] for name in named & set(functions)]
    while True:
        others = _names_in(node for node in tree.body if node not in glue)
        more = [
            functions[name]
            for name in _names_in(glue) & set(functions)
            if name.startswith("_")
            and name not in others
            and functions[name] not in glue
        ]
        if not more:
            return glue
        glue += more


def _names_in(nodes):
    return {
        name.id
        for node in nodes
        for name in ast.walk(node)
        if isinstance(name, ast.Name)
    }


def glue_names(filename):
    """The names of ``filename`` (a source module) left out of the
    generated module: the monkeypatch's glue."""
    tree = ast.parse((PACKAGE / filename).read_text())
    return {name for node in _glue(tree) for name in _defined_names(node)}


def _is_dunder_all(node):
    return isinstance(node, ast.Assign) and any(
        isinstance(target, ast.Name) and target.id == "__all__"
        for target in node.targets
    )


def _defined_names(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target]
        )
        return [t.id for t in targets if isinstance(t, ast.Name)]
    return []


def _import_block(statements):
    """Standard library, then third party; ``import`` before ``from``, as
    keras's isort settings (force-single-line) order them."""

    def key(statement):
        words = statement.split()
        return (words[0] == "from", words[1].lower(), statement)

    groups = [[], []]
    for statement in statements:
        top = statement.split()[1].split(".")[0]
        groups[top not in sys.stdlib_module_names].append(statement)
    return "\n".join(
        "".join(line + "\n" for line in sorted(group, key=key))
        for group in groups
        if group
    )


def _expect_once(path, text, anchors):
    for anchor, what in anchors:
        if text.count(anchor) != 1:
            found = "cannot find" if anchor not in text else "found twice"
            raise PatchError(f"{path}: {found} {what}: {anchor.strip()!r}")


def _replace_last_line(path, text, definition, line, replacement):
    """Replace the last occurrence of the whole ``line`` in the function
    that starts with ``definition`` (its final return)."""
    start = text.index(definition)
    end = text.find("\ndef ", start + 1)
    end = len(text) if end < 0 else end
    body = text[start:end]
    at = body.rfind("\n" + line) + 1
    if at == 0:
        name = definition[len("def ") : definition.index("(")]
        raise PatchError(f"{path}: {name}() has no line {line.strip()!r}")
    body = body[:at] + replacement + body[at + len(line) :]
    return text[:start] + body + text[end:]


def make_patch(tree, upstream, target):
    """``upstream``'s unified diff for ``target``'s source tree under
    ``tree``, made against the unpatched files."""
    tree = pathlib.Path(tree)
    numpy_path = tree / target.numpy
    if not numpy_path.exists():
        raise PatchError(f"no {target.numpy} under {tree}")
    opset = OPSET_IMPORT.search(numpy_path.read_text())
    position = UPSTREAM.index(upstream) + 1
    header = (
        f"keras-ov-einsum, part {upstream.part} ({position} of "
        f"{len(UPSTREAM)}), in {target.title}:\n"
        f"{upstream.summary}\n"
        f"Target: {target.describe(version(tree, target))}, "
        f"{target.folder}.\n"
        "Generated by `python -m keras_ov_einsum.upstream make-patch`; "
        f"do not edit.\nApply from the root of a {target.name} checkout "
        "with `git apply` or `patch -p1`,\nalone or after the parts before "
        "it (keras-ov-einsum's patches/README.md).\n"
    )
    if target.pytest_options:
        options = " ".join(target.pytest_options)
        header += (
            f"Run its test with `KERAS_BACKEND=openvino pytest {options} "
            f"{upstream.test_path(target)}`\n(keras imported first: "
            f"{target.package} cannot be imported before it).\n"
        )
    header += "\n"
    parts = [header]
    module = upstream.module and target.module_import(upstream.module)
    for field, edit in upstream.edits:
        path = getattr(target, field)
        original = (tree / path).read_text()
        parts += _diff(path, original, edit(original, target, module))
    if upstream.module:
        text = generated_module(upstream, opset and opset.group(0))
        parts += _diff(upstream.module_path(target), None, text)
    test = target.test_text((UPSTREAM_TESTS / upstream.test).read_text())
    parts += _diff(upstream.test_path(target), None, test)
    return "".join(parts)


def make_patches(tree, target):
    """{patch file name: text}, one per part, for ``target``'s ``tree``."""
    found = version(tree, target)
    return {
        target.patch_name(upstream.part, found): make_patch(
            tree, upstream, target
        )
        for upstream in UPSTREAM
    }


def _diff(path, old, new):
    for text, which in ((old, f"a/{path}"), (new, f"b/{path}")):
        # difflib writes no "\ No newline at end of file" marker.
        if text and not text.endswith("\n"):
            raise PatchError(f"{which} does not end with a newline")
    old_lines = [] if old is None else old.splitlines(keepends=True)
    return list(
        difflib.unified_diff(
            old_lines,
            new.splitlines(keepends=True),
            fromfile="/dev/null" if old is None else f"a/{path}",
            tofile=f"b/{path}",
        )
    )


# ------------------------------------------------------------------- apply


def apply_patches(patch_texts, tree, *, check=False):
    """Apply (or, with ``check``, only check) patches one after the other
    to ``tree`` with ``git apply``: all of them or nothing.

    Returns the paths they change; raises PatchError with git's reason.
    """
    git = shutil.which("git")
    if git is None:
        raise PatchError("git is not installed: check and apply run git apply")
    tree = pathlib.Path(tree).resolve()
    if not tree.is_dir():
        raise PatchError(f"{tree} is not a folder")
    # One input: git applies a series given as several files one file at a
    # time, each against the unpatched tree, and keeps those that applied.
    completed = subprocess.run(
        [git, "apply", "--numstat", "--check" if check else "--apply"],
        input="".join(patch_texts),
        cwd=tree,
        # Not the repository of a folder above the tree (a venv inside a
        # checkout): paths would be read from that repository's root.
        env=dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode:
        reason = completed.stderr.strip() or f"exit {completed.returncode}"
        raise PatchError(f"git apply: {reason}")
    paths = [line.split("\t")[-1] for line in completed.stdout.splitlines()]
    return sorted(set(paths))


def check_patches(patch_texts, tree, target):
    """(ok, message) for applying ``patch_texts`` one after the other."""
    where = f"{target.name} {version(tree, target)} at {tree}"
    try:
        paths = apply_patches(patch_texts, tree, check=True)
    except PatchError as error:
        return False, f"does not apply to {where}: {error}"
    return True, f"applies cleanly to {where} ({', '.join(paths)})"


def junit_outcomes(report):
    """{test id: "passed" | "failed" | "skipped"} from pytest's
    ``--junitxml`` ``report``: how the patched copies' own tests ended."""
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        outcomes[test_id] = outcome
    return outcomes


# --------------------------------------------------------------------- cli


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_ov_einsum.upstream")
    commands = parser.add_subparsers(dest="command", required=True)
    target_help = (
        "the project whose tree the patches are for (default: keras-openvino "
        "if it is installed, else keras)"
    )
    make = commands.add_parser("make-patch", help="write every part's patch")
    for name, text in [
        ("check", "do the patches apply, alone and together? (exit 0 or 1)"),
        ("apply", "apply the patches, in order, to a source tree"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--patch",
            action="append",
            help="a patch file, repeated for several, applied in the order "
            "given (default: every part's, in patches/README.md's order)",
        )
    for name, command in commands.choices.items():
        command.add_argument("--target", choices=TARGETS, help=target_help)
        command.add_argument(
            "--src",
            "--keras-src",
            dest="src",
            required=name == "apply",
            help="the root of the target's source tree, as of a checkout "
            "(default: the installed package's)",
        )
    make.add_argument(
        "--out-dir", help=f"default: {PATCHES.relative_to(ROOT)}/"
    )
    args = parser.parse_args(argv)
    try:
        target = TARGETS[args.target] if args.target else default_target()
        tree = pathlib.Path(args.src or installed_root(target))
        if args.command == "make-patch":
            out_dir = pathlib.Path(args.out_dir or PATCHES)
            for name, text in make_patches(tree, target).items():
                (out_dir / name).write_text(text)
                print(f"wrote {out_dir / name} (against {tree})")
            return 0
        paths = args.patch or [str(u.patch_path(target)) for u in UPSTREAM]
        texts = [pathlib.Path(path).read_text() for path in paths]
        if args.command == "check":
            every = True
            for path, text in zip(paths, texts):
                ok, message = check_patches([text], tree, target)
                print(f"{path} {message}")
                every = every and ok
            if len(texts) > 1:
                ok, message = check_patches(texts, tree, target)
                print(f"together, in this order: {message}")
                every = every and ok
            return 0 if every else 1
        changed = apply_patches(texts, tree)
        print(f"patched {', '.join(changed)} under {tree}")
        return 0
    except (PatchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
