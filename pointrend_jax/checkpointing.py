"""Orbax checkpoints of a run: the train state and the input pipeline's position, saved
together in one step (`WORKDIR/checkpoints/STEP/{state,data}`), asynchronously, by every
process.

Restoring takes a target state that carries the *current* shardings, so a checkpoint
written on one device or process count restores onto another. `restore_latest_good` skips
a torn or corrupt latest checkpoint (moving it to `WORKDIR/checkpoints_corrupt/`) and
refuses, with the first mismatching parameter named, a checkpoint of another model.
"""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, Optional, Tuple

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint of a differently shaped model or optimizer."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _shapes(tree) -> Dict[Tuple[str, ...], Tuple[Tuple[int, ...], str]]:
    """`{path: (shape, dtype)}` of a nested dict of arrays or array metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        key = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
    return out


class Checkpointer:
    """An Orbax CheckpointManager for one workdir."""

    def __init__(self, workdir: str, *, max_to_keep: Optional[int] = 3, read_only: bool = False):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=not read_only)
        self.workdir = os.path.abspath(workdir)
        self.directory = checkpoint_dir(workdir)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data"),
            item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self):
        return self.manager.all_steps()

    def save(self, step: int, state, data_position: Optional[dict] = None, *,
             force: bool = False) -> bool:
        """Starts an async save of `state` and the input position (a JSON dict) at `step`."""
        items = {"state": ocp.args.PyTreeSave(state)}
        if data_position is not None:
            items["data"] = ocp.args.JsonSave(data_position)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def check_compatible(self, step: int, target) -> None:
        """Raises IncompatibleCheckpointError unless checkpoint `step` holds arrays of the
        same names and shapes as `target` (a TrainState-like pytree)."""
        saved = self.manager.item_metadata(step)["state"]
        if saved is None:
            raise RuntimeError(f"no readable metadata for step {step}")
        saved = saved.tree if hasattr(saved, "tree") else saved
        target = flax.serialization.to_state_dict(target)
        for part in ("params", "batch_stats"):
            have, want = _shapes(saved.get(part, {})), _shapes(target.get(part, {}))
            for path in sorted(set(have) | set(want)):
                if have.get(path) != want.get(path):
                    name = "/".join((part,) + path)
                    raise IncompatibleCheckpointError(
                        f"{self.directory}/{step} was written by a different model: {name} is "
                        f"{_describe(have.get(path))} there but {_describe(want.get(path))} in "
                        "this config. Use a new --workdir, or the config that trained it "
                        f"({os.path.join(self.workdir, 'config.json')}).")
        have = sorted(_shapes(saved.get("opt_state", {})).values())
        want = sorted(_shapes(target.get("opt_state", {})).values())
        if have != want:
            raise IncompatibleCheckpointError(
                f"{self.directory}/{step} holds the state of a different optimizer "
                f"({len(have)} arrays, this config's has {len(want)}); use a new --workdir or "
                "the optimizer settings it was trained with.")

    def restore(self, step: Optional[int], target, *, partial: bool = False
                ) -> Tuple[Any, Optional[dict]]:
        """`(state, data_position)` saved at `step` (None: the latest), placed as `target`
        says (arrays or `jax.ShapeDtypeStruct`s with shardings). With `partial`, `target`
        is a dict naming only the parts of the state to read (e.g. params for inference)."""
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved steps: "
                f"{list(self.all_steps())}")
        items = {"state": ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=partial)}
        if not partial:
            items["data"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], (None if partial else restored["data"])

    def restore_latest_good(self, target) -> Optional[Tuple[Any, Optional[dict], int]]:
        """The newest checkpoint that restores: `(state, data_position, step)`, or None when
        there is none. Unreadable ones are moved aside with a warning naming their step."""
        for step in sorted(self.all_steps(), reverse=True):
            try:
                self.check_compatible(step, target)
                state, data = self.restore(step, target)
                return state, data, step
            except IncompatibleCheckpointError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure to read means a bad checkpoint
                moved = self._quarantine(step)
                logging.warning("checkpoint step %d in %s is unreadable (%s: %s); moved it to %s "
                                "and resuming from the previous checkpoint", step, self.directory,
                                type(error).__name__, str(error)[:300], moved)
                print(f"WARNING: checkpoint step {step} is unreadable ({type(error).__name__}); "
                      f"moved to {moved}, resuming from the previous checkpoint", flush=True)
        return None

    def _quarantine(self, step: int) -> str:
        target = os.path.join(self.workdir, "checkpoints_corrupt", f"{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
        self.manager.reload()
        return target

    def reached_preemption(self, step: int) -> bool:
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _describe(entry) -> str:
    return "absent" if entry is None else f"{entry[1]}{list(entry[0])}"


def abstract_like(tree, sharding) -> Any:
    """`jax.ShapeDtypeStruct`s of `tree` placed with `sharding` (one for all leaves)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
