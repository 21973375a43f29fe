"""What `--workdir gs://bucket/run` relies on, against a local GCS emulator (in memory, see
gcs_emulator.py): etils.epath on gs://, Orbax checkpoints there, TensorBoard event files
written there by `EventWriter`, and the emulator's variables in a child process."""
import functools
import io
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from gcs_emulator import gcs_emulator
from PIL import Image

from pointrend_jax.tensorboard_events import EventWriter


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator("test-bucket") as emulator:
        yield emulator


@pytest.fixture
def root(gcs, request, tmp_path):
    """A fresh gs:// folder for the test; afterwards no local `gs:` folder may exist."""
    name = re.sub(r"\W", "_", request.node.name)
    yield epath.Path(f"gs://{gcs.bucket}/{name}")
    for folder in (pathlib.Path.cwd(), tmp_path):
        assert not list(folder.glob("gs:*")), f"a local gs: folder appeared in {folder}"


def test_epath_round_trip(root):
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    (root / "a" / "b" / "x.txt").write_text("hello")
    (root / "a" / "y.bin").write_bytes(b"\x00\x01")
    assert (root / "a" / "b" / "x.txt").read_text() == "hello"
    assert (root / "a" / "b" / "x.txt").exists() and (root / "a").is_dir()
    assert not (root / "missing").exists()
    assert sorted(p.name for p in (root / "a").iterdir()) == ["b", "y.bin"]
    assert [str(p) for p in root.glob("a/*/*.txt")] == [f"{root}/a/b/x.txt"]

    (root / "a" / "y.bin").rename(root / "a" / "z.bin")
    (root / "a" / "b").rename(root / "c")
    assert (root / "a" / "z.bin").read_bytes() == b"\x00\x01"
    assert (root / "c" / "x.txt").read_text() == "hello"
    assert sorted(p.name for p in root.iterdir()) == ["a", "c"]

    (root / "a" / "z.bin").unlink()
    (root / "c").rmtree()
    assert not (root / "c").exists() and not (root / "a" / "z.bin").exists()


@pytest.mark.parametrize("as_path", [str, epath.Path], ids=["str", "epath"])
def test_orbax_checkpoints(root, as_path):
    directory = as_path(f"{root}/checkpoints")  # either works; never os.path.abspath it

    def manager(**options):
        return ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(**options),
            item_names=("state", "data"),
            item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()})

    tree = {"w": jnp.arange(12.0).reshape(3, 4), "b": {"c": jnp.ones(5, jnp.int32)}}
    saver = manager(max_to_keep=2, create=True, enable_async_checkpointing=True)
    for step in (1, 2, 3):
        saver.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(jax.tree.map(functools.partial(jnp.multiply, step), tree)),
            data=ocp.args.JsonSave({"position": step})))
    saver.wait_until_finished()
    assert saver.all_steps() == [2, 3] and saver.latest_step() == 3
    saver.close()
    assert sorted(p.name for p in epath.Path(f"{root}/checkpoints").iterdir()) == ["2", "3"]

    reader = manager(read_only=True)
    assert reader.all_steps() == [2, 3] and reader.latest_step() == 3
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    restored = reader.restore(2, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)),
        data=ocp.args.JsonRestore()))
    reader.close()
    assert restored["data"] == {"position": 2}
    jax.tree.map(lambda got, want: np.testing.assert_array_equal(got, want * 2),
                 restored["state"], tree)


def _write_events(logdir) -> np.ndarray:
    """Scalars at steps 0-5 and an image at step 3; small files, so it rotates."""
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    writer = EventWriter(logdir, max_file_bytes=1000)
    for step in range(6):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        if step == 3:
            writer.add_image("examples/0", image, step)
        writer.flush()
    writer.add_scalar("train/loss", 0.0, 6)
    writer.close()
    return image


def _check_events(logdir: pathlib.Path, image: np.ndarray) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(logdir.glob("events.out.tfevents.*"))) > 1  # it rotated
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == list(range(7))
    np.testing.assert_allclose([s.value for s in scalars],
                               [1.0 / (step + 1) for step in range(6)] + [0.0], rtol=1e-6)
    [shown] = events.Images("examples/0")
    assert (shown.step, shown.width, shown.height) == (3, 40, 24)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown.encoded_image_string))),
                                  image)


def test_tensorboard_events_on_gcs(root, tmp_path):
    image = _write_events(root / "tensorboard")
    for event_file in (root / "tensorboard").iterdir():  # copied out only to be read
        (tmp_path / event_file.name).write_bytes(event_file.read_bytes())
    _check_events(tmp_path, image)


def test_tensorboard_events_local(tmp_path):
    image = _write_events(tmp_path / "tensorboard")
    _check_events(tmp_path / "tensorboard", image)


def test_child_process_env(gcs, root):
    """`gcs.env` alone points a child process's epath and tensorstore at the emulator."""
    (root / "from_parent.txt").write_text("parent")
    child = (
        "import sys, tensorstore as ts\n"
        "from etils import epath\n"
        "root = epath.Path(sys.argv[1])\n"
        "(root / 'from_child.txt').write_text((root / 'from_parent.txt').read_text() + '+child')\n"
        "kv = ts.KvStore.open({'driver': 'gcs', 'bucket': sys.argv[2]}).result()\n"
        "print(kv.read(sys.argv[3] + '/from_child.txt').result().value.decode())\n")
    prefix = str(root).removeprefix(f"gs://{gcs.bucket}/")
    result = subprocess.run([sys.executable, "-c", child, str(root), gcs.bucket, prefix],
                            env=dict(gcs.env), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "parent+child"
    assert (root / "from_child.txt").read_text() == "parent+child"
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs.url  # set here while it runs
