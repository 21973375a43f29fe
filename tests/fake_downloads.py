"""Tiny fake copies of the official downloads, in their exact layouts, for the data tests.

Each writer returns ``{split: [(stem, image uint8 (H, W, 3) as decoded by PIL, raw label
uint8 (H, W))]}`` so a test can check what the data layer reads pixel by pixel. Labels are
random maps over every raw id of the data set, including ids that must become 255.
Distractor files of the real downloads (Cityscapes colour/instance PNGs and polygons, the
test split, VOC images outside the segmentation lists) are written too.

The expected mappings are restated here independently of the library, from the official
definitions: Cityscapes by class name -> labelId (cityscapesScripts' labels.py).
"""
from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

# Official Cityscapes labelIds of the 19 evaluated classes, by name.
CITYSCAPES_LABEL_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17,
    "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23,
    "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28, "train": 31,
    "motorcycle": 32, "bicycle": 33,
}


def _random_labels(rng, shape, values):
    """A label map of ``shape`` drawn from ``values``, in blocks (so crops keep structure),
    with every value present at least once when the map is big enough."""
    h, w = shape
    blocks = rng.choice(np.asarray(values, np.uint8), size=(-(-h // 4), -(-w // 4)))
    label = np.kron(blocks, np.ones((4, 4), np.uint8))[:h, :w].copy()
    flat = label.reshape(-1)
    count = min(len(values), flat.size)
    flat[rng.choice(flat.size, count, replace=False)] = np.asarray(values, np.uint8)[:count]
    return label


def _random_image(rng, shape):
    h, w = shape
    base = rng.integers(0, 256, (-(-h // 8), -(-w // 8), 3)).astype(np.uint8)
    image = np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]
    return np.clip(image.astype(np.int16) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)


def _save_jpeg(path: pathlib.Path, image: np.ndarray) -> np.ndarray:
    """Writes a JPEG; returns the pixels PIL decodes from it (what the data layer must read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _save_png(path: pathlib.Path, array: np.ndarray, palette=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if palette is not None:
        img = img.convert("L")
        img = Image.frombytes("P", img.size, img.tobytes())
        img.putpalette(palette)
    img.save(path, format="PNG")


# --------------------------------------------------------------------------------------
# Cityscapes.
# --------------------------------------------------------------------------------------


def cityscapes_expected(raw: np.ndarray, class_names) -> np.ndarray:
    """Train ids of a labelIds map: the position of the class in ``class_names``, else 255."""
    out = np.full(raw.shape, 255, np.uint8)
    for name, label_id in CITYSCAPES_LABEL_IDS.items():
        out[raw == label_id] = list(class_names).index(name)
    return out


def write_cityscapes(root, rng, *, num_train=3, num_val=2, size=(64, 128)):
    """DIR/leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png and DIR/gtFine/... as unzipped."""
    root = pathlib.Path(root)
    values = list(range(34)) + [255, 40, 99, 200]  # every labelId, plus ids that do not exist
    written = {}
    for split, count, cities in (("train", num_train, ("aachen", "bochum")),
                                 ("val", num_val, ("frankfurt",)), ("test", 1, ("berlin",))):
        written[split] = []
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_{19 + i:06d}"
            image, raw = _random_image(rng, size), _random_labels(rng, size, values)
            _save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            gt = root / "gtFine" / split / city
            _save_png(gt / f"{stem}_gtFine_labelIds.png", raw)
            # Distractors of the real zip, which the reader must ignore.
            _save_png(gt / f"{stem}_gtFine_color.png", image)
            _save_png(gt / f"{stem}_gtFine_instanceIds.png", raw)
            (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
            written[split].append((stem, image, raw))
    (root / "license.txt").write_text("fake")
    del written["test"]
    return written


# --------------------------------------------------------------------------------------
# ADE20K.
# --------------------------------------------------------------------------------------


def ade20k_expected(raw: np.ndarray) -> np.ndarray:
    """0 and ids > 150 -> 255; k -> k - 1."""
    out = raw.astype(np.int32) - 1
    return np.where((raw == 0) | (raw > 150), 255, out).astype(np.uint8)


def write_ade20k(root, rng, *, num_train=3, num_val=2, sizes=((48, 64), (64, 48), (40, 56))):
    """DIR/ADEChallengeData2016/{images,annotations}/{training,validation}/ as unzipped."""
    base = pathlib.Path(root) / "ADEChallengeData2016"
    values = list(range(151)) + [151, 255]
    written = {}
    for split, sub, count in (("train", "training", num_train), ("val", "validation", num_val)):
        written[split] = []
        for i in range(count):
            stem = f"ADE_{'train' if split == 'train' else 'val'}_{i + 1:08d}"
            shape = sizes[i % len(sizes)]
            image = _save_jpeg(base / "images" / sub / f"{stem}.jpg", _random_image(rng, shape))
            raw = _random_labels(rng, shape, values)
            _save_png(base / "annotations" / sub / f"{stem}.png", raw)
            written[split].append((stem, image, raw))
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    return written


# --------------------------------------------------------------------------------------
# Pascal VOC 2012 (+ SBD).
# --------------------------------------------------------------------------------------


def voc_palette() -> list[int]:
    """The VOC colour map (index bits spread over the high bits of R, G, B), 256 * 3 values."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def voc_expected(raw: np.ndarray) -> np.ndarray:
    """0..20 stay, everything else (the 255 border, stray ids) -> 255."""
    return np.where(raw <= 20, raw, 255).astype(np.uint8)


def _voc_label(rng, shape):
    values = list(range(21)) + [255, 255, 255, 37]
    raw = _random_labels(rng, shape, values)
    raw[0, :] = 255  # a "void" border
    return raw


def write_voc(root, rng, *, num_train=3, num_val=2, sbd=False, size=(48, 64)):
    """DIR/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation} as extracted.

    With ``sbd``, also DIR/benchmark_RELEASE/dataset/{img,cls,train.txt,val.txt}: SBD train
    holds a VOC train image, two SBD-only images and a VOC val image; SBD val one more
    SBD-only image. Returns the VOC splits, plus "train_aug" when ``sbd`` is set.
    """
    root = pathlib.Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    written = {}
    for split, count, year in (("train", num_train, 2007), ("val", num_val, 2008)):
        written[split] = []
        for i in range(count):
            stem = f"{year}_{i:06d}"
            image = _save_jpeg(voc / "JPEGImages" / f"{stem}.jpg", _random_image(rng, size))
            raw = _voc_label(rng, size)
            _save_png(voc / "SegmentationClass" / f"{stem}.png", raw, palette=voc_palette())
            written[split].append((stem, image, raw))
    _save_jpeg(voc / "JPEGImages" / "2011_009999.jpg", _random_image(rng, size))  # not listed
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s, _, _ in written[split]))
    (lists / "trainval.txt").write_text(
        "".join(f"{s}\n" for split in ("train", "val") for s, _, _ in written[split]))
    if sbd:
        written["train_aug"] = _write_sbd(root, rng, written, size)
    return written


def _write_sbd(root, rng, written, size):
    import scipy.io

    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    sbd_only = {}
    for stem in ("2009_000001", "2010_000002", "2011_000003"):
        image = _save_jpeg(dataset / "img" / f"{stem}.jpg", _random_image(rng, size))
        seg = rng.integers(0, 21, size).astype(np.uint8)  # SBD: ids 0..20, no border
        scipy.io.savemat(dataset / "cls" / f"{stem}.mat", {"GTcls": {
            "Segmentation": seg, "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8),
            "Boundaries": np.zeros((20, 1), dtype=object)}})
        sbd_only[stem] = (stem, image, seg)
    # Overlaps: the first VOC train image and the first VOC val image are also in SBD
    # (their .mat files hold different labels, which must not be used).
    for stem, image, _ in (written["train"][0], written["val"][0]):
        _save_jpeg(dataset / "img" / f"{stem}.jpg", image)
        scipy.io.savemat(dataset / "cls" / f"{stem}.mat", {"GTcls": {
            "Segmentation": np.full(size, 7, np.uint8)}})
    train_ids = [written["train"][0][0], "2009_000001", "2010_000002", written["val"][0][0]]
    (dataset / "train.txt").write_text("".join(f"{s}\n" for s in train_ids))
    (dataset / "val.txt").write_text("2011_000003\n")
    aug = {s: ex for s, ex in sbd_only.items()}
    aug.update({ex[0]: ex for ex in written["train"]})
    return [aug[s] for s in sorted(aug)]



# --------------------------------------------------------------------------------------
# Cityscapes instances (gtFine instanceIds).
# --------------------------------------------------------------------------------------

# cityscapesScripts' labels with instances that are evaluated, in label-id order (the 8 classes)
CITYSCAPES_THING_LABEL_IDS = {
    "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28, "train": 31,
    "motorcycle": 32, "bicycle": 33,
}
CITYSCAPES_UNEVALUATED_THINGS = (29, 30)  # caravan, trailer: instances, not evaluated
_STUFF_IDS = (0, 4, 7, 8, 11, 17, 21, 23)


def write_cityscapes_instances(root, rng, *, num_train=3, num_val=2, size=(64, 128), cell=(16, 32)):
    """DIR/leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png and
    DIR/gtFine/{...}/CITY/*_gtFine_instanceIds.png (16-bit) as unzipped, plus the other gtFine
    files of the zip as distractors.

    Each ``cell`` of an image holds at most one drawn region (so regions never overlap),
    of a random kind: "thing" (id label_id * 1000 + k, k from 0), "group" (the plain thing
    label id: crowd), "unevaluated" (caravan/trailer instance ids), "thin" (a thing instance
    one pixel wide) or nothing; the rest is stuff label ids. The first cell holds a thing,
    except on train image 1, which has no thing at all (no non-crowd instance). Returns ``{split: [(stem, image, ids int32 (H, W), regions)]}``, ``regions`` a
    list of ``{"kind", "label_id", "value", "mask" bool (H, W)}`` in drawing order.
    """
    root = pathlib.Path(root)
    h, w = size
    kinds = ("thing", "thing", "thing", "group", "unevaluated", "thin", "none")
    written = {}
    for split, count, cities in (("train", num_train, ("aachen", "bochum")),
                                 ("val", num_val, ("frankfurt", "lindau")), ("test", 1, ("berlin",))):
        written[split] = []
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_{19 + i:06d}"
            image = _random_image(rng, size)
            ids = _random_labels(rng, size, _STUFF_IDS).astype(np.int32)
            regions, next_k = [], {}
            for top in range(0, h - cell[0] + 1, cell[0]):
                for left in range(0, w - cell[1] + 1, cell[1]):
                    kind = str(rng.choice(kinds if split != "train" or i != 1 else kinds[3:]))
                    if (split != "train" or i != 1) and top == 0 and left == 0:
                        kind = "thing"
                    if kind == "none":
                        continue
                    label_id = int(rng.choice(list(CITYSCAPES_THING_LABEL_IDS.values())))
                    if kind == "unevaluated":
                        label_id = int(rng.choice(CITYSCAPES_UNEVALUATED_THINGS))
                    value = label_id
                    if kind != "group":
                        value = label_id * 1000 + next_k.get(label_id, 0)
                        next_k[label_id] = next_k.get(label_id, 0) + 1
                    mask = np.zeros(size, bool)
                    if kind == "thin":
                        y0, x = top + int(rng.integers(0, 4)), left + int(rng.integers(0, cell[1]))
                        mask[y0:y0 + int(rng.integers(4, cell[0] - 3)), x] = True
                    else:  # a rectangle of >= 10 x 12 = 120 pixels (cityscapesScripts: >= 100)
                        rh, rw = int(rng.integers(10, cell[0] + 1)), int(rng.integers(12, cell[1] + 1))
                        y0 = top + int(rng.integers(0, cell[0] - rh + 1))
                        x0 = left + int(rng.integers(0, cell[1] - rw + 1))
                        mask[y0:y0 + rh, x0:x0 + rw] = True
                        if rng.random() < 0.5:  # a notch: not a box
                            mask[y0, x0:x0 + rw // 2] = False
                    ids[mask] = value
                    regions.append({"kind": kind, "label_id": label_id, "value": value, "mask": mask})
            _save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            gt = root / "gtFine" / split / city
            _save_png(gt / f"{stem}_gtFine_instanceIds.png", ids.astype(np.uint16))
            # Distractors of the real zip, which the reader must ignore.
            _save_png(gt / f"{stem}_gtFine_labelIds.png",
                      np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8))
            _save_png(gt / f"{stem}_gtFine_color.png", image)
            (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
            written[split].append((stem, image, ids, regions))
    (root / "license.txt").write_text("fake")
    del written["test"]
    return written
