"""Batch prediction with a registered model: image files in, one JSON record per image out."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from inspectflow.tasks.base import PredictedImage

if TYPE_CHECKING:
    from inspectflow.serving.registered import Engine


def predict_files(
    model_uri: str,
    paths: list[Path],
    task_name: str,
    batch_size: int,
    mask_dir: Path | None = None,
    fail_fast: bool = False,
    engine: Engine = "torch",
) -> Iterator[dict[str, Any]]:
    """Yields one record per image, in order, predicting in batches.

    A file that cannot be decoded gets a record of its ``path`` and ``error`` and the others are predicted:
    one bad photo must not hold back a line's batch.

    Images are brought to the model's input as its training images were (the preprocessing its spec
    keeps), and its thresholds are the ones it was evaluated with. A classifier's record holds ``label``,
    its ``probability`` and every class's probability, and with a good class its ``defect_score``,
    ``defective`` and ``threshold`` (see :meth:`Classification.records`); a segmenter's the
    ``defect_score`` (highest pixel probability), ``defect_area`` (share of defective pixels), ``defective``
    (score above the detection threshold), that ``threshold`` and the path of its mask PNG
    (255 = defect, at the image's own size) written into ``mask_dir``.

    Args:
        model_uri: An MLflow model URI, such as ``models:/textile-classifier@champion``.
        paths: Image files.
        task_name: The model's task (``classification``, ``segmentation``).
        batch_size: Images per forward pass.
        mask_dir: Where files a prediction writes go (segmentation masks).
        fail_fast: Raise at the first file that cannot be decoded instead.
        engine: ``torch``, or ``onnx`` to run the ONNX export logged with the model in ONNX Runtime.

    Raises:
        DataError: With ``fail_fast``, an image cannot be decoded (named); nothing after it is predicted.
    """
    from inspectflow.config import EvaluateConfig
    from inspectflow.errors import DataError
    from inspectflow.imaging import read_image, to_tensor
    from inspectflow.serving.registered import load_registered
    from inspectflow.tasks import get_task

    task = get_task(task_name)
    predictor, spec = load_registered(model_uri, engine)
    thresholds = EvaluateConfig.model_validate(spec.thresholds)
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
    # No bar in a log or a pipe: its carriage returns would be glued to the first JSON line.
    batches = range(0, len(paths), batch_size)
    for start in tqdm(batches, desc="predict", unit="batch", leave=False, disable=not sys.stderr.isatty()):
        batch, images, failed = [], [], {}
        for number, path in enumerate(paths[start : start + batch_size], start):
            try:
                pixels = read_image(path)
            except DataError as exc:
                if fail_fast:
                    raise
                failed[number] = {"path": str(path), "error": str(exc)}
                continue
            batch.append(PredictedImage(path, pixels.shape[0], pixels.shape[1], number))
            images.append(spec.preprocess.image(pixels))
        records = []
        if images:
            with torch.no_grad():
                logits = predictor(to_tensor(np.stack(images), channels_last=True))
            records = task.records(logits, batch, spec, thresholds, mask_dir)
        by_number = {**failed, **dict(zip((image.number for image in batch), records, strict=True))}
        yield from (by_number[number] for number in sorted(by_number))
