"""What train.py and eval.py share on the command line: `--config FILE[:ARG]` with
`--config.key=value` overrides, `--workdir` (a local folder or a bucket path such as
`gs://bucket/run`), the multi-process flags of `distributed`, and a clear error for an
override of a key the config's task does not have.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from pointrend_jax import distributed
from pointrend_jax.config import load_config
from pointrend_jax.tasks import get_task, unread_key_hint

CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                         lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (local or gs://...).")
flags.mark_flags_as_required(["config", "workdir"])


def _missing_override(argv: Sequence[str]):
    """`(key, task name)` of the first `--config.key=value` whose key the config lacks."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_arg is None:
        return None
    config = load_config(config_arg)
    for arg in argv:
        if not arg.startswith("--config.") or "=" not in arg:
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                return key, config.get("task", "semantic")
            node = node[part]
    return None


def parse_flags(argv: Sequence[str]):
    """absl's flag parsing, with an override of a key the config does not have reported as
    the key, the task whose key it is and what to use instead."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError) as error:
        missing = _missing_override(argv[1:])
        message = unread_key_hint(*missing) if missing else str(error)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def run(command: Callable) -> None:
    """`app.run` of `command(config, workdir)` after starting the processes of a run."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
        get_task(CONFIG.value)  # an unknown config.task fails before processes connect
        distributed.initialize_from_flags()
        distributed.run(command, CONFIG.value, WORKDIR.value)

    app.run(main, flags_parser=parse_flags)
