"""What a run directory holds besides checkpoints, read and written through etils.epath so
that a workdir may be local or in a bucket (`gs://bucket/run`): `config.json` (the config
and the class names) and the model variables of a checkpoint.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import jax
import ml_collections
from etils import epath

from pointrend_jax.checkpointing import Checkpointer, abstract_like
from pointrend_jax.models.layers import init_variables

CONFIG_JSON = "config.json"


def write_run(workdir, config: ml_collections.ConfigDict, class_names: Sequence[str]) -> None:
    """Writes `workdir/config.json` (the config and the class names), making `workdir`."""
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_JSON).write_text(
        json.dumps({"config": config.to_dict(), "class_names": list(class_names)}, indent=2))


def read_run(workdir):
    """The config and class names a training run saved in `workdir/config.json`."""
    path = epath.Path(workdir) / CONFIG_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a pointrend-jax training "
                                "directory (train.py writes config.json there)")
    saved = json.loads(path.read_text())
    return ml_collections.ConfigDict(saved["config"]), saved["class_names"]


def restore_variables(workdir, model, image_shape, step: Optional[int] = None, sharding=None):
    """Params and batch stats of checkpoint `step` (None: latest) of `model` (initialised
    with images of `image_shape (h, w)`), placed with `sharding` (default: the first local
    device). Returns `(variables, step)`."""
    checkpointer = Checkpointer(workdir, read_only=True)
    step = checkpointer.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {checkpointer.directory}")
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.eval_shape(lambda r: init_variables(model, r, image_shape), jax.random.key(0))
    # Only params and batch stats are read; the optimizer state stays on disk.
    target = {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}
    state, _ = checkpointer.restore(step, abstract_like(target, sharding), partial=True)
    checkpointer.close()
    return {"params": state["params"], "batch_stats": state["batch_stats"]}, step
