"""The upstream patches, one per part: generated from the package, fresh,
applicable alone and together (to the installed keras and to keras
master), clean under keras's own lint, and working inside patched copies of
keras without ``enable()`` (our graph checks, each part's tests on keras
patched with that part alone, and keras's own tests of what they change on
keras patched with all of them)."""

import ast
import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree

import pytest

from keras_ov_einsum.upstream import generator as upstream

PARTS = {entry.part: entry for entry in upstream.UPSTREAM}
EINSUM = PARTS["einsum"]
# keras master's numpy.py, core.py and version.py (tests/data/.../README.md).
KERAS_MASTER = pathlib.Path(__file__).parent / "data/keras-master-3422977a5e"


def _installed_keras_is_the_target():
    installed = upstream.keras_version(upstream.installed_keras_root())
    assert installed == upstream.TARGET_KERAS, (
        f"the installed keras is {installed}; the patches target keras "
        f"{upstream.TARGET_KERAS}: install that version to compare, or "
        "regenerate the patches for the new one"
    )


def _patch(part):
    return PARTS[part].patch_path.read_text()


def _every_patch():
    return [entry.patch_path.read_text() for entry in upstream.UPSTREAM]


@pytest.mark.parametrize("part", PARTS)
def test_committed_patch_is_fresh(part):
    _installed_keras_is_the_target()
    entry = PARTS[part]
    generated = upstream.make_patch(upstream.installed_keras_root(), entry)
    assert entry.patch_path.read_text() == generated, (
        f"{entry.patch_path.relative_to(upstream.ROOT)} is stale: run "
        "`python -m keras_ov_einsum.upstream make-patch` and commit the result"
    )


def test_no_other_patch_is_committed():
    # A part renamed or dropped leaves its old patch behind otherwise.
    expected = {entry.patch_path.name for entry in upstream.UPSTREAM}
    committed = {
        path.name
        for path in upstream.PATCHES.glob("*.patch")
        if not path.name.startswith("keras-hub-")  # test_upstream_keras_hub
    }
    assert committed == expected


def test_every_upstreamed_part_has_a_patch():
    from keras_ov_einsum.core.registry import PARTS as REGISTRY

    upstreamed = [part.name for part in REGISTRY if part.sources is not None]
    assert sorted(upstreamed) == sorted(PARTS)


