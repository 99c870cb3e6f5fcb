"""A copy of an ``images/`` + ``masks/`` set in which every image has its own size.

Each image and its mask are rescaled by one seeded random factor (uniform between ``--low`` and
``--high``, 0.3 and 1.0 by default): the image bilinearly, the mask by nearest neighbour, so that a set of one
size becomes one of as many sizes as images, as a line with several cameras or crops gives. Files keep
their names; other files at the top (``labels.csv``, licences) are copied as they are, checksums left out
(they name the originals). Usage::

    .venv/bin/python benchmarks/varied_sizes.py ../shared/data/real/crackforest-seg /tmp/v/crackforest-seg
    .venv/bin/python benchmarks/quality.py --sets crackforest-seg --root /tmp/v
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def rescaled_copy(source: Path, into: Path, low: float = 0.3, high: float = 1.0, seed: int = 0) -> Path:
    """Writes the rescaled copy of ``source`` to ``into`` (which must not exist); returns ``into``.

    Factors are drawn in file-name order from one seeded generator, so a seed gives the same sizes.
    """
    if into.exists():
        raise FileExistsError(f"{into}: already exists; pick a new folder")
    generator = np.random.default_rng(seed)
    (into / "images").mkdir(parents=True)
    (into / "masks").mkdir()
    masks = {path.stem: path for path in (source / "masks").iterdir() if path.is_file()}
    for path in sorted((source / "images").iterdir()):
        factor = float(generator.uniform(low, high))
        with Image.open(path) as image:
            size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
            image.resize(size, Image.Resampling.BILINEAR).save(into / "images" / path.name)
        mask_path = masks.get(path.stem)
        if mask_path is not None:
            with Image.open(mask_path) as mask:
                mask.resize(size, Image.Resampling.NEAREST).save(into / "masks" / mask_path.name)
    for path in source.iterdir():
        if path.is_file() and path.name != "SHA256SUMS":
            shutil.copy2(path, into / path.name)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("into", type=Path)
    parser.add_argument("--low", type=float, default=0.3)
    parser.add_argument("--high", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rescaled_copy(args.source, args.into, args.low, args.high, args.seed)
    sizes = {Image.open(path).size for path in (args.into / "images").iterdir()}
    print(f"{args.into}: {len(sizes)} distinct sizes")


if __name__ == "__main__":
    main()
