"""A corpus of bad and unusual inputs: each is refused naming the file, or read as the reference reads it.

Every case builds a small dataset around one odd file and runs the data steps (ingest, then the validation
suite) as the pipeline does. A refused case must raise :class:`DataError` naming the file (or folder) and
leave the source's bytes as they were; nothing can be registered, as training never starts. An accepted
case must give the model the same pixels as a reference conversion of the file. The CLI's exit codes and
messages for such failures are covered end to end in ``test_pipeline_local.py``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from inspectflow.config import build_config
from inspectflow.data.dataset import Dataset
from inspectflow.errors import DataError
from inspectflow.imaging import Preprocess
from inspectflow.steps.ingest import ingest
from inspectflow.synth.textile import synthesize_textile
from inspectflow.tasks import task_for
from inspectflow.validation import validate_dataset

RNG = np.random.default_rng(7)
SIDE = 32
CLASSES = ("good", "bad")


def noise(side: int = SIDE, channels: int = 0) -> np.ndarray:
    shape = (side, side, channels) if channels else (side, side)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def class_folders(root: Path, per_class: int = 10) -> Path:
    for label in CLASSES:
        (root / label).mkdir(parents=True)
        for number in range(per_class):
            Image.fromarray(noise()).save(root / label / f"{number}.png")
    return root


def images_and_masks(root: Path, count: int = 8) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for number in range(count):
        Image.fromarray(noise()).save(root / "images" / f"{number}.png")
        mask = np.zeros((SIDE, SIDE), np.uint8)
        if number % 2:
            mask[4:8, 4:8] = 255
        Image.fromarray(mask).save(root / "masks" / f"{number}.png")
    return root


def check(root: Path, workload: str, overrides: list[str]) -> Dataset:
    """Ingest and validation, as the pipeline's first two steps run them."""
    config = build_config(workload, overrides)
    dataset = ingest(root, config)
    report = validate_dataset(dataset, dataset.info.classes, config.validate_, task_for(config).data_rules)
    if not report.success:
        raise DataError(f"{root}: {report.summary()}")
    return dataset


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@dataclass
class Case:
    """One odd input: how to build it, and the name the refusal must give (``None``: it is accepted)."""

    build: Callable[[Path], None]
    named: str | None
    workload: str = "textile"
    layout: Callable[[Path], Path] = class_folders
    overrides: tuple[str, ...] = ()
    #: For an accepted file: its path in the set and the reference conversion to grayscale pixels.
    reference: tuple[str, Callable[[Path], np.ndarray]] | None = None


def save_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data)


def save_image(name: str, image: Callable[[], Image.Image], **options: object) -> Callable[[Path], None]:
    return lambda root: image().save(root / name, **options)


