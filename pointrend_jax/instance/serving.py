"""The instance serving function that `python -m pointrend_jax.export` exports.

Shapes: N images (symbolic in the export), H x W image, D detections per image, S mask side.
"""
from __future__ import annotations

from typing import Callable, Dict

import jax
import jax.numpy as jnp

from pointrend_jax.data.transforms import padded_size
from pointrend_jax.instance.augment import InstanceAugmentConfig, eval_size


def make_instance_serving_fn(model, augment_cfg, size_divisor: int, height: int,
                             width: int) -> Callable:
    """For images of `height x width`: `serve(variables, images uint8 (N, H, W, 3)) ->
    {"boxes" (N, D, 4) float32 (x0, y0, x1, y1) pixels, "scores" (N, D) float32, "classes"
    (N, D) int32, "valid" (N, D) bool, "masks" (N, D, S, S) float32}`: the detections of
    `MaskRCNN.predict` (padded rows and empty boxes have valid False, as `predict` drops
    them), each mask the probability of its
    detection's class on an S x S grid over its box (224 for PointRend, 28 for Mask R-CNN),
    to paste into the image (`coco_metrics.paste_masks`, threshold 0.5).

    The images are padded to a multiple of `size_divisor` as `InstancePredictor.predict` pads
    them (the pixel mean after normalisation, detectron2's padding), so both compute the same
    detections. `predict` also resizes images to `augment.test_short_side`; the serving
    function does not, and it refuses a size that `predict` would resize."""
    cfg = InstanceAugmentConfig.from_config(augment_cfg)
    resized = eval_size(height, width, cfg)
    if resized != (height, width):
        raise ValueError(
            f"augment.test_short_side={cfg.test_short_side} (max_size {cfg.max_size}) resizes "
            f"{height}x{width} images to {resized[0]}x{resized[1]} before predicting, and the "
            f"exported function does not resize: export with --height {resized[0]} --width "
            f"{resized[1]} and resize images on the client (shortest edge, bilinear), or "
            "train with --config.augment.test_short_side=None")
    ch, cw = padded_size(height, width, size_divisor)

    def serve(variables, images):
        n = images.shape[0]
        padded = jnp.pad(images, ((0, 0), (0, ch - height), (0, cw - width), (0, 0)))
        sizes = jnp.broadcast_to(jnp.asarray([height, width], jnp.int32), (n, 2))
        out = model.apply(variables, padded, sizes, method=model.predict)
        boxes = out["boxes"]  # clipped to the image: detector_postprocess's scale is 1 here
        nonempty = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        return {"boxes": boxes, "scores": out["scores"], "classes": out["classes"],
                "valid": out["valid"] & nonempty, "masks": jax.nn.sigmoid(out["masks"])}

    return serve


def serving_outputs(model, batch) -> Dict[str, dict]:
    """Shapes and dtypes of `make_instance_serving_fn`'s outputs."""
    d, side = model.roi.detections_per_image, model.mask_head.output_side
    return {"boxes": {"shape": [batch, d, 4], "dtype": "float32"},
            "scores": {"shape": [batch, d], "dtype": "float32"},
            "classes": {"shape": [batch, d], "dtype": "int32"},
            "valid": {"shape": [batch, d], "dtype": "bool"},
            "masks": {"shape": [batch, d, side, side], "dtype": "float32"}}
