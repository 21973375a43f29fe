"""Cityscapes fine instance segmentation (8 thing classes), read from the user's download.

The same manual dir as the semantic reader (``cityscapes.py``): ``leftImg8bit_trainvaltest.zip``
and ``gtFine_trainvaltest.zip`` unzipped into one folder DIR::

    DIR/leftImg8bit/{train,val}/CITY/CITY_SEQ_FRAME_leftImg8bit.png        RGB, 2048x1024
    DIR/gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_instanceIds.png       16-bit instance ids

(2975 train and 500 val images; the other gtFine files are not read.) Give it as
``--config.data.manual_dir=DIR``; the files are read where they are, nothing is prepared.

Ground truth: the ``instanceIds`` PNGs, not the ``polygons`` json that detectron2's
``cityscapes_fine_instance_seg_*`` data sets read (``load_cityscapes_instances(from_json=True)``).
The PNGs are cityscapesScripts' own rasterisation of those polygons (later polygons drawn over
earlier ones), and what its instance evaluation scores against, so a training mask here is
pixel for pixel the mask the evaluation knows. detectron2 instead dilates each polygon by half
a pixel and subtracts the polygons drawn over it, so its training masks are about half a pixel
fatter along every edge than these; that and the box (below) are the only differences. The
PNG pixel ``v`` holds ``label_id * 1000 + k`` for instance ``k`` of class ``label_id``, and the
plain ``label_id`` (< 1000) for a group region ("cargroup", ...) or a class without instances.
Read as detectron2 reads them (its ``from_json=False`` rules):

* the 8 classes are the Cityscapes labels that have instances and are evaluated, in label-id
  order: ``CLASS_NAMES`` = person, rider, car, truck, bus, train, motorcycle, bicycle (label
  ids ``LABEL_IDS`` = 24, 25, 26, 27, 28, 31, 32, 33; class k of detectron2's models);
  caravan and trailer (29, 30: instances, not evaluated) and every stuff label are left out;
* group regions of those classes (``v < 1000``) are crowd: not training targets (dropped
  from the examples, as detectron2's mapper drops ``iscrowd``), kept in ``coco_gt()`` as
  ``iscrowd=1``;
* an instance whose pixels span a single row or a single column is dropped (detectron2's
  ``xmax <= xmin or ymax <= ymin`` on the pixel indices);
* boxes are the tight pixel box ``(xmin, ymin, xmax + 1, ymax + 1)``, the extent of the
  pixels, which is what the bounds of detectron2's dilated json polygons give (its PNG reader
  would give ``(xmin, ymin, xmax, ymax)``, a pixel smaller).

Every instanceIds PNG is read once when the source is built (a thread per CPU core, a few
minutes for the train split) to find the instances of each image, so that
``filter_empty=True`` (detectron2's ``FILTER_EMPTY_ANNOTATIONS``) can leave out the train images
without a non-crowd instance; the val split is scanned the same way.

``source[i]`` -> ``{"image": uint8 (H, W, 3) RGB, "boxes": float32 (M, 4) (x0, y0, x1, y1)
pixels, "classes": int32 (M,), "masks": uint8 (M, H, W) 0/1, "image_id": int (the index in
the split, sorted by stem), "stem": "CITY_SEQ_FRAME"}``, instances in increasing instance id,
the interface of ``coco.CocoSource`` (``category_ids`` are the Cityscapes label ids, so the
COCO results of a model carry them). ``instance_id_files`` and ``stems`` list the ground-truth
PNGs and stems by image id, for cityscapesScripts' evaluation (``instance/cityscapes_metrics.py``).

Shapes: H, W image height and width (1024 x 2048 for every Cityscapes image); M instances.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import pathlib
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from pointrend_jax.data.files import DataError, read_image, report

CLASS_NAMES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)  # cityscapesScripts' label id of each class
SPLITS = ("train", "val")
IMAGE_SUFFIX, INSTANCE_SUFFIX = "_leftImg8bit.png", "_gtFine_instanceIds.png"
DOWNLOAD_URL = "https://www.cityscapes-dataset.com/downloads/"
INSTRUCTIONS = f"""\
Cityscapes instances: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from
{DOWNLOAD_URL} (free account), unzip both into one folder DIR, so that
DIR/leftImg8bit/{{train,val}}/CITY/*{IMAGE_SUFFIX} and
DIR/gtFine/{{train,val}}/CITY/*{INSTANCE_SUFFIX} exist, and pass --config.data.manual_dir=DIR."""
_INSTANCE_MODES = ("I", "I;16", "I;16B", "I;16L")  # integer PNGs (the download's: 16-bit)
_CLASS_OF_LABEL = {label_id: k for k, label_id in enumerate(LABEL_IDS)}


def read_instance_ids(path: str | os.PathLike) -> np.ndarray:
    """An instanceIds PNG as int32 (H, W); a DataError naming the file if it is not one."""
    try:
        with Image.open(path) as img:
            img.load()
            mode, ids = img.mode, np.asarray(img, dtype=np.int32)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"Cannot read instanceIds PNG {path}: {err}") from err
    if mode not in _INSTANCE_MODES:
        raise DataError(f"{path}: PIL mode {mode!r}; an instanceIds PNG is a 16-bit integer "
                        f"image (label_id * 1000 + k per instance, the plain label id elsewhere).")
    return ids


def instances_of(ids: np.ndarray) -> list[dict[str, Any]]:
    """The thing instances and group regions of an instanceIds map (int (H, W)), by increasing
    id: ``{"id", "class", "box" (x0, y0, x1, y1) pixel extent, "iscrowd", "area"}``; other
    labels and instances one pixel high or wide are left out (see the module)."""
    found = []
    values, counts = np.unique(ids[ids >= LABEL_IDS[0]], return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        label_id = value // 1000 if value >= 1000 else value
        if label_id not in _CLASS_OF_LABEL:
            continue
        rows = np.flatnonzero((ids == value).any(axis=1))
        cols = np.flatnonzero((ids == value).any(axis=0))
        if rows[-1] <= rows[0] or cols[-1] <= cols[0]:
            continue
        found.append({"id": value, "class": _CLASS_OF_LABEL[label_id], "iscrowd": int(value < 1000),
                      "box": (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)),
                      "area": int(count)})
    return found


def list_split(manual_dir: str | os.PathLike, split: str) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """``[(stem, image path, instanceIds path)]`` of ``split`` sorted by stem; a DataError
    naming the missing folder or every unpaired file."""
    root = pathlib.Path(manual_dir)
    image_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (root / "leftImg8bit", root / "gtFine", image_dir, gt_dir):
        if not folder.is_dir():
            hint = ""
            if folder.name == "leftImg8bit" and (root / "train").is_dir():
                hint = f"\n{root} looks like a sub-folder of the download: pass the folder with leftImg8bit/ and gtFine/."
            raise DataError(f"Cityscapes instances: missing folder {folder}.{hint}\n{INSTRUCTIONS}")
    images = {p.name[:-len(IMAGE_SUFFIX)]: p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
    labels = {p.name[:-len(INSTANCE_SUFFIX)]: p for p in gt_dir.glob(f"*/*{INSTANCE_SUFFIX}")}
    if not images:
        stray = sorted(p.name for p in image_dir.glob("*/*.png"))[:3]
        found = f" (found {', '.join(stray)}: misnamed?)" if stray else ""
        raise DataError(f"Cityscapes instances: no images {image_dir}/CITY/*{IMAGE_SUFFIX}{found}.\n{INSTRUCTIONS}")
    problems = [f"image {images[s]} has no instanceIds PNG: expected "
                f"{gt_dir / images[s].parent.name / (s + INSTANCE_SUFFIX)}"
                for s in sorted(images.keys() - labels.keys())]
    problems += [f"instanceIds PNG {labels[s]} has no image: expected "
                 f"{image_dir / labels[s].parent.name / (s + IMAGE_SUFFIX)}"
                 for s in sorted(labels.keys() - images.keys())]
    if problems:
        raise DataError(report(f"Cityscapes instances: images and instanceIds PNGs of {split!r} do "
                               "not pair up (a partial extraction?)", problems, INSTRUCTIONS))
    return [(s, images[s], labels[s]) for s in sorted(images)]


