"""Export a trained model for serving without the model code.

    python -m pointrend_jax.export --workdir DIR --out OUT [--step S] [--height H --width W]
        [--batch N|dynamic] [--platforms cpu,cuda] [--no-saved-model]

writes, from checkpoint S of the run in DIR (default: the latest),
- `OUT/model.jax_exported`: a serialized `jax.export.Exported` (StableHLO with the weights
  inside); `jax.export.deserialize(bytes).call(images)` runs it with jax alone,
- `OUT/saved_model/`: a TensorFlow SavedModel (jax2tf, native serialization; weights as TF
  variables) with a `serving_default` signature, for TF Serving,
- `OUT/export.json`: what was exported (step, size, batch, class names, inputs, outputs).

N: images, H x W: the export size, K: classes.

The task the run trained makes the serving function (`Task.serving_fn`). Semantic runs:
both compute `serve(images uint8 (N, H, W, 3)) -> (classes int32 (N, H, W), logits float32
(N, H, W, K))`, exactly what `Predictor.predict` computes: the normalisation (inside the
model), padding to a multiple of `config.eval.size_divisor` (the pixel mean, as detectron2
pads) and cropping back, PointRend's
subdivision logits resized to the image, and their argmax. Pixels are never resampled: H x W
is fixed when exporting (default: the run's `config.augment.crop_size`) and images of another
size are refused with an error naming the expected shape; resize or export at the size you
serve. N is symbolic (`b`, any batch size, one artifact) unless `--batch N` fixes it: the
subdivision's top_k, gathers and scatters all take a batch dimension, so nothing in the model
needs a fixed N.

Instance runs (Mask R-CNN) export the detections instead: `serve(images) -> {"boxes" (N, D, 4),
"scores" (N, D), "classes" (N, D), "valid" (N, D), "masks" (N, D, S, S)}`, each mask its
detection's class probability over its box, to paste into the image on the client
(`instance.serving`; `InstancePredictor.predict` does the same and pastes). A run whose
`augment.test_short_side` would resize images of the export size is refused with the size to
export at instead.

Every file goes through etils.epath: `--workdir` and `--out` may be bucket paths.

Why it is a one-liner here: subdivision has static shapes (a fixed number of points per step,
exact top_k, no boolean indexing), so the whole prediction is one traceable function. The
SavedModel needs two adjustments for the older StableHLO inside TensorFlow's XlaCallModule
(see `_lowering_for_tensorflow`); the jax.export artifact needs none.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax import lax
from jax.sharding import PartitionSpec as P

JAX_EXPORTED = "model.jax_exported"
SAVED_MODEL = "saved_model"
EXPORT_JSON = "export.json"
# The artifact runs on the CPU and on NVIDIA GPUs; one lowering per platform is stored.
DEFAULT_PLATFORMS = ("cpu", "cuda")
TENSORFLOW_PIN = "tensorflow-cpu==2.21.0"  # requirements-dev.txt (tensorflow==2.21.0 on macOS/ARM)

def input_shape(height: int, width: int, batch: Optional[int]) -> Tuple[Any, ...]:
    """`(N, H, W, 3)` with N symbolic (`b`) when `batch` is None."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if batch is None:
        n, = jax.export.symbolic_shape("b")
    elif isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive int or None (dynamic); got {batch!r}")
    else:
        n = int(batch)
    return (n, int(height), int(width), 3)


