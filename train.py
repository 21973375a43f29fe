"""Trains PointRend semantic segmentation, or instance segmentation (Mask R-CNN with the
PointRend mask head: configs/synthetic_instances.py, coco_format.py, coco_pointrend_r50_fpn.py),
on one device, many, or many hosts.

    python train.py --config configs/synthetic_multiclass.py[:runlocal] --workdir DIR \
        [--config.key=value ...] [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Writes (process 0) DIR/config.json, DIR/metrics.jsonl (one JSON line per logged step),
TensorBoard scalars and example predictions under DIR/tensorboard; every process takes part
in the Orbax checkpoints under DIR/checkpoints. Rerunning the same command resumes from the
latest good checkpoint, on any number of devices. SIGTERM (or a preemption notice on a pod)
saves a checkpoint at the current step and exits cleanly.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from pointrend_jax import distributed
from pointrend_jax.training import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    distributed.initialize_from_flags()
    train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
