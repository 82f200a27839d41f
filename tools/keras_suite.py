"""Run keras's own OpenVINO-backend test files stock and with
``keras_ov_einsum.enable()``, and list the tests whose outcome differs.

    python tools/keras_suite.py [--out DIR] [keras test files ...]

Each side is one pytest run over the installed keras's test files (by
default the ops and the core, attention and normalization layers), in a
fresh process with KERAS_BACKEND=openvino; the fixed side loads a pytest
plugin that calls ``enable()`` before any test. Tests keras marks as
needing a trainable backend are deselected, as keras's own conftest does
on OpenVINO. Prints the counts of each side and every test that fails
with the fix but not without it ("new failures"); exits 1 if there is one.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
from xml.etree import ElementTree

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_FILES = (
    "keras/src/ops/core_test.py",
    "keras/src/ops/nn_test.py",
    "keras/src/ops/numpy_test.py",
    "keras/src/ops/math_test.py",
    "keras/src/layers/core",
    "keras/src/layers/attention",
    "keras/src/layers/normalization",
)
PLUGIN = """
def pytest_configure(config):
    import keras_ov_einsum

    keras_ov_einsum.enable()
"""


def outcomes(files, out_dir, fixed):
    """{test id: passed | failed | skipped} of one pytest run."""
    import keras

    site = pathlib.Path(keras.__file__).resolve().parent.parent
    name = "fixed" if fixed else "stock"
    report = out_dir / f"{name}.xml"
    plugin_dir = out_dir / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "keras_ov_einsum_enable.py").write_text(PLUGIN)
    env = dict(
        os.environ,
        KERAS_BACKEND="openvino",
        PYTHONPATH=os.pathsep.join([str(plugin_dir), str(ROOT)]),
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(out_dir),
        "-m",
        "not requires_trainable_backend",
        f"--junitxml={report}",
        *([] if not fixed else ["-p", "keras_ov_einsum_enable"]),
        *[str(site / path) for path in files],
    ]
    subprocess.run(command, env=env, cwd=out_dir, capture_output=True)
    results = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        results[test_id] = outcome
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python tools/keras_suite.py")
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--out", help="where the JUnit reports go")
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out or tempfile.mkdtemp(prefix="keras_suite"))
    out_dir.mkdir(parents=True, exist_ok=True)
    stock = outcomes(args.files, out_dir, fixed=False)
    fixed = outcomes(args.files, out_dir, fixed=True)
    for name, results in (("stock", stock), ("fixed", fixed)):
        counts = {
            kind: sum(outcome == kind for outcome in results.values())
            for kind in ("passed", "failed", "skipped")
        }
        print(f"{name}: {len(results)} tests, {counts}")
    new = sorted(
        test
        for test, outcome in fixed.items()
        if outcome == "failed" and stock.get(test) != "failed"
    )
    fixed_only = sorted(
        test
        for test, outcome in stock.items()
        if outcome == "failed" and fixed.get(test) == "passed"
    )
    print(f"new failures with the fix: {len(new)}")
    for test in new:
        print(f"  {test}")
    print(f"failing stock, passing with the fix: {len(fixed_only)}")
    for test in fixed_only:
        print(f"  {test}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
