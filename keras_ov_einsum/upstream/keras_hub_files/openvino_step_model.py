"""Greedy generation on OpenVINO as inferences of one stateful step model.

On the OpenVINO backend `CausalLM.generate()` compiles the whole
`generate_step`: a pass over the padded prompt, then an OpenVINO `Loop`
whose body holds every layer a second time and rewrites the whole key/value
cache each step. OpenVINO's own LLM pipelines (OpenVINO GenAI,
optimum-intel) compile one forward step instead, keep each layer's key and
value cache in OpenVINO state (`ReadValue`/`Assign`, reordered by a
`beam_idx` input), and run the prompt and each new token as inferences of
that model. Where the attention is a `ScaledDotProductAttention` the CPU
plugin fuses it with its caches and appends each new position in place.

This module gives greedy generation that form: `call_with_cache` is traced
once, with a key and a value cache a layer, and each layer's cache write
becomes the past positions (the state) concatenated with the new ones. The
prompt pass covers the positions every row holds; greedy decoding runs in
NumPy around the compiled model. Other samplers, other models and
`KERAS_HUB_OPENVINO_STEP_MODEL=0` keep the compiled `Loop`.
"""

import os
import threading
import weakref

import keras
import numpy as np
from keras import ops
from keras import tree

from keras_hub.src.utils.keras_utils import print_msg
from keras_hub.src.utils.openvino_utils import get_core
from keras_hub.src.utils.openvino_utils import get_device

try:
    import openvino as ov
    import openvino.opset14 as ov_opset
    from openvino.op.util import Variable
    from openvino.op.util import VariableInfo
except ImportError:
    ov = None
    ov_opset = None

# The causal LMs whose `generate_step`, `call_with_cache` and `_build_cache`
# the step model reproduces (the tests compare their tokens with the Loop's).
_STEP_MODEL_CAUSAL_LMS = (
    ("keras_hub.src.models.gpt2.gpt2_causal_lm", "GPT2CausalLM"),
    ("keras_hub.src.models.llama.llama_causal_lm", "LlamaCausalLM"),
    ("keras_hub.src.models.gemma.gemma_causal_lm", "GemmaCausalLM"),
)
_CACHE_METHODS = ("generate_step", "call_with_cache", "_build_cache")
_OPENVINO_FLOATS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


class StepModelUnsupported(ValueError):
    """The model's cache is not read and written as this module needs."""


def use_step_model(causal_lm):
    """Whether `causal_lm` generates with a step model on OpenVINO.

    Args:
        causal_lm: A `keras_hub.models.CausalLM`.

    Returns:
        True for keras-hub's `GreedySampler` on a causal LM whose cache code
        is GPT-2's, Llama's or Gemma's, unless the environment variable
        `KERAS_HUB_OPENVINO_STEP_MODEL` is `0`.
    """
    import importlib

    from keras_hub.src.samplers.greedy_sampler import GreedySampler

    if os.environ.get("KERAS_HUB_OPENVINO_STEP_MODEL", "1") == "0":
        return False
    if ov is None or keras.config.backend() != "openvino":
        return False
    # The exact class: a subclass may pick its tokens otherwise.
    if type(getattr(causal_lm, "sampler", None)) is not GreedySampler:
        return False
    # A method set on the instance (a mock) shadows the class's.
    if any(method in vars(causal_lm) for method in _CACHE_METHODS):
        return False
    for module, name in _STEP_MODEL_CAUSAL_LMS:
        supported = getattr(importlib.import_module(module), name)
        if all(
            getattr(type(causal_lm), method, None) is getattr(supported, method)
            for method in _CACHE_METHODS
        ):
            return True
    return False


