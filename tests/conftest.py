import os

# The suite runs on the OpenVINO backend; the backend is fixed at the first
# `import keras`, so this must come before any test module imports it.
os.environ.setdefault("KERAS_BACKEND", "openvino")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

import keras_ov_einsum  # noqa: E402


@pytest.fixture(autouse=True)
def _stock_backend_between_tests():
    """Every test starts and ends on the stock backend."""
    keras_ov_einsum.disable()
    yield
    keras_ov_einsum.disable()


@pytest.fixture(params=["replace", "stock first"])
def part_paths(request, monkeypatch):
    """A part's lowering both ways: built before stock by its ``replace``
    (what enable() runs), and by its ``rewrite`` of stock's result (the
    path of every call a replace leaves to stock: the replaces taken out).
    The value names the path."""
    if request.param == "stock first":
        import dataclasses

        from keras_ov_einsum.core import install

        without = tuple(
            dataclasses.replace(part, replace=None) for part in install.PARTS
        )
        monkeypatch.setattr(install, "PARTS", without)
    return request.param


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """A presets folder of the module's own (KERAS_OV_EINSUM_PRESETS)."""
    folder = tmp_path_factory.mktemp("presets")
    previous = os.environ.get("KERAS_OV_EINSUM_PRESETS")
    os.environ["KERAS_OV_EINSUM_PRESETS"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["KERAS_OV_EINSUM_PRESETS"]
    else:
        os.environ["KERAS_OV_EINSUM_PRESETS"] = previous
