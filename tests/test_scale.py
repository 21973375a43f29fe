"""Scale-out and robustness of train.py: the same losses on 1 device, 8 devices, 2 processes
x 4 devices and with fully sharded parameters; checkpoints that move between topologies;
preemption; torn checkpoints; non-finite steps; bad command lines.

Every run is `configs/synthetic_binary.py:runlocal` through the real command line, with
devices simulated by XLA_FLAGS and processes joined over loopback.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import launch
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"--config={ROOT}/configs/synthetic_binary.py:runlocal"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def train(workdir, tfds_dir, *flags, devices=1, processes=1, check=True, script="train.py"):
    """Runs train.py (or eval.py) on `processes` local processes of `devices` CPU devices
    each; returns process 0's `(returncode, stdout, stderr)`."""
    base = [sys.executable, os.path.join(ROOT, script), CONFIG, f"--workdir={workdir}",
            f"--config.data.data_dir={tfds_dir}", "--config.train.batch_size=8",
            "--config.train.log_every=1", *flags]
    results = launch.run(launch.commands(base, processes), devices=devices, cwd=ROOT,
                         timeout=300)
    if check:
        launch.check(results, " ".join(base))
    return results[0].returncode, results[0].stdout, results[0].stderr


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {l["step"]: l["loss"] for l in map(json.loads, f)}


def steps(workdir):
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tfds_dir):
    """6 uninterrupted steps on one device."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    train(workdir, tfds_dir, "--config.train.num_steps=6", "--config.train.checkpoint_every=2")
    return workdir


def assert_same_losses(got, want, tol=1e-4):
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("devices, processes, flags", [
    (8, 1, []),
    (4, 2, []),
    (8, 1, ["--config.mesh.fsdp=8"]),
    (4, 2, ["--config.mesh.fsdp=-1"]),
])
def test_losses_equal_on_every_topology_and_with_fsdp(tmp_path, tfds_dir, reference, devices,
                                                      processes, flags):
    workdir = str(tmp_path / "run")
    train(workdir, tfds_dir, "--config.train.num_steps=6", "--config.train.checkpoint_every=2",
          *flags, devices=devices, processes=processes)
    assert_same_losses(losses(workdir), losses(reference))


def test_fsdp_really_shards_parameters(tfds_dir):
    code = f"""
