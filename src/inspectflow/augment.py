"""Training-time augmentation: joint flips and rotations, defect-biased crops."""

from __future__ import annotations

import torch


def augment(
    tensors: tuple[torch.Tensor, ...], generator: torch.Generator, orientations: str = "auto"
) -> tuple[torch.Tensor, ...]:
    """Applies one random orientation change per sample to every tensor alike.

    Inspection images mostly have no canonical orientation, so these symmetries keep the label; applying
    the same change to an image and its mask keeps them aligned. ``orientations``: ``dihedral`` draws from
    all eight flips and 90-degree turns (square images only: a turn would change a wide image's shape);
    ``flips`` from left-right and top-bottom flips and the half turn; ``horizontal`` from left-right flips
    only (parts with a top and a bottom); ``auto`` is ``dihedral`` for square images, else ``flips``.

    Raises:
        ValueError: ``dihedral`` on images that are not square.
    """
    height, width = tensors[0].shape[-2:]
    if orientations == "auto":
        orientations = "dihedral" if height == width else "flips"
    if orientations == "dihedral" and height != width:
        raise ValueError(
            f"train.augment=dihedral turns images by 90 degrees, which {height}x{width} images are not "
            "square for; use flips (or auto)"
        )
    count = len(tensors[0])
    flip = torch.rand(count, generator=generator) < 0.5
    turns = torch.randint(0, 4, (count,), generator=generator)  # drawn alike for every kind: one stream
    if orientations == "flips":
        turns = 2 * (turns // 2)  # a half turn after a left-right flip is a top-bottom flip
    elif orientations == "horizontal":
        turns = torch.zeros_like(turns)
    out = []
    for tensor in tensors:
        tensor = torch.where(flip[:, None, None, None], tensor.flip(-1), tensor)
        for k in (1, 2, 3):
            chosen = turns == k
            if chosen.any():
                tensor[chosen] = torch.rot90(tensor[chosen], k, dims=(-2, -1))
        out.append(tensor)
    return tuple(out)


def random_crops(
    images: torch.Tensor,
    masks: torch.Tensor,
    side: int,
    generator: torch.Generator,
    on_defect: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cuts one ``side`` x ``side`` crop per image (a side larger than the image is cut down to it).

    For a share ``on_defect`` of the images that have defects the crop is placed to contain a random defect
    pixel, so that small defects are not drowned by background. The pixel lands anywhere in the crop:
    always centring it would teach the network that defects sit in the middle.
    """
    height, width = images.shape[-2:]
    crop_h, crop_w = min(side, height), min(side, width)
    if (crop_h, crop_w) == (height, width):
        return images, masks
    crops, crop_masks = [], []
    for image, mask in zip(images, masks, strict=True):
        defect = torch.nonzero(mask[0])
        top = int(torch.randint(height - crop_h + 1, (1,), generator=generator))
        left = int(torch.randint(width - crop_w + 1, (1,), generator=generator))
        if len(defect) and torch.rand(1, generator=generator) < on_defect:
            y, x = defect[torch.randint(len(defect), (1,), generator=generator)][0].tolist()
            dy = int(torch.randint(crop_h, (1,), generator=generator))
            dx = int(torch.randint(crop_w, (1,), generator=generator))
            top = min(max(y - dy, 0), height - crop_h)
            left = min(max(x - dx, 0), width - crop_w)
        crops.append(image[:, top : top + crop_h, left : left + crop_w])
        crop_masks.append(mask[:, top : top + crop_h, left : left + crop_w])
    return torch.stack(crops), torch.stack(crop_masks)
