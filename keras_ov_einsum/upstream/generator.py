"""The lowerings as patches to keras's own OpenVINO backend, one per part,
and their checker.

    python -m keras_ov_einsum.upstream make-patch [--keras-src DIR]
        [--out-dir DIR]
    python -m keras_ov_einsum.upstream check [--keras-src DIR] [--patch F ...]
    python -m keras_ov_einsum.upstream apply --keras-src DIR [--patch F ...]

``make-patch`` writes one unified diff per upstreamed part (``UPSTREAM``,
in the order they are meant to be applied) against keras's layout:
``patches/keras-VERSION-PART.patch``. Each adds the part's module to
``keras/src/backend/openvino/`` (``outcome.py`` and the part's own
``sources``, parts.py, merged into one: a single source of truth for the
monkeypatch and the patch), the part's keras-style test file
(``upstream_tests/``) and its call in ``numpy.py`` or ``core.py``; the
align_types part only fixes ``core.py``'s ``align_operand_types`` in place
(the monkeypatch wraps it instead). Every patch is made against the
unpatched keras file, and each part's lines sit apart from the others' (its
import at its own place), so each applies alone and all apply one after
the other. ``check`` says whether patches apply to a keras source tree (by
default the installed keras, whose ``keras/src/...`` layout is the same)
and why not. Everything here uses the standard library only: no ``patch``
binary, no git, no keras import.
"""

import argparse
import ast
import dataclasses
import difflib
import importlib.util
import pathlib
import re
import sys

from ..core.registry import by_name

__all__ = [
    "UPSTREAM",
    "PatchError",
    "Upstream",
    "apply_patch",
    "apply_patches",
    "check_patch",
    "check_patches",
    "main",
    "make_patch",
]

PACKAGE = pathlib.Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent
PATCHES = ROOT / "patches"
# The keras-style test files the patches add, one per part: keras's files,
# not ours (pyproject's testpaths leaves them out of our test run).
UPSTREAM_TESTS = PACKAGE / "upstream" / "tests"
TARGET_KERAS = "3.15.1"
# Every part module starts from the result type its lowering answers with.
SHARED_SOURCES = ("core/outcome.py",)
# A part module's declaration (``PART = Part(...)``, its ``Hook``s) and the
# functions only they name are the monkeypatch's glue: keras calls the
# lowerings itself.
_GLUE_CLASSES = ("Part", "Hook", "BackendHook", "ExtensionPoint")
BACKEND = "keras/src/backend/openvino"
NUMPY = f"{BACKEND}/numpy.py"
CORE = f"{BACKEND}/core.py"
VERSION_FILE = "keras/src/version.py"

