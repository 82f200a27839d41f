"""Map a keras-hub preset's weights file instead of reading it.

Stock ``from_preset`` reads every weight of ``model.weights.h5`` into a new
NumPy array: a fresh copy of the model, most of the load (NumPy backs large
arrays with huge pages, slow to fault in on a virtual machine;
docs/native-gap.md). OpenVINO and openvino-genai map an IR's ``.bin``
instead.

While keras-hub loads a backbone's weights, this part hands keras each
weight as a NumPy view of a private (copy-on-write) mapping of the file,
with stock's dtype, shape and values; with ``preset_load`` the Constants
share those pages, which the kernel reads from the page cache when the
plugin first needs them. Only plain datasets are mapped (contiguous,
unfiltered, native-endian numbers of a single-file store on disk); the
rest (keras's bfloat16 datasets, chunked or compressed data, links,
sharded or in-archive stores) is read as stock reads it.

A mapping reads the file as it is now: rewritten in place (``cp`` over it,
h5py's "r+") it would change the model's weights, shortened it would take
its pages away (SIGBUS; OpenVINO's mapping of an IR has that caveat). So a
file is mapped only under a read lease (Linux's ``F_SETLEASE``): a writer
or truncater waits in the kernel until this part's thread has put a
private copy of the bytes at the same addresses (one ``mremap``: readers
see the same values throughout), and the model keeps the weights it
loaded. Nothing runs per inference; the copy costs memory only once the
file is rewritten. Without a lease (another system, another owner's file,
one open for writing, a filesystem without leases) the weights are read as
stock reads them. h5py opens a file holding the GIL, which that thread
needs, so h5py's opens for writing in this process copy first; keras
saving over a mapped file writes a new file instead (unlinked first, or
copied for an append), and the model keeps the old inode.
"""

import collections
import dataclasses
import functools
import logging
import mmap
import os
import re
import shutil
import struct
import tempfile
import threading
import warnings
import weakref

from ...core import decisions
from ...core.context import scoped
from ...core.part import Hook, Part

__all__ = ["MAPPED_LABEL", "PART", "READ_LABEL", "is_mapped", "release_pages"]

logger = logging.getLogger("keras_ov_einsum")

MAPPED_LABEL = "mapped_weights: weights mapped from the file, not read"
READ_LABEL = "mapped_weights: read as stock reads it"
_PRESET_UTILS = "keras_hub.src.utils.preset_utils"
_SAVING_LIB = "keras.src.saving.saving_lib"
_scope = threading.local()  # .mappings: {file name: mmap} during one load
# (st_dev, st_ino) -> the mmaps of that file (one per load) that arrays
# still use, each under a lease of its own.
_live = collections.defaultdict(weakref.WeakSet)
_leases = {}  # lease descriptor -> _Lease
# Reentrant: a mapping's finalizer (a garbage collection) may end its lease
# in a thread that holds the lock.
_lock = threading.RLock()
_watcher = None  # the native id of the thread that answers lease breaks

