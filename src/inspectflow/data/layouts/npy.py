"""The array layout: ``X.npy`` images with ``Y.npy`` labels (integer class indices or one-hot rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inspectflow.data.layouts.base import Layout, SourceImage, outside_link
from inspectflow.errors import DataError


def detect(root: Path) -> bool:
    """True when ``root`` holds ``X.npy`` and ``Y.npy``."""
    return (root / "X.npy").is_file() and (root / "Y.npy").is_file()


def read(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads ``X.npy`` ``(N, H, W[, C])`` with one label per image from ``Y.npy``.

    Args:
        root: Data root.
        classes: Class names in label-index order, which integer labels are turned into.

    Returns:
        One record per image, in array order, with no split.

    Raises:
        DataError: An array is missing or unreadable, or the shapes do not give one label per image.
    """
    x_path, y_path = root / "X.npy", root / "Y.npy"
    images, labels = _load_array(x_path), _load_array(y_path)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise DataError(f"{x_path}: shape {images.shape}, expected (N, H, W) or (N, H, W, C)")
    if images.dtype.kind == "f" and np.isnan(images).any():
        first = int(np.flatnonzero(np.isnan(images).reshape(len(images), -1).any(axis=1))[0])
        raise DataError(f"{x_path}: image {first} holds NaN samples (not a number)")
    if labels.ndim == 2:  # one-hot rows
        labels = labels.argmax(axis=1)
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{y_path}: shape {labels.shape} does not give one label per image of {x_path.name}")
    return [
        SourceImage(
            source=x_path.name,
            index=index,
            label=_label_name(raw, classes),
            split=None,
            pixels=pixels,
            dtype=str(images.dtype),
        )
        for index, (pixels, raw) in enumerate(zip(images, labels, strict=True))
    ]


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if reason := outside_link(path, path.parent):
        raise DataError(f"{path}: {reason}")
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


LAYOUT = Layout(
    name="npy",
    priority=40,
    has_masks=False,
    description="X.npy with Y.npy",
    detect=detect,
    read=read,
)
