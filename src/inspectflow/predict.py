"""Batch prediction with a registered model: image files in, one JSON record per image out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from inspectflow.tasks.base import PredictedImage


def predict_files(
    model_uri: str, paths: list[Path], task_name: str, batch_size: int, mask_dir: Path | None = None
) -> Iterator[dict[str, Any]]:
    """Yields one record per image, in order, predicting in batches.

    Images are brought to the model's input as ingest brought its training images. A classifier's record
    holds ``label``, its ``probability`` and every class's probability; a segmenter's the ``defect_area``
    (share of defective pixels), ``defective`` (area above the evaluation's detection threshold) and the
    path of its mask PNG (255 = defect, at the image's own size) written into ``mask_dir``.

    Args:
        model_uri: An MLflow model URI, such as ``models:/textile-classifier@champion``.
        paths: Image files.
        task_name: The model's task (``classification``, ``segmentation``).
        batch_size: Images per forward pass.
        mask_dir: Where files a prediction writes go (segmentation masks).

    Raises:
        DataError: An image cannot be decoded (named); nothing after it is predicted.
    """
    import mlflow

    from inspectflow.config import EvaluateConfig
    from inspectflow.imaging import read_image, to_cache, to_tensor
    from inspectflow.registered import load_registered_predictor
    from inspectflow.tasks import get_task

    task = get_task(task_name)
    thresholds = EvaluateConfig()  # the thresholds the model was evaluated with by default
    metadata = mlflow.models.get_model_info(model_uri).metadata or {}
    classes, side, channels = metadata["classes"], int(metadata["image_side"]), int(metadata["channels"])
    predictor = load_registered_predictor(model_uri)
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", leave=False):
        batch, images = [], []
        for number, path in enumerate(paths[start : start + batch_size], start):
            pixels = read_image(path)
            batch.append(PredictedImage(path, pixels.shape[0], pixels.shape[1], number))
            images.append(to_cache(pixels, side, channels, "resize"))
        with torch.no_grad():
            logits = predictor(to_tensor(np.stack(images)))
        yield from task.records(logits, batch, classes, thresholds, mask_dir)
