"""Generate with one compiled step model, as OpenVINO's own pipeline does.

keras-hub compiles a causal LM's whole ``generate_step`` as one OpenVINO
model: the prompt pass, then a Loop whose body holds every layer again.
Compiling the doubled graph is most of the first call, and the Loop costs
time of its own every iteration (docs/parts.md). openvino-genai compiles
one forward step with a key/value cache and runs the prompt and each
decoding step as inferences of it.

This part does the same for keras-hub's greedy causal LMs: it traces
``call_with_cache`` once on Parameters (token ids ``[B, S]``, the cache
``[B, layers, 2, L, heads, head_dim]``, the cache index) into a model
giving the sampler's probabilities for the last position and the new
cache, compiles it as ``ov_infer`` compiles stock's (same device, same
``INFERENCE_PRECISION_HINT``) and decodes greedily in Python around it.
The prompt pass covers only the prompt and gives the first new token
(stock's covers every padded position and recomputes the prompt's last
token in a first step: 9 passes over the weights for 8 new tokens,
genai's 8). Each inference reads the cache from one of two buffers and
writes the other: it is never copied (with ``state_caches``, it is the
request's OpenVINO state). The other parts apply inside the step model:
they hook the backend ops the trace calls.

A float16 or bfloat16 model's cache crosses the boundary in float32
(converted inside), as stock's Loop holds its cache in the plugin's
execution precision: float32 on a CPU without float16/bfloat16 units,
whatever the f16 hint asks. A cache Parameter of the model's own type
would round it between steps, and a 2-layer bfloat16 Llama then picked
another token at a near tie (tests/test_stepwise.py). Where the plugin
computes in the low type, the Convert inside rounds as the Loop's storage
does.

Only causal LMs whose ``generate_step``, ``call_with_cache`` and
``_build_cache`` are GPT-2's, Llama's or Gemma's (the tests compare their
tokens with stock's in float32, float16 and bfloat16), with keras-hub's
``GreedySampler`` itself, run this way; anything else keeps stock's
generate function, the reason in ``explain()``.
"""

import collections
import functools
import threading
import weakref

from ...core import backend, decisions
from ...core.extension import extended
from ...core.part import ExtensionPoint, Hook, Part

__all__ = [
    "BUILD",
    "COMPILE",
    "LABEL",
    "PART",
    "STEPS_LABEL",
    "TRACE",
    "CacheLayout",
    "build_step_model",
    "compile_step_model",
    "decline_reason",
    "trace_step_model",
]

LABEL = "CausalLM.generate"
STEPS_LABEL = "stepwise: inferences of the step model (prompt, then per token)"
_CAUSAL_LM = "keras_hub.src.models.causal_lm"
# (module, class): causal LMs whose generate_step, call_with_cache and
# _build_cache this part reproduces (the tests compare their tokens).
_SUPPORTED = (
    ("keras_hub.src.models.gpt2.gpt2_causal_lm", "GPT2CausalLM"),
    ("keras_hub.src.models.llama.llama_causal_lm", "LlamaCausalLM"),
    ("keras_hub.src.models.gemma.gemma_causal_lm", "GemmaCausalLM"),
)
_METHODS = ("generate_step", "call_with_cache", "_build_cache")
# The step model's extension points: other parts change its form here.
TRACE = ExtensionPoint(
    "stepwise.trace",
    "trace the step model: pass_(trace, causal_lm, **options) -> (model, "
    "CacheLayout); trace(causal_lm, per_layer=True) has call_with_cache "
    "take a key and a value cache a layer",
)
BUILD = ExtensionPoint(
    "stepwise.build",
    "make the compiled step model, traced and compiled or otherwise: "
    "pass_(build, causal_lm, device) -> (compiled model, CacheLayout)",
)
COMPILE = ExtensionPoint(
    "stepwise.compile",
    "compile the traced step model: pass_(compile, model, device, dtype) "
    "-> the compiled model",
)
# The positions a one-row generation's per-layer caches grow by (below).
_PREFIX_STEP = 64