# Linux's fcntl.h, which Python's fcntl module does not export.
_F_SETOWN_EX = 15
_F_OWNER_TID = 0
_MREMAP_MAYMOVE = 1
_MREMAP_FIXED = 2


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
    None when it is not a plain dataset of a plain file under a lease."""
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
    # on every call of that (docs/native-gap.md times it). A dataset of
    # another file (keras's store refuses the links that lead there) is
    # read as stock reads it.
    file = store.h5_file
    if dataset.id.fileno != file.id.fileno:
        return None
    offset = dataset.id.get_offset()
    nbytes = dataset.size * dtype.itemsize
    if offset is None or dataset.id.get_storage_size() != nbytes:
        return None
    if file.filename not in mappings:
        if file.driver != "sec2" or file.userblock_size:
            return None
        mappings[file.filename] = _leased_mapping(file.filename)
    mapping = mappings[file.filename]
    if mapping is None or offset + nbytes > len(mapping):
        return None
    array = np.frombuffer(mapping, dtype, dataset.size, offset)
    return array.reshape(dataset.shape)


def _leased_mapping(filename):
    """``_map(filename)``, or None (the reason recorded) where the kernel
    grants no lease on the file."""
    try:
        return _map(filename)
    except (ImportError, AttributeError, OSError) as error:
        decisions.record(
            decisions.Decision(
                equation=READ_LABEL,
                shapes=(),
                dtypes=(),
                lowered=False,
                reason=f"{filename}: no lease on it ({error!r}), so a "
                "rewrite in place could reach a mapping: read",
            )
        )
        return None


@dataclasses.dataclass(eq=False)
class _Lease:
    """A read lease on a mapped file: the descriptor that holds it (None
    once it is let go), the file, and the mapping it keeps."""

    descriptor: object
    path: str
    key: tuple  # (st_dev, st_ino)
    mapping: weakref.ref
    end: object = None  # the finalizer that lets it go with the mapping


def _map(filename):
    """A private, copy-on-write mapping of the whole file (writes to the
    arrays on it stay in this process, as they would on read arrays),
    under a read lease on it. Raises OSError where the kernel grants no
    lease, ImportError or AttributeError on a system without leases."""
    descriptor = os.open(filename, os.O_RDONLY)
    try:
        _take_lease(descriptor)
        leased = os.fstat(descriptor)
        key = (leased.st_dev, leased.st_ino)
        # Mapped through a descriptor of its own: the mmap keeps a duplicate
        # of it, which would keep the lease after the descriptor's close.
        with open(filename, "rb") as file:
            status = os.fstat(file.fileno())
            if (status.st_dev, status.st_ino) != key:
                raise OSError(f"{filename} was replaced while being mapped")
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    except BaseException:
        os.close(descriptor)
        raise
    lease = _Lease(descriptor, filename, key, weakref.ref(mapping))
    with _lock:
        _live[key].add(mapping)
        _leases[descriptor] = lease
        lease.end = weakref.finalize(mapping, _let_go, lease)
    return mapping


def _take_lease(descriptor):
    """A read lease on ``descriptor``, its break signalled to the watcher
    thread alone (a thread-directed signal that thread blocks and waits
    for, so no other thread, and no handler, ever sees it)."""
    import fcntl

    # AttributeError where the system has no leases, before any thread.
    set_lease, set_signal = fcntl.F_SETLEASE, fcntl.F_SETSIG
    watcher = _watcher_id()
    fcntl.fcntl(
        descriptor, _F_SETOWN_EX, struct.pack("ii", _F_OWNER_TID, watcher)
    )
    fcntl.fcntl(descriptor, set_signal, _lease_signal())
    fcntl.fcntl(descriptor, set_lease, fcntl.F_RDLCK)


def _lease_signal():
    import signal

    # A realtime signal (queued, never merged with another's) that nothing
    # in keras's stack uses.
    return signal.SIGRTMAX - 2


def _watcher_id():
    """The watcher thread's native id, started on first use."""
    global _watcher
    with _lock:
        if _watcher is None:
            started, blocking = threading.Event(), []
            thread = threading.Thread(
                target=_watch,
                args=(started, blocking),
                name="keras_ov_einsum mapped_weights leases",
                daemon=True,
            )
            thread.start()
            started.wait()
            if not blocking:  # a lease signal would end the process
                raise OSError("the lease thread cannot block its signal")
            _watcher = thread.native_id
        return _watcher


def _watch(started, blocking):
    """Wait for lease breaks; copy the contents of each file a writer
    waits for, then let it go."""
    import signal

    # SIGIO too: the kernel sends it instead when the realtime signal's
    # queue is full.
    signals = {_lease_signal(), signal.SIGIO}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        blocking.append(True)
    finally:
        started.set()
    while True:
        # Never ends on an error: a writer would wait out the kernel's
        # lease-break time, and a lease signal kill the process.
        try:
            signal.sigwaitinfo(signals)
            with _lock:
                breaking = [
                    lease
                    for lease in _leases.values()
                    if _lease_state(lease.descriptor) != "active"
                ]
        except Exception:
            logger.exception("mapped_weights: a lease break failed")
            continue
        for lease in breaking:
            try:
                _keep_contents(lease)
            except Exception:
                logger.exception("mapped_weights: %s: no copy", lease.path)


def _lease_state(descriptor):
    """The lease's state: "active", "breaking" (a writer waits for it) or
    None: no lease any more, the kernel broke it after its lease-break
    time (45 s by default) and the writer went on."""
    import fcntl

    if fcntl.fcntl(descriptor, fcntl.F_GETLEASE) == fcntl.F_RDLCK:
        return "active"
    # F_GETLEASE answers F_UNLCK both while a lease breaks and once it is
    # gone; the lock's line in fdinfo tells them apart.
    try:
        with open(f"/proc/self/fdinfo/{descriptor}") as fdinfo:
            text = fdinfo.read()
    except OSError:
        return None
    return "breaking" if re.search(r"\bLEASE\s+BREAKING\b", text) else None


def _keep_contents(lease):
    """Put a private copy of the file's bytes under ``lease``'s mapping,
    then let the lease go: the model keeps its weights whatever becomes of
    the file."""
    with _lock:
        if lease.descriptor is None:
            return
        mapping = lease.mapping()
        try:
            if mapping is None or mapping.closed:
                return
            in_time = _lease_state(lease.descriptor) is not None
            size = os.fstat(lease.descriptor).st_size
            _copy_in_place(mapping, size)
            _live[lease.key].discard(mapping)
        except Exception as error:
            _warn(lease.path, f"no copy of it could be made ({error!r})")
            raise
        finally:
            lease.end()
    if not in_time or size < len(mapping):
        # The kernel broke the lease before this thread ran (its
        # lease-break time passed): the file may have changed first.
        shorter = " (zeros past the file's end)" if size < len(mapping) else ""
        _warn(lease.path, f"its copy was made too late{shorter}")


