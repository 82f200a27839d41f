"""The parts that change keras-hub's own code as patches to keras-hub, one
per upstreamable part, their checker and the run of each patch's test.

    python -m keras_ov_einsum.upstream keras-hub make-patch
        [--keras-hub-src DIR] [--out-dir DIR]
    python -m keras_ov_einsum.upstream keras-hub check
        [--keras-hub-src DIR] [--patch F ...]
    python -m keras_ov_einsum.upstream keras-hub apply --keras-hub-src DIR
        [--patch F ...]
    python -m keras_ov_einsum.upstream keras-hub test [--patch F ...]

``make-patch`` writes ``patches/keras-hub-0.32.0-NAME.patch`` for each
entry of ``HUB_PATCHES``: its edits of keras-hub's files (anchored
replacements, made against the unpatched file) and the files it adds,
keras-hub modules and keras-hub-style test files kept whole in
``keras_hub_files/`` (hand-written: the parts wrap keras-hub functions,
the patches change them). Paths are ``keras_hub/src/...``, as in a
keras-hub checkout's root and in the wheel. ``test`` copies the installed
keras-hub, applies one patch to the copy and runs that patch's test file
on it with the OpenVINO backend, for each patch.
"""

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from .generator import PATCHES, PatchError, _diff, apply_patches, junit_outcomes

__all__ = [
    "HUB_PATCHES",
    "HubPatch",
    "check_hub_patch",
    "installed_keras_hub_root",
    "keras_hub_version",
    "main",
    "make_hub_patch",
    "patched_copy",
    "run_patch_test",
]

FILES = pathlib.Path(__file__).resolve().parent / "keras_hub_files"
# The keras-hub versions the patches are made for. Every file they change is
# the same in both (tests/data/ holds those files of each).
TARGETS = ("0.32.0", "0.33.0.dev202610250352")
VERSION_FILE = "keras_hub/src/version.py"
CAUSAL_LM = "keras_hub/src/models/causal_lm.py"
BYTE_PAIR_TOKENIZER = "keras_hub/src/tokenizers/byte_pair_tokenizer.py"


def _expect_once(path, text, anchor):
    if text.count(anchor) != 1:
        found = "cannot find" if anchor not in text else "found twice"
        raise PatchError(f"{path}: {found} {anchor.strip()!r}")


def _replace(path, text, anchor, replacement):
    _expect_once(path, text, anchor)
    return text.replace(anchor, replacement, 1)


STEP_MODEL_IMPORT = """\
            from keras_hub.src.utils.openvino_utils import ov_infer
"""
STEP_MODEL_IMPORTS = """\
            from keras_hub.src.utils.openvino_step_model import (
                StepModelGenerateFunction,
            )
            from keras_hub.src.utils.openvino_step_model import use_step_model
            from keras_hub.src.utils.openvino_utils import ov_infer
"""
STEP_MODEL_ANCHOR = """\
            self.generate_function = wrapped_generate_function
        if keras.config.backend() == "torch":
"""
STEP_MODEL_CALL = """\
            self.generate_function = wrapped_generate_function
            # Greedy GPT-2, Llama and Gemma generate with one compiled
            # stateful step model, the prompt and each new token its
            # inferences, as OpenVINO's own LLM pipelines do.
            if use_step_model(self):
                self.generate_function = StepModelGenerateFunction(
                    self, wrapped_generate_function
                )
        if keras.config.backend() == "torch":
"""


def _step_model_causal_lm(text):
    text = _replace(CAUSAL_LM, text, STEP_MODEL_IMPORT, STEP_MODEL_IMPORTS)
    return _replace(CAUSAL_LM, text, STEP_MODEL_ANCHOR, STEP_MODEL_CALL)


TRACKING_IMPORT_ANCHOR = "from keras.src.saving import serialization_lib\n"
TRACKING_IMPORT = (
    "from keras.src.utils.tracking import no_automatic_dependency_tracking\n"
)
SET_VOCABULARY_ANCHOR = """\
    def set_vocabulary_and_merges(self, vocabulary, merges):
"""
SET_VOCABULARY_UNTRACKED = """\
    # Strings and ints only: keras's tracking would inspect every item (the
    # 50,257 tokens and 50,000 merges of GPT-2's, twice).
    @no_automatic_dependency_tracking
    def set_vocabulary_and_merges(self, vocabulary, merges):
"""


