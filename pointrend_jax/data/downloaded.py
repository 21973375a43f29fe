"""What the tfds builders over downloaded data sets (Cityscapes, ADE20K, Pascal VOC) share.

Each data set is a ``ManualDirBuilder``: it lists the user's extracted download (the tfds
"manual dir") into ``RawExample``s per split, copies the files' bytes into ``array_record``
files, and is read back through ``EncodedSource``, which decodes with PIL and maps the data
set's raw label ids to training ids (255 = ignore) with a 256-entry table. Neither writing
nor reading needs TensorFlow (see ``synthetic.py``: ``code_path = None``, the file lock).

Storage: the encoded files themselves, not decoded arrays. Each example stores the bytes
of the downloaded image file (PNG for Cityscapes, JPEG for ADE20K and VOC) and of its label
PNG exactly as they are on disk, in ``tfds.features.Tensor(shape=(), dtype=object)``
(a bytes scalar; encodable without TF, unlike ``tfds.features.Image``). Why not the zlib
arrays of ``synthetic.py``:
  - size: a JPEG is several times smaller than its pixels even after zlib, and a PNG is
    already deflate with per-row prediction filters, which compress photographs better than
    zlib over the raw array. The stored bytes are what the download holds (Cityscapes
    train + val: about 3,500 PNGs of about 2 MB) rather than decoded pixels (6.3 MB per
    Cityscapes image before zlib).
  - exactness: nothing is re-encoded, so no JPEG generation loss and the stored labels are
    the official files bit for bit; the label mapping lives in code (one table per data
    set, applied on read) and a fix to it needs no re-preparation.
  - speed of preparation: it is a file copy with a header check, no decoding, so preparing
    a tiny fake takes a fraction of a second and the full Cityscapes minutes.
The cost is a PNG/JPEG decode per read (PIL releases the GIL while decoding; grain's
reader threads or worker processes run them in parallel).

Before preparing, the listing checks that the manual dir has the download's layout and
that every image has its label (and the reverse), and reads each pair's headers to check
sizes, raising one ``ManualDirError`` that names the expected path and where to download.
When the data is already prepared and ``manual_dir`` is given too, the example counts are
compared, so a copy prepared from a different download (a test fake, an older partial
extraction) is not silently reused.

Shapes: H, W image height and width.
"""
from __future__ import annotations

import abc
import dataclasses
import io
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from pointrend_jax.data.files import (IGNORE_LABEL, LABEL_MODES, DataError, read_image,
                                      read_label, report)
from pointrend_jax.data.synthetic import _file_lock

SPLITS = ("train", "val")


class ManualDirError(DataError):
    """The manual dir does not hold the download in the layout the builder expects."""


@dataclasses.dataclass(frozen=True)
class RawExample:
    """One image of a split as found in the manual dir.

    ``label`` is a file the builder's ``encode_label`` turns into stored bytes (for most
    data sets an 8-bit PNG copied as it is).
    """

    stem: str
    image: pathlib.Path
    label: pathlib.Path


def label_table(mapping: Mapping[int, int]) -> np.ndarray:
    """A uint8 (256,) lookup table: raw id -> train id for ids in ``mapping``, else 255."""
    table = np.full(256, IGNORE_LABEL, np.uint8)
    for raw, train in mapping.items():
        if not (0 <= raw < 256 and (0 <= train < IGNORE_LABEL)):
            raise ValueError(f"label mapping {raw} -> {train} is outside uint8 / uses 255")
        table[raw] = train
    return table


def check_manual_dir(manual_dir: str | os.PathLike | None, what: str, instructions: str) -> pathlib.Path:
    """``manual_dir`` as a Path; raises ManualDirError when it is unset, missing or empty."""
    if not manual_dir:
        raise ManualDirError(f"{what}: --config.data.manual_dir is not set.\n{instructions}")
    root = pathlib.Path(manual_dir).expanduser()
    if not root.is_dir():
        raise ManualDirError(f"{what}: --config.data.manual_dir={root} is not a folder.\n{instructions}")
    if not any(root.iterdir()):
        raise ManualDirError(f"{what}: --config.data.manual_dir={root} is empty.\n{instructions}")
    return root


