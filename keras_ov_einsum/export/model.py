"""The stateful IR openvino-genai runs, traced from a keras-hub causal LM.

genai's stateful pipeline and optimum-intel's ``OVModelForCausalLM`` run
one model for the prompt and for each new token: inputs ``input_ids``
``[batch, seq]`` i64, ``attention_mask`` ``[batch, past + seq]`` i64 (0 on
a row's padding), ``position_ids`` ``[batch, seq]`` i64 and ``beam_idx``
``[batch]`` i32; output ``logits`` ``[batch, seq, vocab]`` f32; each
layer's keys and values in OpenVINO state, its rows reordered by
``beam_idx`` before a step (beam search). A batch of prompts of other
lengths comes left-padded: a row's positions count its own tokens only,
and no token may attend to padding.

keras-hub's ``call_with_cache`` takes (token ids, cache, cache index) and
builds the positions (from the cache index) and a causal mask itself: both
take every row to start at the cache's first slot. The trace here runs
``call_with_cache`` as the ``stepwise`` part does, with a key and a value
cache a layer (``layer_caches.stand_in``), while each family's position
layers read ``position_ids`` and each decoder layer's mask is the one
built from ``attention_mask`` (causal over the cache's slots, a row's
padding masked); then ``state_caches.in_state`` moves the caches into
state. The cache index is the count of filled slots: ``attention_mask``'s
length less the input's. Gemma's attention is two einsums, not the
ScaledDotProductAttention the CPU plugin fuses with the state and genai's
paged attention replaces: it takes its own ``dot_product_attention``
branch (keras-hub's on JAX and TPU), on key/value heads repeated as
Llama's are, the form genai's IRs have.
"""

import contextlib
import dataclasses
import functools

from ..core import backend

__all__ = ["FAMILIES", "ExportError", "family_of", "stateful_model"]


class ExportError(ValueError):
    """The model cannot be exported; the message names what is missing."""


@dataclasses.dataclass(frozen=True)
class _Family:
    """How one keras-hub causal LM is traced with explicit positions and
    masks: its decoder layers' mask method, the layers that compute
    positions (they take ``positions=``), and whether its attention layers
    need the fused branch (Gemma)."""

    model_type: str  # Hugging Face's name for the architecture
    module: str
    causal_lm: str
    mask_method: str
    position_layers: object  # backbone -> the layers taking positions=
    fused_branch: bool = False


def _gpt2_positions(backbone):
    return [backbone.position_embedding]


def _llama_positions(backbone):
    return [
        layer._self_attention_layer.rotary_embedding_layer
        for layer in backbone.transformer_layers
    ]


def _gemma_positions(backbone):
    return [layer.attention.rope_layer for layer in backbone.transformer_layers]


FAMILIES = {
    family.causal_lm: family
    for family in (
        _Family(
            "gpt2",
            "keras_hub.src.models.gpt2.gpt2_causal_lm",
            "GPT2CausalLM",
            "_compute_self_attention_mask",
            _gpt2_positions,
        ),
        _Family(
            "llama",
            "keras_hub.src.models.llama.llama_causal_lm",
            "LlamaCausalLM",
            "_compute_self_attention_mask",
            _llama_positions,
        ),
        _Family(
            "gemma",
            "keras_hub.src.models.gemma.gemma_causal_lm",
            "GemmaCausalLM",
            "_compute_attention_mask",
            _gemma_positions,
            fused_branch=True,
        ),
    )
}
# The methods the trace relies on being keras-hub's own.
_METHODS = ("call_with_cache", "_build_cache")


def family_of(causal_lm):
    """The ``_Family`` of ``causal_lm``; raises ``ExportError`` naming what
    is not supported."""
    import importlib

    import keras

    if keras.config.backend() != "openvino":
        raise ExportError(
            f"the Keras backend is {keras.config.backend()!r}: the export "
            "traces the model on 'openvino' (KERAS_BACKEND=openvino)"
        )
    name = type(causal_lm).__name__
    family = FAMILIES.get(name)
    if family is None:
        raise ExportError(
            f"{name}: only keras-hub's {', '.join(FAMILIES)} are exported "
            "(their positions and masks are traced per family)"
        )
    stock = getattr(importlib.import_module(family.module), family.causal_lm)
    for method in _METHODS:
        if getattr(type(causal_lm), method) is not getattr(stock, method):
            raise ExportError(
                f"{name} overrides {method}: the trace reproduces "
                f"keras-hub's own {family.causal_lm}.{method} only"
            )
    _check_config(causal_lm, family)
    return family