def test_check_reports_a_clean_apply_to_the_installed_keras():
    _installed_keras_is_the_target()
    root = upstream.installed_keras_root()
    completed = subprocess.run(
        [sys.executable, "-m", "keras_ov_einsum.upstream", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    clean = f"applies cleanly to keras {upstream.TARGET_KERAS} at {root}"
    lines = completed.stdout.splitlines()
    assert len(lines) == len(PARTS) + 1, completed.stdout
    for entry, line in zip(upstream.UPSTREAM, lines):
        assert line.startswith(str(entry.patch_path)) and clean in line, line
    assert lines[-1].startswith(f"together, in this order: {clean}"), lines


@pytest.mark.parametrize("part", PARTS)
def test_patch_applies_alone_to_keras_master(part):
    ok, message = upstream.check_patch(_patch(part), KERAS_MASTER)
    assert ok, message
    assert "keras 3.16.0" in message


def test_patches_apply_together_to_keras_master():
    ok, message = upstream.check_patches(_every_patch(), KERAS_MASTER)
    assert ok, message


@pytest.fixture(scope="module")
def keras_copy(tmp_path_factory):
    """A pristine copy of the installed keras (the keras/src/... layout)."""
    root = tmp_path_factory.mktemp("keras-src")
    _copy_keras(root)
    return root


def _copy_keras(root):
    shutil.copytree(
        upstream.installed_keras_root() / "keras",
        root / "keras",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # Pins pytest's rootdir and configuration to the copy.
    (root / "pytest.ini").write_text("[pytest]\n")


def _backend_tree(keras_copy, destination):
    """Just the files the patches and the version lookup read."""
    shutil.copytree(
        keras_copy / upstream.BACKEND, destination / upstream.BACKEND
    )
    shutil.copy(
        keras_copy / upstream.VERSION_FILE, destination / upstream.VERSION_FILE
    )
    return destination


def test_check_explains_why_a_patch_does_not_apply(tmp_path, keras_copy):
    tree = _backend_tree(keras_copy, tmp_path)
    numpy_py = tree / upstream.NUMPY
    stock_line = "result = ov_opset.einsum(inputs, subscripts).output(0)"
    numpy_py.write_text(
        numpy_py.read_text().replace(stock_line, stock_line + "  # changed")
    )
    ok, message = upstream.check_patch(_patch("einsum"), tree)
    assert not ok
    assert message.startswith(
        f"does not apply to keras {upstream.TARGET_KERAS} at {tree}: hunk 2 "
        f"of {upstream.NUMPY} does not apply: expected at line"
    ), message
    assert f"'    {stock_line}', found '    {stock_line}  # changed'" in (
        message
    )


def test_check_refuses_a_tree_already_patched(tmp_path, keras_copy):
    tree = _backend_tree(keras_copy, tmp_path)
    patch = _patch("einsum")
    upstream.apply_patch(patch, tree, write=True)
    ok, message = upstream.check_patch(patch, tree)
    assert not ok
    assert f"{EINSUM.module_path} already exists (patch applied?)" in message


def test_make_patch_says_which_anchor_is_missing(tmp_path, keras_copy):
    tree = _backend_tree(keras_copy, tmp_path)
    numpy_py = tree / upstream.NUMPY
    numpy_py.write_text(
        numpy_py.read_text().replace("def matmul(x1, x2):", "def matmul(a, b):")
    )
    with pytest.raises(upstream.PatchError, match=r"cannot find def matmul"):
        upstream.make_patch(tree, PARTS["matmul"])


def _git_apply_check(tree, patches):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    return subprocess.run(
        [git, "apply", "--check", "-v", *map(str, patches)],
        cwd=tree,
        env=dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_git_apply_accepts_each_patch_and_all_in_order(tmp_path, keras_copy):
    # check uses our own applier; the patches must also suit the usual tools.
    tree = _backend_tree(keras_copy, tmp_path / "tree")
    paths = [entry.patch_path for entry in upstream.UPSTREAM]
    for patches in [[path] for path in paths] + [paths]:
        completed = _git_apply_check(tree, patches)
        assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize(
    "part", [part for part, entry in PARTS.items() if entry.module]
)
def test_generated_module_is_the_part_merged(part, keras_copy):
    entry = PARTS[part]
    numpy_source = (keras_copy / upstream.NUMPY).read_text()
    keras_opset = upstream.OPSET_IMPORT.search(numpy_source).group(0)
    module = upstream.generated_module(entry, keras_opset)
    tree = ast.parse(module)
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    } | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    # Every public name of every source module is defined at the top level,
    # but for the part declarations and the rewrites only they call.
    assert entry.sources[0] == "core/outcome.py"
    for filename in entry.sources:
        dotted = filename[: -len(".py")].replace("/", ".")
        source = importlib.import_module(f"keras_ov_einsum.{dotted}")
        glue = upstream.glue_names(filename)
        assert glue.isdisjoint(defined), f"{filename}'s glue is left"
        missing = set(source.__all__) - defined - glue
        assert not missing, f"{sorted(missing)} of {filename} are missing"
        assert f"# --- from keras_ov_einsum/{filename} " in module
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.ImportFrom) and node.level), (
            f"a relative import is left: line {node.lineno}"
        )
        assert not (isinstance(node, ast.Name) and node.id == "__all__")
    # The opset keras's backend uses, once.
    assert upstream.OPSET_IMPORT.findall(module) == [keras_opset]
    # Only this part's modules: the others' sources stay out.
    others = {
        filename
        for other in upstream.UPSTREAM
        if other.module
        for filename in other.sources
    } - set(entry.sources)
    for filename in others:
        assert f"keras_ov_einsum/{filename} " not in module, filename


def test_generator_refuses_a_name_defined_twice(tmp_path, monkeypatch):
    (tmp_path / "one.py").write_text('"""One."""\n\nLIMIT = 1\n')
    (tmp_path / "two.py").write_text('"""Two."""\n\n\ndef LIMIT():\n    pass\n')
    monkeypatch.setattr(upstream, "PACKAGE", tmp_path)
    with pytest.raises(upstream.PatchError, match="'LIMIT' is defined in both"):
        upstream.merge_modules(("one.py", "two.py"), "Both.")


def test_upstream_tests_are_not_collected_here():
    # They are keras's test files, run on patched keras copies below; our
    # own pytest run collects tests/ only.
    pyproject = (upstream.ROOT / "pyproject.toml").read_text()
    assert 'testpaths = ["tests"]' in pyproject
    assert not upstream.UPSTREAM_TESTS.is_relative_to(upstream.ROOT / "tests")
    assert sorted(
        path.name for path in upstream.UPSTREAM_TESTS.glob("*.py")
    ) == (sorted(entry.test for entry in upstream.UPSTREAM))


# keras's own ruff settings (pyproject.toml of keras 3.15.1), so that the
# files the patch adds pass the lint of a keras pull request.
KERAS_RUFF = [
    "--isolated",
    "--line-length=80",
    "--config=lint.select = ['E', 'F', 'I', 'S101']",
    "--config=lint.ignore = ['E722', 'E741', 'E731']",
    "--config=lint.isort.force-single-line = true",
    "--config=lint.isort.known-first-party = ['keras']",
]


@pytest.fixture(scope="module")
def patched_keras(tmp_path_factory):
    """A copy of the installed keras with every part's patch applied, in
    order (keras_copy stays pristine)."""
    root = tmp_path_factory.mktemp("keras-patched")
    _copy_keras(root)
    upstream.apply_patches(_every_patch(), root, write=True)
    return root


def test_patched_files_pass_keras_lint(patched_keras):
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable))
    ruff = ruff or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    files = [upstream.NUMPY, upstream.CORE] + [
        path
        for entry in upstream.UPSTREAM
        for path in (entry.module_path, entry.test_path)
        if path
    ]
    for command in (["check"], ["format", "--check", "--diff"]):
        completed = subprocess.run(
            [ruff, *command, *KERAS_RUFF, *files],
            cwd=patched_keras,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr


def _environment(patched_keras):
    return dict(
        os.environ,
        KERAS_BACKEND="openvino",
        PYTHONPATH=str(patched_keras),
        TF_CPP_MIN_LOG_LEVEL="3",
    )


PATCHED_SCRIPT = """
import sys

import numpy as np
import openvino as ov
import openvino.opset16 as ov_opset

import keras
from keras.src.backend.openvino import einsum_lowering
from keras.src.backend.openvino import numpy as backend_numpy
from keras.src.backend.openvino.core import OpenVINOKerasTensor

copy = sys.argv[1]
assert keras.__file__.startswith(copy), keras.__file__
assert einsum_lowering.__file__.startswith(copy), einsum_lowering.__file__
assert not hasattr(backend_numpy.einsum, "__keras_ov_einsum_original__")


def types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]


def run(model, x):
    # On CPUs with bf16 support the plugin infers in bf16 unless told not to.
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled([x])[0]


rng = np.random.default_rng(0)
# EinsumDense: no Einsum node, numbers equal to numpy.einsum.
for equation, output_shape, input_shape in [
    ("btd,dnh->btnh", (None, 4, 8), (None, None, 16)),
    ("btnh,nhd->btd", (None, 16), (None, None, 4, 8)),
]:
    layer = keras.layers.EinsumDense(equation, output_shape=output_shape)
    layer.build(input_shape)
    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in input_shape], ov.Type.f32
    )
    y = layer(OpenVINOKerasTensor(parameter.output(0)))
    model = ov.Model([y.output], [parameter])
    assert "Einsum" not in types(model), (equation, types(model))
    assert "MatMul" in types(model), (equation, types(model))
    x = rng.standard_normal((2, 3) + input_shape[2:]).astype("float32")
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_allclose(
        run(model, x), np.einsum(equation, x, kernel), rtol=1e-5, atol=1e-5
    )

# Attention einsums (two variable operands) remain Einsum nodes.
parameter = ov_opset.parameter([-1, 5, 2, 4], ov.Type.f32)
q = OpenVINOKerasTensor(parameter.output(0))
scores = keras.ops.einsum("aecd,abcd->acbe", q, q)
weighted = keras.ops.einsum("acbe,aecd->abcd", scores, q)
model = ov.Model([weighted.output], [parameter])
assert types(model).count("Einsum") == 2, types(model)
x = rng.standard_normal((2, 5, 2, 4)).astype("float32")
reference = np.einsum(
    "acbe,aecd->abcd", np.einsum("aecd,abcd->acbe", x, x), x
)
np.testing.assert_allclose(run(model, x), reference, rtol=1e-4, atol=1e-4)

# MultiHeadAttention: its four projections are lowered.
attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
parameter = ov_opset.parameter([-1, 5, 8], ov.Type.f32)
q = OpenVINOKerasTensor(parameter.output(0))
model = ov.Model([attention(q, q).output], [parameter])
assert "Einsum" not in types(model), types(model)
assert types(model).count("MatMul") >= 4, types(model)

# A key/value cache write: one index row per slab, the values numpy's.
cache = ov_opset.parameter([-1, 6, 2, 4], ov.Type.f32)
index = ov_opset.parameter([], ov.Type.i32)
written = keras.ops.slice_update(
    OpenVINOKerasTensor(cache.output(0)),
    [0, OpenVINOKerasTensor(index.output(0)), 0, 0],
    keras.ops.ones((2, 1, 2, 4)),
)
model = ov.Model([written.output], [cache, index])
assert "Mod" not in types(model), types(model)
compiled = ov.Core().compile_model(model, "CPU")
data = rng.standard_normal((2, 6, 2, 4)).astype("float32")
expected = data.copy()
expected[:, 4] = 1
np.testing.assert_array_equal(
    compiled([data, np.array(4, "int32")])[0], expected
)

assert "keras_ov_einsum" not in sys.modules, "the package was imported"
print("patched keras OK")
"""


def test_patched_keras_lowers_without_enable(patched_keras):
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(PATCHED_SCRIPT),
            str(patched_keras),
        ],
        env=_environment(patched_keras),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=patched_keras,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "patched keras OK" in completed.stdout


