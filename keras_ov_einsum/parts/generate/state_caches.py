"""The stepwise step model's key and value caches kept in OpenVINO state,
appended to in place by the CPU plugin's attention.

With ``layer_caches`` the step model takes each layer's key and value
caches and gives them back: every step each cache write (a
ScatterNDUpdate) copies its whole input cache to its output and the
attention transposes every filled position's keys and values, so a step
grows with the positions filled (docs/native-gap.md, "Longer
generations"). genai's IR keeps its cache in state instead: a ReadValue
of the past positions, a Concat of the new ones that the attention reads,
an Assign of it: the form the plugin's ``StatefulSDPAFusion`` turns into
one ScaledDotProductAttentionWithKVCache a layer, which appends each new
position to a cache it owns.

This part rewrites the ``layer_caches`` step model into that form: each
layer's write of its new keys (values) at the cache index becomes the
past keys (a ReadValue, reordered by a ``beam_idx`` input as the pattern
has it) concatenated with the new ones; the cache Parameters and Results
go. keras's ``repeat`` of the key/value heads (Llama's grouped-query
attention) becomes the Unsqueeze, Broadcast and Reshape the pattern
knows, the same copies of each head. The state holds exactly the filled
positions and the new ones, so the causal mask reads the Concat's length:
the attention covers what the prefixes of ``stepwise._generate`` covered,
less the masked positions past them. Where a cache is read otherwise, or
not by a ScaledDotProductAttention behind keras's Transpose (Gemma's
einsums), the part declines, the reason in ``explain()``.

The plugin stores state in its ``KV_CACHE_PRECISION``, u8 (quantized) by
default: ``stepwise`` compiles with the variables' type instead. That is
float32, the type the cache Parameters carried, except for a float16
model on a device that computes in float16 (``OPTIMIZATION_CAPABILITIES``
lists FP16): there the model's Convert rounds each new position to
float16 before the cache takes it, so a float16 state holds the same
values in half the bytes, as stock's Loop holds its cache in the
execution precision (and a float32 state kept the plugin from fusing all
but the first layer: it lowered the others' state to float16 itself,
outside its pattern). Where the plugin computes float16 in float32 it
drops those Converts: a float16 state would round what stock keeps.
"""

import functools

from ...core.kernel import constant_values
from ...core.part import Part
from . import stepwise

__all__ = [
    "LABEL",
    "PART",
    "Declined",
    "in_state",
    "keeps_model_type",
    "repeated_heads",
]

LABEL = "state_caches: the step model's key and value caches in OpenVINO state"
# keras's dot_product_attention transposes [batch, length, heads, head_dim]
# to the [batch, heads, length, head_dim] of ScaledDotProductAttention.
_TO_HEADS_FIRST = [0, 2, 1, 3]


class Declined(ValueError):
    """The step model's caches are not read as the plugin's fusion needs."""


def keeps_model_type(dtype, device):
    """Whether a ``dtype`` model's caches are kept in state in ``dtype``
    on ``device`` rather than in float32: float16 on a device that
    computes in float16 (the module's docstring)."""
    if dtype != "float16":
        return False
    from keras_hub.src.utils import openvino_utils

    core = openvino_utils.get_core()
    return "FP16" in core.get_property(device, "OPTIMIZATION_CAPABILITIES")


