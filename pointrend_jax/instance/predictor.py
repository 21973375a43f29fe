"""Instance segmentation inference: image in, boxes/classes/scores/full-image masks out.

    predictor = pointrend_jax.load("runs/synthetic_instances")
    out = predictor.predict(image)  # uint8 (H, W, 3)
    out["boxes"] (D, 4), out["classes"] (D,), out["scores"] (D,), out["masks"] bool (D, H, W)

An image is resized for the model (`augment.test_short_side`, `augment.max_size`), padded at
the bottom/right to a multiple of `eval.size_divisor` as detectron2 pads it (the model zeroes
the normalised pixels outside the image, i.e. pads with the pixel mean), predicted, and the
detections are mapped back as detectron2's `detector_postprocess` maps them: boxes scaled to
the original image and clipped to it, empty ones dropped, masks pasted into it at the
original resolution (`paste_masks_in_image`). Each padded size is one compilation.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.data.transforms import check_image
from pointrend_jax.instance.augment import InstanceAugmentConfig, prepare_eval_instances
from pointrend_jax.instance.coco_metrics import paste_masks


def make_instance_predict_fn(model):
    """`predict(variables, images uint8 (N, H, W, 3), image_sizes int32 (N, 2))` -> the
    `MaskRCNN.predict` dict, jitted."""

    @jax.jit
    def predict(variables, images, image_sizes):
        return model.apply(variables, images, image_sizes, method=model.predict)

    return predict


def predict_instances(predict, variables, image: np.ndarray, augment_cfg, size_divisor: int,
                      *, with_coarse: bool = False, with_points: bool = False) -> Dict[str, Any]:
    """Detections of one `image` uint8 `(H, W, 3)` in its own pixels: `boxes (D, 4)` float32,
    `classes (D,)` int32, `scores (D,)` float32, `masks` bool `(D, H, W)`; with `with_coarse`
    also `coarse_masks` bool `(D, H, W)` (the coarse head's masks pasted at box size); with
    `with_points` also `points`: `[(D, P_i, 2)]` image-pixel points of each subdivision step."""
    cfg = InstanceAugmentConfig.from_config(augment_cfg)
    height, width = image.shape[:2]
    prepared = prepare_eval_instances({"image": image}, cfg, size_divisor)  # padded to it
    out = jax.device_get(predict(variables, jnp.asarray(prepared["image"][None]),
                                 jnp.asarray(prepared["image_size"][None])))
    # detectron2's detector_postprocess: scale to the original image, clip, drop empty boxes
    scale_y, scale_x = (size / float(resized) for size, resized in
                        zip((height, width), prepared["image_size"]))
    boxes = out["boxes"][0] * np.asarray([scale_x, scale_y, scale_x, scale_y], np.float32)
    boxes = np.clip(boxes, 0, np.asarray([width, height, width, height], np.float32))
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = np.flatnonzero(out["valid"][0] & nonempty)
    boxes = boxes[keep]
    result = {"boxes": boxes.astype(np.float32),
              "classes": out["classes"][0][keep].astype(np.int32),
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
        (the coarse masks pasted: PointRend's 7x7, Implicit PointRend's first regular grid),
        `return_points` adds "points" (image pixels per subdivision step)."""
        image = check_image(image)
        return predict_instances(self._predict, self.variables, image, self.config.augment,
                                 self.config.eval.size_divisor, with_coarse=return_coarse,
                                 with_points=return_points)
