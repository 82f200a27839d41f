"""The harness's workloads: --new-tokens and --batch, from the command line
to the worker commands, the records and the report's rows. Timings are
never asserted."""

import json

import pytest
from harness_runs import compare, configuration, configurations

from benchmarks import (
    cli,
    environments,
    models,
    native_worker,
    report,
    runner,
    worker,
)
from installed import needs_harness

pytestmark = needs_harness

CURRENT = environments.current_openvino()


def test_new_tokens_and_batch_are_rows_of_their_own(monkeypatch, tmp_path):
    configs = configurations(
        monkeypatch,
        tmp_path,
        "--backends",
        "openvino,openvino-genai",
        "--fix",
        "on",
        "--new-tokens",
        "8,256",
        "--batch",
        "1,4",
    )
    assert [(c.new_tokens, c.batch) for c in configs] == [
        (8, 1),
        (8, 1),
        (8, 4),
        (8, 4),
        (256, 1),
        (256, 1),
        (256, 4),
        (256, 4),
    ]
    labels = [c.label for c in configs]
    assert len(set(labels)) == len(labels)
    assert labels[:2] == [
        f"openvino {CURRENT} fix, 8 new tokens",
        f"openvino-genai {CURRENT} f32 hint, 8 new tokens",
    ]
    assert labels[-2:] == [
        f"openvino {CURRENT} fix, 256 new tokens, batch 4",
        f"openvino-genai {CURRENT} f32 hint, 256 new tokens, batch 4",
    ]
    # Stock of the same workload, for the improvement table.
    assert configs[-2].stock_label == (
        f"openvino {CURRENT} stock, 256 new tokens, batch 4"
    )