def in_state(model, layout, in_model_type=False):
    """``model``, as ``stepwise._trace`` gives it with a key and a value
    cache a layer (``layout``), with its caches in OpenVINO state: inputs
    (token ids, the inputs after the caches: the step model's cache index,
    beam_idx), one output (the first: the probabilities), an Assign a
    cache. ``in_model_type``: the state is kept in the type the model
    writes its caches in (a float16 model's float16), not the cache
    Parameters' float32. Raises ``Declined`` where a cache is read
    otherwise. Rewrites ``model`` in place (the part hands it a clone).

    Each write is taken to put the new positions at the cache index, after
    the positions filled so far, as keras-hub's attention layers write
    (``slice_update`` at ``[0, index, 0, 0]``; stepwise runs only the
    causal LMs whose cache code it knows), and the state to hold exactly
    those positions (``stepwise._generate`` empties it before each call)."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    token_ids, *rest = model.get_parameters()
    caches, others = rest[: 2 * layout.layers], rest[2 * layout.layers :]
    probabilities, *cache_results = model.get_results()
    beam_idx = ov_opset.parameter(
        ov.PartialShape([token_ids.get_partial_shape()[0]]), ov.Type.i32
    )
    beam_idx.set_friendly_name("beam_idx")
    # Zeros of [batch, 0, heads, head_dim]: no position is filled yet.
    batch = ov_opset.gather(
        ov_opset.shape_of(token_ids, ov.Type.i64),
        ov_opset.constant([0], ov.Type.i64),
        ov_opset.constant(0, ov.Type.i64),
    )
    empty_shape = ov_opset.concat(
        [batch, ov_opset.constant([0, layout.heads, layout.head_dim])], 0
    )
    writes = [
        _write_behind(result, cache)
        for cache, result in zip(caches, cache_results, strict=True)
    ]
    assigns = []
    for number, (cache, (write, source)) in enumerate(zip(caches, writes)):
        stored = (source if in_model_type else cache).get_element_type()
        variable = _variable(f"cache_{number}", cache, stored)
        empty = ov_opset.broadcast(ov_opset.constant(0, stored), empty_shape)
        stored_past = past = _read_value(empty, variable)
        if stored != source.get_element_type():  # a float32 state
            past = ov_opset.convert(past, source.get_element_type()).output(0)
        present = ov_opset.concat(
            [
                ov_opset.gather(past, beam_idx, ov_opset.constant(0)),
                write.input_value(2),
            ],
            1,
        ).output(0)
        _read_length_of(
            stored_past, write.input_value(2), _as_read(cache, source)
        )
        _attend_to(present, write)
        if stored != present.get_element_type():
            present = ov_opset.convert(present, stored).output(0)
        assigns.append(_assign(present, variable))
    try:
        return ov.Model(
            [probabilities], assigns, [token_ids, *others, beam_idx]
        )
    except RuntimeError as error:  # a node still reads a cache Parameter
        raise Declined(f"a cache is read otherwise: {error}") from None


def _write_behind(result, cache):
    """The ScatterNDUpdate writing ``cache``'s new positions that
    ``result`` gives back, and the cache as that write reads it (a Convert
    to the model's type of a float16 model, or the Parameter)."""
    write = result.input_value(0).get_node()
    if write.get_type_name() == "Convert":
        write = write.input_value(0).get_node()
    if write.get_type_name() != "ScatterNDUpdate":
        raise Declined("a new cache is not a write into its cache")
    source = write.input_value(0)
    read = source.get_node()
    if read.get_type_name() == "Convert":
        read = read.input_value(0).get_node()
    if read.output(0) != cache.output(0):
        raise Declined("a new cache is not a write into its own cache")
    for output in _as_read(cache, source):
        for reader in _readers(output):
            if reader.get_type_name() not in (
                "ShapeOf",
                "Convert",
                "ScatterNDUpdate",
            ):
                raise Declined(f"a cache is read by {reader.get_type_name()}")
    return write, source


def _as_read(cache, source):
    """The cache Parameter's output, and the Convert's after it if any."""
    if source == cache.output(0):
        return [source]
    return [cache.output(0), source]


def _readers(output):
    """The nodes reading ``output`` (references kept: a node rewired away
    from may be freed, and its inputs with it)."""
    return [reader.get_node() for reader in output.get_target_inputs()]


def _variable(name, cache, data_type):
    from openvino.op.util import Variable, VariableInfo

    info = VariableInfo()
    info.variable_id = name
    info.data_type = data_type
    info.data_shape = cache.get_partial_shape()
    return Variable(info)


def _read_value(initial, variable):
    import openvino.opset6 as ov_opset6

    return ov_opset6.read_value(initial, variable).output(0)


def _assign(value, variable):
    import openvino.opset6 as ov_opset6

    return ov_opset6.assign(value.get_node(), variable)


def _read_length_of(past, new, caches):
    """The shape readers of ``caches`` (a cache, as the Parameter and as
    the model's type; the causal mask reads its length) read the shape of
    ``past`` (the state as read) with ``new``'s positions added: the
    Concat's, computed beside it (a ShapeOf of the Concat, or of a
    Convert after the ReadValue, kept the plugin from fusing a float16
    model's first layer)."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    shape = None
    for reader in [node for cache in caches for node in _readers(cache)]:
        if reader.get_type_name() != "ShapeOf":
            continue
        if shape is None:
            new_length = ov_opset.gather(
                ov_opset.shape_of(new, ov.Type.i64),
                ov_opset.constant([1]),
                ov_opset.constant(0),
            )
            zero = ov_opset.constant([0])
            shape = ov_opset.add(
                ov_opset.shape_of(past, ov.Type.i64),
                ov_opset.concat([zero, new_length, zero, zero], 0),
            ).output(0)
        wanted = reader.get_output_element_type(0)
        if wanted != ov.Type.i64:
            reader.output(0).replace(ov_opset.convert(shape, wanted).output(0))
        else:
            reader.output(0).replace(shape)


def _attend_to(present, write):
    """Has the attention read ``present`` where it read ``write``: each
    reader a Transpose to heads first for a ScaledDotProductAttention, or
    keras's ``repeat`` of the heads before one (rebuilt in the form the
    plugin's pattern knows); the Result and the repeat's ShapeOf are left
    behind."""

    attended = False
    for reader in _readers(write.output(0)):
        kind = reader.get_type_name()
        if kind in ("Result", "Convert", "ShapeOf"):
            continue  # the old output (Assign replaces it), the repeat's
        if kind == "Gather":
            repeats = _repeats(reader, write)
            if repeats is None:
                raise Declined("a cache is read by a Gather not keras's repeat")
            expanded = repeated_heads(present, repeats)
            for transpose in _readers(reader.output(0)):
                _check_attention(transpose)
            reader.output(0).replace(expanded)
        elif kind == "Transpose":
            _check_attention(reader)
            reader.input(0).replace_source_output(present)
        else:
            raise Declined(f"a cache is read by {kind}")
        attended = True
    if not attended:
        raise Declined("no attention reads a cache")


def repeated_heads(cache, repeats):
    """keras's ``repeat(cache, repeats, axis=2)`` of a [batch, length,
    heads, head_dim] cache (each head ``repeats`` times in a row) as an
    Unsqueeze, a Broadcast and a Reshape: the form of grouped-query
    attention the plugin's pattern knows. (Its fused attention then maps
    query heads to key/value heads itself, as this form does.)"""
    import openvino.opset14 as ov_opset

    heads, head_dim = (
        cache.get_partial_shape()[axis].get_length() for axis in (2, 3)
    )
    return ov_opset.reshape(
        ov_opset.broadcast(
            ov_opset.unsqueeze(cache, ov_opset.constant([3])),
            ov_opset.constant([1, 1, 1, repeats, 1]),
            broadcast_spec="BIDIRECTIONAL",
        ),
        ov_opset.constant([0, 0, heads * repeats, head_dim]),
        special_zero=True,
    ).output(0)


def _check_attention(transpose):
    if (
        transpose.get_type_name() != "Transpose"
        or constant_values(transpose.input_value(1)) != _TO_HEADS_FIRST
        or {reader.get_type_name() for reader in _readers(transpose.output(0))}
        != {"ScaledDotProductAttention"}
    ):
        raise Declined(
            "a cache is not read by a ScaledDotProductAttention through "
            "keras's Transpose (the plugin appends in place there only)"
        )


def _repeats(gather, source):
    """r where ``gather`` is keras's ``repeat(source, r, axis=2)`` (keras
    3's OpenVINO form: a Gather on axis 2 of ``range(heads)`` tiled r
    times a head), else None."""
    if constant_values(gather.input_value(2)) != [2]:
        return None
    steps = [("Reshape", [-1]), ("Tile", None), ("Unsqueeze", [1])]
    node = gather.input_value(1).get_node()
    repeats = None
    for kind, operand in steps:
        if node.get_type_name() != kind:
            return None
        value = constant_values(node.input_value(1))
        if kind == "Tile":
            if value is None or len(value) != 2 or value[0] != 1:
                return None
            repeats = value[1]
        elif value != operand:
            return None
        node = node.input_value(0).get_node()
    # range(0, source.shape[2], 1)
    if (
        node.get_type_name() != "Range"
        or constant_values(node.input_value(0)) != [0]
        or constant_values(node.input_value(2)) != [1]
    ):
        return None
    length = node.input_value(1).get_node()
    if length.get_type_name() == "Squeeze":
        length = length.input_value(0).get_node()
    if (
        length.get_type_name() != "Gather"
        or constant_values(length.input_value(1)) != [2]
        or length.input_value(0).get_node().get_type_name() != "ShapeOf"
        or length.input_value(0).get_node().input_value(0) != source.output(0)
    ):
        return None
    return repeats


def _trace_in_state(trace, causal_lm, **options):
    """The pass at ``stepwise.TRACE``: the per-layer caches (the
    layer_caches part's) moved into OpenVINO state."""
    model, layout = trace(causal_lm, **options)
    if not layout.per_layer:
        return model, layout  # layer_caches declined
    from keras_hub.src.utils import openvino_utils

    in_model_type = keeps_model_type(
        causal_lm.dtype, openvino_utils.get_device()
    )
    try:
        # A copy (it shares the weights): kept whole on a decline.
        stateful = in_state(model.clone(), layout, in_model_type)
    except Declined as declined:
        _record(causal_lm, False, str(declined))
        return model, layout
    kept = causal_lm.dtype if in_model_type else layout.dtype
    _record(
        causal_lm,
        True,
        f"{2 * layout.layers} ReadValue/Assign pairs, each read by a "
        "ScaledDotProductAttention the plugin appends to in place; "
        f"the state kept {kept}",
    )
    return stateful, layout._replace(in_state=True)


_record = functools.partial(stepwise._record, label=LABEL)


PART = Part(
    name="state_caches",
    summary="the step model's caches in OpenVINO state, appended to in place "
    "by the plugin's fused attention",
    requires=("layer_caches",),
    passes=((stepwise.TRACE, _trace_in_state),),
)
