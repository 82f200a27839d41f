"""The compiled_cache part: a step model stored once is imported by the
next model with the same key, in this process or another, and never by a
model whose weights, parts or stored bytes differ."""

import json
import os
import subprocess
import sys

import causal_lms
import numpy as np
import pytest

import keras_ov_einsum
from keras_ov_einsum.parts.generate import compiled_cache, stepwise


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(compiled_cache.CACHE_DIR_ENV, str(tmp_path))
    return tmp_path


def _generate(causal_lm, **switches):
    """Tokens and the part's decisions of one call of a new generate
    function (as a new process's model has)."""
    causal_lm.generate_function = None
    switches = {"stepwise": True, "compiled_cache": True, **switches}
    with keras_ov_einsum.enabled(**switches):
        out = causal_lm.generate(causal_lms.prompt(), stop_token_ids=None)
        explanation = keras_ov_einsum.explain()
    made = [d for d in explanation if d.equation == stepwise.LABEL]
    if not all(d.lowered for d in made):
        pytest.skip(f"the step model does not run here: {made}")
    cached = [d for d in explanation if d.equation == compiled_cache.LABEL]
    return np.asarray(out["token_ids"]).tolist(), cached


def _uncached(causal_lm):
    causal_lm.generate_function = None
    with keras_ov_einsum.enabled(stepwise=True):
        out = causal_lm.generate(causal_lms.prompt(), stop_token_ids=None)
    return np.asarray(out["token_ids"]).tolist()


def _traces(monkeypatch):
    """Counts the step model's traces."""
    traced = []
    trace = stepwise.trace_step_model

    def counted(causal_lm):
        traced.append(causal_lm)
        return trace(causal_lm)

    monkeypatch.setattr(stepwise, "trace_step_model", counted)
    return traced


def _entries(folder):
    return sorted(path.stem for path in folder.glob("*.json"))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_same_model_is_imported_not_traced(family, folder, monkeypatch):
    expected = _uncached(causal_lms.causal_lm(family))
    traces = _traces(monkeypatch)
    first, stored = _generate(causal_lms.causal_lm(family))
    (key,) = _entries(folder)
    second, imported = _generate(causal_lms.causal_lm(family))
    assert first == expected and second == expected
    assert len(traces) == 1
    assert [d.reason for d in stored] == [
        f"traced, compiled and stored as entry {key}"
    ]
    assert [d.reason for d in imported] == [
        f"imported entry {key} from {folder}"
    ]
    assert _entries(folder) == [key]


def test_other_weights_are_another_entry(folder):
    _generate(causal_lms.causal_lm("gpt2", seed=0))
    others = causal_lms.causal_lm("gpt2", seed=1)
    expected = _uncached(others)
    tokens, decisions = _generate(others)
    assert tokens == expected
    assert "stored as entry" in decisions[0].reason
    assert len(_entries(folder)) == 2


def test_assigned_weights_are_never_imported_stale(folder):
    causal_lm = causal_lms.causal_lm("gpt2")
    others = causal_lms.causal_lm("gpt2", seed=1)
    _generate(causal_lm)
    # One weight: the token embedding, which the logits read too.
    embedding = causal_lm.backbone.token_embedding.embeddings
    embedding.assign(others.backbone.token_embedding.embeddings.numpy())
    expected = _uncached(causal_lm)
    tokens, decisions = _generate(causal_lm)
    assert tokens == expected
    assert "stored as entry" in decisions[0].reason
    assert len(_entries(folder)) == 2


def test_other_parts_are_another_entry(folder):
    _generate(causal_lms.causal_lm("gpt2"))
    _, decisions = _generate(causal_lms.causal_lm("gpt2"), layer_norm=False)
    assert "stored as entry" in decisions[0].reason
    assert len(_entries(folder)) == 2


@pytest.mark.parametrize("damage", ["a changed byte", "a cut blob", "bad json"])
def test_a_damaged_entry_is_removed_and_built_again(damage, folder):
    expected, _ = _generate(causal_lms.causal_lm("gpt2"))
    (key,) = _entries(folder)
    blob, entry = folder / f"{key}.blob", folder / f"{key}.json"
    data = bytearray(blob.read_bytes())
    if damage == "a changed byte":
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    elif damage == "a cut blob":
        blob.write_bytes(bytes(data[: len(data) // 2]))
    else:
        entry.write_text(entry.read_text()[:-10])
    tokens, decisions = _generate(causal_lms.causal_lm("gpt2"))
    assert tokens == expected
    reasons = [d.reason for d in decisions]
    assert reasons[0].startswith(f"entry {key} did not import (")
    assert reasons[0].endswith("): removed")
    assert not decisions[0].lowered
    assert reasons[1] == f"traced, compiled and stored as entry {key}"
    # Stored again whole: the next model imports it.
    _, decisions = _generate(causal_lms.causal_lm("gpt2"))
    assert decisions[0].reason.startswith(f"imported entry {key}")


def test_an_unwritable_folder_still_generates(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(compiled_cache.CACHE_DIR_ENV, str(blocked / "cache"))
    causal_lm = causal_lms.causal_lm("gpt2")
    expected = _uncached(causal_lm)
    tokens, (decision,) = _generate(causal_lm)
    assert tokens == expected
    assert not decision.lowered
    assert "not stored" in decision.reason


_SCRIPT = """
import json, sys
import numpy as np
import causal_lms, keras_ov_einsum
from keras_ov_einsum.parts.generate import compiled_cache
causal_lm = causal_lms.causal_lm("llama")
with keras_ov_einsum.enabled(stepwise=True, compiled_cache=True):
    out = causal_lm.generate(causal_lms.prompt(), stop_token_ids=None)
    reasons = [d.reason for d in keras_ov_einsum.explain()
               if d.equation == compiled_cache.LABEL]
print(json.dumps([np.asarray(out["token_ids"]).tolist(), reasons]))
"""


def test_a_second_process_imports_the_first_ones_entry(folder):
    """The key is the same in another process (OpenVINO's CACHE_DIR key,
    the serialized trace, is not)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(
        os.environ,
        KERAS_BACKEND="openvino",
        PYTHONPATH=os.pathsep.join([os.path.dirname(tests), tests]),
    )

    def run():
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first_tokens, first = run()
    second_tokens, second = run()
    (key,) = _entries(folder)
    assert first == [f"traced, compiled and stored as entry {key}"]
    assert second == [f"imported entry {key} from {folder}"]
    assert first_tokens == second_tokens
    saved = json.loads((folder / f"{key}.json").read_text())
    assert saved["layout"]["layers"] == 2
    assert saved["blob_bytes"] == (folder / f"{key}.blob").stat().st_size
