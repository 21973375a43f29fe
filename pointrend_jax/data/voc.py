"""Pascal VOC 2012 segmentation (21 classes), optionally with the SBD "aug" training set.

Download ``VOCtrainval_11-May-2012.tar`` from the PASCAL VOC 2012 page,
http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, and extract it into a folder DIR, the
manual dir::

    DIR/VOCdevkit/VOC2012/JPEGImages/ID.jpg
    DIR/VOCdevkit/VOC2012/SegmentationClass/ID.png         palette PNG: indices are class ids
    DIR/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt     one ID per line

Variants (``--config.data.variant``):
  voc2012      train.txt (1,464 images) and val.txt (1,449).
  voc2012_aug  the usual "train_aug" set for training (10,582 images): VOC train plus the
               Semantic Boundaries Dataset (SBD; Hariharan et al. 2011) train and val,
               minus every VOC val image; val is VOC val as above. Needs SBD's
               ``benchmark.tgz`` (http://home.bharathh.info/pubs/codes/SBD/download.html)
               extracted into the same DIR: DIR/benchmark_RELEASE/dataset/{img/ID.jpg,
               cls/ID.mat, train.txt, val.txt}. An image with a VOC 2012 annotation keeps it
               (finer, with the 255 border); the others take SBD's ``GTcls.Segmentation``
               (read with scipy, stored as an 8-bit PNG), which has no ignore border.

Labels: 0 background, 1..20 the object classes (``CLASS_NAMES``), 255 the "void" border and
difficult regions, kept as ignore; any other value maps to 255. VOC's PNGs are palette
("P") images and their indices are the ids; images and VOC PNGs are stored as the
downloaded bytes (see ``downloaded.py``), mapped on read.

Shapes: H, W image height and width (at most 500 x 500).
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from pointrend_jax.data.downloaded import (EncodedSource, ManualDirBuilder, ManualDirError,
                                           RawExample, encode_png_label, label_table,
                                           load_builder, report)

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VARIANTS = ("voc2012", "voc2012_aug")
VOC_PAGE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
VOC_TAR = "VOCtrainval_11-May-2012.tar"
SBD_PAGE = "http://home.bharathh.info/pubs/codes/SBD/download.html"
SBD_TGZ = "benchmark.tgz"

INSTRUCTIONS = f"""\
Pascal VOC 2012: download {VOC_TAR} (2 GB) from
{VOC_PAGE}, extract it into a folder DIR (`tar -xf {VOC_TAR} -C DIR`),
so that DIR/VOCdevkit/VOC2012/{{JPEGImages,SegmentationClass,ImageSets/Segmentation}} exist,
and pass --config.data.manual_dir=DIR. The voc2012_aug variant also needs SBD's {SBD_TGZ}
from {SBD_PAGE} extracted into the same DIR
(`tar -xzf {SBD_TGZ} -C DIR`: DIR/benchmark_RELEASE/dataset/{{img,cls,train.txt,val.txt}})."""


def find_voc_root(manual_dir: str | os.PathLike) -> pathlib.Path:
    """The VOC2012 folder: DIR/VOCdevkit/VOC2012, DIR/VOC2012, or DIR itself."""
    root = pathlib.Path(manual_dir)
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() or (candidate / "SegmentationClass").is_dir():
            return candidate
    extra = ""
    if (root / VOC_TAR).is_file():
        extra = f"\n{root / VOC_TAR} is there but not extracted: tar -xf {VOC_TAR} -C {root}"
    raise ManualDirError(f"Pascal VOC: missing folder {root / 'VOCdevkit' / 'VOC2012'} (from "
                         f"{VOC_TAR}).{extra}\n{INSTRUCTIONS}")


def read_ids(path: pathlib.Path, what: str) -> list[str]:
    """The image ids listed in ``path``, one per line (blank lines skipped)."""
    if not path.is_file():
        raise ManualDirError(f"{what}: missing list {path}.\n{INSTRUCTIONS}")
    ids = [line.strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise ManualDirError(f"{what}: {path} lists no images.\n{INSTRUCTIONS}")
    return ids


def _require(paths: list[pathlib.Path], problems: list[str], stem: str, listed_in: pathlib.Path):
    for path in paths:
        if not path.is_file():
            problems.append(f"{stem} (listed in {listed_in}): missing {path}")


def _voc_split(voc: pathlib.Path, split: str) -> tuple[list[RawExample], list[str]]:
    for folder in ("JPEGImages", "SegmentationClass"):
        if not (voc / folder).is_dir():
            raise ManualDirError(f"Pascal VOC: missing folder {voc / folder} (from {VOC_TAR}; is "
                                 f"the extraction complete?).\n{INSTRUCTIONS}")
    listed_in = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    examples, problems = [], []
    for stem in read_ids(listed_in, "Pascal VOC"):
        ex = RawExample(stem, voc / "JPEGImages" / f"{stem}.jpg",
                        voc / "SegmentationClass" / f"{stem}.png")
        _require([ex.image, ex.label], problems, stem, listed_in)
        examples.append(ex)
    return examples, problems


def _sbd_examples(root: pathlib.Path, voc_train: list[RawExample],
                  voc_val: list[RawExample]) -> tuple[list[RawExample], list[str]]:
    """train_aug: VOC train + SBD train + SBD val - VOC val, VOC annotations preferred."""
    sbd = root / "benchmark_RELEASE" / "dataset"
    if not sbd.is_dir():
        raise ManualDirError(f"Pascal VOC voc2012_aug: missing folder {sbd} (from SBD's "
                             f"{SBD_TGZ}); use --config.data.variant=voc2012 for the VOC "
                             f"images alone.\n{INSTRUCTIONS}")
    for folder in ("img", "cls"):
        if not (sbd / folder).is_dir():
            raise ManualDirError(f"Pascal VOC voc2012_aug: missing folder {sbd / folder} (from "
                                 f"{SBD_TGZ}; is the extraction complete?).\n{INSTRUCTIONS}")
    by_stem = {ex.stem: ex for ex in voc_train}
    val_stems = {ex.stem for ex in voc_val}
    problems = []
    for listed_in in (sbd / "train.txt", sbd / "val.txt"):
        for stem in read_ids(listed_in, "SBD"):
            if stem in by_stem or stem in val_stems:
                continue
            ex = RawExample(stem, sbd / "img" / f"{stem}.jpg", sbd / "cls" / f"{stem}.mat")
            _require([ex.image, ex.label], problems, stem, listed_in)
            by_stem[stem] = ex
    return [by_stem[s] for s in sorted(by_stem)], problems


def list_examples(manual_dir: str | os.PathLike, variant: str = "voc2012") -> dict[str, list[RawExample]]:
    """The train and val examples of ``variant`` under ``manual_dir``, in list order (train
    of voc2012_aug sorted by id).

    Raises ManualDirError naming a missing folder or list, or every listed id whose image
    or annotation is missing.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown Pascal VOC variant {variant!r}; choose one of {list(VARIANTS)}.")
    voc = find_voc_root(manual_dir)
    train, problems = _voc_split(voc, "train")
    val, val_problems = _voc_split(voc, "val")
    problems += val_problems
    if variant == "voc2012_aug":
        train, sbd_problems = _sbd_examples(pathlib.Path(manual_dir), train, val)
        problems += sbd_problems
    if problems:
        raise ManualDirError(report("Pascal VOC: listed images without their files (a partial "
                                    "extraction?)", problems, INSTRUCTIONS))
    return {"train": train, "val": val}


