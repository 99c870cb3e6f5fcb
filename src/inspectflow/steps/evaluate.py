"""Evaluate: score a trained model on the test split.

Classifiers get accuracy, macro-F1, per-class precision/recall/F1 and a confusion matrix. Segmenters get
foreground Dice and IoU, the mean per-image IoU of defective images and image-level detection rates, all
also broken down per image group (DAGM class), and overlays of their best and worst test images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from inspectflow import segmentation_metrics as seg
from inspectflow.config import EvaluateConfig, PipelineConfig
from inspectflow.data.dataset import Dataset, load_dataset
from inspectflow.errors import pipeline_step
from inspectflow.models.artifact import Predictor, load_trained_model
from inspectflow.steps.train import to_tensor

SCORES_FILE = "scores.json"


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
    task: str = "classification"

    #: The per-class score the promotion gate guards against regressions.
    class_metric: ClassVar[str] = "F1"

    def class_scores(self) -> dict[str, float]:
        """Per-class F1, which the gate compares with the champion's."""
        return self.f1

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flattens the scores into MLflow metric names, such as ``test_f1_hole``."""
        flat = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        for name, values in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1)):
            flat.update({f"{prefix}{name}_{cls}": value for cls, value in values.items()})
        return flat


@dataclass
class SegmentationScores:
    """Test-split scores of a defect segmenter.

    Attributes:
        classes: Image groups (DAGM classes) the scores are broken down by.
        dice: Foreground Dice pooled over all test pixels.
        iou: Foreground IoU pooled over all test pixels.
        mean_defect_iou: Mean per-image IoU over the defective test images.
        detection_tpr: Share of defective images declared defective (predicted area above the threshold).
        detection_fpr: Share of clean images declared defective.
        per_class: The same five figures for each group, plus its image counts.
    """

    classes: list[str]
    dice: float
    iou: float
    mean_defect_iou: float
    detection_tpr: float
    detection_fpr: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    task: str = "segmentation"

    class_metric: ClassVar[str] = "IoU"

    def class_scores(self) -> dict[str, float]:
        """Per-group foreground IoU, which the gate compares with the champion's."""
        return {name: values["iou"] for name, values in self.per_class.items()}

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flattens the scores into MLflow metric names, such as ``test_iou_Class1``."""
        names = ("dice", "iou", "mean_defect_iou", "detection_tpr", "detection_fpr")
        flat = {f"{prefix}{name}": float(getattr(self, name)) for name in names}
        for group, values in self.per_class.items():
            flat.update({f"{prefix}{name}_{group}": values[name] for name in names})
        return flat


Scores = ClassificationScores | SegmentationScores


def save_scores(scores: Scores, path: Path) -> None:
    """Writes scores as JSON (with their task, so that :func:`load_scores` knows the type)."""
    path.write_text(json.dumps(asdict(scores), indent=2))


def load_scores(path: Path) -> Scores:
    """Reads scores written by :func:`save_scores`."""
    data = json.loads(path.read_text())
    return SegmentationScores(**data) if data.get("task") == "segmentation" else ClassificationScores(**data)


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


@torch.no_grad()
def predict_masks(predictor: Predictor, images: np.ndarray, batch_size: int, threshold: float) -> np.ndarray:
    """Runs a segmenter over uint8 images in batches; returns boolean masks ``(N, H, W)``."""
    masks = [
        (torch.sigmoid(predictor(to_tensor(images[start : start + batch_size]))) > threshold)[:, 0].numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(masks) if masks else np.zeros((0, *images.shape[1:3]), dtype=bool)


def score_masks(
    pred: np.ndarray, truth: np.ndarray, groups: np.ndarray, config: EvaluateConfig
) -> SegmentationScores:
    """Computes the segmentation scores, overall and per group."""

    def figures(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
        defective = t.reshape(len(t), -1).any(axis=1)
        per_image = seg.per_image_iou(p, t)
        rates = seg.detection_rates(p.reshape(len(p), -1).mean(axis=1), defective, config.detection_threshold)
        return {
            "dice": seg.foreground_dice(p, t),
            "iou": seg.foreground_iou(p, t),
            "mean_defect_iou": float(per_image[defective].mean()) if defective.any() else 1.0,
            "detection_tpr": float(rates["true_positive_rate"]),
            "detection_fpr": float(rates["false_positive_rate"]),
            "images": float(len(t)),
            "defective_images": float(defective.sum()),
        }

    names = sorted(set(groups.tolist()))
    overall = figures(pred, truth)
    return SegmentationScores(
        classes=names,
        dice=overall["dice"],
        iou=overall["iou"],
        mean_defect_iou=overall["mean_defect_iou"],
        detection_tpr=overall["detection_tpr"],
        detection_fpr=overall["detection_fpr"],
        per_class={name: figures(pred[groups == name], truth[groups == name]) for name in names},
    )


def evaluate(predictor: Predictor, dataset: Dataset, config: EvaluateConfig) -> Scores:
    """Scores a classifier, or a segmenter when the dataset has masks, on the dataset's test split."""
    images, labels = dataset.split("test")
    if dataset.masks is None:
        return score_predictions(
            labels, predict_labels(predictor, images, config.batch_size), dataset.info.classes
        )
    return score_segmentation(
        dataset, predict_masks(predictor, images, config.batch_size, config.mask_threshold), config
    )


