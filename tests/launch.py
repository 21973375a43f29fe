"""Running the processes of one test run (train.py, eval.py or a worker script) on CPU
devices simulated by XLA_FLAGS, joined over loopback.

No run outlives its timeout: when one process fails the others get `GRACE_S` to end (a run
wired through `pointrend_jax.distributed.run` ends them at once), then they are killed,
and so is every process at the timeout. A hung process first gets SIGABRT, so that Python's
faulthandler prints where each of its threads was. `check` reports every process's exit
status and stderr, not only the failing one's.
"""
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import List, Sequence

GRACE_S = 60
_TAIL, _HUNG_TAIL = 4000, 12000  # a hung process's tail holds its threads' stacks


@dataclass
class Result:
    """What one process of a run left: exit status, output, and whether it was killed."""
    returncode: int
    stdout: str
    stderr: str
    killed: bool = False


def env(devices: int) -> dict:
    """The environment of a process with `devices` CPU devices."""
    out = dict(os.environ)
    out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out["PYTHONFAULTHANDLER"] = "1"  # a SIGABRT prints every thread's stack
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(base: Sequence[str], processes: int) -> List[List[str]]:
    """`base` for one process, or with the multi-process flags for each of `processes`."""
    if processes == 1:
        return [list(base)]
    address = f"--coordinator_address=127.0.0.1:{free_port()}"
    return [[*base, address, f"--num_processes={processes}", f"--process_id={i}"]
            for i in range(processes)]


def run(command_lines: Sequence[Sequence[str]], *, devices: int, cwd: str, timeout: float,
        grace: float = GRACE_S) -> List[Result]:
    """Runs the command lines together, one process each, in their own process groups;
    returns their results in order. Once one has failed, the others get `grace` seconds."""
    with tempfile.TemporaryDirectory() as logs:
        outputs = [(open(os.path.join(logs, f"{i}.out"), "w+"),
                    open(os.path.join(logs, f"{i}.err"), "w+"))
                   for i in range(len(command_lines))]
        # The SIGABRT of a hung process must not leave core files: none for any process.
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        procs = [subprocess.Popen(list(c), env=env(devices), cwd=cwd, stdout=out, stderr=err,
                                  text=True, start_new_session=True)
                 for c, (out, err) in zip(command_lines, outputs)]
        killed = _wait_or_kill(procs, timeout, grace)
        results = []
        for p, (out, err), was_killed in zip(procs, outputs, killed):
            out.seek(0), err.seek(0)
            results.append(Result(p.returncode, out.read(), err.read(), was_killed))
            out.close(), err.close()
    return results


def _wait_or_kill(procs, timeout: float, grace: float) -> List[bool]:
    """Waits for every process; returns which ones had to be killed."""
    deadline, killed = time.monotonic() + timeout, [False] * len(procs)
    while any(p.poll() is None for p in procs):
        if any(p.returncode not in (None, 0) for p in procs):
            deadline = min(deadline, time.monotonic() + grace)
        if time.monotonic() > deadline:
            for i, p in enumerate(procs):
                if p.poll() is None:
                    killed[i] = True
                    p.send_signal(signal.SIGABRT)
            dumped = time.monotonic() + 5
            while time.monotonic() < dumped and any(p.poll() is None for p in procs):
                time.sleep(0.1)
            for i, p in enumerate(procs):
                if killed[i]:
                    _kill_group(p)
            break
        time.sleep(0.2)
    for p in procs:  # every process group, also what a finished process left behind
        _kill_group(p)
        p.wait()
    return killed


def _kill_group(p) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def report(results: Sequence[Result]) -> str:
    """Every process's exit status and the tail of its stderr."""
    parts = []
    for i, r in enumerate(results):
        status = "killed (hung)" if r.killed else f"exit status {r.returncode}"
        tail = r.stderr[-(_HUNG_TAIL if r.killed else _TAIL):]
        parts.append(f"--- process {i}: {status}; stderr tail:\n{tail}")
    return "\n".join(parts)


def check(results: Sequence[Result], what: str) -> None:
    """Asserts that every process ended with status 0, reporting all of them if not."""
    assert all(r.returncode == 0 and not r.killed for r in results), (
        f"{what} failed:\n{report(results)}")
