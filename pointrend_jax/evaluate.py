"""`evaluate(config, workdir)`: the evaluation of the task `config` names (`eval.py` is its
command line). `workdir` is a local folder or a bucket path."""
from __future__ import annotations

from pointrend_jax.tasks import validated_task


def evaluate(config, workdir) -> dict:
    """Evaluates the run in `workdir`; returns what it writes to `eval/metrics.json`."""
    return validated_task(config).evaluate(config, workdir)
