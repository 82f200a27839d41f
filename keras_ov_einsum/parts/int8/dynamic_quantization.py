"""Opt-in, with int8: weights-only int8 layers' inputs quantized by the CPU
plugin, as OpenVINO's own pipeline runs an int8 IR.

For an int8-weight FullyConnected layer the CPU plugin quantizes the
layer's float32 inputs to int8 itself, per group of inputs ("dynamic
quantization", on by default where the CPU has int8 dot products: VNNI,
AMX), and sums int8 x int8 products: not stock's values, and faster than
decompressing the weights to float32 on some CPUs. The int8 part turns it
off (``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``) so that an int8 model's
results are stock's; openvino-genai leaves it on for its int8 IRs. Whether
it pays depends on the CPU: on some VNNI CPUs it did not for one-row
decoding steps (this part was once reverted for it), on others it was
most of the weights-only rows' distance from genai (docs/native-gap.md,
machine by machine; docs/parts.md).

With this part the int8 part leaves the option to the plugin for a model
whose int8 layers are all weights-only ones it built. A model holding an
int8 x int8 product (keras's default int8, whose exactness needs it off)
or read back from an IR keeps it off. What differs from stock: each
weights-only layer's inputs are rounded to int8 within their group (the
plugin's default group size), so its outputs move by about a hundredth of
their scale and greedy tokens may differ at near ties, as genai's differ
from stock keras's.
"""

from ...core.part import Part
from . import int8

__all__ = ["PART"]


def _weights_only_may_quantize(next_answer, forms):
    """The pass at ``int8.PLUGIN_MAY_QUANTIZE``: yes for a model whose
    int8 layers are all weights-only ones the int8 part built."""
    return forms == {int8.WEIGHTS_ONLY} or next_answer(forms)


PART = Part(
    name="dynamic_quantization",
    summary="weights-only int8 models compiled with the plugin's dynamic "
    "quantization, as genai runs them: faster, not stock's values",
    default=False,
    requires=("int8",),
    passes=((int8.PLUGIN_MAY_QUANTIZE, _weights_only_may_quantize),),
)
