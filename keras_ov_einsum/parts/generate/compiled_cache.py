"""Opt-in: keep the compiled step model on disk for the next process.

Each process traces and compiles the stepwise part's step model again: most
of the first call (docs/native-gap.md). OpenVINO's own ``CACHE_DIR`` does
not help: it keys a blob on the model's serialized form, which differs
from one trace to the next (GPT-2 Medium: three processes wrote three
blobs, and compiled slower writing them). openvino-genai and optimum-intel
read their blob from the IR file they compile.

This part keys the compiled model on what it is made from, and imports it
on a hit instead of tracing and compiling:

- the model: its class, its backbone's config and every layer's dtype
  policy (names left out: a second model in a process gets other names);
- its weights: xxh3-128 of every weight's dtype, shape and bytes, read in
  place from the Constants they are (GPT-2 Medium's 1.4 GB: about 0.1 s);
- how it is made: the parts installed, this package's source files, the
  versions of keras, keras-hub, keras-openvino and OpenVINO;
- where it runs: the device, its full name and capabilities, and the
  core's properties that shape a compiled model (``_BAKED``).

A change to any of them is another key, so a model never runs on weights
or code other than its own. The blob is written beside a JSON of the key's
inputs, the cache layout and the compiled model's baked properties, each
under a temporary name and renamed, the JSON last: a reader sees a whole
entry or none, and the blob's digest is checked on import. The blob is
mapped (copy-on-write) to import it, not read into memory; the compiled
model keeps the mapping, which the plugin reads from. A blob that does
not import, or imports with other baked properties, is deleted and the
model traced and compiled as without the part; ``explain()`` says which
happened.

Storing costs the miss ``export_model`` and a write of about the weights'
size; nothing evicts entries (as with OpenVINO's ``CACHE_DIR``). The folder
is ``$KERAS_OV_EINSUM_CACHE_DIR``, else ``~/.cache/keras-ov-einsum/compiled``.
"""

import functools
import json
import os
import pathlib
import sys

from ...core import decisions, in_force
from ...core.part import Part
from . import stepwise

__all__ = ["CACHE_DIR_ENV", "LABEL", "PART", "cache_dir", "entry_key"]

LABEL = "compiled_cache: the step model from disk"
CACHE_DIR_ENV = "KERAS_OV_EINSUM_CACHE_DIR"
# Bumped when an entry's form changes.
_FORMAT = 1
# Properties a compiled model keeps in its blob: the core's values are part
# of the key, the compiled model's are passed again on import and checked.
_BAKED = (
    "INFERENCE_PRECISION_HINT",
    "EXECUTION_MODE_HINT",
    "KV_CACHE_PRECISION",
    "KEY_CACHE_PRECISION",
    "VALUE_CACHE_PRECISION",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE",
)
_STACK = ("keras", "keras_hub", "keras_openvino", "openvino")


def cache_dir():
    folder = os.environ.get(CACHE_DIR_ENV)
    if folder:
        return pathlib.Path(folder)
    return pathlib.Path.home() / ".cache" / "keras-ov-einsum" / "compiled"


