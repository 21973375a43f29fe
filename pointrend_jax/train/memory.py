"""The pre-flight memory check: XLA's memory analysis of the compiled train step held against
the memory of the device it will run on, before the first step.

A step that cannot fit otherwise fails deep inside XLA at its first run
(`RESOURCE_EXHAUSTED: Out of memory allocating ... bytes`); here it stops with the batch size,
the canvas, both figures and what to change. The step is compiled once, and the loop runs the
same compiled executable.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

import jax

GIB = 2**30


def _size(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f} GiB" if num_bytes >= GIB else f"{num_bytes / 2**20:.1f} MiB"


def step_bytes(compiled) -> Optional[dict]:
    """Per-device bytes of a compiled executable (`jax.stages.Compiled`) from XLA's memory
    analysis: arguments, outputs, the outputs that reuse donated arguments ("aliased"),
    temporaries, and "total" = arguments + outputs - aliased + temporaries. None when the
    backend gives no analysis."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    out = {"arguments": int(analysis.argument_size_in_bytes),
           "outputs": int(analysis.output_size_in_bytes),
           "aliased": int(analysis.alias_size_in_bytes),
           "temporaries": int(analysis.temp_size_in_bytes)}
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


def _host_available_bytes() -> int:
    """The host memory available to new allocations: MemAvailable of /proc/meminfo (Linux),
    else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_memory() -> Tuple[int, str]:
    """Bytes one local device can hold, and what the figure is. Accelerators: the allocator's
    `memory_stats()["bytes_limit"]`. CPU devices share the host's available memory, so each
    gets its share of it."""
    device = jax.local_devices()[0]
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"{device.platform.upper()} {device.device_kind} memory"
    count = jax.local_device_count()
    share = f", shared by {count} devices" if count > 1 else ""
    return _host_available_bytes() // count, f"the host's available memory{share}"


def check_fits(compiled, config) -> None:
    """Raises MemoryError when the compiled train step needs more memory per device than
    `device_memory()` gives, naming the batch size, the canvas, both figures and the options
    that lower the need; prints both figures otherwise (process 0)."""
    need = step_bytes(compiled)
    if need is None:
        return
    available, what = device_memory()
    batch = int(config.train.batch_size)
    canvas = tuple(int(s) for s in config.augment.crop_size)
    per_device = batch // jax.device_count()
    parts = (f"arguments {_size(need['arguments'])} + outputs {_size(need['outputs'])} - "
             f"outputs in donated arguments {_size(need['aliased'])} + temporaries "
             f"{_size(need['temporaries'])}")
    if need["total"] > available:
        raise MemoryError(
            f"the train step does not fit in memory: XLA's memory analysis of the compiled "
            f"step needs {_size(need['total'])} per device ({parts}) for "
            f"--config.train.batch_size={batch} ({per_device} per device) on the "
            f"--config.augment.crop_size={canvas} canvas, and {what} is "
            f"{_size(available)} per device. Lower --config.train.batch_size or "
            "--config.augment.crop_size, set --config.model.backbone.remat=True (recomputes "
            "the backbone's activations) or --config.model.dtype=bfloat16, or train on more "
            "devices (with --config.mesh.fsdp to split the parameters and optimizer state).")
    if jax.process_index() == 0:
        print(f"train step memory: {_size(need['total'])} per device ({parts}); {what}: "
              f"{_size(available)} per device", flush=True)


def compile_checked(jitted: Callable, args: tuple, config):
    """`jitted` lowered and compiled for `args` (arrays or `jax.ShapeDtypeStruct`s), after
    `check_fits`; the returned executable is what the loop calls."""
    compiled = jitted.lower(*args).compile()
    check_fits(compiled, config)
    return compiled
