"""The lowering as a patch to keras's own OpenVINO backend, and its checker.

    python -m keras_ov_einsum.upstream make-patch [--keras-src DIR] [--out F]
    python -m keras_ov_einsum.upstream check [--keras-src DIR] [--patch F]
    python -m keras_ov_einsum.upstream apply --keras-src DIR [--patch F]

``make-patch`` writes a unified diff against keras's layout that adds
``keras/src/backend/openvino/einsum_lowering.py`` (generated from this
package's equation, plan, kernel, lowering and matmul modules: one source of
truth), a keras-style test file, and the calls in ``numpy.py``'s ``einsum``
and ``matmul``. ``check`` says whether a patch applies to a keras source tree
(by default the installed keras, whose ``keras/src/...`` layout is the same)
and why not. Neither needs anything beyond the standard library.
"""

import argparse
import ast
import difflib
import pathlib
import re
import sys

__all__ = ["make_patch", "check_patch", "apply_patch", "main"]

PACKAGE = pathlib.Path(__file__).resolve().parent
ROOT = PACKAGE.parent
TARGET_KERAS = "3.15.1"
DEFAULT_PATCH = (
    ROOT / "patches" / f"keras-{TARGET_KERAS}-openvino-einsum-lowering.patch"
)
# The modules that make up the lowering, in dependency order.
SOURCES = ("equation.py", "plan.py", "kernel.py", "lowering.py", "matmul.py")
BACKEND = "keras/src/backend/openvino"
MODULE = f"{BACKEND}/einsum_lowering.py"
TEST = f"{BACKEND}/einsum_lowering_test.py"
NUMPY = f"{BACKEND}/numpy.py"

