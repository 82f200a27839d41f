"""The harness's warm rows (--cache warm): a second process with each
side's compiled-model cache, filled by a run not recorded. Timings are
never asserted."""

import json

from harness_runs import compare, configuration, configurations

from benchmarks import cli, environments, runner, worker
from installed import needs_harness

pytestmark = needs_harness

CURRENT = environments.current_openvino()


def test_warm_rows_are_the_ones_with_a_cache(monkeypatch, tmp_path):
    configs = configurations(
        monkeypatch,
        tmp_path,
        "--backends",
        "openvino,openvino-genai,jax",
        "--fix",
        "off,on",
        "--cache",
        "cold,warm",
    )
    labels = [c.label for c in configs]
    assert labels == [
        f"openvino {CURRENT} stock",
        f"openvino {CURRENT} fix",
        f"openvino-genai {CURRENT} f32 hint",
        "jax",
        # Neither stock nor another Keras backend has a compiled cache.
        f"openvino {CURRENT} fix, warm cache",
        f"openvino-genai {CURRENT} f32 hint, warm cache",
    ]
    assert [c.warm for c in configs] == [False] * 4 + [True] * 2


def test_compare_rejects_another_cache(capsys):
    try:
        cli.main(["compare", "--model", "gpt2_tiny", "--cache", "hot"])
    except SystemExit as exit_info:
        assert exit_info.code == 2
    else:
        raise AssertionError("--cache hot was taken")
    assert "--cache hot: use cold and/or warm" in capsys.readouterr().err


def test_each_warm_row_gets_its_own_folder_filled_once(tmp_path):
    caches = runner._Caches()
    keras = configuration("openvino", warm=True)
    genai = configuration("openvino-genai", warm=True)
    cold = configuration("openvino", warm=False)
    assert caches.folder(cold) is None and not caches.to_fill(cold)
    folders = {caches.folder(keras), caches.folder(genai)}
    assert len(folders) == 2
    assert caches.to_fill(keras) and not caches.to_fill(keras)
    assert caches.to_fill(genai)
    root = caches.folder(keras).parent
    assert root.is_dir()
    caches.remove()
    assert not root.exists()

    keras_command, _ = runner._keras_command(
        "python", "preset", keras, 10, caches.folder(keras)
    )
    assert keras_command[keras_command.index("--compiled-cache") + 1]
    exported = {"ir": "ir", "prompt_ids": [1, 2]}
    native_command, _ = runner._native_command(
        "python", exported, genai, 10, "folder"
    )
    assert native_command[native_command.index("--cache-dir") + 1] == "folder"
    for command in (
        runner._keras_command("python", "preset", cold, 10)[0],
        runner._native_command("python", exported, genai, 10)[0],
    ):
        assert "--compiled-cache" not in command
        assert "--cache-dir" not in command


def test_the_keras_worker_refuses_a_cache_for_stock(tmp_path):
    try:
        worker.main(
            [
                "--preset",
                "p",
                "--compiled-cache",
                str(tmp_path),
                "--result",
                str(tmp_path / "r.json"),
            ]
        )
    except SystemExit as exit_info:
        assert "stock has none" in str(exit_info.code)
    else:
        raise AssertionError("stock ran with a compiled cache")


def test_a_warm_row_imports_what_its_filling_run_stored(tmp_path):
    """The measured run's step model came from the cache, and the report
    pairs the warm Keras row with the warm genai row."""
    completed = compare(
        tmp_path,
        "--backends",
        "openvino,openvino-genai",
        "--fix",
        "on",
        "--cache",
        "warm",
        "--new-tokens",
        "3",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "filling its compiled-model cache" in completed.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    keras_run, genai_run = results["runs"]
    assert keras_run["ok"], keras_run["error"]
    assert genai_run["ok"], genai_run["error"]
    (reason,) = keras_run["decisions"]["compiled_cache"]
    assert reason.startswith("imported entry")
    assert keras_run["generated_ids"] == genai_run["generated_ids"]
    text = (tmp_path / "report.md").read_text()
    assert "warm cache: a second process" in text
    native = text.split("### Keras vs native OpenVINO")[1].split("###")[0]
    assert f"| {keras_run['label']} | {genai_run['label']} |" in native
