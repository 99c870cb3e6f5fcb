"""The Kaggle textile layout: ``*.h5`` image arrays, each with a same-named ``*.csv`` of labels and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from inspectflow.data.layouts.base import Layout, SourceImage, outside_link
from inspectflow.errors import DataError

KAGGLE_CSV_COLUMNS = ["index", "angle", "indication_type", "indication_value", "split"]


def detect(root: Path) -> bool:
    """True when ``root`` holds a ``*.h5`` file beside a same-named ``*.csv``."""
    return any(h5.with_suffix(".csv").is_file() for h5 in root.glob("*.h5"))


def read(root: Path, classes: list[str]) -> list[SourceImage]:
    """Reads every ``*.h5``/``*.csv`` pair: the CSV's ``index`` rows of the HDF5 dataset ``images``.

    Args:
        root: Data root.
        classes: Unused: labels are the CSV's ``indication_type`` names.

    Returns:
        One record per CSV row, pairs in file-name order, with the CSV's split.

    Raises:
        DataError: A file is unreadable, a column or the ``images`` dataset is missing, or an index is out
            of range.
    """
    import h5py  # only this layout needs it

    pairs = sorted(h5 for h5 in root.glob("*.h5") if h5.with_suffix(".csv").is_file())
    if not pairs:
        raise DataError(f"{root}: no *.h5 file with a same-named *.csv (Kaggle textile layout)")
    records = []
    for h5_path in pairs:
        csv_path = h5_path.with_suffix(".csv")
        for path in (h5_path, csv_path):
            if reason := outside_link(path, root):
                raise DataError(f"{path}: {reason}")
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
            records.append(
                SourceImage(
                    source=h5_path.name,
                    index=index,
                    label=str(row.indication_type),
                    split=str(row.split) if pd.notna(row.split) else None,
                    pixels=images[index],
                    dtype=str(images.dtype),
                )
            )
    return records


LAYOUT = Layout(
    name="kaggle-h5",
    priority=30,
    has_masks=False,
    description="*.h5 with a same-named *.csv",
    detect=detect,
    read=read,
)
