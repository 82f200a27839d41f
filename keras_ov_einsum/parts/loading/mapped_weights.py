"""Map a keras-hub preset's weights file instead of reading it.

Stock ``from_preset`` reads every weight out of ``model.weights.h5`` into
a new NumPy array: for GPT-2 Medium 1.4 GB of fresh memory, most of a
3.7-6.8 s load on this project's 2-core machine (NumPy asks for huge pages
for large arrays, and faulting them in is slow on a virtual machine; see
docs/native-gap.md). OpenVINO does not read an IR's weights either: it
maps the ``.bin`` file, and so does openvino-genai.

While keras-hub loads a backbone's weights, this part hands keras each
weight as a NumPy view of a private (copy-on-write) mapping of the file,
with the dtype, shape and values stock's read gives. With ``preset_load``
the backbone's Constants then share those pages: the load reads nothing,
and the kernel pages them in from the page cache when the plugin first
reads them. Only plain datasets are mapped: contiguous, unfiltered,
native-endian numbers of a single-file weights store on disk; anything
else (keras's bfloat16 datasets, chunked or compressed data, links,
sharded or in-archive stores) is read as stock reads it.

The mapping has OpenVINO's caveat: a file truncated in place while a model
still maps it takes its pages away (the process gets SIGBUS when it reads
them). keras writes weights by opening the file anew, which truncates it,
so saving a model back over the preset it was loaded from would do that:
while a mapping of the file lives, this part makes keras's H5 store write a
new file in its place (unlinked first, or copied for an append), and the
model keeps the old contents. Anything else that rewrites the file in place
must not run while the model lives; ``enable(mapped_weights=False)`` reads
the weights as stock does.
"""

import collections
import functools
import mmap
import os
import shutil
import tempfile
import threading
import weakref

from ...core import decisions
from ...core.context import scoped
from ...core.part import Hook, Part

__all__ = ["MAPPED_LABEL", "PART", "READ_LABEL", "is_mapped", "release_pages"]

MAPPED_LABEL = "mapped_weights: weights mapped from the file, not read"
READ_LABEL = "mapped_weights: read as stock reads it"
_PRESET_UTILS = "keras_hub.src.utils.preset_utils"
_SAVING_LIB = "keras.src.saving.saving_lib"
_scope = threading.local()  # .mappings: {file name: mmap} during one load
# (st_dev, st_ino) -> the mmaps of that file (one per load) that arrays
# still use.
_live = collections.defaultdict(weakref.WeakSet)
_live_lock = threading.Lock()


def _load_weights_wrapper(stock_load_weights):
    """``KerasPresetLoader._load_backbone_weights``: the weights read inside
    may be mapped; each file is mapped once for the whole load."""

    @functools.wraps(stock_load_weights)
    def load_backbone_weights(self, backbone):
        with scoped(_scope, "mappings", {}):
            return stock_load_weights(self, backbone)

    return load_backbone_weights


def _getitem_wrapper(stock_getitem):
    """``H5IOStore.__getitem__``: a weight as a view of the mapped file."""

    @functools.wraps(stock_getitem)
    def getitem(self, key):
        mappings = getattr(_scope, "mappings", False)
        if mappings is not False:
            value = _mapped(self, key, mappings)
            if value is not None:
                decisions.count(MAPPED_LABEL)
                return value
            decisions.count(READ_LABEL)
        return stock_getitem(self, key)

    return getitem


