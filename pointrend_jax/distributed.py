"""Starting JAX on one process or many: the `--coordinator_address`, `--num_processes` and
`--process_id` flags of train.py and eval.py.

Explicit flags go to `jax.distributed.initialize`. Without them, JAX's own cluster detection
runs where a cluster announces itself (SLURM, Open MPI, Cloud TPU, or JAX_COORDINATOR_ADDRESS
in the environment); anywhere else the program is one process.
"""
from __future__ import annotations

import os
from typing import Optional

import jax
from absl import flags

_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")

COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for multi-process runs.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Connects this process to the others (or does nothing for a single process)."""
    given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
             "--process_id": process_id}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"multi-process runs need all of --coordinator_address, "
                             f"--num_processes and --process_id; missing {', '.join(missing)}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                             f"{num_processes})")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif any(name in os.environ for name in _CLUSTER_ENV):
        jax.distributed.initialize()


def initialize_from_flags() -> None:
    initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
