"""Semantic inference: a jitted predict function and the `Predictor` that `load()` returns.

    predictor = pointrend_jax.load("runs/synthetic_multiclass")
    classes = predictor.predict(image)  # uint8 (H, W, 3) -> int32 (H, W)
    out = predictor.predict(image, return_logits=True, return_points=True)

Images of any size are padded at the bottom/right to a multiple of
`config.eval.size_divisor` (what the backbone's strides need), predicted, and cropped back,
so a new size costs one compilation and pixels are never resampled. The padding is
detectron2's: the model zeroes the normalised pixels outside the image (the pixel mean), so
an image predicts what detectron2's SemanticSegmentor predicts for it.

Shapes: N images, H x W image, K classes, P_s points of subdivision step s.
"""
from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pointrend_jax.data.transforms import check_image, pad_to_multiple


def make_predict_fn(model):
    """`predict(variables, images uint8 (N, H, W, 3), image_sizes int32 (N, 2)) -> {"coarse",
    "logits" (N, H, W, K), "points": [(N, P_s, 2)]}` jitted; see `PointRendSegmenter.predict`
    (`image_sizes`: the (h, w) of each image's content, the rest is padding)."""

    @jax.jit
    def predict(variables, images, image_sizes):
        return model.apply(variables, images, image_sizes, method=model.predict)

    return predict


def predict_padded(predict, variables, images: np.ndarray, divisor: int) -> Dict[str, Any]:
    """Runs `predict` on `images (N, H, W, 3)` padded to `divisor` (the padding is the pixel
    mean inside the model), and crops the logits back to `(N, H, W, K)`. Point coordinates
    are rescaled to the unpadded image."""
    n, h, w, _ = images.shape
    padded = pad_to_multiple(images, divisor)
    sizes = np.tile(np.asarray([[h, w]], np.int32), (n, 1))
    out = predict(variables, jnp.asarray(padded), jnp.asarray(sizes))
    hp, wp = padded.shape[1:3]
    scale = np.array([wp / w, hp / h], np.float32)
    return {"coarse": out["coarse"][:, :h, :w], "logits": out["logits"][:, :h, :w],
            "points": [np.asarray(p) * scale for p in out["points"]]}


class Predictor:
    """A trained semantic model restored from a workdir, on the default device."""

    def __init__(self, config: ml_collections.ConfigDict, model, variables, class_names,
                 step: int):
        self.config = config
        self.class_names = list(class_names)
        self.step = step
        self.model = model
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
