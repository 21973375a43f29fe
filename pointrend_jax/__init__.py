"""pointrend-jax: PointRend (Kirillov et al., CVPR 2020) in JAX/Flax.

The public API, channels-last everywhere: the point ops, the point head, subdivision
inference, and `load(workdir)` for a trained run.
"""
from pointrend_jax.point_head import PointHead
from pointrend_jax.point_ops import (
    calculate_uncertainty,
    point_sample,
    resize_bilinear,
    sample_training_points,
    uncertain_grid_points,
    upsample_bilinear,
)
from pointrend_jax.subdivision import subdivision_inference


def load(workdir: str, step=None):
    """The model trained in `workdir` (checkpoint `step`, default latest), ready to predict:
    semantic runs: `load(workdir).predict(image uint8 (H, W, 3)) -> (H, W) class ids`;
    instance runs: `-> {"boxes" (D, 4), "classes" (D,), "scores" (D,), "masks" bool (D, H, W)}`."""
    from pointrend_jax.inference import load as _load  # Orbax and friends, only when used

    return _load(workdir, step)


__all__ = [
    "PointHead",
    "calculate_uncertainty",
    "load",
    "point_sample",
    "resize_bilinear",
    "sample_training_points",
    "subdivision_inference",
    "uncertain_grid_points",
    "upsample_bilinear",
]