def decline_reason(causal_lm):
    """Why ``causal_lm`` keeps stock's generate function; None: it need
    not."""
    import importlib

    import keras
    from keras_hub.src.samplers.greedy_sampler import GreedySampler

    backend = keras.config.backend()
    if backend != "openvino":
        return f"the backend is {backend!r}, not 'openvino'"
    # The exact class: a subclass may pick its tokens otherwise.
    if type(causal_lm.sampler) is not GreedySampler:
        return (
            f"sampler {type(causal_lm.sampler).__name__} (only keras-hub's "
            "GreedySampler is run step by step)"
        )
    # One set on the model itself (a test's mock) is not the class's, and
    # the trace must not shadow it.
    own = [method for method in _METHODS if method in vars(causal_lm)]
    if own:
        return f"{', '.join(own)} set on the model itself"
    model_class = type(causal_lm)
    for module, name in _SUPPORTED:
        supported = getattr(importlib.import_module(module), name)
        if all(
            getattr(model_class, method, None) is getattr(supported, method)
            for method in _METHODS
        ):
            return None
    return (
        f"{model_class.__name__}'s {', '.join(_METHODS)} are not those of "
        f"{', '.join(name for _, name in _SUPPORTED)}"
    )


class _StepwiseGenerate:
    """A causal LM's generate function: ``(inputs, stop_token_ids=None)``
    -> ``{"token_ids", "padding_mask"}``, as stock's ``generate_step``.

    Falls back to ``stock`` when the part was disabled since it was made.
    The step model is traced and compiled on the first call and kept here
    (the model keeps this function, as it keeps stock's compiled model),
    and again on a call that finds a weight assigned since (stock's
    compiled model keeps the old weights until it is dropped).
    """

    def __init__(self, causal_lm, stock):
        self.causal_lm = causal_lm
        self.stock = stock
        self._lock = threading.Lock()
        # (device, compiled model, cache layout, infer request)
        self._compiled = None
        # What the step model was traced with (_weight_references).
        self._traced_weights = ()
        self._position_embedding = _position_embedding(causal_lm)

    def __call__(self, inputs, stop_token_ids=None):

        if not PART.is_on():
            return self.stock(inputs, stop_token_ids=stop_token_ids)
        import numpy as np
        from keras import ops, tree

        inputs = tree.map_structure(ops.convert_to_numpy, inputs)
        token_ids = np.array(inputs["token_ids"])
        mask = np.asarray(inputs["padding_mask"]).astype(bool)
        index = int(mask.sum(axis=-1).min()) if mask.size else 0
        if token_ids.ndim != 2 or index == 0:
            # Stock's first step would read the token before index 0.
            reason = "a prompt row holds no token (stock: its first step reads"
            _record(self.causal_lm, False, reason + " the token at index -1)")
            return self.stock(inputs, stop_token_ids=stop_token_ids)
        self._check_length(token_ids.shape[1])
        try:
            with self._lock:
                request, layout = self._compile()
                steps = _generate(
                    request, layout, token_ids, mask, index, stop_token_ids
                )
        except Exception as error:  # Never let the part break a model.
            _record(self.causal_lm, False, f"internal error: {error!r}")
            return self.stock(inputs, stop_token_ids=stop_token_ids)
        decisions.count(STEPS_LABEL, steps)
        return {
            "token_ids": token_ids,
            "padding_mask": _padding_mask(token_ids, mask, stop_token_ids),
        }

    def _check_length(self, length):
        """Raises stock's RuntimeError, before any work, for a sequence
        longer than the model's position embedding (GPT-2's). Stock's
        generate graph fails to trace it; the step model, its sequence
        dynamic, would read past the table and answer tokens stock's model
        cannot give."""
        embedding = self._position_embedding
        if embedding is None or length <= embedding.sequence_length:
            return
        limit = embedding.sequence_length
        raise RuntimeError(
            f"{type(self.causal_lm).__name__} cannot generate {length} "
            f"positions: its position embedding {embedding.name!r} holds "
            f"{limit} (sequence_length={limit}); generate at most {limit} "
            "(max_length, or the padded length of token_ids)"
        )

    @property
    def compiled_model(self):
        """The compiled step model; None until the first call."""
        return None if self._compiled is None else self._compiled[1]

    def _compile(self):
        from keras_hub.src.utils import openvino_utils

        device = openvino_utils.get_device()
        # Once a call: the step model holds the weights it was traced with
        # as Constants, and a step never reads them from the variables.
        weights = _weight_values(self.causal_lm)
        if self._compiled is not None:
            stale = _assigned_since(self._traced_weights, weights)
            if stale:
                _record(
                    self.causal_lm,
                    True,
                    f"{stale} of {len(weights)} weights assigned since the "
                    "step model was traced: traced and compiled again",
                )
                # Freed before the new one is compiled, not after.
                self._compiled = None
        if self._compiled is None or self._compiled[0] != device:
            self._traced_weights = _weight_references(weights)
            compiled, layout = build_step_model(self.causal_lm, device)
            # One infer request, kept: it keeps its memory between calls.
            request = compiled.create_infer_request()
            self._compiled = (device, compiled, layout, request)
        return self._compiled[3], self._compiled[2]