class StepModelGenerateFunction:
    """A generate function running greedy decoding on a step model.

    Called as `generate_step` is, `(inputs, stop_token_ids=None)`, it
    returns the same `{"token_ids", "padding_mask"}`. The step model is
    traced and compiled on the first call, and again when the device
    changes or a weight was assigned since (its weights are constants).
    Calls it cannot run step by step go to `fallback`, the compiled Loop.

    Args:
        causal_lm: A causal LM for which `use_step_model()` is True.
        fallback: keras-hub's generate function for the compiled Loop.
    """

    def __init__(self, causal_lm, fallback):
        self.causal_lm = causal_lm
        self.fallback = fallback
        self.compiled_model = None
        self._lock = threading.Lock()
        self._device = None
        self._request = None
        self._traced_weights = ()
        self._unsupported = False

    def __call__(self, inputs, stop_token_ids=None):
        inputs = tree.map_structure(ops.convert_to_numpy, inputs)
        token_ids = np.array(inputs["token_ids"])
        mask = np.asarray(inputs["padding_mask"]).astype(bool)
        index = int(mask.sum(axis=-1).min()) if mask.size else 0
        if (
            self._unsupported
            or token_ids.ndim != 2
            # The Loop's first step reads the token before index 0.
            or index == 0
            # The Loop fails to trace past a learned position embedding.
            or token_ids.shape[1] > _position_limit(self.causal_lm)
        ):
            return self.fallback(inputs, stop_token_ids=stop_token_ids)
        with self._lock:
            request = self._infer_request()
            if request is None:
                return self.fallback(inputs, stop_token_ids=stop_token_ids)
            _generate(request, token_ids, mask, index, stop_token_ids)
        return {
            "token_ids": token_ids,
            "padding_mask": _padding_mask(token_ids, mask, stop_token_ids),
        }

    def _infer_request(self):
        """The step model's infer request, traced and compiled if need be;
        None where the model cannot be traced as a step model."""
        device = get_device()
        weights = [weight.value for weight in self.causal_lm.weights]
        if (
            self._request is not None
            and device == self._device
            and not _assigned_since(self._traced_weights, weights)
        ):
            return self._request
        # Freed before the new one is compiled, not after.
        self._request = self.compiled_model = None
        try:
            model = build_step_model(self.causal_lm, device)
        except StepModelUnsupported as error:
            print_msg(
                "WARNING: OpenVINO step model unsupported, generating with "
                f"the compiled Loop instead.\n{error}"
            )
            self._unsupported = True
            return None
        self.compiled_model = compile_step_model(
            model, device, self.causal_lm.dtype
        )
        self._request = self.compiled_model.create_infer_request()
        self._device = device
        self._traced_weights = _weak_references(weights)
        return self._request


def _position_limit(causal_lm):
    """The positions the shortest learned position embedding holds
    (GPT-2's `max_sequence_length`); unbounded where there is none."""
    from keras_hub.src.layers.modeling.position_embedding import (
        PositionEmbedding,
    )

    return min(
        (
            layer.sequence_length
            for layer in causal_lm._flatten_layers()
            if isinstance(layer, PositionEmbedding)
        ),
        default=float("inf"),
    )


def _weak_references(values):
    """References to the weights' values that do not keep an assigned
    variable's old value alive."""

    def reference(value):
        try:
            return weakref.ref(value)
        except TypeError:
            return lambda: value

    return [reference(value) for value in values]


def _assigned_since(references, values):
    """Whether any of `values` (a variable's value is a new object after
    `assign`) is not the object `references` were taken of."""
    return len(references) != len(values) or any(
        reference() is not value for reference, value in zip(references, values)
    )


def build_step_model(causal_lm, device="CPU"):
    """Trace `causal_lm.call_with_cache` into a stateful step model.

    The model's inputs are the token ids `[batch, length]`, the cache index
    (the positions in the state) and `beam_idx` `[batch]`; its output is
    the sampler's probabilities for the last position. Each layer's key and
    value cache is a state variable holding the positions seen so far.

    Args:
        causal_lm: A causal LM for which `use_step_model()` is True.
        device: The OpenVINO device it will be compiled for.

    Returns:
        An `openvino.Model`.

    Raises:
        StepModelUnsupported: The model reads or writes a cache otherwise
            than keras-hub's GPT-2, Llama and Gemma layers do.
    """
    layers, heads, head_dim, dtype = _cache_layout(causal_lm)
    # A float16 or bfloat16 cache is kept in float32, as the compiled
    # Loop's plugin keeps it in its float32 execution precision (a cache
    # rounded between steps can change a token at a near tie), but where
    # the device computes in float16 (the Loop's precision there too).
    state_dtype = "float32"
    capabilities = get_core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    if dtype == "float32" or (dtype == "float16" and "FP16" in capabilities):
        state_dtype = dtype
    tensor_class = type(ops.convert_to_tensor(np.zeros((), "int32")))
    token_ids = ov_opset.parameter([-1, -1], ov.Type.i32)
    index = ov_opset.parameter([], ov.Type.i32)
    caches = [
        ov_opset.parameter([-1, -1, heads, head_dim], _ov_type(state_dtype))
        for _ in range(2 * layers)
    ]
    cache_inputs = [cache.output(0) for cache in caches]
    if state_dtype != dtype:
        cache_inputs = [
            ov_opset.convert(cache, _ov_type(dtype)).output(0)
            for cache in cache_inputs
        ]
    stacked = _stacked_caches_class(tensor_class)
    cache = stacked(
        [stacked(cache_inputs[i : i + 2]) for i in range(0, 2 * layers, 2)]
    )
    logits, _, new_cache = causal_lm.call_with_cache(
        tensor_class(token_ids.output(0)),
        cache,
        tensor_class(index.output(0)),
    )
    probabilities = causal_lm.sampler.compute_probabilities(logits[:, -1, :])
    new_caches = cache.unstacked(new_cache.output)
    return _in_state(token_ids, index, caches, new_caches, probabilities.output)


