"""Evaluate: score a trained classifier on the test split."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from inspectflow.config import PipelineConfig
from inspectflow.data.dataset import Dataset, load_dataset
from inspectflow.errors import pipeline_step
from inspectflow.models.artifact import load_trained_model
from inspectflow.steps.train import to_tensor

SCORES_FILE = "scores.json"
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ClassificationScores:
    """Test-split scores of a classifier.

    Attributes:
        classes: Class names, in label-index order.
        accuracy: Share of correct predictions.
        macro_f1: Unweighted mean of the per-class F1 scores.
        precision: Per-class precision.
        recall: Per-class recall.
        f1: Per-class F1.
        support: Per-class count of test images.
        confusion: Confusion matrix, rows true classes, columns predicted classes.
    """

    classes: list[str]
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    confusion: list[list[int]]

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flattens the scores into MLflow metric names, such as ``test_f1_hole``."""
        flat = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        for name, values in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1)):
            flat.update({f"{prefix}{name}_{cls}": value for cls, value in values.items()})
        return flat

    def save(self, path: Path) -> None:
        """Writes the scores as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ClassificationScores:
        """Reads scores written by :meth:`save`."""
        return cls(**json.loads(path.read_text()))


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> ClassificationScores:
    """Computes accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return ClassificationScores(
        classes=list(classes),
        accuracy=float(np.mean(y_true == y_pred)),
        macro_f1=float(np.mean(f1)),
        precision=dict(zip(classes, map(float, precision), strict=True)),
        recall=dict(zip(classes, map(float, recall), strict=True)),
        f1=dict(zip(classes, map(float, f1), strict=True)),
        support=dict(zip(classes, map(int, support), strict=True)),
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    )


@torch.no_grad()
def predict_labels(predictor: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Runs a classifier (an ``nn.Module`` or a loaded MLflow model) over uint8 images in batches."""
    predictions = [
        predictor(to_tensor(images[start : start + batch_size])).argmax(1).numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def evaluate(predictor: Predictor, dataset: Dataset, batch_size: int) -> ClassificationScores:
    """Scores a classifier on the dataset's test split."""
    images, labels = dataset.split("test")
    return score_predictions(labels, predict_labels(predictor, images, batch_size), dataset.info.classes)


def plot_confusion(scores: ClassificationScores, path: Path) -> None:
    """Draws the confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(scores.confusion)
    size = 1.0 + 0.8 * len(scores.classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set(
        xticks=range(len(scores.classes)),
        yticks=range(len(scores.classes)),
        xlabel="predicted",
        ylabel="true",
        title=f"accuracy {scores.accuracy:.3f}, macro-F1 {scores.macro_f1:.3f}",
    )
    ax.set_xticklabels(scores.classes, rotation=45, ha="right")
    ax.set_yticklabels(scores.classes)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(
            col, row, str(count), ha="center", va="center", color="white" if count > threshold else "black"
        )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@pipeline_step("evaluate")
def evaluate_step(
    dataset_dir: Path, model_dir: Path, raw_config: dict[str, object], run_id: str, out_dir: Path
) -> ClassificationScores:
    """Runs evaluation as a pipeline step, logging metrics, the confusion matrix and scores to MLflow."""
    import mlflow

    from inspectflow.config import validate_config
    from inspectflow.tracking import resume_run

    config: PipelineConfig = validate_config(raw_config)
    model, _ = load_trained_model(model_dir)
    with resume_run(run_id):
        scores = evaluate(model, load_dataset(dataset_dir), config.evaluate.batch_size)
        out_dir.mkdir(parents=True, exist_ok=True)
        scores.save(out_dir / SCORES_FILE)
        (out_dir / "confusion_matrix.json").write_text(
            json.dumps({"classes": scores.classes, "matrix": scores.confusion}, indent=2)
        )
        plot_confusion(scores, out_dir / "confusion_matrix.png")
        mlflow.log_metrics(scores.metrics())
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
    return scores
