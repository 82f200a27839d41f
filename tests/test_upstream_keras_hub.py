"""The keras-hub patches: generated fresh from the installed keras-hub,
each applying alone to keras-hub 0.32.0 and keras-hub-nightly
0.33.0.dev202610250352 (tests/data/ holds the files they change, byte for
byte the wheels'), with our checker and with ``git apply``, clean under
keras-hub's lint; each patch's keras-hub-style tests pass on a copy of the
installed keras-hub patched with that patch alone; the step model, written
by hand, gives the package's tokens."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from keras_ov_einsum.upstream import keras_hub as hub

PATCHES = {patch.name: patch for patch in hub.HUB_PATCHES}
DATA = pathlib.Path(__file__).parent / "data"
TARGET_TREES = {
    version: DATA / f"keras-hub-{version}" for version in hub.TARGETS
}
TESTS = pathlib.Path(__file__).parent


def _installed_target():
    """The installed keras-hub's version, one of the targets (else skip:
    the patches are made for those)."""
    version = hub.keras_hub_version(hub.installed_keras_hub_root())
    if version not in hub.TARGETS:
        pytest.skip(
            f"keras-hub {version} is installed, not one of {hub.TARGETS}"
        )
    return version


def _patch(name):
    return PATCHES[name].patch_path.read_text()


@pytest.mark.parametrize("name", PATCHES)
def test_committed_patch_is_fresh(name):
    _installed_target()
    patch = PATCHES[name]
    generated = hub.make_hub_patch(hub.installed_keras_hub_root(), patch)
    assert patch.patch_path.read_text() == generated, (
        f"{patch.patch_path.name} is stale: run `python -m "
        "keras_ov_einsum.upstream keras-hub make-patch` and commit the result"
    )


def test_no_other_keras_hub_patch_is_committed():
    expected = {patch.patch_path.name for patch in hub.HUB_PATCHES}
    committed = {p.name for p in hub.PATCHES.glob("keras-hub-*.patch")}
    assert committed == expected


def test_data_holds_the_installed_targets_files():
    # The data trees stand for the wheels: the installed one's files match.
    version = _installed_target()
    installed = hub.installed_keras_hub_root()
    tree = TARGET_TREES[version]
    files = [p.relative_to(tree) for p in tree.rglob("*.py")]
    edited = {path for patch in hub.HUB_PATCHES for path, _ in patch.edits}
    assert edited <= {str(path) for path in files}
    for path in files:
        assert (tree / path).read_bytes() == (installed / path).read_bytes()


@pytest.mark.parametrize("version", hub.TARGETS)
@pytest.mark.parametrize("name", PATCHES)
def test_patch_applies_alone_to_each_target(name, version):
    ok, message = hub.check_hub_patch(_patch(name), TARGET_TREES[version])
    assert ok, message
    assert f"keras-hub {version}" in message


def test_git_apply_accepts_each_patch_alone(tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    for version, tree in TARGET_TREES.items():
        copy = tmp_path / version
        shutil.copytree(tree, copy)
        for patch in hub.HUB_PATCHES:
            completed = subprocess.run(
                [git, "apply", "--check", "-v", str(patch.patch_path)],
                cwd=copy,
                env=dict(os.environ, GIT_CEILING_DIRECTORIES=str(tmp_path)),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert completed.returncode == 0, (version, completed.stderr)


def test_check_reports_each_patch_applying_to_the_installed_keras_hub():
    version = _installed_target()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_ov_einsum.upstream",
            "keras-hub",
            "check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == len(PATCHES), completed.stdout
    for patch, line in zip(hub.HUB_PATCHES, lines):
        assert line.startswith(str(patch.patch_path)), line
        assert f"applies cleanly to keras-hub {version}" in line, line


def test_check_explains_why_a_patch_does_not_apply(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(TARGET_TREES[hub.TARGETS[0]], tree)
    causal_lm = tree / hub.CAUSAL_LM
    stock = (
        "            from keras_hub.src.utils.openvino_utils import ov_infer"
    )
    causal_lm.write_text(causal_lm.read_text().replace(stock, stock + "  #"))
    ok, message = hub.check_hub_patch(_patch("step_model"), tree)
    assert not ok
    # git apply's own reason: the file and the line its hunk expected.
    assert f"patch failed: {hub.CAUSAL_LM}:" in message, message
    with pytest.raises(hub.PatchError, match="cannot find"):
        hub.make_hub_patch(tree, PATCHES["step_model"])


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    """{patch name: a copy of the installed keras-hub patched with that
    patch alone}."""
    _installed_target()
    return {
        name: hub.patched_copy(tmp_path_factory.mktemp(name), [_patch(name)])
        for name in PATCHES
    }


# keras-hub's own ruff settings (its pyproject.toml).
KERAS_HUB_RUFF = [
    "--isolated",
    "--line-length=80",
    "--config=lint.select = ['E', 'F', 'I']",
    "--config=lint.ignore = ['E741']",
    "--config=lint.isort.force-single-line = true",
    "--config=lint.isort.known-first-party = ['keras_hub']",
]


def test_patched_files_pass_keras_hub_lint(patched):
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable))
    ruff = ruff or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for name, root in patched.items():
        patch = PATCHES[name]
        files = [path for path, _ in patch.edits + patch.added]
        for command in (["check"], ["format", "--check", "--diff"]):
            completed = subprocess.run(
                [ruff, *command, *KERAS_HUB_RUFF, *files],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert completed.returncode == 0, (
                name,
                completed.stdout + completed.stderr,
            )


@pytest.mark.parametrize("name", PATCHES)
def test_patch_tests_pass_on_keras_hub_patched_with_it_alone(name, patched):
    root = patched[name]
    for other in hub.HUB_PATCHES:
        if other.name != name:
            for path, _ in other.added:
                assert not (root / path).exists(), path
    outcomes, output = hub.run_patch_test(PATCHES[name], root)
    ran = {t: o for t, o in outcomes.items() if not t.endswith("test_session")}
    assert ran, output
    assert all(outcome == "passed" for outcome in ran.values()), (ran, output)


# greedy tokens of causal_lms' tiny GPT-2, Llama and Gemma (float32), and
# GPT-2's with stop tokens, and the generate function that made them: the
# package's (mode "package", every default part on) or the patched
# keras-hub's (mode "patched", the package never imported).
TOKENS_SCRIPT = """
import json
import sys