def _check_config(causal_lm, family):
    """What the trace does not reproduce: a quantized or non-float32
    model, Gemma 2's soft cap and sliding window."""
    dtype = causal_lm.backbone.dtype_policy.name
    if dtype != "float32":
        raise ExportError(
            f"the model's dtype policy is {dtype!r}: the export traces a "
            "float32 model (load it with dtype='float32'; weights='float16' "
            "or 'int8' choose the IR's weights)"
        )
    for layer in causal_lm.backbone._flatten_layers():
        mode = getattr(layer, "quantization_mode", None)
        if mode is not None:
            raise ExportError(
                f"layer {layer.name} is quantized ({mode}): the export "
                "traces the float32 model (weights='int8' quantizes it)"
            )
    if family.fused_branch:
        backbone = causal_lm.backbone
        for feature in ("logit_soft_cap", "final_logit_soft_cap"):
            if getattr(backbone, feature, None) is not None:
                raise ExportError(f"Gemma's {feature} is not exported")
        if getattr(backbone, "use_sliding_window_attention", False):
            raise ExportError(
                "Gemma's sliding window attention is not exported"
            )


def stateful_model(causal_lm):
    """``causal_lm``'s stateful IR (an ``ov.Model``, module docstring),
    traced with the package's default parts on, as inside ``generate()``.
    Raises ``ExportError`` where the model cannot be exported."""
    from ..core.context import as_in_generate
    from ..core.install import enabled
    from ..parts.generate import layer_caches, state_caches

    family = family_of(causal_lm)
    with enabled(), as_in_generate():
        try:
            model, layout = _trace(causal_lm, family)
            model = state_caches.in_state(model, layout)
        except (layer_caches.Declined, state_caches.Declined) as declined:
            raise ExportError(
                f"{type(causal_lm).__name__}'s caches: {declined}"
            ) from None
    _name_boundary(model)
    return model