def compile_step_model(model, device, dtype):
    """Compile a step model as `ov_infer` compiles the Loop.

    Args:
        model: A step model from `build_step_model()`.
        device: The OpenVINO device.
        dtype: The causal LM's dtype.

    Returns:
        The compiled model.
    """
    core = get_core()
    config = {
        "INFERENCE_PRECISION_HINT": (
            "f16" if dtype in ("float16", "bfloat16") else "f32"
        )
    }
    # The plugin quantizes state it appends to (u8) by default: keep the
    # caches in the type the Loop keeps them in.
    supported = core.get_property(device, "SUPPORTED_PROPERTIES")
    if "KV_CACHE_PRECISION" in supported:
        variable = model.get_variables()[0]
        config["KV_CACHE_PRECISION"] = variable.get_info().data_type
    return core.compile_model(model, device, config)


def _ov_type(dtype):
    return getattr(ov.Type, _OPENVINO_FLOATS[dtype])


class _Stop(Exception):
    pass


def _cache_layout(causal_lm):
    """`(layers, heads, head_dim, dtype)` of the cache `_build_cache`
    makes, read from the zeros it hands `call_with_cache` for a one-token
    prompt (the call itself is cut short)."""
    seen = []

    def call_with_cache(token_ids, cache, cache_update_index):
        seen.append(
            (tuple(cache.shape), keras.backend.standardize_dtype(cache.dtype))
        )
        raise _Stop

    # An instance attribute, set past keras's tracking, shadows the method.
    object.__setattr__(causal_lm, "call_with_cache", call_with_cache)
    try:
        causal_lm._build_cache(np.zeros((1, 1), "int32"))
    except _Stop:
        pass
    finally:
        object.__delattr__(causal_lm, "call_with_cache")
    ((shape, dtype),) = seen
    if len(shape) != 6 or shape[:4] != (1, shape[1], 2, 1):
        raise StepModelUnsupported(f"Unexpected cache shape {shape}.")
    if dtype not in _OPENVINO_FLOATS:
        raise StepModelUnsupported(f"Unexpected cache dtype {dtype}.")
    return shape[1], shape[4], shape[5], dtype


def _stacked_caches_class(tensor_class):
    """The stand-in class for keras-hub's stacked cache, on the backend's
    tensor class."""

    class StackedCaches(tensor_class):
        """A stack of caches on axis 1 that no step model reads whole
        (a Parameter the model does not declare), whose `[:, i, ...]` is
        item i: a cache, or the stand-in of a stack itself."""

        def __init__(self, items):
            first = items[0]
            if isinstance(first, StackedCaches):
                first = first.output
            shape = list(first.get_partial_shape())
            shape.insert(1, ov.Dimension(len(items)))
            self.stack = ov_opset.parameter(
                ov.PartialShape(shape), first.get_element_type()
            )
            super().__init__(self.stack.output(0))
            self.items = items

        def __getitem__(self, indices):
            if (
                isinstance(indices, tuple)
                and len(indices) == 3
                and indices[0] == slice(None)
                and type(indices[1]) is int
                and 0 <= indices[1] < len(self.items)
                and indices[2] is Ellipsis
            ):
                item = self.items[indices[1]]
                if isinstance(item, StackedCaches):
                    return item
                return tensor_class(item)
            return super().__getitem__(indices)

        def shape_of(self, element_type):
            """The stack's shape, from its first item's."""
            first = self.items[0]
            if isinstance(first, StackedCaches):
                inner = first.shape_of(element_type)
            else:
                inner = ov_opset.shape_of(first, element_type).output(0)
            rank = inner.get_partial_shape()[0].get_length()
            axis = ov_opset.constant(0, element_type)
            return ov_opset.concat(
                [
                    ov_opset.gather(
                        inner, ov_opset.constant([0], element_type), axis
                    ),
                    ov_opset.constant([len(self.items)], element_type),
                    ov_opset.gather(
                        inner,
                        ov_opset.constant(list(range(1, rank)), element_type),
                        axis,
                    ),
                ],
                0,
            ).output(0)

        def unstacked(self, new_stack):
            """The new caches behind `new_stack`, in the items' order, each
            stack taken apart as `ops.stack(items, axis=1)` builds it: a
            Concat on axis 1 of an Unsqueeze on axis 1 an item."""
            readers = _readers(self.stack.output(0))
            for reader in readers:
                if reader.get_type_name() != "ShapeOf":
                    raise StepModelUnsupported(
                        "A stack of caches is read whole, by "
                        f"{reader.get_type_name()}."
                    )
                # A layer's attention mask reads the cache's length.
                reader.output(0).replace(
                    self.shape_of(reader.get_output_element_type(0))
                )
            concat = _through_same_type_converts(new_stack).get_node()
            parts = concat.input_values()
            if (
                concat.get_type_name() != "Concat"
                or concat.get_attributes()["axis"] != 1
                or len(parts) != len(self.items)
                or not all(_is_unsqueezed_on_axis_1(part) for part in parts)
            ):
                raise StepModelUnsupported(
                    "A new cache is not the stack of the updated caches."
                )
            caches = []
            for item, part in zip(self.items, parts):
                cache = part.get_node().input_value(0)
                if isinstance(item, StackedCaches):
                    caches.extend(item.unstacked(cache))
                else:
                    caches.append(cache)
            return caches

    return StackedCaches