# Each part's edits of numpy.py and core.py. No patch's context may hold
# another part's lines, so that the patches apply together: numpy.py's
# import block has one place a backend module sorts to that is the same in
# keras 3.15.1 and master (after the last import of the backend's core),
# the einsum part's; the matmul and prescale parts import inside the
# function they change, as the backend does elsewhere (math.py, nn.py).
EINSUM_IMPORT_ANCHOR = (
    "from keras.src.backend.openvino.core import while_loop\n"
)
EINSUM_IMPORT = (
    "from keras.src.backend.openvino.einsum_lowering import lower_einsum\n"
)
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
    from keras.src.backend.openvino.transposed_matmul import (
        lower_transposed_matmul,
    )

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
    from keras.src.backend.openvino.prescaled_projection import (
        lower_prescaled_projection,
    )

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
SLICE_UPDATE_IMPORT = (
    "from keras.src.backend.openvino.slab_slice_update import "
    "lower_slice_update\n"
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
# keras the module uses whatever opset the backend's numpy.py uses.
OPSET_IMPORT = re.compile(r"^import openvino\.opset\d+ as ov_opset$", re.M)


class PatchError(RuntimeError):
    """A patch cannot be generated for, or applied to, a keras tree."""


def _einsum_numpy(text):
    _expect_once(
        NUMPY,
        text,
        [
            (EINSUM_IMPORT_ANCHOR, "the import of while_loop"),
            (EINSUM_ANCHOR, "the Einsum in einsum()"),
        ],
    )
    text = text.replace(
        EINSUM_IMPORT_ANCHOR, EINSUM_IMPORT_ANCHOR + EINSUM_IMPORT, 1
    )
    return text.replace(EINSUM_ANCHOR, EINSUM_CALL, 1)


def _matmul_numpy(text):
    _expect_once(NUMPY, text, [(MATMUL_DEF, "def matmul(x1, x2)")])
    return _replace_last_line(
        NUMPY, text, MATMUL_DEF, MATMUL_ANCHOR, MATMUL_CALL
    )


def _prescale_numpy(text):
    _expect_once(NUMPY, text, [(MULTIPLY_DEF, "def multiply(x1, x2)")])
    return _replace_last_line(
        NUMPY, text, MULTIPLY_DEF, MULTIPLY_ANCHOR, MULTIPLY_CALL
    )


def _slice_update_core(text):
    _expect_once(
        CORE,
        text,
        [
            (CORE_IMPORT_ANCHOR, "the import of StatelessScope"),
            (SLICE_UPDATE_DEF, "def slice_update()"),
        ],
    )
    text = text.replace(
        CORE_IMPORT_ANCHOR, CORE_IMPORT_ANCHOR + SLICE_UPDATE_IMPORT, 1
    )
    return _replace_last_line(
        CORE, text, SLICE_UPDATE_DEF, SLICE_UPDATE_ANCHOR, SLICE_UPDATE_CALL
    )


def _align_types_core(text):
    _expect_once(
        CORE, text, [(ALIGN_ANCHOR, "align_operand_types()'s two Converts")]
    )
    return text.replace(ALIGN_ANCHOR, ALIGN_FIX, 1)


@dataclasses.dataclass(frozen=True)
class Upstream:
    """What one part's patch gives keras.

    ``part``: the part's name in parts.py; ``outcome.py`` and its
    ``sources`` make up ``module``. ``module``: the new module's name in
    keras's backend, None when the part adds none. ``test``: its keras-style
    test file in ``upstream_tests/``, added to keras's backend under the
    same name. ``summary``: what it changes, for the patch's header and the
    module's docstring. ``edits``: ``(keras path, function)`` pairs, each
    function mapping the stock file's text to the patched one.
    """

    part: str
    module: str | None
    test: str
    summary: str
    edits: tuple

    @property
    def module_path(self):
        return f"{BACKEND}/{self.module}.py" if self.module else None

    @property
    def test_path(self):
        return f"{BACKEND}/{self.test}"

    @property
    def sources(self):
        """This package's modules merged into ``module``, in order."""
        return SHARED_SOURCES + tuple(by_name()[self.part].sources)

    def patch_name(self, version=TARGET_KERAS):
        return f"keras-{version}-{self.part}.patch"

    @property
    def patch_path(self):
        """The committed patch, for the keras version it targets."""
        return PATCHES / self.patch_name()


# In the order the patches are meant to be applied and reviewed: the
# smallest first (patches/README.md).
UPSTREAM = (
    Upstream(
        part="align_types",
        module=None,
        test="align_operand_types_test.py",
        summary="Convert a binary op's operands only when their OpenVINO "
        "type differs\nfrom the result type.",
        edits=((CORE, _align_types_core),),
    ),
    Upstream(
        part="einsum",
        module="einsum_lowering",
        test="einsum_lowering_test.py",
        summary="Lower einsums with a constant kernel (EinsumDense) to a "
        "MatMul on a view\nof the kernel.",
        edits=((NUMPY, _einsum_numpy),),
    ),
    Upstream(
        part="matmul",
        module="transposed_matmul",
        test="transposed_matmul_test.py",
        summary="Feed matmul(x, transpose(constant)) to MatMul as "
        "transpose_b, not a\ntransposed copy of the constant.",
        edits=((NUMPY, _matmul_numpy),),
    ),
    Upstream(
        part="slice_update",
        module="slab_slice_update",
        test="slab_slice_update_test.py",
        summary="Write slice_update's whole trailing axes as slabs: one "
        "index row per\nslab, not per element.",
        edits=((CORE, _slice_update_core),),
    ),
    Upstream(
        part="prescale",
        module="prescaled_projection",
        test="prescaled_projection_test.py",
        summary="Scale a projection's input, not its output, by a power "
        "of two\n(attention's query scaling).",
        edits=((NUMPY, _prescale_numpy),),
    ),
)


def installed_keras_root():
    """The folder holding the installed ``keras/`` package."""
    spec = importlib.util.find_spec("keras")
    if spec is None or spec.origin is None:
        raise PatchError("keras is not installed")
    return pathlib.Path(spec.origin).parent.parent


def keras_version(keras_src):
    """The ``__version__`` in ``keras_src``'s version file, or "unknown"."""
    version_file = pathlib.Path(keras_src) / VERSION_FILE
    if version_file.exists():
        match = re.search(r'__version__ = "([^"]+)"', version_file.read_text())
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


def make_patch(keras_src, upstream):
    """``upstream``'s unified diff for the keras tree under ``keras_src``,
    made against the unpatched files."""
    keras_src = pathlib.Path(keras_src)
    numpy_path = keras_src / NUMPY
    if not numpy_path.exists():
        raise PatchError(f"no {NUMPY} under {keras_src}")
    opset = OPSET_IMPORT.search(numpy_path.read_text())
    version = keras_version(keras_src)
    target = "an unknown keras version"
    if version != "unknown":
        target = f"keras {version} (git tag v{version})"
    position = UPSTREAM.index(upstream) + 1
    header = (
        f"keras-ov-einsum, part {upstream.part} ({position} of "
        f"{len(UPSTREAM)}), in keras's OpenVINO backend:\n"
        f"{upstream.summary}\n"
        f"Target: {target}, {BACKEND}.\n"
        "Generated by `python -m keras_ov_einsum.upstream make-patch`; "
        "do not edit.\nApply from the root of a keras checkout with "
        "`git apply` or `patch -p1`,\nalone or after the parts before it "
        "(keras-ov-einsum's patches/README.md).\n\n"
    )
    parts = [header]
    for path, edit in upstream.edits:
        original = (keras_src / path).read_text()
        parts += _diff(path, original, edit(original))
    if upstream.module:
        module = generated_module(upstream, opset and opset.group(0))
        parts += _diff(upstream.module_path, None, module)
    test = (UPSTREAM_TESTS / upstream.test).read_text()
    parts += _diff(upstream.test_path, None, test)
    return "".join(parts)


def make_patches(keras_src):
    """{patch file name: text}, one per part, for ``keras_src``."""
    version = keras_version(keras_src)
    return {
        upstream.patch_name(version): make_patch(keras_src, upstream)
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

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _parse(patch_text):
    """[(path, is_new, [(old_start, [lines with ' '/'-'/'+' prefix])])].

    Text before the first ``---`` (our header) is ignored, as patch and git
    apply ignore it. Hunk bodies are read by their line counts.
    """
    lines = patch_text.splitlines(keepends=True)
    files, index = [], 0
    while index < len(lines):
        if not (
            lines[index].startswith("--- ")
            and index + 1 < len(lines)
            and lines[index + 1].startswith("+++ ")
        ):
            index += 1
            continue
        old = lines[index][4:].strip()
        new = lines[index + 1][4:].strip()
        path = new[2:] if new.startswith("b/") else new
        hunks, index = [], index + 2
        while index < len(lines) and lines[index].startswith("@@"):
            match = _HUNK.match(lines[index])
            if match is None:
                raise PatchError(f"malformed hunk header {lines[index]!r}")
            old_left = int(match.group(2) or 1)
            new_left = int(match.group(4) or 1)
            body, index = [], index + 1
            while old_left or new_left:
                if index >= len(lines):
                    raise PatchError(f"hunk of {path} is cut short")
                line = lines[index]
                if line[:1] in (" ", "\n"):
                    old_left, new_left = old_left - 1, new_left - 1
                    line = " " + line[1:] if line[:1] == " " else " \n"
                elif line[:1] == "-":
                    old_left -= 1
                elif line[:1] == "+":
                    new_left -= 1
                else:
                    raise PatchError(f"unexpected line in {path}: {line!r}")
                body.append(line)
                index += 1
            hunks.append((int(match.group(1)), body))
        files.append((path, old == "/dev/null", hunks))
    return files


def _apply_file(path, original, hunks):
    """Apply hunks to ``original`` lines; raise PatchError saying where not."""
    result, cursor = [], 0
    for number, (old_start, body) in enumerate(hunks, 1):
        expected = [line[1:] for line in body if line[0] in (" ", "-")]
        replacement = [line[1:] for line in body if line[0] in (" ", "+")]
        at = _find(original, expected, max(old_start - 1, 0), cursor)
        if at is None:
            line, want, found = _first_difference(original, expected, old_start)
            raise PatchError(
                f"hunk {number} of {path} does not apply: expected at line "
                f"{line} {want!r}, found {found!r}"
            )
        result += original[cursor:at] + replacement
        cursor = at + len(expected)
    return result + original[cursor:]


def _first_difference(original, expected, old_start):
    """(line number, expected text, found text) of the first mismatch."""
    for offset, want in enumerate(expected):
        index = old_start - 1 + offset
        found = original[index] if 0 <= index < len(original) else None
        if found != want:
            shown = "end of file" if found is None else found.rstrip("\n")
            return index + 1, want.rstrip("\n"), shown
    return old_start, "", "the same lines, but before an earlier hunk"


def _find(lines, block, near, start):
    """Where ``block`` occurs in ``lines`` at or after ``start``, nearest
    ``near``: offsets allowed, no fuzz, as ``git apply`` does."""
    candidates = [
        i
        for i in range(start, len(lines) - len(block) + 1)
        if lines[i : i + len(block)] == block
    ]
    return min(candidates, key=lambda i: abs(i - near)) if candidates else None


def apply_patches(patch_texts, keras_src, *, write):
    """Apply (or, with ``write=False``, only check) patches one after the
    other to a keras tree.

    Returns the paths they change; raises PatchError explaining a failure.
    Nothing is written unless every patch applies.
    """
    keras_src = pathlib.Path(keras_src)
    changes = {}
    for patch_text in patch_texts:
        changes.update(_changes(patch_text, keras_src, changes))
    if write:
        for target, text in changes.items():
            target.write_text(text)
    return sorted(str(target.relative_to(keras_src)) for target in changes)


def apply_patch(patch_text, keras_src, *, write):
    """Apply (or only check) one patch; see ``apply_patches``."""
    return apply_patches([patch_text], keras_src, write=write)


def _changes(patch_text, keras_src, earlier):
    """{target: new text} for one patch, reading a file as ``earlier``
    patches left it when they changed it."""
    changes = {}
    # New files first: "already exists" is the clearest sign of a tree
    # that was patched before.
    files = sorted(_parse(patch_text), key=lambda entry: not entry[1])
    for path, is_new, hunks in files:
        target = keras_src / path
        if is_new:
            if target in earlier or target.exists():
                raise PatchError(f"{path} already exists (patch applied?)")
            original = []
        elif target in earlier:
            original = earlier[target].splitlines(keepends=True)
        else:
            if not target.exists():
                raise PatchError(f"{path} is missing from {keras_src}")
            original = target.read_text().splitlines(keepends=True)
        changes[target] = "".join(_apply_file(path, original, hunks))
    if not changes:
        raise PatchError("the patch has no file changes")
    return changes


def check_patch(patch_text, keras_src):
    """(ok, message) for applying ``patch_text`` to ``keras_src``."""
    return check_patches([patch_text], keras_src)


def check_patches(patch_texts, keras_src):
    """(ok, message) for applying ``patch_texts`` one after the other."""
    where = f"keras {keras_version(keras_src)} at {keras_src}"
    try:
        paths = apply_patches(patch_texts, keras_src, write=False)
    except PatchError as error:
        return False, f"does not apply to {where}: {error}"
    return True, f"applies cleanly to {where} ({', '.join(paths)})"


# --------------------------------------------------------------------- cli


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_ov_einsum.upstream")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-patch", help="write every part's patch")
    make.add_argument(
        "--keras-src", help="keras source tree (default: the installed keras)"
    )
    make.add_argument(
        "--out-dir", help=f"default: {PATCHES.relative_to(ROOT)}/"
    )
    for name, text in [
        ("check", "do the patches apply, alone and together? (exit 0 or 1)"),
        ("apply", "apply the patches, in order, to a keras tree"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--keras-src",
            required=name == "apply",
            help="keras source tree (default: the installed keras)",
        )
        command.add_argument(
            "--patch",
            action="append",
            help="a patch file, repeated for several, applied in the order "
            "given (default: every part's, in patches/README.md's order)",
        )
    args = parser.parse_args(argv)
    try:
        keras_src = pathlib.Path(args.keras_src or installed_keras_root())
        if args.command == "make-patch":
            out_dir = pathlib.Path(args.out_dir or PATCHES)
            for name, text in make_patches(keras_src).items():
                (out_dir / name).write_text(text)
                print(f"wrote {out_dir / name} (against {keras_src})")
            return 0
        paths = args.patch or [str(u.patch_path) for u in UPSTREAM]
        texts = [pathlib.Path(path).read_text() for path in paths]
        if args.command == "check":
            every = True
            for path, text in zip(paths, texts):
                ok, message = check_patch(text, keras_src)
                print(f"{path} {message}")
                every = every and ok
            if len(texts) > 1:
                ok, message = check_patches(texts, keras_src)
                print(f"together, in this order: {message}")
                every = every and ok
            return 0 if every else 1
        changed = apply_patches(texts, keras_src, write=True)
        print(f"patched {', '.join(changed)} under {keras_src}")
        return 0
    except (PatchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
