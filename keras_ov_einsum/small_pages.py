"""Read a keras-hub preset's weights into ordinary pages, not huge ones.

NumPy advises the kernel to back every array of 4 MiB or more with
transparent huge pages. On this project's machine (a 2-core virtual
machine) faulting those huge pages in is what a preset's load spends most
of its reading time on: GPT-2 Medium's 1.4 GB of weights came in 531 huge
page faults, no memory compaction, and the load took twice as long as
with ordinary pages (docs/native-gap.md, "Time to the first token", has
the harness's figures). The arrays are read once more after that, when
the CPU plugin packs its own copies of the weights in the first
inference, and that read is slower on ordinary pages (more address
translations): it gives back about a quarter of what the load gains.
Whether huge pages cost or pay on another machine depends on its kernel
and its hypervisor; the part can be switched off.

While keras-hub loads a backbone's weights this part turns NumPy's advice
off, and back on after (also on error). The advice is NumPy's
process-wide setting: another thread's arrays made during a load get
ordinary pages too (a nested or concurrent load restores it only when
the last one ends). Where NumPy has no such setting, or the kernel
ignores the advice, nothing changes.
"""

import functools
import threading

from . import decisions
from .part import Hook, Part

__all__ = ["ADVICE_OFF_LABEL", "NO_SETTING_LABEL", "PART", "hugepage_advice"]

ADVICE_OFF_LABEL = (
    "small_pages: preset weights read without NumPy's huge-page advice"
)
NO_SETTING_LABEL = (
    "small_pages: left alone: this NumPy has no huge-page advice setting"
)
_lock = threading.Lock()
_loads = 0  # loads under way, across threads
_advice_before = None  # NumPy's setting when the first of them began


def _setter():
    """NumPy's ``_set_madvise_hugepage`` (it returns the previous
    setting), or None."""
    try:
        from numpy._core import multiarray  # NumPy 2
    except ImportError:
        from numpy.core import multiarray  # NumPy 1
    return getattr(multiarray, "_set_madvise_hugepage", None)


def hugepage_advice():
    """Whether NumPy advises huge pages for new arrays now (None: this
    NumPy has no such setting)."""
    setter = _setter()
    if setter is None:
        return None
    with _lock:
        advice = setter(True)
        setter(advice)
    return bool(advice)


def _load_weights_wrapper(stock_load_weights):
    """``KerasPresetLoader._load_backbone_weights``: the weights file is
    read inside."""

    @functools.wraps(stock_load_weights)
    def load_backbone_weights(self, backbone):
        global _advice_before, _loads
        setter = _setter()
        if setter is None:
            decisions.count(NO_SETTING_LABEL)
            return stock_load_weights(self, backbone)
        with _lock:
            if _loads == 0:
                _advice_before = setter(False)
            _loads += 1
        try:
            result = stock_load_weights(self, backbone)
        finally:
            with _lock:
                _loads -= 1
                if _loads == 0:
                    setter(_advice_before)
        decisions.count(ADVICE_OFF_LABEL)
        return result

    return load_backbone_weights


PART = Part(
    name="small_pages",
    summary="keras-hub from_preset: the weights file is read into ordinary "
    "pages, without NumPy's transparent-huge-page advice, whose page "
    "faults took half of GPT-2 Medium's load",
    wraps=(
        (
            Hook(
                "keras_hub.src.utils.preset_utils",
                "KerasPresetLoader._load_backbone_weights",
            ),
            _load_weights_wrapper,
        ),
    ),
)
