"""Inference: a jitted predict function, and `load(workdir)` for notebooks.

    predictor = pointrend_jax.load("runs/synthetic_multiclass")
    classes = predictor.predict(image)  # uint8 (H, W, 3) -> int32 (H, W)
    out = predictor.predict(image, return_logits=True, return_points=True)

Images of any size are zero-padded at the bottom/right to a multiple of
`config.eval.size_divisor` (what the backbone's strides need), predicted, and cropped back,
so a new size costs one compilation and pixels are never resampled.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pointrend_jax.checkpointing import Checkpointer, abstract_like
from pointrend_jax.models.build import build_task_model, task_of
from pointrend_jax.models.pointrend import build_model, init_variables


def make_predict_fn(model):
    """`predict(variables, images uint8 (N, H, W, 3)) -> {"coarse", "logits" (N, H, W, K),
    "points": [(N, P_s, 2)]}` jitted; see `PointRendSegmenter.predict`."""

    @jax.jit
    def predict(variables, images):
        return model.apply(variables, images, method=model.predict)

    return predict


def pad_to_multiple(images: np.ndarray, divisor: int) -> np.ndarray:
    """Zero-pads `images (N, H, W, 3)` at the bottom/right to multiples of `divisor`."""
    _, h, w, _ = images.shape
    ph, pw = -h % divisor, -w % divisor
    return np.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else images


def predict_padded(predict, variables, images: np.ndarray, divisor: int) -> Dict[str, Any]:
    """Runs `predict` on `images (N, H, W, 3)` padded to `divisor`, and crops the logits back
    to `(N, H, W, K)`. Point coordinates are rescaled to the unpadded image."""
    _, h, w, _ = images.shape
    padded = pad_to_multiple(images, divisor)
    out = predict(variables, jnp.asarray(padded))
    hp, wp = padded.shape[1:3]
    scale = np.array([wp / w, hp / h], np.float32)
    return {"coarse": out["coarse"][:, :h, :w], "logits": out["logits"][:, :h, :w],
            "points": [np.asarray(p) * scale for p in out["points"]]}


def check_image(image) -> np.ndarray:
    """`image` as a uint8 `(H, W, 3)` RGB array, or a ValueError naming what it is instead."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB; got {image.dtype} {image.shape}")
    return image


class Predictor:
    """A trained model restored from a workdir, on the default device."""

    def __init__(self, config: ml_collections.ConfigDict, variables, class_names, step: int):
        self.config = config
        self.class_names = list(class_names)
        self.step = step
        self.model = build_model(config.model, config.pointrend, len(self.class_names))
        self.variables = variables
        self._predict = make_predict_fn(self.model)

    def predict(self, image: np.ndarray, *, return_logits: bool = False,
                return_points: bool = False):
        """`image` uint8 `(H, W, 3)` RGB -> class ids int32 `(H, W)`; with `return_logits`
        or `return_points` a dict `{"classes", "logits" (H, W, K), "coarse_logits",
        "points": [(P_s, 2) (x, y) in [0, 1] per subdivision step]}`."""
        image = check_image(image)
        out = predict_padded(self._predict, self.variables, image[None],
                             self.config.eval.size_divisor)
        classes = np.asarray(jnp.argmax(out["logits"][0], axis=-1), np.int32)
        if not (return_logits or return_points):
            return classes
        result = {"classes": classes}
        if return_logits:
            result["logits"] = np.asarray(out["logits"][0])
            result["coarse_logits"] = np.asarray(out["coarse"][0])
        if return_points:
            result["points"] = [p[0] for p in out["points"]]
        return result


def read_run(workdir: str):
    """The config and class names a training run saved in `workdir/config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir} is not a pointrend-jax training "
                                "directory (train.py writes config.json there)")
    with open(path) as f:
        saved = json.load(f)
    return ml_collections.ConfigDict(saved["config"]), saved["class_names"]


def restore_variables(workdir: str, model, image_shape, step: Optional[int] = None,
                      sharding=None):
    """Params and batch stats of checkpoint `step` (None: latest), placed with `sharding`
    (default: the first local device). Returns `(variables, step)`."""
    checkpointer = Checkpointer(workdir, read_only=True)
    step = checkpointer.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {checkpointer.directory}")
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.eval_shape(lambda r: init_variables(model, r, image_shape),
                            jax.random.key(0))
    # Only params and batch stats are read; the optimizer state stays on disk.
    target = {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}
    state, _ = checkpointer.restore(step, abstract_like(target, sharding), partial=True)
    checkpointer.close()
    return {"params": state["params"], "batch_stats": state["batch_stats"]}, step


def load(workdir: str, step: Optional[int] = None):
    """The model trained in `workdir` at checkpoint `step` (None: latest), ready to predict:
    a `Predictor` (semantic) or an `instance_predictor.InstancePredictor` (instance runs)."""
    config, class_names = read_run(workdir)
    model = build_task_model(config, len(class_names))
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size), step)
    if task_of(config) == "instance":
        from pointrend_jax.instance_predictor import InstancePredictor

        return InstancePredictor(config, model, variables, class_names, step)
    return Predictor(config, variables, class_names, step)