def pair_by_stem(images: Mapping[str, pathlib.Path], labels: Mapping[str, pathlib.Path],
                 expected_label: Callable[[str], pathlib.Path],
                 expected_image: Callable[[str], pathlib.Path]) -> tuple[list[RawExample], list[str]]:
    """Examples for stems present in both, sorted; and a problem line per unpaired file."""
    problems = [f"image {images[s]} has no label: expected {expected_label(s)}"
                for s in sorted(images.keys() - labels.keys())]
    problems += [f"label {labels[s]} has no image: expected {expected_image(s)}"
                 for s in sorted(labels.keys() - images.keys())]
    examples = [RawExample(s, images[s], labels[s]) for s in sorted(images.keys() & labels.keys())]
    return examples, problems


def check_headers(examples: Sequence[RawExample], hint: str = "") -> None:
    """Reads the image and label headers of every example (no decoding); raises one
    ManualDirError naming each unreadable file, size mismatch or wrong label mode.

    Labels that PIL cannot open as images (e.g. SBD ``.mat`` files) are checked when
    they are encoded instead.
    """
    problems = []
    for ex in examples:
        image_size = None
        try:
            with Image.open(ex.image) as img:
                image_size = img.size
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            problems.append(f"image {ex.image} is unreadable: {err}")
        if ex.label.suffix.lower() != ".png":
            continue
        try:
            with Image.open(ex.label) as lab:
                label_size, label_mode = lab.size, lab.mode
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            problems.append(f"label {ex.label} is unreadable: {err}")
            continue
        if label_mode not in LABEL_MODES:
            problems.append(f"label {ex.label} has PIL mode {label_mode!r}; expected an 8-bit "
                            f"id PNG (mode 'L' or palette 'P'), as in the official download")
        if image_size is not None and label_size != image_size:
            problems.append(f"label {ex.label} is {label_size[0]}x{label_size[1]} but its image "
                            f"{ex.image} is {image_size[0]}x{image_size[1]} (WxH)")
    if problems:
        raise ManualDirError(report("Files of the manual dir cannot be used", problems, hint))


