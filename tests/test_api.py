"""The public API: enable/disable/enabled/is_enabled/explain and their
guarantees (idempotence, identity on restore, threads, versions, other
backends, import hygiene)."""

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import keras_ov_einsum
from installed import needs_frameworks
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.ops import einsum as einsum_part

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _backend_numpy():
    backend_numpy = backend.module("numpy")

    return backend_numpy


def test_enable_disable_restore_the_identical_function():
    original = _backend_numpy().einsum
    keras_ov_einsum.enable()
    assert keras_ov_einsum.is_enabled()
    patched = _backend_numpy().einsum
    assert patched is not original
    assert patched.__keras_ov_einsum_original__ is original
    keras_ov_einsum.disable()
    assert not keras_ov_einsum.is_enabled()
    assert _backend_numpy().einsum is original


def test_every_hook_is_restored_identical():
    core = backend.module("core")

    backend_numpy = _backend_numpy()
    hooks = [(backend_numpy, name) for name in ("einsum", "matmul", "multiply")]
    hooks += [(core, "slice_update"), (core, "align_operand_types")]
    hooks.append((backend_numpy, "_align_operand_types"))
    originals = [getattr(module, name) for module, name in hooks]
    keras_ov_einsum.enable()
    for (module, name), original in zip(hooks, originals):
        assert getattr(module, name).__keras_ov_einsum_original__ is original
    keras_ov_einsum.disable()
    for (module, name), original in zip(hooks, originals):
        assert getattr(module, name) is original


def test_a_wraps_entry_parts_share_is_installed_once():
    # attention and layer_norm both list part.GENERATE: one wrapper around
    # keras-hub's CausalLM.generate, and stock's back after disable().
    import inspect

    from keras_hub.src.models.causal_lm import CausalLM

    original = inspect.getattr_static(CausalLM, "generate")
    with keras_ov_einsum.enabled(attention=True, layer_norm=True):
        wrapper = inspect.getattr_static(CausalLM, "generate")
        assert wrapper.__keras_ov_einsum_original__ is original
    assert inspect.getattr_static(CausalLM, "generate") is original


def test_a_failing_replace_leaves_the_call_to_stock_and_the_rewrite(
    monkeypatch,
):
    import dataclasses

    from slice_updates import build_slice_update, scatter_index_width

    def broken(*args, **kwargs):
        raise RuntimeError("broken replace")

    from keras_ov_einsum.core import install

    monkeypatch.setattr(
        install,
        "PARTS",
        tuple(
            dataclasses.replace(part, replace=broken)
            if part.name == "slice_update"
            else part
            for part in install.PARTS
        ),
    )
    graph = build_slice_update(
        (None, 10, 2, 32), (None, None, 2, 32), (0, "runtime", 0, 0), fixed=True
    )
    (decision,) = graph.explanation
    assert decision.lowered and "internal error" not in decision.reason
    assert scatter_index_width(graph.model) == 2


def test_enable_twice_is_a_no_op(caplog):
    keras_ov_einsum.enable()
    patched = _backend_numpy().einsum
    with caplog.at_level(logging.INFO, logger="keras_ov_einsum"):
        keras_ov_einsum.enable()
    assert _backend_numpy().einsum is patched
    assert "already enabled" in caplog.text


def test_disable_twice_is_a_no_op():
    original = _backend_numpy().einsum
    keras_ov_einsum.enable()
    keras_ov_einsum.disable()
    keras_ov_einsum.disable()
    assert _backend_numpy().einsum is original


def test_context_manager_restores_on_error():
    original = _backend_numpy().einsum
    with pytest.raises(ZeroDivisionError):
        with keras_ov_einsum.enabled():
            assert keras_ov_einsum.is_enabled()
            1 / 0
    assert not keras_ov_einsum.is_enabled()
    assert _backend_numpy().einsum is original


def test_context_manager_keeps_an_outer_enable():
    keras_ov_einsum.enable()
    with keras_ov_einsum.enabled():
        pass
    assert keras_ov_einsum.is_enabled()