def _untracked_vocabulary_tokenizer(text):
    text = _replace(
        BYTE_PAIR_TOKENIZER,
        text,
        TRACKING_IMPORT_ANCHOR,
        TRACKING_IMPORT_ANCHOR + TRACKING_IMPORT,
    )
    return _replace(
        BYTE_PAIR_TOKENIZER,
        text,
        SET_VOCABULARY_ANCHOR,
        SET_VOCABULARY_UNTRACKED,
    )


SHARING_IMPORT = "from keras_hub.src.utils.sharing_utils import {}\n"
TENSOR_UTILS_IMPORT = "from keras_hub.src.utils.tensor_utils import any_equal\n"
CALL_WITH_CACHE_ANCHOR = "    def call_with_cache(\n"
CALL_WITH_CACHE_SHARED = """\
    # Every decoder layer builds the same causal mask (and rotary tables)
    # from one residual stream, one stacked cache and one cache index.
    @sharing_across_layers()
    def call_with_cache(
"""


def _sharing_causal_lm(path):
    def edit(text):
        text = _replace(
            path,
            text,
            TENSOR_UTILS_IMPORT,
            SHARING_IMPORT.format("sharing_across_layers")
            + TENSOR_UTILS_IMPORT,
        )
        return _replace(
            path, text, CALL_WITH_CACHE_ANCHOR, CALL_WITH_CACHE_SHARED
        )

    return edit


def _sharing_mask(path, import_anchor, method, sequence, cache):
    definition = f"    def {method}(\n"

    def edit(text):
        text = _replace(
            path,
            text,
            import_anchor,
            import_anchor
            + SHARING_IMPORT.format("mask_key")
            + SHARING_IMPORT.format("share_across_layers"),
        )
        return _replace(
            path,
            text,
            definition,
            f'    @share_across_layers(mask_key("{sequence}", "{cache}"))\n'
            + definition,
        )

    return edit


ROTARY_EMBEDDING = "keras_hub/src/layers/modeling/rotary_embedding.py"
ROTARY_IMPORT_ANCHOR = "from keras_hub.src.api_export import keras_hub_export\n"
ROTARY_CLASS_ANCHOR = """\
@keras_hub_export("keras_hub.layers.RotaryEmbedding")
"""
ROTARY_KEY = """\
def _cos_sin_key(inputs, start_index, positions):
    # The tables depend on the inputs' rank and feature size, not on their
    # heads: a Llama layer's keys share its queries' tables.
    return len(inputs.shape), inputs.shape[-1], start_index, positions


"""
ROTARY_METHOD_ANCHOR = (
    "    def _compute_cos_sin_embedding(self, inputs, start_index=0, "
    "positions=None):\n"
)


def _sharing_rotary(text):
    path = ROTARY_EMBEDDING
    text = _replace(
        path,
        text,
        ROTARY_IMPORT_ANCHOR,
        ROTARY_IMPORT_ANCHOR + SHARING_IMPORT.format("share_across_layers"),
    )
    text = _replace(
        path, text, ROTARY_CLASS_ANCHOR, ROTARY_KEY + ROTARY_CLASS_ANCHOR
    )
    return _replace(
        path,
        text,
        ROTARY_METHOD_ANCHOR,
        "    @share_across_layers(_cos_sin_key, layer_config=True)\n"
        + ROTARY_METHOD_ANCHOR,
    )


