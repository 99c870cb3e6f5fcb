"""The class-folder layout: one folder of images per class, optionally under ``train/`` and ``test/``."""

from __future__ import annotations

from pathlib import Path

from inspectflow.data.layouts.base import Layout, SourceImage, read_image_file
from inspectflow.imaging import IMAGE_SUFFIXES

SPLIT_DIRS = ("train", "test")


def detect(root: Path) -> bool:
    """True when ``root``, or its ``train/`` or ``test/``, holds a folder with images."""
    return bool(_class_dirs(root)) or any(_class_dirs(root / split) for split in SPLIT_DIRS)


def read(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads every image of every class folder, labelled with the folder's name.

    Args:
        root: Data root.
        classes: Unused: labels are the folder names.

    Returns:
        One record per image file, by split, class folder and file name; the split is the ``train/`` or
        ``test/`` folder when the source has them, else ``None``.
    """
    split_roots: list[tuple[Path, str | None]] = [(root / s, s) for s in SPLIT_DIRS if _class_dirs(root / s)]
    return [
        read_image_file(path, root, class_dir.name, split)
        for split_root, split in split_roots or [(root, None)]
        for class_dir in _class_dirs(split_root)
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    ]


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir())
    )


LAYOUT = Layout(
    name="folders",
    priority=50,
    has_masks=False,
    description="one folder of images per class",
    detect=detect,
    read=read,
)
