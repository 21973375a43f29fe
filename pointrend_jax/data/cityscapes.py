"""Cityscapes fine annotations (semantic segmentation, 19 classes), from the user's download.

Download ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` from
https://www.cityscapes-dataset.com/downloads/ (a free account is needed) and unzip both into
one folder DIR, the manual dir::

    DIR/leftImg8bit/{train,val}/CITY/CITY_SEQ_FRAME_leftImg8bit.png      RGB, 2048x1024
    DIR/gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png        8-bit label ids

(2975 train and 500 val images; the test split has no public labels and is not read; the
other gtFine files, colour/instance/polygons, are ignored.) Pass it as
``--config.data.manual_dir=DIR`` the first time; the data is then prepared once under
``--config.data.data_dir`` (tfds default: ~/tensorflow_datasets) and read from there.

Labels: the ``labelIds`` PNGs hold Cityscapes' 34 label ids (0..33); the 19 classes that
are trained and evaluated get train ids 0..18 (the official table of cityscapesScripts'
``labels.py``, restated in ``LABEL_ID_TO_TRAIN_ID``); every other id ("unlabeled", "ego
vehicle", "parking", "rail track", "guard rail", "caravan", "trailer", ...) becomes 255 =
ignore. Stored as the downloaded PNG bytes (see ``downloaded.py``), mapped on read.

Shapes: H, W image height and width (1024 x 2048 for every Cityscapes image).
"""
from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds

from pointrend_jax.data.downloaded import (EncodedSource, ManualDirBuilder, ManualDirError,
                                           RawExample, label_table, load_builder, pair_by_stem,
                                           report)

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle")
# labelId -> trainId of the 19 evaluated classes; every other labelId -> 255.
LABEL_ID_TO_TRAIN_ID = {
    7: 0,    # road
    8: 1,    # sidewalk
    11: 2,   # building
    12: 3,   # wall
    13: 4,   # fence
    17: 5,   # pole
    19: 6,   # traffic light
    20: 7,   # traffic sign
    21: 8,   # vegetation
    22: 9,   # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
VARIANTS = ("fine",)
DOWNLOAD_URL = "https://www.cityscapes-dataset.com/downloads/"
IMAGE_ZIP, LABEL_ZIP = "leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"

INSTRUCTIONS = f"""\
Cityscapes: download {IMAGE_ZIP} (11 GB) and {LABEL_ZIP} (241 MB) from
{DOWNLOAD_URL} (free account), unzip both into one folder DIR
(`unzip {IMAGE_ZIP} -d DIR && unzip {LABEL_ZIP} -d DIR`), so that
DIR/leftImg8bit/{{train,val}}/CITY/*{IMAGE_SUFFIX} and
DIR/gtFine/{{train,val}}/CITY/*{LABEL_SUFFIX} exist, and pass --config.data.manual_dir=DIR."""


def list_examples(manual_dir: str | os.PathLike) -> dict[str, list[RawExample]]:
    """The train and val examples under ``manual_dir``, sorted by stem (CITY_SEQ_FRAME).

    Raises ManualDirError naming the missing folder (and the zip it comes from) or every
    image without its labelIds PNG and labelIds PNG without its image.
    """
    root = pathlib.Path(manual_dir)
    for folder, archive in (("leftImg8bit", IMAGE_ZIP), ("gtFine", LABEL_ZIP)):
        if not (root / folder).is_dir():
            found_zip = (root / archive).is_file()
            extra = (f"\n{root / archive} is there but not extracted: unzip {archive} -d {root}"
                     if found_zip else "")
            if folder == "leftImg8bit" and (root / "train").is_dir():
                extra += (f"\n{root} looks like a sub-folder of the download: pass the folder "
                          f"that contains leftImg8bit/ and gtFine/.")
            raise ManualDirError(f"Cityscapes: missing folder {root / folder} (from {archive}).{extra}\n"
                                 f"{INSTRUCTIONS}")
    dirs = {split: (root / "leftImg8bit" / split, root / "gtFine" / split) for split in ("train", "val")}
    for image_dir, label_dir in dirs.values():
        for folder, archive in ((image_dir, IMAGE_ZIP), (label_dir, LABEL_ZIP)):
            if not folder.is_dir():
                raise ManualDirError(f"Cityscapes: missing folder {folder} (from {archive}; is the "
                                     f"extraction complete?).\n{INSTRUCTIONS}")
    splits, problems = {}, []
    for split, (image_dir, label_dir) in dirs.items():
        images = {p.name[:-len(IMAGE_SUFFIX)]: p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
        labels = {p.name[:-len(LABEL_SUFFIX)]: p for p in label_dir.glob(f"*/*{LABEL_SUFFIX}")}
        if not images:
            raise ManualDirError(f"Cityscapes: no images {image_dir}/CITY/*{IMAGE_SUFFIX} "
                                 f"(from {IMAGE_ZIP}).\n{INSTRUCTIONS}")
        # The counterpart is expected in the folder of the same city.
        splits[split], unpaired = pair_by_stem(
            images, labels,
            expected_label=lambda s, i=images, d=label_dir: d / i[s].parent.name / f"{s}{LABEL_SUFFIX}",
            expected_image=lambda s, l=labels, d=image_dir: d / l[s].parent.name / f"{s}{IMAGE_SUFFIX}")
        problems += unpaired
    if problems:
        raise ManualDirError(report("Cityscapes: images and labels do not pair up (a partial "
                                    "extraction?)", problems, INSTRUCTIONS))
    return splits


class CityscapesSemantic(ManualDirBuilder):
    """Cityscapes fine: 19 classes, labelIds mapped to train ids on read."""

    name = "cityscapes_semantic"  # not "cityscapes": tfds registers that name itself
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Downloaded PNG bytes of leftImg8bit and gtFine labelIds."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="fine", description="gtFine, train and val.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    CLASS_NAMES = CLASS_NAMES
    LABEL_TABLE = label_table(LABEL_ID_TO_TRAIN_ID)
    DESCRIPTION = "Cityscapes fine semantic segmentation (19 classes)."

    def list_examples(self, manual_dir):
        return list_examples(manual_dir)


def cityscapes_builder(variant: str = "fine", *,
                       data_dir: str | os.PathLike | None = None) -> CityscapesSemantic:
    """The builder (not yet prepared); ``data_dir=None`` means the tfds default folder."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown Cityscapes variant {variant!r}; choose one of {list(VARIANTS)}.")
    return CityscapesSemantic(config=variant, data_dir=None if data_dir is None else os.fspath(data_dir),
                              file_format="array_record")


def load(variant: str = "fine", *, manual_dir: str | os.PathLike | None = None,
         data_dir: str | os.PathLike | None = None) -> dict[str, EncodedSource]:
    """Prepares Cityscapes from ``manual_dir`` if needed; returns ``{"train", "val"}`` sources."""
    return load_builder(lambda: cityscapes_builder(variant, data_dir=data_dir), manual_dir=manual_dir)
