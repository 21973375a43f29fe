"""The seam between the shared machinery and a task (semantic, instance, ...).

A `Task` owns everything that differs between tasks: its config keys and their checks, the
model, the training transform, the loss computed from the model's outputs and the batch,
the example pictures, the evaluation, the predictor and the serving function. The train
loop, the metric writer, `eval.py`, `load()` and export ask the task returned by
`pointrend_jax.tasks.get_task(config)` and never look at the model's type.

Shapes: N images, H x W image, K classes.
"""
from __future__ import annotations

import abc
import functools
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from pointrend_jax.config import flat_keys

# (variables, batch, rngs) -> (total loss, {name: scalar}, updated batch_stats)
LossFn = Callable[[Mapping[str, Any], Mapping[str, jax.Array], Mapping[str, jax.Array]],
                  Tuple[jax.Array, Dict[str, jax.Array], Any]]


class Task(abc.ABC):
    """One task's answers to the shared machinery's questions."""

    name: str  # the value of `config.task`
    # keys of other tasks' configs that users reach for -> what to use instead, in words
    replacements: Mapping[str, str] = {}

    @functools.cached_property
    def config_keys(self) -> frozenset:
        """Every leaf key ("a.b.c") of `default_config()`."""
        return frozenset(name for name, _ in flat_keys(self.default_config()))

    def reads_key(self, key: str) -> bool:
        """Whether `key` ("a.b.c") is one of this task's config keys or groups of keys."""
        return key in self.config_keys or any(k.startswith(key + ".") for k in self.config_keys)

    @abc.abstractmethod
    def default_config(self) -> ml_collections.ConfigDict:
        """Every key this task reads, with its default (`configs/*.py` start from it)."""

    @abc.abstractmethod
    def validate(self, config: ml_collections.ConfigDict) -> None:
        """Raises ValueError naming the `--config.` key of the first inconsistent setting."""

    @abc.abstractmethod
    def build_datasets(self, data_cfg):
        """`data.DatasetSpec` of `config.data` (a data set this task reads)."""

    @abc.abstractmethod
    def build_model(self, config: ml_collections.ConfigDict, num_classes: int):
        """The linen model `config` describes, for `num_classes` classes."""

    @abc.abstractmethod
    def train_transform(self, config: ml_collections.ConfigDict) -> Callable:
        """A picklable `(example, rng) -> {name: array}` that makes one training example."""

    @abc.abstractmethod
    def loss_fn(self, model, config: ml_collections.ConfigDict) -> LossFn:
        """The training loss of `model`'s outputs on a batch of `train_transform` examples."""

    @abc.abstractmethod
    def example_images(self, model, variables, val_source, config,
                       count: int) -> List[np.ndarray]:
        """Up to `count` uint8 `(h, w, 3)` pictures of predictions on `val_source`."""

    @abc.abstractmethod
    def evaluate(self, config: ml_collections.ConfigDict, workdir: str) -> dict:
        """Evaluates the run in `workdir`; returns what it writes to `eval/metrics.json`."""

    @abc.abstractmethod
    def predictor(self, config: ml_collections.ConfigDict, model, variables,
                  class_names: Sequence[str], step: int):
        """An object whose `predict(image uint8 (H, W, 3))` gives this task's prediction."""

    @abc.abstractmethod
    def serving_fn(self, model, config: ml_collections.ConfigDict, height: int,
                   width: int) -> Callable:
        """`serve(variables, images uint8 (N, height, width, 3)) -> outputs`, traceable with a
        symbolic N: what `predictor(...).predict` computes, for export."""

    @abc.abstractmethod
    def serving_outputs(self, model, config: ml_collections.ConfigDict, batch, height: int,
                        width: int, num_classes: int) -> Dict[str, dict]:
        """`{name: {"shape": [...], "dtype": str}}` of `serving_fn`'s outputs."""