def _position_embedding(causal_lm):
    """``causal_lm``'s shortest learned position embedding (GPT-2's holds
    ``max_sequence_length`` positions); None where there is none (Llama's
    and Gemma's positions are rotary: any length)."""
    from keras_hub.src.layers.modeling.position_embedding import (
        PositionEmbedding,
    )

    embeddings = [
        layer
        for layer in causal_lm._flatten_layers()
        if isinstance(layer, PositionEmbedding)
    ]
    return min(
        embeddings, key=lambda layer: layer.sequence_length, default=None
    )


def _weight_values(causal_lm):
    """The value objects of ``causal_lm``'s weights. ``assign`` (which
    ``set_weights`` and ``load_weights`` call) gives a variable a new one,
    a new Constant on OpenVINO; Keras changes none in place."""
    return [weight.value for weight in causal_lm.weights]


def _weight_references(values):
    """References to ``values`` that do not keep them alive: an assigned
    variable's old weights are freed as without this part."""

    def reference(value):
        try:
            return weakref.ref(value)
        except TypeError:  # not weakly referenceable: kept
            return lambda: value

    return [reference(value) for value in values]


def _assigned_since(references, values):
    """How many of ``values`` are not the objects ``references`` were
    taken of (all of them when the weights are others)."""
    if len(references) != len(values):
        return len(values)
    return sum(
        reference() is not value for reference, value in zip(references, values)
    )


def build_step_model(causal_lm, device):
    """``(compiled model, CacheLayout)`` for ``causal_lm`` on ``device``,
    with the passes at ``BUILD`` (traced and compiled without any)."""
    return extended(BUILD, _build_step_model)(causal_lm, device)


def _build_step_model(causal_lm, device):
    model, layout = trace_step_model(causal_lm)
    return compile_step_model(model, device, causal_lm.dtype), layout


def trace_step_model(causal_lm):
    """``causal_lm``'s step model as the parts switched on shape it (the
    passes at ``TRACE``): ``(ov.Model, CacheLayout)``."""
    return extended(TRACE, _trace)(causal_lm)


def compile_step_model(model, device, dtype):
    """The step model compiled, with the passes at ``COMPILE``."""
    return extended(COMPILE, _compile_step_model)(model, device, dtype)


def _compile_step_model(model, device, dtype):
    """Compiled as keras-hub's ``ov_infer`` compiles stock's model: its
    core, its precision hint for the model's dtype."""
    from keras_hub.src.utils import openvino_utils

    core = openvino_utils.get_core()
    config = {
        "INFERENCE_PRECISION_HINT": "f16"
        if dtype in ("float16", "bfloat16")
        else "f32"
    }
    supported = core.get_property(device, "SUPPORTED_PROPERTIES")
    variables = model.get_variables()
    if variables and "KV_CACHE_PRECISION" in supported:
        # Caches in state (the state_caches part) are kept in their
        # variables' type: float32, the type they cross the boundary in
        # otherwise (the module's docstring), or a float16 model's float16
        # where the device computes in it (state_caches.py). The plugin's
        # default quantizes them to u8.
        config["KV_CACHE_PRECISION"] = variables[0].get_info().data_type
    return core.compile_model(model, device, config)


class _Captured(Exception):
    pass


