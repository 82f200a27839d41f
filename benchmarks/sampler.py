"""Resident and swap memory of this process, sampled every 20 ms.

As in memory_profiler: a daemon thread polls psutil at a fixed interval
and keeps the running maxima and a timeline for the charts.
"""

import threading
import time

import psutil

__all__ = ["MemorySampler"]

MB = 2**20


class MemorySampler:
    def __init__(self, interval=0.02):
        self.interval = interval
        self.process = psutil.Process()
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

    def sample(self):
        info = self.process.memory_full_info()
        rss, swap = info.rss, getattr(info, "swap", 0)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_swap = max(self.peak_swap, swap)
        self.max_rss = max(self.max_rss, rss)
        self.max_swap = max(self.max_swap, swap)
        self.timeline.append(
            (round(time.monotonic() - self.start_time, 3), round(rss / MB, 1))
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