def png_bytes(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_rotated() -> tuple[Image.Image, Image.Exif]:
    image = Image.fromarray(noise(side=SIDE)[:, : SIDE // 2])  # 32 x 16, stored sideways
    exif = image.getexif()
    exif[0x0112] = 6
    return image, exif


def gray_reference(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB").convert("L"))


def sixteen_bit_reference(path: Path) -> np.ndarray:
    return np.round(np.asarray(Image.open(path)).astype(np.float64) / 257).astype(np.uint8)


def symlink_out(root: Path) -> None:
    outside = root.parent / "outside.png"
    Image.fromarray(noise()).save(outside)
    (root / "good" / "linked.png").symlink_to(outside)


def duplicate_across_labels(root: Path) -> None:
    (root / "bad" / "copy.png").write_bytes((root / "good" / "0.png").read_bytes())


def leaked_across_splits(root: Path) -> None:
    for split in ("train", "test"):
        for label in CLASSES:
            (root / split / label).mkdir(parents=True)
            for number in range(4):
                Image.fromarray(noise()).save(root / split / label / f"{number}.png")
    (root / "test" / "good" / "leak.png").write_bytes((root / "train" / "good" / "0.png").read_bytes())


def npy_pair(images: np.ndarray, labels: np.ndarray) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        np.save(root / "X.npy", images)
        np.save(root / "Y.npy", labels)

    return build


def kaggle(change: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        synthesize_textile(root, n=24, seed=1)
        change(root)

    return build


def drop_csv_column(root: Path) -> None:
    table = pd.read_csv(root / "train64.csv")
    table.drop(columns=["indication_type"]).to_csv(root / "train64.csv", index=False)


def index_past_the_end(root: Path) -> None:
    table = pd.read_csv(root / "train64.csv")
    table.loc[0, "index"] = 10_000
    table.to_csv(root / "train64.csv", index=False)


def h5_without_images(root: Path) -> None:
    with h5py.File(root / "train64.h5", "w") as h5:
        h5.create_dataset("pictures", data=np.zeros((2, 64, 64, 1), np.uint8))


def mask(name: str, pixels: np.ndarray) -> Callable[[Path], None]:
    return lambda root: Image.fromarray(pixels).save(root / "masks" / name)


def dagm_flag_contradicts_mask(root: Path) -> None:
    folder = root / "Class1" / "Train"
    (folder / "Label").mkdir(parents=True)
    (root / "Class1" / "Test" / "Label").mkdir(parents=True)
    for split in ("Train", "Test"):
        for number in range(4):
            Image.fromarray(noise()).save(root / "Class1" / split / f"{number:04d}.PNG")
        lines = ["1"] + [f"{n + 1}\t0\t{n:04d}.PNG\t0\t0" for n in range(4)]
        (root / "Class1" / split / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    lines = ["1", "1\t1\t0000.PNG\t0\t0000_label.PNG"] + [
        f"{n + 1}\t0\t{n:04d}.PNG\t0\t0" for n in range(1, 4)
    ]
    (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")  # defective, but its mask is empty
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(folder / "Label" / "0000_label.PNG")


def nothing(root: Path) -> None:
    """The folder stays empty."""


SEGMENTATION = {"workload": "dagm", "layout": images_and_masks}
CASES: dict[str, Case] = {
    # -- files that are not images, or images refused
    "truncated png": Case(save_bytes("good/t.png", png_bytes(Image.fromarray(noise()))[:60]), "good/t.png"),
    "empty file": Case(save_bytes("good/empty.png", b""), "good/empty.png"),
    "text named png": Case(save_bytes("good/notes.png", b"inspection notes\n"), "good/notes.png"),
    "html named jpg": Case(save_bytes("bad/page.jpg", b"<html><body>404</body></html>"), "bad/page.jpg"),
    "float tiff named png": Case(
        save_bytes("good/f.png", png_bytes(Image.fromarray(noise().astype(np.float32)), "TIFF")), "good/f.png"
    ),
    "decompression bomb": Case(
        save_bytes("good/bomb.png", png_bytes(Image.new("1", (14_000, 14_000)))), "good/bomb.png"
    ),
    "constant image": Case(
        save_image("good/flat.png", lambda: Image.new("L", (SIDE, SIDE), 128)), "good/flat.png"
    ),
    "image below min_side": Case(
        save_image("good/tiny.png", lambda: Image.fromarray(noise(side=4))), "good/tiny.png"
    ),
    "wrong side when one is expected": Case(
        save_image("good/big.png", lambda: Image.fromarray(noise(side=48))),
        "good/big.png",
        overrides=(f"validate.expected_side={SIDE}",),
    ),
    "link out of the data folder": Case(symlink_out, "good/linked.png"),
    "same image under two labels": Case(duplicate_across_labels, "bad/copy.png"),
    "same image in train and test": Case(
        leaked_across_splits, "test/good/leak.png", layout=lambda root: root
    ),
    "label outside the named classes": Case(
        lambda root: (root / "good").rename(root / "stain"), "stain", overrides=("data.classes=[good, bad]",)
    ),
    "too few images of a class": Case(
        lambda root: [p.unlink() for p in sorted((root / "bad").iterdir())[2:]],
        "bad",
        overrides=("validate.min_per_class=2",),
    ),
    "empty data folder": Case(nothing, "no supported layout found", layout=lambda root: root),
    "only unsupported files": Case(
        save_bytes("good/photo.gif", png_bytes(Image.fromarray(noise()), "GIF")),
        "no supported layout found",
        layout=lambda root: (root / "good").mkdir(parents=True) or root,
    ),
    # -- arrays
    "nan in X.npy": Case(
        npy_pair(np.full((4, 8, 8), np.nan, np.float32), np.array([0, 1, 0, 1])),
        "X.npy: image 0 holds NaN",
        layout=lambda root: root,
        overrides=("data.classes=[good, bad]",),
    ),
    "X.npy of one dimension": Case(
        npy_pair(np.zeros(16, np.uint8), np.zeros(16, int)), "X.npy: shape (16,)", layout=lambda root: root
    ),
    "Y.npy of another length": Case(
        npy_pair(noise(channels=0)[None].repeat(4, 0), np.array([0, 1])), "Y.npy", layout=lambda root: root
    ),
    "uint16 X.npy": Case(
        npy_pair((RNG.random((8, 8, 8)) * 65535).astype(np.uint16), np.array([0, 1] * 4)),
        "not uint8",
        layout=lambda root: root,
        overrides=("data.classes=[good, bad]",),
    ),
    # -- the Kaggle layout
    "csv without its label column": Case(kaggle(drop_csv_column), "train64.csv", layout=lambda root: root),
    "csv index past the end": Case(kaggle(index_past_the_end), "train64.h5", layout=lambda root: root),
    "h5 without images": Case(kaggle(h5_without_images), "train64.h5", layout=lambda root: root),
    # -- masks
    "missing mask": Case(lambda root: (root / "masks" / "3.png").unlink(), "images/3.png", **SEGMENTATION),
    "mask of another size": Case(
        mask("3.png", np.zeros((SIDE, SIDE + 8), np.uint8)), "images/3.png", **SEGMENTATION
    ),
    "undecodable mask": Case(
        lambda root: (root / "masks" / "3.png").write_bytes(b"not a png"), "images/3.png", **SEGMENTATION
    ),
    "mask over the defect-area bound": Case(
        mask("3.png", np.full((SIDE, SIDE), 255, np.uint8)), "images/3.png", **SEGMENTATION
    ),
    "images folder without images": Case(
        lambda root: [p.unlink() for p in (root / "images").iterdir()], "images", **SEGMENTATION
    ),
    "labels.txt flag contradicting its mask": Case(
        dagm_flag_contradicts_mask, "Class1/Train/0000.PNG", workload="dagm", layout=lambda root: root
    ),
    # -- accepted: the model sees what a reference conversion gives
    "palette png": Case(
        save_image("good/palette.png", lambda: Image.fromarray(noise(channels=3)).quantize(16)),
        None,
        reference=("good/palette.png", gray_reference),
    ),
    "cmyk jpeg": Case(
        save_image("good/cmyk.jpg", lambda: Image.fromarray(noise(channels=3)).convert("CMYK")),
        None,
        reference=("good/cmyk.jpg", gray_reference),
    ),
    "exif-rotated jpeg": Case(
        lambda root: exif_rotated()[0].save(root / "good" / "rotated.jpg", exif=exif_rotated()[1]),
        None,
        reference=("good/rotated.jpg", gray_reference),
    ),
    "grayscale with alpha": Case(
        save_image("good/alpha.png", lambda: Image.fromarray(noise()).convert("LA")),
        None,
        reference=("good/alpha.png", gray_reference),
    ),
    "rgba png": Case(
        save_image("good/rgba.png", lambda: Image.fromarray(noise(channels=4), mode="RGBA")),
        None,
        reference=("good/rgba.png", gray_reference),
    ),
    "jpeg named png": Case(
        save_bytes("good/wrong.png", png_bytes(Image.fromarray(noise()), "JPEG")),
        None,
        reference=("good/wrong.png", gray_reference),
    ),
    "16-bit png": Case(
        save_image(
            "good/wide.png", lambda: Image.fromarray((RNG.random((SIDE, SIDE)) * 65535).astype(np.uint16))
        ),
        None,
        reference=("good/wide.png", sixteen_bit_reference),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_odd_input_is_refused_naming_it_or_read_as_the_reference_reads_it(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    root = case.layout(tmp_path / "data")
    root.mkdir(parents=True, exist_ok=True)
    case.build(root)
    before = tree_digest(root)
    overrides = [f"data.image_side={SIDE}", "data.resize=pad", "validate.min_per_class=1", *case.overrides]

    if case.named is not None:
        with pytest.raises(DataError) as refused:
            check(root, case.workload, overrides)
        assert case.named in str(refused.value), str(refused.value)
    else:
        dataset = check(root, case.workload, overrides)
        assert case.reference is not None
        source, convert = case.reference
        row = dataset.manifest.index[dataset.manifest["source"] == source][0]
        expected = Preprocess("pad", SIDE, SIDE, 1).image(convert(root / source)[..., None])
        assert np.array_equal(dataset.images[row], expected)
    assert tree_digest(root) == before


def test_the_corpus_covers_at_least_thirty_kinds() -> None:
    assert len(CASES) >= 30