def _through_same_type_converts(output):
    """`output`, or what a chain of Converts to its own type converts (the
    backend's `stack` converts each item to the first's type, even its
    own)."""
    node = output.get_node()
    while (
        node.get_type_name() == "Convert"
        and node.input_value(0).get_element_type() == output.get_element_type()
    ):
        output = node.input_value(0)
        node = output.get_node()
    return output


def _is_unsqueezed_on_axis_1(output):
    node = output.get_node()
    return (
        node.get_type_name() == "Unsqueeze"
        and node.input_value(1).get_node().get_type_name() == "Constant"
        and node.input_value(1).get_node().get_data().reshape(-1).tolist()
        == [1]
    )


def _readers(output):
    """The nodes reading `output` (references kept: a node rewired away
    from may be freed, and its inputs with it)."""
    return [target.get_node() for target in output.get_target_inputs()]


def _in_state(token_ids, index, caches, new_caches, probabilities):
    """The step model with each cache in state: the write of the new
    positions at the cache index becomes the past positions (the state,
    `beam_idx`'s rows of it) concatenated with the new ones, which the
    model reads instead and assigns to the state. The cache index is the
    state's length (`_generate` empties the state before each call)."""
    beam_idx = ov_opset.parameter(
        ov.PartialShape([token_ids.get_partial_shape()[0]]), ov.Type.i32
    )
    beam_idx.set_friendly_name("beam_idx")
    batch = ov_opset.gather(
        ov_opset.shape_of(token_ids, ov.Type.i64),
        ov_opset.constant([0], ov.Type.i64),
        ov_opset.constant(0, ov.Type.i64),
    )
    assigns = []
    for number, (cache, new_cache) in enumerate(zip(caches, new_caches)):
        write, read = _cache_write(cache, new_cache)
        heads, head_dim = (cache.get_partial_shape()[axis] for axis in (2, 3))
        state_type = cache.get_element_type()
        info = VariableInfo()
        info.variable_id = f"cache_{number}"
        info.data_type = state_type
        info.data_shape = cache.get_partial_shape()
        variable = Variable(info)
        # No position at first: [batch, 0, heads, head_dim].
        empty = ov_opset.broadcast(
            ov_opset.constant(0, state_type),
            ov_opset.concat(
                [
                    batch,
                    ov_opset.constant(
                        [0, heads.get_length(), head_dim.get_length()],
                        ov.Type.i64,
                    ),
                ],
                0,
            ),
        )
        stored_past = ov_opset.read_value(empty, variable).output(0)
        past = stored_past
        if read.get_element_type() != state_type:
            past = ov_opset.convert(past, read.get_element_type()).output(0)
        new = _new_positions(write)
        present = ov_opset.concat(
            [ov_opset.gather(past, beam_idx, ov_opset.constant(0)), new], 1
        ).output(0)
        # The cache's length (the causal mask) is the state's and the new
        # positions': from their shapes, not the Concat's, which kept the
        # plugin from fusing the first layer of a float16 model.
        for reader in _readers(cache.output(0)) + (
            _readers(read) if read != cache.output(0) else []
        ):
            if reader.get_type_name() == "ShapeOf":
                reader.output(0).replace(
                    _present_shape(
                        stored_past, new, reader.get_output_element_type(0)
                    )
                )
        for reader in _readers(write.output(0)):
            if reader.get_type_name() != "Result":
                for target in reader.inputs():
                    if target.get_source_output() == write.output(0):
                        target.replace_source_output(present)
        stored = present
        if state_type != present.get_element_type():
            stored = ov_opset.convert(present, state_type).output(0)
        assigns.append(ov_opset.assign(stored.get_node(), variable))
    try:
        model = ov.Model(
            [ov_opset.result(probabilities)],
            assigns,
            [token_ids, index, beam_idx],
        )
    except RuntimeError as error:  # a node still reads a cache Parameter
        raise StepModelUnsupported(f"A cache is read otherwise: {error}")
    model.validate_nodes_and_infer_types()
    return model


