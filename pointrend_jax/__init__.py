"""pointrend-jax: PointRend (Kirillov et al., CVPR 2020) in JAX/Flax.

The public API (channels-last everywhere) of ../shared/DESIGN.md section 2.
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

__all__ = [
    "PointHead",
    "calculate_uncertainty",
    "point_sample",
    "resize_bilinear",
    "sample_training_points",
    "subdivision_inference",
    "uncertain_grid_points",
    "upsample_bilinear",
]
