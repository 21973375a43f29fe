"""The semantic serving function that `python -m pointrend_jax.export` exports.

Shapes: N images (symbolic in the export), H x W image, K classes.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from pointrend_jax.data.transforms import pad_to_multiple

ServeFn = Callable[[Any, jax.Array], Tuple[jax.Array, jax.Array]]


def make_serving_fn(model, size_divisor: int) -> ServeFn:
    """`serve(variables, images uint8 (N, H, W, 3)) -> (classes int32 (N, H, W), logits
    float32 (N, H, W, K))`, traceable with a symbolic N: `Predictor.predict`'s computation,
    with the padding to `size_divisor` done inside (the pixel mean after normalisation, as
    `predict` and detectron2 pad)."""

    def serve(variables, images):
        n, h, w, _ = images.shape
        padded = pad_to_multiple(images, size_divisor, xp=jnp)
        sizes = jnp.broadcast_to(jnp.asarray([h, w], jnp.int32), (n, 2))
        logits = model.apply(variables, padded, sizes, method=model.predict)["logits"][:, :h, :w]
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits

    return serve


def serving_outputs(batch, height: int, width: int, num_classes: int) -> Dict[str, dict]:
    """Shapes and dtypes of `make_serving_fn`'s outputs, by their SavedModel names."""
    return {"classes": {"shape": [batch, height, width], "dtype": "int32"},
            "logits": {"shape": [batch, height, width, num_classes], "dtype": "float32"}}
