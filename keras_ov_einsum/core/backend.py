"""Where the installed OpenVINO backend keeps what the parts hook and use.

keras 3.12-3.15 carry the backend inside keras (``keras.src.backend.
openvino``); from keras 3.16 it is the ``keras-openvino`` package
(``keras_openvino``), with the same functions in other modules. A part
names a backend function by what it is (``numpy.einsum``,
``core.slice_update``, ``align_operand_types``); the table here says where
each layout binds it, every binding a call may go through.
"""

import dataclasses
import functools
import importlib
import importlib.util

__all__ = [
    "LAYOUTS",
    "Layout",
    "current",
    "keras_tensor",
    "module",
    "symbol",
]


@dataclasses.dataclass(frozen=True)
class Layout:
    """One backend layout.

    ``modules``: short name -> module. ``symbols``: a name the parts use
    (``OpenVINOKerasTensor``, ``OPENVINO_DTYPES``...) -> the short name of
    the module holding it. ``targets``: a hook target -> every (module short
    name, attribute) binding it (a module that imported the function under
    its own name holds a binding of its own).
    """

    name: str
    package: str
    modules: dict
    symbols: dict
    targets: dict


_IN_KERAS = "keras.src.backend.openvino"
_KERAS_OPENVINO = "keras_openvino.src"

LAYOUTS = {
    # keras 3.12-3.15
    "keras": Layout(
        name="keras",
        package=_IN_KERAS,
        modules={
            "numpy": f"{_IN_KERAS}.numpy",
            "core": f"{_IN_KERAS}.core",
            "nn": f"{_IN_KERAS}.nn",
            "random": f"{_IN_KERAS}.random",
        },
        symbols={
            "OpenVINOKerasTensor": "core",
            "OPENVINO_DTYPES": "core",
            "Variable": "core",
            "get_ov_output": "core",
            "ov_opset": "core",
        },
        targets={
            "numpy.einsum": (("numpy", "einsum"),),
            "numpy.matmul": (("numpy", "matmul"),),
            "numpy.multiply": (("numpy", "multiply"),),
            "core.slice_update": (("core", "slice_update"),),
            # core.py's operators and functions call it by its own name,
            # numpy.py imports it as _align_operand_types.
            "align_operand_types": (
                ("core", "align_operand_types"),
                ("numpy", "_align_operand_types"),
            ),
            "Variable._convert_to_tensor": (
                ("core", "Variable._convert_to_tensor"),
            ),
            "Variable._initialize_with_initializer": (
                ("core", "Variable._initialize_with_initializer"),
            ),
        },
    ),
    # keras >= 3.16 with the keras-openvino package
    "keras-openvino": Layout(
        name="keras-openvino",
        package=_KERAS_OPENVINO,
        modules={
            "numpy": f"{_KERAS_OPENVINO}.ops.numpy",
            "core": f"{_KERAS_OPENVINO}.ops.core",
            "nn": f"{_KERAS_OPENVINO}.ops.nn",
            "random": f"{_KERAS_OPENVINO}.random",
            "utils": f"{_KERAS_OPENVINO}.utils",
            "variable": f"{_KERAS_OPENVINO}.variable",
        },
        symbols={
            "OpenVINOKerasTensor": "core",
            "OPENVINO_DTYPES": "utils",
            "Variable": "variable",
            "get_ov_output": "core",
            "ov_opset": "core",
        },
        targets={
            "numpy.einsum": (("numpy", "einsum"),),
            "numpy.matmul": (("numpy", "matmul"),),
            "numpy.multiply": (("numpy", "multiply"),),
            "core.slice_update": (("core", "slice_update"),),
            # Defined in utils.py; core.py imports it by its own name,
            # numpy.py as _align_operand_types.
            "align_operand_types": (
                ("utils", "align_operand_types"),
                ("core", "align_operand_types"),
                ("numpy", "_align_operand_types"),
            ),
            "Variable._convert_to_tensor": (
                ("variable", "Variable._convert_to_tensor"),
            ),
            "Variable._initialize_with_initializer": (
                ("variable", "Variable._initialize_with_initializer"),
            ),
        },
    ),
}


@functools.cache
def current():
    """The installed keras's backend layout, or None when it has none: the
    keras-openvino package where keras lists openvino among its pluggable
    backends (keras 3.16 and later), else the backend inside keras. (Files
    of an older keras's backend may linger under a newer keras: what keras
    itself loads decides.)"""
    if importlib.util.find_spec("keras") is None:
        return None
    from keras.src.backend import config

    if "openvino" in getattr(config, "PLUGGABLE_BACKENDS", ()):
        if importlib.util.find_spec("keras_openvino") is None:
            return None
        return LAYOUTS["keras-openvino"]
    try:
        inside = importlib.util.find_spec(_IN_KERAS) is not None
    except ImportError:
        inside = False
    return LAYOUTS["keras"] if inside else None


def _layout():
    layout = current()
    if layout is None:
        raise ImportError(
            "no OpenVINO backend for keras: neither "
            f"{_IN_KERAS} nor keras_openvino is installed"
        )
    return layout


def module(short_name):
    """The backend module ``short_name`` (``numpy``, ``core``, ``nn``)."""
    return importlib.import_module(_layout().modules[short_name])


def symbol(name):
    """A name the backend defines (``OpenVINOKerasTensor``...)."""
    return getattr(module(_layout().symbols[name]), name)


def keras_tensor(output):
    """An ``openvino.Output`` as the backend's Keras tensor."""
    return symbol("OpenVINOKerasTensor")(output)
