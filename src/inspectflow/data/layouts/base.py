"""What a source layout is, the record its reader returns, and the file readers layouts share.

A reader returns :class:`SourceImage` records with the pixels as stored; ingest resizes and caches them.
A file that cannot be decoded becomes a record with ``decode_error`` set, so that validation can name every
bad file at once. Structural problems (a missing CSV column, an index past the end of an array) are raised
at once as :class:`~inspectflow.errors.DataError` naming the file.

Masks are binarized at > 127 because real masks are often not clean 0/255 (anti-aliasing, JPEG re-saves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspectflow.imaging import IMAGE_SUFFIXES, decode

#: Endings of a mask's file stem after its image's stem: ``0001.png``, ``0001_label.png``, ``0001_mask.png``.
MASK_SUFFIXES = ("", "_label", "_mask")


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
        mask_missing: Segmentation only: the layout expects a mask file for every image and found none
            for this one (read as clean; ``data.missing_masks`` decides whether that is an error).
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
    mask_missing: bool = False


@dataclass(frozen=True)
class Layout:
    """An on-disk layout a dataset can arrive in.

    Attributes:
        name: The ``data.format`` value that selects it, such as ``kaggle-h5``.
        priority: Detection order; lower is tried first, so a more specific layout goes before a looser one.
        has_masks: Its records carry defect masks (a segmentation dataset).
        description: What its files look like, for the "no supported layout found" message.
        detect: True when a data root is in this layout.
        read: Reads every image of a data root, given the configured classes, in a stable order.
    """

    name: str
    priority: int
    has_masks: bool
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, list[str]], list[SourceImage]]


def read_image_file(path: Path, root: Path, label: str, split: str | None) -> SourceImage:
    """Decodes one image file, recording a decode failure instead of raising it.

    Args:
        path: The image file.
        root: Data root, which ``source`` is relative to.
        label: Class name of the image.
        split: ``train``/``test`` when the source defines the split, else ``None``.

    Returns:
        The record, with ``(H, W, C)`` pixels or ``decode_error`` set.
    """
    source = path.relative_to(root).as_posix()
    pixels, error = _decode_inside(path, root)
    if pixels is None:
        return SourceImage(source, 0, label, split, None, "unknown", decode_error=error)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    return SourceImage(source, 0, label, split, pixels, str(pixels.dtype))


def read_image_with_mask(
    image_path: Path, mask_path: Path | None, root: Path, label: str, split: str | None, flag: bool | None
) -> SourceImage:
    """Decodes an image and its defect mask, recording failures instead of raising them.

    Args:
        image_path: The image file.
        mask_path: Its mask file; ``None`` for a clean image. A path that does not exist is recorded as a
            mask error (the source named a mask it does not hold).
        root: Data root, which ``source`` and ``mask_source`` are relative to.
        label: Class name of the image.
        split: ``train``/``test`` when the source defines the split, else ``None``.
        flag: The source's own defective/clean flag, when it has one.

    Returns:
        The record; its mask is all False when there is no mask file, ``None`` when it cannot be decoded.
    """
    record = read_image_file(image_path, root, label, split)
    record.defect_flag = flag
    if record.pixels is None:
        return record
    if mask_path is None or not mask_path.is_file():
        record.mask = np.zeros(record.pixels.shape[:2], dtype=bool)
        if mask_path is not None:
            record.mask_source = mask_path.relative_to(root).as_posix()
            record.mask_error = "mask file not found"
        return record
    record.mask_source = mask_path.relative_to(root).as_posix()
    mask, mask_error = _decode_inside(mask_path, root)
    if mask is None:
        record.mask_error = mask_error
        return record
    record.mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127
    return record


def outside_link(path: Path, root: Path) -> str | None:
    """Why ``path`` must not be read: a symbolic link that leads out of the data folder, else ``None``.

    A dataset is what its folder holds (and what DVC versions); a link to elsewhere would train on files
    that no data version records.
    """
    target = path.resolve()
    if target.is_relative_to(root.resolve()):
        return None
    return f"a link to {target}, outside the data folder"


def _decode_inside(path: Path, root: Path) -> tuple[np.ndarray | None, str | None]:
    reason = outside_link(path, root)
    return (None, reason) if reason else decode(path)


def find_mask(mask_dir: Path, stem: str) -> Path | None:
    """Finds the mask of the image named ``stem``: ``<stem>[_label|_mask].<image ending>``, any case.

    Returns:
        The first match in :data:`MASK_SUFFIXES` then ``IMAGE_SUFFIXES`` order, or ``None``.
    """
    for suffix in MASK_SUFFIXES:
        for extension in IMAGE_SUFFIXES:
            for candidate in (
                mask_dir / f"{stem}{suffix}{extension}",
                mask_dir / f"{stem}{suffix}{extension.upper()}",
            ):
                if candidate.is_file():
                    return candidate
    return None
