"""The DAGM 2007 layout: one folder per texture class, with defect masks and a ``Labels.txt`` per split.

::

    ClassN/Train/NNNN.PNG                 8-bit grayscale images
    ClassN/Train/Label/NNNN_label.PNG     defect masks, for defective images only
    ClassN/Train/Label/Labels.txt         "1", then id<TAB>flag<TAB>NNNN.PNG<TAB>0<TAB>NNNN_label.PNG|0 (CRLF)
    ClassN/Test/...                       the same for the test split

An image without a mask file has an empty mask; the Labels.txt flag is kept so validation can check that it
agrees with the mask.
"""

from __future__ import annotations

import re
from pathlib import Path

from inspectflow.data.layouts.base import Layout, SourceImage, find_mask, read_image_with_mask
from inspectflow.errors import DataError
from inspectflow.imaging import IMAGE_SUFFIXES

DAGM_SPLITS = {"Train": "train", "Test": "test"}
LABELS_FILE = "Labels.txt"
_CLASS_DIR = re.compile(r"^Class\d+$")


def detect(root: Path) -> bool:
    """True when ``root`` holds DAGM class folders, or is one."""
    return bool(_class_dirs(root))


def read(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads DAGM class folders under ``root`` (or ``root`` itself when it is one).

    Args:
        root: Data root.
        classes: Class folder names to read, such as ``["Class1", "Class4"]``; empty reads all.

    Returns:
        One record per image, labelled with its class folder's name.

    Raises:
        DataError: A requested class is missing, or a Labels.txt is malformed or names a missing image.
    """
    class_dirs = _class_dirs(root)
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
                records += _read_split(split_dir, base, class_dir.name, split)
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


def _class_dirs(root: Path) -> list[Path]:
    def is_class(path: Path) -> bool:
        return bool(_CLASS_DIR.match(path.name)) and any((path / s).is_dir() for s in DAGM_SPLITS)

    if is_class(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if d.is_dir() and is_class(d)), key=lambda d: int(d.name[5:]))


def _read_split(split_dir: Path, root: Path, label: str, split: str) -> list[SourceImage]:
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
        # A mask Labels.txt names but the folder lacks is kept as a path, to be reported as missing.
        mask_path = label_dir / mask_name if mask_name else find_mask(label_dir, path.stem)
        records.append(read_image_with_mask(path, mask_path, root, label, split, flag))
    return records


LAYOUT = Layout(
    name="dagm",
    priority=10,
    has_masks=True,
    description="DAGM's ClassN/{Train,Test} folders",
    detect=detect,
    read=read,
)
