"""Config keys are documented and real: every key of each task's default config has a
one-line comment where it is defined, every `--config.key` the README, docs and config files
mention exists, and a key of one task is refused in the other's config with a hint."""
import os
import re
import subprocess
import sys

import pytest

from pointrend_jax.config import flat_keys
from pointrend_jax.tasks import TASKS, unread_key_hint, validated_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_SOURCES = ["pointrend_jax/config.py", "pointrend_jax/semantic/config.py",
                  "pointrend_jax/instance/config.py"]
ASSIGNMENT = re.compile(r"^\s*c\.([\w.]+) = ")


def _commented_keys():
    """Keys assigned in the config sources with a comment on the line or the line above."""
    commented = set()
    for path in CONFIG_SOURCES:
        lines = open(os.path.join(ROOT, path)).read().splitlines()
        for i, line in enumerate(lines):
            match = ASSIGNMENT.match(line)
            if match and ("  # " in line or (i and lines[i - 1].strip().startswith("#"))):
                commented.add(match.group(1))
    return commented


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_default_key_has_a_comment_where_it_is_defined(task):
    keys = [k for k, _ in flat_keys(TASKS[task].default_config())]
    assert len(keys) > 50
    missing = sorted(set(keys) - _commented_keys())
    assert not missing, f"{task} config keys without a one-line comment: {missing}"


def _mentioned_keys():
    """`--config.KEY` written out in full (followed by `=`, a space or a backtick) in the
    README, docs/ and configs/."""
    files = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "train.py"),
             os.path.join(ROOT, "eval.py")]
    for folder in ("docs", "configs"):
        files += [os.path.join(ROOT, folder, f) for f in os.listdir(os.path.join(ROOT, folder))]
    mentioned = {}
    for path in files:
        for key in re.findall(r"--config\.([a-z_][\w.]*[a-z0-9_])(?=[=\s`'\"),])",
                              open(path).read()):
            mentioned.setdefault(key, os.path.relpath(path, ROOT))
    mentioned.pop("key", None)  # the placeholder of "--config.key=value"
    return mentioned


def test_every_documented_key_exists():
    known = set()
    for task in TASKS.values():
        known |= {k for k, _ in flat_keys(task.default_config())}
    mentioned = _mentioned_keys()
    assert "model.mask_head" in mentioned and "pointrend.enabled" in mentioned
    unknown = {k: where for k, where in mentioned.items() if k not in known}
    assert not unknown, f"documented keys no config has: {unknown}"


def test_a_key_of_the_other_task_is_refused_with_what_to_use_instead():
    instance = TASKS["instance"].default_config()
    instance.pointrend.enabled = False  # a semantic key, added by hand
    with pytest.raises(ValueError, match=r"pointrend\.enabled.*semantic.*"
                                         r"--config\.model\.mask_head=maskrcnn"):
        validated_task(instance)
    semantic = TASKS["semantic"].default_config()
    semantic.loss.mask_weight = 2.0
    with pytest.raises(ValueError, match=r"loss\.mask_weight.*instance.*loss\.pixel_weight"):
        validated_task(semantic)
    assert "no task reads it" in unread_key_hint("model.nonexistent", "semantic")


@pytest.mark.slow
def test_command_line_override_of_another_tasks_key_names_the_key(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"),
         f"--config={ROOT}/configs/synthetic_instances.py:runlocal", f"--workdir={tmp_path}/run",
         "--config.pointrend.enabled=False"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--config.pointrend.enabled: instance configs have no such key" in result.stderr
    assert "--config.model.mask_head=maskrcnn" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")
