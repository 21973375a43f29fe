"""SyntheticShapes: a segmentation data set the project draws itself (no download).

Every example is drawn from its own seed, ``(config seed, split, index)``, so two
preparations give the same arrays (across different CPUs and library builds, float rounding
in sin/resize could in principle move a rare edge pixel). A picture is a textured, noisy background with
a few shapes on it, each kind of structure a class:

  0 background
  1 blob      filled ellipses and wobbly round blobs
  2 polygon   filled star-shaped polygons (sharp corners, concave edges)
  3 curve     THIN curved strokes 1-3 px wide (circular arcs, sine waves)
  4 ring      elliptical rings 2-6 px thick

The ``binary`` config shows the same pictures with every structure as class 1 ("object").

Colour alone does not tell the classes apart: each class has a typical colour, but every
shape's colour is spread widely around it (and sometimes drawn at random), and the
background takes random colours too, so a model has to use shape and boundaries. Edges are
drawn with a one-pixel soft ramp; the mask is exact: a pixel belongs to the top-most shape
whose signed distance at the pixel centre is <= 0, the same function that drew the ramp.

Storage. Arrays are stored as ``tfds.features.Tensor(..., encoding="zlib")`` in
``array_record`` files and read back through ``builder.as_data_source(split)``: neither
writing nor reading needs TensorFlow (an ``Image`` feature would need TF to encode arrays),
and zlib is lossless, so labels come back exactly.

Shapes: H, W image height and width (``image_size`` x ``image_size``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

SYNTHETIC_CLASS_NAMES = {
    "binary": ["background", "object"],
    "multiclass": ["background", "blob", "polygon", "curve", "ring"],
}
VARIANTS = tuple(SYNTHETIC_CLASS_NAMES)

DEFAULT_NUM_TRAIN = 1024
DEFAULT_NUM_VAL = 128
DEFAULT_IMAGE_SIZE = 128
DEFAULT_SEED = 20200101

BLOB, POLYGON, CURVE, RING = 1, 2, 3, 4
# Typical RGB colour of each class; a shape's colour is spread widely around it.
_CLASS_COLOURS = {
    BLOB: (200.0, 90.0, 60.0),
    POLYGON: (60.0, 110.0, 200.0),
    CURVE: (225.0, 215.0, 120.0),
    RING: (80.0, 190.0, 90.0),
}
_SPLIT_CODES = {"train": 0, "val": 1}


# --------------------------------------------------------------------------------------
# Drawing. Each shape returns (bbox, f): f is an (approximate) signed distance in pixels
# on the pixel centres inside bbox = (y0, y1, x0, x1); f <= 0 inside the shape.
# --------------------------------------------------------------------------------------


def _grid(bbox):
    y0, y1, x0, x1 = bbox
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    return ys, xs


def _bbox(cy, cx, radius, size):
    r = int(np.ceil(radius)) + 2
    y0, x0 = max(int(cy) - r, 0), max(int(cx) - r, 0)
    y1, x1 = min(int(cy) + r + 2, size), min(int(cx) + r + 2, size)
    return (y0, y1, x0, x1) if (y1 > y0 and x1 > x0) else None


def _ellipse_distance(ys, xs, cy, cx, a, b, angle):
    """Signed distance to an ellipse, first order: (q - 1) / |grad q| with q = ellipse radius."""
    c, s = np.cos(angle), np.sin(angle)
    u = (xs - cx) * c + (ys - cy) * s
    v = -(xs - cx) * s + (ys - cy) * c
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / np.maximum(q, 1e-9)
    return (q - 1.0) / np.maximum(grad, 1.0 / max(a, b))


def _draw_blob(rng, size):
    s = size / 128.0
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    if rng.random() < 0.5:  # ellipse
        a, b = rng.uniform(8, 30, 2) * s
        bbox = _bbox(cy, cx, max(a, b), size)
        if bbox is None:
            return None
        ys, xs = _grid(bbox)
        return bbox, _ellipse_distance(ys, xs, cy, cx, a, b, rng.uniform(0, np.pi))
    # Wobbly blob: radius r(theta) = R (1 + sum_k a_k cos(k theta + phi_k)).
    radius = rng.uniform(10, 28) * s
    ks = np.arange(2, 6)
    amps = rng.uniform(0.0, 0.25, ks.size) / ks
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    bbox = _bbox(cy, cx, radius * (1 + amps.sum()), size)
    if bbox is None:
        return None
    ys, xs = _grid(bbox)
    rho = np.hypot(ys - cy, xs - cx)
    theta = np.arctan2(ys - cy, xs - cx)
    waves = amps[:, None, None] * np.cos(ks[:, None, None] * theta + phases[:, None, None])
    r_theta = radius * (1 + waves.sum(axis=0))
    return bbox, rho - r_theta


def _segment_distance(ys, xs, p, q):
    """Distance from pixel centres to the segment p-q (points as (y, x))."""
    d = q - p
    t = ((ys - p[0]) * d[0] + (xs - p[1]) * d[1]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(ys - (p[0] + t * d[0]), xs - (p[1] + t * d[1]))


def _draw_polygon(rng, size):
    s = size / 128.0
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    n = int(rng.integers(3, 9))
    # Angles in order (evenly spaced plus jitter): the polygon stays simple, star-shaped
    # around its centre, however the radii vary.
    step = 2 * np.pi / n
    angles = rng.uniform(0, 2 * np.pi) + step * (np.arange(n) + rng.uniform(-0.35, 0.35, n))
    radii = rng.uniform(10, 32, n) * s
    if n >= 5 and rng.random() < 0.5:  # a star: every other vertex pulled in
        radii[::2] *= rng.uniform(0.35, 0.6)
    verts = np.stack([cy + radii * np.sin(angles), cx + radii * np.cos(angles)], axis=1)
    bbox = _bbox(cy, cx, radii.max(), size)
    if bbox is None:
        return None
    ys, xs = _grid(bbox)
    dist = np.full(np.broadcast_shapes(ys.shape, xs.shape), np.inf)
    inside = np.zeros(dist.shape, dtype=bool)
    for i in range(n):
        p, q = verts[i], verts[(i + 1) % n]
        dist = np.minimum(dist, _segment_distance(ys, xs, p, q))
        # Even-odd rule: count edges crossed by a ray towards +x.
        crosses = (p[0] > ys) != (q[0] > ys)
        x_at = p[1] + (ys - p[0]) * (q[1] - p[1]) / (q[0] - p[0] + 1e-12)
        inside ^= crosses & (xs < x_at)
    return bbox, np.where(inside, -dist, dist)


def _draw_curve(rng, size):
    """A thin stroke (width 1-3 px) along a circular arc or a sine wave."""
    s = size / 128.0
    width = rng.uniform(1.0, 3.0)
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    if rng.random() < 0.5:  # circular arc
        radius = rng.uniform(10, 45) * s
        start, span = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi / 3, 5 * np.pi / 3)
        bbox = _bbox(cy, cx, radius + width, size)
        if bbox is None:
            return None
        ys, xs = _grid(bbox)
        theta = np.mod(np.arctan2(ys - cy, xs - cx) - start, 2 * np.pi)
        on_arc = np.abs(np.hypot(ys - cy, xs - cx) - radius)
        ends = [(cy + radius * np.sin(a), cx + radius * np.cos(a)) for a in (start, start + span)]
        to_ends = np.minimum(*(np.hypot(ys - ey, xs - ex) for ey, ex in ends))
        dist = np.where(theta <= span, on_arc, to_ends)
        return bbox, dist - width / 2
    # Sine wave v = A sin(2 pi u / wavelength + phase) for u in [-L/2, L/2] in a rotated frame.
    length = rng.uniform(40, 110) * s
    amp = rng.uniform(3, 14) * s
    wavelength = rng.uniform(18, 55) * s
    phase, angle = rng.uniform(0, 2 * np.pi, 2)
    bbox = _bbox(cy, cx, length / 2 + amp + width, size)
    if bbox is None:
        return None
    ys, xs = _grid(bbox)
    c, sn = np.cos(angle), np.sin(angle)
    u = (xs - cx) * c + (ys - cy) * sn
    v = -(xs - cx) * sn + (ys - cy) * c
    k = 2 * np.pi / wavelength
    uc = np.clip(u, -length / 2, length / 2)
    g = amp * np.sin(k * uc + phase)
    slope = amp * k * np.cos(k * uc + phase)
    # Vertical offset over the local slope ~ distance to the curve (first order).
    dist = np.abs(v - g) / np.sqrt(1 + slope**2)
    dist = np.where(np.abs(u) <= length / 2, dist, np.hypot(u - uc, v - g))
    return bbox, dist - width / 2


def _draw_ring(rng, size):
    s = size / 128.0
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    a = rng.uniform(8, 30) * s
    b = a * rng.uniform(0.6, 1.0)
    thickness = rng.uniform(2.0, 6.0)
    bbox = _bbox(cy, cx, a + thickness, size)
    if bbox is None:
        return None
    ys, xs = _grid(bbox)
    return bbox, np.abs(_ellipse_distance(ys, xs, cy, cx, a, b, rng.uniform(0, np.pi))) - thickness / 2


_DRAWERS = {BLOB: _draw_blob, POLYGON: _draw_polygon, CURVE: _draw_curve, RING: _draw_ring}


def _smooth_field(rng, size, cells):
    """A smooth random field in about [-1, 1] on (size, size): upsampled Gaussian noise."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
    return field / max(float(np.abs(field).max()), 1e-6)