def _cache_layout(causal_lm):
    """(layers, heads, head_dim, dtype) of the cache ``_build_cache``
    makes, read from the zeros it would hand to ``call_with_cache`` for a
    one-token prompt (the call itself is cut short)."""
    import numpy as np

    captured = []

    def capture(token_ids, cache, cache_update_index):
        captured.append((tuple(cache.shape), str(cache.dtype)))
        raise _Captured

    # An instance attribute, bypassing Keras's tracking, shadows the method.
    object.__setattr__(causal_lm, "call_with_cache", capture)
    try:
        causal_lm._build_cache(np.zeros((1, 1), "int32"))
    except _Captured:
        pass
    finally:
        object.__delattr__(causal_lm, "call_with_cache")
    ((shape, dtype),) = captured
    if len(shape) != 6 or shape[:4] != (1, shape[1], 2, 1):
        raise ValueError(f"unexpected cache shape {shape}")
    return shape[1], shape[4], shape[5], dtype


def _trace(causal_lm, per_layer=False):
    """The step model: (token ids, cache, cache index) -> (the sampler's
    probabilities for the last position, the new cache). ``per_layer``:
    a key and a value cache a layer cross the boundary (the
    ``layer_caches`` part; raises ``layer_caches.Declined`` where the
    model's ``call_with_cache`` does not take its layers' caches apart)."""
    import openvino as ov
    import openvino.opset14 as ov_opset

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    layers, heads, head_dim, dtype = _cache_layout(causal_lm)
    # float16/bfloat16 caches cross the boundary in float32 (the module's
    # docstring says why).
    boundary = "float32" if dtype in ("float16", "bfloat16") else dtype
    layout = CacheLayout(layers, heads, head_dim, boundary, per_layer)
    # The sizes stock's graph knows (its cache is zeros of a shape built
    # from the model's config) stay static: the batch, the sequence and the
    # cache length are dynamic, as they are in stock's graph.
    token_ids = ov_opset.parameter([-1, -1], ov.Type.i32)
    caches = [
        ov_opset.parameter(shape, OPENVINO_DTYPES[boundary])
        for shape in layout.shapes(-1, -1)
    ]
    index = ov_opset.parameter([], ov.Type.i32)
    _share_batch([token_ids, *caches])
    cache_inputs = [cache.output(0) for cache in caches]
    if boundary != dtype:
        cache_inputs = [
            ov_opset.convert(cache, OPENVINO_DTYPES[dtype]).output(0)
            for cache in cache_inputs
        ]
    if per_layer:
        from . import layer_caches

        cache = layer_caches.stand_in(cache_inputs, layers)
    else:
        (cache,) = (OpenVINOKerasTensor(output) for output in cache_inputs)
    logits, _, new_cache = causal_lm.call_with_cache(
        OpenVINOKerasTensor(token_ids.output(0)),
        cache,
        OpenVINOKerasTensor(index.output(0)),
    )
    probabilities = causal_lm.sampler.compute_probabilities(logits[:, -1, :])
    if per_layer:
        cache_outputs = cache.unstacked(new_cache.output)
    else:
        cache_outputs = [new_cache.output]
    if boundary != dtype:
        cache_outputs = [
            ov_opset.convert(output, OPENVINO_DTYPES[boundary]).output(0)
            for output in cache_outputs
        ]
    results = [ov_opset.result(probabilities.output)] + [
        ov_opset.result(output) for output in cache_outputs
    ]
    return ov.Model(results, [token_ids, *caches, index]), layout


def _share_batch(parameters):
    """Gives the parameters' first (batch) dimensions one symbol: this part
    always feeds the cache and the token ids with the same batch, and
    telling the plugin so lets its shape passes merge the arithmetic each
    decoder layer repeats on its own tensors' shapes (its causal mask,
    positions and cache indices). Apart, the two batches stay two unknowns
    and every layer keeps its copy: a compiled step model of many more
    layers, compiled longer (docs/native-gap.md, "One batch symbol"). The
    values computed are the same."""
    import openvino as ov

    if not hasattr(ov, "Symbol"):  # OpenVINO before symbols: nothing shared
        return
    batch = ov.Symbol()
    for parameter in parameters:
        dimensions = list(parameter.get_partial_shape())
        dimensions[0].set_symbol(batch)
        parameter.set_partial_shape(ov.PartialShape(dimensions))


