"""One process of a multi-process Checkpointer test (tests/test_checkpointing.py):

    python checkpoint_worker.py WORKDIR ACTION [--coordinator_address=... --num_processes=N
        --process_id=I]

ACTION is `save` (steps 1 and 2 of `state(step)`), `restore` (restore_latest_good; prints
`restored STEP SUM`), or `restore` with something injected: `only_0_sees_2_torn` (process
0's inspection calls the complete step 2 torn), `inspect_fails_on_0` (an OSError while
process 0 inspects) or `restore_fails_on_1` (a TimeoutError in process 1's read). Each
process runs through `distributed.run`, as train.py does.
"""
import sys

import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pointrend_jax import checkpointing, distributed


def state(step: int, sharding) -> dict:
    """A small state whose values depend on `step`; `w` is big enough to be stored apart
    from the OCDBT index (over 1 KiB)."""
    host = {"params": {"w": np.arange(64 * 64, dtype=np.float32).reshape(64, 64) * step,
                       "b": np.full(3, step, np.float32)},
            "step": np.int32(step)}
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), host)


def main(workdir: str, action: str) -> None:
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), PartitionSpec())
    ckpt = checkpointing.Checkpointer(workdir)
    if action == "save":
        for step in (1, 2):
            ckpt.save(step, state(step, sharding), {"batches_consumed": step})
    else:
        if action == "only_0_sees_2_torn" and jax.process_index() == 0:
            real = ckpt.torn_reason
            ckpt.torn_reason = lambda step: "seen by process 0 only" if step == 2 else real(step)
        if action == "inspect_fails_on_0" and jax.process_index() == 0:
            def inspect(step):
                raise OSError(5, "Input/output error (injected)", str(ckpt.directory / str(step)))

            ckpt.torn_reason = inspect
        if action == "restore_fails_on_1" and jax.process_index() == 1:
            def read(*args, **kwargs):
                raise TimeoutError("reading the checkpoint timed out (injected)")

            ckpt.manager.restore = read
        restored, _, step = ckpt.restore_latest_good(state(0, sharding))
        total = float(np.asarray(restored["params"]["w"].addressable_data(0)).sum())
        print(f"restored {step} {total}", flush=True)
    ckpt.wait()
    ckpt.close()


if __name__ == "__main__":
    args = flags.FLAGS(sys.argv)[1:]
    distributed.initialize_from_flags()
    distributed.run(main, *args)
