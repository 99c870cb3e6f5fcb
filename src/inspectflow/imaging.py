"""Image handling shared by every path that touches pixels: ingest, training, evaluation and serving.

One decoder (Pillow), one way to bring pixels to a model's square input (resize or pad), one conversion to
float tensors: a model sees the same pixels in training, in the gate's re-scoring and in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from inspectflow.errors import DataError

if TYPE_CHECKING:
    import torch

#: File endings read as images by every source layout and by prediction.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def decode(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Decodes an image file with Pillow: ``(pixels, None)``, or ``(None, why)`` when it cannot."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image), None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def read_image(item: Any) -> np.ndarray:
    """Returns an image file (decoded as ingest decodes it) or array as ``(H, W, C)``.

    Raises:
        DataError: The file cannot be decoded (named in the message).
    """
    if isinstance(item, str | Path):
        pixels, error = decode(Path(item))
        if pixels is None:
            raise DataError(f"{item}: cannot be decoded ({error})")
    else:
        pixels = np.asarray(item)
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def to_cache(pixels: np.ndarray, side: int, channels: int, resize: str) -> np.ndarray:
    """Converts stored pixels ``(H, W, C)`` to a model's uint8 ``(side, side, channels)`` input.

    Samples that are not uint8 are clipped only so that the row can be cached; validation rejects them.

    Raises:
        DataError: The image has a channel count other than 1, 3 or 4.
    """
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(pixels.shape[2])
    if mode is None:
        raise DataError(f"unsupported channel count {pixels.shape[2]}")
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    array = fit_square(array, side, resize, Image.Resampling.BILINEAR)
    return array[..., np.newaxis] if channels == 1 else array


def mask_to_cache(mask: np.ndarray, side: int, resize: str) -> np.ndarray:
    """Brings a boolean or 0/1 defect mask ``(H, W)`` to uint8 ``(side, side)`` as its image is brought."""
    return fit_square(mask.astype(np.uint8), side, resize, Image.Resampling.NEAREST)


def fit_square(array: np.ndarray, side: int, resize: str, resample: Image.Resampling) -> np.ndarray:
    """Brings a 2-D (or HxWx3) uint8 array to ``side`` x ``side`` by resizing or by centred zero-padding."""
    height, width = array.shape[:2]
    if (height, width) == (side, side):
        return array
    if resize == "resize":
        return np.asarray(Image.fromarray(array).resize((side, side), resample))
    canvas = np.zeros((side, side, *array.shape[2:]), dtype=array.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    src = array[
        max(0, -top) : max(0, -top) + min(height, side), max(0, -left) : max(0, -left) + min(width, side)
    ]
    canvas[max(0, top) : max(0, top) + src.shape[0], max(0, left) : max(0, left) + src.shape[1]] = src
    return canvas


def to_tensor(images: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """Converts uint8 ``(N, H, W, C)`` images to float ``(N, C, H, W)`` in ``[0, 1]``."""
    import torch

    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