def encode_png_label(label: np.ndarray) -> bytes:
    """uint8 (H, W) ids as the bytes of an 8-bit grey PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(label, np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# Decoding on read.
# --------------------------------------------------------------------------------------


class EncodedSource:
    """A prepared split as the contract's examples: image uint8 (H, W, 3), label uint8
    (H, W) train ids (255 = ignore), stem ``str``.

    Random access (``__len__``, ``__getitem__``), so grain can use it as a source.
    """

    def __init__(self, source, table: np.ndarray, name: str):
        self._source = source
        self._table = np.asarray(table, np.uint8)
        self._name = name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._decode(self._source[index])

    def __getitems__(self, indices):
        return [self._decode(ex) for ex in self._source.__getitems__(indices)]

    def _decode(self, example: Mapping[str, Any]) -> dict[str, Any]:
        stem = example["stem"]
        stem = stem.decode("utf-8") if isinstance(stem, bytes) else str(stem)
        what = f"{self._name} example {stem!r}"
        image = read_image(example["image"], f"of {what}")
        raw = read_label(example["label"], f"of {what}")
        if raw.shape != image.shape[:2]:
            raise DataError(f"The label of {what} is {raw.shape[1]}x{raw.shape[0]} but its image is "
                            f"{image.shape[1]}x{image.shape[0]} (WxH).")
        return {"image": image, "label": np.take(self._table, raw), "stem": stem}

    def __repr__(self) -> str:
        return f"EncodedSource({self._name}, {self._source!r})"


# --------------------------------------------------------------------------------------
# The builder.
# --------------------------------------------------------------------------------------


class ManualDirBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A data set prepared from files the user downloaded; subclasses say where they are.

    Subclasses set ``VERSION``, ``BUILDER_CONFIGS``, ``MANUAL_DOWNLOAD_INSTRUCTIONS``,
    ``CLASS_NAMES``, ``LABEL_TABLE`` (raw id -> train id) and ``DESCRIPTION``, and
    implement ``list_examples``.
    """

    # Nothing is downloaded by tfds, so there are no URL checksums next to the module; see
    # synthetic.py for why this must be None for a builder inside a package (tfds 4.9.10).
    code_path = None
    CLASS_NAMES: Sequence[str] = ()
    LABEL_TABLE: np.ndarray = np.full(256, IGNORE_LABEL, np.uint8)
    DESCRIPTION = ""

    @abc.abstractmethod
    def list_examples(self, manual_dir: pathlib.Path) -> dict[str, list[RawExample]]:
        """The examples of each split in ``manual_dir``; raises ManualDirError when the
        layout is wrong or files are missing."""

    def encode_label(self, path: pathlib.Path) -> bytes:
        """The bytes stored for a label file: the file itself (an 8-bit id PNG)."""
        return path.read_bytes()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                # The encoded files' bytes (see the module docstring for why).
                "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                "label": tfds.features.Tensor(shape=(), dtype=np.object_),
                "stem": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(class_names=list(self.CLASS_NAMES)),
        )

    def _split_generators(self, dl_manager):
        splits = self.list_examples(pathlib.Path(os.fspath(dl_manager.manual_dir)))
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, examples: Sequence[RawExample]) -> Iterator[tuple[str, dict]]:
        for ex in examples:
            yield ex.stem, {"image": ex.image.read_bytes(), "label": self.encode_label(ex.label),
                            "stem": ex.stem}


def load_builder(make_builder: Callable[[], ManualDirBuilder], *,
                 manual_dir: str | os.PathLike | None) -> dict[str, EncodedSource]:
    """Prepares the data set from ``manual_dir`` if needed; returns ``{"train", "val"}`` sources.

    ``manual_dir`` may be None once the data is prepared under the builder's data dir.
    """
    builder = make_builder()
    what = f"{builder.name}/{builder.builder_config.name}"
    instructions = builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
    examples = None
    if manual_dir:
        root = check_manual_dir(manual_dir, what, instructions)
        examples = builder.list_examples(root)
    # Several processes on one machine may start at once: the first prepares under the
    # lock, the others then find the data ready (as synthetic.load_synthetic).
    version_dir = pathlib.Path(builder.data_dir)
    version_dir.parent.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(version_dir.parent.parent / f".{version_dir.parent.name}.lock"):
        builder = make_builder()  # looks again, now under the lock
        if not builder.is_prepared():
            if examples is None:
                raise ManualDirError(
                    f"{what} is not prepared under {builder.data_dir}, and "
                    f"--config.data.manual_dir is not set to prepare it from the download.\n"
                    f"{instructions}")
            check_headers([ex for split in examples.values() for ex in split],
                          hint=instructions)
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root)))
        elif examples is not None:
            _check_same_copy(builder, examples, root)
    return {split: EncodedSource(builder.as_data_source(split), builder.LABEL_TABLE, what)
            for split in SPLITS}


def _check_same_copy(builder: ManualDirBuilder, examples: Mapping[str, Sequence[RawExample]],
                     root: pathlib.Path) -> None:
    for split in SPLITS:
        prepared = builder.info.splits[split].num_examples
        if prepared != len(examples[split]):
            raise ManualDirError(
                f"{builder.data_dir} was prepared from another copy of the data: its {split} "
                f"split has {prepared} examples, but {root} has {len(examples[split])}. Delete "
                f"{builder.data_dir} to prepare it again from {root}, or pass another "
                f"--config.data.data_dir.")