def test_without_the_options_rows_are_as_before(monkeypatch, tmp_path):
    configs = configurations(
        monkeypatch, tmp_path, "--backends", "openvino", "--dtype", "int8"
    )
    assert [(c.new_tokens, c.batch) for c in configs] == [(None, 1)] * 2
    assert [c.label for c in configs] == [
        f"openvino {CURRENT} stock, int8",
        f"openvino {CURRENT} fix, int8",
    ]
    # A batch alone keeps --max-length's length.
    (config,) = configurations(
        monkeypatch, tmp_path, "--backends", "jax", "--batch", "3"
    )
    assert (config.new_tokens, config.batch) == (None, 3)
    assert config.label == "jax, batch 3"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--new-tokens", "0"], "'0' is not a positive integer"),
        (["--new-tokens", "many"], "'many' is not a positive integer"),
        (["--batch", "2,-1"], "'-1' is not a positive integer"),
        (["--batch", "9"], "--batch 9: there are 8 prompts"),
    ],
)
def test_compare_rejects_impossible_workloads(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--model", "gpt2_tiny", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _option(command, name):
    """Every value given to option ``name`` in ``command``."""
    return [command[i + 1] for i, item in enumerate(command) if item == name]


def test_the_keras_worker_is_told_the_workload():
    command, _ = runner._keras_command(
        "python", "preset", configuration("openvino"), 10
    )
    assert _option(command, "--max-length") == ["10"]
    assert not _option(command, "--new-tokens") + _option(command, "--batch")
    command, _ = runner._keras_command(
        "python",
        "preset",
        configuration("openvino", new_tokens=256, batch=4),
        10,
    )
    assert _option(command, "--new-tokens") == ["256"]
    assert _option(command, "--batch") == ["4"]
    assert not _option(command, "--max-length")


EXPORTED = {
    "ir": "ir",
    "prompt_ids": [1, 2],
    "prompts_ids": [[1, 2], [1, 3, 4], [1, 5, 6, 7, 8], [1], [1, 9]],
}


def test_the_native_worker_gets_each_prompt_and_the_new_tokens():
    command, _ = runner._native_command(
        "python", EXPORTED, configuration("openvino-genai"), 10
    )
    assert _option(command, "--prompt-ids") == ["1,2"]
    assert _option(command, "--new-tokens") == ["8"]  # 10 - 2, as before
    command, _ = runner._native_command(
        "python",
        EXPORTED,
        configuration("openvino-genai", new_tokens=256, batch=4),
        10,
    )
    assert _option(command, "--prompt-ids") == [
        "1,2",
        "1,3,4",
        "1,5,6,7,8",
        "1",
    ]
    assert _option(command, "--new-tokens") == ["256"]
    # A batch under --max-length: what it leaves after the longest prompt.
    command, _ = runner._native_command(
        "python", EXPORTED, configuration("optimum-intel", batch=3), 10
    )
    assert _option(command, "--new-tokens") == ["5"]


def test_the_workers_parse_the_workload(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        worker, "measure", lambda *arguments: calls.append(arguments) or {}
    )
    result = ["--result", str(tmp_path / "result.json")]
    worker.main(
        ["--preset", "p", "--new-tokens", "256", "--batch", "4"] + result
    )
    worker.main(["--preset", "p"] + result)
    assert calls == [
        ("p", None, 10, "float32", 256, 4),
        ("p", None, 10, "float32", None, 1),
    ]
    calls.clear()
    monkeypatch.setattr(
        native_worker,
        "measure",
        lambda *arguments: calls.append(arguments) or {},
    )
    common = ["--model-dir", "ir", "--backend", "openvino-genai"] + result
    native_worker.main(common + ["--prompt-ids", "1,2", "--new-tokens", "3"])
    native_worker.main(
        common
        + ["--prompt-ids", "1,2", "--prompt-ids", "4", "--new-tokens", "3"]
    )
    native_worker.main(
        common
        + ["--prompt-ids", "1", "--new-tokens", "3", "--cache-dir", "cache"]
    )
    # (prompts, new tokens, CACHE_DIR: none unless asked)
    assert [call[4:] for call in calls] == [
        ([1, 2], 3, ""),
        ([[1, 2], [4]], 3, ""),
        ([1], 3, "cache"),
    ]


def test_a_batch_is_left_padded_for_the_native_pipelines():
    ids, mask = native_worker._left_padded([[1, 2], [3], [4, 5, 6]])
    assert ids.tolist() == [[0, 1, 2], [0, 0, 3], [4, 5, 6]]
    assert mask.tolist() == [[0, 1, 1], [0, 0, 1], [1, 1, 1]]


def _record(label, backend, workload, ids, tokens_per_s, fix="off"):
    new_tokens, batch = workload
    return {
        "model": "m",
        "label": label,
        "repeat": 0,
        "ok": True,
        "error": None,
        "backend": backend,
        "fix": fix,
        "dtype": "float32",
        "hint": None if backend == "openvino" else "f32",
        "requested_new_tokens": new_tokens,
        "batch": batch,
        "timeline": [(0.0, 100.0), (1.0, 150.0)],
        "load_s": 1.0,
        "first_s": 1.0,
        "second_s": 1.0,
        "growth_mb": 60,
        "peak_rss_mb": 200,
        "new_tokens": 8,
        "tokens_per_s": tokens_per_s,
        "generated_ids": ids,
    }


def test_the_report_pairs_rows_of_the_same_workload(tmp_path):
    runs = [
        _record("fix, 8", "openvino", (8, 1), [1, 2], 9.5, "on"),
        _record("genai, 8", "openvino-genai", (8, 1), [1, 2], 10.0),
        _record("fix, 8, batch 2", "openvino", (8, 2), [[1], [2]], 4.0, "on"),
        _record("genai, 8, batch 2", "openvino-genai", (8, 2), [[1], [3]], 5.0),
    ]
    results = {
        "created": "2026-12-08T00:00:00",
        "command": "python -m benchmarks x",
        "commit": "abc",
        "parameters": {
            "repeats": 1,
            "max_length": 10,
            "new_tokens": [8],
            "batch": [1, 2],
        },
        "machine": {"cpu": "cpu", "cores": 2, "ram_gb": 24},
        "runs": runs,
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    text = report.render(path, charts=False).read_text()
    assert "N new tokens: 8 (the native rows: N); batch B:" in text
    native = text.split("### Keras vs native OpenVINO")[1].split("###")[0]
    assert "| fix, 8 | genai, 8 | 0.95 (9.5 / 10) |" in native
    assert native.count("| fix, 8 | genai, 8 |") == 1
    assert "| fix, 8 | genai, 8, batch 2 |" not in native
    assert "| fix, 8, batch 2 | genai, 8 |" not in native
    (line,) = [row for row in native.splitlines() if "batch 2 |" in row]
    assert line.startswith("| fix, 8, batch 2 | genai, 8, batch 2 | 0.80 ")
    assert line.endswith(
        "| no (1/1 run pairs differ; first at row 1, new token 0) |"
    )
    table = text.split("### Targets: Keras + fix over openvino-genai")[1]
    assert "| fix, 8 | 0.95 (at least 1.0: missed) |" in table
    assert "| fix, 8, batch 2 | 0.80 (at least 1.0: missed) |" in table


def test_a_ragged_batch_generates_genai_s_tokens_row_by_row(presets, tmp_path):
    """Keras with the fix and genai on the same weights, 3 new tokens, one
    prompt and a batch of 3 of different lengths: every row's tokens are
    genai's, counted N a row on both sides."""
    completed = compare(
        tmp_path,
        "--backends",
        "openvino,openvino-genai",
        "--fix",
        "on",
        "--new-tokens",
        "3",
        "--batch",
        "1,3",
        "--repeats",
        "1",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["parameters"]["new_tokens"] == [3]
    assert results["parameters"]["batch"] == [1, 3]
    keras_one, genai_one, keras_batch, genai_batch = results["runs"]
    assert (
        keras_batch["label"] == f"openvino {CURRENT} fix, 3 new tokens, batch 3"
    )
    for run in results["runs"]:
        assert run["ok"], run["error"]
    assert keras_one["new_tokens"] == genai_one["new_tokens"] == 3
    assert keras_one["generated_ids"] == genai_one["generated_ids"]
    assert len(keras_one["generated_ids"]) == 3
    # The batch: models.PROMPTS' first 3, of different lengths.
    lengths = [len(ids) for ids in keras_batch["prompt_ids"]]
    assert len(set(lengths)) == 3 and lengths[0] == 2
    assert keras_batch["prompt_ids"] == genai_batch["prompt_ids"]
    assert keras_batch["prompt_ids"][0] == keras_one["prompt_ids"]
    assert keras_batch["new_tokens"] == genai_batch["new_tokens"] == 3 * 3
    assert keras_batch["max_length"] == max(lengths) + 3
    assert keras_batch["surplus_tokens"] == sum(
        max(lengths) - n for n in lengths
    )
    assert [len(row) for row in genai_batch["generated_ids"]] == [3, 3, 3]
    assert keras_batch["generated_ids"] == genai_batch["generated_ids"]
    # Alone or in a batch, the first prompt's tokens are the same.
    assert keras_batch["generated_ids"][0] == keras_one["generated_ids"]
    assert len(keras_batch["first_text"]) == 3
    text = (tmp_path / "report.md").read_text()
    native = text.split("### Keras vs native OpenVINO")[1].split("###")[0]
    for keras_row, genai_row in [
        (keras_one, genai_one),
        (keras_batch, genai_batch),
    ]:
        (line,) = [
            row
            for row in native.splitlines()
            if row.startswith(
                f"| {keras_row['label']} | {genai_row['label']} |"
            )
        ]
        assert line.endswith("| yes |")
    assert models.PROMPTS[0] == models.PROMPT


def test_fix_auto_takes_the_part_each_weight_format_needs(
    monkeypatch, tmp_path
):
    configs = configurations(
        monkeypatch,
        tmp_path,
        "--backends",
        "openvino",
        "--fix",
        "off,auto,on",
        "--dtype",
        "float32,int8_weights,int4",
    )
    assert [(c.dtype, c.fix) for c in configs] == [
        ("float32", "off"),
        ("float32", "on"),  # auto is on here: one row, not two
        ("int8_weights", "off"),
        ("int8_weights", "int8"),
        ("int8_weights", "on"),
        ("int4", "off"),
        ("int4", "int4"),
        ("int4", "on"),
    ]
