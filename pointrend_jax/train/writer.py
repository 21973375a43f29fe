"""What a training run writes beside its checkpoints, from process 0 only, through
etils.epath (a local folder or a bucket): `config.json` (config + class names),
`metrics.jsonl` (one JSON object per logged step), TensorBoard scalars and example
predictions under `tensorboard/`.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import jax
from etils import epath
from jax.experimental import multihost_utils

from pointrend_jax.tensorboard_events import EventWriter
from pointrend_jax.workdir import write_run


class MetricWriter:
    """Scalars and pictures of one run; every method may be called on every process."""

    def __init__(self, workdir, config, class_names: Sequence[str], task, num_examples: int = 2):
        self.enabled = jax.process_index() == 0
        self.workdir = epath.Path(workdir)
        self.config = config
        self.task = task
        self.num_examples = num_examples
        if not self.enabled:
            return
        write_run(self.workdir, config, class_names)
        self._tb = EventWriter(self.workdir / "tensorboard")
        self._jsonl = self.workdir / "metrics.jsonl"
        # Earlier lines of a resumed run stay; objects in a bucket cannot be appended to, so
        # the file is rewritten whole at each log (it is small: one line per logged step).
        self._lines = self._jsonl.read_text().splitlines(keepends=True) if self._jsonl.exists() else []

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._lines.append(json.dumps(record) + "\n")
        self._jsonl.write_text("".join(self._lines))
        for key, value in scalars.items():
            self._tb.add_scalar(f"train/{key}", value, step)
        self._tb.flush()

    def write_examples(self, step: int, model, state, val_source) -> None:
        """TensorBoard pictures of the task's predictions on a few val images.

        Every process must call it: the parameters may be sharded across processes, so all of
        them take part in gathering a host copy; process 0 then predicts and writes alone."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        if jax.process_count() > 1:
            variables = multihost_utils.process_allgather(variables, tiled=True)
        if not self.enabled:
            return
        variables = jax.device_put(variables, jax.local_devices()[0])
        images = self.task.example_images(model, variables, val_source, self.config,
                                          self.num_examples)
        for i, image in enumerate(images):
            self._tb.add_image(f"examples/{i}", image, step)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