class CacheLayout(
    collections.namedtuple(
        "CacheLayout",
        "layers heads head_dim dtype per_layer in_state",
        defaults=(False,),
    )
):
    """The step model's cache at its boundary: ``per_layer`` False, one
    ``[batch, layers, 2, length, heads, head_dim]`` tensor (the stack
    keras-hub's ``call_with_cache`` takes); True, a key and a value cache
    of ``[batch, length, heads, head_dim]`` a layer (the ``layer_caches``
    part). ``in_state``: none, the caches are OpenVINO state and the
    inputs are (token ids, cache index, beam_idx) (the ``state_caches``
    part)."""

    def shapes(self, batch, length):
        """The cache tensors' shapes, in the step model's input order."""
        if self.in_state:
            return []
        if self.per_layer:
            cache = [batch, length, self.heads, self.head_dim]
            return [cache] * (2 * self.layers)
        return [[batch, self.layers, 2, length, self.heads, self.head_dim]]


def _cache_buffers(batch, length, layout):
    """Two sets of the cache's tensors (``layout.shapes``), the first
    zeros, all owned here: each inference reads one set and writes the
    other."""
    import numpy as np
    import openvino as ov

    OPENVINO_DTYPES = backend.symbol("OPENVINO_DTYPES")

    # ov.Tensors of the cache's own type: NumPy has no bfloat16 that
    # OpenVINO reads as such, and zero bytes are zero in every float type.
    element_type = OPENVINO_DTYPES[layout.dtype]
    buffers = [
        [
            ov.Tensor(element_type, shape)
            for shape in layout.shapes(batch, length)
        ]
        for _ in range(2)
    ]
    for buffer in buffers[0]:
        np.asarray(buffer.data).fill(0)
    return buffers


