"""Instance segmentation inference: image in, boxes/classes/scores/full-image masks out.

    predictor = pointrend_jax.load("runs/synthetic_instances")
    out = predictor.predict(image)  # uint8 (H, W, 3)
    out["boxes"] (D, 4), out["classes"] (D,), out["scores"] (D,), out["masks"] bool (D, H, W)

An image is resized for the model (`augment.test_short_side`, `augment.max_size`), zero-padded
at the bottom/right to the training canvas (`augment.crop_size`) when it fits, else to a
multiple of `eval.size_divisor` (so one compilation serves every image that fits), predicted,
and the detections are mapped back: boxes scaled to the original image, masks pasted into it
at the original resolution (detectron2's `detector_postprocess` + `paste_masks_in_image`).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.data.transforms import check_image, padded_size
from pointrend_jax.instance.augment import InstanceAugmentConfig, prepare_eval_instances
from pointrend_jax.instance.coco_metrics import paste_masks


def make_instance_predict_fn(model):
    """`predict(variables, images uint8 (N, H, W, 3), image_sizes int32 (N, 2))` -> the
    `MaskRCNN.predict` dict, jitted."""

    @jax.jit
    def predict(variables, images, image_sizes):
        return model.apply(variables, images, image_sizes, method=model.predict)

    return predict


def canvas_size(shape, crop_size, divisor: int):
    """(h, w) an image of `shape` is zero-padded to: the training canvas `crop_size` when it
    fits (one compilation for every such image), else multiples of `divisor`."""
    h, w = shape
    ch, cw = crop_size
    if h <= ch and w <= cw:
        return ch, cw
    return padded_size(h, w, divisor)


def predict_instances(predict, variables, image: np.ndarray, augment_cfg, size_divisor: int,
                      *, with_coarse: bool = False, with_points: bool = False) -> Dict[str, Any]:
    """Detections of one `image` uint8 `(H, W, 3)` in its own pixels: `boxes (D, 4)` float32,
    `classes (D,)` int32, `scores (D,)` float32, `masks` bool `(D, H, W)`; with `with_coarse`
    also `coarse_masks` bool `(D, H, W)` (the coarse head's masks pasted at box size); with
    `with_points` also `points`: `[(D, P_i, 2)]` image-pixel points of each subdivision step."""
    cfg = InstanceAugmentConfig.from_config(augment_cfg)
    height, width = image.shape[:2]
    prepared = prepare_eval_instances({"image": image}, cfg, size_divisor)
    resized = prepared["image"]
    ch, cw = canvas_size(resized.shape[:2], cfg.crop_size, size_divisor)
    canvas = np.zeros((ch, cw, 3), np.uint8)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    out = jax.device_get(predict(variables, jnp.asarray(canvas[None]),
                                 jnp.asarray(prepared["image_size"][None])))
    keep = np.flatnonzero(out["valid"][0])
    sy, sx = (float(v) for v in prepared["scale"])
    boxes = out["boxes"][0][keep] / np.asarray([sx, sy, sx, sy], np.float32)
    result = {"boxes": boxes.astype(np.float32), "classes": out["classes"][0][keep].astype(np.int32),
              "scores": out["scores"][0][keep].astype(np.float32)}
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
    result["masks"] = paste_masks(sigmoid(out["masks"][0][keep]), boxes, (height, width))
    if with_coarse:
        result["coarse_masks"] = paste_masks(sigmoid(out["coarse_masks"][0][keep]), boxes,
                                             (height, width))
    if with_points:
        origin, size = boxes[:, None, :2], boxes[:, None, 2:] - boxes[:, None, :2]
        result["points"] = [origin + p[0][keep] * size for p in out["points"]]
    return result


class InstancePredictor:
    """A trained instance model restored from a workdir, on the default device."""

    def __init__(self, config, model, variables, class_names: Sequence[str], step: int):
        self.config = config
        self.model = model
        self.variables = variables
        self.class_names = list(class_names)
        self.step = step
        self._predict = make_instance_predict_fn(model)

    def predict(self, image: np.ndarray, *, return_coarse: bool = False,
                return_points: bool = False) -> Dict[str, Any]:
        """`image` uint8 `(H, W, 3)` RGB -> `{"boxes" (D, 4) (x0, y0, x1, y1) pixels,
        "classes" (D,) int32 (indices into `class_names`), "scores" (D,), "masks" bool
        (D, H, W)}`, detections by decreasing score; `return_coarse` adds "coarse_masks"
        (the 7x7 coarse masks pasted), `return_points` adds "points" (image pixels per
        subdivision step)."""
        image = check_image(image)
        return predict_instances(self._predict, self.variables, image, self.config.augment,
                                 self.config.eval.size_divisor, with_coarse=return_coarse,
                                 with_points=return_points)
