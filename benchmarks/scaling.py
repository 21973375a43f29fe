"""What the compiled train step costs per device on 1, 8 and 64 devices, data parallel vs
fully sharded (fsdp): FLOPs and bytes accessed (XLA's cost analysis), bytes sent through
collectives (summed from the compiled HLO), and memory (XLA's memory analysis).

    python benchmarks/scaling.py [--devices 1 8 64] [--small]

Model: SemanticFPN on ResNet-101 with PointRend (2048 train points), crops of 512x1024, one
image per device, SGD with momentum; devices are simulated CPU devices (XLA_FLAGS), each
count in its own process. Nothing is executed: the step is only lowered and compiled, so the
numbers are XLA's static analysis of the per-device program. `--small` uses ResNet-18 at
256x512 for a quick run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "u8": 1, "s8": 1, "pred": 1,
                "f64": 8, "s64": 8, "u64": 8}


def collective_bytes(hlo_text: str) -> int:
    """Bytes produced by collective ops in an HLO module (per device)."""
    total = 0
    hlo_text = re.sub(r"/\*.*?\*/", "", hlo_text)  # tuple shapes carry /*index=N*/ comments
    pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for match in pattern.finditer(hlo_text):
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
            if dtype in _DTYPE_BYTES:
                size = 1
                for d in filter(None, dims.split(",")):
                    size *= int(d)
                total += size * _DTYPE_BYTES[dtype]
    return total


def measure(fsdp: bool, small: bool) -> dict:
    """Compiles the train step on this process's devices; returns per-device numbers."""
    import jax
    import jax.numpy as jnp

    from pointrend_jax.models.layers import init_variables
    from pointrend_jax.semantic.config import semantic_config
    from pointrend_jax.tasks import validated_task
    from pointrend_jax.train import optimizer as optimizer_lib
    from pointrend_jax.train import state as state_lib
    from pointrend_jax.train.step import make_train_step

    c = semantic_config()
    c.model.backbone.depth = 18 if small else 101
    c.model.backbone.width = 16 if small else 64
    crop = (256, 512) if small else (512, 1024)
    c.augment.crop_size = crop
    c.mesh.fsdp = -1 if fsdp else 1
    devices = jax.device_count()
    task = validated_task(c)
    model = task.build_model(c, 19)
    tx, schedule = optimizer_lib.make_optimizer(c.optimizer, 1000)
    mesh = state_lib.make_mesh(c.mesh)

    def init(rng):
        variables = init_variables(model, rng, crop)
        return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                                    batch_stats=variables["batch_stats"],
                                    opt_state=tx.init(variables["params"]))

    shapes = jax.eval_shape(init, jax.random.key(0))
    shardings = state_lib.state_shardings(shapes, mesh, c.mesh)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                         shapes, shardings)
    batch_sh = state_lib.batch_sharding(mesh)
    batch = {"image": jax.ShapeDtypeStruct((devices, *crop, 3), jnp.uint8, sharding=batch_sh),
             "label": jax.ShapeDtypeStruct((devices, *crop), jnp.uint8, sharding=batch_sh)}
    step = jax.jit(make_train_step(task.loss_fn(model, c), tx, schedule),
                   in_shardings=(shardings, batch_sh, state_lib.replicated(mesh)),
                   out_shardings=(shardings, state_lib.replicated(mesh)), donate_argnums=(0,))
    compiled = step.lower(state, batch, jax.random.key(0)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    params = sum(x.size for x in jax.tree.leaves(shapes.params))
    return {"devices": devices, "mode": "fsdp" if fsdp else "data parallel",
            "params": params, "gflops": cost.get("flops", 0.0) / 1e9,
            "gbytes_accessed": cost.get("bytes accessed", 0.0) / 1e9,
            "collective_mib": collective_bytes(compiled.as_text()) / 2**20,
            "argument_mib": memory.argument_size_in_bytes / 2**20,
            "temp_mib": memory.temp_size_in_bytes / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "fsdp", args.small)))
        return
    rows = []
    for devices in args.devices:
        for mode in ("dp", "fsdp"):
            if devices == 1 and mode == "fsdp":
                continue
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
            cmd = [sys.executable, __file__, "--child", mode] + (["--small"] if args.small else [])
            out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"Model: {'ResNet-18 w16 at 256x512' if args.small else 'SemanticFPN-R101 at 512x1024'}"
          f" + PointRend, {rows[0]['params'] / 1e6:.1f}M params, 1 image per device, SGD momentum")
    print("| devices | mode | GFLOP / device | GB accessed / device | collectives MiB / device "
          "| params+state MiB / device | temp MiB / device |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']} | {r['mode']} | {r['gflops']:.1f} | {r['gbytes_accessed']:.1f} | "
              f"{r['collective_mib']:.1f} | {r['argument_mib']:.1f} | {r['temp_mib']:.1f} |")


if __name__ == "__main__":
    main()
