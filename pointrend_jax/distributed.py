"""Starting JAX on one process or many: the `--coordinator_address`, `--num_processes` and
`--process_id` flags of train.py and eval.py; and keeping the processes of a run together.

Explicit flags go to `jax.distributed.initialize`. Without them, JAX's own cluster detection
runs where a cluster announces itself (SLURM, Open MPI, Cloud TPU, or JAX_COORDINATOR_ADDRESS
in the environment); anywhere else the program is one process.

On several processes no process may wait alone for another that has failed or left:
`run` ends every process when one fails (each prints the failed process's error) and holds
each at the end until all are there (`finish`), and `process_0_decides` gives one
decision, taken on process 0, to all. A process that dies without a Python exception
(killed, out of host memory) is seen by JAX's heartbeat instead, which ends the others
after `heartbeat_timeout_seconds` (100 s by default).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax._src import distributed as jax_distributed  # the coordination client; no public API
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")
_FAILURE_KEY, _ENDING_KEY = "pointrend_jax/failure", "pointrend_jax/ending"
_POLL_MS, _LINGER_S = 1000, 10
# How long a process waits for process 0's decision or for the others at the end. A process
# that fails tells the others at once and one that dies is caught by the heartbeat, so this
# only bounds a process that hangs without failing.
WAIT_TIMEOUT_S = 3600

COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for multi-process runs.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")

_decisions = itertools.count()
_watcher: Optional["_FailureWatcher"] = None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Connects this process to the others (or does nothing for a single process). On
    several processes it also starts watching for a failure of another one (see `run`) and,
    on CPU, connects the devices' collectives while the processes are together."""
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
    if _multi_process():
        global _watcher
        _watcher = _FailureWatcher(_client())
        if jax.default_backend() == "cpu":
            _connect_cpu_collectives()


def initialize_from_flags() -> None:
    initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)


def run(fn: Callable[..., Any], *args) -> Any:
    """`fn(*args)` as this process's part of the run, then `finish()`.

    On several processes an exception does not leave the others waiting for this process
    in a collective or a barrier, nor this one waiting for them in JAX's shutdown: its
    traceback is printed, the other processes are told (they end at once, printing which
    process failed and its error), and this process ends with exit status 1. On one
    process `fn`'s exceptions propagate as usual."""
    if not _multi_process():
        return fn(*args)
    try:
        result = fn(*args)
        finish()
    except BaseException as error:  # noqa: BLE001 - also KeyboardInterrupt: the others end too
        _fail(error)
    return result


def finish() -> None:
    """Returns once every process has reached the end of the run, so that none leaves (and
    waits in JAX's shutdown) while another is still in a collective or a barrier of the
    run; then stops watching for failures. `run` calls it, once. It waits in JAX's
    coordination service, for up to `WAIT_TIMEOUT_S`, then raises."""
    if not _multi_process():
        return
    _client().wait_at_barrier("pointrend_jax/end of run", WAIT_TIMEOUT_S * 1000)
    if _watcher is not None:  # None where JAX was connected by someone else
        _watcher.stop()


def process_0_decides(decide: Callable[[], Any], what: str) -> Any:
    """`decide()` evaluated on process 0 only; its result (anything JSON can carry) is
    returned on every process. Every process must call this at the same point of the run,
    with the same `what` (a phrase such as "inspecting checkpoint 4", used in messages).

    If `decide` raises, every process raises: process 0 its own exception, the others a
    RuntimeError that names `what` and carries process 0's error message."""
    if not _multi_process():
        return decide()
    key = f"pointrend_jax/decision/{next(_decisions)}"
    client = _client()
    if _process_index() == 0:
        try:
            value = decide()
        except BaseException as error:
            client.key_value_set(key, json.dumps({"error": f"{type(error).__name__}: {error}"}))
            raise
        client.key_value_set(key, json.dumps({"value": value}))
        return value
    message = json.loads(client.blocking_key_value_get(key, WAIT_TIMEOUT_S * 1000))
    if "error" in message:
        raise RuntimeError(f"{what} failed on process 0: {message['error']}")
    return message["value"]


def _connect_cpu_collectives() -> None:
    """Sets up gloo's connections between the processes' CPU devices now, while the
    processes are together. Gloo gives the others only 30 s to arrive at the first
    collective of a set of devices, which a process still compiling under load can miss
    (the run then fails with "Gloo context initialization failed"); later collectives of
    the same devices wait as long as it takes. Connected here: all devices together (a
    train step's reductions) and each local device with its peers in the other processes
    (jax.experimental.multihost_utils, Orbax's barriers)."""
    mesh = Mesh(np.array(jax.devices()), ("devices",))
    ones = jax.make_array_from_callback((jax.device_count(),), NamedSharding(mesh, P("devices")),
                                        lambda index: np.ones(jax.device_count(), np.int32)[index])
    jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(ones).block_until_ready()
    multihost_utils.sync_global_devices("pointrend_jax: CPU collectives connected")


def _multi_process() -> bool:
    # From the coordination state, not jax.process_count(): that would start the backend.
    return jax.distributed.is_initialized() and jax_distributed.global_state.num_processes > 1


def _process_index() -> int:
    return jax_distributed.global_state.process_id


def _client():
    return jax_distributed.global_state.client


def _fail(error: BaseException):
    """Prints `error`, tells the other processes and ends this one (exit status 1) without
    waiting for the others in JAX's shutdown."""
    if _watcher is not None:
        _watcher.stop(wait=False)  # this process's own report is not news to it
    traceback.print_exception(error)
    message = f"process {_process_index()} failed: {type(error).__name__}: {error}"
    print(f"ending this run: {message}", file=sys.stderr, flush=True)
    try:
        _client().key_value_set(_FAILURE_KEY, message)
    except jax.errors.JaxRuntimeError:
        pass  # another process failed first (the key exists), or the coordinator is gone
    _end()


def _end():
    """Ends this process at once, with exit status 1. Process 0 ends last: JAX's
    coordination service lives in it and the others abort (SIGABRT) when it goes, so it
    first waits (up to `_LINGER_S`) for each of them to say that it is ending."""
    client, index = _client(), _process_index()
    try:
        if index == 0:
            deadline = time.monotonic() + _LINGER_S
            for other in range(1, jax_distributed.global_state.num_processes):
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                client.blocking_key_value_get(f"{_ENDING_KEY}/{other}", left_ms)
            time.sleep(_POLL_MS / 1000)  # for the replies to reach them, and their exits
        else:
            client.key_value_set(f"{_ENDING_KEY}/{index}", "")
    except jax.errors.JaxRuntimeError:
        pass  # one did not say so in time, or the coordinator is gone: end all the same
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class _FailureWatcher:
    """A thread that ends this process (exit status 1) as soon as another process of the run
    reports a failure through `run`, printing that process's error."""

    def __init__(self, client):
        self._client = client
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pointrend_jax failure watcher",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.is_set():
            try:
                message = self._client.blocking_key_value_get(_FAILURE_KEY, _POLL_MS)
            except jax.errors.JaxRuntimeError as error:
                if "DEADLINE_EXCEEDED" in str(error):
                    continue  # no failure in the last second
                return  # the coordinator is gone: JAX's own heartbeat handles that
            if self._stopped.is_set():
                return  # this process is ending already
            print(f"process {_process_index()} ends because {message}", file=sys.stderr,
                  flush=True)
            _end()

    def stop(self, wait: bool = True) -> None:
        self._stopped.set()
        if wait:
            self._thread.join()