def entry_key(causal_lm, device):
    """``(key, inputs)``: the hex key of ``causal_lm``'s step model on
    ``device`` and the JSON-able inputs it hashes, weights' digest
    included."""
    import xxhash

    inputs = {
        "format": _FORMAT,
        "model": _model_identity(causal_lm),
        "weights": _weights_digest(causal_lm),
        "parts": list(in_force.installed()),
        "sources": _sources_digest(),
        "versions": _versions(),
        "device": _device_identity(device),
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    return xxhash.xxh3_128_hexdigest(text.encode()), inputs


def _model_identity(causal_lm):
    backbone = causal_lm.backbone
    return {
        "class": _qualified(causal_lm),
        "backbone": _qualified(backbone),
        "config": _without_names(backbone.get_config()),
        "dtype_policies": [
            [type(layer).__name__, layer.dtype_policy.name]
            for layer in backbone._flatten_layers()
        ],
    }


def _qualified(value):
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _without_names(config):
    if isinstance(config, dict):
        return {
            key: _without_names(value)
            for key, value in config.items()
            if key != "name"
        }
    if isinstance(config, list | tuple):
        return [_without_names(value) for value in config]
    return config


def _weights_digest(causal_lm):
    import numpy as np
    import xxhash

    digest = xxhash.xxh3_128()
    for weight in causal_lm.weights:
        data = _weight_data(weight)
        digest.update(f"{data.dtype.str}{data.shape};".encode())
        digest.update(memoryview(np.ascontiguousarray(data)).cast("B"))
    return digest.hexdigest()


def _weight_data(weight):
    """The weight's values: the Constant's own memory where the weight is
    one (no copy), else Keras's conversion."""
    from keras import ops

    output = getattr(weight.value, "output", None)
    if output is not None:
        node = output.get_node()
        if node.get_type_name() == "Constant":
            data = node.get_data()
            if data.nbytes == node.get_byte_size():
                return data
    return ops.convert_to_numpy(weight.value)


@functools.cache
def _sources_digest():
    """This package's code: a change to any part may change the model."""
    import xxhash

    root = pathlib.Path(__file__).resolve().parents[2]
    digest = xxhash.xxh3_128()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _versions():
    versions = {}
    for name in _STACK:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if module is not None and version is None:
            version = getattr(module, "get_version", lambda: None)()
        versions[name] = version
    return versions


def _device_identity(device):
    from keras_hub.src.utils import openvino_utils

    core = openvino_utils.get_core()
    identity = {"device": device}
    names = ("FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES") + _BAKED
    supported = core.get_property(device, "SUPPORTED_PROPERTIES")
    for name in names:
        if name in supported:
            identity[name] = _property_text(core.get_property(device, name))
    return identity


def _property_text(value):
    """A property's value as OpenVINO takes it back: ``f32`` for a type,
    ``PERFORMANCE`` for an enum member."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    if hasattr(value, "name") and not isinstance(value, str):
        return value.name
    return str(value)


def _paths(key):
    folder = cache_dir()
    return folder / f"{key}.blob", folder / f"{key}.json"


def _cached_build(build, causal_lm, device):
    key, inputs = entry_key(causal_lm, device)
    blob, entry = _paths(key)
    if entry.exists():
        try:
            compiled, layout = _import(blob, entry, device)
        except Exception as error:  # a damaged or foreign entry
            _remove(blob, entry)
            _record(False, f"entry {key} did not import ({error}): removed")
        else:
            _record(True, f"imported entry {key} from {cache_dir()}")
            return compiled, layout
    compiled, layout = build(causal_lm, device)
    try:
        _store(compiled, layout, inputs, blob, entry)
    except OSError as error:
        _record(False, f"entry {key} not stored: {error}")
    else:
        _record(True, f"traced, compiled and stored as entry {key}")
    return compiled, layout


def _import(blob, entry, device):
    import numpy as np
    import openvino as ov
    from keras_hub.src.utils import openvino_utils

    saved = json.loads(entry.read_text())
    if blob.stat().st_size != saved["blob_bytes"]:
        raise ValueError(
            f"the blob holds {blob.stat().st_size} bytes, its entry says "
            f"{saved['blob_bytes']}"
        )
    mapped = np.memmap(blob, dtype=np.uint8, mode="c")
    # Renaming makes a whole file; this finds one changed since.
    if _digest(mapped) != saved["blob_digest"]:
        raise ValueError("the blob's bytes are not those stored")
    core = openvino_utils.get_core()
    compiled = core.import_model(
        ov.Tensor(mapped, shared_memory=True), device, saved["properties"]
    )
    # The plugin reads the imported model from this memory as long as the
    # model lives (unmapped, the next inference crashed): it goes with it.
    compiled._keras_ov_einsum_blob = mapped
    got = _baked(compiled)
    if got != saved["properties"]:
        raise ValueError(
            f"imported with {got}, compiled with {saved['properties']}"
        )
    return compiled, stepwise.CacheLayout(**saved["layout"])


def _digest(buffer):
    import xxhash

    return xxhash.xxh3_128_hexdigest(memoryview(buffer).cast("B"))


def _baked(compiled):
    supported = compiled.get_property("SUPPORTED_PROPERTIES")
    return {
        name: _property_text(compiled.get_property(name))
        for name in _BAKED
        if name in supported
    }


def _store(compiled, layout, inputs, blob, entry):
    blob.parent.mkdir(parents=True, exist_ok=True)
    stream = compiled.export_model()
    exported = stream.getbuffer()
    saved = {
        "inputs": inputs,
        "layout": layout._asdict(),
        "properties": _baked(compiled),
        "blob_bytes": exported.nbytes,
        "blob_digest": _digest(exported),
    }
    _write_whole(blob, exported)
    del exported, stream
    text = json.dumps(saved, indent=1, sort_keys=True, default=str)
    _write_whole(entry, text.encode())


def _write_whole(path, data):
    """Write under a temporary name, then rename: readers see the whole
    file or none."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _remove(*paths):
    for path in paths:
        path.unlink(missing_ok=True)


def _record(lowered, reason):
    decisions.record(
        decisions.Decision(
            equation=LABEL,
            shapes=(),
            dtypes=(),
            lowered=lowered,
            reason=reason,
        )
    )


PART = Part(
    name="compiled_cache",
    summary="the compiled step model kept on disk, keyed on the model, its "
    "weights' bytes, the parts, the versions and the device; the next "
    "process imports it instead of tracing and compiling",
    default=False,
    requires=("stepwise",),
    passes=((stepwise.BUILD, _cached_build),),
)
