"""Readers of the on-disk layouts a classification dataset arrives in.

Each reader returns :class:`SourceImage` records with the pixels as stored; ingest resizes and caches them.
A file that cannot be decoded becomes a record with ``decode_error`` set, so that validation can name every
bad file at once. Structural problems (a missing CSV column, an index past the end of an array) are raised
at once as :class:`~inspectflow.errors.DataError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from inspectflow.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
KAGGLE_CSV_COLUMNS = ["index", "angle", "indication_type", "indication_value", "split"]
SPLIT_DIRS = ("train", "test")


@dataclass
class SourceImage:
    """One image as read from its source.

    Attributes:
        source: File path relative to the data root.
        index: Row inside ``source`` for array files, 0 for image files.
        label: Class name as the source gives it (may be outside the configured classes).
        split: ``train``/``test`` when the source defines the split, else ``None``.
        pixels: ``(H, W, C)`` array as stored, or ``None`` when it cannot be decoded.
        dtype: Stored sample type, such as ``uint8``.
        decode_error: Why the image cannot be decoded, else ``None``.
        mask: Segmentation only: the binarized defect mask ``(H, W)`` bool; all False for an image without a
            mask file; ``None`` when the mask file cannot be decoded.
        mask_source: Segmentation only: the mask file relative to the data root, else ``None``.
        mask_error: Why the mask cannot be decoded, else ``None``.
        defect_flag: The source's own defective/clean flag (DAGM's Labels.txt), when it has one.
    """

    source: str
    index: int
    label: str
    split: str | None
    pixels: np.ndarray | None
    dtype: str
    decode_error: str | None = None
    mask: np.ndarray | None = None
    mask_source: str | None = None
    mask_error: str | None = None
    defect_flag: bool | None = None


def detect_format(root: Path) -> str:
    """Names the layout of ``root``: ``dagm``, ``images-masks``, ``kaggle-h5``, ``npy`` or ``folders``.

    Raises:
        DataError: ``root`` is missing or holds none of the supported layouts.
    """
    from inspectflow.data.segmentation import is_dagm, is_images_masks

    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if is_dagm(root):
        return "dagm"
    if is_images_masks(root):
        return "images-masks"
    if any(h5.with_suffix(".csv").is_file() for h5 in root.glob("*.h5")):
        return "kaggle-h5"
    if (root / "X.npy").is_file() and (root / "Y.npy").is_file():
        return "npy"
    if _class_dirs(root) or any(_class_dirs(root / split) for split in SPLIT_DIRS):
        return "folders"
    raise DataError(
        f"{root}: no supported layout found (expected *.h5 with a same-named *.csv, X.npy with Y.npy, "
        "one folder of images per class, DAGM's ClassN/{Train,Test} folders, or images/ with masks/)"
    )


def read_source(root: Path, layout: str, classes: list[str]) -> list[SourceImage]:
    """Reads every image of a dataset.

    Args:
        root: Data root.
        layout: ``auto``, ``kaggle-h5``, ``npy``, ``folders``, ``dagm`` or ``images-masks``.
        classes: Class names, used to turn integer labels of ``Y.npy`` into names; for ``dagm``, the
            classes to read (all when empty).

    Returns:
        The images in a stable order.
    """
    from inspectflow.data.segmentation import read_dagm, read_images_masks

    if layout == "auto":
        layout = detect_format(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if layout == "dagm":
        return read_dagm(root, classes)
    if layout == "images-masks":
        return read_images_masks(root)
    if layout == "kaggle-h5":
        return list(_read_kaggle_h5(root))
    if layout == "npy":
        return list(_read_npy(root, classes))
    if layout == "folders":
        return list(_read_folders(root))
    raise DataError(f"unknown data.format {layout!r}")


def _read_kaggle_h5(root: Path) -> Iterator[SourceImage]:
    import h5py  # only this layout needs it

    pairs = sorted(h5 for h5 in root.glob("*.h5") if h5.with_suffix(".csv").is_file())
    if not pairs:
        raise DataError(f"{root}: no *.h5 file with a same-named *.csv (Kaggle textile layout)")
    for h5_path in pairs:
        csv_path = h5_path.with_suffix(".csv")
        try:
            table = pd.read_csv(csv_path)
        except Exception as exc:
            raise DataError(f"{csv_path}: not a readable CSV ({exc})") from None
        missing = [c for c in KAGGLE_CSV_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {missing}; expected {KAGGLE_CSV_COLUMNS}")
        try:
            with h5py.File(h5_path, "r") as h5:
                if "images" not in h5:
                    raise DataError(f"{h5_path}: no dataset named 'images'")
                images = h5["images"][()]
        except OSError as exc:
            raise DataError(f"{h5_path}: not a readable HDF5 file ({exc})") from None
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.ndim != 4:
            raise DataError(f"{h5_path}: 'images' has shape {images.shape}, expected (N, H, W, C)")
        for row in table.itertuples(index=False):
            index = int(row.index)
            if not 0 <= index < len(images):
                raise DataError(f"{csv_path}: index {index} is outside {h5_path.name} ({len(images)} images)")
            yield SourceImage(
                source=h5_path.name,
                index=index,
                label=str(row.indication_type),
                split=str(row.split) if pd.notna(row.split) else None,
                pixels=images[index],
                dtype=str(images.dtype),
            )


def _read_npy(root: Path, classes: list[str]) -> Iterator[SourceImage]:
    x_path, y_path = root / "X.npy", root / "Y.npy"
    images, labels = _load_array(x_path), _load_array(y_path)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise DataError(f"{x_path}: shape {images.shape}, expected (N, H, W) or (N, H, W, C)")
    if labels.ndim == 2:  # one-hot rows
        labels = labels.argmax(axis=1)
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{y_path}: shape {labels.shape} does not give one label per image of {x_path.name}")
    for index, (pixels, raw) in enumerate(zip(images, labels, strict=True)):
        yield SourceImage(
            source=x_path.name,
            index=index,
            label=_label_name(raw, classes),
            split=None,
            pixels=pixels,
            dtype=str(images.dtype),
        )


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        array: np.ndarray = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    return array


def _label_name(raw: object, classes: list[str]) -> str:
    """Maps an integer label to its class name; anything else is kept as text for validation to judge."""
    if isinstance(raw, np.integer | int) and 0 <= int(raw) < len(classes):
        return classes[int(raw)]
    return str(raw.item() if isinstance(raw, np.generic) else raw)


def _read_folders(root: Path) -> Iterator[SourceImage]:
    split_roots: list[tuple[Path, str | None]] = [(root / s, s) for s in SPLIT_DIRS if _class_dirs(root / s)]
    for split_root, split in split_roots or [(root, None)]:
        for class_dir in _class_dirs(split_root):
            for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                yield read_image_file(path, root, class_dir.name, split)


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir())
    )


def read_image_file(path: Path, root: Path, label: str, split: str | None) -> SourceImage:
    """Decodes one image file with Pillow, recording a decode failure instead of raising it."""
    source = path.relative_to(root).as_posix()
    pixels, error = decode(path)
    if pixels is None:
        return SourceImage(source, 0, label, split, None, "unknown", decode_error=error)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    return SourceImage(source, 0, label, split, pixels, str(pixels.dtype))


def decode(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Decodes an image file with Pillow: ``(pixels, None)``, or ``(None, why)`` when it cannot."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image), None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
