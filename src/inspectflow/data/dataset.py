"""The ingested dataset: the artifact the ingest step writes and every later step reads.

A dataset directory holds:

* ``images.npy``: uint8 array ``(N, H, W, C)``, every image decoded once and resized to the workload's side,
  so later steps never decode again (DataLoader workers do not pay off on 2 cores; a decoded cache does).
* ``manifest.csv``: one row per image, in the same order as ``images.npy``, with the columns of
  :data:`MANIFEST_COLUMNS`.
* ``dataset.json``: the class names and where the data came from.
* ``masks.npz`` (segmentation only): uint8 ``(N, H, W)`` defect masks, 1 = defect, cached like the images
  and compressed (mostly zeros: a run's outputs would otherwise hold a second copy of the image count).

Images that cannot be decoded keep their row (``decode_error`` says why, pixels are zero) so that the
validate step can report every bad file at once instead of ingest stopping at the first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from inspectflow.imaging import Preprocess

IMAGES_FILE = "images.npy"
MASKS_FILE = "masks.npz"
MANIFEST_FILE = "manifest.csv"
INFO_FILE = "dataset.json"

#: Manifest columns. ``source`` is the file relative to the data root and ``index`` the row inside it (0 for
#: single-image files); ``width``/``height``/``channels``/``dtype`` describe the image as decoded from the
#: source (1 channel for grayscale, 3 for colour), before resizing; ``pixel_std`` is the standard deviation of
#: the cached pixels (0 for a constant image).
MANIFEST_COLUMNS = [
    "source",
    "index",
    "label",
    "split",
    "sha256",
    "width",
    "height",
    "channels",
    "dtype",
    "pixel_std",
    "decode_error",
]
#: Extra manifest columns of segmentation datasets: the mask file, its size as stored, its decoding error,
#: the source's own defect flag (DAGM's Labels.txt; empty when the source has none) and the share of the
#: image the mask covers.
MASK_COLUMNS = ["mask_source", "mask_width", "mask_height", "mask_error", "defect_flag", "defect_fraction"]
SPLITS = ("train", "test")


@dataclass
class DatasetInfo:
    """Facts about an ingested dataset kept beside the manifest.

    ``preprocess`` says how the source pixels were brought to the cached ones: a model trained on them
    keeps it, so that prediction brings new images to its input the same way.
    """

    classes: list[str]
    source: str
    format: str
    preprocess: Preprocess
    split_origin: str  # "source" when the source defines train/test, else "seeded"
    extra: dict[str, str] = field(default_factory=dict)
    good_class: str | None = None  # the class of parts that pass (``data.good_class``), if any
    ordinal: bool = False  # the classes are graded levels, in label-index order (``data.ordinal``)

    @property
    def good_index(self) -> int | None:
        """The good class's label index, or ``None`` when the classes name no passing part."""
        return None if self.good_class is None else self.classes.index(self.good_class)

    @property
    def channels(self) -> int:
        """Channels of the cached images."""
        return self.preprocess.channels


@dataclass
class Dataset:
    """An ingested dataset held in memory."""

    images: np.ndarray
    manifest: pd.DataFrame
    info: DatasetInfo
    masks: np.ndarray | None = None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns the images and integer labels of one split.

        Args:
            name: ``"train"`` or ``"test"``.

        Returns:
            ``(images, labels)`` with images ``(n, H, W, C)`` uint8 and labels ``(n,)`` int64 indices into
            ``info.classes``.
        """
        mask = (self.manifest["split"] == name).to_numpy()
        index = {c: i for i, c in enumerate(self.info.classes)}
        labels = self.manifest.loc[mask, "label"].map(index).to_numpy(dtype=np.int64)
        return self.images[mask], labels

    def split_masks(self, name: str) -> np.ndarray:
        """Returns the defect masks ``(n, H, W)`` uint8 of one split (segmentation datasets)."""
        if self.masks is None:
            raise ValueError("this dataset has no masks")
        return self.masks[(self.manifest["split"] == name).to_numpy()]

    def labels(self, name: str) -> np.ndarray:
        """The class names (str) of one split's images, in order."""
        return self.manifest.loc[self.manifest["split"] == name, "label"].astype(str).to_numpy()

    def defective(self, name: str) -> np.ndarray:
        """Whether each image of one split is defective.

        It is when its mask shows a defect, or its label is not the good class (when the dataset has one).
        """
        rows = self.manifest[self.manifest["split"] == name]
        flagged = np.zeros(len(rows), dtype=bool)
        if "defect_fraction" in rows:
            flagged |= rows["defect_fraction"].fillna(0).to_numpy(float) > 0
        if self.info.good_class is not None:
            flagged |= rows["label"].astype(str).to_numpy() != self.info.good_class
        return flagged

    def file_names(self, name: str) -> list[str]:
        """Returns the display names (:func:`file_name`) of one split's images, in order."""
        rows = self.manifest[self.manifest["split"] == name]
        return [file_name(s, i) for s, i in zip(rows["source"], rows["index"], strict=True)]


def file_name(source: str, index: int) -> str:
    """Names one image for messages: ``hole/0003.png`` for a file, ``train64.h5[17]`` for an array row."""
    return source if source.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")) else f"{source}[{index}]"


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hashes decoded pixels with their shape, so equal images match across file formats."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def save_dataset(dataset: Dataset, out_dir: Path) -> None:
    """Writes a dataset directory (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / IMAGES_FILE, dataset.images)
    columns = MANIFEST_COLUMNS
    if dataset.masks is not None:
        np.savez_compressed(out_dir / MASKS_FILE, masks=dataset.masks)
        columns = MANIFEST_COLUMNS + MASK_COLUMNS
    dataset.manifest[columns].to_csv(out_dir / MANIFEST_FILE, index=False)
    (out_dir / INFO_FILE).write_text(json.dumps(asdict(dataset.info), indent=2))


def load_dataset(path: Path) -> Dataset:
    """Reads a dataset directory written by :func:`save_dataset`."""
    fields = json.loads((path / INFO_FILE).read_text())
    info = DatasetInfo(**{**fields, "preprocess": Preprocess(**fields["preprocess"])})
    text_columns = {"decode_error", "label", "mask_source", "mask_error"}
    manifest = pd.read_csv(path / MANIFEST_FILE, dtype=dict.fromkeys(text_columns, "string"))
    images = np.load(path / IMAGES_FILE)
    masks = None
    if (path / MASKS_FILE).is_file():
        with np.load(path / MASKS_FILE) as stored:
            masks = stored["masks"]
    return Dataset(images=images, manifest=manifest, info=info, masks=masks)


def decoded_bytes(dataset: Dataset) -> int:
    """The bytes of the images and masks decoded at the working size (what training holds in memory)."""
    return dataset.images.nbytes + (0 if dataset.masks is None else dataset.masks.nbytes)


def dataset_digest(manifest: pd.DataFrame) -> str:
    """Content hash of a dataset: its images' pixel hashes with their labels and splits, order-independent."""
    rows = sorted(
        f"{sha}\t{label}\t{split}"
        for sha, label, split in zip(manifest["sha256"], manifest["label"], manifest["split"], strict=True)
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()
