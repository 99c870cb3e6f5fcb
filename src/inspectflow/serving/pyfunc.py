"""The registered image classifier as an MLflow pyfunc: images in, labels and probabilities out.

Whichever method trained it (a fine-tuned network or CNN features with an SVM), the model takes image file
paths or uint8 arrays and preprocesses them exactly as ingest did (decode with Pillow, convert to the
model's channels, resize to its side)::

    model = mlflow.pyfunc.load_model("models:/inserts-classifier@champion")
    model.predict(["a.png", "b.png"])  # DataFrame: label, probability, one p_<class> column per class

A classifier trained with a good class (``data.good_class``) also returns the decision it was evaluated
with: ``defect_score`` (1 - the good class's probability), ``defective`` and the ``threshold`` it keeps.

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

from inspectflow.names import MODEL_ARTIFACT, ONNX_ARTIFACT


class ImageClassifier(PythonModel):
    """Pyfunc wrapper around a trained model directory (see :mod:`inspectflow.models.artifact`)."""

    # Paths, arrays or frames of any size come in: no type hint describes them, and MLflow would warn at
    # every import that ours cannot be validated (the opt-out MLflow's own ChatModel subclasses use).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        """Loads the model directory logged as the ``model`` artifact, or its ONNX export.

        Raises:
            FileNotFoundError: ``engine`` ``onnx`` for a model logged without an ONNX export.
        """
        from inspectflow.models.artifact import SPEC_FILE, Predictor, load_trained_model, read_spec
        from inspectflow.models.onnx import OnnxPredictor

        self.predictor: Predictor
        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        if (context.model_config or {}).get("engine") == "onnx":
            if ONNX_ARTIFACT not in context.artifacts:
                raise FileNotFoundError(f"{ONNX_ARTIFACT}: this model was logged without an ONNX export")
            self.predictor = OnnxPredictor(Path(context.artifacts[ONNX_ARTIFACT]))
            self.spec = read_spec(model_dir / SPEC_FILE)
        else:
            self.predictor, self.spec = load_trained_model(model_dir)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Classifies images.

        Args:
            context: MLflow's context (unused after loading).
            model_input: Image paths (a list, a Series, or a DataFrame with an ``image`` column), one uint8
                image ``(H, W[, C])``, or a list or ``(N, H, W, C)`` stack of them.
            params: Unused.

        Returns:
            One row per image: ``label``, its ``probability`` and ``p_<class>`` for every class; with a good
            class also ``defect_score``, ``defective`` and ``threshold`` (NaN: the most probable class
            decided).
        """
        from inspectflow.imaging import to_tensor
        from inspectflow.tasks.classification import defect_scores, flagged

        images = np.stack([self._prepare(item) for item in _items(model_input)])
        with torch.no_grad():
            logits = self.predictor(to_tensor(images, channels_last=True))
        probabilities = torch.softmax(logits, dim=1).numpy()
        classes = self.spec.classes
        frame = pd.DataFrame(probabilities, columns=[f"p_{c}" for c in classes])
        frame.insert(0, "probability", probabilities.max(axis=1))
        frame.insert(0, "label", [classes[i] for i in probabilities.argmax(axis=1)])
        if self.spec.good_class is not None:
            good = classes.index(self.spec.good_class)
            threshold = self.spec.thresholds.get("detection_threshold")
            frame["defect_score"] = defect_scores(probabilities, good)
            frame["defective"] = flagged(probabilities, good, threshold)
            frame["threshold"] = np.nan if threshold is None else threshold
        return frame

    def _prepare(self, item: Any) -> np.ndarray:
        from inspectflow.imaging import read_image

        return self.spec.preprocess.image(read_image(item))


def _items(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        return list(model_input["image"] if "image" in model_input.columns else model_input.iloc[:, 0])
    if isinstance(model_input, np.ndarray) and model_input.ndim in (2, 3) and model_input.dtype == np.uint8:
        return [model_input]  # one image
    return list(model_input)
