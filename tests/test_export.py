"""python -m pointrend_jax.export on a `:runlocal` run: the jax.export artifact and the TF
SavedModel reproduce `pointrend_jax.load(workdir).predict`, with a symbolic batch and a fixed
one, and refuse images of another size with an error that names the expected shape."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pointrend_jax
from pointrend_jax import export as export_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ["background", "blob", "polygon", "curve", "ring"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """configs/synthetic_multiclass.py:runlocal trained through the CLI (checkpoints 2 and 4)."""
    workdir = str(tmp_path_factory.mktemp("run"))
    tfds_dir = str(tmp_path_factory.mktemp("tfds"))
    cmd = [sys.executable, os.path.join(ROOT, "train.py"),
           f"--config={ROOT}/configs/synthetic_multiclass.py:runlocal", f"--workdir={workdir}",
           f"--config.data.data_dir={tfds_dir}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The run exported by the command line with its defaults (latest step, crop size,
    dynamic batch)."""
    out = str(tmp_path_factory.mktemp("export"))
    cmd = [sys.executable, "-m", "pointrend_jax.export", "--workdir", trained_run, "--out", out]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "exported step 4" in result.stdout and "(b, 64, 64, 3)" in result.stdout
    return out


@pytest.fixture(scope="module")
def predictor(trained_run):
    return pointrend_jax.load(trained_run)


def random_images(rng, n, h, w):
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def assert_same_as_predict(predictor, images, classes, logits):
    """Class maps equal on >= 99.9% of pixels, logits close, per image."""
    assert classes.dtype == np.int32 and classes.shape == images.shape[:3]
    assert logits.dtype == np.float32 and logits.shape == (*images.shape[:3], len(CLASS_NAMES))
    for image, c, l in zip(images, classes, logits):
        expected = predictor.predict(image, return_logits=True)
        assert np.mean(c == expected["classes"]) >= 0.999
        np.testing.assert_allclose(l, expected["logits"], rtol=1e-4, atol=1e-4)


def load_exported(out):
    with open(os.path.join(out, export_lib.JAX_EXPORTED), "rb") as f:
        return jax.export.deserialize(f.read())


def load_signature(out):
    tf = pytest.importorskip("tensorflow")
    return tf, tf.saved_model.load(os.path.join(out, export_lib.SAVED_MODEL)).signatures[
        "serving_default"]


def test_cli_writes_the_artifact_the_saved_model_and_export_json(exported):
    assert sorted(os.listdir(exported)) == ["export.json", "model.jax_exported", "saved_model"]
    assert os.path.exists(os.path.join(exported, "saved_model", "saved_model.pb"))
    info = json.load(open(os.path.join(exported, "export.json")))
    assert info["step"] == 4 and info["batch"] == "dynamic" and info["class_names"] == CLASS_NAMES
    assert info["inputs"] == {"images": {"shape": ["b", 64, 64, 3], "dtype": "uint8"}}
    assert info["outputs"]["classes"] == {"shape": ["b", 64, 64], "dtype": "int32"}
    assert info["outputs"]["logits"] == {"shape": ["b", 64, 64, 5], "dtype": "float32"}


def test_exported_artifact_has_a_symbolic_batch_and_matches_predict(exported, predictor, np_rng):
    exp = load_exported(exported)
    assert str(exp.in_avals[0].shape) == "(b, 64, 64, 3)" and exp.in_avals[0].dtype == jnp.uint8
    assert [str(a.shape) for a in exp.out_avals] == ["(b, 64, 64)", "(b, 64, 64, 5)"]
    assert exp.platforms == ("cpu", "cuda")
    for n in (1, 3):  # one artifact, two batch sizes
        images = random_images(np_rng, n, 64, 64)
        classes, logits = exp.call(images)
        assert_same_as_predict(predictor, images, np.asarray(classes), np.asarray(logits))


def test_saved_model_matches_predict_through_tensorflow(exported, predictor, np_rng):
    tf, serve = load_signature(exported)
    spec = serve.structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 64, 64, 3] and spec.dtype == tf.uint8
    assert sorted(serve.structured_outputs) == ["classes", "logits"]
    for n in (1, 3):
        images = random_images(np_rng, n, 64, 64)
        out = serve(images=tf.constant(images))
        assert_same_as_predict(predictor, images, out["classes"].numpy(), out["logits"].numpy())


def test_saved_model_runs_in_a_graph_session_by_signature_def_names_as_tf_serving_does(
        exported, predictor, np_rng):
    tf = pytest.importorskip("tensorflow")
    images = random_images(np_rng, 2, 64, 64)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], os.path.join(exported, export_lib.SAVED_MODEL))
        signature = meta_graph.signature_def["serving_default"]
        assert [d.size for d in signature.inputs["images"].tensor_shape.dim] == [-1, 64, 64, 3]
        out = session.run({k: v.name for k, v in signature.outputs.items()},
                          {signature.inputs["images"].name: images})
    assert_same_as_predict(predictor, images, out["classes"], out["logits"])


def test_images_of_another_size_are_refused_naming_the_expected_shape(exported):
    exp = load_exported(exported)
    wrong = np.zeros((1, 32, 48, 3), np.uint8)
    with pytest.raises(ValueError, match=r"expected \(b, 64, 64, 3\) and called with \(1, 32, 48, 3\)"):
        exp.call(wrong)
    with pytest.raises(ValueError, match="expected uint8 and called with float32"):
        exp.call(np.zeros((1, 64, 64, 3), np.float32))
    tf, serve = load_signature(exported)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images must be uint8 \(N, 64, 64, 3\).*got shape\] \[1 32 48 3\]"):
        serve(images=tf.constant(wrong))


