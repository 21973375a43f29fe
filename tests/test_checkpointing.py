"""The Checkpointer sets a checkpoint aside only on evidence in its files that it is torn,
and then restores the previous one; any other failure (a storage error, a timeout, out of
memory) raises and moves nothing. On two processes process 0 decides for both, and a
failure in either process ends both promptly.
"""
import os
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

import launch
from pointrend_jax.checkpointing import Checkpointer, IncompatibleCheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "checkpoint_worker.py")


def make_state(rng):
    """A small state; `w` (16 KiB) is stored apart from the OCDBT index, `b` inside it."""
    return {"params": {"w": jax.numpy.asarray(rng.normal(size=(64, 64)), jax.numpy.float32),
                       "b": jax.numpy.asarray(rng.normal(size=3), jax.numpy.float32)},
            "step": jax.numpy.int32(rng.integers(100))}


@pytest.fixture
def run(tmp_path, np_rng):
    """`(workdir, {step: state})` of a workdir with checkpoints at steps 1 and 2."""
    workdir = str(tmp_path / "run")
    states = {step: make_state(np_rng) for step in (1, 2)}
    ckpt = Checkpointer(workdir)
    for step, state in states.items():
        ckpt.save(step, state, {"batches_consumed": step})
    ckpt.close()
    return workdir, states


def listing(folder):
    """`{relative path: size}` of every file under `folder`."""
    return {os.path.relpath(os.path.join(d, f), folder): os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(folder) for f in files}


def moved_steps(workdir):
    """The steps of the checkpoints moved to `checkpoints_corrupt/` (named STEP-TIME)."""
    return sorted(d.split("-")[0] for d in os.listdir(os.path.join(workdir, "checkpoints_corrupt")))


def assert_restores(workdir, want_step, want_state):
    """restore_latest_good, into zeros of the state's shapes, gives `want_step`'s state."""
    ckpt = Checkpointer(workdir)
    state, data, step = ckpt.restore_latest_good(jax.tree.map(jax.numpy.zeros_like, want_state))
    ckpt.close()
    assert step == want_step and data == {"batches_consumed": want_step}
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_complete_checkpoints_are_not_torn_and_the_newest_restores(run):
    workdir, states = run
    ckpt = Checkpointer(workdir)
    assert [ckpt.torn_reason(s) for s in (1, 2)] == [None, None]
    ckpt.close()
    assert_restores(workdir, 2, states[2])


@pytest.mark.parametrize("error", [
    OSError(5, "Input/output error"), TimeoutError("read timed out"),
    ConnectionResetError("connection reset by peer"), MemoryError("out of host memory")],
    ids=lambda e: type(e).__name__)
def test_a_failed_read_of_a_complete_checkpoint_raises_and_moves_nothing(run, monkeypatch,
                                                                         error):
    workdir, states = run
    before = listing(workdir)
    real_restore = ocp.CheckpointManager.restore

    def fail_once(self, *args, **kwargs):
        monkeypatch.setattr(ocp.CheckpointManager, "restore", real_restore)
        raise error

    monkeypatch.setattr(ocp.CheckpointManager, "restore", fail_once)
    ckpt = Checkpointer(workdir)
    with pytest.raises(type(error)) as raised:
        ckpt.restore_latest_good(states[2])
    ckpt.close()
    assert raised.value is error
    assert any("was left in place" in note for note in raised.value.__notes__)
    assert listing(workdir) == before  # nothing moved, nothing written
    assert_restores(workdir, 2, states[2])  # the same call again, once the error has passed


def test_a_storage_error_while_inspecting_raises_and_moves_nothing(run, monkeypatch):
    workdir, states = run
    before = listing(workdir)
    path_class, real_read = type(epath.Path(workdir)), type(epath.Path(workdir)).read_bytes

    def read_bytes(self):
        if self.name == "_METADATA":
            raise OSError(5, "Input/output error", str(self))
        return real_read(self)

    monkeypatch.setattr(path_class, "read_bytes", read_bytes)
    ckpt = Checkpointer(workdir)
    with pytest.raises(OSError, match="Input/output error"):
        ckpt.restore_latest_good(states[2])
    ckpt.close()
    assert listing(workdir) == before


def _largest(folder):
    return max((os.path.join(folder, f) for f in os.listdir(folder)), key=os.path.getsize)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_middle_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


