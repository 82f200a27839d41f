"""The with/without-fix benchmark harness: ``python -m benchmarks compare``."""
