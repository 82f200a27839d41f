"""The part contract's extension points, guard and requirements: a part
added by its declaration alone (no other module touched) registers a pass
at the step model's trace, replaces a function under the guard, and is
switched with the parts it requires."""

import sys
import types

import pytest
from causal_lms import causal_lm

import keras_ov_einsum
from keras_ov_einsum.core import install, registry
from keras_ov_einsum.core.context import as_in_generate
from keras_ov_einsum.core.part import ExtensionPoint, Hook, Part
from keras_ov_einsum.parts.generate import stepwise

_MARK = "toy_pass"


def _with_parts(monkeypatch, *parts):
    """The registry with ``parts`` added at its end, as one registry line
    would add them."""
    every = registry.PARTS + parts
    monkeypatch.setattr(registry, "PARTS", every)
    monkeypatch.setattr(install, "PARTS", every)


def _marking_pass(trace, causal_lm, **options):
    model, layout = trace(causal_lm, **options)
    model.set_rt_info("yes", _MARK)
    return model, layout


def _failing_pass(trace, causal_lm, **options):
    raise RuntimeError("toy pass broke")


def test_a_pass_at_the_step_models_trace(monkeypatch):
    _with_parts(
        monkeypatch,
        Part(
            name="toy",
            summary="marks the step model",
            default=False,
            requires=("stepwise",),
            passes=((stepwise.TRACE, _marking_pass),),
        ),
    )
    model = causal_lm("gpt2")
    with keras_ov_einsum.enabled(toy=True), as_in_generate():
        traced, layout = stepwise.trace_step_model(model)
    assert traced.has_rt_info(_MARK)
    # The parts' own passes ran inside it: the caches are in state
    # (the attention is fused inside generate()).
    assert layout.in_state
    with keras_ov_einsum.enabled():
        traced, _ = stepwise.trace_step_model(model)
    assert not traced.has_rt_info(_MARK)


def test_a_failing_pass_falls_back_to_the_function_inside_it(monkeypatch):
    _with_parts(
        monkeypatch,
        Part(
            name="toy",
            summary="fails",
            default=False,
            passes=((stepwise.TRACE, _failing_pass),),
        ),
    )
    model = causal_lm("gpt2")
    with keras_ov_einsum.enabled(toy=True), as_in_generate():
        traced, layout = stepwise.trace_step_model(model)
        errors = [
            decision
            for decision in keras_ov_einsum.explain()
            if "toy pass broke" in decision.reason
        ]
    assert layout.in_state  # what the passes inside it built
    (error,) = errors
    assert not error.lowered and "stepwise.trace" in error.equation


def test_a_pass_at_a_point_of_its_own(monkeypatch):
    point = ExtensionPoint("toy.point", "a toy's point")
    calls = []

    def plus_one(next_value, x):
        calls.append(x)
        return next_value(x) + 1

    _with_parts(
        monkeypatch,
        Part(
            name="toy",
            summary="adds one",
            default=False,
            passes=((point, plus_one),),
        ),
        Part(
            name="toy_twice",
            summary="again",
            default=False,
            passes=((point, plus_one),),
        ),
    )
    from keras_ov_einsum.core.extension import extended

    assert extended(point, lambda x: x * 10)(2) == 20
    with keras_ov_einsum.enabled(toy=True, toy_twice=True):
        assert extended(point, lambda x: x * 10)(2) == 22
    with keras_ov_einsum.enabled(toy=True):
        assert extended(point, lambda x: x * 10)(2) == 21
    assert calls == [2, 2, 2]


@pytest.fixture
def toy_module(monkeypatch):
    """A module whose ``function`` a toy part replaces."""
    module = types.ModuleType("keras_ov_einsum_toy")
    module.calls = []

    def function(x):
        module.calls.append(x)
        if x < 0:
            raise ValueError("stock refuses negatives")
        return x * 2

    module.function = function
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def _replacing(behaviour):
    def factory(stock):
        def replacement(x):
            return behaviour(stock, x)

        return replacement

    return factory


def _toy_wraps(monkeypatch, module, behaviour):
    _with_parts(
        monkeypatch,
        Part(
            name="toy",
            summary="replaces function",
            default=False,
            wraps=((Hook(module.__name__, "function"), _replacing(behaviour)),),
        ),
    )