# The parts' own tests, keras's tests of the layers whose einsums and
# matmuls they lower, and of the ops (slice_update among them) in core.py.
# Trainer tests need keras's repository conftest.py (not shipped) to be
# skipped on OpenVINO, so they are deselected here.
KERAS_TESTS = [entry.test_path for entry in upstream.UPSTREAM] + [
    "keras/src/layers/core/einsum_dense_test.py",
    "keras/src/layers/core/reversible_embedding_test.py",
    "keras/src/layers/attention/multi_head_attention_test.py",
    "keras/src/ops/core_test.py",
]


def _int4_einsum_dense(test_id):
    # int4 EinsumDense called eagerly: the input is a Constant and the
    # unpacked int4 kernel is computed from constants. The lowering once
    # took the input for the kernel, and OpenVINO 2026.4 miscompiled that
    # MatMul; it now declines einsums of two constant expressions.
    return "einsum_dense_test" in test_id and "int4" in test_id


# keras's NumPy op tests of the binary ops that align their operands'
# types (align_operand_types, which the patch fixes), values and result
# dtypes for every dtype pair: 1143 pass on stock keras 3.15.1.
BINARY_OP_TESTS = (
    "add or subtract or multiply or maximum or minimum or matmul or divide "
    "or power or greater or less or equal"
)


