"""Semantic segmentation: PointRend on a SemanticFPN or DeepLabV3 coarse head.

`SemanticTask` is what the shared machinery asks (see `pointrend_jax.task`); the modules
here are its config, augmentation, losses, metrics, evaluation, predictor and serving.
"""
from __future__ import annotations

from pointrend_jax import data as data_lib
from pointrend_jax.models.pointrend import build_model
from pointrend_jax.semantic import config as semantic_config
from pointrend_jax.semantic.augment import SemanticAugment
from pointrend_jax.semantic.evaluation import evaluate_semantic, example_images
from pointrend_jax.semantic.losses import segmentation_loss
from pointrend_jax.semantic.predictor import Predictor
from pointrend_jax.semantic.serving import make_serving_fn, serving_outputs
from pointrend_jax.task import Task


class SemanticTask(Task):
    """Per-pixel classes; batches `{"image" uint8 (B, h, w, 3), "label" uint8 (B, h, w)}`."""

    name = "semantic"
    replacements = semantic_config.REPLACEMENTS

    def default_config(self):
        return semantic_config.semantic_config()

    def validate(self, config):
        semantic_config.validate(config)

    def build_datasets(self, data_cfg):
        return data_lib.build_datasets(data_cfg)

    def build_model(self, config, num_classes):
        return build_model(config.model, config.pointrend, num_classes)

    def train_transform(self, config):
        return SemanticAugment(config.augment)

    def loss_fn(self, model, config):
        weights = dict(pixel_weight=config.loss.pixel_weight,
                       point_weight=config.loss.point_weight)

        def loss(variables, batch, rngs):
            outputs, updated = model.apply(variables, batch["image"], train=True, rngs=rngs,
                                           mutable=["batch_stats"])
            total, parts = segmentation_loss(outputs, batch["label"], **weights)
            return total, parts, updated.get("batch_stats", variables["batch_stats"])

        return loss

    def example_images(self, model, variables, val_source, config, count):
        return example_images(model, variables, val_source, config, count)

    def evaluate(self, config, workdir):
        data = self.build_datasets(config.data)
        return evaluate_semantic(config, workdir, data, self.build_model(config, data.num_classes))

    def predictor(self, config, model, variables, class_names, step):
        return Predictor(config, model, variables, class_names, step)

    def serving_fn(self, model, config, height, width):
        return make_serving_fn(model, int(config.eval.size_divisor))

    def serving_outputs(self, model, config, batch, height, width, num_classes):
        return serving_outputs(batch, height, width, num_classes)