def test_threads_enabling_at_once_leave_one_patch():
    original = _backend_numpy().einsum
    start = threading.Barrier(8)

    def enable():
        start.wait()
        keras_ov_einsum.enable()

    threads = [threading.Thread(target=enable) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _backend_numpy().einsum.__keras_ov_einsum_original__ is original
    keras_ov_einsum.disable()
    assert _backend_numpy().einsum is original


def test_explain_lists_lowered_and_declined_with_reasons(caplog):
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    kernel = keras.Variable(np.ones((8, 4), "float32"))
    parameter = ov_opset.parameter([-1, 8], ov.Type.f32)
    x = OpenVINOKerasTensor(parameter.output(0))
    with caplog.at_level(logging.DEBUG, logger="keras_ov_einsum"):
        with keras_ov_einsum.enabled():
            keras.ops.einsum("bd,dn->bn", x, kernel)
            keras.ops.einsum("bd,cd->bc", x, x)
    first, second = keras_ov_einsum.explain()
    assert (first.equation, first.lowered) == ("bd,dn->bn", True)
    assert first.shapes == ((None, 8), (8, 4))
    assert first.dtypes == ("float32", "float32")
    assert (second.equation, second.lowered) == ("bd,cd->bc", False)
    assert second.reason == "no operand is a constant kernel"
    text = str(keras_ov_einsum.explain())
    assert "2 call(s): 1 lowered, 1 left on the stock path" in text
    assert "'bd,cd->bc' (float32[None, 8], float32[None, 8]): stock" in text
    assert "no operand is a constant kernel" in caplog.text
    # A new enable() starts a new record.
    keras_ov_einsum.enable()
    assert keras_ov_einsum.explain() == ()


def test_eager_call_on_two_constants_equals_stock():
    import keras

    a = np.arange(6, dtype="float32").reshape(2, 3)
    b = np.arange(12, dtype="float32").reshape(3, 4)
    want = keras.ops.convert_to_numpy(keras.ops.einsum("ij,jk->ik", a, b))
    with keras_ov_einsum.enabled():
        got = keras.ops.convert_to_numpy(keras.ops.einsum("ij,jk->ik", a, b))
        (decision,) = keras_ov_einsum.explain()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, a @ b)
    assert "both operands are constants" in decision.reason


def test_stock_errors_are_kept():
    import keras

    a = np.ones((2, 3), "float32")
    for equation, operands in [
        ("ij,jk->ik", (a, np.ones((4, 5), "float32"))),  # label sizes
        ("ij,jk->ik", (a,)),  # operand count
        ("ij,,jk->ik", (a, a)),  # malformed
    ]:
        with pytest.raises(Exception) as stock:
            keras.ops.einsum(equation, *operands)
        with keras_ov_einsum.enabled():
            with pytest.raises(type(stock.value)):
                keras.ops.einsum(equation, *operands)


def test_an_internal_error_falls_back_to_stock(monkeypatch, caplog):
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    def broken(subscripts, inputs):
        raise RuntimeError("boom")

    monkeypatch.setattr(einsum_part, "plan_einsum", broken)
    kernel = keras.Variable(np.ones((8, 4), "float32"))
    parameter = ov_opset.parameter([-1, 8], ov.Type.f32)
    with keras_ov_einsum.enabled():
        y = keras.ops.einsum(
            "bd,dn->bn", OpenVINOKerasTensor(parameter.output(0)), kernel
        )
    (decision,) = keras_ov_einsum.explain()
    assert not decision.lowered and "boom" in decision.reason
    assert "Einsum" in [
        n.get_type_name()
        for n in ov.Model([y.output], [parameter]).get_ordered_ops()
    ]
    assert "kept on the stock path" in caplog.text


def test_old_keras_is_refused_before_anything_is_touched(monkeypatch):
    import keras

    original = _backend_numpy().einsum
    monkeypatch.setattr(keras, "__version__", "3.11.3")
    with pytest.raises(keras_ov_einsum.UnsupportedVersionError) as error:
        keras_ov_einsum.enable()
    assert "found keras 3.11.3 and openvino 20" in str(error.value)
    assert "supported: keras>=3.12.0, openvino>=2025.3.0" in str(error.value)
    assert _backend_numpy().einsum is original
    assert not keras_ov_einsum.is_enabled()


def test_a_backend_without_the_hook_is_refused(monkeypatch):
    monkeypatch.delattr(_backend_numpy(), "einsum")
    with pytest.raises(
        keras_ov_einsum.UnsupportedVersionError, match=r"numpy\.einsum"
    ):
        keras_ov_einsum.enable()
    assert not keras_ov_einsum.is_enabled()


