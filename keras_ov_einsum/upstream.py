"""The lowering as a patch to keras's own OpenVINO backend, and its checker.

    python -m keras_ov_einsum.upstream make-patch [--keras-src DIR] [--out F]
    python -m keras_ov_einsum.upstream check [--keras-src DIR] [--patch F]
    python -m keras_ov_einsum.upstream apply --keras-src DIR [--patch F]

``make-patch`` writes a unified diff against keras's layout that adds
``keras/src/backend/openvino/einsum_lowering.py`` (this package's equation,
plan, kernel, lowering, matmul, slice_update and prescale modules merged
into one: a single source of truth for the monkeypatch and the patch), a
keras-style test file, and the calls in ``numpy.py``'s ``einsum``,
``matmul`` and ``multiply`` and in ``core.py``'s ``slice_update``, and
``core.py``'s ``align_operand_types`` comparing OpenVINO types (the
align_types part's fix, in place: the monkeypatch wraps it instead). The
context of every hunk comes from the target keras file itself. ``check``
says whether a patch applies to a keras source tree (by default the
installed keras, whose ``keras/src/...`` layout is the same) and why not.
Everything here uses the standard library only: no ``patch`` binary, no
git, no keras import.
"""

import argparse
import ast
import difflib
import importlib.util
import pathlib
import re
import sys

from .parts import PARTS
from .upstream_test_template import TEST_SOURCE

__all__ = ["PatchError", "apply_patch", "check_patch", "main", "make_patch"]

PACKAGE = pathlib.Path(__file__).resolve().parent
ROOT = PACKAGE.parent
TARGET_KERAS = "3.15.1"
DEFAULT_PATCH = (
    ROOT / "patches" / f"keras-{TARGET_KERAS}-openvino-einsum-lowering.patch"
)
# The modules that make up the lowering, in dependency order: the result
# type, then each upstreamed part's own (parts.py).
SOURCES = tuple(
    dict.fromkeys(
        ["outcome.py"]
        + [
            source
            for part in PARTS
            if part.sources is not None
            for source in part.sources
        ]
    )
)
# A part module's declaration (``PART = Part(...)``, its ``Hook``s) and the
# functions only they name are the monkeypatch's glue: keras calls the
# lowerings itself.
_GLUE_CLASSES = ("Part", "Hook")
BACKEND = "keras/src/backend/openvino"
MODULE = f"{BACKEND}/einsum_lowering.py"
TEST = f"{BACKEND}/einsum_lowering_test.py"
NUMPY = f"{BACKEND}/numpy.py"
CORE = f"{BACKEND}/core.py"
VERSION_FILE = "keras/src/version.py"