import jax
from pointrend_jax.config import load_config
from pointrend_jax.models.pointrend import build_model
from pointrend_jax.train import optimizer as optimizer_lib, state as state_lib
c = load_config("{ROOT}/configs/synthetic_binary.py:runlocal"); c.mesh.fsdp = 8
model = build_model(c.model, c.pointrend, 2)
tx, _ = optimizer_lib.make_optimizer(c.optimizer, 4)
mesh = state_lib.make_mesh(c.mesh)
state = state_lib.create_train_state(model, tx, jax.random.key(0), (64, 64), mesh, c.mesh)
leaves = jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state)
sharded = [x for x in leaves if not x.sharding.is_fully_replicated]
big = [x for x in leaves if x.size >= c.mesh.fsdp_min_size]
print(len(sharded), len(big), max(x.addressable_shards[0].data.size / x.size for x in sharded))
"""
    out = subprocess.run([sys.executable, "-c", code], env=launch.env(8), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    sharded, big, fraction = out.stdout.split()
    assert int(sharded) == int(big) > 0
    assert float(fraction) == 1 / 8


def drop_checkpoints_after(workdir, step):
    """Rewinds a finished run to its checkpoint at `step` (the schedule depends on num_steps,
    so a run is cut short by removing its later checkpoints, not by a smaller num_steps)."""
    for s in steps(workdir):
        if s > step:
            shutil.rmtree(os.path.join(workdir, "checkpoints", str(s)))


@pytest.mark.parametrize("devices, processes", [(1, 1), (4, 2)])
def test_checkpoint_from_8_devices_continues_on_another_topology(tmp_path, tfds_dir, reference,
                                                                devices, processes):
    workdir = str(tmp_path / "run")
    flags = ["--config.train.num_steps=6", "--config.train.checkpoint_every=2"]
    train(workdir, tfds_dir, *flags, devices=8)
    drop_checkpoints_after(workdir, 4)
    train(workdir, tfds_dir, *flags, devices=devices, processes=processes)
    assert steps(workdir) == [2, 4, 6]
    assert_same_losses(losses(workdir), losses(reference))  # steps 5, 6 logged again


def final_params(workdir, step):
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as ckpt:
        state = ckpt.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return state["params"]


def test_sigterm_saves_and_resuming_is_bit_identical(tmp_path, tfds_dir):
    flags = ["--config.train.num_steps=30", "--config.train.checkpoint_every=100"]
    straight = str(tmp_path / "straight")
    train(straight, tfds_dir, *flags)

    stopped = str(tmp_path / "stopped")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), CONFIG, f"--workdir={stopped}",
           f"--config.data.data_dir={tfds_dir}", "--config.train.batch_size=8",
           "--config.train.log_every=1", *flags]
    proc = subprocess.Popen(cmd, env=launch.env(1), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        metrics = os.path.join(stopped, "metrics.jsonl")
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(metrics) and len(open(metrics).readlines()) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:  # a hung run must not outlive the test
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Preempted: saved a checkpoint at step" in out
    (saved,) = steps(stopped)
    assert 3 <= saved < 30

    train(stopped, tfds_dir, *flags)  # the same command again continues
    assert steps(stopped) == [saved, 30]
    assert losses(stopped) == losses(straight)  # bit-identical
    import jax

    resumed, uninterrupted = (jax.tree.leaves(final_params(w, 30)) for w in (stopped, straight))
    assert len(resumed) == len(uninterrupted) > 0
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_torn_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tfds_dir, reference):
    workdir = str(tmp_path / "run")
    flags = ["--config.train.num_steps=6", "--config.train.checkpoint_every=2"]
    train(workdir, tfds_dir, *flags)
    drop_checkpoints_after(workdir, 4)
    # Truncate every data file of the latest checkpoint, as a kill in mid-write would.
    for folder, _, files in os.walk(os.path.join(workdir, "checkpoints", "4", "state")):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    os.makedirs(os.path.join(workdir, "checkpoints", "6.orbax-checkpoint-tmp-123"))  # unfinished save
    _, out, err = train(workdir, tfds_dir, *flags)
    torn = f"{workdir}/checkpoints/4/state/_METADATA does not parse"
    assert f"checkpoint step 4 is torn: {torn}" in out
    assert os.listdir(os.path.join(workdir, "checkpoints_corrupt"))[0].startswith("4-")
    assert steps(workdir) == [2, 4, 6]
    assert_same_losses(losses(workdir), losses(reference))  # steps 3..6 logged again


def test_checkpoint_of_another_model_is_refused_by_name(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    train(workdir, tfds_dir, "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    rc, _, err = train(workdir, tfds_dir, "--config.train.num_steps=4",
                       "--config.model.backbone.width=16", check=False)
    assert rc != 0
    assert "was written by a different model: params/net/backbone" in err
    assert steps(workdir) == [2]


def test_nonfinite_steps_are_skipped_then_stop_training_keeping_good_checkpoints(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    train(workdir, tfds_dir, "--config.train.num_steps=4", "--config.train.checkpoint_every=2")
    before = final_params(workdir, 4)
    # A zero pixel std makes every input inf/NaN from step 5 on.
    rc, _, err = train(workdir, tfds_dir, "--config.train.num_steps=12",
                       "--config.train.checkpoint_every=2", "--config.train.max_nonfinite_steps=3",
                       "--config.model.pixel_std=(0.0, 0.0, 0.0)", check=False)
    assert rc != 0
    assert "step 7: the loss or gradient was not finite for 3 steps in a row (steps 5..7" in err
    assert steps(workdir) == [2, 4]
    np.testing.assert_array_equal(
        np.asarray(before["point_head"]["predictor"]["kernel"]),
        np.asarray(final_params(workdir, 4)["point_head"]["predictor"]["kernel"]))
    line = [l for l in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))][-1]
    assert line["step"] >= 5 and line["nonfinite"] == 1.0


@pytest.mark.parametrize("flags, devices, message", [
    (["--config.train.no_such_key=1"], 1, "no_such_key"),
    (["--config.train.num_steps=abc"], 1, "num_steps"),
    (["--config.train.batch_size=4"], 8, "batch_size=4 must be divisible by the 8 devices"),
    (["--config.mesh.fsdp=3"], 8, "--config.mesh.fsdp=3 must divide the 8 devices"),
    (["--config.pointrend.train_num_points=5000"], 1,
     "--config.pointrend.train_num_points=5000 is more than the 4096 pixels"),
    (["--config.augment.crop_size=(50, 64)"], 1, "crop_size=(50, 64) must be multiples of 32"),
    (["--num_processes=2"], 1, "missing --coordinator_address, --process_id"),
])
def test_bad_command_lines_are_refused_naming_the_option(tmp_path, tfds_dir, flags, devices, message):
    rc, _, err = train(str(tmp_path / "run"), tfds_dir, *flags, devices=devices, check=False)
    assert rc != 0
    assert message in err
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_eval_on_two_processes_equals_one(tmp_path, tfds_dir, reference):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    results = {}
    for processes in (1, 2):
        train(workdir, tfds_dir, devices=4 if processes == 2 else 1, processes=processes,
              script="eval.py")
        with open(os.path.join(workdir, "eval", "metrics.json")) as f:
            results[processes] = json.load(f)
    assert results[1]["step"] == results[2]["step"] == 6
    for part in ("coarse", "pointrend"):
        for key in ("miou", "boundary_iou", "pixel_accuracy"):
            assert results[1][part][key] == pytest.approx(results[2][part][key], abs=1e-6)