KERAS_UTILS_IMPORT = (
    "from keras_hub.src.utils.keras_utils import clone_initializer\n"
)
SHARED_MASKS_EDITS = (
    tuple(
        (path, _sharing_causal_lm(path))
        for path in (
            "keras_hub/src/models/gpt2/gpt2_causal_lm.py",
            "keras_hub/src/models/llama/llama_causal_lm.py",
            "keras_hub/src/models/gemma/gemma_causal_lm.py",
        )
    )
    + tuple(
        (path, _sharing_mask(path, *arguments))
        for path, arguments in (
            (
                "keras_hub/src/layers/modeling/transformer_decoder.py",
                (
                    KERAS_UTILS_IMPORT,
                    "_compute_self_attention_mask",
                    "decoder_sequence",
                    "self_attention_cache",
                ),
            ),
            (
                "keras_hub/src/models/llama/llama_decoder.py",
                (
                    KERAS_UTILS_IMPORT,
                    "_compute_self_attention_mask",
                    "decoder_sequence",
                    "self_attention_cache",
                ),
            ),
            (
                "keras_hub/src/models/gemma/gemma_decoder_block.py",
                (
                    "from keras_hub.src.models.gemma.rms_normalization import "
                    "RMSNormalization\n",
                    "_compute_attention_mask",
                    "x",
                    "cache",
                ),
            ),
        )
    )
    + ((ROTARY_EMBEDDING, _sharing_rotary),)
)


@dataclasses.dataclass(frozen=True)
class HubPatch:
    """One keras-hub patch.

    ``name``: the patch's (``keras-hub-0.32.0-NAME.patch``). ``parts``: the
    package's parts it gives keras-hub. ``summary``: what it changes.
    ``edits``: ``(keras-hub path, function)`` pairs, each mapping the stock
    file's text to the patched one. ``added``: ``(keras-hub path, file in
    keras_hub_files/)`` pairs; the last is its keras-style test file.
    """

    name: str
    parts: tuple
    summary: str
    edits: tuple
    added: tuple

    @property
    def test_path(self):
        return self.added[-1][0]

    def patch_name(self, version=TARGETS[0]):
        return f"keras-hub-{version}-{self.name}.patch"

    @property
    def patch_path(self):
        return PATCHES / self.patch_name()


HUB_PATCHES = (
    HubPatch(
        name="step_model",
        parts=("stepwise", "layer_caches", "state_caches"),
        summary="Greedy generate() of GPT-2, Llama and Gemma on OpenVINO as "
        "inferences of one\ncompiled stateful step model (the key/value "
        "caches in OpenVINO state);\nthe compiled Loop elsewhere.",
        edits=((CAUSAL_LM, _step_model_causal_lm),),
        added=(
            (
                "keras_hub/src/utils/openvino_step_model.py",
                "openvino_step_model.py",
            ),
            (
                "keras_hub/src/utils/openvino_step_model_test.py",
                "openvino_step_model_test.py",
            ),
        ),
    ),
    HubPatch(
        name="shared_masks",
        parts=("shared_masks",),
        summary="GPT-2's, Llama's and Gemma's call_with_cache build each "
        "decoder layer's causal\nmask and rotary tables once a call, "
        "shared by every layer (every backend).",
        edits=SHARED_MASKS_EDITS,
        added=(
            ("keras_hub/src/utils/sharing_utils.py", "sharing_utils.py"),
            (
                "keras_hub/src/utils/sharing_utils_test.py",
                "sharing_utils_test.py",
            ),
        ),
    ),
    HubPatch(
        name="untracked_vocabulary",
        parts=("untracked_vocabulary",),
        summary="BytePairTokenizer sets its vocabulary and merges without "
        "keras tracking\neach item (every backend).",
        edits=((BYTE_PAIR_TOKENIZER, _untracked_vocabulary_tokenizer),),
        added=(
            (
                "keras_hub/src/tokenizers/byte_pair_tokenizer_tracking_test.py",
                "byte_pair_tokenizer_tracking_test.py",
            ),
        ),
    ),
)


def installed_keras_hub_root():
    """The folder holding the installed ``keras_hub/`` package."""
    spec = importlib.util.find_spec("keras_hub")
    if spec is None or spec.origin is None:
        raise PatchError("keras-hub is not installed")
    return pathlib.Path(spec.origin).parent.parent


