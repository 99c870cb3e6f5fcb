"""Batch prediction with a registered model: image files in, one JSON record per image out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm


def predict_files(
    model_uri: str, paths: list[Path], task: str, batch_size: int, mask_dir: Path | None = None
) -> Iterator[dict[str, Any]]:
    """Yields one record per image, in order, predicting in batches.

    A classifier's record holds ``label``, its ``probability`` and every class's probability; a segmenter's
    the ``defect_area`` (share of defective pixels), ``defective`` (area above the evaluation's detection
    threshold) and the path of its mask PNG
    (255 = defect, at the image's own size) written into ``mask_dir``.

    Args:
        model_uri: An MLflow model URI, such as ``models:/textile-classifier@champion``.
        paths: Image files.
        task: ``classification`` or ``segmentation``.
        batch_size: Images per forward pass.
        mask_dir: Where masks go (segmentation).

    Raises:
        DataError: An image cannot be decoded (named); nothing after it is predicted.
    """
    import mlflow

    from inspectflow.config import EvaluateConfig
    from inspectflow.serving import read_image
    from inspectflow.steps.ingest import to_cache
    from inspectflow.steps.register import load_registered_predictor
    from inspectflow.steps.train import to_tensor

    thresholds = EvaluateConfig()  # the thresholds the model was evaluated with by default
    metadata = mlflow.models.get_model_info(model_uri).metadata or {}
    classes, side, channels = metadata["classes"], int(metadata["image_side"]), int(metadata["channels"])
    predictor = load_registered_predictor(model_uri)
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", leave=False):
        batch_paths = paths[start : start + batch_size]
        sizes, images = [], []
        for path in batch_paths:
            pixels = read_image(path)
            sizes.append(pixels.shape[:2])
            images.append(to_cache(pixels, side, channels, "resize"))
        with torch.no_grad():
            logits = predictor(to_tensor(np.stack(images)))
        if task == "classification":
            probabilities = torch.softmax(logits, dim=1).numpy()
            for path, row in zip(batch_paths, probabilities, strict=True):
                best = int(row.argmax())
                yield {
                    "path": str(path),
                    "label": classes[best],
                    "probability": round(float(row[best]), 6),
                    "probabilities": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)},
                }
            continue
        masks = (torch.sigmoid(logits[:, 0]) > thresholds.mask_threshold).numpy()
        for offset, (path, mask, (height, width)) in enumerate(zip(batch_paths, masks, sizes, strict=True)):
            full = Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (width, height), Image.Resampling.NEAREST
            )
            area = float((np.asarray(full) > 0).mean())
            record: dict[str, Any] = {
                "path": str(path),
                "defect_area": round(area, 6),
                "defective": area > thresholds.detection_threshold,
            }
            if mask_dir is not None:
                # Numbered: DAGM classes reuse file names (Class1/Test/0000.PNG, Class2/Test/0000.PNG).
                mask_path = mask_dir / f"{start + offset:05d}_{path.stem}_mask.png"
                full.save(mask_path)
                record["mask"] = str(mask_path)
            yield record