def score_segmentation(dataset: Dataset, pred: np.ndarray, config: EvaluateConfig) -> SegmentationScores:
    """Scores predicted test masks ``(n, H, W)`` against the dataset's, overall and per image group."""
    groups = dataset.manifest.loc[dataset.manifest["split"] == "test", "label"].astype(str).to_numpy()
    return score_masks(pred, dataset.split_masks("test") > 0, groups, config)


def draw_overlays(dataset: Dataset, pred: np.ndarray, count: int, out_dir: Path) -> list[Path]:
    """Draws the best and worst test images by IoU (defective images first) as image | truth | prediction.

    Truth is drawn in green and prediction in red over the image; each file is named after its rank and
    source image.

    Args:
        dataset: The dataset whose test split was predicted.
        pred: Predicted test masks ``(n, H, W)``, as :func:`predict_masks` returns them.
        count: Images drawn at each end of the ranking.
        out_dir: Where the PNGs go.
    """
    from PIL import Image

    images, _ = dataset.split("test")
    truth = dataset.split_masks("test") > 0
    iou = seg.per_image_iou(pred, truth)
    defective = truth.reshape(len(truth), -1).any(axis=1)
    candidates = np.flatnonzero(defective) if defective.any() else np.arange(len(truth))
    ranked = candidates[np.argsort(iou[candidates], kind="stable")]
    count = min(count, len(ranked))
    chosen = [("best", i) for i in ranked[::-1][:count]] + [("worst", i) for i in ranked[:count]]
    names = dataset.file_names("test")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, (kind, i) in enumerate(chosen):
        gray = np.repeat(images[i][..., :1], 3, axis=2).astype(np.float32)
        panels = [gray]
        for mask, colour in ((truth[i], (0, 255, 0)), (pred[i], (255, 0, 0))):
            tinted = gray.copy()
            tinted[mask] = 0.5 * tinted[mask] + 0.5 * np.array(colour, dtype=np.float32)
            panels.append(tinted)
        strip = np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8)
        stem = names[i].replace("/", "_").rsplit(".", 1)[0]
        path = out_dir / f"{kind}_{rank % count + 1}_iou{iou[i]:.2f}_{stem}.png"
        Image.fromarray(strip).save(path)
        paths.append(path)
    return paths


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
) -> Scores:
    """Runs evaluation as a pipeline step, logging metrics, scores and plots to MLflow.

    Writes ``scores.json`` and, for classifiers, the confusion matrix (PNG and JSON), for segmenters the
    overlays, into ``out_dir`` and logs them under the run's ``evaluation/`` artifacts.
    """
    import mlflow

    from inspectflow.config import validate_config
    from inspectflow.tracking import resume_run

    config: PipelineConfig = validate_config(raw_config)
    model, _ = load_trained_model(model_dir)
    dataset = load_dataset(dataset_dir)
    with resume_run(run_id):
        out_dir.mkdir(parents=True, exist_ok=True)
        if dataset.masks is None:
            scores: Scores = evaluate(model, dataset, config.evaluate)
        else:  # predict once for both the scores and the overlays
            images, _ = dataset.split("test")
            pred = predict_masks(model, images, config.evaluate.batch_size, config.evaluate.mask_threshold)
            scores = score_segmentation(dataset, pred, config.evaluate)
            draw_overlays(dataset, pred, config.evaluate.overlays, out_dir / "overlays")
        save_scores(scores, out_dir / SCORES_FILE)
        if isinstance(scores, ClassificationScores):
            (out_dir / "confusion_matrix.json").write_text(
                json.dumps({"classes": scores.classes, "matrix": scores.confusion}, indent=2)
            )
            plot_confusion(scores, out_dir / "confusion_matrix.png")
        mlflow.log_metrics(scores.metrics())
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
    return scores
