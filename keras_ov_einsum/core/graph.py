"""Glue a rewrite of a backend op shares: the node stock built, and the
rewritten output handed back as stock's result is."""

from . import backend
from .outcome import Outcome

__all__ = ["keras_result", "stock_node"]


def stock_node(result, type_name):
    """The ``type_name`` node behind a stock result (a Keras tensor), and
    the element type of stock's final Convert after it (None: none)."""
    final = result.output.get_node()
    if final.get_type_name() == "Convert":
        node = final.input_value(0).get_node()
        if node.get_type_name() == type_name:
            return node, final.get_output_element_type(0)
    if final.get_type_name() == type_name:
        return final, None
    return None, None


def keras_result(outcome, convert_to=None):
    """``outcome`` with its output handed back as stock's result is: after
    stock's final Convert (``convert_to``), as a Keras tensor. A declined
    outcome or None passes through."""
    if not outcome:
        return outcome
    import openvino.opset13 as ov_opset

    output = outcome.output
    if convert_to is not None:
        output = ov_opset.convert(output, convert_to).output(0)
    return Outcome(backend.keras_tensor(output), outcome.description)
