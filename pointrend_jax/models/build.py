"""One entry point from a config to its model: the semantic PointRend segmenter or, for
`config.task == "instance"`, Mask R-CNN with the PointRend (or the 28x28) mask head."""
from __future__ import annotations

from pointrend_jax.models.mask_rcnn import build_instance_model
from pointrend_jax.models.pointrend import build_model


def task_of(config) -> str:
    """"semantic" or "instance" (configs saved before instance models existed are semantic)."""
    return config.get("task", "semantic")


def build_task_model(config, num_classes: int):
    """The model `config` describes, for `num_classes` classes."""
    if task_of(config) == "instance":
        return build_instance_model(config.model, config.pointrend, num_classes)
    return build_model(config.model, config.pointrend, num_classes)