def _shape_colour(rng, cls):
    if rng.random() < 0.25:  # sometimes any colour at all
        return rng.uniform(0, 255, 3)
    return np.asarray(_CLASS_COLOURS[cls]) + rng.normal(0.0, 55.0, 3)


def render_example(rng: np.random.Generator, size: int = DEFAULT_IMAGE_SIZE):
    """Draws one picture. Returns image uint8 (H, W, 3) and multiclass label uint8 (H, W)."""
    # Background: two random colours mixed by a smooth field, a finer texture, noise.
    mix = 0.5 + 0.5 * _smooth_field(rng, size, int(rng.integers(3, 7)))
    c0, c1 = rng.uniform(0, 255, (2, 3))
    canvas = c0 + mix[..., None] * (c1 - c0)
    canvas += 25.0 * _smooth_field(rng, size, int(rng.integers(12, 24)))[..., None]
    label = np.zeros((size, size), np.uint8)

    kinds = [BLOB] * int(rng.integers(0, 4)) + [POLYGON] * int(rng.integers(0, 4))
    kinds += [RING] * int(rng.integers(0, 3))
    if not kinds:
        kinds = [int(rng.choice([BLOB, POLYGON, RING]))]
    rng.shuffle(kinds)
    kinds += [CURVE] * int(rng.integers(1, 4))  # strokes on top, so thin parts stay visible

    for cls in kinds:
        drawn = _DRAWERS[cls](rng, size)
        if drawn is None:
            continue
        (y0, y1, x0, x1), dist = drawn
        inside = dist <= 0.0
        if not inside.any():
            continue
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        ys, xs = _grid((y0, y1, x0, x1))
        shade = rng.uniform(-0.2, 0.2, 2)  # a gentle colour gradient across the shape
        fill = _shape_colour(rng, cls) * (1.0 + shade[0] * (ys - y0) / size + shade[1] * (xs - x0) / size)[..., None]
        region = canvas[y0:y1, x0:x1]
        region += alpha * (fill - region)
        label[y0:y1, x0:x1][inside] = cls

    canvas += rng.normal(0.0, rng.uniform(3.0, 12.0), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, label


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws example ``index`` of ``split``: fixed by the three numbers."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def make_example(variant: str, split: str, index: int, *, seed: int = DEFAULT_SEED,
                 image_size: int = DEFAULT_IMAGE_SIZE) -> dict[str, Any]:
    """Example ``index`` of ``split`` as the contract's dict (image, label, stem)."""
    image, label = render_example(example_rng(seed, split, index), image_size)
    if variant == "binary":
        label = (label > 0).astype(np.uint8)
    elif variant != "multiclass":
        raise ValueError(f"Unknown synthetic variant {variant!r}; choose one of {VARIANTS}.")
    return {"image": image, "label": label, "stem": f"{split}_{index:06d}"}


