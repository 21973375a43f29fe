"""ADE20K SceneParsing (MIT Scene Parsing Benchmark, 150 classes), from the user's download.

Download ``ADEChallengeData2016.zip`` from the SceneParsing page,
http://sceneparsing.csail.mit.edu/ (direct link:
http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip), and unzip it into
a folder DIR, the manual dir::

    DIR/ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    DIR/ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   8-bit ids 0..150

(20,210 training and 2,000 validation images, sizes vary; DIR may also be the
ADEChallengeData2016 folder itself.) "training" is read as the ``train`` split and
"validation" as ``val``.

Labels: 0 is "other objects" and is ignored (-> 255); ids 1..150 are the benchmark's classes
and become 0..149 (``CLASS_NAMES``: the first name of each entry of the benchmark's
objectInfo150 list, in order). Ids above 150 do not occur in the release and map to 255.
Stored as the downloaded JPEG/PNG bytes (see ``downloaded.py``), mapped on read.

Shapes: H, W image height and width.
"""
from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds

from pointrend_jax.data.downloaded import (EncodedSource, ManualDirBuilder, ManualDirError,
                                           RawExample, label_table, load_builder, pair_by_stem,
                                           report)

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
VARIANTS = ("scene_parsing",)
FOLDER = "ADEChallengeData2016"
SPLIT_FOLDERS = {"train": "training", "val": "validation"}
DOWNLOAD_PAGE = "http://sceneparsing.csail.mit.edu/"
DOWNLOAD_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"

INSTRUCTIONS = f"""\
ADE20K SceneParsing: download {FOLDER}.zip from {DOWNLOAD_PAGE}
({DOWNLOAD_URL}),
unzip it into a folder DIR (`unzip {FOLDER}.zip -d DIR`), so that
DIR/{FOLDER}/images/{{training,validation}}/*.jpg and
DIR/{FOLDER}/annotations/{{training,validation}}/*.png exist, and pass
--config.data.manual_dir=DIR."""


def find_root(manual_dir: str | os.PathLike) -> pathlib.Path:
    """The ADEChallengeData2016 folder: DIR/ADEChallengeData2016, or DIR itself."""
    root = pathlib.Path(manual_dir)
    if (root / FOLDER).is_dir():
        return root / FOLDER
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return root
    extra = ""
    if (root / f"{FOLDER}.zip").is_file():
        extra = f"\n{root / (FOLDER + '.zip')} is there but not extracted: unzip {FOLDER}.zip -d {root}"
    raise ManualDirError(f"ADE20K: missing folder {root / FOLDER} (with images/ and annotations/)."
                         f"{extra}\n{INSTRUCTIONS}")


def list_examples(manual_dir: str | os.PathLike) -> dict[str, list[RawExample]]:
    """The train and val examples under ``manual_dir``, sorted by stem (ADE_train_00000001).

    Raises ManualDirError naming a missing folder, an empty split, or every image without
    its annotation and annotation without its image.
    """
    root = find_root(manual_dir)
    dirs = {split: (root / "images" / sub, root / "annotations" / sub)
            for split, sub in SPLIT_FOLDERS.items()}
    for folders in dirs.values():
        for folder in folders:
            if not folder.is_dir():
                raise ManualDirError(f"ADE20K: missing folder {folder} (is the extraction "
                                     f"complete?).\n{INSTRUCTIONS}")
    splits, problems = {}, []
    for split, (image_dir, label_dir) in dirs.items():
        images = {p.stem: p for p in image_dir.glob("*.jpg")}
        labels = {p.stem: p for p in label_dir.glob("*.png")}
        if not images:
            raise ManualDirError(f"ADE20K: no images {image_dir}/*.jpg.\n{INSTRUCTIONS}")
        splits[split], unpaired = pair_by_stem(
            images, labels, expected_label=lambda s, d=label_dir: d / f"{s}.png",
            expected_image=lambda s, d=image_dir: d / f"{s}.jpg")
        problems += unpaired
    if problems:
        raise ManualDirError(report("ADE20K: images and annotations do not pair up (a partial "
                                    "extraction?)", problems, INSTRUCTIONS))
    return splits


class Ade20kSceneParsing(ManualDirBuilder):
    """ADE20K SceneParsing: 150 classes, id k -> k - 1, 0 -> 255 on read."""

    name = "ade20k_scene_parsing"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Downloaded JPEG images and PNG annotations, as bytes."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="scene_parsing",
                                               description="ADEChallengeData2016, 150 classes.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    CLASS_NAMES = CLASS_NAMES
    LABEL_TABLE = label_table({k: k - 1 for k in range(1, len(CLASS_NAMES) + 1)})
    DESCRIPTION = "ADE20K SceneParsing (MIT Scene Parsing Benchmark), 150 classes."

    def list_examples(self, manual_dir):
        return list_examples(manual_dir)


def ade20k_builder(variant: str = "scene_parsing", *,
                   data_dir: str | os.PathLike | None = None) -> Ade20kSceneParsing:
    """The builder (not yet prepared); ``data_dir=None`` means the tfds default folder."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown ADE20K variant {variant!r}; choose one of {list(VARIANTS)}.")
    return Ade20kSceneParsing(config=variant, data_dir=None if data_dir is None else os.fspath(data_dir),
                              file_format="array_record")


def load(variant: str = "scene_parsing", *, manual_dir: str | os.PathLike | None = None,
         data_dir: str | os.PathLike | None = None) -> dict[str, EncodedSource]:
    """Prepares ADE20K from ``manual_dir`` if needed; returns ``{"train", "val"}`` sources."""
    return load_builder(lambda: ade20k_builder(variant, data_dir=data_dir), manual_dir=manual_dir)