def _run(script, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_import_does_not_import_other_frameworks_or_keras():
    out = _run(
        """
        import sys
        import keras_ov_einsum
        print(sorted(m for m in ("tensorflow", "torch", "jax", "keras")
                     if m in sys.modules))
        """,
        "openvino",
    )
    assert out.strip() == "[]"


def test_enable_before_importing_keras():
    out = _run(
        """
        import keras_ov_einsum
        keras_ov_einsum.enable()
        import keras
        from keras_ov_einsum.core import backend
        backend_numpy = backend.module("numpy")
        print(hasattr(backend_numpy.einsum, "__keras_ov_einsum_original__"))
        """,
        "openvino",
    )
    assert out.strip() == "True"


@needs_frameworks
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_other_backends_are_left_alone_with_a_warning(backend):
    if importlib.util.find_spec(backend) is None:
        # keras runs on a backend only with its framework installed.
        pytest.skip(f"{backend} is not installed: no Keras backend to try")
    out = _run(
        """
        import warnings
        import numpy as np
        import keras_ov_einsum
        import keras
        from keras.src import backend
        before = backend.numpy.einsum
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            keras_ov_einsum.enable()
            # Even a set of parts that would be refused on OpenVINO: the
            # backend is checked first, as for every call.
            keras_ov_einsum.enable(int8=True, einsum=False)
        assert not keras_ov_einsum.is_enabled()
        assert backend.numpy.einsum is before
        warning, again = [
            w for w in caught if "keras_ov_einsum" in str(w.message)
        ]
        a = np.arange(6, dtype="float32").reshape(2, 3)
        b = np.arange(12, dtype="float32").reshape(3, 4)
        y = keras.ops.convert_to_numpy(keras.ops.einsum("ij,jk->ik", a, b))
        np.testing.assert_array_equal(y, a @ b)
        keras_ov_einsum.disable()
        print(warning.message)
        """,
        backend,
    )
    assert f"the Keras backend is '{backend}', not 'openvino'" in out


def test_each_part_can_be_switched_off():
    backend_numpy = _backend_numpy()
    einsum, matmul = backend_numpy.einsum, backend_numpy.matmul
    with keras_ov_einsum.enabled(einsum=False):
        assert backend_numpy.einsum is einsum
        assert backend_numpy.matmul.__keras_ov_einsum_original__ is matmul
    with keras_ov_einsum.enabled(matmul=False):
        assert backend_numpy.matmul is matmul
        assert backend_numpy.einsum.__keras_ov_einsum_original__ is einsum
    assert (backend_numpy.einsum, backend_numpy.matmul) == (einsum, matmul)


def test_explain_says_when_it_dropped_old_calls(monkeypatch):
    from keras_ov_einsum.core import decisions

    monkeypatch.setattr(
        decisions, "_records", decisions.collections.deque(maxlen=3)
    )
    decisions.clear()
    for index in range(5):
        decisions.record(
            keras_ov_einsum.Decision(f"call {index}", (), (), False, "why")
        )
    explanation = keras_ov_einsum.explain()
    assert [d.equation for d in explanation] == ["call 2", "call 3", "call 4"]
    assert explanation.dropped == 2
    assert "(the last 3; 2 older call(s) dropped)" in str(explanation)
    decisions.clear()
    assert keras_ov_einsum.explain().dropped == 0


def test_nested_enabled_switches_parts_and_restores_the_outer_set():
    backend_numpy = _backend_numpy()
    einsum = backend_numpy.einsum
    keras_ov_einsum.enable(einsum=False)
    try:
        assert backend_numpy.einsum is einsum
        with keras_ov_einsum.enabled(einsum=True):
            assert backend_numpy.einsum.__keras_ov_einsum_original__ is einsum
        assert keras_ov_einsum.is_enabled()
        assert backend_numpy.einsum is einsum  # the outer set again
    finally:
        keras_ov_einsum.disable()


def test_enable_with_other_parts_while_enabled_warns():
    keras_ov_einsum.enable()
    try:
        with pytest.warns(UserWarning, match="already enabled with other"):
            keras_ov_einsum.enable(matmul=False)
    finally:
        keras_ov_einsum.disable()


def test_every_part_off_warns_and_patches_nothing():
    from keras_ov_einsum.core.registry import default_switches

    off = dict.fromkeys(default_switches(), False)
    with pytest.warns(UserWarning, match="every part off patches nothing"):
        keras_ov_einsum.enable(**off)
    assert not keras_ov_einsum.is_enabled()


def test_an_unknown_part_is_a_type_error():
    with pytest.raises(TypeError, match="unknown part.*einsun"):
        keras_ov_einsum.enable(einsun=False)


def test_an_untested_keras_is_patched_with_a_warning(monkeypatch):
    import keras

    monkeypatch.setattr(keras, "__version__", "4.0.0")
    with pytest.warns(UserWarning, match="not been tested with keras 4.0.0"):
        keras_ov_einsum.enable()
    assert keras_ov_einsum.is_enabled()
    keras_ov_einsum.disable()