def _mapped(store, key, mappings):
    """Dataset ``key`` of ``store`` as an array on a mapping of its file, or
    None when it is not a plain dataset of a plain file."""
    import h5py
    import numpy as np
    from keras.src.saving.saving_lib import H5IOStore

    # The sharded store switches files under its entries; an archive's
    # store reads from a zip member, not a file on disk.
    if type(store) is not H5IOStore or store.archive or store.mode != "r":
        return None
    group = store._h5_entry_group
    if not isinstance(group, h5py.Group):
        return None
    # None for a missing key; a soft or external link is not followed.
    if not isinstance(group.get(key, getlink=True), h5py.HardLink):
        return None
    dataset = group[key]
    if not isinstance(dataset, h5py.Dataset):
        return None
    dtype = dataset.dtype
    if (
        "dtype" in dataset.attrs  # keras's marker of a bfloat16 dataset
        or dtype.kind not in "biuf"
        or not dtype.isnative
        or dataset.chunks is not None  # chunked: may be filtered, scattered
        or dataset.external
        or dataset.is_virtual
        or dataset.size == 0
    ):
        return None
    # The store's file, not ``dataset.file``: h5py builds a new File object
    # on every call of that (a third of this function's time, ad hoc). A
    # dataset of another file (keras's store refuses the links that lead
    # there) is read as stock reads it.
    file = store.h5_file
    if dataset.id.fileno != file.id.fileno:
        return None
    offset = dataset.id.get_offset()
    nbytes = dataset.size * dtype.itemsize
    if offset is None or dataset.id.get_storage_size() != nbytes:
        return None
    mapping = mappings.get(file.filename)
    if mapping is None:
        if file.driver != "sec2" or file.userblock_size:
            return None
        mapping = mappings[file.filename] = _map(file.filename)
    if offset + nbytes > len(mapping):
        return None
    array = np.frombuffer(mapping, dtype, dataset.size, offset)
    return array.reshape(dataset.shape)


def _map(filename):
    """A private, copy-on-write mapping of the whole file: writes to the
    arrays on it stay in this process, as they would on read arrays."""
    with open(filename, "rb") as file:
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        status = os.fstat(file.fileno())
    with _live_lock:
        _live[(status.st_dev, status.st_ino)].add(mapping)
    return mapping


def release_pages(array):
    """Hands the pages under ``array``, a view of a mapping this part made,
    back to the kernel once the load has copied it (a weight cast to the
    variable's type): the load then holds one weight of the file at a
    time beside the copies, not the whole file (GPT-2 Medium's float32
    file beside its float16 copies was the float16 load's peak). The
    mapping is private and never written: a later read of those pages
    reads the file again. Returns whether ``array`` was such a view."""
    import numpy as np

    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap) or base.closed:
        return False
    with _live_lock:
        if not any(base in live for live in _live.values()):
            return False
    start = np.frombuffer(base, np.uint8, 1).ctypes.data
    offset = array.ctypes.data - start
    begin = offset - offset % mmap.PAGESIZE
    end = min(len(base), offset + array.nbytes)
    base.madvise(mmap.MADV_DONTNEED, begin, end - begin)
    return True


def is_mapped(path):
    """Whether a live mapping of this part holds the file at ``path``."""
    try:
        status = os.stat(path)
    except OSError:
        return False
    with _live_lock:
        mappings = _live.get((status.st_dev, status.st_ino))
        return bool(mappings)


def _open_wrapper(stock_open):
    """``H5IOStore._get_h5_file``: writing a file this part maps goes to a
    new file, so the models on the old one keep their weights."""

    @functools.wraps(stock_open)
    def get_h5_file(self, path_or_io, mode=None):
        mode = mode or self.mode
        if (
            mode in ("w", "a")
            and not self.archive
            and isinstance(path_or_io, (str, os.PathLike))
            and is_mapped(path_or_io)
        ):
            _detach(os.fspath(path_or_io), keep_contents=mode == "a")
        return stock_open(self, path_or_io, mode)

    return get_h5_file


def _detach(path, keep_contents):
    """Give ``path`` a new file (an inode of its own): a copy of the old
    one when ``keep_contents``, else none, as "w" truncates it anyway."""
    if not keep_contents:
        os.unlink(path)
        return
    directory = os.path.dirname(os.path.abspath(path))
    handle, copy = tempfile.mkstemp(dir=directory, suffix=".h5")
    os.close(handle)
    try:
        shutil.copy2(path, copy)
        os.replace(copy, path)
    except BaseException:
        os.unlink(copy)
        raise


PART = Part(
    name="mapped_weights",
    summary="keras-hub from_preset: the weights file is mapped (as OpenVINO "
    "maps an IR's weights), not read into new memory; saving over a mapped "
    "file writes a new one",
    wraps=(
        (
            Hook(_PRESET_UTILS, "KerasPresetLoader._load_backbone_weights"),
            _load_weights_wrapper,
        ),
        (Hook(_SAVING_LIB, "H5IOStore.__getitem__"), _getitem_wrapper),
        (Hook(_SAVING_LIB, "H5IOStore._get_h5_file"), _open_wrapper),
    ),
)