class CityscapesInstanceSource:
    """Random access to one split of Cityscapes instances: ``source[i]`` -> example dict.

    Attributes:
      manual_dir, split_name: what it reads.
      category_ids: the Cityscapes label id of each class (``LABEL_IDS``).
      num_filtered_empty: images left out by ``filter_empty`` (no non-crowd instance).
      instance_id_files, stems: the instanceIds PNG and the stem of each image, by image id.
    """

    def __init__(self, manual_dir: str | os.PathLike, split_name: str = "train", *,
                 filter_empty: bool = False):
        if split_name not in SPLITS:
            raise ValueError(f"Cityscapes instances split {split_name!r} is not one of {list(SPLITS)}.")
        self.manual_dir, self.split_name = pathlib.Path(manual_dir), split_name
        files = list_split(self.manual_dir, split_name)
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            scanned = list(pool.map(lambda f: instances_of(read_instance_ids(f[2])), files))
        self.category_ids = list(LABEL_IDS)
        self.num_filtered_empty = 0
        if filter_empty:
            keep = [i for i, found in enumerate(scanned) if any(not a["iscrowd"] for a in found)]
            self.num_filtered_empty = len(files) - len(keep)
            if not keep:
                raise DataError(f"{self.manual_dir}/gtFine/{split_name}: no image has a non-crowd "
                                "instance, so --config.data.filter_empty_annotations leaves nothing "
                                "to train on.")
            if self.num_filtered_empty:
                logging.info("Cityscapes %s: %d of %d images without a non-crowd instance left out "
                             "(data.filter_empty_annotations)", split_name, self.num_filtered_empty,
                             len(files))
            files, scanned = [files[i] for i in keep], [scanned[i] for i in keep]
        self._files, self._instances = files, scanned
        self.instance_id_files = [str(f[2]) for f in files]
        self.stems = [f[0] for f in files]

    def __len__(self) -> int:
        return len(self._files)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (H, W, 3), instance ids int32 (H, W)) of image ``index``, checked alike."""
        _, image_path, ids_path = self._files[index]
        image, ids = read_image(image_path, str(image_path)), read_instance_ids(ids_path)
        if image.shape[:2] != ids.shape:
            raise DataError(f"Image {image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its "
                            f"instanceIds PNG {ids_path} is {ids.shape[1]}x{ids.shape[0]}.")
        return image, ids

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, ids = self._read(index)
        things = [a for a in self._instances[index] if not a["iscrowd"]]
        keys = np.asarray([a["id"] for a in things], np.int32)
        return {
            "image": image,
            "boxes": np.asarray([a["box"] for a in things], np.float32).reshape(len(things), 4),
            "classes": np.asarray([a["class"] for a in things], np.int32),
            "masks": (ids[None] == keys[:, None, None]).astype(np.uint8),
            "image_id": int(index),
            "stem": self._files[index][0],
        }

    def __getitems__(self, indices) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    @property
    def image_ids(self) -> list[int]:
        return list(range(len(self)))

    def coco_gt(self):
        """The ground truth as a ``pycocotools.coco.COCO`` (for COCOeval): every image, the 8
        categories (ids = label ids), the instances and the group regions (``iscrowd=1``) as
        RLE; reads every instanceIds PNG again."""
        from pycocotools.coco import COCO

        images, anns = [], []
        for index, (stem, _, ids_path) in enumerate(self._files):
            ids = read_instance_ids(ids_path)
            images.append({"id": index, "file_name": f"{stem}{IMAGE_SUFFIX}",
                           "height": int(ids.shape[0]), "width": int(ids.shape[1])})
            for a in self._instances[index]:
                x0, y0, x1, y1 = a["box"]
                rle = mask_utils.encode(np.asfortranarray((ids == a["id"]).astype(np.uint8)))
                anns.append({"id": len(anns) + 1, "image_id": index, "category_id": LABEL_IDS[a["class"]],
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": rle,
                             "area": float(a["area"]), "iscrowd": a["iscrowd"]})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt = COCO()
            gt.dataset = {"images": images, "annotations": anns,
                          "categories": [{"id": i, "name": n} for i, n in zip(LABEL_IDS, CLASS_NAMES)]}
            gt.createIndex()
        return gt

    def __repr__(self) -> str:
        return (f"CityscapesInstanceSource(manual_dir={str(self.manual_dir)!r}, "
                f"split_name={self.split_name!r}, len={len(self)})")
