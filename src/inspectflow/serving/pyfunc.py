"""A registered model as an MLflow pyfunc: images in, one row per image out, as its task describes it.

Whichever method trained it (a fine-tuned network or CNN features with an SVM), the model takes image file
paths or uint8 arrays and preprocesses them exactly as ingest did (decode with Pillow, convert to the
model's channels, bring to its working size)::

    model = mlflow.pyfunc.load_model("models:/inserts-classifier@champion")
    model.predict(["a.png", "b.png"])  # DataFrame: label, probability, one p_<class> column per class

The columns are the task's (:meth:`~inspectflow.tasks.base.Task.table`): a classifier's label and
probabilities (and, trained with a good class, the decision it was evaluated with: ``defect_score``,
``defective`` and the ``threshold`` it keeps); a segmenter's defect score, area, decision and mask.

A fine-tuned network logged with its ONNX export runs in ONNX Runtime when loaded with
``model_config={"engine": "onnx"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel

from inspectflow.names import MODEL_ARTIFACT, ONNX_ARTIFACT, ONNX_INT8_ARTIFACT

#: The ONNX engines a pyfunc may carry, by ``model_config`` engine.
ENGINE_ARTIFACTS = {"onnx": ONNX_ARTIFACT, "int8": ONNX_INT8_ARTIFACT}


class ImageModel(PythonModel):
    """Pyfunc wrapper around a trained model directory (see :mod:`inspectflow.models.artifact`)."""

    # Paths, arrays or frames of any size come in: no type hint describes them, and MLflow would warn at
    # every import that ours cannot be validated (the opt-out MLflow's own ChatModel subclasses use).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        """Loads the model directory logged as the ``model`` artifact, or its ONNX export.

        Raises:
            FileNotFoundError: ``engine`` ``onnx`` or ``int8`` for a model logged without that engine.
        """
        from inspectflow.models.artifact import SPEC_FILE, Predictor, load_trained_model, read_spec
        from inspectflow.models.onnx import OnnxPredictor

        self.predictor: Predictor
        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        model_config = context.model_config or {}
        engine = model_config.get("engine", "torch")
        if engine in ENGINE_ARTIFACTS:
            artifact = ENGINE_ARTIFACTS[engine]
            if artifact not in context.artifacts:
                raise FileNotFoundError(f"{artifact}: this model was logged without its {engine} engine")
            idle_spin = model_config.get("idle_spin", True)
            self.predictor = OnnxPredictor(Path(context.artifacts[artifact]), idle_spin)
            self.spec = read_spec(model_dir / SPEC_FILE)
        else:
            self.predictor, self.spec = load_trained_model(model_dir)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Predicts every image.

        Args:
            context: MLflow's context (unused after loading).
            model_input: Image paths (a list, a Series, or a DataFrame with an ``image`` column), one uint8
                image ``(H, W[, C])``, or a list or ``(N, H, W, C)`` stack of them.
            params: Unused.

        Returns:
            One row per image, the task's columns (see the module docstring).
        """
        from inspectflow.config import EvaluateConfig
        from inspectflow.imaging import read_image, to_tensor
        from inspectflow.tasks import get_task

        pixels = [read_image(item) for item in _items(model_input)]
        images = np.stack([self.spec.preprocess.image(image) for image in pixels])
        with torch.no_grad():
            logits = self.predictor(to_tensor(images, channels_last=True))
        config = EvaluateConfig().applying(self.spec.thresholds)  # the thresholds it was evaluated with
        sizes = [(image.shape[0], image.shape[1]) for image in pixels]
        return get_task(self.spec.task).table(logits, self.spec, config, sizes)


def _items(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        return list(model_input["image"] if "image" in model_input.columns else model_input.iloc[:, 0])
    if isinstance(model_input, np.ndarray) and model_input.ndim in (2, 3) and model_input.dtype == np.uint8:
        return [model_input]  # one image
    return list(model_input)
