"""Orbax checkpoints of a run: the train state and the input pipeline's position, saved
together in one step (`WORKDIR/checkpoints/STEP/{state,data}`), asynchronously.

Restoring takes an abstract state that carries the *current* shardings, so a checkpoint
written on one device count restores onto another.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    """An Orbax CheckpointManager for one workdir."""

    def __init__(self, workdir: str, *, max_to_keep: Optional[int] = 3, read_only: bool = False):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=not read_only)
        self.directory = checkpoint_dir(workdir)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self):
        return self.manager.all_steps()

    def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
        """Starts an async save of `state` (and the iterator position) at `step`."""
        items = {"state": ocp.args.PyTreeSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: Optional[int], abstract_state, data_iterator=None, *,
                partial: bool = False) -> Any:
        """The state saved at `step` (None: the latest), placed as `abstract_state` says
        (a pytree of arrays or `jax.ShapeDtypeStruct`s with shardings); also rewinds
        `data_iterator`. With `partial`, `abstract_state` is a dict naming only the parts
        of the state to read (e.g. params and batch stats for inference)."""
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved steps: "
                f"{list(self.all_steps())}")
        items = {"state": ocp.args.PyTreeRestore(
            item=abstract_state,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
            partial_restore=partial)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree, sharding) -> Any:
    """`jax.ShapeDtypeStruct`s of `tree` placed with `sharding` (one for all leaves)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
