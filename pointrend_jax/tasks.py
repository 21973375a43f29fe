"""The task registry: `config.task` -> the `Task` that serves it.

A new task is one folder (`pointrend_jax/<name>/` with a `Task` subclass) and one line here.
"""
from __future__ import annotations

from typing import Dict

from pointrend_jax.config import flat_keys
from pointrend_jax.instance import InstanceTask
from pointrend_jax.semantic import SemanticTask
from pointrend_jax.task import Task

TASKS: Dict[str, Task] = {task.name: task for task in (SemanticTask(), InstanceTask())}


def get_task(config_or_name) -> Task:
    """The task of a config (`config.task`; configs saved before instance models existed
    are semantic) or of a task name."""
    name = (config_or_name if isinstance(config_or_name, str)
            else config_or_name.get("task", "semantic"))
    if name not in TASKS:
        raise ValueError(f"--config.task={name!r} is not one of {sorted(TASKS)}")
    return TASKS[name]


def validated_task(config) -> Task:
    """The task of `config`, after refusing keys it does not read (a config built from
    another task's keys, or an old config.json) and the task's own checks."""
    task = get_task(config)
    for key, _ in flat_keys(config):
        if not task.reads_key(key):
            raise ValueError(unread_key_hint(key, task.name))
    task.validate(config)
    return task


def unread_key_hint(key: str, task_name: str) -> str:
    """Why `--config.<key>` does not exist in a `task_name` config, and what to use instead."""
    readers = [name for name, task in TASKS.items()
               if name != task_name and task.reads_key(key)]
    hint = TASKS[task_name].replacements.get(key) if task_name in TASKS else None
    where = (f"it is read by {' and '.join(readers)} configs only" if readers
             else "no task reads it")
    return (f"--config.{key}: {task_name} configs have no such key ({where})"
            + (f"; {hint}" if hint else ""))