import numpy as np

import causal_lms

mode = sys.argv[1]
if mode == "package":
    import keras_ov_einsum

    keras_ov_einsum.enable()
results = {}
for family in causal_lms.FAMILIES:
    model = causal_lms.causal_lm(family)
    plain = model.generate(causal_lms.prompt(), stop_token_ids=None)
    tokens = np.asarray(plain["token_ids"])
    results[family] = {
        "plain": tokens.tolist(),
        "function": type(model.generate_function).__name__,
    }
    if family == "gpt2":
        stop_token_ids = [int(tokens[0, 6]), int(tokens[1, 8])]
        stopped = model.generate(
            causal_lms.prompt(), stop_token_ids=stop_token_ids
        )
        results[family]["stop"] = np.asarray(stopped["token_ids"]).tolist()
        results[family]["stop_mask"] = np.asarray(
            stopped["padding_mask"]
        ).tolist()
if mode == "patched":
    assert "keras_ov_einsum" not in sys.modules
    import keras_hub

    results["keras_hub"] = keras_hub.__file__
print(json.dumps(results))
"""


def test_step_model_gives_the_packages_tokens(patched):
    """The hand-written step model against the package's parts it stands
    for (stepwise, layer_caches, state_caches): the same tokens."""
    root = patched["step_model"]
    runs = {}
    for mode, path, cwd in [
        ("patched", root, root),
        ("package", hub.PATCHES.parent, hub.PATCHES.parent),
    ]:
        runs[mode] = subprocess.Popen(
            [sys.executable, "-c", TOKENS_SCRIPT, mode],
            env=dict(
                os.environ,
                KERAS_BACKEND="openvino",
                PYTHONPATH=os.pathsep.join([str(path), str(TESTS)]),
                TF_CPP_MIN_LOG_LEVEL="3",
            ),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for mode, process in runs.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, (mode, stderr[-3000:])
        results[mode] = json.loads(stdout.strip().splitlines()[-1])
    patched_results, package = results["patched"], results["package"]
    assert patched_results.pop("keras_hub").startswith(str(root))
    for family, result in patched_results.items():
        assert result.pop("function") == "StepModelGenerateFunction"
        assert package[family].pop("function") == "_StepwiseGenerate"
        assert result == package[family], family
