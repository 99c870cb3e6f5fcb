"""The one image decoder (ingest, predict, serving) and what layouts refuse to read."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectflow.data.layouts import read_source
from inspectflow.errors import DataError
from inspectflow.imaging import Preprocess, decode, read_image

RNG = np.random.default_rng(0)
GRAY = (RNG.random((20, 30)) * 255).astype(np.uint8)
RGB = (RNG.random((20, 30, 3)) * 255).astype(np.uint8)


def model_input(path: Path, channels: int = 1) -> np.ndarray:
    """What a model sees of a file: decoded, then brought to a 30x20 input of ``channels``."""
    return Preprocess("resize", 20, 30, channels).image(read_image(path))


def test_a_palette_image_reads_as_its_grayscale_copy(tmp_path: Path) -> None:
    palette = Image.fromarray(RGB).quantize(16)
    palette.save(tmp_path / "palette.png")
    palette.convert("L").save(tmp_path / "gray.png")
    assert np.array_equal(model_input(tmp_path / "palette.png"), model_input(tmp_path / "gray.png"))
    # Not its palette indices.
    assert not np.array_equal(model_input(tmp_path / "palette.png")[..., 0], np.asarray(palette))


def test_sixteen_bit_samples_are_scaled_by_the_types_range(tmp_path: Path) -> None:
    wide = (RNG.random((20, 30)) * 65535).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.round(wide / 257).astype(np.uint8)).save(tmp_path / "eight.png")
    pixels, error = decode(tmp_path / "wide.png")
    assert error is None and pixels is not None and pixels.dtype == np.uint8
    assert np.array_equal(model_input(tmp_path / "wide.png"), model_input(tmp_path / "eight.png"))
    assert np.array_equal(read_image(wide), read_image(np.round(wide / 257).astype(np.uint8)))


@pytest.mark.parametrize(
    ("mode", "suffix"), [("CMYK", ".jpg"), ("RGBA", ".png"), ("LA", ".png"), ("1", ".png")]
)
def test_other_modes_decode_to_gray_or_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"image{suffix}"
    Image.fromarray(RGB).convert(mode).save(path)
    pixels, error = decode(path)
    assert error is None and pixels is not None and pixels.dtype == np.uint8
    assert pixels.shape in ((20, 30), (20, 30, 3))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(GRAY)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to view"
    image.save(tmp_path / "sideways.jpg", exif=exif)
    pixels, _ = decode(tmp_path / "sideways.jpg")
    assert pixels is not None and pixels.shape == (30, 20)


def test_a_decompression_bomb_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(GRAY).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 600 pixels is more than twice the limit
    pixels, error = decode(tmp_path / "bomb.png")
    assert pixels is None and error is not None and "decompression bomb" in error and "\n" not in error
    with pytest.raises(DataError, match=r"bomb\.png: cannot be decoded \(refused as a decompression bomb"):
        read_image(tmp_path / "bomb.png")


def test_floating_point_samples_are_refused(tmp_path: Path) -> None:
    Image.fromarray(GRAY.astype(np.float32)).save(tmp_path / "float.tiff")
    pixels, error = decode(tmp_path / "float.tiff")
    assert pixels is None and error is not None and "floating-point" in error


def images_and_masks(root: Path, masked: int, unmasked: int) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(masked + unmasked):
        Image.fromarray(GRAY).save(root / "images" / f"{index}.png")
        if index < masked:
            Image.fromarray(np.zeros_like(GRAY)).save(root / "masks" / f"{index}.png")
    return root


def test_an_image_without_its_mask_is_an_error_unless_missing_masks_is_clean(tmp_path: Path) -> None:
    root = images_and_masks(tmp_path / "set", masked=2, unmasked=1)
    records = read_source(root, "images-masks", [], "error")
    assert [r.mask_error for r in records[:2]] == [None, None]
    assert records[2].mask_error is not None and "data.missing_masks=clean" in records[2].mask_error
    clean = read_source(root, "images-masks", [], "clean")[2]
    assert clean.mask_error is None and clean.mask is not None and not clean.mask.any()


def test_a_link_out_of_the_data_folder_is_not_read(tmp_path: Path) -> None:
    root = images_and_masks(tmp_path / "set", masked=1, unmasked=0)
    Image.fromarray(GRAY).save(tmp_path / "elsewhere.png")
    (root / "images" / "linked.png").symlink_to(tmp_path / "elsewhere.png")
    (root / "masks" / "linked.png").symlink_to(root / "masks" / "0.png")  # inside: fine
    linked = read_source(root, "images-masks", [], "error")[1]
    assert linked.source == "images/linked.png"
    assert linked.decode_error is not None and "outside the data folder" in linked.decode_error


def test_nan_in_an_array_source_is_named(tmp_path: Path) -> None:
    images = RNG.random((3, 8, 8)).astype(np.float32)
    images[1, 2, 3] = np.nan
    np.save(tmp_path / "X.npy", images)
    np.save(tmp_path / "Y.npy", np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"X\.npy: image 1 holds NaN samples"):
        read_source(tmp_path, "npy", ["a", "b"])