def test_the_guard_falls_back_to_stock_on_a_parts_error(
    monkeypatch, toy_module
):
    def broken(stock, x):
        raise RuntimeError("toy replacement broke")

    _toy_wraps(monkeypatch, toy_module, broken)
    with keras_ov_einsum.enabled(toy=True):
        assert toy_module.function(3) == 6
        (decision,) = keras_ov_einsum.explain()
    assert "toy replacement broke" in decision.reason
    assert not decision.lowered


def test_the_guard_passes_a_stock_error_through_once(monkeypatch, toy_module):
    def through_stock(stock, x):
        return stock(x) + 1

    _toy_wraps(monkeypatch, toy_module, through_stock)
    with keras_ov_einsum.enabled(toy=True):
        assert toy_module.function(3) == 7
        with pytest.raises(ValueError, match="refuses negatives"):
            toy_module.function(-1)
        assert not keras_ov_einsum.explain()
    assert toy_module.calls == [3, -1]  # stock ran once a call


def test_the_guard_keeps_a_classmethod_a_classmethod(monkeypatch):
    class Owner:
        @classmethod
        def make(cls, x):
            return (cls.__name__, x)

    module = types.ModuleType("keras_ov_einsum_toy_class")
    module.Owner = Owner
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def factory(stock):
        assert isinstance(stock, classmethod)

        def make(cls, x):
            raise RuntimeError("toy broke")

        return classmethod(make)

    _with_parts(
        monkeypatch,
        Part(
            name="toy",
            summary="replaces a classmethod",
            default=False,
            wraps=((Hook(module.__name__, "Owner.make"), factory),),
        ),
    )
    with keras_ov_einsum.enabled(toy=True):
        assert Owner.make(1) == ("Owner", 1)
    assert Owner.make(2) == ("Owner", 2)


def test_a_part_left_at_its_default_follows_what_it_requires():
    with keras_ov_einsum.enabled(stepwise=False):
        from keras_ov_einsum.core import in_force

        on = in_force.switches()
    assert not on["layer_caches"] and not on["state_caches"]
    assert not on["half_weights"] and on["einsum"]


def test_a_part_switched_on_without_what_it_requires_is_refused():
    with pytest.raises(ValueError, match="layer_caches=True needs stepwise"):
        keras_ov_einsum.enable(stepwise=False, layer_caches=True)


def test_no_part_module_imports_the_installer():
    """Parts ask about the switches in force (``Part.is_on``) and extend
    one another at extension points, never through the installer."""
    import pathlib
    import re

    package = pathlib.Path(keras_ov_einsum.__file__).parent
    imports = re.compile(r"import install|core\.install|import patch")
    offenders = [
        str(path.relative_to(package))
        for path in (package / "parts").rglob("*.py")
        if imports.search(path.read_text())
    ]
    assert offenders == []


def test_every_part_declares_what_it_extends():
    """A pass names its point's owner among the parts it requires or the
    point's owner is on by default: no pass waits on an opt-in part that
    is not required."""
    parts = registry.by_name()
    for part in registry.PARTS:
        for point, _ in part.passes:
            owner = point.name.split(".")[0]
            assert owner in parts, (part.name, point)
            assert owner in part.requires or parts[owner].default, (
                part.name,
                point,
            )


def test_every_part_module_is_registered_in_its_order():
    """PARTS is collected from the registry's imports: a module under
    parts/ that declares a PART but is not imported there would be
    silently missing. int8's rewrites come before the einsum and matmul
    parts they replace for int8 products."""
    import importlib
    import pathlib

    package = pathlib.Path(keras_ov_einsum.__file__).parent
    declared = set()
    for path in sorted((package / "parts").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        dotted = ".".join(
            path.relative_to(package.parent).with_suffix("").parts
        )
        module = importlib.import_module(dotted)
        if isinstance(getattr(module, "PART", None), Part):
            declared.add(module.PART.name)
    names = [part.name for part in registry.PARTS]
    assert sorted(names) == sorted(declared)
    assert len(names) == len(set(names))
    for lowered in ("einsum", "matmul"):
        assert names.index("int8") < names.index(lowered)
