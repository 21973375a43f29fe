"""Instance segmentation: Mask R-CNN with the PointRend mask head (or the 28x28 baseline, or
Implicit PointRend's head).

`InstanceTask` is what the shared machinery asks (see `pointrend_jax.task`); the modules
here are its config, transforms, COCO metrics, evaluation, predictor and serving.
"""
from __future__ import annotations

from pointrend_jax import data as data_lib
from pointrend_jax.instance import config as instance_config
from pointrend_jax.instance.augment import InstanceAugment
from pointrend_jax.instance.evaluation import evaluate_instances, example_images
from pointrend_jax.instance.predictor import InstancePredictor
from pointrend_jax.instance.serving import make_instance_serving_fn, serving_outputs
from pointrend_jax.models.mask_rcnn import build_instance_model
from pointrend_jax.task import Task

# the batch keys `MaskRCNN.__call__` takes as training targets (see `InstanceAugment`)
TARGETS = ("boxes", "classes", "mask_bits", "valid", "image_size")
# ... and with point supervision (`data.point_supervision` > 0), point labels for the masks
POINT_TARGETS = ("boxes", "classes", "point_coords", "point_labels", "point_valid", "valid",
                 "image_size")


class InstanceTask(Task):
    """Boxes, classes and masks per object; batches `{"image", "boxes", "classes",
    "mask_bits", "valid", "image_size"}` (see `instance.augment`), or with point supervision
    `{"image", "boxes", "classes", "point_coords", "point_labels", "point_valid", "valid",
    "image_size"}`."""

    name = "instance"
    replacements = instance_config.REPLACEMENTS

    def default_config(self):
        return instance_config.instance_config()

    def validate(self, config):
        instance_config.validate(config)

    def build_datasets(self, data_cfg):
        return data_lib.build_datasets(data_cfg)

    def build_model(self, config, num_classes):
        return build_instance_model(config.model, config.pointrend, num_classes)

    def train_transform(self, config):
        return InstanceAugment(config.augment, num_points=config.data.point_supervision)

    def loss_fn(self, model, config):
        weights = {"loss_mask": config.loss.mask_weight,
                   "loss_mask_point": config.loss.mask_point_weight}
        keys = POINT_TARGETS if config.data.point_supervision else TARGETS

        def loss(variables, batch, rngs):
            targets = {k: batch[k] for k in keys}
            parts, updated = model.apply(variables, batch["image"], targets, train=True,
                                         rngs=rngs, mutable=["batch_stats"])
            total = sum(weights.get(k, 1.0) * v for k, v in parts.items())
            return total, parts, updated.get("batch_stats", variables["batch_stats"])

        return loss

    def example_images(self, model, variables, val_source, config, count):
        return example_images(model, variables, val_source, config, count)

    def evaluate(self, config, workdir):
        data = self.build_datasets(config.data)
        return evaluate_instances(config, workdir, data,
                                  self.build_model(config, data.num_classes))

    def predictor(self, config, model, variables, class_names, step):
        return InstancePredictor(config, model, variables, class_names, step)

    def serving_fn(self, model, config, height, width):
        return make_instance_serving_fn(model, config.augment, int(config.eval.size_divisor),
                                        height, width)

    def serving_outputs(self, model, config, batch, height, width, num_classes):
        return serving_outputs(model, batch)