def keras_hub_version(root):
    """The ``__version__`` in ``root``'s version file, or "unknown"."""
    version_file = pathlib.Path(root) / VERSION_FILE
    if version_file.exists():
        match = re.search(r'__version__ = "([^"]+)"', version_file.read_text())
        if match:
            return match.group(1)
    return "unknown"


def make_hub_patch(root, patch):
    """``patch``'s unified diff for the keras-hub tree under ``root``."""
    root = pathlib.Path(root)
    position = HUB_PATCHES.index(patch) + 1
    targets = " and ".join(f"keras-hub {version}" for version in TARGETS)
    header = (
        f"keras-ov-einsum's {', '.join(patch.parts)} in keras-hub "
        f"({position} of {len(HUB_PATCHES)}):\n{patch.summary}\n"
        f"Targets: {targets},\nwhose files it changes are the same.\n"
        "Generated by `python -m keras_ov_einsum.upstream keras-hub "
        "make-patch`;\ndo not edit. Apply from the root of a keras-hub "
        "checkout (or of the folder\nholding an installed keras_hub/) with "
        "`git apply` or `patch -p1`; each patch\napplies alone.\n\n"
    )
    parts = [header]
    for path, edit in patch.edits:
        if not (root / path).exists():
            raise PatchError(f"no {path} under {root}")
        original = (root / path).read_text()
        parts += _diff(path, original, edit(original))
    for path, source in patch.added:
        parts += _diff(path, None, (FILES / source).read_text())
    return "".join(parts)


def check_hub_patch(text, root):
    """(ok, message) for applying one patch to the keras-hub tree ``root``."""
    where = f"keras-hub {keras_hub_version(root)} at {root}"
    try:
        paths = apply_patches([text], root, check=True)
    except PatchError as error:
        return False, f"does not apply to {where}: {error}"
    return True, f"applies cleanly to {where} ({', '.join(paths)})"


# ------------------------------------------------------------- test runs

# keras-hub's tests run with its repository's test requirements, which
# include TensorFlow (its TestCase is tf.test.TestCase) and Grain. Where
# either is missing (keras-hub-nightly's stack needs neither), the copy's
# conftest.py gives keras-hub's test_case module stand-ins for the few names
# it reads, after keras-hub itself has been imported without them.
CONFTEST = """\
import importlib.util
import sys
import tempfile
import types

import numpy as np
from absl.testing import absltest

import keras_hub  # noqa: F401  (imported as it is, without the stand-ins)


class _TensorFlowTestCase(absltest.TestCase):
    def assertAllClose(self, a, b, atol=1e-6, rtol=1e-6, msg=None):
        np.testing.assert_allclose(
            a, b, atol=atol, rtol=rtol, err_msg=msg or ""
        )

    def assertAllEqual(self, a, b, msg=None):
        np.testing.assert_array_equal(a, b, err_msg=msg or "")

    def get_temp_dir(self):
        return tempfile.mkdtemp()


_stand_ins = []
for _name in ("grain", "tensorflow"):
    if importlib.util.find_spec(_name) is None:
        _module = types.ModuleType(_name)
        if _name == "tensorflow":
            _module.string = object()
            _module.Tensor = type("Tensor", (), {})
            _module.RaggedTensor = type("RaggedTensor", (), {})
            _module.test = types.SimpleNamespace(TestCase=_TensorFlowTestCase)
        sys.modules[_name] = _module
        _stand_ins.append(_name)
import keras_hub.src.tests.test_case  # noqa: E402,F401

for _name in _stand_ins:
    del sys.modules[_name]
"""
# keras-hub's pytest settings (its pyproject.toml): warnings are errors.
PYTEST_INI = """\
[pytest]
filterwarnings =
    error
    ignore::DeprecationWarning
    ignore::ImportWarning
    ignore::RuntimeWarning
    ignore::PendingDeprecationWarning
    ignore::FutureWarning
    ignore::UserWarning
"""