def export_serving(serve: Callable, variables, *, height: int, width: int,
                   batch: Optional[int] = None,
                   platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
    """`serve(variables, images)` (a `Task.serving_fn`) with `variables` baked in as
    constants, exported for uint8 images `(batch or b, height, width, 3)` on `platforms`."""
    constants = jax.tree.map(np.asarray, variables)  # weights inside the artifact
    spec = jax.ShapeDtypeStruct(input_shape(height, width, batch), jnp.uint8)
    return jax.export.export(jax.jit(lambda images: serve(constants, images)),
                             platforms=tuple(platforms))(spec)


def import_tensorflow():
    """TensorFlow, or an ImportError that says how to get it (only the SavedModel needs it)."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f"writing a TensorFlow SavedModel needs TensorFlow: pip install {TENSORFLOW_PIN} "
            "(it is in requirements-dev.txt), or pass --no-saved-model to write only "
            f"{JAX_EXPORTED}") from e
    return tf


def lower_top_k_as_sort(ctx, operand, *, k: int, axis: int):
    """A lowering rule for `lax.top_k`: one stable sort of (values, iota) with a `GT`
    comparator, then the first `k` along `axis` -- what `chlo.top_k` decomposes into, written
    straight into the module. Bit-identical results, and as fast in TF 2.21 as the composite
    (benchmarks/RESULTS.md, "Export latency")."""
    from jax.extend.mlir.dialects import stablehlo as hlo
    from jax.interpreters import mlir

    ir = mlir.ir
    aval = ctx.avals_in[0]
    iota_aval = aval.update(dtype=np.dtype(np.int32))
    iota, = mlir.lower_fun(lambda: [lax.broadcasted_iota(np.int32, aval.shape, axis)])(
        ctx.replace(avals_in=[], avals_out=[iota_aval]))
    ir_type = lambda a: mlir.aval_to_ir_type(ctx.module_context, a)
    scalar = lambda a: ir_type(a.update(shape=(), sharding=a.sharding.update(spec=P())))
    sort = hlo.SortOp([ir_type(aval), ir_type(iota_aval)], [operand, iota],
                      dimension=mlir.i64_attr(axis), is_stable=ir.BoolAttr.get(True))
    block = sort.comparator.blocks.append(scalar(aval), scalar(aval), scalar(iota_aval),
                                          scalar(iota_aval))
    # top_k's order: IEEE total order for floats (NaN first, +0 before -0); ties keep the
    # lower index first because the sort is stable.
    kind = ("TOTALORDER" if jnp.issubdtype(aval.dtype, jnp.floating) else
            "UNSIGNED" if jnp.issubdtype(aval.dtype, jnp.unsignedinteger) else "SIGNED")
    with ir.InsertionPoint(block):
        hlo.return_([hlo.compare(block.arguments[0], block.arguments[1],
                                 hlo.ComparisonDirectionAttr.get("GT"),
                                 compare_type=hlo.ComparisonTypeAttr.get(kind))])
    first_k = mlir.lower_fun(lambda v, i: [lax.slice_in_dim(v, 0, k, axis=axis),
                                           lax.slice_in_dim(i, 0, k, axis=axis)])
    return first_k(ctx.replace(avals_in=[aval, iota_aval]), *sort.results)


@contextlib.contextmanager
def _lowering_for_tensorflow() -> Iterator[None]:
    """Lowers for the StableHLO inside this TensorFlow's XlaCallModule, which lags jax's.

    Two differences matter, both found by running the SavedModel (jax 0.10.2 vs TF 2.21.0):
    - jax writes StableHLO for consumers at least 4 weeks old (v1.15.0); TF 2.21 reads up to
      v1.13.7 and cannot read `composite_v2`. Serialising for the older of the two versions
      turns it back into the `composite` TF knows.
    - `lax.top_k` lowers to a `chlo.top_k` composite whose decomposition TF's shape refinement
      leaves dynamic, so a symbolic batch fails at serving time ("op has dynamic shapes").
      While exporting for TF, top_k lowers through `lower_top_k_as_sort` instead: the same
      sort + slice, in the main function where TF's refinement reaches it.
    Both use jax internals (`jax._src.export._export.hlo`, `mlir._lowerings`), restored on
    exit; the jax.export artifact is lowered without them.
    """
    from jax._src.export import _export
    from jax.extend.core.primitives import top_k_p
    from jax.interpreters import mlir
    from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo

    hlo = _export.hlo
    tf_version = tf_stablehlo.get_current_version()
    versions = hlo.get_version_from_compatibility_requirement
    saved_top_k = mlir._lowerings.get(top_k_p)
    hlo.get_version_from_compatibility_requirement = (
        lambda requirement: hlo.get_smaller_version(versions(requirement), tf_version))
    mlir.register_lowering(top_k_p, lower_top_k_as_sort)
    try:
        yield
    finally:
        hlo.get_version_from_compatibility_requirement = versions
        mlir._lowerings[top_k_p] = saved_top_k


def save_saved_model(path, serve: Callable, variables, *, height: int, width: int,
                     batch: Optional[int] = None,
                     platforms: Sequence[str] = DEFAULT_PLATFORMS) -> None:
    """Writes a SavedModel of `serve` (a `Task.serving_fn`) to `path` (local or a bucket):
    signature `serving_default`, input `images` uint8 `(batch or None, height, width, 3)`,
    outputs `classes` int32 `(N, H, W)` and `logits` float32 `(N, H, W, K)` (instance
    models: the detections of `instance.serving`); weights as (non-trainable) TF variables."""
    tf = import_tensorflow()
    from jax.experimental import jax2tf

    input_shape(height, width, batch)  # validates the arguments
    polymorphic = None if batch is not None else f"(b, {height}, {width}, 3)"
    converted = jax2tf.convert(serve,
                               polymorphic_shapes=[None, polymorphic], with_gradient=False,
                               native_serialization_platforms=tuple(platforms))
    tf_variables = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False), variables)
    module = tf.Module()
    module.weights = tf.nest.flatten(tf_variables)  # tracked, so saved under variables/

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec((batch, height, width, 3), tf.uint8, name="images")])
    def serving_default(images):
        # A served tensor of another size reaches the graph despite the signature's shape
        # (TF checks it only in some clients); stop it here with a message, not deep inside
        # XlaCallModule's shape refinement. With every dimension fixed (--batch N) TF folds
        # this check away, and XLA's own error names both shapes ("Call parameter must match
        # argument; got parameter ... shape: u8[2,96,80,3], argument shape: u8[3,96,80,3]").
        first = 0 if batch is not None else 1
        expected = [batch or -1, height, width, 3][first:]
        ok = tf.reduce_all(tf.equal(tf.shape(images)[first:], expected))
        check = tf.debugging.Assert(ok, [
            f"images must be uint8 ({batch or 'N'}, {height}, {width}, 3), the shape this "
            "model was exported for (python -m pointrend_jax.export --height --width "
            "--batch); got shape",
            tf.shape(images)], summarize=4)
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        out = converted(tf_variables, images)
        if isinstance(out, dict):  # instance models: their named outputs
            return out
        classes, logits = out
        return {"classes": classes, "logits": logits}

    with _lowering_for_tensorflow():
        signature = serving_default.get_concrete_function()
        tf.saved_model.save(module, path, signatures={"serving_default": signature})


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
    """Copies the folder `src` to `dst` (which may be in a bucket), file by file."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        if child.is_dir():
            _copy_tree(child, dst / child.name)
        else:
            (dst / child.name).write_bytes(child.read_bytes())


def export_run(workdir, out, *, step: Optional[int] = None,
               height: Optional[int] = None, width: Optional[int] = None,
               batch: Optional[int] = None, platforms: Sequence[str] = DEFAULT_PLATFORMS,
               saved_model: bool = True) -> Dict[str, Any]:
    """Exports checkpoint `step` (None: latest) of the run in `workdir` into `out` (see the
    module docstring); height/width default to the run's `config.augment.crop_size`, batch
    None is symbolic. Returns what `out/export.json` records."""
    from pointrend_jax.tasks import get_task
    from pointrend_jax.workdir import read_run, restore_variables

    if (height is None) != (width is None):
        raise ValueError(f"give both height and width or neither; got height={height}, "
                         f"width={width}")
    if saved_model:
        import_tensorflow()  # fail before the slow part
    config, class_names = read_run(workdir)
    if height is None:
        height, width = (int(s) for s in config.augment.crop_size)
    input_shape(height, width, batch)  # argument errors before the checkpoint is read
    task = get_task(config)
    model = task.build_model(config, len(class_names))
    serve = task.serving_fn(model, config, height, width)
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size), step)
    size = dict(height=height, width=width, batch=batch, platforms=platforms)

    out = epath.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / JAX_EXPORTED).write_bytes(export_serving(serve, variables, **size).serialize())
    if saved_model:
        # TensorFlow writes through its own file systems; a local folder, then copied, lets
        # `out` be anywhere epath reaches.
        with tempfile.TemporaryDirectory() as local:
            save_saved_model(os.path.join(local, SAVED_MODEL), serve, variables, **size)
            _copy_tree(epath.Path(local) / SAVED_MODEL, out / SAVED_MODEL)

    n = "b" if batch is None else batch
    info = {
        "workdir": str(workdir), "step": int(step), "height": height,
        "width": width, "batch": "dynamic" if batch is None else batch,
        "platforms": list(platforms), "class_names": list(class_names),
        "inputs": {"images": {"shape": [n, height, width, 3], "dtype": "uint8"}},
        "outputs": task.serving_outputs(model, config, n, height, width, len(class_names)),
        "files": [JAX_EXPORTED] + ([SAVED_MODEL] if saved_model else []),
    }
    (out / EXPORT_JSON).write_text(json.dumps(info, indent=2))
    return info


