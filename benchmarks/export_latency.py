"""Latency of the exported model against `Predictor.predict`, one image, in one process.

    python benchmarks/export_latency.py [--height 1024 --width 2048] [--repeats 10]
        [--config configs/synthetic_multiclass.py] [--workdir DIR] [--no-saved-model]

The model is the config's (default `configs/synthetic_multiclass.py`, the `make train` model:
ResNet-18 at width 16, DeepLabV3 head at output stride 16, point head 3 x 64 on res2,
subdivision 4 steps x 1024 points), randomly initialised unless `--workdir` names a trained
run; the weights do not change the speed (every shape is static). Rows:
  * `Predictor.predict(image, return_logits=True)`: jitted, weights as arguments, padding in
    NumPy; it also resizes the coarse logits to the image and returns them (the exported
    function leaves them out);
  * the `jax.export` artifact (serialized and deserialized again) exported with a symbolic
    batch and with batch 1, called through `jax.jit(exported.call)`: weights are constants;
  * the TF SavedModel's `serving_default` (jax2tf), when TensorFlow is installed.
Every path ends with the class map and the logits on the host. First call = trace + compile +
run; then the median of `--repeats` calls per path, taken in turn (path 1, 2, 3, 4, 1, 2, ...)
so that load from other processes falls on every path alike. The class maps are compared with
predict's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

from machine_info import describe
from pointrend_jax import export as export_lib
from pointrend_jax.config import load_config
from pointrend_jax.models.layers import init_variables
from pointrend_jax.tasks import get_task, validated_task
from pointrend_jax.workdir import read_run, restore_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_call(fn):
    """(seconds of the first call: trace + compile + run, its result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved_medians(fns, repeats):
    """Median ms of each of `fns`, called in turn `repeats` times, so that load from other
    processes on a shared machine falls on every path alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "synthetic_multiclass.py"))
    parser.add_argument("--workdir", default=None, help="a trained run (default: random weights)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-saved-model", dest="saved_model", action="store_false")
    args = parser.parse_args()

    if args.workdir:  # a trained run's config, as `load` reads it
        config, class_names = read_run(args.workdir)
        task = get_task(config)
    else:
        config = load_config(args.config)
        class_names = [f"class{i}" for i in range(5)]
        task = validated_task(config)
    if task.name != "semantic":
        parser.error(f"{args.workdir or args.config} is a {task.name} run; this benchmark "
                     "compares semantic class maps")
    model = task.build_model(config, len(class_names))
    if args.workdir:
        variables, step = restore_variables(args.workdir, model, tuple(config.augment.crop_size))
    else:
        variables = jax.jit(lambda r: init_variables(model, r, tuple(config.augment.crop_size)))(
            jax.random.key(0))
        step = 0
    predictor = task.predictor(config, model, variables, class_names, step)
    h, w = args.height, args.width
    image = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    serve = task.serving_fn(model, config, h, w)
    size = dict(height=h, width=w)
    rows = []  # (name, function, first call s, class map)

    def predict():
        out = predictor.predict(image, return_logits=True)
        return out["classes"], out["logits"]

    first, (reference, _) = first_call(predict)
    rows.append(("Predictor.predict (jit, weights as arguments)", predict, first, reference))

    for label, batch in (("symbolic batch b", None), ("batch 1", 1)):
        start = time.perf_counter()
        blob = export_lib.export_serving(serve, variables, batch=batch, **size).serialize()
        export_s = time.perf_counter() - start
        call = jax.jit(jax.export.deserialize(blob).call)

        def run(call=call):
            classes, logits = call(image[None])
            return np.asarray(classes)[0], np.asarray(logits)[0]

        first, (classes, _) = first_call(run)
        rows.append((f"jax.export, {label} ({len(blob) / 2**20:.1f} MiB, exported in "
                     f"{export_s:.1f} s)", run, first, classes))

    tmp = tempfile.TemporaryDirectory()
    if args.saved_model:
        tf = export_lib.import_tensorflow()
        export_lib.save_saved_model(tmp.name, serve, variables, **size)
        serve = tf.saved_model.load(tmp.name).signatures["serving_default"]
        images = tf.constant(image[None])

        def run_tf():
            out = serve(images=images)
            return out["classes"].numpy()[0], out["logits"].numpy()[0]

        first, (classes, _) = first_call(run_tf)
        rows.append(("TF SavedModel serving_default (jax2tf, symbolic batch)", run_tf, first,
                     classes))
    medians = interleaved_medians([row[1] for row in rows], args.repeats)
    tmp.cleanup()

    p = config.pointrend
    print(f"Machine: {describe()}" + (f", TensorFlow {tf.__version__}" if args.saved_model else ""))
    print(f"Model: {args.workdir or os.path.relpath(args.config, ROOT)}: ResNet-"
          f"{config.model.backbone.depth} width {config.model.backbone.width}, "
          f"{config.model.head} head, subdivision {p.subdivision_steps} x "
          f"{p.subdivision_num_points} points, {len(class_names)} classes; one {h}x{w} image")
    print("| path | first call s | median ms | vs predict | class map = predict |")
    print("|---|---:|---:|---:|---:|")
    for (name, _, first, classes), ms in zip(rows, medians):
        same = np.mean(classes == reference)
        print(f"| {name} | {first:.1f} | {ms:.0f} | {ms / medians[0]:.2f}x | {100 * same:.3f}% |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
