"""The input data layer: data sets as random-access sources, and grain pipelines over them.

Every source yields examples ``{"image": uint8 (H, W, 3), "label": uint8 (H, W), "stem": str}``
with class ids in ``label`` and 255 = ignore. ``build_datasets(config.data)`` picks the data
set named by ``config.data.name``:

  synthetic  SyntheticShapes, drawn by the project (tfds builder, array_record, read without
             TensorFlow); ``variant`` "binary" or "multiclass"; ``data_dir`` (None = tfds
             default); optional ``num_train``, ``num_val``, ``image_size``, ``seed``.
  folder     users' files under ``root`` (see ``folder.py``); ``num_classes`` may be None
             when ``root/classes.txt`` exists; both splits are checked up front.
  cityscapes, ade20k, voc
             the official downloads, read by tfds builders (``cityscapes.py``, ``ade20k.py``,
             ``voc.py``; array_record, no TensorFlow): ``manual_dir`` is the folder the
             user extracted the download into (needed to prepare the data once; a missing
             or partial download fails with the expected path and the download page),
             ``data_dir`` where the prepared data goes (None = tfds default), ``variant``
             one of the module's ``VARIANTS`` ("fine"; "scene_parsing"; "voc2012" or
             "voc2012_aug"). ``num_train``/``num_val`` do not apply.

Instance segmentation data sets (``INSTANCE_DATASETS``) yield instead ``{"image": uint8
(H, W, 3), "boxes": float32 (M, 4) xyxy, "classes": int32 (M,), "masks": uint8 (M, H, W),
"image_id": int, "stem": str}`` (``coco.CocoSource``); their classes have no background:

  synthetic_instances
             SyntheticInstances, drawn by the project and written once in COCO format
             (``synthetic_instances.py``): ``data_dir`` (None = tfds default folder),
             ``variant`` "standard" or "large", optional ``num_train``, ``num_val``,
             ``image_size`` (standard only), ``seed``, ``num_classes``.
  coco       any COCO-format instances json (COCO 2017, labelling tools' exports):
             ``train_images``, ``train_json``, ``val_images``, ``val_json``; or
             ``manual_dir`` holding COCO 2017 as downloaded (``train2017/``, ``val2017/``,
             ``annotations/instances_{train,val}2017.json``) for the paths not given.
  cityscapes_instances
             Cityscapes fine's 8 thing classes from the user's download
             (``cityscapes_instances.py``): ``manual_dir`` as for ``cityscapes``, read from
             the gtFine instanceIds PNGs; ``filter_empty_annotations`` as for ``coco``.

Both read point supervision's keys for the train split: ``point_supervision`` (points per
instance, 0 = masks), ``point_source`` ("masks" or "json", see ``point_labels.py``) and
``point_seed``.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Sequence

from pointrend_jax.data.files import DataError
from pointrend_jax.data.folder import FolderSource, resolve_class_names, validate_folder

DOWNLOADED_DATASETS = ("cityscapes", "ade20k", "voc")  # module names under pointrend_jax.data
INSTANCE_DATASETS = ("synthetic_instances", "coco", "cityscapes_instances")  # boxes, masks
SYNTHETIC_INSTANCE_VARIANTS = ("standard", "large")  # see synthetic_instances.py
DATASET_NAMES = ("synthetic", "folder", *DOWNLOADED_DATASETS, *INSTANCE_DATASETS)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What training and evaluation need to know about a data set."""

    num_classes: int
    class_names: Sequence[str]
    train: Any  # random-access source: len(source), source[i] -> example dict
    val: Any


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """cfg[key] for a ConfigDict, a mapping or a plain object; ``default`` when absent."""
    if hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def build_datasets(data_cfg: Any) -> DatasetSpec:
    """The train and val sources and class names named by ``data_cfg`` (``config.data``)."""
    name = _get(data_cfg, "name")
    if name == "synthetic":
        # Imported here: tensorflow_datasets is slow to import and folder data does not need it.
        from pointrend_jax.data import synthetic

        variant = _get(data_cfg, "variant", "multiclass")
        if variant not in synthetic.SYNTHETIC_CLASS_NAMES:
            raise ValueError(f"--config.data.variant={variant!r} is not a synthetic variant; "
                             f"choose one of {list(synthetic.VARIANTS)}.")
        sources = synthetic.load_synthetic(
            variant, data_dir=_get(data_cfg, "data_dir"), num_train=_get(data_cfg, "num_train"),
            num_val=_get(data_cfg, "num_val"), image_size=_get(data_cfg, "image_size"),
            seed=_get(data_cfg, "seed"))
        names = list(synthetic.SYNTHETIC_CLASS_NAMES[variant])
        _check_num_classes(_get(data_cfg, "num_classes"), names, f"synthetic {variant}")
        return DatasetSpec(len(names), names, sources["train"], sources["val"])
    if name == "folder":
        root = _get(data_cfg, "root")
        if not root:
            raise ValueError("--config.data.root must name the data folder (ROOT/{train,val}/{images,masks}).")
        names = resolve_class_names(root, _get(data_cfg, "num_classes"))
        for split in ("train", "val"):
            validate_folder(root, split, len(names))
        return DatasetSpec(len(names), names, FolderSource(root, "train"), FolderSource(root, "val"))
    if name in DOWNLOADED_DATASETS:
        # Imported here, like synthetic: tensorflow_datasets is slow to import.
        module = importlib.import_module(f"pointrend_jax.data.{name}")
        variant = _get(data_cfg, "variant")
        if variant not in module.VARIANTS:
            raise ValueError(f"--config.data.variant={variant!r} is not a {name} variant; "
                             f"choose one of {list(module.VARIANTS)}.")
        sources = module.load(variant, manual_dir=_get(data_cfg, "manual_dir"),
                              data_dir=_get(data_cfg, "data_dir"))
        names = list(module.CLASS_NAMES)
        _check_num_classes(_get(data_cfg, "num_classes"), names, f"{name} {variant}")
        return DatasetSpec(len(names), names, sources["train"], sources["val"])
    if name == "synthetic_instances":
        from pointrend_jax.data import synthetic_instances

        variant = _get(data_cfg, "variant", "standard")
        if variant not in SYNTHETIC_INSTANCE_VARIANTS:
            raise ValueError(f"--config.data.variant={variant!r} is not a synthetic_instances "
                             f"variant; choose one of {list(SYNTHETIC_INSTANCE_VARIANTS)}.")
        keys = ("num_train", "num_val", "image_size", "seed")
        values = {key: _get(data_cfg, key) for key in keys if _get(data_cfg, key) is not None}
        names = list(synthetic_instances.CLASS_NAMES)
        _check_num_classes(_get(data_cfg, "num_classes"), names, "synthetic_instances")
        sources = synthetic_instances.load_synthetic_instances(
            _get(data_cfg, "data_dir"), variant=variant, train_points=_point_labels(data_cfg), **values)
        return DatasetSpec(len(names), names, sources["train"], sources["val"])
    if name == "coco":
        from pointrend_jax.data.coco import CocoSource

        paths = {key: _get(data_cfg, key) for key in ("train_images", "train_json", "val_images", "val_json")}
        manual_dir = _get(data_cfg, "manual_dir")
        if manual_dir:  # COCO 2017 as downloaded: fills the paths not given
            layout = {"train_images": "train2017", "train_json": "annotations/instances_train2017.json",
                      "val_images": "val2017", "val_json": "annotations/instances_val2017.json"}
            paths = {key: value or os.path.join(manual_dir, layout[key]) for key, value in paths.items()}
        absent = [key for key, value in paths.items() if not value]
        if absent:
            raise ValueError(f"data set 'coco' needs {', '.join('--config.data.' + k for k in absent)}: "
                             f"the images folder and the COCO-format instances json of each split.")
        train = CocoSource(paths["train_images"], paths["train_json"], split_name="train",
                           filter_empty=bool(_get(data_cfg, "filter_empty_annotations")),
                           **_point_labels(data_cfg))
        val = CocoSource(paths["val_images"], paths["val_json"], split_name="val")
        names = train.class_names
        if val.category_ids != train.category_ids or val.class_names != names:
            raise DataError(f"{paths['val_json']} lists other categories than {paths['train_json']}: "
                            f"{list(zip(val.category_ids, val.class_names))} vs "
                            f"{list(zip(train.category_ids, names))}; both splits need the same.")
        _check_num_classes(_get(data_cfg, "num_classes"), names, f"coco {paths['train_json']}")
        return DatasetSpec(len(names), names, train, val)
    if name == "cityscapes_instances":
        from pointrend_jax.data import cityscapes_instances

        manual_dir = _get(data_cfg, "manual_dir")
        if not manual_dir:
            raise ValueError("data set 'cityscapes_instances' needs --config.data.manual_dir, the "
                             "folder with leftImg8bit/ and gtFine/ of the Cityscapes download.")
        if int(_get(data_cfg, "point_supervision") or 0):
            raise ValueError("--config.data.point_supervision applies to 'coco' and "
                             "'synthetic_instances'; 'cityscapes_instances' reads full masks.")
        train = cityscapes_instances.CityscapesInstanceSource(
            manual_dir, "train", filter_empty=bool(_get(data_cfg, "filter_empty_annotations")))
        val = cityscapes_instances.CityscapesInstanceSource(manual_dir, "val")
        names = list(cityscapes_instances.CLASS_NAMES)
        _check_num_classes(_get(data_cfg, "num_classes"), names, "cityscapes_instances")
        return DatasetSpec(len(names), names, train, val)
    raise ValueError(f"--config.data.name={name!r} is not a known data set; choose one of {list(DATASET_NAMES)}.")


def _point_labels(data_cfg: Any) -> dict[str, Any]:
    """The train CocoSource's point-label keywords (``points``, ``num_points``, ``point_seed``)
    from ``point_supervision``, ``point_source``, ``point_seed``; {} without point supervision."""
    num_points = int(_get(data_cfg, "point_supervision") or 0)
    if not num_points:
        return {}
    return {"points": _get(data_cfg, "point_source", "masks"), "num_points": num_points,
            "point_seed": int(_get(data_cfg, "point_seed") or 0)}


def _check_num_classes(num_classes: int | None, names: Sequence[str], what: str) -> None:
    if num_classes is not None and int(num_classes) != len(names):
        raise ValueError(f"--config.data.num_classes={num_classes} but {what} has {len(names)} "
                         f"classes ({', '.join(names)}); leave it unset or set it to {len(names)}.")


__all__ = ["DATASET_NAMES", "DOWNLOADED_DATASETS", "INSTANCE_DATASETS", "SYNTHETIC_INSTANCE_VARIANTS",
           "DataError", "DatasetSpec", "FolderSource", "build_datasets",
           "resolve_class_names", "validate_folder"]