def _keras_outcomes(patched_keras, name, *arguments):
    """{test id: "passed" | "failed" | "skipped"} from one pytest run."""
    report = patched_keras / f"{name}.xml"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *arguments,
        ],
        env=_environment(patched_keras),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=patched_keras,
    )
    assert report.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
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


@pytest.fixture(scope="module")
def keras_test_outcomes(patched_keras):
    return _keras_outcomes(
        patched_keras,
        "report",
        "-m",
        "not requires_trainable_backend",
        *KERAS_TESTS,
    )


def test_keras_tests_pass_on_patched_keras(keras_test_outcomes):
    stems = [entry.test[: -len(".py")] for entry in upstream.UPSTREAM]
    ours = [t for t in keras_test_outcomes if any(s in t for s in stems)]
    for stem in stems:
        assert any(stem in t for t in ours), (stem, sorted(ours))
    assert len(ours) >= 14, sorted(keras_test_outcomes)
    assert all(keras_test_outcomes[t] == "passed" for t in ours), {
        t: keras_test_outcomes[t] for t in ours
    }
    failed = sorted(
        test_id
        for test_id, outcome in keras_test_outcomes.items()
        if outcome == "failed"
    )
    assert not failed, f"{len(failed)} keras test(s) fail: {failed}"
    assert len(keras_test_outcomes) > 150, len(keras_test_outcomes)


def test_keras_int4_einsum_dense_tests_pass_on_patched_keras(
    keras_test_outcomes,
):
    int4 = {
        t: o for t, o in keras_test_outcomes.items() if _int4_einsum_dense(t)
    }
    assert int4, "no int4 EinsumDense test ran"
    failed = sorted(t for t, outcome in int4.items() if outcome == "failed")
    assert not failed, f"{len(failed)} of {len(int4)} fail: {failed}"


def test_keras_binary_op_tests_pass_on_patched_keras(patched_keras):
    outcomes = _keras_outcomes(
        patched_keras,
        "binary_ops",
        "keras/src/ops/numpy_test.py",
        "-k",
        BINARY_OP_TESTS,
    )
    failed = sorted(t for t, outcome in outcomes.items() if outcome == "failed")
    assert not failed, f"{len(failed)} keras test(s) fail: {failed[:20]}"
    passed = [t for t, outcome in outcomes.items() if outcome == "passed"]
    assert len(passed) >= 1143, len(passed)


@pytest.mark.parametrize("part", PARTS)
def test_part_tests_pass_on_keras_patched_with_that_part_alone(part, tmp_path):
    # keras's own tests run once, on the copy with every part; each part's
    # small test file runs here on a copy with only that part's patch.
    entry = PARTS[part]
    _copy_keras(tmp_path)
    upstream.apply_patch(_patch(part), tmp_path, write=True)
    for other in upstream.UPSTREAM:
        if other is not entry and other.module:
            assert not (tmp_path / other.module_path).exists()
    outcomes = _keras_outcomes(tmp_path, part, entry.test_path)
    assert outcomes, f"no test ran in {entry.test_path}"
    assert all(outcome == "passed" for outcome in outcomes.values()), outcomes
