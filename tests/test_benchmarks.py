"""The benchmark harness: end to end on a tiny model, the results schema,
failure records, report rendering and the diff. Timings are never asserted."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from harness_runs import compare as _compare

from benchmarks import (
    bandwidth,
    cli,
    diff,
    environments,
    models,
    native,
    native_step,
    passes,
    report,
    runner,
    step,
)
from installed import needs_harness

pytestmark = needs_harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECORD_FIELDS = {
    "backend",
    "fix",
    "model",
    "openvino_version",
    "repeat",
    "ok",
    "error",
    "load_mb",
    "compile_mb",
    "peak_rss_mb",
    "peak_swap_mb",
    "growth_mb",
    "peak_anon_mb",
    "peak_file_mb",
    "anon_growth_mb",
    "first_s",
    "second_s",
    "new_tokens",
    "tokens_per_s",
    "stages",
    "timeline",
}


def _check_anon_and_file(run):
    """RSS's two parts: at each stage they add up to it; their peaks,
    which need not fall together, to at least the RSS peak."""
    for stage in run["stages"]:
        assert stage["anon_mb"] + stage["file_mb"] == pytest.approx(
            stage["rss_mb"], abs=0.2
        )
    # each rounded to 0.1 MB on its own
    assert run["peak_anon_mb"] + run["peak_file_mb"] >= run["peak_rss_mb"] - 0.2
    imported = run["stages"][1]["anon_mb"]
    assert run["anon_growth_mb"] == pytest.approx(
        run["peak_anon_mb"] - imported, abs=0.2
    )
    assert run["anon_growth_mb"] > 0


@pytest.fixture(scope="module")
def tiny_run(presets, tmp_path_factory):
    """JAX, and OpenVINO with and without the fix."""
    out = tmp_path_factory.mktemp("run")
    completed = _compare(
        out, "--backends", "jax,openvino", "--fix", "both", "--repeats", "1"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out, completed.stdout


def test_end_to_end_writes_results_report_and_charts(tiny_run):
    out, stdout = tiny_run
    assert "[3/3] gpt2_tiny openvino" in stdout  # progress is shown
    results = json.loads((out / "results.json").read_text())
    assert {"cpu", "cores", "ram_gb"} <= set(results["machine"])
    assert results["packages"]["openvino"] == environments.current_openvino()
    (environment,) = results["environments"].values()
    assert environment["packages"]["keras"] == results["packages"]["keras"]
    assert results["commit"]
    labels = [run["label"] for run in results["runs"]]
    current = environments.current_openvino()
    assert labels == [
        "jax",
        f"openvino {current} stock",
        f"openvino {current} fix",
    ]
    for run in results["runs"]:
        assert run["ok"], run["error"]
        assert RECORD_FIELDS <= set(run)
        assert [stage["stage"] for stage in run["stages"]] == [0, 1, 2, 3, 4, 5]
        # The start token and "Hello" (one token, as for GPT-2's own
        # tokenizer) are the prompt; generate() fills the rest.
        assert run["new_tokens"] == 10 - 2
        assert run["tokens_per_s"] == pytest.approx(
            run["new_tokens"] / run["second_s"], rel=1e-2
        )
        assert len(run["timeline"]) > 5  # the 20 ms sampler ran
        # The sampler's peak covers every stage; peak growth includes load.
        stage_rss = max(stage["rss_mb"] for stage in run["stages"])
        assert run["peak_rss_mb"] >= stage_rss
        assert run["growth_mb"] >= run["load_mb"]
        _check_anon_and_file(run)
        assert run["warmed_s"] >= 0  # the preset was read before the run
    jax, stock, fixed = results["runs"]
    for run in (stock, fixed):
        # The first call's three parts add up to it.
        parts = ("split_trace_s", "split_compile_s", "split_run_s")
        assert sum(run[part] for part in parts) == pytest.approx(
            run["first_s"], abs=0.01
        )
        assert all(run[part] > 0 for part in parts)
    assert "split_trace_s" not in jax
    # Same saved weights, greedy sampling: the same text everywhere.
    assert jax["first_text"] == stock["first_text"] == fixed["first_text"]
    assert fixed["decisions"]["lowered"] > 0
    assert stock["graph"]["Einsum"] == fixed["graph"]["Einsum"] == 0
    report_text = (out / "report.md").read_text()
    assert "### openvino" in report_text and "vs stock" in report_text
    assert "| files read s |" in report_text
    assert "### OpenVINO's first call, split" in report_text
    for chart in ("peak_rss.png", "tokens_per_s.png", "memory_timeline.png"):
        assert (out / chart).stat().st_size > 1000


def test_each_part_of_the_fix_and_each_weight_format_on_its_own(
    presets, tmp_path
):
    """--fix einsum / matmul / slice_update turn on one part; --dtype loads
    the preset under another policy."""
    completed = _compare(
        tmp_path,
        "--backends",
        "openvino",
        "--fix",
        "einsum,matmul,slice_update",
        "--dtype",
        "float32,bfloat16",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    current = environments.current_openvino()
    assert [run["label"] for run in runs] == [
        f"openvino {current} fix (einsum only)",
        f"openvino {current} fix (matmul only)",
        f"openvino {current} fix (slice_update only)",
        f"openvino {current} fix (einsum only), bfloat16",
        f"openvino {current} fix (matmul only), bfloat16",
        f"openvino {current} fix (slice_update only), bfloat16",
    ]
    assert all(run["ok"] for run in runs), [run["error"] for run in runs]
    einsum_only, matmul_only, writes_only, einsum_bf16, matmul_bf16, _ = runs
    assert einsum_only["decisions"]["parts"] == {
        "einsum": True,
        "matmul": False,
        "shared_masks": False,
        "slice_update": False,
        "prescale": False,
        "align_types": False,
        "attention": False,
        "layer_norm": False,
        "int8": False,
        "int8_layers": False,
        "dynamic_quantization": False,
        "int4": False,
        "compiled_cache": False,
        "preset_load": False,
        "mapped_weights": False,
        "saving_skipsets": False,
        "untracked_vocabulary": False,
        "quantization_configs": False,
        "policy_lookups": False,
        "stepwise": False,
        "layer_caches": False,
        "state_caches": False,
        "half_weights": False,
    }
    # 2 layers x 4 EinsumDense, in the prompt graph and the loop body; the
    # tied-embedding logits once in each.
    assert einsum_only["decisions"]["lowered"] == 16
    assert matmul_only["decisions"]["lowered"] == 2
    assert matmul_bf16["decisions"]["lowered"] == 2
    # The key and value cache writes (2 layers, prompt and step) and the
    # sampler's token write.
    assert writes_only["decisions"]["lowered"] == 9
    assert einsum_only["stock_label"] == f"openvino {current} stock"
    assert einsum_bf16["stock_label"] == f"openvino {current} stock, bfloat16"
    assert einsum_bf16["weight_mb"] == pytest.approx(
        einsum_only["weight_mb"] / 2, rel=0.02
    )


def test_the_int8_part_on_an_int8_model(presets, tmp_path):
    """--fix int8: every part and the opt-in int8 part; the quantized model's
    compiled constants shrink and the text stays stock's."""
    completed = _compare(
        tmp_path,
        "--backends",
        "openvino",
        "--fix",
        "off,on,int8",
        "--dtype",
        "int8",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    current = environments.current_openvino()
    stock, without_int8, fixed = runs
    assert fixed["label"] == f"openvino {current} fix + int8, int8"
    assert fixed["stock_label"] == stock["label"]
    assert fixed["decisions"]["parts"] == {
        "einsum": True,
        "matmul": True,
        "shared_masks": True,
        "slice_update": True,
        "prescale": True,
        "align_types": True,
        "attention": True,
        "layer_norm": True,
        "preset_load": True,
        "mapped_weights": True,
        "saving_skipsets": True,
        "untracked_vocabulary": True,
        "quantization_configs": True,
        "policy_lookups": True,
        "stepwise": True,
        "layer_caches": True,
        "state_caches": True,
        "half_weights": True,
        "int8": True,
        "int8_layers": False,
        "dynamic_quantization": False,
        "int4": False,
        "compiled_cache": False,
    }
    assert fixed["first_text"] == stock["first_text"]
    # int32 copies of the int8 kernels (4 bytes a weight) are gone: the
    # same step model's constants, without the int8 part and with it.
    assert fixed["graph"]["constant_mb"] < without_int8["graph"]["constant_mb"]


def test_an_opt_in_mode_brings_the_parts_it_requires():
    """--fix int8_layers: every default part, int8_layers and the int8
    part it requires (enable() refuses int8_layers alone)."""
    from keras_ov_einsum.core.registry import default_switches

    assert runner.FIX_PARTS["int8_layers"] == {
        **default_switches(),
        "int8": True,
        "int8_layers": True,
    }
    assert runner.FIX_PARTS["int8"]["int8_layers"] is False


def test_float16_rows_load_a_preset_saved_in_float16(presets, tmp_path):
    """--dtype float16: the float32 preset saved once as float16 (as the
    native rows' fp16 IR is written once), loaded without a cast; stock
    and the fix generate the same text from it."""
    completed = _compare(
        tmp_path,
        "--backends",
        "openvino",
        "--fix",
        "both",
        "--dtype",
        "float16",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    stock, fixed = json.loads((tmp_path / "results.json").read_text())["runs"]
    saved = models.saved_preset_dir(models.preset_dir("gpt2_tiny"), "float16")
    config = json.loads((saved / "config.json").read_text())
    assert config["config"]["dtype"]["config"]["name"] == "float16"
    counts = fixed["decisions"]["counts"]
    assert "preset_load: weights assigned without a copy" in counts
    assert not [label for label in counts if "cast" in label]
    assert fixed["first_text"] == stock["first_text"]
    assert fixed["weight_mb"] == stock["weight_mb"]


def test_weights_only_int8_rows_load_a_weights_only_preset(presets, tmp_path):
    """--dtype int8_weights: the fix rows load a preset saved weights-only
    (the quantization_configs part keeps that config), stock's quantizes
    the float32 preset in its load (stock keras-hub would load the saved
    one as keras's default int8); the int8 part keeps those kernels int8
    (smaller constants than the same step model without it), the text the
    same."""
    from keras_ov_einsum.parts.loading.quantization_configs import (
        FILE,
        LABEL,
    )

    completed = _compare(
        tmp_path,
        "--backends",
        "openvino",
        "--fix",
        "off,on,int8",
        "--dtype",
        "int8_weights",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert all(run["ok"] for run in runs), [run["error"] for run in runs]
    stock, without_int8, fixed = runs
    current = environments.current_openvino()
    assert fixed["label"] == f"openvino {current} fix + int8, int8_weights"
    saved = models.saved_preset_dir(
        models.preset_dir("gpt2_tiny"), "int8_weights"
    )
    assert (saved / FILE).exists()
    for run in (without_int8, fixed):  # every quantized layer its config
        assert run["decisions"]["counts"][LABEL] == 13
    assert (
        fixed["first_text"] == without_int8["first_text"] == stock["first_text"]
    )
    assert fixed["graph"]["constant_mb"] < without_int8["graph"]["constant_mb"]


def test_int4_rows_load_a_preset_saved_in_int4(presets, tmp_path):
    """--dtype int4: every row loads the preset saved once after keras's
    ``quantize("int4")``; with the int4 part the compiled step model holds
    4-bit weights instead of float32 folds of the unpacked ones (fewer
    constant bytes), the text the same as stock's and the fix's without
    it. optimum-cli exports int4, the package's export does not."""
    completed = _compare(
        tmp_path,
        "--backends",
        "openvino",
        "--fix",
        "off,on,int4",
        "--dtype",
        "int4",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert all(run["ok"] for run in runs), [run["error"] for run in runs]
    stock, without_int4, fixed = runs
    current = environments.current_openvino()
    assert fixed["label"] == f"openvino {current} fix + int4, int4"
    saved = models.saved_preset_dir(models.preset_dir("gpt2_tiny"), "int4")
    config = json.loads((saved / "config.json").read_text())
    assert "int4" in json.dumps(config)
    # q, k, v, output, up, down of each of 2 layers and the tied logits
    # (whose inputs keras quantizes in a loaded int4 preset): 4-bit weights
    # instead of float32 folds of the unpacking.
    lowered = (
        fixed["decisions"]["lowered"] - without_int4["decisions"]["lowered"]
    )
    assert lowered == 13
    assert fixed["graph"]["constant_mb"] < without_int4["graph"]["constant_mb"]
    assert (
        fixed["first_text"] == without_int4["first_text"] == stock["first_text"]
    )
    assert native.weight_format_of("int4") == "int4"
    with pytest.raises(ValueError, match="no native row for int4"):
        native.weight_format_of("int4", "keras")


def test_a_row_that_would_measure_another_quantization_fails(presets):
    """The saved weights-only preset loaded without the part enabled gives
    keras's default int8 layers: the worker refuses to measure them as
    int8_weights."""
    import keras_hub

    import keras_ov_einsum
    from benchmarks import worker

    preset = str(models.build_preset("gpt2_tiny"))
    parts = runner.FIX_PARTS["on"]
    with pytest.raises(RuntimeError, match="13 layers quantize their inputs"):
        worker.load_causal_lm(keras_hub, preset, "int8_weights", parts)
    with keras_ov_einsum.enabled(**parts):
        worker.load_causal_lm(keras_hub, preset, "int8_weights", parts)


def test_a_crashing_configuration_is_recorded_and_the_rest_continue(
    presets, tmp_path
):
    current = environments.CURRENT
    configs = [
        # The worker refuses the fix on another backend: it exits non-zero.
        runner.Configuration("gpt2_tiny", "jax", "on", current),
        runner.Configuration("gpt2_tiny", "openvino", "off", current),
    ]
    results = runner.run_all(
        configs,
        repeats=1,
        out_dir=tmp_path,
        max_length=10,
        timeout=600,
        log=lambda text: None,
    )
    crashed, fine = results["runs"]
    assert not crashed["ok"]
    assert "exit code 1" in crashed["error"]
    assert "--fix on applies to the openvino backend" in crashed["error"]
    assert fine["ok"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [run["ok"] for run in saved["runs"]] == [False, True]


def test_a_timeout_is_recorded(presets, tmp_path):
    current = environments.CURRENT
    configs = [runner.Configuration("gpt2_tiny", "openvino", "off", current)]
    results = runner.run_all(
        configs,
        repeats=1,
        out_dir=tmp_path,
        max_length=10,
        timeout=0.5,
        log=lambda text: None,
    )
    (run,) = results["runs"]
    assert not run["ok"] and run["error"] == "timed out after 0.5 s"


def _run(label, repeat, ok=True, **values):
    run = {
        "model": "m",
        "label": label,
        "repeat": repeat,
        "ok": ok,
        "error": None if ok else "boom",
        "backend": label.split()[0],
        "timeline": [(0.0, 100.0), (1.0, 150.0)],
        "loadavg_before": [1.5 + repeat, 1.0, 1.0],
    }
    if ok:
        run.update(
            dict(
                weight_mb=90,
                load_mb=100,
                load_s=1.0,
                compile_mb=50,
                growth_mb=60,
                peak_rss_mb=200,
                first_s=2.0,
                second_s=1.0,
                new_tokens=9,
                tokens_per_s=9.0,
            ),
            **values,
        )
    return run


def _results(runs):
    return {
        "created": "2026-11-25T00:00:00",
        "command": "python -m benchmarks x",
        "commit": "abc",
        "parameters": {"repeats": 2, "max_length": 10},
        "machine": {"cpu": "cpu", "cores": 2, "ram_gb": 24},
        "runs": runs,
    }


def test_each_run_reads_its_model_files_first(tmp_path, monkeypatch):
    """The files a row loads (a native row: its IR; an int8 row: the
    quantized preset) are read whole before the run, in every folder."""
    preset = tmp_path / "gpt2_tiny-abc"
    (preset / "assets").mkdir(parents=True)
    (preset / "model.weights.h5").write_bytes(b"w" * (3 << 24))
    (preset / "assets" / "vocabulary.json").write_bytes(b"{}")
    read = {}
    real_open = open

    class Counting:
        def __init__(self, path):
            self.path, self.file = str(path), real_open(path, "rb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def read(self, size):
            chunk = self.file.read(size)
            read[self.path] = read.get(self.path, 0) + len(chunk)
            return chunk

    monkeypatch.setattr(
        runner, "open", lambda path, mode: Counting(path), raising=False
    )
    assert runner._read_once([preset]) >= 0
    assert read == {
        str(preset / "assets" / "vocabulary.json"): 2,
        str(preset / "model.weights.h5"): 3 << 24,
    }
    current = environments.CURRENT
    keras_row = runner.Configuration("gpt2_tiny", "openvino", "on", current)
    int8_row = runner.Configuration(
        "gpt2_tiny", "openvino", "on", current, dtype="int8"
    )
    native_row = runner.Configuration(
        "gpt2_tiny", "openvino-genai", "off", current
    )
    keras_export_row = runner.Configuration(
        "gpt2_tiny", "keras-export", "off", current
    )
    exports = {
        ("optimum", "gpt2_tiny", "float32"): {"ir": "/ir", "prompt_ids": [1]},
        ("keras", "gpt2_tiny", "float32"): {"ir": "/k", "prompt_ids": [1]},
    }
    folders = runner._weight_folders
    assert folders(keras_row, preset, exports) == [preset]
    assert folders(int8_row, preset, exports) == [
        tmp_path / "gpt2_tiny-abc-int8"
    ]
    float16_row = runner.Configuration(
        "gpt2_tiny", "openvino", "on", current, dtype="float16"
    )
    assert folders(float16_row, preset, exports) == [
        tmp_path / "gpt2_tiny-abc-float16"
    ]
    assert folders(native_row, preset, exports) == ["/ir"]
    assert folders(keras_export_row, preset, exports) == ["/k"]


def test_report_medians_ranges_improvement_and_failures(tmp_path):
    runs = [
        _run("openvino 1 stock", 0, compile_mb=100, first_s=1.5),
        _run("openvino 1 stock", 1, compile_mb=120, first_s=2.5),
        _run("openvino 1 fix", 0, compile_mb=80, tokens_per_s=12.0),
        _run("openvino 1 fix", 1, ok=False),
        # Every run of a pair failed: listed, but no improvement table.
        _run("openvino 2 stock", 0, ok=False),
        _run("openvino 2 fix", 0, ok=False),
    ]
    runs[-1]["error"] = "exit code 1: \x1b[1mRuntimeError:\x1b[0m\n  shape"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    text = report.render(path).read_text()
    # median [min-max] over the two good stock runs
    assert "| openvino 1 stock | 90 | 100 | 1.00 | 110 [100-120] |" in text
    # the machine's load before each run, median [min-max]
    assert "| 9.0 | 2.0 [1.5-2.5] | ? |\n" in text
    # the improvement table: median stock 110 -> fix 80
    assert (
        "| first-call growth MB | 110 [100-120] | 80 | -30 | -27.3% |  |  |"
        in text
    )
    assert "| tokens/s | 9.0 | 12.0 | +3.0 | +33.3% | x1.33 | x1.33 |" in text
    assert (
        "| 1st call s | 2.00 [1.50-2.50] | 2.00 | +0.00 | +0.0% | x1.00 "
        "| x0.75 |" in text  # best to best: 1.50 s stock, 2.00 s fix
    )
    assert "- m openvino 1 fix repeat 1: boom" in text
    one_line = "- m openvino 2 fix repeat 0: exit code 1: RuntimeError: shape\n"
    assert one_line in text  # no colour codes, no line breaks
    assert "openvino 2 fix vs stock" not in text
    assert (tmp_path / "memory_timeline.png").exists()


def _anon_file_report(tmp_path, recorded):
    """Stock, the fix and openvino-genai, with RSS's anon and file parts
    recorded or (an older harness) not."""

    def run(label, repeat, anon_growth, file):
        values = dict(anon_growth_mb=anon_growth, peak_file_mb=file)
        return _run(label, repeat, **(values if recorded else {}))

    runs = [
        run("openvino 1 stock", 0, 40, 150),
        run("openvino 1 fix", 0, 30, 100),
        run("openvino 1 fix", 1, 20, 100),
        run("openvino-genai 1 f32 hint", 0, 10, 300),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    return report.render(path, charts=False).read_text()


def test_report_shows_anon_and_file_where_runs_recorded_them(tmp_path):
    text = _anon_file_report(tmp_path, recorded=True)
    assert "\n- peak anon growth = the peak of RSS's anonymous part" in text
    assert (
        "| peak RSS MB | peak swap MB | peak anon growth MB | peak file MB "
        "| 1st call s |" in text
    )
    assert "| 200 | n/a | 40 | 150 | 2.00 |" in text  # stock
    assert "| 200 | n/a | 25 [20-30] | 100 | 2.00 |" in text  # the fix
    # a row each in the fix-vs-stock table
    assert "| peak anon growth MB | 40 | 25 [20-30] | -15 | -37.5% |" in text
    assert "| peak file MB | 150 | 100 | -50 | -33.3% |" in text
    # a column in the native table: Keras over native
    native_table = text.split("### Keras vs native OpenVINO")[1]
    assert "| peak growth MB | peak anon growth MB | same token ids |" in (
        native_table
    )
    assert "| 1.00 (60 / 60) | 4.00 (40 / 10) | n/a |" in native_table
    # A run of an older harness beside them: not recorded, n/a.
    results = json.loads((tmp_path / "results.json").read_text())
    results["runs"].append(_run("openvino 2 stock", 0))
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = report.render(tmp_path / "results.json", charts=False).read_text()
    assert "| 200 | n/a | n/a | n/a | 2.00 |" in text


def test_report_of_older_results_has_no_anon_or_file_columns(tmp_path):
    """Results recorded before the split render as they did (docs/results'
    pages, byte for byte: tests/test_docs.py)."""
    text = _anon_file_report(tmp_path, recorded=False)
    assert "anon" not in text and "peak file" not in text
    assert "| peak RSS MB | peak swap MB | 1st call s |" in text
    assert "| 60 | 200 | n/a | 2.00 |" in text  # cells as the header's
    assert "| peak growth MB | same token ids |" in text


def test_report_pairs_each_part_with_stock_of_its_own_weight_format(
    tmp_path,
):
    def run(label, stock_label, tokens_per_s):
        record = _run(label, 0, tokens_per_s=tokens_per_s)
        record["stock_label"] = stock_label
        return record

    runs = [
        run("openvino 1 stock, int8", "openvino 1 stock, int8", 10.0),
        run(
            "openvino 1 fix (einsum only), int8", "openvino 1 stock, int8", 20.0
        ),
        run("openvino 1 stock", "openvino 1 stock", 5.0),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    text = report.render(path).read_text()
    section = text.split("### openvino 1 fix (einsum only), int8 vs stock")[1]
    assert "| tokens/s | 10.0 | 20.0 | +10.0 | +100.0% | x2.00 |" in section
    assert text.count(" vs stock") == 1  # stock is not compared to itself


def test_diff_flags_changes_beyond_the_factor(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_results([_run("torch", 0)])))
    new.write_text(
        json.dumps(
            _results(
                [_run("torch", 0, first_s=3.0, tokens_per_s=9.5, compile_mb=20)]
            )
        )
    )
    lines, regressions = diff.compare_results(old, new, factor=1.2)
    assert regressions == 1
    assert any(
        line.startswith("REGRESSION m torch: 1st call s") for line in lines
    )
    assert any(
        line.startswith("improved   m torch: first-call growth")
        for line in lines
    )
    assert not any("tokens/s" in line for line in lines)  # within x1.2
    lines, regressions = diff.compare_results(old, old, factor=1.2)
    assert (lines, regressions) == (["no change beyond x1.2"], 0)


def test_the_harness_venv_is_its_own_stack():
    assert environments.python_for(environments.CURRENT) == sys.executable
    assert environments.openvino_of(environments.CURRENT) == (
        environments.current_openvino()
    )
    # --openvino picks this venv where it has that version, though the
    # nightly stack pins the same.
    current = environments.current_openvino()
    assert environments.for_openvino(current) == environments.CURRENT
    assert environments.for_openvino("2025.3.0") == "keras-3.12"


def test_an_unknown_environment_or_openvino_is_refused_by_name():
    with pytest.raises(ValueError, match="known: keras-3.15, keras-nightly"):
        environments.python_for("keras-4")
    with pytest.raises(ValueError, match="known: 2025.3.0, 2026.4.1"):
        environments.for_openvino("2024.0.0")


def test_stacks_are_the_files_run_sh_installs():
    """Each stack's pins come from the files run.sh installs it from,
    exact versions only, and its models exist."""
    assert environments.pins("keras-3.15")["keras"] == "3.15.1"  # constraints
    nightly = environments.pins("keras-nightly")
    # stacks/keras-nightly.no-deps.txt, installed after the rest
    assert nightly["keras-nightly"].startswith("3.16")
    assert nightly["keras-openvino"] and "keras" not in nightly
    assert environments.pins("keras-3.12")["openvino"] == "2025.3.0"
    for name, stack in environments.KNOWN_GOOD.items():
        for version in environments.pins(name).values():
            assert version and " " not in version, name
        assert set(stack.models) <= set(models.MODELS)


def test_a_stack_runs_in_run_sh_s_venv(tmp_path):
    """The harness asks ./run.sh stack for a stack's interpreter: a venv
    whose stamp says it is current is used as it is (a stale one would be
    reinstalled first)."""
    import hashlib

    name = "keras-nightly"
    venv = tmp_path / name
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    declared = [
        os.path.join(ROOT, path)
        for path in (
            "pyproject.toml",
            f"stacks/{name}.txt",
            f"stacks/{name}.no-deps.txt",
        )
    ]
    digest = hashlib.sha256()
    for path in declared:
        with open(path, "rb") as file:
            digest.update(file.read())
    (venv / f".installed-{digest.hexdigest()[:16]}").touch()
    environment = dict(os.environ, KERAS_OV_EINSUM_VENVS=str(tmp_path))
    completed = subprocess.run(
        ["bash", os.path.join(ROOT, "run.sh"), "stack", name],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"{venv}/bin/python\n"  # and nothing else
    os.environ["KERAS_OV_EINSUM_VENVS"] = str(tmp_path)
    try:
        python = environments.python_for(name, log=lambda text: None)
    finally:
        del os.environ["KERAS_OV_EINSUM_VENVS"]
    assert python == str(venv / "bin" / "python")


def _stack_venv(name):
    venvs = os.environ.get(
        "KERAS_OV_EINSUM_VENVS", os.path.join(ROOT, ".venvs")
    )
    return os.path.join(ROOT, venvs, name, "bin", "python")


@pytest.mark.skipif(
    not os.path.exists(_stack_venv("keras-nightly")),
    reason="no keras-nightly venv: ./run.sh stack keras-nightly",
)
def test_the_nightly_stack_runs_stock_and_the_fix(presets, tmp_path):
    """--environments keras-nightly: the openvino rows run in that stack's
    venv (keras 3.16, the keras-openvino backend) on the presets the
    harness's venv built, and give the same tokens with the fix."""
    completed = _compare(
        tmp_path,
        "--backends",
        "openvino",
        "--environments",
        "keras-nightly",
        "--fix",
        "both",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    packages = results["environments"]["keras-nightly"]["packages"]
    assert "keras-openvino" in packages and "keras" not in packages
    stock, fixed = results["runs"]
    for run in (stock, fixed):
        assert run["ok"], run["error"]
        assert run["environment"] == "keras-nightly"
        assert run["versions"]["keras"] == packages["keras-nightly"]
        assert run["versions"]["keras-openvino"] == packages["keras-openvino"]
    # One environment: the label is its OpenVINO version, as before.
    assert stock["label"] == f"openvino {environments.current_openvino()} stock"
    assert fixed["decisions"]["lowered"] > 0
    assert fixed["generated_ids"] == stock["generated_ids"]


def test_rows_name_their_environment_when_there_are_several():
    """With one environment the OpenVINO rows keep the labels results had
    before environments (their OpenVINO version); with several, each
    names its stack, and the fix is paired with stock of its own."""
    current = environments.current_openvino()
    backends = ["jax", "openvino", "openvino-genai"]

    def labels(names):
        rows = runner.configurations(["gpt2_tiny"], backends, ["on"], names)
        return [(row.label, row.stock_label, row.environment) for row in rows]

    assert labels(["keras-3.15"]) == [
        ("jax", "jax", "keras-3.15"),
        (
            f"openvino {current} fix",
            f"openvino {current} stock",
            "keras-3.15",
        ),
        (
            f"openvino-genai {current} f32 hint",
            f"openvino-genai {current} f32 hint",
            "keras-3.15",
        ),
    ]
    # Other backends and the native rows run in the harness's venv only.
    assert labels(["keras-3.15", "keras-nightly"]) == [
        ("jax", "jax", "keras-3.15"),
        ("openvino keras-3.15 fix", "openvino keras-3.15 stock", "keras-3.15"),
        (
            "openvino keras-nightly fix",
            "openvino keras-nightly stock",
            "keras-nightly",
        ),
        (
            f"openvino-genai {current} f32 hint",
            f"openvino-genai {current} f32 hint",
            "keras-3.15",
        ),
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--backends", "cntk"], "unknown backend(s) ['cntk']"),
        (["--model", "gpt5"], "unknown model 'gpt5'"),
        (["--fix", "on,maybe"], "unknown --fix 'maybe'"),
        (["--dtype", "float8"], "unknown --dtype 'float8'"),
        (["--native-hint", "f16"], "unknown --native-hint 'f16'"),
        (["--environments", "keras-4"], "unknown environment 'keras-4'"),
        (["--openvino", "2024.0.0"], "OpenVINO 2024.0.0 has no known-good"),
    ],
    ids=[
        "backend",
        "model",
        "fix",
        "dtype",
        "native-hint",
        "environment",
        "openvino",
    ],
)
def test_compare_rejects_unknown_names(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_waiting_for_a_quiet_machine_gives_up_after_the_limit():
    # Nothing is ever below 0% busy: it waits the limit, then runs anyway.
    busy, waited = runner._wait_for_quiet(0, 0.5, log=lambda text: None)
    assert 0 <= busy <= 100 and waited >= 0.5
    # Off by default: one measurement of how busy the CPU is, no waiting.
    messages = []
    busy, waited = runner._wait_for_quiet(None, 0.5, log=messages.append)
    assert 0 <= busy <= 100 and messages == []


def test_a_failed_run_keeps_the_exception_not_the_framework_logs():
    stderr = "\n".join(
        [
            "I0000 00:00:1795595412.19 14684 port.cc:153] oneDNN ops are on",
            "Traceback (most recent call last):",
            '  File "worker.py", line 3, in <module>',
            "    causal_lm = from_preset(preset)",
            "RuntimeError: Could not infer the output shape",
            "to_shape was called on a dynamic shape.",
            "E0000 00:00:1795595423.00 14684 cuda_platform.cc:52] no CUDA",
        ]
    )
    assert runner._error_tail(stderr) == (
        "RuntimeError: Could not infer the output shape | "
        "to_shape was called on a dynamic shape."
    )


@pytest.mark.parametrize("weights", ["f32", "bf16"])
@pytest.mark.parametrize("layout", ["kn", "nk"])
def test_bandwidth_counts_the_weight_bytes_a_step_reads(weights, layout):
    shapes = [(8, 16), (16, 8), (8, 32)]
    total, rates, compile_s, growth, kernels = (
        bandwidth.fully_connected_bandwidth(
            shapes, repeats=3, layout=layout, weights_type=weights
        )
    )
    itemsize = 4 if weights == "f32" else 2
    assert total == sum(rows * columns for rows, columns in shapes) * itemsize
    assert len(rates) == 3 and all(rate > 0 for rate in rates)
    assert compile_s > 0
    assert sum(kernels.values()) == len(shapes)  # one FullyConnected each


def test_bandwidth_a_fused_gelu_changes_the_plugins_kernel():
    """What the README's decoding-step analysis rests on: on this CPU a
    float32 FullyConnected layer alone runs as mlas, one with a GELU fused
    into it as brgemm (which reads its weights slower)."""
    shapes = [(8, 16), (64, 256)]
    run = bandwidth.fully_connected_bandwidth
    plain = run(shapes, repeats=1)[-1]
    fused = run(shapes, repeats=1, fused="gelu")[-1]
    assert plain == {"gemm_mlas_f32": 2}
    assert sum(fused.values()) == 2 and "gemm_mlas_f32" not in fused


def test_the_plugin_keeps_float16_weights_float16_only_in_an_llm():
    """docs/native-gap.md's float16 finding: float16 weights behind a
    decompression Convert are packed as float32 (twice their bytes) unless
    the model holds a state variable and an attention, the CPU plugin's
    test for an LLM (genai's IRs pass it, keras-hub's graphs do not)."""
    shapes = [(1024, 4096)] * 8  # 64 MB of float16 weights
    run = bandwidth.fully_connected_bandwidth
    total, *_, plain_growth, _ = run(
        shapes, repeats=1, weights_type="f16-decompressed"
    )
    *_, llm_growth, _ = run(
        shapes, repeats=1, weights_type="f16-decompressed", stateful=True
    )
    assert plain_growth - llm_growth > 0.7 * total
    assert llm_growth < 1.5 * total


@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize(
    "weights", ["f32", "i8", "i8-dequantized", "f16-decompressed"]
)
def test_bandwidth_projections_compute_the_product(weights, transpose_b):
    import openvino as ov
    import openvino.opset13 as ov_opset

    rng = np.random.default_rng(0)
    kernel = rng.integers(-127, 128, (64, 48)).astype(np.float32)
    x = rng.integers(-127, 128, (1, 64)).astype(np.float32)
    parameter = ov_opset.parameter([1, 64], ov.Type.f32)
    stored = np.ascontiguousarray(kernel.T) if transpose_b else kernel
    y = bandwidth._projection(parameter, stored, transpose_b, weights)
    compiled = ov.Core().compile_model(
        ov.Model([y.output(0)], [parameter]),
        "CPU",
        # Exact integer products: no dynamic quantization of activations.
        {
            "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
        },
    )
    got = compiled([x])[0]
    np.testing.assert_array_equal(got, x @ kernel)


@pytest.mark.parametrize(
    "weights, weight_type", [("i8", "f32"), ("i8-dequantized", "i8")]
)
def test_which_int8_form_the_plugin_keeps_compressed(weights, weight_type):
    """The README's int8 finding: keras's int32 form runs as a float32
    FullyConnected (the kernel expanded); the dequantized form keeps it."""
    import openvino as ov
    import openvino.opset13 as ov_opset

    parameter = ov_opset.parameter([1, 64], ov.Type.f32)
    kernel = np.ones((64, 48), np.float32)
    y = bandwidth._projection(parameter, kernel, False, weights)
    compiled = ov.Core().compile_model(
        ov.Model([y.output(0)], [parameter]),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    (layer,) = [
        node
        for node in compiled.get_runtime_model().get_ordered_ops()
        if node.get_rt_info()["layerType"].astype(str) == "FullyConnected"
    ]
    assert layer.input(1).get_element_type() == getattr(ov.Type, weight_type)


@pytest.mark.parametrize("setting, group_size", [("default", None), ("off", 0)])
def test_native_step_can_compile_without_dynamic_quantization(
    setting, group_size
):
    """``benchmarks.native_step --dynamic-quantization off`` compiles with
    the plugin's dynamic quantization off; default leaves the plugin's own
    group size (0 too on a CPU without int8 dot products)."""
    import openvino as ov
    import openvino.opset13 as ov_opset

    parameter = ov_opset.parameter([1, 64], ov.Type.f32)
    y = bandwidth._projection(
        parameter, np.ones((64, 48), np.float32), False, "i8-dequantized"
    )
    model = ov.Model([y.output(0)], [parameter])
    config = native_step.compile_config(setting)
    compiled = ov.Core().compile_model(model, "CPU", config)
    got = int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
    plugin_default = int(
        ov.Core()
        .compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        .get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
    )
    assert got == (plugin_default if group_size is None else group_size)
    with pytest.raises(ValueError):
        native_step.compile_config("on")


@pytest.mark.parametrize("fix", ["off", "on"])
def test_step_replays_the_decoding_loop_and_profiles_it(presets, tmp_path, fix):
    out = tmp_path / "step.json"
    arguments = ["--model", "gpt2_tiny", "--fix", fix, "--repeats", "2"]
    assert step.main([*arguments, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    # Fed back as the Loop feeds it, the body ends with generate()'s tokens.
    assert record["replay_matches_generate"] is True
    assert record["steps"] == 10 - 2  # one step a new token
    assert len(record["step_ms"]) == 2 * record["steps"]
    assert len(record["generate_ms"]) == len(record["prefix_ms"]) == 2
    # A step's FullyConnected layers read every projection once, and the
    # tied logits: 2 layers x (q, k, v, o: 64 x 64; two of 64 x 256) and
    # 1024 x 64, float32.
    layers = record["layer_types"]
    assert layers["FullyConnected"]["layers"] == 2 * 6 + 1
    assert record["weight_bytes"] == 4 * (
        2 * (4 * 64 * 64 + 2 * 64 * 256) + 1024 * 64
    )
    kernels = record["fully_connected"]
    assert sum(row["layers"] for row in kernels.values()) == 13
    for row in kernels.values():  # float32 weights, handed as such
        assert row["weight_types"] == {"f32": row["layers"]}
    assert sum(row["ms"] for row in kernels.values()) == pytest.approx(
        layers["FullyConnected"]["ms"], abs=0.01
    )
    assert record["profiled_step_ms"] == pytest.approx(
        sum(layer["ms"] for layer in layers.values()), abs=0.01
    )
    assert "Einsum" not in layers  # stock decomposes them too
    assert "gpt2_tiny float32, OpenVINO" in step.render(record)


def test_step_counts_int8_weight_layers_in_its_kernel_table(presets, tmp_path):
    """Layers on int8 weights profile as FullyConnectedCompressed: the
    kernel table has them too, handed int8."""
    out = tmp_path / "step.json"
    arguments = ["--model", "gpt2_tiny", "--fix", "int8", "--repeats", "1"]
    arguments += ["--dtype", "int8_weights", "--json", str(out)]
    assert step.main(arguments) == 0
    record = json.loads(out.read_text())
    assert record["replay_matches_generate"] is True
    compressed = record["layer_types"]["FullyConnectedCompressed"]
    kernels = record["fully_connected"]
    assert sum(row["layers"] for row in kernels.values()) == 13
    assert compressed["layers"] == 13
    for row in kernels.values():
        assert row["weight_types"] == {"i8": row["layers"]}


def test_step_what_if_unfused_gelu_moves_layers_off_the_fused_kernel(
    presets, tmp_path
):
    kernels = {}
    for what_if in ([], ["--unfuse-gelu"]):
        out = tmp_path / f"step{len(what_if)}.json"
        arguments = ["--model", "gpt2_tiny", "--repeats", "1", *what_if]
        assert step.main([*arguments, "--json", str(out)]) == 0
        record = json.loads(out.read_text())
        assert record["replay_matches_generate"] is True  # the same tokens
        kernels[bool(what_if)] = {
            kernel: row["layers"]
            for kernel, row in record["fully_connected"].items()
        }
    assert record["unfused_gelu"] == 2  # one feed-forward GELU a layer
    # Both feed-forward projections leave the kernel fused layers get.
    plain = kernels[False]["gemm_mlas_f32"]
    assert kernels[True]["gemm_mlas_f32"] == plain + 2
    assert sum(kernels[True].values()) == sum(kernels[False].values()) == 13


def test_step_counts_the_traced_graph_and_its_identity_converts(
    presets, tmp_path
):
    graphs = {}
    for fix in ("off", "align_types", "on", "no_align_types"):
        out = tmp_path / f"graph-{fix}.json"
        arguments = ["--model", "gpt2_tiny", "--fix", fix, "--graph-only"]
        assert step.main([*arguments, "--json", str(out)]) == 0
        record = json.loads(out.read_text())
        assert "step_ms" not in record  # nothing replayed or timed
        graphs[fix] = record["graph_operations"]
        assert "Converts to their input's own type" in step.render(record)

    def total(fix, key):
        return sum(part[key] for part in graphs[fix].values())

    # Stock converts both operands of nearly every binary op to their own
    # type; the align_types part leaves those out, and only those, alone
    # and beside the other parts (which change the graph otherwise). A few
    # come from elsewhere (keras's cast() to the type a value has). Beside
    # the other parts fewer: layer_norm's MVN leaves out keras's layer
    # normalization and its converts.
    for without, with_it in (("off", "align_types"), ("no_align_types", "on")):
        before = total(without, "identity_converts")
        assert before > 100
        left = total(with_it, "identity_converts")
        assert left < before / 5
        assert total(with_it, "operations") == total(without, "operations") - (
            before - left
        )


def test_step_counts_the_step_model(presets, tmp_path):
    """With the stepwise part on, the record also counts the operations of
    its step model as generate() traces it: fewer with shared_masks."""
    counts = {}
    for fix in ("off", "on", "no_shared_masks"):
        out = tmp_path / f"step-{fix}.json"
        arguments = ["--model", "gpt2_tiny", "--fix", fix, "--graph-only"]
        assert step.main([*arguments, "--json", str(out)]) == 0
        record = json.loads(out.read_text())
        counts[fix] = record["step_model_operations"]
    assert counts["off"] is None  # stock: no step model
    assert 0 < counts["on"] < counts["no_shared_masks"]
    assert f"step model as traced: {counts['on']} operations" in step.render(
        record | {"step_model_operations": counts["on"]}
    )


def test_passes_sums_outermost_managers_and_each_pass(tmp_path):
    csv = tmp_path / "passes.csv"
    csv.write_text(
        "m;Outer;3000000000;1\n"
        "m_start;Outer;1000000000\n"
        "m_start;Inner;1500000000\n"
        "t;FoldA;Inner;250000000;0\n"
        "m_end;Inner;2000000000\n"
        "t;FoldA;Outer;250000000;0\n"
        "m_end;Outer;4000000000\n"
        "m_start;Late;5000000000\n"
        "m_end;Late;5500000000\n"
    )
    summary = passes.read(csv)
    # Inner runs inside Outer: only the outermost spans add up.
    assert summary["managers"] == [("Outer", 3.0), ("Late", 0.5)]
    assert summary["transformations_s"] == 3.5
    assert summary["passes"] == {"FoldA": 0.5}
    assert "transformations: 3.50 s" in passes.render(summary)


def test_passes_reads_what_openvino_writes_compiling_generate(
    presets, tmp_path
):
    csv = tmp_path / "passes.csv"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.step",
            "--model",
            "gpt2_tiny",
            "--graph-only",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT, OV_ENABLE_PROFILE_PASS=str(csv)),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = passes.read(csv)
    assert 0 < summary["transformations_s"] < 60
    assert any(name == "Plugin:CPU" for name, _ in summary["managers"])
    assert "ov::pass::ConstantFolding" in summary["passes"]


def test_sampler_reads_the_kernels_counters():
    import psutil

    from benchmarks.sampler import MB, MemorySampler

    sampler = MemorySampler()
    grown = np.ones(64 * MB // 8)  # 64 MB, touched
    rss = sampler.sample()
    # The same resident size psutil reads (from /proc/<pid>/statm), and
    # the swap its smaps walk finds (both read the kernel's counters).
    assert abs(rss - psutil.Process().memory_info().rss) < 8 * MB
    swap = getattr(psutil.Process().memory_full_info(), "swap", 0)
    assert abs(sampler.peak.swap - swap) < 8 * MB
    del grown
    assert sampler.timeline and sampler.peak.rss == rss


# /proc/<pid>/status's memory lines (Linux >= 4.5), kB; other lines are
# not memory and are skipped.
STATUS = {
    "Name": "python",
    "VmPeak": "9000000 kB",
    "VmRSS": "3000 kB",  # = RssAnon + RssFile + RssShmem
    "RssAnon": "1000 kB",
    "RssFile": "1500 kB",
    "RssShmem": "500 kB",
    "VmSwap": "200 kB",
    "Threads": "4",
}
KB = 1024


def _status(**lines):
    """STATUS with ``lines`` replaced (None: the line left out)."""
    merged = {**STATUS, **lines}
    return "".join(
        f"{name}:\t{value}\n" for name, value in merged.items() if value
    )


@pytest.mark.parametrize(
    "lines, expected",
    [
        # shared memory leaves RAM only to swap, as anonymous memory does
        ({}, (3000 * KB, 200 * KB, 1500 * KB, 1500 * KB)),
        ({"RssShmem": "0 kB"}, (3000 * KB, 200 * KB, 1000 * KB, 1500 * KB)),
        # Linux < 4.5 does not split VmRSS: unknown, not 0
        (
            {"RssAnon": None, "RssFile": None, "RssShmem": None},
            (3000 * KB, 200 * KB, None, None),
        ),
        # no swap accounting: 0, as before the split
        ({"VmSwap": None}, (3000 * KB, 0, 1500 * KB, 1500 * KB)),
    ],
    ids=["split", "no-shmem", "linux-before-4.5", "no-swap-line"],
)
def test_sampler_parses_anon_and_file_from_the_status(lines, expected):
    from benchmarks.sampler import Memory, parse_status

    assert parse_status(_status(**lines)) == Memory(*expected)


def test_sampler_keeps_the_anon_and_file_peaks_apart(tmp_path):
    """Memory the process allocates is anon; a file it maps and reads is
    file (pages the kernel can drop); each has its own maximum."""
    import mmap
    import pathlib

    from benchmarks.sampler import MB, MemorySampler

    sampler = MemorySampler()
    stages = []
    sampler.stage(stages, "start")
    start = sampler.staged["start"]
    if start.anon is None:
        pytest.skip("this kernel does not split RSS (Linux < 4.5)")
    # The kernel's VmRSS is the sum of the counters of the same read.
    assert start.rss == start.anon + start.file
    assert stages[0]["anon_mb"] + stages[0]["file_mb"] == pytest.approx(
        stages[0]["rss_mb"], abs=0.2
    )
    # An installed library: on disk wherever the test runs (a file in
    # tmp_path would be shared memory on a tmpfs /tmp).
    library = max(
        pathlib.Path(np.__file__).parent.rglob("*.so"),
        key=lambda path: path.stat().st_size,
    )
    size = library.stat().st_size
    assert size > 4 * MB
    with open(library, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    pages = len(mapped[:: mmap.PAGESIZE])  # a byte of every page read
    assert pages == -(-size // mmap.PAGESIZE)
    sampler.stage(stages, "mapped")
    del mapped
    grown = np.ones(64 * MB // 8)  # 64 MB, touched
    sampler.stage(stages, "allocated")
    del grown
    sampler.stage(stages, "freed")
    mapped, allocated = sampler.staged["mapped"], sampler.staged["allocated"]
    assert mapped.file - start.file > size - MB
    assert mapped.anon - start.anon < 4 * MB
    assert allocated.anon - mapped.anon > 63 * MB
    assert allocated.file < mapped.file - size + MB  # unmapped
    # The peaks fall at different stages; each is kept.
    assert sampler.highest.file == mapped.file
    assert sampler.highest.anon == allocated.anon
    assert sampler.highest.rss < sampler.highest.anon + sampler.highest.file
    assert [stage["name"] for stage in stages] == [
        "start",
        "mapped",
        "allocated",
        "freed",
    ]


def test_records_take_the_anon_peak_above_imports():
    from benchmarks.sampler import MB, Memory, anon_file_fields

    highest = Memory(900 * MB, 0, 700 * MB, 300 * MB)
    imported = Memory(250 * MB, 0, 100 * MB, 150 * MB)
    assert anon_file_fields(highest, imported) == {
        "peak_anon_mb": 700.0,
        "peak_file_mb": 300.0,
        "anon_growth_mb": 600.0,
    }
    unsplit = Memory(900 * MB, 0, None, None)
    assert anon_file_fields(unsplit, unsplit) == dict.fromkeys(
        ("peak_anon_mb", "peak_file_mb", "anon_growth_mb")
    )


# --- Native OpenVINO rows: the preset's weights without Keras ---------------


def _tiny_causal_lm(family):
    """A 2-layer model of ``family`` with random weights and no tokenizer:
    the Hugging Face export only reads the backbone."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    if family == "gpt2":
        config = models.MODELS["gpt2_tiny"].backbone
        return keras_hub.models.GPT2CausalLM(
            backbone=keras_hub.models.GPT2Backbone(**config), preprocessor=None
        )
    if family == "llama":  # grouped-query attention, untied logits
        backbone = keras_hub.models.LlamaBackbone(
            vocabulary_size=128,
            num_layers=2,
            num_query_heads=4,
            num_key_value_heads=2,
            hidden_dim=32,
            intermediate_dim=64,
        )
        return keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    backbone = keras_hub.models.GemmaBackbone(  # multi-query attention
        vocabulary_size=128,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=128,
        head_dim=8,
    )
    return keras_hub.models.GemmaCausalLM(backbone, preprocessor=None)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma"])
def test_the_hugging_face_checkpoint_gives_the_keras_logits(family, tmp_path):
    """The native rows run the Keras rows' weights: the checkpoint written
    from a Keras model computes its logits, in float32, in Transformers."""
    import keras
    import torch
    import transformers

    causal_lm = _tiny_causal_lm(family)
    # Weights of order one, not the initializers' 0.02: small activations
    # would hide a wrong activation function or norm epsilon.
    rng = np.random.default_rng(0)
    for weight in causal_lm.backbone.weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    native.hf_checkpoint(causal_lm, tmp_path)
    token_ids = np.array([[5, 17, 3, 99, 42, 7]], dtype="int32")
    expected = keras.ops.convert_to_numpy(
        causal_lm(
            {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
        )
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32
    )
    with torch.no_grad():
        logits = model(torch.tensor(token_ids, dtype=torch.int64)).logits
    assert logits.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        logits.numpy(), expected, rtol=1e-4, atol=1e-5 * scale
    )


@pytest.fixture(scope="module")
def native_run(presets, tmp_path_factory):
    """Keras on OpenVINO (stock), both native backends and genai on the
    package's export (keras-export) on gpt2_tiny."""
    out = tmp_path_factory.mktemp("native")
    completed = _compare(
        out,
        "--backends",
        "openvino,openvino-genai,optimum-intel,keras-export",
        "--fix",
        "off",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out


def test_native_rows_record_the_keras_rows_fields_and_token_ids(native_run):
    results = json.loads((native_run / "results.json").read_text())
    current = environments.current_openvino()
    keras_row, genai, optimum, _ = results["runs"]
    assert [genai["label"], optimum["label"]] == [
        f"openvino-genai {current} f32 hint",
        f"optimum-intel {current} f32 hint",
    ]
    for run in results["runs"]:
        assert run["ok"], run["error"]
        assert RECORD_FIELDS <= set(run)
        assert [stage["name"] for stage in run["stages"]] == [
            "start",
            "imported",
            "loaded",
            "first call",
            "second call",
            "deleted",
        ]
        assert run["device"] == "CPU"
        _check_anon_and_file(run)
        assert run["new_tokens"] == len(run["generated_ids"]) == 10 - 2
        assert run["load_s"] > 0
    # The native rows start from the Keras row's packed prompt and, with
    # the same weights, greedy, float32, generate its tokens.
    assert genai["prompt_ids"] == keras_row["prompt_ids"]
    assert len(keras_row["prompt_ids"]) == 2  # the start token, "Hello"
    assert genai["generated_ids"] == keras_row["generated_ids"]
    assert optimum["generated_ids"] == keras_row["generated_ids"]
    assert genai["hint"] == "f32" and keras_row["hint"] is None
    report_text = (native_run / "report.md").read_text()
    row = f"| {keras_row['label']} | {genai['label']} |"
    (line,) = [line for line in report_text.splitlines() if row in line]
    assert line.endswith("| yes |")


def test_the_keras_export_row_is_genai_on_the_package_s_export(native_run):
    """keras-export: genai on ``python -m keras_ov_einsum.export``'s IR,
    the same prompt ids and fields as genai on optimum-intel's, the same
    tokens; every native row records its export's time, and the report
    sets the two genai rows side by side."""
    results = json.loads((native_run / "results.json").read_text())
    keras_row, genai, optimum, keras_export = results["runs"]
    current = environments.current_openvino()
    assert keras_export["label"] == f"keras-export {current} f32 hint"
    assert keras_export["ok"], keras_export["error"]
    assert RECORD_FIELDS <= set(keras_export)
    assert keras_export["backend"] == "keras-export"
    assert keras_export["prompt_ids"] == genai["prompt_ids"]
    assert keras_export["generated_ids"] == genai["generated_ids"]
    assert keras_export["generated_ids"] == keras_row["generated_ids"]
    assert "openvino-genai" in keras_export["versions"]
    # One export a row's exporter: genai and optimum-intel share theirs.
    assert genai["export_s"] == optimum["export_s"] > 0
    assert genai["exported"] == optimum["exported"]
    assert keras_export["export_s"] > 0
    assert "export_s" not in keras_row
    # The cached export: the directory the row ran lacks the tokenizer
    # IRs that the export wrote (optimum-intel's IR has none).
    preset = models.preset_dir("gpt2_tiny")
    exported = native.export(preset, "float32", "keras")
    assert exported["exported"] == keras_export["exported"]  # not again
    ran = set(os.listdir(exported["ir"]))
    whole = set(os.listdir(exported["ir"] + "-export"))
    assert whole - ran == {
        "openvino_tokenizer.xml",
        "openvino_tokenizer.bin",
        "openvino_detokenizer.xml",
        "openvino_detokenizer.bin",
    }
    assert {"openvino_model.xml", "config.json"} <= ran
    report_text = (native_run / "report.md").read_text()
    assert "| export s |" in report_text
    section = report_text.split(
        "### openvino-genai on the Keras export vs on optimum-intel's"
    )[1]
    row = f"| {keras_export['label']} | {genai['label']} |"
    (line,) = [line for line in section.splitlines() if row in line]
    assert line.endswith("| yes |")


def test_exports_are_cached_until_asked_again(tmp_path, monkeypatch):
    """An export is made once per preset, exporter and weight format
    (keyed by the exporting code: the package's sources for keras's) and
    keeps the time it took; fresh makes it again."""
    preset = tmp_path / "gpt2_tiny-abc"
    preset.mkdir()
    (preset / "config.json").write_text("{}")
    made = []

    def fake_export(preset, folder, weight_format, ir):
        ir.mkdir(parents=True, exist_ok=True)
        (ir / "openvino_model.xml").write_text(weight_format)
        made.append(weight_format)
        return [1, 2], 1.5 * len(made)

    monkeypatch.setattr(native, "_export_keras", fake_export)
    # The batch rows' prompts, tokenized once beside the export.
    tokenized = []
    monkeypatch.setattr(
        native,
        "_prompts_ids",
        lambda preset: tokenized.append(preset) or [[1, 2], [1, 3, 4]],
    )
    first = native.export(preset, "float32", "keras")
    assert first["prompt_ids"] == [1, 2] and first["export_s"] == 1.5
    assert first["prompts_ids"] == [[1, 2], [1, 3, 4]]
    assert len(tokenized) == 1
    assert native.export(preset, "float32", "keras") == first
    assert native.export(preset, "int8_weights", "keras")["ir"].endswith("int8")
    assert native.export(preset, "float32", "keras", fresh=True)[
        "export_s"
    ] == (4.5)
    assert made == ["float32", "int8", "float32"]
    # Another exporter, or other package sources, another folder.
    assert native._native_dir(preset, "keras") != native._native_dir(preset)
    monkeypatch.setattr(native, "_package_digest", lambda: "edited")
    assert native.export(preset, "float32", "keras")["ir"] != first["ir"]


def test_a_device_the_machine_lacks_gives_a_failed_record(
    presets, native_run, tmp_path
):
    """The export from native_run is reused: only the worker runs."""
    current = environments.CURRENT
    configuration = runner.Configuration(
        "gpt2_tiny", "openvino-genai", "off", current, hint="f32", device="NPU7"
    )
    results = runner.run_all(
        [configuration],
        repeats=1,
        out_dir=tmp_path,
        max_length=10,
        timeout=300,
        log=lambda text: None,
    )
    (run,) = results["runs"]
    assert not run["ok"]
    assert "device NPU7 is not available here" in run["error"]
    assert run["device"] == "NPU7" and run["label"].endswith("on NPU7")


def test_the_native_table_compares_medians_and_token_ids(tmp_path):
    def run(label, repeat, backend, tokens_per_s, ids, dtype="float32"):
        record = _run(label, repeat, tokens_per_s=tokens_per_s)
        record.update(
            backend=backend, dtype=dtype, load_s=1.0, generated_ids=ids
        )
        return record

    runs = [
        run("openvino 1 stock", 0, "openvino", 10.0, [1, 2, 3]),
        run("openvino 1 stock", 1, "openvino", 20.0, [1, 2, 3]),
        run("openvino-genai 1 f32 hint", 0, "openvino-genai", 40.0, [1, 2, 3]),
        run("openvino-genai 1 f32 hint", 1, "openvino-genai", 20.0, [1, 2, 3]),
        run("optimum-intel 1 f32 hint", 0, "optimum-intel", 30.0, [1, 5, 3]),
        # Another weight format: not compared with the float32 rows.
        run(
            "openvino-genai 1 f32 hint, int8",
            0,
            "openvino-genai",
            9,
            [1],
            "int8",
        ),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    text = report.render(path).read_text()
    section = text.split("### Keras vs native OpenVINO")[1].split("###")[0]
    # tokens/s: medians 15 / 30 = 0.50; repeat 0: 10/40, repeat 1: 20/20.
    # Time to first token and peak growth are equal in every run.
    assert (
        "| openvino 1 stock | openvino-genai 1 f32 hint "
        "| 0.50 [0.25-1.00] (15 / 30) | 1.00 [1.00-1.00] (3 / 3) "
        "| 1.00 [1.00-1.00] (60 / 60) | yes |" in section
    )
    assert (
        "| openvino 1 stock | optimum-intel 1 f32 hint | 0.50 (15 / 30) "
        "| 1.00 (3 / 3) | 1.00 (60 / 60) "
        "| no (2/2 run pairs differ; first at new token 1) |" in section
    )
    assert "int8" not in section


def test_the_export_table_sets_genai_on_each_export_side_by_side(tmp_path):
    def run(label, backend, dtype, ids, **values):
        record = _run(label, 0, **values)
        record.update(
            backend=backend,
            dtype=dtype,
            hint="f32",
            device="CPU",
            generated_ids=ids,
        )
        return record

    runs = [
        run("openvino 1 fix", "openvino", "float32", [1, 2]),
        run("genai", "openvino-genai", "float32", [1, 2], export_s=20.0),
        run(
            "keras-export",
            "keras-export",
            "float32",
            [1, 2],
            export_s=10.0,
            tokens_per_s=18.0,
            growth_mb=66,
        ),
        run("genai int8", "openvino-genai", "int8", [1, 2], export_s=30.0),
        run("keras-export int8", "keras-export", "int8", [1, 3], export_s=15.0),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    text = report.render(path, charts=False).read_text()
    # The export column: blank for a Keras row, which runs no export.
    assert "| openvino 1 fix | 90 |" in text and "| 9.0 |  | 1.5 | ? |" in text
    assert "| 18.0 | 10.0 | 1.5 | ? |" in text
    section = text.split(
        "### openvino-genai on the Keras export vs on optimum-intel's"
    )[1].split("###")[0]
    # export s, tokens/s, time to first token, peak growth: keras-export
    # over genai of the same weight format
    assert (
        "| keras-export | genai | 0.50 (10 / 20) | 2.00 (18 / 9) "
        "| 1.00 (3 / 3) | 1.10 (66 / 60) | yes |" in section
    )
    assert (
        "| keras-export int8 | genai int8 | 0.50 (15 / 30) | 1.00 (9 / 9) "
        "| 1.00 (3 / 3) | 1.00 (60 / 60) "
        "| no (1/1 run pairs differ; first at new token 1) |" in section
    )
    assert "| keras-export | genai int8 |" not in section
    # keras-export is a native row of the Keras table too.
    native_table = text.split("### Keras vs native OpenVINO")[1]
    assert "| openvino 1 fix | keras-export |" in native_table


def test_report_says_when_it_draws_no_charts(tmp_path, monkeypatch):
    runs = [_run("openvino 1 stock", 0), _run("openvino 1 fix", 0)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    out = report.render(path, tmp_path / "page.md")
    assert out == tmp_path / "page.md"
    assert "No charts: matplotlib is not installed." in out.read_text()
    assert not list(tmp_path.glob("*.png"))
    tables_only = report.render(path, tmp_path / "tables.md", charts=False)
    assert "No charts" not in tables_only.read_text()


def test_report_states_each_target_met_or_missed(tmp_path):
    """The targets table (issue 41): Keras rows with the fix over
    openvino-genai's f32-hint row of the same weight format, at least 1.0
    x tokens/s, at most 1.0 x time to first token, peak growth and peak
    anon growth; a float32 row's anon growth at most 1.3 x its weights."""

    def run(label, backend, fix, dtype, hint="f32", **values):
        record = _run(label, 0, **values)
        record.update(backend=backend, fix=fix, dtype=dtype, hint=hint)
        return record

    runs = [
        run("genai", "openvino-genai", "off", "float32", tokens_per_s=10.0),
        run("genai int8", "openvino-genai", "off", "int8", tokens_per_s=20.0),
        # float16 is held against the default hint's row, not the f32 one.
        run("genai f16", "openvino-genai", "off", "float16", tokens_per_s=1.0),
        run(
            "genai f16 default",
            "openvino-genai",
            "off",
            "float16",
            "default",
            tokens_per_s=8.0,
        ),
        run("fix f16", "openvino", "on", "float16", tokens_per_s=6.0),
        run("stock", "openvino", "off", "float32", tokens_per_s=1.0),
        # 9.5 / 10 tokens/s; (2 + 2) / (1 + 0.5) s to first token;
        # 70 / 60 MB of peak growth; 48 / 50 MB anon; 48 / 40 MB weights
        run(
            "fix",
            "openvino",
            "on",
            "float32",
            tokens_per_s=9.5,
            load_s=2.0,
            first_s=2.0,
            growth_mb=70,
            anon_growth_mb=48,
            weight_mb=40,
        ),
        run("fix int8", "openvino", "int8", "int8", tokens_per_s=15.0),
        # 15.9 / 20: two decimals would read 0.80, the bound itself
        run(
            "genai w8",
            "openvino-genai",
            "off",
            "int8_weights",
            tokens_per_s=20.0,
        ),
        run("fix w8", "openvino", "int8", "int8_weights", tokens_per_s=19.96),
    ]
    runs[0].update(load_s=1.0, first_s=0.5, anon_growth_mb=50)
    for record in runs[1:]:
        record.setdefault("load_s", 1.0)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(runs)))
    text = report.render(path, charts=False).read_text()
    table = text.split("### Targets: Keras + fix over openvino-genai")[1]
    assert (
        "| fix | 0.95 (at least 1.0: missed) | 2.67 (at most 1.0: missed) "
        "| 1.17 (at most 1.0: missed) | 0.96 (at most 1.0: met) "
        "| 1.20 (at most 1.3: met) |" in table
    )
    # Not float32: no floor; no anon figures: n/a.
    assert "| fix int8 | 0.75 (at least 1.0: missed) |" in table
    assert table.split("| fix int8 |")[1].split("\n")[0].endswith("| n/a | - |")
    # 19.96 / 20: two decimals would read 1.00, the bound itself
    assert "| fix w8 | 0.998 (at least 1.0: missed) |" in table
    assert "| fix f16 | 0.75 (at least 1.0: missed) |" in table
    assert "| stock |" not in table


def test_a_dtype_without_a_native_export_says_so():
    """bfloat16 has no optimum-cli weight format: its native row fails with
    that reason, before any export is started."""
    configuration = runner.Configuration(
        "gpt2_tiny",
        "openvino-genai",
        "off",
        environments.CURRENT,
        "bfloat16",
        "default",
    )
    with pytest.raises(ValueError, match="no native row for bfloat16"):
        runner._native_model(sys.executable, "no-preset", configuration, print)
    keras_export = dataclasses.replace(configuration, backend="keras-export")
    with pytest.raises(ValueError, match="keras_ov_einsum.export exports"):
        runner._native_model(sys.executable, "no-preset", keras_export, print)


def _twins(backbone):
    """Groups of two or more weights with the same bytes, by path."""
    import collections

    groups = collections.defaultdict(list)
    for weight in backbone.weights:
        groups[np.asarray(weight.numpy()).tobytes()].append(weight.path)
    return [paths for paths in groups.values() if len(paths) > 1]


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_benchmark_weights_have_no_twins(family):
    """A fresh keras-hub Llama or Gemma has bitwise-equal kernels (its
    projections clone one seeded initializer), which a native export
    would store and pack once: the harness's presets get distinct ones,
    drawn from each weight's own values."""
    backbone = _tiny_causal_lm(family).backbone
    before = {w.path: np.asarray(w.numpy()) for w in backbone.weights}
    kernels = [p for g in _twins(backbone) for p in g if "kernel" in p]
    assert kernels, "keras-hub no longer makes twins: drop _distinct_weights"
    changed = models._distinct_weights(backbone)
    assert changed > 0
    # What stays twinned is one repeated value (fresh norm scales).
    for paths in _twins(backbone):
        for path in paths:
            (weight,) = [w for w in backbone.weights if w.path == path]
            assert np.unique(np.asarray(weight.numpy())).size == 1, path
    # Each changed weight holds its own values, reordered.
    moved = 0
    for weight in backbone.weights:
        values, old = np.asarray(weight.numpy()), before[weight.path]
        if not np.array_equal(values, old):
            np.testing.assert_array_equal(
                np.sort(values, None), np.sort(old, None)
            )
            moved += 1
    assert moved == changed
    assert models._distinct_weights(backbone) == 0


def test_the_machine_line_names_the_cpus_instruction_sets():
    """Two machines of this project were both "AMD EPYC": one with AVX2
    only, one with AVX512 bfloat16 units, where the CPU plugin computes
    in bfloat16 by default. Results recorded since say which."""
    machine = runner.machine_info()
    assert set(machine["cpu_flags"]) <= set(runner.ISA_FLAGS)
    with open("/proc/cpuinfo") as cpuinfo:
        has_avx2 = " avx2" in cpuinfo.read()
    assert ("avx2" in machine["cpu_flags"]) == has_avx2
    flagged = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512_bf16"]}
    assert report._cpu(flagged) == "AMD EPYC (avx2, avx512_bf16)"
    assert report._cpu({"cpu": "AMD EPYC", "cpu_flags": []}) == (
        "AMD EPYC (no AVX2)"
    )
    # Results recorded before keep their line.
    assert report._cpu({"cpu": "AMD EPYC"}) == "AMD EPYC"


def test_progress_shows_on_a_terminal_only(monkeypatch, capsys):
    """A bar with the runs done and the time left on a terminal, silence
    in a log file or a pipe."""
    import io

    with runner._progress(3) as advance:
        advance()
    assert capsys.readouterr().out == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with runner._progress(3) as advance:
        for _ in range(3):
            advance()
    assert "3/3" in terminal.getvalue()