# (what is damaged in checkpoint 2, the file named in the reason, the reason's words,
#  whether Orbax's own restore then fails too)
DAMAGE = {
    "no commit marker": ("commit_success.txt", os.remove, "is missing", False),
    "no commit marker of the state": ("state/commit_success.txt", os.remove, "is missing", False),
    "step metadata cut short": ("_CHECKPOINT_METADATA", _truncate, "does not parse", False),
    "array metadata cut short": ("state/_METADATA", _truncate, "does not parse", True),
    "input position not JSON": ("data/metadata", lambda p: open(p, "w").write("{'batches"),
                                "does not parse", True),
    "array file deleted": ("state/ocdbt.process_0/d/*", os.remove, "is missing", True),
    "array file cut short": ("state/ocdbt.process_0/d/*", _truncate, "shorter than", True),
    "index manifest cut short": ("state/manifest.ocdbt", _truncate, "does not parse", True),
    "index node corrupted": ("state/d/*", _flip_middle_byte, "does not parse", True),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's own
def test_a_torn_checkpoint_is_moved_aside_and_the_previous_restored(run, damage, capsys):
    workdir, states = run
    name, damage_file, words, breaks_orbax = DAMAGE[damage]
    step_dir = os.path.join(workdir, "checkpoints", "2")
    path = os.path.join(step_dir, name)
    if name.endswith("*"):  # the biggest file there: `w`'s values (in state/d: the index)
        path = _largest(os.path.dirname(path))
    damage_file(path)
    if breaks_orbax:  # the damage is real: Orbax cannot read the checkpoint either
        probe = Checkpointer(workdir)
        with pytest.raises(Exception):
            probe.restore(2, states[2])
        probe.close()

    ckpt = Checkpointer(workdir)
    reason = ckpt.torn_reason(2)
    ckpt.close()
    assert reason.startswith(path) and words in reason
    assert_restores(workdir, 1, states[1])
    assert f"checkpoint step 2 is torn: {reason}" in capsys.readouterr().out
    assert moved_steps(workdir) == ["2"]
    assert [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()] == ["1"]


def test_every_torn_checkpoint_is_moved_until_a_complete_one(run, np_rng):
    workdir, states = run
    ckpt = Checkpointer(workdir)
    ckpt.save(3, make_state(np_rng), {"batches_consumed": 3})
    ckpt.close()
    for step in (2, 3):
        os.remove(os.path.join(workdir, "checkpoints", str(step), "commit_success.txt"))
    assert_restores(workdir, 1, states[1])
    assert moved_steps(workdir) == ["2", "3"]


def test_a_checkpoint_of_another_model_is_refused_and_kept(run):
    workdir, states = run
    before = listing(workdir)
    other = dict(states[2], params={**states[2]["params"], "b": jax.numpy.zeros(4)})
    ckpt = Checkpointer(workdir)
    with pytest.raises(IncompatibleCheckpointError, match="params/b is float32\\[3\\] there"):
        ckpt.restore_latest_good(other)
    ckpt.close()
    assert listing(workdir) == before


def workers(workdir, action, timeout=240):
    """Runs checkpoint_worker.py ACTION on 2 processes of 1 CPU device each; returns the
    results and the seconds they took."""
    start = time.monotonic()
    results = launch.run(launch.commands([sys.executable, WORKER, workdir, action], 2),
                         devices=1, cwd=ROOT, timeout=timeout)
    return results, time.monotonic() - start


@pytest.fixture
def two_process_run(tmp_path):
    workdir = str(tmp_path / "run")
    results, _ = workers(workdir, "save")
    launch.check(results, "saving on 2 processes")
    return workdir


def restored(results):
    return [r.stdout.split("restored ")[1].split() for r in results]


STEP_1_SUM = str(float(np.arange(64 * 64).sum()))  # of checkpoint_worker.state(1)["params"]["w"]


@pytest.mark.slow
def test_two_processes_set_a_torn_checkpoint_aside_and_restore_the_previous(two_process_run):
    workdir = two_process_run
    path = _largest(os.path.join(workdir, "checkpoints", "2", "state", "ocdbt.process_0", "d"))
    os.remove(path)
    results, _ = workers(workdir, "restore")
    launch.check(results, "restoring on 2 processes")
    assert restored(results) == [["1", STEP_1_SUM]] * 2
    assert f"checkpoint step 2 is torn: {path} is missing" in results[0].stdout
    assert moved_steps(workdir) == ["2"]


@pytest.mark.slow
def test_every_process_follows_process_0s_decision(two_process_run):
    # Process 1's own inspection would find step 2 complete; it restores step 1 with process 0.
    results, _ = workers(two_process_run, "only_0_sees_2_torn")
    launch.check(results, "restoring on 2 processes")
    assert restored(results) == [["1", STEP_1_SUM]] * 2
    assert "checkpoint step 2 is torn: seen by process 0 only" in results[0].stdout
    assert moved_steps(two_process_run) == ["2"]


@pytest.mark.slow
@pytest.mark.parametrize("action, failed, error", [
    ("inspect_fails_on_0", 0, "OSError: [Errno 5] Input/output error (injected)"),
    ("restore_fails_on_1", 1, "TimeoutError: reading the checkpoint timed out (injected)"),
])
def test_a_failure_in_one_process_ends_both_promptly_moving_nothing(two_process_run, action,
                                                                     failed, error):
    workdir = two_process_run
    before = listing(workdir)
    results, seconds = workers(workdir, action)
    # Each ends by itself (status 1; SIGABRT if JAX saw process 0's coordinator go first).
    assert all(r.returncode in (1, -6) and not r.killed for r in results), launch.report(results)
    assert seconds < launch.GRACE_S, launch.report(results)
    for r in results:  # each process names the failed one and prints its error
        assert f"process {failed}" in r.stderr and error in r.stderr, launch.report(results)
    assert listing(workdir) == before
