"""Trains the task a config names (semantic segmentation with PointRend, or instance
segmentation with Mask R-CNN and the PointRend mask head), on one device, many, or many hosts.

    python train.py --config configs/synthetic_multiclass.py[:runlocal] --workdir DIR \
        [--config.key=value ...] [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

DIR is a local folder or a bucket path (`gs://bucket/run`). Writes (process 0)
DIR/config.json, DIR/metrics.jsonl (one JSON line per logged step), TensorBoard scalars and
example predictions under DIR/tensorboard; every process takes part in the Orbax checkpoints
under DIR/checkpoints. Rerunning the same command resumes from the latest good checkpoint,
on any number of devices. SIGTERM (or a preemption notice on a pod) saves a checkpoint at
the current step and exits cleanly.
"""
from pointrend_jax import cli
from pointrend_jax.train import train

if __name__ == "__main__":
    cli.run(train)
