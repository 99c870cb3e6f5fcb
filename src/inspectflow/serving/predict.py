"""Prediction with a registered model: the one path from decoded images to records.

Batch prediction (``inspectflow predict``: image files in, one JSON record per image out) and the inference
service (:mod:`~inspectflow.serving.service`) both take it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from inspectflow.tasks.base import PredictedImage, Prediction

if TYPE_CHECKING:
    from inspectflow.config import EvaluateConfig
    from inspectflow.models.artifact import ModelSpec, Predictor
    from inspectflow.serving.registered import Engine
    from inspectflow.tasks.base import Task

#: What runs a model: ``auto`` is the best engine the version keeps: its int8 engine, else its ONNX export
#: in ONNX Runtime, else PyTorch.
EngineChoice = Literal["auto", "torch", "onnx", "int8"]
#: ``auto``'s order of preference.
AUTO_ENGINES: tuple[Engine, ...] = ("int8", "onnx", "torch")


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to predict: what runs it, how images reach it, the thresholds it keeps."""

    uri: str
    engine: Engine
    predictor: Predictor
    spec: ModelSpec
    task: Task
    thresholds: EvaluateConfig


def load_model(uri: str, engine: EngineChoice = "torch", idle_spin: bool = True) -> LoadedModel:
    """Loads a registered model (any flavor) with its spec, task and thresholds.

    ``idle_spin``: whether an ONNX engine's worker threads spin between runs (fastest alone in a process).

    Raises:
        InspectflowError: ``engine="onnx"`` for a version logged without an ONNX export.
    """
    from inspectflow.config import EvaluateConfig
    from inspectflow.errors import InspectflowError
    from inspectflow.serving.registered import load_registered
    from inspectflow.tasks import get_task

    for chosen in AUTO_ENGINES if engine == "auto" else (engine,):
        try:
            predictor, spec = load_registered(uri, chosen, idle_spin)
        except InspectflowError:
            if chosen == "torch" or engine != "auto":
                raise
            continue  # a features+svm model, a version logged without its ONNX export or int8 engine
        thresholds = EvaluateConfig().applying(spec.thresholds)
        return LoadedModel(uri, chosen, predictor, spec, get_task(spec.task), thresholds)
    raise AssertionError("unreachable: auto ends with torch, which loads or raises")


def predict_pixels(
    model: LoadedModel, pixels: list[np.ndarray], images: list[PredictedImage]
) -> list[Prediction]:
    """One prediction per decoded image, in order, in one forward pass.

    Images are brought to the model's input as its training images were (the preprocessing its spec
    keeps), and its thresholds are the ones it was evaluated with.
    """
    from inspectflow.imaging import to_tensor

    if not pixels:
        return []
    batch = np.stack([model.spec.preprocess.image(image) for image in pixels])
    with torch.no_grad():
        logits = model.predictor(to_tensor(batch, channels_last=True))
    return model.task.records(logits, images, model.spec, model.thresholds)


def predict_files(
    model_uri: str,
    paths: list[Path],
    batch_size: int,
    mask_dir: Path | None = None,
    fail_fast: bool = False,
    engine: Engine = "torch",
) -> Iterator[dict[str, Any]]:
    """Yields one record per image, in order, predicting in batches.

    A file that cannot be decoded gets a record of its ``path`` and ``error`` and the others are predicted:
    one bad photo must not hold back a line's batch.

    A classifier's record holds ``label``, its ``probability`` and every class's probability, and with a
    good class its ``defect_score``, ``defective`` and ``threshold`` (see :meth:`Classification.records`);
    a segmenter's the ``defect_score`` (highest pixel probability), ``defect_area`` (share of defective
    pixels), ``defective`` (score above the detection threshold), that ``threshold`` and the path of its
    mask PNG (255 = defect, at the image's own size) written into ``mask_dir``.

    Args:
        model_uri: An MLflow model URI, such as ``models:/textile-classifier@champion``.
        paths: Image files.
        batch_size: Images per forward pass.
        mask_dir: Where the files a prediction comes with go (segmentation masks).
        fail_fast: Raise at the first file that cannot be decoded instead.
        engine: ``torch``, or ``onnx`` to run the ONNX export logged with the model in ONNX Runtime.

    Raises:
        DataError: With ``fail_fast``, an image cannot be decoded (named); nothing after it is predicted.
    """
    from inspectflow.errors import DataError
    from inspectflow.imaging import read_image

    model = load_model(model_uri, engine)
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
            images.append(pixels)
        predictions = predict_pixels(model, images, batch)
        records = [
            _with_files(image, prediction, mask_dir)
            for image, prediction in zip(batch, predictions, strict=True)
        ]
        by_number = {**failed, **dict(zip((image.number for image in batch), records, strict=True))}
        yield from (by_number[number] for number in sorted(by_number))


def _with_files(image: PredictedImage, prediction: Prediction, out_dir: Path | None) -> dict[str, Any]:
    """The record, with the path of each file it comes with written into ``out_dir`` (none without one)."""
    record = dict(prediction.record)
    if out_dir is None:
        return record
    for name, content in prediction.files.items():
        # Numbered: DAGM classes reuse file names (Class1/Test/0000.PNG, Class2/Test/0000.PNG).
        path = out_dir / f"{image.number:05d}_{image.path.stem}_{name}.png"
        path.write_bytes(content)
        record[name] = str(path)
    return record
