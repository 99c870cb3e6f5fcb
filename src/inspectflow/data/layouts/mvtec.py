"""The MVTec AD layout: one category folder, defect-free training images and test images by defect kind.

::

    train/good/NNN.png                    defect-free training images
    test/good/NNN.png                     defect-free test images
    test/<kind>/NNN.png                   defective test images, one folder per defect kind
    ground_truth/<kind>/NNN_mask.png      0/255 defect masks, for the defect kinds only

An image is labelled with its kind folder's name (``good`` for defect-free parts). A good image has an
empty mask; a defective one without its mask file is flagged ``mask_missing`` (``data.missing_masks``
decides whether that is an error).
"""

from __future__ import annotations

from pathlib import Path

from inspectflow.data.layouts.base import Layout, SourceImage, find_mask, read_image_with_mask
from inspectflow.errors import DataError
from inspectflow.imaging import IMAGE_SUFFIXES

GOOD = "good"
MASK_DIR = "ground_truth"


def detect(root: Path) -> bool:
    """True when ``root`` holds ``train/good/`` as its only training folder, and a ``test/`` folder.

    Class folders split into ``train/`` and ``test/`` with a ``good`` class among others stay the
    class-folder layout's.
    """
    if not ((root / "train" / GOOD).is_dir() and (root / "test").is_dir()):
        return False
    return all(folder.name == GOOD for folder in _kind_dirs(root / "train"))


def read(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads one MVTec AD category: ``train/good``, then every ``test/<kind>`` in name order.

    Args:
        root: Data root, the category folder.
        classes: Unused: labels are the kind folders' names.

    Returns:
        One record per image, train first, then the test kinds by name, files by name; split from the
        folder; masks from ``ground_truth/<kind>/<stem>_mask.png``.

    Raises:
        DataError: ``train/`` holds images outside ``train/good``, or the category holds no images.
    """
    strays = [d for d in _kind_dirs(root / "train") if d.name != GOOD]
    if strays:
        names = ", ".join(d.relative_to(root).as_posix() for d in strays)
        raise DataError(f"{root}: {names}: an MVTec training split holds good parts only (train/good)")
    train_good = _images(root / "train" / GOOD)
    records = [read_image_with_mask(path, None, root, GOOD, "train", None) for path in train_good]
    for kind_dir in _kind_dirs(root / "test"):
        records += [_read_test_image(path, root, kind_dir.name) for path in _images(kind_dir)]
    if not records:
        raise DataError(f"{root}: no images found in train/good or test/<kind>")
    return records


def _read_test_image(path: Path, root: Path, kind: str) -> SourceImage:
    if kind == GOOD:
        return read_image_with_mask(path, None, root, GOOD, "test", None)
    mask = find_mask(root / MASK_DIR / kind, path.stem)
    record = read_image_with_mask(path, mask, root, kind, "test", None)
    record.mask_missing = mask is None
    return record


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _kind_dirs(split_dir: Path) -> list[Path]:
    """The folders of ``split_dir`` that hold images, by name."""
    if not split_dir.is_dir():
        return []
    return sorted(d for d in split_dir.iterdir() if d.is_dir() and _images(d))


LAYOUT = Layout(
    name="mvtec",
    priority=15,
    has_masks=True,
    description="MVTec AD (train/good, test/<kind>, ground_truth/<kind>)",
    detect=detect,
    read=read,
)