def _generate(request, layout, token_ids, mask, index, stop_token_ids):
    """Stock's ``generate_step`` with greedy sampling, on ``token_ids`` in
    place; returns how many inferences ran."""
    import numpy as np
    import openvino as ov

    batch, length = token_ids.shape
    if index >= length:
        return 0
    # The cache goes back and forth between two buffers of ours, never
    # copied. Not the output tensors the plugin allocates: an input bound
    # to one of those outlived it, and the heap was corrupted later (seen
    # with two infer requests taking turns, on OpenVINO 2026.4.1).
    buffers = _cache_buffers(batch, length, layout)
    if layout.in_state:
        # The caches are the request's state: emptied, and each row reads
        # its own (beam_idx, the plugin's reordering of them, is the
        # identity).
        request.reset_state()
        request.set_input_tensor(2, ov.Tensor(np.arange(batch, dtype=np.int32)))
    # One row's caches a layer: each inference sees a prefix (contiguous)
    # of them that holds the positions filled so far and its own, so the
    # attention and the cache copy cover those rather than the whole
    # length; the positions past them are masked, as in the whole cache.
    trimmed = layout.per_layer and batch == 1
    prefixes = {}  # (parity, prefix) -> its tensors, made once

    def caches(parity, positions):
        if not trimmed:
            return buffers[parity]
        # A multiple of _PREFIX_STEP: the plugin makes and keeps executors
        # for each new input shape, memory and time a shape (one position
        # at a time: docs/native-gap.md, docs/parts.md).
        prefix = -(-positions // _PREFIX_STEP) * _PREFIX_STEP
        if (parity, prefix) not in prefixes:
            prefixes[parity, prefix] = [
                ov.Tensor(
                    np.asarray(buffer.data)[:, :prefix], shared_memory=True
                )
                for buffer in buffers[parity]
            ]
        return prefixes[parity, prefix]

    def infer(tokens, cache_index, step):
        request.set_input_tensor(0, ov.Tensor(tokens.astype(np.int32)))
        positions = cache_index + tokens.shape[1]
        reads = caches(step % 2, positions)
        writes = caches((step + 1) % 2, positions)
        for position, (read, write) in enumerate(zip(reads, writes), 1):
            request.set_input_tensor(position, read)
            request.set_output_tensor(position, write)
        request.set_input_tensor(
            len(reads) + 1, ov.Tensor(np.array(cache_index, np.int32))
        )
        request.infer()
        return request.get_output_tensor(0).data

    # The prompt pass, as genai's: only the tokens every row holds, [0,
    # index), and its last position's probabilities give the first new
    # token. Stock runs the whole padded sequence (max_length tokens) to
    # fill the cache, then a first step that recomputes the token at
    # index - 1 through every layer: one more pass over the weights. The
    # cache past index - 1 is written by the step that reaches it before
    # any step reads it (the causal mask).
    probabilities = infer(np.ascontiguousarray(token_ids[:, :index]), 0, 0)
    steps = 1
    while True:
        next_token = np.argmax(probabilities, axis=-1)
        token_ids[:, index] = np.where(
            mask[:, index], token_ids[:, index], next_token
        )
        index += 1
        # OpenVINO's Loop tests its condition after each iteration, never
        # before the first: stock always makes one token.
        if index >= length or (
            stop_token_ids is not None
            and _done(token_ids, mask, stop_token_ids)
        ):
            return steps
        probabilities = infer(
            np.ascontiguousarray(token_ids[:, index - 1 : index]),
            index - 1,
            steps,
        )
        steps += 1


def _stop_locations(token_ids, mask, stop_token_ids):
    """keras-hub's ``any_equal(token_ids, stop_token_ids, ~mask)``."""
    import numpy as np

    return np.isin(token_ids, np.asarray(stop_token_ids)) & ~mask


def _done(token_ids, mask, stop_token_ids):
    """Every row has produced a stop token outside its prompt."""
    return bool(_stop_locations(token_ids, mask, stop_token_ids).any(-1).all())


def _padding_mask(token_ids, mask, stop_token_ids):
    """Stock's output padding mask: everything up to and including each
    row's first new stop token."""
    import numpy as np

    if stop_token_ids is None:
        return np.ones_like(token_ids, dtype=bool)
    end_locations = _stop_locations(token_ids, mask, stop_token_ids)
    end_locations = end_locations.astype(np.int32)
    overflow = np.cumsum(end_locations, axis=-1) - end_locations
    return ~overflow.astype(bool)


def _record(causal_lm, lowered, reason, label=LABEL):
    decisions.record(
        decisions.Decision(
            equation=label,
            shapes=(),
            dtypes=(type(causal_lm).__name__,),
            lowered=lowered,
            reason=reason,
        )
    )


def _make_generate_function_wrapper(stock_make_generate_function):
    """``CausalLM.make_generate_function``: the stepwise generate function
    where it applies, stock's otherwise; one decision per function made."""

    @functools.wraps(stock_make_generate_function)
    def make_generate_function(self):
        if self.generate_function is not None:
            return self.generate_function
        stock = stock_make_generate_function(self)
        reason = decline_reason(self)
        if reason is None:
            self.generate_function = _StepwiseGenerate(self, stock)
            description = (
                "one step model; the prompt and each decoding step run as "
                "its inferences"
            )
        else:
            description = reason
        _record(self, reason is None, description)
        return self.generate_function

    return make_generate_function


def _unavailable():
    """keras 3.12's OpenVINO backend answers None for a size known only at
    run time (``ops.shape``), and keras-hub's layers compute with it (GPT-2's
    position embedding slices its table to the sequence length): the step
    model, its sequence dynamic, cannot be traced there."""
    import openvino as ov
    import openvino.opset13 as ov_opset
    from keras import ops

    tokens = ov_opset.parameter([-1, -1], ov.Type.i32).output(0)
    if ops.shape(backend.keras_tensor(tokens))[1] is None:
        return (
            "the backend's ops.shape gives None for a dynamic size, which "
            "keras-hub's layers compute with in the step model"
        )
    return None


PART = Part(
    name="stepwise",
    summary="greedy generate() as inferences of one compiled step model, as "
    "openvino-genai runs",
    wraps=(
        (
            Hook(_CAUSAL_LM, "CausalLM.make_generate_function"),
            _make_generate_function_wrapper,
        ),
    ),
    unavailable=_unavailable,
)
