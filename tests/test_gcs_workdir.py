"""A run whose workdir is a bucket: train.py (stopped by SIGTERM, then resumed by the same
command), eval.py, `python -m pointrend_jax.export` and `pointrend_jax.load("gs://...")`
against a GCS emulator on 127.0.0.1; every file lands in the bucket, none on the local disk.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pointrend_jax.checkpointing  # noqa: F401  (its listing settings, as in the programs)
from gcs_emulator import gcs_emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = f"--config={ROOT}/configs/synthetic_binary.py:runlocal"
pytestmark = pytest.mark.slow


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, names in os.walk(folder) for f in names)


def test_train_resume_eval_export_and_load_in_a_bucket(tmp_path):
    from etils import epath

    data_dir, cwd = tmp_path / "tfds", tmp_path / "cwd"
    cwd.mkdir()
    with gcs_emulator("pointrend-run") as gcs:
        env = {**os.environ, **gcs.env}
        workdir = f"gs://{gcs.bucket}/runs/binary"
        run_dir = epath.Path(workdir)
        flags = [CONFIG, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
                 "--config.train.num_steps=12", "--config.train.checkpoint_every=100",
                 "--config.train.log_every=1", "--config.train.image_summary_every=2"]

        def cli(*args, timeout=600):
            result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, text=True,
                                    capture_output=True, timeout=timeout)
            assert result.returncode == 0, f"{args} failed:\n{result.stderr[-4000:]}"
            return result

        # train, stopped by SIGTERM after a few steps
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *flags],
                                cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 400
            metrics = run_dir / "metrics.jsonl"
            while time.time() < deadline and proc.poll() is None:
                if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                    break
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err[-4000:]
        assert "Preempted: saved a checkpoint at step" in out
        saved = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        assert len(saved) == 1 and 3 <= saved[0] < 12, saved

        # the same command continues to the end
        cli(os.path.join(ROOT, "train.py"), *flags)
        steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        assert steps == [saved[0], 12]
        logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert set(logged) == set(range(1, 13))
        assert json.loads((run_dir / "config.json").read_text())["class_names"]
        events = list((run_dir / "tensorboard").iterdir())
        assert events and all(e.name.startswith("events.out.tfevents.") for e in events)

        # eval.py writes its metrics and pictures into the bucket
        cli(os.path.join(ROOT, "eval.py"), *flags[:3], "--config.eval.save_predictions=True")
        report = json.loads((run_dir / "eval" / "metrics.json").read_text())
        assert report["step"] == 12 and 0.0 <= report["pointrend"]["miou"] <= 1.0
        assert list((run_dir / "eval" / "examples").iterdir())
        assert list((run_dir / "eval" / "predictions").iterdir())

        # export from the bucket into the bucket
        out_dir = f"gs://{gcs.bucket}/exports/binary"
        cli("-m", "pointrend_jax.export", f"--workdir={workdir}", f"--out={out_dir}",
            "--no-saved-model", "--platforms=cpu")
        info = json.loads((epath.Path(out_dir) / "export.json").read_text())
        assert info["step"] == 12

        # load() in this process, from the bucket; the exported artifact predicts the same
        import jax

        import pointrend_jax

        predictor = pointrend_jax.load(workdir)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (info["height"], info["width"], 3), dtype=np.uint8)
        classes = predictor.predict(image)
        exported = jax.export.deserialize((epath.Path(out_dir) / "model.jax_exported").read_bytes())
        served, _ = exported.call(image[None])
        np.testing.assert_array_equal(np.asarray(served[0]), classes)

    # nothing of the run on the local disk: the working folder is empty, and the only local
    # files are the prepared data set's
    assert _files(cwd) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("gs:")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "tfds"]
