"""Image handling shared by every path that touches pixels: ingest, training, evaluation and serving.

One decoder (Pillow), one way to bring pixels to a model's square input (resize or pad), one conversion to
float tensors: a model sees the same pixels in training, in the gate's re-scoring and in production.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inspectflow.errors import DataError

if TYPE_CHECKING:
    import torch

#: File endings read as images by every source layout and by prediction.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Preprocess:
    """How stored pixels become a model's input; kept with the dataset and with every trained model.

    Attributes:
        mode: ``resize`` stretches to ``height`` x ``width``; ``pad`` centres on a zero canvas of that size
            (cropping what is larger); ``scale`` multiplies both sides by ``scale`` (keeping the aspect; by
            less for an image that would not fit the canvas) and pads right and bottom to the canvas (how
            segmenters registered before the working shape was chosen from the data still read images).
        height: Canvas height.
        width: Canvas width.
        channels: 1 (grayscale) or 3 (RGB).
        scale: The factor of ``scale`` mode.
    """

    mode: Literal["resize", "pad", "scale"]
    height: int
    width: int
    channels: int
    scale: float = 1.0

    def image(self, pixels: np.ndarray) -> np.ndarray:
        """Brings stored pixels ``(H, W, C)`` to the model's uint8 ``(height, width, channels)`` input."""
        return self._fit(_to_mode(pixels, self.channels), Image.Resampling.BILINEAR)

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Brings a defect mask ``(H, W)`` to uint8 ``(height, width)`` as its image is brought."""
        return self._fit(mask.astype(np.uint8), Image.Resampling.NEAREST)

    def restore(self, mask: np.ndarray, height: int, width: int) -> np.ndarray:
        """Maps a predicted mask on the model's input back onto the original ``height`` x ``width`` image."""
        if self.mode == "pad":  # the inverse of _pad_or_crop: the image's pixels that are on the canvas
            restored = np.zeros((height, width), dtype=mask.dtype)
            top, left = (self.height - height) // 2, (self.width - width) // 2
            rows, cols = min(height, self.height), min(width, self.width)
            restored[max(0, -top) : max(0, -top) + rows, max(0, -left) : max(0, -left) + cols] = mask[
                max(0, top) : max(0, top) + rows, max(0, left) : max(0, left) + cols
            ]
            return restored
        if self.mode == "scale":
            scale = self._scale_for(height, width)
            mask = mask[: round(height * scale), : round(width * scale)]
        image = Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(image).astype(mask.dtype)

    def _fit(self, array: np.ndarray, resample: Image.Resampling) -> np.ndarray:
        height, width = array.shape[:2]
        if self.mode == "resize":
            fitted = _resized(array, self.height, self.width, resample)
        elif self.mode == "pad":
            fitted = _pad_or_crop(array, self.height, self.width)
        else:
            scale = self._scale_for(height, width)
            scaled = _resized(array, round(height * scale), round(width * scale), resample)
            fitted = np.zeros((self.height, self.width, *array.shape[2:]), dtype=array.dtype)
            fitted[: scaled.shape[0], : scaled.shape[1]] = scaled
        return fitted[..., np.newaxis] if fitted.ndim == 2 and array.ndim == 3 else fitted

    def _scale_for(self, height: int, width: int) -> float:
        """The ``scale`` mode's factor for an image of this size: ``scale``, or less so that it fits."""
        return min(self.scale, self.height / height, self.width / width)


def _to_mode(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Converts ``(H, W, C)`` pixels to uint8 grayscale ``(H, W, 1)`` or RGB ``(H, W, 3)``.

    Samples that are not uint8 are brought to it (:func:`to_uint8`) only so that the row can be cached;
    validation rejects such a source.
    """
    pixels = to_uint8(pixels)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(pixels.shape[2])
    if mode is None:
        raise DataError(f"unsupported channel count {pixels.shape[2]}")
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[..., np.newaxis] if channels == 1 else array


def _resized(array: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    if array.shape[:2] == (height, width):
        return array
    squeezed = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    resized = np.asarray(Image.fromarray(squeezed).resize((width, height), resample))
    return resized[..., np.newaxis] if array.ndim == 3 and resized.ndim == 2 else resized


def _pad_or_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centres ``array`` on a zero canvas of ``height`` x ``width``, cropping what is larger."""
    source_h, source_w = array.shape[:2]
    canvas = np.zeros((height, width, *array.shape[2:]), dtype=array.dtype)
    top, left = (height - source_h) // 2, (width - source_w) // 2
    src = array[
        max(0, -top) : max(0, -top) + min(source_h, height),
        max(0, -left) : max(0, -left) + min(source_w, width),
    ]
    canvas[max(0, top) : max(0, top) + src.shape[0], max(0, left) : max(0, left) + src.shape[1]] = src
    return canvas


#: Pillow modes kept as decoded: 8-bit grayscale and RGB. Every other 8-bit mode (palette, CMYK, YCbCr,
#: with or without alpha) goes through RGB, so that a palette image and its grayscale copy give the model
#: the same pixels; 16-bit grayscale is scaled to 8 bits (see :func:`to_uint8`).
_KEPT_MODES = ("L", "RGB")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode(source: Path | bytes, max_pixels: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """Decodes an image file, or its bytes: ``(uint8 pixels, None)``, or ``(None, why)`` when it cannot.

    The one decoder of ingest, prediction and serving. EXIF orientation is applied (a phone or camera
    photo is seen upright, as a viewer shows it); palette, CMYK and other colour modes are converted
    through RGB; grayscale with alpha loses its alpha; 16-bit samples are scaled to 8 bits (see
    :func:`to_uint8`). An image larger than Pillow's decompression-bomb limit, or than ``max_pixels``, is
    refused unread (from its header).
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            if max_pixels is not None and opened.width * opened.height > max_pixels:
                return None, f"{opened.width}x{opened.height} pixels, more than the {max_pixels} allowed"
            image = ImageOps.exif_transpose(opened)
            if image.mode in _SIXTEEN_BIT_MODES:  # Pillow may hold 16-bit PNG samples as 32-bit ints
                return to_uint8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16)), None
            if image.mode == "F":
                return None, "32-bit floating-point samples; save the image with 8 or 16 bits"
            if image.mode in ("LA", "La", "1"):
                image = image.convert("L")
            elif image.mode not in _KEPT_MODES:
                image = image.convert("RGB")
            return np.asarray(image), None
    except Image.DecompressionBombError as exc:
        return None, f"refused as a decompression bomb ({exc})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit samples: 16-bit ones scaled by their type's range (``/ 257``), others clipped.

    The scale is the type's, not the image's own minimum and maximum: two images of one camera keep their
    relative brightness, and an 8-bit copy made the usual way (``round(v / 257)``) gives the same pixels.
    Validation still refuses an array source (``X.npy``) that is not 8-bit.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return np.round(pixels * (255 / 65535)).astype(np.uint8)
    return np.clip(pixels, 0, 255).astype(np.uint8)


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
        pixels = to_uint8(np.asarray(item))
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def to_tensor(images: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """Converts uint8 ``(N, H, W, C)`` images to float ``(N, C, H, W)`` in ``[0, 1]``."""
    import torch

    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