def patched_copy(destination, patch_texts=(), source=None):
    """A copy of the keras-hub tree ``source`` (the installed one) under
    ``destination`` with ``patch_texts`` applied in order, and the files
    its test run needs; returns ``destination``."""
    destination = pathlib.Path(destination)
    source = pathlib.Path(source or installed_keras_hub_root())
    shutil.copytree(
        source / "keras_hub",
        destination / "keras_hub",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for text in patch_texts:
        apply_patches([text], destination)
    (destination / "conftest.py").write_text(CONFTEST)
    (destination / "pytest.ini").write_text(PYTEST_INI)
    return destination


def run_patch_test(patch, root, *pytest_args, timeout=900):
    """Run ``patch``'s test file in the keras-hub copy ``root`` (patched
    with it) on the OpenVINO backend: ``{test id: "passed" | "failed" |
    "skipped"}`` and pytest's output."""
    report = pathlib.Path(root) / f"{patch.name}.xml"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            patch.test_path,
            *pytest_args,
        ],
        env=dict(
            os.environ,
            KERAS_BACKEND="openvino",
            PYTHONPATH=str(root),
            TF_CPP_MIN_LOG_LEVEL="3",
        ),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
    )
    output = completed.stdout[-4000:] + completed.stderr[-4000:]
    if not report.exists():
        return {}, output
    return junit_outcomes(report), output


# --------------------------------------------------------------------- cli


def _selected(paths):
    """[(HubPatch, patch file)] for ``paths`` (default: every patch)."""
    if not paths:
        return [(patch, patch.patch_path) for patch in HUB_PATCHES]
    by_file = {patch.patch_name(): patch for patch in HUB_PATCHES}
    selected = []
    for path in map(pathlib.Path, paths):
        if path.name not in by_file:
            raise PatchError(f"{path} is none of the keras-hub patches")
        selected.append((by_file[path.name], path))
    return selected


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_ov_einsum.upstream keras-hub"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    default_src = "keras-hub tree (default: the installed keras-hub)"
    make = commands.add_parser("make-patch", help="write every patch")
    make.add_argument("--keras-hub-src", help=default_src)
    make.add_argument(
        "--out-dir", help=f"default: {PATCHES.relative_to(PATCHES.parent)}/"
    )
    for name, text in [
        ("check", "does each patch apply alone? (exit 0 or 1)"),
        ("apply", "apply the patches, in order, to a keras-hub tree"),
        ("test", "each patch's test on a copy patched with it alone"),
    ]:
        command = commands.add_parser(name, help=text)
        if name != "test":
            command.add_argument(
                "--keras-hub-src", required=name == "apply", help=default_src
            )
        command.add_argument(
            "--patch",
            action="append",
            help="a patch file, repeated for several (default: every one)",
        )
    args = parser.parse_args(argv)
    try:
        if args.command == "test":
            return _test(_selected(args.patch))
        root = pathlib.Path(args.keras_hub_src or installed_keras_hub_root())
        if args.command == "make-patch":
            out_dir = pathlib.Path(args.out_dir or PATCHES)
            for patch in HUB_PATCHES:
                path = out_dir / patch.patch_name()
                path.write_text(make_hub_patch(root, patch))
                print(f"wrote {path} (against {root})")
            return 0
        selected = _selected(args.patch)
        if args.command == "check":
            every = True
            for _, path in selected:
                ok, message = check_hub_patch(path.read_text(), root)
                print(f"{path} {message}")
                every = every and ok
            return 0 if every else 1
        for _, path in selected:
            changed = apply_patches([path.read_text()], root)
            print(f"{path}: patched {', '.join(changed)} under {root}")
        return 0
    except (PatchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _test(selected):
    every = True
    for patch, path in selected:
        with tempfile.TemporaryDirectory() as directory:
            root = patched_copy(directory, [path.read_text()])
            outcomes, output = run_patch_test(patch, root)
        counts = {
            outcome: list(outcomes.values()).count(outcome)
            for outcome in ("passed", "failed", "skipped")
        }
        ok = bool(outcomes) and not counts["failed"]
        every = every and ok
        summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        print(f"{path}: {patch.test_path}: {summary or 'no test ran'}")
        if not ok:
            print(output)
    return 0 if every else 1