IMPORT_ANCHOR = "from keras.src.backend.openvino.core import while_loop\n"
IMPORTS = (
    "from keras.src.backend.openvino.einsum_lowering import lower_einsum\n"
    "from keras.src.backend.openvino.einsum_lowering import (\n"
    "    lower_prescaled_projection,\n"
    ")\n"
    "from keras.src.backend.openvino.einsum_lowering import "
    "lower_transposed_matmul\n"
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
CORE_IMPORTS = (
    "from keras.src.backend.openvino.einsum_lowering import "
    "lower_slice_update\n"
)
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
# The package imports an older opset than keras for older OpenVINOs; inside
# keras the module uses whatever opset the backend's numpy.py uses.
OPSET_IMPORT = re.compile(r"^import openvino\.opset\d+ as ov_opset$", re.M)


class PatchError(RuntimeError):
    """The patch cannot be generated for, or applied to, a keras tree."""


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


def generated_module(opset_import=None):
    """einsum_lowering.py: the package's modules merged into one.

    Module docstrings become comments, relative imports and ``__all__`` go,
    the other imports are gathered at the top (``opset_import`` replacing
    the package's opset import when given). A name defined in two modules
    stops the generator rather than letting one shadow the other.
    """
    imports, sections, defined_in = [], [], {}
    for filename in SOURCES:
        source = (PACKAGE / filename).read_text()
        tree = ast.parse(source)
        lines = source.splitlines(keepends=True)
        docstring = ast.get_docstring(tree, clean=True) or ""
        glue = _glue(tree)
        drop = set()
        for node in tree.body:
            span = range(node.lineno - 1, node.end_lineno)
            if node is tree.body[0] and docstring:
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
        comment += [f"# {line}".rstrip() for line in docstring.splitlines()]
        sections.append("\n".join(comment) + "\n\n\n" + body + "\n")
    names = ",".join(filename[:-3] for filename in SOURCES)
    header = (
        '"""Lower einsums and matmuls with a constant operand to MatMul,\n'
        "write slice_update's whole trailing axes as slabs, and scale\n"
        "projections' inputs by powers of two.\n\n"
        "Generated from keras-ov-einsum's\nkeras_ov_einsum/{"
        + names
        + "}.py\nby `python -m keras_ov_einsum.upstream make-patch`: change "
        "it there and\nregenerate.\n"
        '"""\n\n'
    )
    return header + _import_block(imports) + "\n" + "\n\n".join(sections)


def _glue(tree):
    """The top-level statements of a part module that only the monkeypatch
    uses: its ``Part``/``Hook`` declarations and the functions they name."""
    declarations = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in _GLUE_CLASSES
    ]
    named = {
        name.id
        for node in declarations
        for name in ast.walk(node.value)
        if isinstance(name, ast.Name)
    }
    functions = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in named
    ]
    return declarations + functions


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


def patched_numpy(original):
    """numpy.py with the imports and the three calls added."""
    _expect_once(
        NUMPY,
        original,
        [
            (IMPORT_ANCHOR, "the import of while_loop"),
            (EINSUM_ANCHOR, "the Einsum in einsum()"),
            (MATMUL_DEF, "def matmul(x1, x2)"),
            (MULTIPLY_DEF, "def multiply(x1, x2)"),
        ],
    )
    text = original.replace(IMPORT_ANCHOR, IMPORT_ANCHOR + IMPORTS, 1)
    text = text.replace(EINSUM_ANCHOR, EINSUM_CALL, 1)
    text = _replace_last_line(
        NUMPY, text, MATMUL_DEF, MATMUL_ANCHOR, MATMUL_CALL
    )
    return _replace_last_line(
        NUMPY, text, MULTIPLY_DEF, MULTIPLY_ANCHOR, MULTIPLY_CALL
    )


