"""The mapped_weights part: a keras-hub preset's weights are views of the
mapped weights file, equal to what stock reads, and saving over that file,
or rewriting it in place, leaves the loaded model's weights alone."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import keras_ov_einsum
from graphs import gpt2_causal_lm
from keras_ov_einsum.parts.loading import mapped_weights
from keras_ov_einsum.parts.loading.mapped_weights import (
    MAPPED_LABEL,
    READ_LABEL,
)

WEIGHTS_FILE = "model.weights.h5"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, shift=0.0):
    """A small GPT-2 backbone saved as a preset at ``path``; its weights
    (each value plus ``shift``, so that two saves differ)."""
    causal_lm = gpt2_causal_lm()
    backbone = causal_lm.backbone
    if shift:
        for variable in backbone.weights:
            variable.assign(np.asarray(variable) + shift)
    backbone.save_to_preset(str(path))
    return [np.asarray(v) for v in backbone.weights]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("mapped") / "gpt2"
    return str(path), _save(path)


def _load(path):
    import keras_hub

    return keras_hub.models.Backbone.from_preset(path)


def _mapping_behind(path, data):
    """As bytes, the live mapping of ``path`` whose memory ``data`` is in
    (other loads of the same file map it too)."""
    status = os.stat(path)
    for mapping in mapped_weights._live[(status.st_dev, status.st_ino)]:
        mapped = np.frombuffer(mapping, np.uint8)
        if np.shares_memory(data, mapped):
            return mapped
    raise AssertionError(f"{path}: no live mapping holds these bytes")


def test_the_weights_are_views_of_the_mapped_file(preset):
    path, saved = preset
    with keras_ov_einsum.enabled():
        backbone = _load(path)
        counts = keras_ov_einsum.explain().counts
    assert counts[MAPPED_LABEL] == len(backbone.weights)
    assert READ_LABEL not in counts
    weights_file = os.path.join(path, WEIGHTS_FILE)
    assert mapped_weights.is_mapped(weights_file)
    for variable, want in zip(backbone.weights, saved, strict=True):
        node = variable.value.output.get_node()
        assert node.get_type_name() == "Constant"
        data = node.get_data()
        # The Constant's bytes are the file's pages, not a copy of them.
        _mapping_behind(weights_file, data)
        assert data.dtype == want.dtype and data.shape == want.shape
        np.testing.assert_array_equal(data, want)


def _resident_kb(mapping):
    """The kB of ``mapping`` resident in this process (/proc/self/smaps)."""
    start = np.frombuffer(mapping, np.uint8, 1).ctypes.data
    with open("/proc/self/smaps") as smaps:
        lines = iter(smaps.read().splitlines())
    for line in lines:
        header = re.match(r"([0-9a-f]+)-[0-9a-f]+ ", line)
        if header is None or int(header.group(1), 16) != start:
            continue
        for field in lines:
            if field.startswith("Rss:"):
                return int(field.split()[1])
    raise AssertionError("the mapping is not in /proc/self/smaps")


@pytest.mark.skipif(
    not os.path.exists("/proc/self/smaps"), reason="Linux's smaps"
)
def test_released_pages_leave_the_process_not_the_values(tmp_path):
    """What the preset_load part does to a weight it has cast: the pages
    under it stop counting in this process, and its values read the same
    (the file again)."""
    values = np.arange(4 * 2**20, dtype=np.float32)  # 16 MB
    path = tmp_path / "weights.bin"
    values.tofile(path)
    mapping = mapped_weights._map(str(path))
    array = np.frombuffer(mapping, np.float32, values.size // 2, 4096)
    np.testing.assert_array_equal(array, values[1024 : 1024 + array.size])
    assert _resident_kb(mapping) >= array.nbytes // 1024
    assert mapped_weights.release_pages(array)
    assert _resident_kb(mapping) < 64
    np.testing.assert_array_equal(array, values[1024 : 1024 + array.size])
    # Anything else is not this part's to release.
    assert not mapped_weights.release_pages(values)


def test_a_file_stays_guarded_while_any_model_maps_it(tmp_path):
    """Two loads of one preset map its file twice; the first model keeps
    the guard after the second is gone."""
    import gc

    path = tmp_path / "gpt2"
    _save(path)
    weights_file = str(path / WEIGHTS_FILE)
    with keras_ov_einsum.enabled():
        first = _load(str(path))
        second = _load(str(path))
        del second
        gc.collect()
        assert mapped_weights.is_mapped(weights_file)
        del first
        gc.collect()
        assert not mapped_weights.is_mapped(weights_file)


def test_switched_off_the_weights_are_read(preset):
    path, saved = preset
    with keras_ov_einsum.enabled(mapped_weights=False):
        backbone = _load(path)
        counts = keras_ov_einsum.explain().counts
    assert MAPPED_LABEL not in counts and READ_LABEL not in counts
    for variable, want in zip(backbone.weights, saved, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), want)


def test_saving_over_the_mapped_preset_keeps_the_loaded_weights(tmp_path):
    """keras opens a weights file for writing by truncating it, which would
    take the pages from under a model mapping it (SIGBUS on the next read).
    The part makes the save write a new file instead."""
    path = tmp_path / "gpt2"
    first = _save(path)
    weights_file = str(path / WEIGHTS_FILE)
    with keras_ov_einsum.enabled():
        loaded = _load(str(path))
        inode = os.stat(weights_file).st_ino
        second = _save(path, shift=1.0)
        # Checked before the loaded model reads its pages: had the save
        # truncated the mapped file, reading them would kill the process.
        assert os.stat(weights_file).st_ino != inode
        for variable, want in zip(loaded.weights, first, strict=True):
            np.testing.assert_array_equal(np.asarray(variable), want)
        reloaded = _load(str(path))
    for variable, want in zip(reloaded.weights, second, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), want)


def test_appending_to_a_mapped_file_appends_to_a_copy(preset, tmp_path):
    """keras's sharded store reopens its files to append: that must not
    write into the pages a model maps either."""
    import h5py
    from keras.src.saving.saving_lib import H5IOStore

    path, saved = preset
    with keras_ov_einsum.enabled():
        backbone = _load(path)
        weights_file = os.path.join(path, WEIGHTS_FILE)
        before = open(weights_file, "rb").read()
        inode = os.stat(weights_file).st_ino
        first_weight = backbone.weights[0].value.output.get_node()
        mapping = _mapping_behind(weights_file, first_weight.get_data())
        store = H5IOStore(str(tmp_path / "other.weights.h5"), mode="w")
        appended = store._get_h5_file(weights_file, mode="a")
        appended.create_dataset("extra", data=np.ones(4))
        appended.close()
        store.close()
    assert os.stat(weights_file).st_ino != inode
    with h5py.File(weights_file, "r") as file:
        np.testing.assert_array_equal(file["extra"][()], np.ones(4))
    assert mapping.tobytes() == before
    for variable, want in zip(backbone.weights, saved, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), want)
    # The preset is shared by the module's tests: restore its file.
    with open(weights_file, "wb") as file:
        file.write(before)


def _h5_file(path):
    """A weights file holding one dataset of each kind the part must leave
    to stock, and one it maps, under ``layer/vars``."""
    import h5py

    values = np.arange(4096, dtype=np.float32).reshape(64, 64)
    with h5py.File(path, "w") as file:
        group = file.create_group("layer/vars")
        group["plain"] = values
        group.create_dataset("chunked", data=values, chunks=(8, 64))
        group.create_dataset("compressed", data=values, compression="gzip")
        group["big_endian"] = values.astype(">f4")
        marked = group.create_dataset("bfloat16", data=values.view(np.uint16))
        marked.attrs["dtype"] = "bfloat16"
        group["soft"] = h5py.SoftLink("/layer/vars/plain")
        group["text"] = np.array([b"abc"])
    return values


@pytest.mark.parametrize(
    "key, mapped",
    [
        ("plain", True),
        ("chunked", False),
        ("compressed", False),
        ("big_endian", False),
        ("bfloat16", False),
        ("soft", False),
        ("text", False),
    ],
)
def test_only_plain_datasets_are_mapped(tmp_path, key, mapped):
    from keras.src.saving.saving_lib import H5IOStore

    values = _h5_file(tmp_path / "w.h5")
    store = H5IOStore(str(tmp_path / "w.h5"), mode="r").get("layer")
    try:
        got = mapped_weights._mapped(store, key, {})
        if mapped:
            assert type(got) is np.ndarray and got.dtype == np.float32
            np.testing.assert_array_equal(got, values)
        else:
            assert got is None
    finally:
        store.close()


def test_a_group_in_another_file_is_read_not_mapped(tmp_path):
    """The part maps the store's own file at a dataset's offset, so a group
    of another file must be declined. keras's store refuses the external
    links that would lead there; the group is swapped in here."""
    import h5py
    from keras.src.saving.saving_lib import H5IOStore

    values = _h5_file(tmp_path / "other.h5")
    with h5py.File(tmp_path / "w.h5", "w") as file:
        file["layer/vars/padding"] = np.full(8192, 7.0)  # other bytes
    store = H5IOStore(str(tmp_path / "w.h5"), mode="r").get("layer")
    other = h5py.File(tmp_path / "other.h5", "r")
    try:
        store._h5_entry_group = other["layer/vars"]
        np.testing.assert_array_equal(store["plain"], values)  # stock's read
        assert mapped_weights._mapped(store, "plain", {}) is None
    finally:
        other.close()
        store.close()


def _copy_datasets(source, target):
    """Every dataset of the weights file ``source`` written into the same
    dataset of ``target``, opened by h5py in place ("r+")."""
    import h5py

    with h5py.File(source, "r") as read, h5py.File(target, "r+") as written:

        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                written[name][...] = item[...]

        read.visititems(copy)


# How the file is rewritten in place, keeping its inode: by another
# process, by Python's open in this one, by h5py in this one (which opens
# a file holding the GIL).
REWRITES = {
    "cp": lambda source, target: subprocess.run(
        ["cp", source, target], check=True
    ),
    "copyfile": shutil.copyfile,
    "h5py r+": _copy_datasets,
}


@pytest.mark.parametrize("rewrite", REWRITES)
def test_a_file_rewritten_in_place_keeps_the_loaded_weights(
    tmp_path, caplog, rewrite
):
    """A mapping reads the file as it is now: before the part copied the
    mapped bytes first, the model's weights became the new file's. The
    copy is made while the writer waits, not after the kernel let it go
    (which the part reports)."""
    path, other = tmp_path / "gpt2", tmp_path / "other"
    first = _save(path)
    second = _save(other, shift=1.0)
    weights_file = str(path / WEIGHTS_FILE)
    other_file = str(other / WEIGHTS_FILE)
    assert os.path.getsize(weights_file) == os.path.getsize(other_file)
    with keras_ov_einsum.enabled():
        loaded = _load(str(path))
        inode = os.stat(weights_file).st_ino
        REWRITES[rewrite](other_file, weights_file)
        assert os.stat(weights_file).st_ino == inode  # in place
        for variable, want in zip(loaded.weights, first, strict=True):
            np.testing.assert_array_equal(np.asarray(variable), want)
        # The model no longer maps the file; a new load reads the new one.
        assert not mapped_weights.is_mapped(weights_file)
        reloaded = _load(str(path))
    for variable, want in zip(reloaded.weights, second, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), want)
    late = [r for r in caplog.records if r.name == "keras_ov_einsum"]
    assert not late, late[0].getMessage()


SHORTER_FILE = """
import os, subprocess, sys
import numpy as np
import keras_hub
import keras_ov_einsum

