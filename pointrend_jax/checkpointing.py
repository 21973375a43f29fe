"""Orbax checkpoints of a run: the train state and the input pipeline's position, saved
together in one step (`WORKDIR/checkpoints/STEP/{state,data}`), asynchronously, by every
process. Every path goes through etils.epath, so a workdir may be local or in a bucket.

Restoring takes a target state that carries the *current* shardings, so a checkpoint
written on one device or process count restores onto another. `restore_latest_good` moves
a torn latest checkpoint to `WORKDIR/checkpoints_corrupt/` and restores the one before. A
checkpoint counts as torn only on evidence in its files (`Checkpointer.torn_reason`); any
other failure to read it (a storage error, out of memory, ...) raises and moves nothing. On
several processes process 0 inspects and decides, and every process follows. A checkpoint
of another model is refused with the first mismatching parameter named.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
import fsspec
from absl import logging
from etils import epath

from pointrend_jax import distributed

# A run directory in a bucket is written by other processes too (every host of a run, a
# rerun, the training run a notebook's load() reads): listings are never answered from
# gcsfs's per-process cache, which would hide checkpoints written since.
fsspec.config.conf.setdefault("gs", {})["use_listings_cache"] = False

# Files Orbax (0.12.8, pinned) writes into every finished step, and into each item of it.
COMMIT_MARKER = ocp.path.atomicity_types.COMMIT_SUCCESS_FILE
STEP_METADATA = "_CHECKPOINT_METADATA"
PYTREE_METADATA = ocp.path.format_utils.PYTREE_METADATA_FILE
JSON_ITEM_FILE = "metadata"  # what JsonCheckpointHandler writes


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint of a differently shaped model or optimizer."""


def workdir_path(workdir) -> epath.Path:
    """`workdir` as an epath: a URL (gs://...) as given, a local path made absolute."""
    workdir = os.fspath(workdir)
    return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def checkpoint_dir(workdir) -> epath.Path:
    return workdir_path(workdir) / "checkpoints"


def _shapes(tree) -> Dict[Tuple[str, ...], Tuple[Tuple[int, ...], str]]:
    """`{path: (shape, dtype)}` of a nested dict of arrays or array metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        key = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
    return out


class _Torn(Exception):
    """Evidence, found in a checkpoint's files, that the checkpoint is incomplete."""


def _require(path: epath.Path) -> None:
    if not path.exists():
        raise _Torn(f"{path} is missing")


def _read_json(path: epath.Path) -> dict:
    """The JSON object in `path`; _Torn when it is missing or does not parse. (An error of
    the storage while reading propagates: it is no evidence about the file.)"""
    _require(path)
    data = path.read_bytes()
    try:
        value = json.loads(data)
    except ValueError as error:  # also a UnicodeDecodeError
        raise _Torn(f"{path} does not parse ({error})") from None
    if not isinstance(value, dict):
        raise _Torn(f"{path} does not parse (a JSON {type(value).__name__}, not an object)")
    return value


def _check_pytree_item(item: epath.Path) -> None:
    """The PyTree item's metadata parses and its OCDBT array store is complete."""
    metadata = _read_json(item / PYTREE_METADATA)
    if not isinstance(metadata.get("tree_metadata"), dict):
        raise _Torn(f"{item / PYTREE_METADATA} has no tree_metadata")
    for extra in (item / "_sharding", *(item / "array_metadatas").glob("*")):
        if extra.exists():
            _read_json(extra)
    if metadata.get("use_ocdbt"):
        _check_ocdbt(item)


