"""The generic segmentation layout: ``images/`` beside ``masks/``, masks matched to images by file stem."""

from __future__ import annotations

from pathlib import Path

from inspectflow.data.layouts.base import Layout, SourceImage, find_mask, read_image_with_mask
from inspectflow.errors import DataError
from inspectflow.imaging import IMAGE_SUFFIXES


def detect(root: Path) -> bool:
    """True when ``root`` holds an ``images/`` folder beside a ``masks/`` folder."""
    return (root / "images").is_dir() and (root / "masks").is_dir()


def read(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads ``root/images/*`` with masks ``root/masks/<stem>[_label|_mask].<ext>`` matched by file stem.

    Args:
        root: Data root.
        classes: Unused: every image gets the label ``all``.

    Returns:
        One record per image, in file-name order, with no split; an image without a mask has an empty
        one and ``mask_missing`` set.

    Raises:
        DataError: ``images/`` holds no images.
    """
    image_dir, mask_dir = root / "images", root / "masks"
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{image_dir}: no images found")
    records = []
    for path in images:
        mask = find_mask(mask_dir, path.stem)
        records.append(read_image_with_mask(path, mask, root, "all", None, None))
        records[-1].mask_missing = mask is None
    return records


LAYOUT = Layout(
    name="images-masks",
    priority=20,
    has_masks=True,
    description="images/ with masks/",
    detect=detect,
    read=read,
)
