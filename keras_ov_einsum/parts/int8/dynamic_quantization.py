"""Opt-in, with int8: weights-only int8 layers' inputs quantized by the CPU
plugin, as OpenVINO's own pipeline runs an int8 IR.

For an int8-weight FullyConnected layer the CPU plugin quantizes the
layer's float32 inputs to int8 itself, per group of inputs ("dynamic
quantization", on by default where the CPU has int8 dot products: AVX512
VNNI, AVX-VNNI, AMX), and sums int8 x int8 products: faster than
decompressing the weights to float32, and not stock's values. The int8
part turns it off (``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``) so that an int8
model's results are stock's; openvino-genai leaves it on for its int8 IRs.
Whether that is faster depends on the CPU. On the AVX512 VNNI AMD EPYC of
2026-12-01 it was not, for one-row decoding steps (this part was reverted
then, docs/native-gap.md). On the AMX Xeon of 2026-12-02, GPT-2 Medium's
int8 IR profiled with it off took 7.4-8.2 ms a step in its 24 [1024,
4096] layers against 4.7-6.1 with the plugin's default, and keras's
weights-only step model 6.8-7.2 ms there with it off (ad hoc,
``PERF_COUNT``, docs/native-gap.md): off is most of the weights-only rows'
distance from genai on that CPU. On the Xeon without AMX (AVX512 VNNI)
of that afternoon, the harness's weights-only GPT-2 Medium rows made
0.89 x genai's tokens/s with this part and 0.63 x with the int8 part
alone (docs/performance.md).

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