def _check_ocdbt(root: epath.Path) -> None:
    """Every b-tree node and array value that the OCDBT manifest under `root` leads to lies
    in a file that exists and is long enough, and every manifest and node parses.

    The bytes are read through epath and parsed from memory, so a parse error is about the
    bytes themselves, never about the storage."""
    memory = ts.KvStore.open({"driver": "memory"}).result()
    manifest = root / "manifest.ocdbt"
    _require(manifest)
    memory.write("manifest.ocdbt", manifest.read_bytes()).result()
    try:
        versions = ts.ocdbt.dump(memory).result()["versions"]
    except ValueError as error:
        raise _Torn(f"{manifest} does not parse ({error})") from None
    root_node = versions[-1]["root"].get("location") if versions else None
    pending = [root_node] if root_node else []
    sizes: Dict[str, int] = {}
    while pending:
        # "btreenode:BASE:FILE:OFFSET:LENGTH" or "value:BASE:FILE:OFFSET:LENGTH"
        kind, base, name, offset, length = pending.pop().split(":")
        path, offset, length = root / base / name, int(offset), int(length)
        if str(path) not in sizes:
            _require(path)
            sizes[str(path)] = path.stat().length
        if sizes[str(path)] < offset + length:
            raise _Torn(f"{path} is {sizes[str(path)]} bytes, shorter than the "
                        f"{offset + length} that the OCDBT index of {root} says")
        if kind != "btreenode":
            continue
        with path.open("rb") as f:
            f.seek(offset)
            memory.write("node", f.read(length)).result()
        try:
            node = ts.ocdbt.dump(memory, f"btreenode::node:0:{length}").result()
        except ValueError as error:
            raise _Torn(f"{path} holds a b-tree node that does not parse ({error})") from None
        # An inner node's entries locate its children; a leaf's hold or locate the values.
        pending += [e.get("location") or e["indirect_value"] for e in node["entries"]
                    if "location" in e or "indirect_value" in e]


_ITEM_CHECKS = {"state": _check_pytree_item,
                "data": lambda item: _read_json(item / JSON_ITEM_FILE)}


class Checkpointer:
    """An Orbax CheckpointManager for one workdir; every process must create it."""

    def __init__(self, workdir, *, max_to_keep: Optional[int] = 3, read_only: bool = False):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=not read_only)
        self.workdir = workdir_path(workdir)
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

    def torn_reason(self, step: int) -> Optional[str]:
        """Why checkpoint `step` is torn, naming the file, or None when its files show no
        damage: the step and each of its items carry Orbax's commit marker, every metadata
        file parses, and every array file the index names exists and is long enough.

        A storage error while looking (OSError, a timeout, ...) propagates: it is no
        evidence about the checkpoint."""
        step_dir = self.directory / str(step)
        try:
            _require(step_dir)
            _require(step_dir / COMMIT_MARKER)
            items = _read_json(step_dir / STEP_METADATA).get("item_handlers")
            if not isinstance(items, dict) or not items:
                raise _Torn(f"{step_dir / STEP_METADATA} names no items")
            for name in items:
                item = step_dir / name
                _require(item / COMMIT_MARKER)
                if name in _ITEM_CHECKS:
                    _ITEM_CHECKS[name](item)
        except _Torn as torn:
            return str(torn)
        return None

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
                        f"({self.workdir / 'config.json'}).")
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
        """`(state, data_position, step)` of the newest checkpoint that is not torn, or None
        when there is none. Torn ones are moved aside, with a warning naming their step and
        why. Every process must call it; process 0 decides which checkpoints are torn.

        Anything else that goes wrong raises and leaves the checkpoints in place: a failed
        read of a checkpoint whose files are complete (a storage error, out of memory) or a
        checkpoint of another model (IncompatibleCheckpointError)."""
        while True:
            step, reason = distributed.process_0_decides(self._newest_and_why_torn,
                                                         "inspecting the latest checkpoint")
            if step is None:
                return None
            if reason is None:
                break
            moved = distributed.process_0_decides(lambda: str(self._move_aside(step)),
                                                  f"moving torn checkpoint {step} aside")
            self.manager.reload()
            logging.warning("checkpoint step %d in %s is torn (%s); moved it to %s and trying "
                            "the previous checkpoint", step, self.directory, reason, moved)
            if jax.process_index() == 0:
                print(f"WARNING: checkpoint step {step} is torn: {reason}; moved it to "
                      f"{moved}, trying the previous checkpoint", flush=True)
        self.check_compatible(step, target)
        try:
            state, data = self.restore(step, target)
        except Exception as error:
            error.add_note(f"Restoring checkpoint {self.directory / str(step)} failed, but its "
                           "files look complete, so it was left in place.")
            raise
        return state, data, step

    def _newest_and_why_torn(self) -> List:
        """`[newest step or None, why it is torn or None]`."""
        steps = self.all_steps()
        if not steps:
            return [None, None]
        step = max(steps)
        return [step, self.torn_reason(step)]

    def _move_aside(self, step: int) -> epath.Path:
        target = self.workdir / "checkpoints_corrupt" / f"{step}-{int(time.time())}"
        target.parent.mkdir(parents=True, exist_ok=True)
        return (self.directory / str(step)).rename(target)

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
