"""Where a compiled XLA program's time goes: a `jax.profiler` trace of a few calls, each
executed HLO op's time summed into categories read from the op's HLO metadata.

    rows, total_ms = profile_by_category(compiled, call, calls=2)
    ops = op_rows(compiled, call, calls=2)   # each op, longest first

    python benchmarks/step_profile.py [--top 25] [--batch 2] [--no-pointrend]

run as a script, it profiles the SemanticFPN-R50 + PointRend train step of
`versus_torch.py` (detectron2's recipe shapes, a 512x1024 crop) on its own and prints the
category table and the `--top` longest ops with their category, opcode, output shape and
JAX op name.

`compiled` is a `jax.stages.Compiled` (its HLO text names every instruction with its
opcode and the JAX `op_name` path that made it); `call()` runs it once and blocks. The
trace's XLA:CPU thunk events carry the instruction's name (`hlo_op`), so each event is
matched to its instruction and put into the first category whose rule matches:

  optimizer and bookkeeping  ops outside the model's forward and backward pass
  point selection            the `point_selection` scope (uncertainty, top-k, gathers)
  point sampling             the `point_sample` scope (bilinear gathers; backward scatters)
  point head                 the `point_head` module (its MLP, forward and backward)
  convolutions fwd / bwd     `convolution` instructions (bwd: under `transpose(...)`), and
                             the `conv_kernel_grad` scope (kernel gradients as matmuls)
  norms                      ops of BatchNorm / GroupNorm / FrozenBN modules (`bn`, `norm`)
  other forward / backward   the rest (activations, resizes, losses)
  layout copies              instructions XLA made without a source op (transposes, reversals)

Times are summed per event over the threads that run thunks, so when XLA runs independent
thunks at once their sum can exceed the wall time; shares are of that sum.
"""
from __future__ import annotations

import collections
import glob
import re
import tempfile
from typing import Callable

import jax

# `%name = type opcode(...` with an optional `ROOT` and `%`; a tuple type has no `word(`.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_NORM_MODULE = re.compile(r"(?:^|_)(?:bn\d*|norm\d*)$")  # bn1, downsample_bn, p2_0_norm

_CONTROL_FLOW = ("while", "conditional", "call")

