"""What the tests of the benchmarks share: a made-up machine for made-up runs, and the PNG signature the real
runs' charts must start with."""

from __future__ import annotations

MACHINE = {"cpus": 2, "cpu_model": "test", "memory_gib": 1.0, "python": "3.11", "kernel": "6", "commit": "abc1234",
           "date": "2026-01-01 00:00 UTC"}  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
