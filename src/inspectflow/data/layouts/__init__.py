"""The registry of source layouts: every module of this package that defines ``LAYOUT`` is one.

Adding a layout is one new module here defining ``LAYOUT = Layout(...)`` (see :mod:`.base`); the registry,
detection, ``data.format`` validation and ingest pick it up from there.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from inspectflow.data.layouts.base import Layout, SourceImage
from inspectflow.errors import ConfigError, DataError

__all__ = [
    "Layout",
    "SourceImage",
    "detect_layout",
    "get_layout",
    "layout_names",
    "layouts",
    "read_source",
]


@functools.cache
def layouts() -> tuple[Layout, ...]:
    """Returns every registered layout in detection order (by priority, then name)."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            layout = getattr(importlib.import_module(f"{__name__}.{module.name}"), "LAYOUT", None)
            if isinstance(layout, Layout):
                found.append(layout)
    return tuple(sorted(found, key=lambda layout: (layout.priority, layout.name)))


def layout_names() -> list[str]:
    """Returns the registered layouts' names in detection order."""
    return [layout.name for layout in layouts()]


def get_layout(name: str) -> Layout:
    """Returns the layout called ``name``.

    Raises:
        ConfigError: No layout has that name (the message lists the registered ones).
    """
    for layout in layouts():
        if layout.name == name:
            return layout
    raise ConfigError(f"unknown source layout {name!r}; registered layouts: {', '.join(layout_names())}")


def detect_layout(root: Path) -> Layout:
    """Returns the first layout, in detection order, that ``root`` is in.

    Raises:
        DataError: ``root`` is missing or in none of the registered layouts.
    """
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    for layout in layouts():
        if layout.detect(root):
            return layout
    expected = "; ".join(f"{layout.name}: {layout.description}" for layout in layouts())
    raise DataError(f"{root}: no supported layout found (expected {expected})")


def read_source(root: Path, name: str, classes: list[str], missing_masks: str = "error") -> list[SourceImage]:
    """Reads every image of a dataset.

    Args:
        root: Data root.
        name: ``auto`` (detect it) or a registered layout's name.
        classes: Configured class names, passed to the layout's reader: ``npy`` turns integer labels into
            them, ``dagm`` reads only those classes (all when empty).
        missing_masks: ``error``: an image whose mask file the layout expected and did not find gets a mask
            error, which validation reports; ``clean``: it is read as defect-free.

    Returns:
        The images in a stable order.

    Raises:
        DataError: ``root`` is missing, in no registered layout (``auto``) or broken.
        ConfigError: ``name`` is not a registered layout.
    """
    layout = detect_layout(root) if name == "auto" else get_layout(name)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    records = layout.read(root, classes)
    if missing_masks == "error":
        for record in records:
            if record.mask_missing:
                record.mask_error = "no mask file (if it is defect-free, set data.missing_masks=clean)"
    return records
