"""Resident and swap memory of this process, sampled every 20 ms.

As in memory_profiler: a daemon thread polls the process's memory at a
fixed interval and keeps the running maxima and a timeline for the charts.

A sample reads the kernel's counters (VmRSS and VmSwap in
``/proc/<pid>/status`` on Linux), which costs microseconds. psutil's
``memory_full_info()``, which this sampler used before, walks
``/proc/<pid>/smaps`` instead: about 50 ms for a 4 GB process on this
machine, with the process's memory map locked, so a sample never ended
before the next was due and the measured process ran a third slower
(GPT-2 Medium's generate(): 0.51 s without it, 0.68 s with it; an ad hoc
timing in one process, 2026-11-26; the harness's own before and after are
in the README).

The same read splits the resident memory in two (``Memory``): anon,
which leaves RAM only to swap (what runs a user out of memory), and
file, the pages of mapped files (weights mapped from disk, libraries),
which the kernel may drop and read again. Each has its own maxima: the
two peaks need not fall at the same instant.
"""

import os
import threading
import time
from typing import NamedTuple

import psutil

__all__ = ["MB", "Memory", "MemorySampler", "parse_status", "anon_file_fields"]

MB = 2**20


class Memory(NamedTuple):
    """One sample, in bytes. The kernel counts VmRSS = RssAnon + RssFile +
    RssShmem; anon holds RssAnon + RssShmem (shared memory and tmpfs pages
    have no file to be read back from: like anonymous pages they leave RAM
    only to swap), file holds RssFile. anon and file are None where the
    kernel does not split VmRSS (before Linux 4.5; not Linux)."""

    rss: int
    swap: int
    anon: int | None
    file: int | None


def parse_status(text):
    """The ``Memory`` in the text of ``/proc/<pid>/status``. A missing
    VmRSS or VmSwap line reads 0 (a kernel without swap accounting), a
    missing RssAnon or RssFile None: the split is unknown, not empty."""
    kilobytes = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if value.endswith(" kB"):
            kilobytes[name] = int(value.split()[0]) * 1024
    anon, file = kilobytes.get("RssAnon"), kilobytes.get("RssFile")
    if anon is not None:
        anon += kilobytes.get("RssShmem", 0)
    return Memory(
        kilobytes.get("VmRSS", 0), kilobytes.get("VmSwap", 0), anon, file
    )


def _higher(one, other):
    """The larger of two samples' values; None only where both are."""
    if one is None or other is None:
        return other if one is None else one
    return max(one, other)


def _highest(one, other):
    return Memory(*map(_higher, one, other))


def _mb(value):
    return None if value is None else round(value / MB, 1)


def anon_file_fields(highest, imported):
    """A record's anon and file fields: ``highest`` (a ``Memory`` of the
    maxima) and ``imported`` (the sample after the frameworks' imports)
    give peak_anon_mb, peak_file_mb and anon_growth_mb (the anon peak
    above imports: growth_mb's counterpart); None where not measured."""
    growth = (
        None
        if highest.anon is None or imported.anon is None
        else highest.anon - imported.anon
    )
    return dict(
        peak_anon_mb=_mb(highest.anon),
        peak_file_mb=_mb(highest.file),
        anon_growth_mb=_mb(growth),
    )


_NOTHING = Memory(0, 0, None, None)


class MemorySampler:
    def __init__(self, interval=0.02):
        self.interval = interval
        self.process = psutil.Process()
        self._status = f"/proc/{os.getpid()}/status"
        if not os.path.exists(self._status):  # not Linux: RSS alone
            self._status = None
        self.start_time = time.monotonic()
        self.timeline = []  # (seconds since start, rss MB)
        self.staged = {}  # stage name -> its sample (a Memory)
        # Maxima since the last reset_peak() (one call's window) ...
        self.peak = _NOTHING
        # ... and over the whole process, never reset.
        self.highest = _NOTHING
        # The sampling thread and the worker's stages both update the
        # maxima: a read-compare-write each, which must not interleave (a
        # higher sample written over by a lower maximum is lost).
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _read(self):
        if self._status is None:
            return Memory(self.process.memory_info().rss, 0, None, None)
        with open(self._status) as status:
            return parse_status(status.read())

    def sample(self):
        """Read the counters, keep the maxima; return the RSS in bytes."""
        return self._sample().rss

    def _sample(self):
        with self._lock:
            memory = self._read()
            self.peak = _highest(self.peak, memory)
            self.highest = _highest(self.highest, memory)
            self.timeline.append(
                (
                    round(time.monotonic() - self.start_time, 3),
                    round(memory.rss / MB, 1),
                )
            )
            return memory

    def stage(self, stages, name):
        """Append stage ``name`` to ``stages`` (RSS after a gc, its anon and
        file parts, and when), keep its sample in ``staged`` and return
        that RSS in bytes: the workers' stages 0-5."""
        import gc

        gc.collect()
        memory = self.staged[name] = self._sample()
        stages.append(
            {
                "stage": len(stages),
                "name": name,
                "t": self.timeline[-1][0],
                "rss_mb": _mb(memory.rss),
                "anon_mb": _mb(memory.anon),
                "file_mb": _mb(memory.file),
            }
        )
        return memory.rss

    def reset_peak(self):
        """Start a new running maximum from the current value."""
        with self._lock:
            self.peak = _NOTHING
        return self.sample()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()