def test_fixed_batch_chosen_step_and_size_with_padding_inside(trained_run, tmp_path, np_rng):
    # 96x80 is not a multiple of the backbone's 32: the export pads and crops like predict.
    out = str(tmp_path / "fixed")
    info = export_lib.export_run(trained_run, out, step=2, height=96, width=80, batch=2,
                                 platforms=("cpu",))
    assert info["step"] == 2 and info["inputs"]["images"]["shape"] == [2, 96, 80, 3]
    exp = load_exported(out)
    assert exp.in_avals[0].shape == (2, 96, 80, 3) and exp.platforms == ("cpu",)
    images = random_images(np_rng, 2, 96, 80)
    classes, logits = exp.call(images)
    at_step_2 = pointrend_jax.load(trained_run, step=2)
    assert_same_as_predict(at_step_2, images, np.asarray(classes), np.asarray(logits))
    with pytest.raises(ValueError, match=r"expected \(2, 96, 80, 3\) and called with \(3, 96, 80, 3\)"):
        exp.call(random_images(np_rng, 3, 96, 80))

    tf, serve = load_signature(out)
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [2, 96, 80, 3]
    result = serve(images=tf.constant(images))
    np.testing.assert_array_equal(result["classes"].numpy(), np.asarray(classes))
    # Fully static: TF folds the graph's own check away; XLA's error names both shapes.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"shape: u8\[2,96,80,3\], argument shape: u8\[3,96,80,3\]"):
        serve(images=tf.constant(random_images(np_rng, 3, 96, 80)))


def test_cli_errors_name_the_argument(trained_run, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert export_lib.main(["--workdir", str(tmp_path / "nowhere"), "--out", out]) == 1
    assert "config.json not found" in capsys.readouterr().err
    assert export_lib.main(["--workdir", trained_run, "--out", out, "--step", "3",
                            "--no-saved-model"]) == 1
    assert "no checkpoint for step 3" in capsys.readouterr().err
    for bad, message in ((["--height", "64"], "give both --height and --width"),
                         (["--batch", "0"], "argument --batch: must be a positive int or 'dynamic'"),
                         (["--batch", "many"], "got 'many'")):
        with pytest.raises(SystemExit):
            export_lib.main(["--workdir", trained_run, "--out", out, *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="height must be a positive int; got 0"):
        export_lib.input_shape(0, 64, None)
    assert not os.path.exists(out)


def test_missing_tensorflow_is_reported_with_the_pin_and_the_way_around(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    with pytest.raises(ImportError, match=r"pip install tensorflow-cpu==2\.21\.0.*--no-saved-model"):
        export_lib.import_tensorflow()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.uint8])
def test_top_k_lowered_as_sort_is_bit_identical_to_lax_top_k(dtype, np_rng):
    from jax.extend.core.primitives import top_k_p
    from jax.interpreters import mlir

    x = np_rng.integers(0, 4, size=(6, 40)).astype(dtype)  # many ties
    if dtype == np.float32:
        x[0, :6] = [-0.0, 0.0, np.nan, -np.inf, np.inf, -np.nan]
    b, = jax.export.symbolic_shape("b")

    def run_all(top_k_in_module):
        # Fresh functions each time: jit caches the lowering of a function it has seen.
        cases = [((6, 40), lambda a: jax.lax.top_k(a, 7)),
                 ((b, 40), lambda a: jax.lax.top_k(a, 7)),  # symbolic batch, as exported
                 ((40, 6), lambda a: jax.lax.top_k(a.T, 4))]
        results = []
        for shape, f in cases:
            exported = jax.export.export(jax.jit(f))(jax.ShapeDtypeStruct(shape, dtype))
            assert ("chlo.top_k" in exported.mlir_module()) == top_k_in_module
            results.append(exported.call(x if shape[0] != 40 else x.T))
        return results

    expected = run_all(True)
    saved = mlir._lowerings[top_k_p]
    mlir.register_lowering(top_k_p, export_lib.lower_top_k_as_sort)
    try:
        got = run_all(False)
    finally:
        mlir._lowerings[top_k_p] = saved
    for (values, indices), (ref_values, ref_indices) in zip(got, expected):
        np.testing.assert_array_equal(indices, ref_indices)
        assert np.asarray(values).tobytes() == np.asarray(ref_values).tobytes()


def test_tensorflow_lowering_is_scoped_to_the_saved_model():
    pytest.importorskip("tensorflow")
    lowered = lambda: jax.jit(lambda a: jax.lax.top_k(a, 2)).lower(jnp.ones((2, 5))).as_text()
    assert "chlo.top_k" in lowered()
    with export_lib._lowering_for_tensorflow():
        assert "chlo.top_k" not in lowered() and "stablehlo.sort" in lowered()
    assert "chlo.top_k" in lowered()


def test_readme_serving_examples_run_as_written(exported, predictor, np_rng):
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index("## Serve a trained model")
    section = text[start:text.index("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2 and "--workdir runs/synthetic_multiclass --out" in section
    images = random_images(np_rng, 2, 64, 64)  # the exported runlocal model takes 64x64
    for code in blocks:
        if "tensorflow" in code:
            pytest.importorskip("tensorflow")
        scope = {"images": images}
        exec(code.replace("runs/synthetic_multiclass/export", exported), scope)
        assert_same_as_predict(predictor, images, np.asarray(scope["classes"]),
                               np.asarray(scope["logits"]))