def _cache_write(cache, new_cache):
    """The ScatterNDUpdate writing `cache`'s new positions that
    `new_cache` is, and the cache as it reads it (a Convert to the model's
    type, or the Parameter itself)."""
    write = _through_same_type_converts(new_cache).get_node()
    if write.get_type_name() == "Convert":  # to the state's type
        write = write.input_value(0).get_node()
    if write.get_type_name() != "ScatterNDUpdate":
        raise StepModelUnsupported("A new cache is not a write into a cache.")
    read = write.input_value(0)
    node = read.get_node()
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.output(0) != cache.output(0):
        raise StepModelUnsupported("A new cache is not its own cache written.")
    for output in {cache.output(0), read}:
        for reader in _readers(output):
            if reader.get_type_name() not in (
                "ShapeOf",
                "Convert",
                "ScatterNDUpdate",
            ):
                raise StepModelUnsupported(
                    f"A cache is read by {reader.get_type_name()}."
                )
    return write, read


def _new_positions(write):
    """The new positions a cache write writes, `[batch, new, heads,
    head_dim]`: its updates, before the backend flattened them."""
    updates = write.input_value(2)
    if updates.get_node().get_type_name() == "Reshape":
        updates = updates.get_node().input_value(0)
    if updates.get_partial_shape().rank.get_length() != 4:
        raise StepModelUnsupported("A cache write's updates are not 4-D.")
    return updates


def _present_shape(past, new, element_type):
    """The shape of `past` with `new`'s positions (axis 1) added."""
    new_length = ov_opset.gather(
        ov_opset.shape_of(new, ov.Type.i64),
        ov_opset.constant([1]),
        ov_opset.constant(0),
    )
    zero = ov_opset.constant([0], ov.Type.i64)
    shape = ov_opset.add(
        ov_opset.shape_of(past, ov.Type.i64),
        ov_opset.concat([zero, new_length, zero, zero], 0),
    ).output(0)
    if element_type != ov.Type.i64:
        shape = ov_opset.convert(shape, element_type).output(0)
    return shape


def _generate(request, token_ids, mask, index, stop_token_ids):
    """The greedy sampler's loop on `token_ids`, in place."""
    batch, length = token_ids.shape
    if index >= length:
        return
    request.reset_state()
    # Each row reads its own cache: the identity order.
    beam_idx = np.arange(batch, dtype="int32")

    def infer(tokens, cache_index):
        request.infer(
            [
                np.ascontiguousarray(tokens, dtype="int32"),
                np.array(cache_index, dtype="int32"),
                beam_idx,
            ]
        )
        return request.get_output_tensor(0).data

    # The prompt pass covers the positions every row holds, and gives the
    # first new token. (The Loop passes over every padded position, then
    # recomputes the last prompt token in its first step.)
    probabilities = infer(token_ids[:, :index], 0)
    while True:
        next_token = np.argmax(probabilities, axis=-1)
        token_ids[:, index] = np.where(
            mask[:, index], token_ids[:, index], next_token
        )
        index += 1
        # The Loop tests its condition after each step: it always makes
        # one token.
        if index >= length or (
            stop_token_ids is not None
            and _stop_locations(token_ids, mask, stop_token_ids)
            .any(axis=-1)
            .all()
        ):
            return
        probabilities = infer(token_ids[:, index - 1 : index], index - 1)


def _stop_locations(token_ids, mask, stop_token_ids):
    return np.isin(token_ids, np.asarray(stop_token_ids)) & ~mask


def _padding_mask(token_ids, mask, stop_token_ids):
    """`generate_step`'s output padding mask: every position up to and
    including each row's first new stop token."""
    if stop_token_ids is None:
        return np.ones_like(token_ids, dtype=bool)
    end_locations = _stop_locations(token_ids, mask, stop_token_ids)
    end_locations = end_locations.astype("int32")
    overflow = np.cumsum(end_locations, axis=-1) - end_locations
    return ~overflow.astype(bool)