CATEGORIES = ("convolutions forward", "convolutions backward", "norms", "point sampling",
              "point selection", "point head", "optimizer and bookkeeping", "other forward",
              "other backward", "layout copies")


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Every instruction of an HLO module's text -> `(opcode, op_name)`.

    A fusion counts as a `convolution` when its fused computation holds one, and takes the
    first `op_name` found inside when it has none of its own; "" when nothing names it.
    """
    computations: dict[str, list[tuple[str, str, str, str]]] = collections.defaultdict(list)
    current = None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(1)
            continue
        if line.startswith("}"):
            current = None
            continue
        match = _INSTRUCTION.match(line)
        if match and current is not None:
            op_name = _OP_NAME.search(line)
            called = _CALLS.search(line)
            computations[current].append((match.group(1), match.group(3),
                                          op_name.group(1) if op_name else "",
                                          called.group(1) if called else ""))
    out = {}
    for body in computations.values():
        for name, opcode, op_name, called in body:
            inner = computations.get(called, [])
            if any(op == "convolution" for _, op, _, _ in inner):
                opcode = "convolution"
            if not op_name:
                op_name = next((n for _, _, n, _ in inner if n), "")
            out[name] = (opcode, op_name)
    return out


def category(opcode: str, op_name: str) -> str:
    """The category (one of CATEGORIES) of an instruction from its opcode and op_name.

    XLA writes weight-gradient convolutions without metadata (forward and input-gradient
    ones keep theirs), so a convolution without an op_name is counted as backward; other
    instructions without one are layout copies XLA made (kernel reversals, transposes)."""
    if not op_name:
        return "convolutions backward" if opcode == "convolution" else "layout copies"
    backward = "transpose(" in op_name
    if not (backward or "jvp(" in op_name):
        return "optimizer and bookkeeping"
    if "point_selection" in op_name:
        return "point selection"
    if "point_sample" in op_name:
        return "point sampling"
    if "/point_head/" in op_name:
        return "point head"
    if opcode == "convolution":
        return "convolutions backward" if backward else "convolutions forward"
    if "conv_kernel_grad" in op_name:  # models/conv_grad.py: kernel gradients as matmuls
        return "convolutions backward"
    if any(_NORM_MODULE.search(part) for part in op_name.split("/")):
        return "norms"
    return "other backward" if backward else "other forward"


def op_times(call: Callable[[], object], calls: int) -> dict[str, float]:
    """Runs `call` `calls` times under `jax.profiler.trace` -> {hlo op name: total ns}."""
    with tempfile.TemporaryDirectory(prefix="step_profile_") as logdir:
        with jax.profiler.trace(logdir):
            for _ in range(calls):
                call()
        paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        if not paths:
            raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {logdir}")
        data = jax.profiler.ProfileData.from_file(paths[0])
    totals = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" in stats:
                    totals[str(stats["hlo_op"])] += float(event.duration_ns)
    return totals


def op_rows(compiled, call: Callable[[], object], calls: int = 2):
    """-> every traced op as `(ms per call, hlo name, category, opcode, op_name)`, longest
    first; ops of other programs have the category "not in this program". Control flow
    (`while`, `conditional`, `call`) is left out: its event spans the ops of its body, which
    the trace holds as events of their own."""
    instructions = hlo_instructions(compiled.as_text())
    rows = []
    for name, ns in op_times(call, calls).items():
        if name in instructions:
            opcode, op_name = instructions[name]
            if opcode in _CONTROL_FLOW:
                continue
            rows.append((ns / calls / 1e6, name, category(opcode, op_name), opcode, op_name))
        else:
            rows.append((ns / calls / 1e6, name, "not in this program", "", ""))
    if not rows or sum(r[0] for r in rows) == 0:
        raise RuntimeError("the trace holds no XLA op events: was `call` run on this backend?")
    return sorted(rows, reverse=True)


def by_category(ops):
    """`op_rows`' rows -> (rows, total ms per call): rows `(category, ms per call, share)` in
    CATEGORIES order, plus `("not in this program", ms, share)` if any."""
    sums = collections.defaultdict(float)
    for ms, _, cat, _, _ in ops:
        sums[cat] += ms
    total = sum(sums.values())
    order = [c for c in CATEGORIES + ("not in this program",) if c in sums]
    return [(c, sums[c], sums[c] / total) for c in order], total


def profile_by_category(compiled, call: Callable[[], object], calls: int = 2):
    """-> (rows, total ms per call): rows `(category, ms per call, share)` in CATEGORIES order,
    plus `("not in this program", ms, share)` for traced ops of other programs, if any."""
    return by_category(op_rows(compiled, call, calls))


def markdown(rows, total_ms: float, wall_ms: float | None = None) -> str:
    """The rows as a markdown table (ms per call and share), with the total."""
    lines = ["| category | ms per step | share |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.1f} | {share:.1%} |" for name, ms, share in rows]
    wall = f" (wall {wall_ms:.1f} ms)" if wall_ms is not None else ""
    lines.append(f"| total of op times{wall} | {total_ms:.1f} | 100% |")
    return "\n".join(lines)


def output_shapes(hlo_text: str) -> dict[str, str]:
    """Instruction name -> its output type as written in the HLO text (`f32[2,64,128]{...}`)."""
    return {m.group(1): m.group(2) for m in map(_INSTRUCTION.match, hlo_text.splitlines()) if m}


def main():
    import argparse
    import time

    from machine_info import describe
    from pointrend_jax.semantic.config import semantic_config
    from semantic_step import compiled_train_step

    parser = argparse.ArgumentParser(description="Profile the SemanticFPN-R50 + PointRend "
                                                 "train step alone.")
    parser.add_argument("--top", type=int, default=25, help="how many of the longest ops to list")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--no-pointrend", action="store_true")
    args = parser.parse_args()
    c = semantic_config()
    c.augment.crop_size = (512, 1024)
    c.pointrend.enabled = not args.no_pointrend
    _, state, data, compiled, _ = compiled_train_step(c, 19, args.batch)
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled(holder["state"], data, jax.random.key(1))
        jax.block_until_ready(metrics)

    call()
    start = time.perf_counter()
    call()
    wall_ms = 1000 * (time.perf_counter() - start)
    ops = op_rows(compiled, call, calls=2)
    print(describe(f"SemanticFPN-R50{'' if args.no_pointrend else ' + PointRend'} train step, "
                   f"batch {args.batch} of 512x1024, alone"))
    print(markdown(*by_category(ops), wall_ms=wall_ms))
    print()
    shapes = output_shapes(compiled.as_text())
    print(f"| the {args.top} longest ops | ms | category | opcode | output | op_name (last 70) |")
    print("|---|---:|---|---|---|---|")
    for ms, name, cat, opcode, op_name in ops[:args.top]:
        out = shapes.get(name, "").split("{")[0]
        print(f"| {name} | {ms:.1f} | {cat} | {opcode} | {out} | {op_name[-70:]} |")


if __name__ == "__main__":
    main()