def _trace(causal_lm, family):
    """``call_with_cache`` on Parameters (``input_ids``, a key and a value
    cache a layer, ``attention_mask``, ``position_ids``) -> (logits, the
    updated caches): ``(ov.Model, CacheLayout)`` as ``in_state`` takes
    them."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    from ..parts.generate import layer_caches, stepwise

    layers, heads, head_dim, dtype = stepwise._cache_layout(causal_lm)
    layout = stepwise.CacheLayout(layers, heads, head_dim, dtype, True)
    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    input_ids = ov_opset.parameter([-1, -1], ov.Type.i64)
    attention_mask = ov_opset.parameter([-1, -1], ov.Type.i64)
    position_ids = ov_opset.parameter([-1, -1], ov.Type.i64)
    caches = [
        ov_opset.parameter(shape, OPENVINO_DTYPES[dtype])
        for shape in layout.shapes(-1, -1)
    ]
    stepwise._share_batch([input_ids, *caches, attention_mask, position_ids])
    index, mask = _index_and_mask(input_ids, attention_mask)
    cache = layer_caches.stand_in([c.output(0) for c in caches], layers)
    keras_tensor = backend.keras_tensor
    patches = _patches(
        causal_lm, family, keras_tensor(mask), keras_tensor(position_ids)
    )
    with _patched(patches):
        logits, _, new_cache = causal_lm.call_with_cache(
            keras_tensor(input_ids.output(0)), cache, keras_tensor(index)
        )
    cache_outputs = cache.unstacked(new_cache.output)
    logits = logits.output
    if logits.get_element_type() != ov.Type.f32:
        logits = ov_opset.convert(logits, ov.Type.f32).output(0)
    results = [ov_opset.result(logits)] + [
        ov_opset.result(output) for output in cache_outputs
    ]
    parameters = [input_ids, *caches, attention_mask, position_ids]
    model = ov.Model(results, parameters)
    _drop_empty_row_wipes(model, mask)
    return model, layout


def _index_and_mask(input_ids, attention_mask):
    """(the cache index, i32 scalar; the attention mask, bool ``[batch,
    seq, past + seq]``): query i sits in slot ``past + i`` and sees the
    slots up to its own that hold a token (``attention_mask`` 1), and
    always its own slot: a padding query attends to itself rather than to
    nothing. No row is then all masked, which has no softmax where a
    masked score is -inf (ScaledDotProductAttention's specification; the
    CPU plugin's kernel guards against it), and Gemma's wipe of such rows
    is the identity (``_drop_empty_row_wipes``)."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    def length(tensor):
        return ov_opset.gather(
            ov_opset.shape_of(tensor, ov.Type.i64),
            ov_opset.constant(1, ov.Type.i64),
            ov_opset.constant(0, ov.Type.i64),
        )

    total = length(attention_mask)
    past = ov_opset.subtract(total, length(input_ids))
    one = ov_opset.constant(1, ov.Type.i64)
    zero = ov_opset.constant(0, ov.Type.i64)
    queries = ov_opset.unsqueeze(
        ov_opset.range(past, total, one, ov.Type.i64),
        ov_opset.constant([1], ov.Type.i64),
    )  # [seq, 1]
    keys = ov_opset.range(zero, total, one, ov.Type.i64)  # [past + seq]
    causal = ov_opset.less_equal(keys, queries)
    own = ov_opset.equal(keys, queries)
    filled = ov_opset.unsqueeze(
        ov_opset.not_equal(attention_mask, zero),
        ov_opset.constant([1], ov.Type.i64),
    )  # [batch, 1, past + seq]
    mask = ov_opset.logical_and(causal, ov_opset.logical_or(filled, own))
    index = ov_opset.convert(past, ov.Type.i32)
    return index.output(0), mask.output(0)


def _drop_empty_row_wipes(model, mask):
    """Gemma's attention zeroes the output of a query that attends to no
    slot (``where(all(mask == 0), 0, attention)``). Every query attends to
    its own slot in ``mask``: the Select is the identity, and goes. Kept,
    it would read ``attention_mask`` outside the attention, where genai's
    paged-attention conversion, which drops that input, leaves it
    unread."""
    for select in model.get_ordered_ops():
        if select.get_type_name() != "Select":
            continue
        reduce = _behind(select.input_value(0), ("Unsqueeze", "Reshape"))
        if reduce.get_type_name() != "ReduceLogicalAnd":
            continue
        equal = _behind(reduce.input_value(0), ("Convert",))
        if equal.get_type_name() != "Equal":
            continue
        operands = [
            _behind(value, ("Convert",)) for value in equal.input_values()
        ]
        zero = any(
            operand.get_type_name() == "Constant"
            and not operand.get_data().any()
            for operand in operands
        )
        if zero and any(operand.output(0) == mask for operand in operands):
            select.output(0).replace(select.input_value(2))


def _behind(output, kinds):
    """The first node behind ``output`` not of ``kinds`` (through their
    first inputs)."""
    node = output.get_node()
    while node.get_type_name() in kinds:
        node = node.input_value(0).get_node()
    return node


def _patches(causal_lm, family, mask, positions):
    """(object, attribute, value) for the trace: the family's position
    layers read ``positions``, its decoder layers' mask is ``mask``, and
    Gemma's attention takes its fused branch."""
    backbone = causal_lm.backbone
    patches = [
        (layer, "call", _at_positions(layer, positions))
        for layer in family.position_layers(backbone)
    ]
    patches += [
        (layer, family.mask_method, lambda *args, **kwargs: mask)
        for layer in backbone.transformer_layers
    ]
    if family.fused_branch:
        for layer in backbone.transformer_layers:
            attention = layer.attention
            patches += [
                (attention, "_use_fused_attention_op", lambda: True),
                (
                    attention,
                    "_compute_attention",
                    _on_repeated_heads(attention),
                ),
            ]
    return patches


def _at_positions(layer, positions):
    """``layer.call`` with ``positions`` in place of its start index."""
    stock_call = type(layer).call.__get__(layer)

    def call(inputs, start_index=0, positions_=None):
        return stock_call(inputs, positions=positions)

    return call


def _on_repeated_heads(attention):
    """Gemma's ``_compute_attention`` on keys and values whose heads are
    repeated for each query head they serve (keras's ``repeat``, as
    Llama's attention does), which its fused branch needs on OpenVINO."""
    from keras import ops

    stock = type(attention)._compute_attention.__get__(attention)
    groups = attention.num_key_value_groups

    @functools.wraps(stock)
    def compute_attention(q, k, v, attention_mask, *args, **kwargs):
        k = ops.repeat(k, groups, axis=2)
        v = ops.repeat(v, groups, axis=2)
        return stock(q, k, v, attention_mask, *args, **kwargs)

    return compute_attention


@contextlib.contextmanager
def _patched(patches):
    """Each (object, attribute, value) set on the instance for the block
    (Keras's attribute tracking bypassed), then taken off in reverse."""
    done = []
    try:
        for target, name, value in patches:
            # A method keras-hub no longer has would be set, never called.
            if not hasattr(type(target), name):
                raise ExportError(
                    f"keras-hub's {type(target).__name__} has no {name} "
                    "(the trace needs it: another keras-hub version?)"
                )
            if name in vars(target):
                raise ExportError(f"{target.name}.{name} is set already")
            object.__setattr__(target, name, value)
            done.append((target, name))
        yield
    finally:
        for target, name in reversed(done):
            object.__delattr__(target, name)


def _name_boundary(model):
    """The names genai and optimum-intel read: the inputs in order, the
    logits."""
    names = ["input_ids", "attention_mask", "position_ids", "beam_idx"]
    for parameter, name in zip(model.get_parameters(), names, strict=True):
        parameter.set_friendly_name(name)
        parameter.output(0).get_tensor().set_names({name})
    (logits,) = model.outputs
    logits.get_tensor().set_names({"logits"})
