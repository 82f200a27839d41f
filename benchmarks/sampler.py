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
"""

import os
import re
import threading
import time

import psutil

__all__ = ["MemorySampler"]

MB = 2**20


class MemorySampler:
    def __init__(self, interval=0.02):
        self.interval = interval
        self.process = psutil.Process()
        self._status = f"/proc/{os.getpid()}/status"
        if not os.path.exists(self._status):  # not Linux: no swap figure
            self._status = None
        self.start_time = time.monotonic()
        self.timeline = []  # (seconds since start, rss MB)
        # Maxima since the last reset_peak() (one call's window) ...
        self.peak_rss = 0
        self.peak_swap = 0
        # ... and over the whole process, never reset.
        self.max_rss = 0
        self.max_swap = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _rss_and_swap(self):
        if self._status is None:
            return self.process.memory_info().rss, 0
        with open(self._status) as status:
            text = status.read()
        rss, swap = (
            int(match.group(1)) * 1024 if match else 0
            for match in (
                re.search(r"^VmRSS:\s+(\d+) kB", text, re.M),
                re.search(r"^VmSwap:\s+(\d+) kB", text, re.M),
            )
        )
        return rss, swap

    def sample(self):
        rss, swap = self._rss_and_swap()
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_swap = max(self.peak_swap, swap)
        self.max_rss = max(self.max_rss, rss)
        self.max_swap = max(self.max_swap, swap)
        self.timeline.append(
            (round(time.monotonic() - self.start_time, 3), round(rss / MB, 1))
        )
        return rss

    def stage(self, stages, name):
        """Append stage ``name`` to ``stages`` (RSS after a gc, and when)
        and return that RSS in bytes: the workers' stages 0-5."""
        import gc

        gc.collect()
        rss = self.sample()
        stages.append(
            {
                "stage": len(stages),
                "name": name,
                "t": self.timeline[-1][0],
                "rss_mb": round(rss / MB, 1),
            }
        )
        return rss

    def reset_peak(self):
        """Start a new running maximum from the current value."""
        self.peak_rss = 0
        self.peak_swap = 0
        return self.sample()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()