preset, shorter, expected = sys.argv[1:]
with keras_ov_einsum.enabled():
    backbone = keras_hub.models.Backbone.from_preset(preset)
weights_file = os.path.join(preset, "model.weights.h5")
inode = os.stat(weights_file).st_ino
subprocess.run(["cp", shorter, weights_file], check=True)
assert os.stat(weights_file).st_ino == inode
expected = np.load(expected)
for i, variable in enumerate(backbone.weights):
    np.testing.assert_array_equal(np.asarray(variable), expected[str(i)])
print("kept", len(backbone.weights))
"""


def test_a_shorter_file_in_place_does_not_kill_the_process(tmp_path):
    """A file truncated under a mapping takes its pages away: the process
    died of SIGBUS on reading them. Run in a fresh process, so that a crash
    fails this test instead of ending pytest."""
    path = tmp_path / "gpt2"
    saved = _save(path)
    shorter = tmp_path / "shorter.weights.h5"
    size = os.path.getsize(path / WEIGHTS_FILE)
    with open(path / WEIGHTS_FILE, "rb") as file:
        shorter.write_bytes(file.read(size // 4))
    expected = tmp_path / "expected.npz"
    np.savez(expected, **{str(i): value for i, value in enumerate(saved)})
    env = dict(os.environ, KERAS_BACKEND="openvino", PYTHONPATH=ROOT)
    completed = subprocess.run(
        [sys.executable, "-c", SHORTER_FILE, str(path), shorter, expected],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, (
        f"exit status {completed.returncode}: {completed.stderr[-3000:]}"
    )
    assert completed.stdout.split()[-2:] == ["kept", str(len(saved))]


def test_a_file_open_for_writing_is_read_not_mapped(tmp_path):
    """No lease can be had on a file another descriptor may write: its
    weights are read as stock reads them, the reason in explain()."""
    path = tmp_path / "gpt2"
    saved = _save(path)
    weights_file = str(path / WEIGHTS_FILE)
    with open(weights_file, "r+b"), keras_ov_einsum.enabled():
        backbone = _load(str(path))
        explained = keras_ov_einsum.explain()
    assert explained.counts[READ_LABEL] == len(backbone.weights)
    assert MAPPED_LABEL not in explained.counts
    (declined,) = [d for d in explained if d.equation == READ_LABEL]
    assert weights_file in declined.reason and "lease" in declined.reason
    assert not mapped_weights.is_mapped(weights_file)
    for variable, want in zip(backbone.weights, saved, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), want)


FORKED = """
import os, subprocess, sys
import numpy as np
from keras_ov_einsum.parts.loading import mapped_weights

path, other = sys.argv[1:]
values = np.arange(2**20, dtype=np.float32)
values.tofile(path)
(values + 1).tofile(other)
mapping = mapped_weights._map(path)
array = np.frombuffer(mapping, np.float32)
child = os.fork()
if child == 0:
    # The child rewrites the file itself: its own copy must be kept.
    subprocess.run(["cp", other, path], check=True)
    os._exit(0 if np.array_equal(array, values) else 3)
_, status = os.waitpid(child, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert np.array_equal(array, values)
assert np.array_equal(np.fromfile(path, np.float32), values + 1)
print("kept")
"""


def test_a_forked_child_keeps_the_mapped_contents(tmp_path):
    """A child inherits the parent's lease, whose breaks the parent's
    thread handles: it takes its own."""
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            FORKED,
            str(tmp_path / "w.bin"),
            str(tmp_path / "other.bin"),
        ],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split()[-1:] == ["kept"]