# --------------------------------------------------------------------------------------
# The tfds builder.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
    """Which variant, how many examples of which size, and the seed they are drawn from."""

    variant: str = "multiclass"
    num_train: int = DEFAULT_NUM_TRAIN
    num_val: int = DEFAULT_NUM_VAL
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = DEFAULT_SEED


def synthetic_config(variant: str, *, num_train: int | None = None, num_val: int | None = None,
                     image_size: int | None = None, seed: int | None = None) -> SyntheticShapesConfig:
    """The builder config for ``variant``; non-default sizes get their own name (and folder).

    A custom name keeps a tiny test copy from being mistaken for the full set in the same
    data_dir (tfds reuses whatever is prepared under a config's name).
    """
    if variant not in SYNTHETIC_CLASS_NAMES:
        raise ValueError(f"Unknown synthetic variant {variant!r}; choose one of {VARIANTS}.")
    values = {
        "num_train": DEFAULT_NUM_TRAIN if num_train is None else int(num_train),
        "num_val": DEFAULT_NUM_VAL if num_val is None else int(num_val),
        "image_size": DEFAULT_IMAGE_SIZE if image_size is None else int(image_size),
        "seed": DEFAULT_SEED if seed is None else int(seed),
    }
    for key in ("num_train", "num_val", "image_size"):
        if values[key] < 1:
            raise ValueError(f"synthetic {key} must be >= 1, got {values[key]}.")
    defaults = {"num_train": DEFAULT_NUM_TRAIN, "num_val": DEFAULT_NUM_VAL,
                "image_size": DEFAULT_IMAGE_SIZE, "seed": DEFAULT_SEED}
    if values == defaults:
        return SyntheticShapes.builder_configs[variant]
    name = "{}_t{num_train}_v{num_val}_s{image_size}_r{seed}".format(variant, **values)
    return SyntheticShapesConfig(
        name=name, variant=variant, version=SyntheticShapes.VERSION,
        description=f"{variant} with custom sizes {values}", **values)


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
    """Shapes on textured backgrounds; binary (object vs background) or multiclass."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    # Nothing is downloaded, so there are no URL checksums to look up next to this file.
    # Without this, tfds 4.9.10 resolves the module's folder for that look-up and, for a
    # builder inside a package, needs the `importlib_resources` backport (not installed).
    code_path = None
    BUILDER_CONFIGS = [
        SyntheticShapesConfig(name="binary", variant="binary",
                              description="Background vs object (every structure)."),
        SyntheticShapesConfig(name="multiclass", variant="multiclass",
                              description="Background, blob, polygon, thin curve, ring."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        variant = self.builder_config.variant
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                # zlib Tensors: lossless and encodable without TensorFlow.
                "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
                "label": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
                "stem": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(class_names=SYNTHETIC_CLASS_NAMES[variant]),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "val": self._generate_examples("val", cfg.num_val)}

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[str, dict]]:
        cfg = self.builder_config
        for index in range(count):
            example = make_example(cfg.variant, split, index, seed=cfg.seed, image_size=cfg.image_size)
            yield example["stem"], example


class DecodedSource:
    """A tfds data source with examples in the contract's form (stem as ``str``).

    Random access (``__len__``, ``__getitem__``), so grain can use it as a source.
    """

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _decode(self._source[index])

    def __getitems__(self, indices):
        return [_decode(ex) for ex in self._source.__getitems__(indices)]

    def __repr__(self) -> str:
        return f"DecodedSource({self._source!r})"


def _decode(example: dict[str, Any]) -> dict[str, Any]:
    stem = example["stem"]
    return {"image": np.asarray(example["image"]), "label": np.asarray(example["label"]),
            "stem": stem.decode("utf-8") if isinstance(stem, bytes) else str(stem)}


def synthetic_builder(variant: str, *, data_dir: str | os.PathLike | None = None,
                      num_train: int | None = None, num_val: int | None = None,
                      image_size: int | None = None, seed: int | None = None) -> SyntheticShapes:
    """The builder (not yet prepared); ``data_dir=None`` means the tfds default folder."""
    config = synthetic_config(variant, num_train=num_train, num_val=num_val,
                              image_size=image_size, seed=seed)
    return SyntheticShapes(config=config, data_dir=None if data_dir is None else os.fspath(data_dir),
                           file_format="array_record")


def load_synthetic(variant: str, *, data_dir: str | os.PathLike | None = None,
                   num_train: int | None = None, num_val: int | None = None,
                   image_size: int | None = None, seed: int | None = None) -> dict[str, DecodedSource]:
    """Prepares the data set if needed and returns ``{"train": source, "val": source}``."""
    kwargs = dict(data_dir=data_dir, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)
    builder = synthetic_builder(variant, **kwargs)
    # Several processes on one machine (a simulated multi-host run) may start at once: the
    # first prepares under a file lock, the others then find the data ready.
    version_dir = pathlib.Path(builder.data_dir)
    version_dir.parent.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(version_dir.parent.parent / f".{version_dir.parent.name}.lock"):
        builder = synthetic_builder(variant, **kwargs)  # looks again, now under the lock
        builder.download_and_prepare()
    return {split: DecodedSource(builder.as_data_source(split)) for split in ("train", "val")}


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    """An exclusive lock between processes on this machine (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