def read_sbd_label(path: pathlib.Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/ID.mat`` file, uint8 (H, W) ids 0..20."""
    import scipy.io  # only the voc2012_aug variant needs scipy

    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        return np.asarray(mat["GTcls"].Segmentation, np.uint8)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        raise ManualDirError(f"SBD label {path} is unreadable or has no GTcls.Segmentation "
                             f"({err}).\n{INSTRUCTIONS}") from err


class PascalVocSemantic(ManualDirBuilder):
    """Pascal VOC 2012 segmentation: 21 classes, 255 = ignore."""

    name = "pascal_voc_semantic"  # not "voc": tfds registers that name (detection) itself
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Downloaded JPEG/PNG bytes; SBD .mat labels as 8-bit PNGs."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="voc2012", description="VOC 2012 train (1,464) and val."),
        tfds.core.BuilderConfig(name="voc2012_aug",
                                description="train_aug with SBD (10,582) and VOC 2012 val."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    CLASS_NAMES = CLASS_NAMES
    LABEL_TABLE = label_table({k: k for k in range(len(CLASS_NAMES))})
    DESCRIPTION = "Pascal VOC 2012 semantic segmentation, 21 classes."

    def list_examples(self, manual_dir):
        return list_examples(manual_dir, self.builder_config.name)

    def encode_label(self, path: pathlib.Path) -> bytes:
        if path.suffix.lower() != ".mat":
            return path.read_bytes()
        label = read_sbd_label(path)
        image = path.parent.parent / "img" / f"{path.stem}.jpg"
        with Image.open(image) as img:
            if img.size != (label.shape[1], label.shape[0]):
                raise ManualDirError(f"SBD label {path} is {label.shape[1]}x{label.shape[0]} but "
                                     f"its image {image} is {img.size[0]}x{img.size[1]} (WxH).")
        return encode_png_label(label)


def voc_builder(variant: str = "voc2012", *,
                data_dir: str | os.PathLike | None = None) -> PascalVocSemantic:
    """The builder (not yet prepared); ``data_dir=None`` means the tfds default folder."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown Pascal VOC variant {variant!r}; choose one of {list(VARIANTS)}.")
    return PascalVocSemantic(config=variant, data_dir=None if data_dir is None else os.fspath(data_dir),
                             file_format="array_record")


def load(variant: str = "voc2012", *, manual_dir: str | os.PathLike | None = None,
         data_dir: str | os.PathLike | None = None) -> dict[str, EncodedSource]:
    """Prepares VOC from ``manual_dir`` if needed; returns ``{"train", "val"}`` sources."""
    return load_builder(lambda: voc_builder(variant, data_dir=data_dir), manual_dir=manual_dir)