IMPORT_ANCHOR = "from keras.src.backend.openvino.core import while_loop\n"
IMPORTS = (
    "from keras.src.backend.openvino.einsum_lowering import lower_einsum\n"
    "from keras.src.backend.openvino.einsum_lowering import (\n"
    "    lower_transposed_matmul,\n"
    ")\n"
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


class PatchError(RuntimeError):
    """The patch cannot be generated for, or applied to, a keras tree."""


def installed_keras_root():
    """The folder holding the installed ``keras/`` package."""
    import importlib.util

    spec = importlib.util.find_spec("keras")
    if spec is None or spec.origin is None:
        raise PatchError("keras is not installed")
    return pathlib.Path(spec.origin).parent.parent


# ---------------------------------------------------------------- generate


def generated_module():
    """einsum_lowering.py: the package's modules, merged into one."""
    imports, bodies, names = [], [], {}
    for filename in SOURCES:
        source = (PACKAGE / filename).read_text()
        tree = ast.parse(source)
        lines = source.splitlines(keepends=True)
        drop = set()
        docstring = ast.get_docstring(tree)
        for node in tree.body:
            span = range(node.lineno - 1, node.end_lineno)
            if (
                isinstance(node, ast.Expr)
                and node is tree.body[0]
                and docstring
            ):
                drop.update(span)  # the module docstring becomes a comment
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                drop.update(span)
                if not (isinstance(node, ast.ImportFrom) and node.level):
                    statement = "".join(lines[i] for i in span)
                    if statement not in imports:
                        imports.append(statement)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in node.targets
            ):
                drop.update(span)
            else:
                for name in _defined_names(node):
                    if name in names:
                        raise PatchError(
                            f"{name!r} is defined in both {names[name]} and "
                            f"{filename}: rename one before generating"
                        )
                    names[name] = filename
        body = "".join(
            line for i, line in enumerate(lines) if i not in drop
        ).strip("\n")
        comment = "\n".join(
            f"# {line}".rstrip() for line in (docstring or "").splitlines()
        )
        bodies.append(
            f"# --- from keras_ov_einsum/{filename} "
            + "-" * (51 - len(filename))
            + f"\n{comment}\n\n{body}\n"
        )
    header = (
        '"""Lower einsums and matmuls with a constant operand to MatMul.\n\n'
        "Generated from keras-ov-einsum's\nkeras_ov_einsum/{"
        + ",".join(name[:-3] for name in SOURCES)
        + "}.py\nby `python -m keras_ov_einsum.upstream make-patch`: "
        "edit it there.\n"
        '"""\n\n'
    )
    stdlib, third_party = [], []
    for statement in imports:
        module = statement.split()[1].split(".")[0]
        (stdlib if module in sys.stdlib_module_names else third_party).append(
            statement
        )
    return (
        header
        + "".join(sorted(stdlib))
        + "\n"
        + "".join(sorted(third_party))
        + "\n\n"
        + "\n\n".join(bodies)
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


def patched_numpy(original):
    """numpy.py with the imports and the two calls added."""
    text = original
    for anchor, what in [
        (IMPORT_ANCHOR, "the import of while_loop"),
        (EINSUM_ANCHOR, "the Einsum in einsum()"),
        (MATMUL_DEF, "def matmul(x1, x2)"),
    ]:
        if anchor not in text:
            raise PatchError(f"{NUMPY}: cannot find {what}: {anchor.strip()!r}")
    text = text.replace(IMPORT_ANCHOR, IMPORT_ANCHOR + IMPORTS, 1)
    text = text.replace(EINSUM_ANCHOR, EINSUM_CALL, 1)
    start = text.index(MATMUL_DEF)
    end = text.find("\ndef ", start + 1)
    body = text[start:end]
    if MATMUL_ANCHOR not in body:
        raise PatchError(f"{NUMPY}: matmul() does not end as expected")
    return (
        text[:start] + body.replace(MATMUL_ANCHOR, MATMUL_CALL, 1) + text[end:]
    )


def make_patch(keras_src):
    """The unified diff for the keras tree under ``keras_src``."""
    keras_src = pathlib.Path(keras_src)
    numpy_path = keras_src / NUMPY
    if not numpy_path.exists():
        raise PatchError(f"no {NUMPY} under {keras_src}")
    original = numpy_path.read_text()
    version = _keras_version(keras_src)
    header = (
        "keras-ov-einsum: lower constant-kernel einsums and\n"
        "transposed-constant matmuls to MatMul in keras's OpenVINO backend.\n"
        f"Target: keras {version} ({BACKEND}). Generated by\n"
        f"`python -m keras_ov_einsum.upstream make-patch`; do not edit.\n\n"
    )
    parts = [header]
    parts += _diff(NUMPY, original, patched_numpy(original))
    parts += _diff(MODULE, None, generated_module())
    parts += _diff(TEST, None, UPSTREAM_TEST)
    return "".join(parts)


def _diff(path, old, new):
    old_lines = [] if old is None else old.splitlines(keepends=True)
    return list(
        difflib.unified_diff(
            old_lines,
            new.splitlines(keepends=True),
            fromfile="/dev/null" if old is None else f"a/{path}",
            tofile=f"b/{path}",
        )
    )


def _keras_version(keras_src):
    version_file = keras_src / "keras/src/version.py"
    if version_file.exists():
        match = re.search(r'__version__ = "([^"]+)"', version_file.read_text())
        if match:
            return match.group(1)
    return "unknown"


# ------------------------------------------------------------------- apply


def _parse(patch_text):
    """[(path, is_new, [(old_start, [lines with ' '/'-'/'+' prefix])])]."""
    files, lines, index = [], patch_text.splitlines(keepends=True), 0
    while index < len(lines):
        if lines[index].startswith("--- ") and index + 1 < len(lines):
            old = lines[index][4:].strip()
            new = lines[index + 1][4:].strip()
            path = new[2:] if new.startswith("b/") else new
            hunks, index = [], index + 2
            while index < len(lines) and lines[index].startswith("@@"):
                match = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)", lines[index])
                old_start = int(match.group(1))
                body, index = [], index + 1
                while index < len(lines) and lines[index][:1] in (
                    " ",
                    "-",
                    "+",
                ):
                    if (
                        lines[index].startswith("--- ")
                        and index + 1 < len(lines)
                        and lines[index + 1].startswith("+++ ")
                    ):
                        break
                    body.append(lines[index])
                    index += 1
                hunks.append((old_start, body))
            files.append((path, old == "/dev/null", hunks))
        else:
            index += 1
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
                f"{line}: {want!r}, found {found!r}"
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
    return old_start, "", "the same lines elsewhere than expected"


def _find(lines, block, near, start):
    """Where ``block`` occurs in ``lines`` at or after ``start``, nearest
    ``near`` (as patch does, with offsets but no fuzz)."""
    candidates = [
        i
        for i in range(start, len(lines) - len(block) + 1)
        if lines[i : i + len(block)] == block
    ]
    return min(candidates, key=lambda i: abs(i - near)) if candidates else None


