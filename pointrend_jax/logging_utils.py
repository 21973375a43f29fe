"""What a training run writes beside its checkpoints, from process 0 only:
`config.json` (config + class names), `metrics.jsonl` (one JSON object per logged step),
TensorBoard scalars and example predictions under `tensorboard/`.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from pointrend_jax import visualize
from pointrend_jax.instance_predictor import make_instance_predict_fn, predict_instances
from pointrend_jax.models.mask_rcnn import MaskRCNN
from pointrend_jax.predictor import make_predict_fn, predict_padded


class MetricWriter:
    def __init__(self, workdir: str, config, class_names: Sequence[str], num_examples: int = 2):
        self.enabled = jax.process_index() == 0
        self.workdir = workdir
        self.config = config
        self.num_examples = num_examples
        self._predict = None
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump({"config": config.to_dict(), "class_names": list(class_names)}, f, indent=2)
        from tensorboardX import SummaryWriter  # only process 0 needs it

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._jsonl.flush()
        for key, value in scalars.items():
            self._tb.add_scalar(f"train/{key}", value, step)

    def write_examples(self, step: int, model, state, val_source) -> None:
        """TensorBoard images `image | ground truth | coarse | PointRend` of a few val images.

        Every process must call it: the parameters may be sharded across processes, so all of
        them take part in gathering a host copy; process 0 then predicts and writes alone."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        if jax.process_count() > 1:
            variables = multihost_utils.process_allgather(variables, tiled=True)
        if not self.enabled:
            return
        variables = jax.device_put(variables, jax.local_devices()[0])
        if isinstance(model, MaskRCNN):
            self._write_instance_examples(step, model, variables, val_source)
            return
        if self._predict is None:
            self._predict = make_predict_fn(model)
        for i in range(min(self.num_examples, len(val_source))):
            example = val_source[i]
            out = predict_padded(self._predict, variables, example["image"][None],
                                 self.config.eval.size_divisor)
            coarse = np.asarray(out["coarse"][0].argmax(-1))
            refined = np.asarray(out["logits"][0].argmax(-1))
            panels = [example["image"]] + [visualize.colorize(m) for m in
                                           (example["label"], coarse, refined)]
            self._tb.add_image(f"examples/{i}", np.concatenate(panels, axis=1), step,
                               dataformats="HWC")

    def _write_instance_examples(self, step, model, variables, val_source) -> None:
        """`image | ground truth | coarse | PointRend` masks blended over the image (detections
        scoring at least `eval.example_score_thresh`)."""
        if self._predict is None:
            self._predict = make_instance_predict_fn(model)
        k = model.num_classes
        for i in range(min(self.num_examples, len(val_source))):
            example = val_source[i]
            out = predict_instances(self._predict, variables, example["image"],
                                    self.config.augment, self.config.eval.size_divisor,
                                    with_coarse=True)
            image = example["image"]
            shown = out["scores"] >= self.config.eval.example_score_thresh
            panels = [image,
                      visualize.blend_masks(image, example["masks"].astype(bool),
                                            example["classes"], k),
                      visualize.blend_masks(image, out.get("coarse_masks", out["masks"])[shown],
                                            out["classes"][shown], k),
                      visualize.blend_masks(image, out["masks"][shown], out["classes"][shown], k)]
            self._tb.add_image(f"examples/{i}", np.concatenate(panels, axis=1), step,
                               dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