def _batch_arg(value: str) -> Optional[int]:
    if value == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        batch = 0
    if batch < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int or 'dynamic'; got {value!r}")
    return batch


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pointrend_jax.export",
        description=f"Export a trained run as {JAX_EXPORTED} (jax.export) and {SAVED_MODEL}/ "
                    "(TensorFlow SavedModel for TF Serving): uint8 images (N, H, W, 3) -> "
                    "class map int32 (N, H, W), logits float32 (N, H, W, K).")
    parser.add_argument("--workdir", required=True, help="the training run's directory")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step (default: the latest)")
    parser.add_argument("--height", type=int, default=None,
                        help="image height (default: the run's config.augment.crop_size)")
    parser.add_argument("--width", type=int, default=None, help="image width (with --height)")
    parser.add_argument("--batch", type=_batch_arg, default=None,
                        help="a fixed batch size, or 'dynamic' (default: any batch size)")
    parser.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS),
                        help="comma-separated jax.export platforms (default: %(default)s)")
    parser.add_argument("--no-saved-model", dest="saved_model", action="store_false",
                        help=f"write only {JAX_EXPORTED} (no TensorFlow needed)")
    args = parser.parse_args(argv)
    if (args.height is None) != (args.width is None):
        parser.error("give both --height and --width, or neither")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    try:
        info = export_run(args.workdir, args.out, step=args.step, height=args.height,
                          width=args.width, batch=args.batch, platforms=platforms,
                          saved_model=args.saved_model)
    except (ValueError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shape = info["inputs"]["images"]["shape"]
    print(f"exported step {info['step']} of {args.workdir} for uint8 images "
          f"({', '.join(map(str, shape))}) on {', '.join(platforms)}: "
          + ", ".join(str(epath.Path(args.out) / f) for f in info["files"] + [EXPORT_JSON]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