def apply_patch(patch_text, keras_src, *, write):
    """Apply (or, with ``write=False``, only check) a patch to a keras tree.

    Returns the paths it changes; raises PatchError explaining a failure.
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
    version = _keras_version(pathlib.Path(keras_src))
    try:
        paths = apply_patch(patch_text, keras_src, write=False)
    except PatchError as error:
        return (
            False,
            f"does not apply to keras {version} at {keras_src}: {error}",
        )
    return True, (
        f"applies cleanly to keras {version} at {keras_src} "
        f"({', '.join(paths)})"
    )


# --------------------------------------------------------------------- cli


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_ov_einsum.upstream")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-patch", help="write the upstream patch")
    make.add_argument(
        "--keras-src", help="keras source tree (default: the installed keras)"
    )
    make.add_argument("--out", default=str(DEFAULT_PATCH))
    for name, text in [
        ("check", "does the patch apply?"),
        ("apply", "apply the patch to a keras tree"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("--keras-src")
        command.add_argument("--patch", default=str(DEFAULT_PATCH))
    args = parser.parse_args(argv)
    keras_src = args.keras_src or installed_keras_root()
    try:
        if args.command == "make-patch":
            pathlib.Path(args.out).write_text(make_patch(keras_src))
            print(f"wrote {args.out} (against {keras_src})")
            return 0
        patch_text = pathlib.Path(args.patch).read_text()
        if args.command == "check":
            ok, message = check_patch(patch_text, keras_src)
            print(f"{args.patch} {message}")
            return 0 if ok else 1
        paths = apply_patch(patch_text, keras_src, write=True)
        print(f"patched {', '.join(paths)} under {keras_src}")
        return 0
    except PatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


UPSTREAM_TEST = """\
import numpy as np
import openvino as ov
import openvino.opset16 as ov_opset
from absl.testing import parameterized

from keras.src import backend
from keras.src import layers
from keras.src import ops
from keras.src import testing
from keras.src.backend.openvino.core import OpenVINOKerasTensor


def _graph(equation, input_shape, kernel):
    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in input_shape], ov.Type.f32
    )
    x = OpenVINOKerasTensor(parameter.output(0))
    y = ops.einsum(equation, x, backend.Variable(kernel))
    return ov.Model([y.output], [parameter])


def _run(model, *inputs):
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled(list(inputs))[0]


def _types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]


class EinsumLoweringTest(testing.TestCase):
    @parameterized.named_parameters(
        ("projection", "btd,dnh->btnh", (None, None, 8), (8, 2, 4)),
        ("output_projection", "btnh,nhd->btd", (None, None, 2, 4), (2, 4, 8)),
        ("dense", "abc,cd->abd", (None, None, 8), (8, 6)),
        ("transpose_b", "bd,nd->bn", (None, 8), (6, 8)),
        ("interleaved", "th,ehi->eti", (None, 8), (3, 8, 4)),
        ("batched", "etm,emh->eth", (3, None, 8), (3, 8, 4)),
        ("ellipsis", "...d,dn->...n", (None, None, 8), (8, 4)),
    )
    def test_constant_kernel_becomes_matmul(
        self, equation, input_shape, kernel_shape
    ):
        rng = np.random.default_rng(0)
        kernel = rng.standard_normal(kernel_shape).astype("float32")
        model = _graph(equation, input_shape, kernel)
        self.assertNotIn("Einsum", _types(model))
        self.assertIn("MatMul", _types(model))
        concrete = [2 if size is None else size for size in input_shape]
        x = rng.standard_normal(concrete).astype("float32")
        self.assertAllClose(
            _run(model, x), np.einsum(equation, x, kernel), atol=1e-5
        )

    def test_two_variable_operands_stay_einsum(self):
        parameter = ov_opset.parameter([-1, 4, 8], ov.Type.f32)
        x = OpenVINOKerasTensor(parameter.output(0))
        y = ops.einsum("bqd,bkd->bqk", x, x)
        model = ov.Model([y.output], [parameter])
        self.assertIn("Einsum", _types(model))

    def test_multi_head_attention(self):
        layer = layers.MultiHeadAttention(num_heads=2, key_dim=4)
        parameter = ov_opset.parameter([-1, 5, 8], ov.Type.f32)
        x = OpenVINOKerasTensor(parameter.output(0))
        y = layer(x, x)
        model = ov.Model([y.output], [parameter])
        # The four projections are MatMuls (the attention itself is a
        # ScaledDotProductAttention op).
        self.assertNotIn("Einsum", _types(model))
        inputs = np.random.default_rng(0).standard_normal((2, 5, 8))
        inputs = inputs.astype("float32")
        self.assertAllClose(
            _run(model, inputs), layer(inputs, inputs), atol=1e-5
        )

    def test_tied_embedding_logits_read_the_table(self):
        layer = layers.ReversibleEmbedding(20, 8)
        layer.build((None, None))
        parameter = ov_opset.parameter([-1, -1, 8], ov.Type.f32)
        logits = layer(OpenVINOKerasTensor(parameter.output(0)), reverse=True)
        model = ov.Model([logits.output], [parameter])
        self.assertNotIn("Transpose", _types(model))
        hidden = np.random.default_rng(0).standard_normal((2, 3, 8))
        hidden = hidden.astype("float32")
        table = ops.convert_to_numpy(layer.embeddings)
        self.assertAllClose(_run(model, hidden), hidden @ table.T, atol=1e-5)
"""


if __name__ == "__main__":
    sys.exit(main())