def patched_core(original):
    """core.py with the import and the call in slice_update() added, and
    align_operand_types() comparing OpenVINO types (the align_types part)."""
    _expect_once(
        CORE,
        original,
        [
            (CORE_IMPORT_ANCHOR, "the import of StatelessScope"),
            (SLICE_UPDATE_DEF, "def slice_update()"),
            (ALIGN_ANCHOR, "align_operand_types()'s two Converts"),
        ],
    )
    text = original.replace(
        CORE_IMPORT_ANCHOR, CORE_IMPORT_ANCHOR + CORE_IMPORTS, 1
    ).replace(ALIGN_ANCHOR, ALIGN_FIX, 1)
    return _replace_last_line(
        CORE, text, SLICE_UPDATE_DEF, SLICE_UPDATE_ANCHOR, SLICE_UPDATE_CALL
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


def make_patch(keras_src):
    """The unified diff for the keras tree under ``keras_src``."""
    keras_src = pathlib.Path(keras_src)
    numpy_path = keras_src / NUMPY
    if not numpy_path.exists():
        raise PatchError(f"no {NUMPY} under {keras_src}")
    original = numpy_path.read_text()
    opset = OPSET_IMPORT.search(original)
    version = keras_version(keras_src)
    target = "an unknown keras version"
    if version != "unknown":
        target = f"keras {version} (git tag v{version})"
    header = (
        "keras-ov-einsum: lower constant-kernel einsums and transposed-"
        "constant\nmatmuls to MatMul, write slice_update's whole trailing "
        "axes as slabs,\nscale projections' inputs by powers of two, and "
        "convert a binary op's\noperands only to another type, in keras's "
        "OpenVINO backend.\n"
        f"Target: {target}, {BACKEND}.\n"
        "Generated by `python -m keras_ov_einsum.upstream make-patch`; "
        "do not edit.\nApply from the root of a keras checkout with "
        "`git apply` or `patch -p1`.\n\n"
    )
    parts = [header]
    parts += _diff(NUMPY, original, patched_numpy(original))
    core = (keras_src / CORE).read_text()
    parts += _diff(CORE, core, patched_core(core))
    parts += _diff(MODULE, None, generated_module(opset and opset.group(0)))
    parts += _diff(TEST, None, TEST_SOURCE)
    return "".join(parts)


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


def apply_patch(patch_text, keras_src, *, write):
    """Apply (or, with ``write=False``, only check) a patch to a keras tree.

    Returns the paths it changes; raises PatchError explaining a failure.
    Nothing is written unless every file applies.
    """
    keras_src = pathlib.Path(keras_src)
    changes = {}
    # New files first: "already exists" is the clearest sign of a tree
    # that was patched before.
    files = sorted(_parse(patch_text), key=lambda entry: not entry[1])
    for path, is_new, hunks in files:
        target = keras_src / path
        if is_new:
            if target.exists():
                raise PatchError(f"{path} already exists (patch applied?)")
            original = []
        else:
            if not target.exists():
                raise PatchError(f"{path} is missing from {keras_src}")
            original = target.read_text().splitlines(keepends=True)
        changes[target] = "".join(_apply_file(path, original, hunks))
    if not changes:
        raise PatchError("the patch has no file changes")
    if write:
        for target, text in changes.items():
            target.write_text(text)
    return sorted(str(target.relative_to(keras_src)) for target in changes)


def check_patch(patch_text, keras_src):
    """(ok, message) for applying ``patch_text`` to ``keras_src``."""
    where = f"keras {keras_version(keras_src)} at {keras_src}"
    try:
        paths = apply_patch(patch_text, keras_src, write=False)
    except PatchError as error:
        return False, f"does not apply to {where}: {error}"
    return True, f"applies cleanly to {where} ({', '.join(paths)})"


# --------------------------------------------------------------------- cli


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_ov_einsum.upstream")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-patch", help="write the upstream patch")
    make.add_argument(
        "--keras-src", help="keras source tree (default: the installed keras)"
    )
    make.add_argument(
        "--out",
        help="default: patches/keras-VERSION-openvino-einsum-lowering.patch",
    )
    for name, text in [
        ("check", "does the patch apply? (exit status 0 or 1)"),
        ("apply", "apply the patch to a keras tree"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--keras-src",
            required=name == "apply",
            help="keras source tree (default: the installed keras)",
        )
        command.add_argument("--patch", default=str(DEFAULT_PATCH))
    args = parser.parse_args(argv)
    try:
        keras_src = pathlib.Path(args.keras_src or installed_keras_root())
        if args.command == "make-patch":
            out = args.out or DEFAULT_PATCH.with_name(
                f"keras-{keras_version(keras_src)}-openvino-einsum-lowering"
                ".patch"
            )
            pathlib.Path(out).write_text(make_patch(keras_src))
            print(f"wrote {out} (against {keras_src})")
            return 0
        patch_text = pathlib.Path(args.patch).read_text()
        if args.command == "check":
            ok, message = check_patch(patch_text, keras_src)
            print(f"{args.patch} {message}")
            return 0 if ok else 1
        paths = apply_patch(patch_text, keras_src, write=True)
        print(f"patched {', '.join(paths)} under {keras_src}")
        return 0
    except (PatchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
