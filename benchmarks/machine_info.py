"""One line naming the machine a benchmark ran on, for its table in RESULTS.md."""
from __future__ import annotations

import os
import platform

import jax


def describe(extra: str = "") -> str:
    """Device, host CPU model and core count, jax version, and `extra` (e.g. other libraries)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    line = (f"{dev.platform.upper()} {dev.device_kind}; host {cpu}, {os.cpu_count()} cores; "
            f"jax {jax.__version__}")
    return f"{line}, {extra}" if extra else line
