"""`load(workdir)`: a trained run, ready to predict in a notebook or a service.

    predictor = pointrend_jax.load("runs/synthetic_multiclass")  # or "gs://bucket/run"
    prediction = predictor.predict(image)  # uint8 (H, W, 3)

The task the run trained (`config.json`) makes the predictor: semantic runs give class ids
`(H, W)`, instance runs detections (see `semantic.predictor`, `instance.predictor`).
"""
from __future__ import annotations

from typing import Optional

from pointrend_jax.tasks import get_task
from pointrend_jax.workdir import read_run, restore_variables


def load(workdir, step: Optional[int] = None):
    """The model trained in `workdir` at checkpoint `step` (None: latest), ready to predict."""
    config, class_names = read_run(workdir)
    task = get_task(config)
    model = task.build_model(config, len(class_names))
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size), step)
    return task.predictor(config, model, variables, class_names, step)
