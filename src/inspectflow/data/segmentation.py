"""Readers of segmentation layouts: DAGM 2007 and a generic ``images/`` + ``masks/`` folder pair.

DAGM 2007 ships one folder per texture class::

    ClassN/Train/NNNN.PNG                 8-bit grayscale images
    ClassN/Train/Label/NNNN_label.PNG     defect masks, for defective images only
    ClassN/Train/Label/Labels.txt         "1", then id<TAB>flag<TAB>NNNN.PNG<TAB>0<TAB>NNNN_label.PNG|0 (CRLF)
    ClassN/Test/...                       the same for the test split

Masks are binarized at > 127 because real masks are often not clean 0/255 (anti-aliasing, JPEG re-saves).
An image without a mask file has an empty mask; the Labels.txt flag is kept so validation can check that it
agrees with the mask.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from inspectflow.data.sources import IMAGE_SUFFIXES, SourceImage, decode
from inspectflow.errors import DataError

DAGM_SPLITS = {"Train": "train", "Test": "test"}
LABELS_FILE = "Labels.txt"
MASK_SUFFIXES = ("", "_label", "_mask")
_CLASS_DIR = re.compile(r"^Class\d+$")


def is_dagm(root: Path) -> bool:
    """True when ``root`` holds DAGM class folders, or is one."""
    return bool(_dagm_class_dirs(root))


def is_images_masks(root: Path) -> bool:
    """True when ``root`` holds an ``images/`` folder beside a ``masks/`` folder."""
    return (root / "images").is_dir() and (root / "masks").is_dir()


def _dagm_class_dirs(root: Path) -> list[Path]:
    def is_class(path: Path) -> bool:
        return bool(_CLASS_DIR.match(path.name)) and any((path / s).is_dir() for s in DAGM_SPLITS)

    if is_class(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if d.is_dir() and is_class(d)), key=lambda d: int(d.name[5:]))


def read_dagm(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads DAGM class folders under ``root`` (or ``root`` itself when it is one).

    Args:
        root: Data root.
        classes: Class folder names to read, such as ``["Class1", "Class4"]``; empty reads all.

    Returns:
        One record per image, labelled with its class folder's name.

    Raises:
        DataError: A requested class is missing, or a Labels.txt is malformed or names a missing image.
    """
    class_dirs = _dagm_class_dirs(root)
    if not class_dirs:
        raise DataError(f"{root}: no DAGM class folders (ClassN/Train, ClassN/Test) found")
    if classes:
        found = {d.name: d for d in class_dirs}
        missing = [c for c in classes if c not in found]
        if missing:
            raise DataError(f"{root}: class folder(s) {missing} not found; found {sorted(found)}")
        class_dirs = [found[c] for c in classes]
    base = root.parent if class_dirs == [root] else root
    records: list[SourceImage] = []
    for class_dir in class_dirs:
        for split_name, split in DAGM_SPLITS.items():
            split_dir = class_dir / split_name
            if split_dir.is_dir():
                records += _read_dagm_split(split_dir, base, class_dir.name, split)
    return records


def _read_dagm_split(split_dir: Path, root: Path, label: str, split: str) -> list[SourceImage]:
    label_dir = split_dir / "Label"
    listed = parse_labels_txt(label_dir / LABELS_FILE) if (label_dir / LABELS_FILE).is_file() else {}
    images = sorted(p for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    present = {p.name for p in images}
    absent = sorted(name for name in listed if name not in present)
    if absent:
        raise DataError(f"{label_dir / LABELS_FILE}: lists image(s) not in {split_dir}: {absent[:5]}")
    records = []
    for path in images:
        flag, mask_name = listed.get(path.name, (None, None))
        mask_path = label_dir / mask_name if mask_name else _find_mask(label_dir, path.stem)
        records.append(_read_pair(path, mask_path, root, label, split, flag))
    return records


def parse_labels_txt(path: Path) -> dict[str, tuple[bool, str | None]]:
    """Parses a DAGM ``Labels.txt``: image file name -> (defective, mask file name or None).

    Raises:
        DataError: A line does not have DAGM's five tab-separated fields.
    """
    entries: dict[str, tuple[bool, str | None]] = {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines[1:], start=2):  # line 1 is DAGM's header, "1"
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 5 or fields[1] not in ("0", "1"):
            raise DataError(
                f"{path}: line {number} is not 'id<TAB>0|1<TAB>NNNN.PNG<TAB>0<TAB>NNNN_label.PNG|0': {line!r}"
            )
        defective = fields[1] == "1"
        entries[fields[2]] = (defective, fields[4] if fields[4] not in ("", "0") else None)
    return entries


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for extension in IMAGE_SUFFIXES:
            for candidate in (
                mask_dir / f"{stem}{suffix}{extension}",
                mask_dir / f"{stem}{suffix}{extension.upper()}",
            ):
                if candidate.is_file():
                    return candidate
    return None


def read_images_masks(root: Path) -> list[SourceImage]:
    """Reads ``root/images/*`` with masks ``root/masks/<stem>[_label|_mask].<ext>`` matched by file stem.

    Images without a mask are clean (empty mask). All images get the label ``all``.
    """
    image_dir, mask_dir = root / "images", root / "masks"
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{image_dir}: no images found")
    return [_read_pair(p, _find_mask(mask_dir, p.stem), root, "all", None, None) for p in images]


def _read_pair(
    image_path: Path, mask_path: Path | None, root: Path, label: str, split: str | None, flag: bool | None
) -> SourceImage:
    source = image_path.relative_to(root).as_posix()
    pixels, error = decode(image_path)
    if pixels is None:
        return SourceImage(source, 0, label, split, None, "unknown", decode_error=error, defect_flag=flag)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    record = SourceImage(source, 0, label, split, pixels, str(pixels.dtype), defect_flag=flag)
    if mask_path is None or not mask_path.is_file():
        record.mask = np.zeros(pixels.shape[:2], dtype=bool)
        if mask_path is not None:  # named by Labels.txt but absent
            record.mask_source = mask_path.relative_to(root).as_posix()
            record.mask_error = "mask file not found"
        return record
    record.mask_source = mask_path.relative_to(root).as_posix()
    mask, mask_error = decode(mask_path)
    if mask is None:
        record.mask_error = mask_error
        return record
    record.mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127
    return record