def _warn(path, why):
    message = (
        f"keras_ov_einsum: {path} was rewritten while a model mapped it, "
        f"and {why}: the model's weights may be the new file's"
    )
    logger.error("%s", message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _copy_in_place(mapping, available):
    """Replace ``mapping``'s pages by anonymous memory holding the same
    bytes (zeros past the first ``available``: the file's end, past which
    a read would fault), in one step: no reader sees the change."""
    import ctypes

    import numpy as np

    libc = _libc()
    length = len(mapping)
    # An export of the mapping's buffer: it cannot close meanwhile.
    view = np.frombuffer(mapping, np.uint8)
    address = view.ctypes.data
    copy = libc.mmap(
        None,
        length,
        mmap.PROT_READ | mmap.PROT_WRITE,
        mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
        -1,
        0,
    )
    if copy in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap of the copy failed")
    try:
        ctypes.memmove(copy, address, min(available, length))
        moved = libc.mremap(
            copy, length, length, _MREMAP_MAYMOVE | _MREMAP_FIXED, address
        )
    except BaseException:
        libc.munmap(copy, length)
        raise
    if moved != address:
        libc.munmap(copy, length)
        raise OSError(ctypes.get_errno(), "mremap of the copy failed")
    del view


@functools.cache
def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    libc.mremap.restype = ctypes.c_void_p
    libc.mremap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    return libc


def _let_go(lease):
    """End ``lease`` (its mapping is gone, or holds a copy): unlocked
    first, as a child forked by other means than ``os.fork`` may hold the
    descriptor too."""
    import fcntl

    with _lock:
        descriptor, lease.descriptor = lease.descriptor, None
        if descriptor is None:
            return
        _leases.pop(descriptor, None)
        try:
            fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        except OSError:
            pass
        os.close(descriptor)


def _keep_contents_of(path):
    """Copy the contents of every mapping of the file at ``path`` now."""
    try:
        status = os.stat(path)
    except (OSError, TypeError, ValueError):
        return
    key = (status.st_dev, status.st_ino)
    with _lock:
        leases = [lease for lease in _leases.values() if lease.key == key]
    for lease in leases:
        _keep_contents(lease)


def _after_fork_in_child():
    """A child shares its parent's leases, whose breaks the parent's
    thread answers: it takes leases of its own (or copies at once)."""
    global _lock, _watcher
    # Another thread may have held the lock at the fork.
    _lock = threading.RLock()
    _watcher = None
    for inherited, lease in list(_leases.items()):
        del _leases[inherited]
        os.close(inherited)  # not unlocked: the parent's lease
        lease.descriptor = None
        mapping = lease.mapping()
        if mapping is None:
            continue
        try:
            descriptor = os.open(lease.path, os.O_RDONLY)
        except OSError:
            descriptor = None
        try:
            status = os.fstat(descriptor) if descriptor is not None else None
            if status is None or (status.st_dev, status.st_ino) != lease.key:
                raise OSError("the path holds another file now")
            _take_lease(descriptor)
        except (ImportError, AttributeError, OSError):
            if descriptor is not None:
                os.close(descriptor)
            _copy_in_place(mapping, len(mapping))
            _live[lease.key].discard(mapping)
            continue
        lease.descriptor = descriptor
        _leases[descriptor] = lease


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def release_pages(array):
    """Hands the pages under ``array``, a view of a mapping this part made,
    back to the kernel once the load has copied it (a weight cast to the
    variable's type): the load then holds one weight of the file at a
    time beside the copies, not the whole file, which was a float16 load's
    peak (docs/native-gap.md). The mapping is private and never written: a
    later read of those pages reads the file again. Returns whether
    ``array`` was such a view."""
    import numpy as np

    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap) or base.closed:
        return False
    # Held to the end: a private copy (``_keep_contents``) dropped would
    # read zeros, not the file.
    with _lock:
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
    with _lock:
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


def _h5py_open_wrapper(stock_make_fid):
    """h5py's ``make_fid`` (every ``h5py.File``): a file this part maps,
    opened for writing, gets its mappings' copies first. h5py holds the
    GIL while it opens a file, so the lease's thread could not make them
    while the open waits for the lease."""

    @functools.wraps(stock_make_fid)
    def make_fid(name, mode, *args, **kwargs):
        if mode in ("r+", "a", "w"):
            _keep_contents_of(name)
        return stock_make_fid(name, mode, *args, **kwargs)

    return make_fid


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
    summary="from_preset maps the weights file instead of reading it; a "
    "rewrite in place cannot reach the model",
    wraps=(
        (
            Hook(_PRESET_UTILS, "KerasPresetLoader._load_backbone_weights"),
            _load_weights_wrapper,
        ),
        (Hook(_SAVING_LIB, "H5IOStore.__getitem__"), _getitem_wrapper),
        (Hook(_SAVING_LIB, "H5IOStore._get_h5_file"), _open_wrapper),
        (Hook("h5py._hl.files", "make_fid"), _h5py_open_wrapper),
    ),
)
