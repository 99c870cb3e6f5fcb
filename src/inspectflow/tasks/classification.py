"""Classification: one class per image (textile, inserts).

Scored by accuracy, macro-F1 and per-class precision, recall and F1, with a confusion matrix (rows are true
classes). With a good class (``data.good_class``) a classifier also decides per image whether the part is
defective: its defect score is 1 - the probability of the good class, flagged above the threshold the model
keeps (picked on validation for ``evaluate.target_recall``), or, with no threshold, when its most probable
class is not the good one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inspectflow.imaging import Preprocess
from inspectflow.metrics import operating_point
from inspectflow.names import TEST_METRICS, VAL_METRICS
from inspectflow.tasks.base import PredictedImage, Task, batched, write_per_image

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from inspectflow.data.dataset import Dataset
    from inspectflow.models.artifact import ModelSpec, Predictor
    from inspectflow.tasks.base import LossFn
    from inspectflow.types import DataSettings, EvaluateSettings, RunSettings, TrainSettings

CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"


@dataclass
class ClassificationScores(operating_point.DecisionRates):
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
        decision_rates: With a good class, the escape and false-reject rates of the image-level decisions.
    """

    classes: list[str]
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    confusion: list[list[int]]
    decision_rates: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    task: str = "classification"

    class_metric: ClassVar[str] = "F1"

    @property
    def test_images(self) -> int:
        """How many test images were scored."""
        return sum(self.support.values())

    def class_scores(self) -> dict[str, float]:
        """Per-class F1, which the gate compares with the champion's."""
        return self.f1

    def metrics(self, prefix: str = TEST_METRICS) -> dict[str, float]:
        """Flattens the scores into MLflow metric names, such as ``test/f1/hole``.

        Per-class precision stays in ``scores.json``: each metric group is one more chart section to scroll
        past in the MLflow UI.
        """
        flat = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        flat.update(self.rate_metrics(prefix))
        for name, values in (("recall", self.recall), ("f1", self.f1)):
            flat.update({f"{prefix}{name}/{cls}": value for cls, value in values.items()})
        return flat

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """The classes and the confusion matrix (rows true classes)."""
        return self.classes, self.confusion

    def confusion_counts(self) -> dict[tuple[str, str], int]:
        """``(true class, predicted class) -> count``."""
        return {
            (actual, predicted): self.confusion[i][j]
            for i, actual in enumerate(self.classes)
            for j, predicted in enumerate(self.classes)
        }


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> ClassificationScores:
    """Computes accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

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


def predict_probabilities(
    predictor: Predictor, images: np.ndarray, batch_size: int, classes: int
) -> np.ndarray:
    """Runs a classifier over uint8 images in batches: class probabilities ``(N, classes)``."""
    import torch

    batches = [torch.softmax(logits, dim=1).numpy() for logits in batched(predictor, images, batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, classes), dtype=np.float32)


def defect_scores(probabilities: np.ndarray, good_class: int) -> np.ndarray:
    """Each image's defect score: the probability of any class but the good one."""
    return 1.0 - probabilities[:, good_class]


def flagged(probabilities: np.ndarray, good_class: int, threshold: float | None) -> np.ndarray:
    """Which images are declared defective: defect score above ``threshold``, else not most likely good."""
    if threshold is None:
        return probabilities.argmax(1) != good_class
    return defect_scores(probabilities, good_class) > threshold


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


class ClassMeter:
    """Accumulates a confusion matrix of argmax predictions for accuracy and macro-F1."""

    def __init__(self) -> None:
        self.confusion: np.ndarray | None = None

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds one batch of logits ``(n, classes)`` and class indices ``(n,)``."""
        classes = logits.shape[1]
        if self.confusion is None:
            self.confusion = np.zeros((classes, classes), dtype=np.int64)
        pairs = targets.cpu().numpy() * classes + logits.argmax(1).cpu().numpy()
        self.confusion += np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)

    def result(self, prefix: str) -> dict[str, float]:
        """``<prefix>accuracy`` and ``<prefix>macro_f1`` (over the classes present or predicted)."""
        if self.confusion is None:
            return {}
        hits = np.diag(self.confusion).astype(float)
        truth, predicted = self.confusion.sum(axis=1), self.confusion.sum(axis=0)
        seen = (truth + predicted) > 0
        f1 = np.divide(2 * hits, truth + predicted, out=np.zeros_like(hits), where=seen)
        return {
            f"{prefix}accuracy": float(hits.sum() / self.confusion.sum()),
            f"{prefix}macro_f1": float(f1[seen].mean()),
        }


class Classification(Task):
    """One class per image, learned with cross-entropy."""

    name: ClassVar[str] = "classification"
    model_kind: ClassVar[str] = "classifier"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # Pretrained backbones work well at 128-160 px; larger sides cost time for little on defects.
        "data": {"max_side": 160},
        "train": {"loss": "cross_entropy"},
        "register": {"primary_metric": "macro_f1", "min_score": 0.5},
    }
    unused_settings: ClassVar[tuple[str, ...]] = (
        "data.missing_masks",
        "validate.min_defect_fraction",
        "validate.max_defect_fraction",
        "train.crop",
        "evaluate.mask_threshold",
        "evaluate.overlays",
    )
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy",)
    primary_metrics: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy", "false_reject_rate")
    best_epoch_key: ClassVar[str] = f"{VAL_METRICS}macro_f1"
    # Few optimisation steps leave BatchNorm's running averages behind the weights: classifiers need the
    # recomputation (segmenters train on defect-biased crops, where it measurably hurt their IoU).
    recalibrate_batchnorm: ClassVar[bool] = True
    writes_files: ClassVar[bool] = False
    headline_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "escape_rate", "false_reject_rate")

    def check_config(self, config: RunSettings) -> None:
        """Also refuses one class, and ``features+svm`` with a flavor other than pyfunc."""
        if config.train.method == "features+svm" and config.register_.flavor != "pyfunc":
            raise ValueError(
                f"train.method=features+svm is logged as register.flavor=pyfunc (or auto), "
                f"not {config.register_.flavor}"
            )
        super().check_config(config)
        if config.evaluate.target_recall is not None:
            if config.data.good_class is None:
                raise ValueError(
                    "evaluate.target_recall needs data.good_class: the class of parts that pass (every other "
                    "class is a defect)"
                )
            if config.train.method == "features+svm":
                raise ValueError(
                    "evaluate.target_recall sets the threshold on a validation split, which "
                    "train.method=features+svm does not hold out; use train.method=finetune"
                )
        if len(config.data.classes) == 1:
            raise ValueError("data.classes needs at least two classes (or none: one per folder found)")

    def working_size(self, shapes: np.ndarray, config: DataSettings, count: int) -> Preprocess:
        """A square of the images' median longest side, rounded to 16 and at most ``data.max_side``."""
        side = int(np.clip(round(float(np.median(shapes.max(axis=1))) / 16) * 16, 16, config.max_side))
        return Preprocess("resize", side, side, config.channels)

    def table(
        self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings, sizes: list[tuple[int, int]]
    ) -> pd.DataFrame:
        """``label``, its ``probability`` and ``p_<class>`` for every class.

        With a good class also ``defect_score``, ``defective`` and ``threshold`` (NaN: the most probable
        class decided).
        """
        import pandas as pd
        import torch

        probabilities = torch.softmax(logits, dim=1).numpy()
        classes = spec.classes
        frame = pd.DataFrame(probabilities, columns=[f"p_{c}" for c in classes])
        frame.insert(0, "probability", probabilities.max(axis=1))
        frame.insert(0, "label", [classes[i] for i in probabilities.argmax(axis=1)])
        if spec.good_class is not None:
            good = classes.index(spec.good_class)
            threshold = config.detection_threshold
            frame["defect_score"] = defect_scores(probabilities, good)
            frame["defective"] = flagged(probabilities, good, threshold)
            frame["threshold"] = np.nan if threshold is None else threshold
        return frame

    def targets(self, dataset: Dataset, split: str) -> torch.Tensor:
        """Class indices ``(n,)``."""
        import torch

        return torch.tensor(dataset.split(split)[1])  # a copy: pandas hands out read-only arrays

    def loss(self, config: TrainSettings, targets: torch.Tensor, classes: int) -> LossFn:
        """Cross-entropy; with ``class_balance=auto`` each class weighs inversely to its frequency.

        The majority class (a line's good parts) then cannot win by being predicted for everything.
        """
        import torch
        from torch import nn

        if config.class_balance == "none":
            return nn.CrossEntropyLoss()
        counts = torch.bincount(targets, minlength=classes).float()
        weights = torch.where(counts > 0, len(targets) / (len(counts) * counts.clamp(min=1)), torch.zeros(()))
        return nn.CrossEntropyLoss(weight=weights)

    def thresholds(
        self,
        config: EvaluateSettings,
        predictor: Predictor,
        images: torch.Tensor,
        targets: torch.Tensor,
        good_class: int | None = None,
    ) -> dict[str, float]:
        """With a good class and ``target_recall``, the defect-score threshold picked on validation for it.

        A set ``detection_threshold`` is kept as it is; without a target the most probable class decides
        (no threshold).
        """
        import torch

        if good_class is None:
            return {}
        if config.detection_threshold is not None:
            return {"detection_threshold": config.detection_threshold}
        if config.target_recall is None or not len(images):
            return {}
        with torch.no_grad():
            logits = [predictor(images[start : start + config.batch_size])
                      for start in range(0, len(images), config.batch_size)]  # fmt: skip
        scores = defect_scores(torch.softmax(torch.cat(logits), dim=1).numpy(), good_class)
        picked = operating_point.pick_threshold(scores, targets.numpy() != good_class, config.target_recall)
        return {} if picked is None else {"detection_threshold": picked}

    def training_batch(
        self, images: torch.Tensor, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flips and rotates the images (labels do not change)."""
        from inspectflow.augment import augment

        if config.augment:
            (images,) = augment((images,), generator)
        return images, targets

    def meter(self) -> ClassMeter:
        """Accuracy and macro-F1."""
        return ClassMeter()

    def evaluate(
        self, predictor: Predictor, dataset: Dataset, config: EvaluateSettings, out_dir: Path | None = None
    ) -> ClassificationScores:
        """Scores the test split; writes the confusion matrix (JSON, PNG) and the per-image table.

        With a good class, also the image-level decisions: their rates in the scores, and in the table each
        image's ``defective`` (truth), ``defect_score`` and ``detected``.
        """
        images, labels = dataset.split("test")
        classes, good = dataset.info.classes, dataset.info.good_index
        probabilities = predict_probabilities(predictor, images, config.batch_size, len(classes))
        predicted = probabilities.argmax(1)
        scores = score_predictions(labels, predicted, classes)
        decisions: dict[str, Any] = {}
        if good is not None:
            decisions = {
                "defective": labels != good,
                "defect_score": defect_scores(probabilities, good),
                "detected": flagged(probabilities, good, config.detection_threshold),
            }
            scores.decision_rates = operating_point.rate_fields(decisions["defective"], decisions["detected"])
        if out_dir is not None:
            names = np.asarray(classes)
            rows = {"image": dataset.file_names("test"), "true": names[labels], "predicted": names[predicted]}
            write_per_image({**rows, "correct": labels == predicted, **decisions}, out_dir)
            (out_dir / CONFUSION_JSON).write_text(
                json.dumps({"classes": scores.classes, "matrix": scores.confusion}, indent=2)
            )
            plot_confusion(scores, out_dir / CONFUSION_PNG)
        return scores

    baseline_description: ClassVar[str] = "the training split's majority class for every image"

    def baseline(self, dataset: Dataset, config: EvaluateSettings) -> ClassificationScores:
        """Scores predicting the training split's most frequent class for every test image."""
        _, train_labels = dataset.split("train")
        _, labels = dataset.split("test")
        majority = int(np.bincount(train_labels, minlength=len(dataset.info.classes)).argmax())
        scores = score_predictions(labels, np.full_like(labels, majority), dataset.info.classes)
        if (good := dataset.info.good_index) is not None:
            decided = np.full(len(labels), majority != good)  # every image gets the majority's decision
            scores.decision_rates = operating_point.rate_fields(labels != good, decided)
        return scores

    def scores_from_dict(self, data: dict[str, Any]) -> ClassificationScores:
        """Rebuilds :class:`ClassificationScores`."""
        return ClassificationScores(**data)

    def champion_mismatch(self, champion_classes: list[str], classes: list[str]) -> str | None:
        """A classifier of other classes cannot be scored on this data, let alone compared."""
        if champion_classes == classes:
            return None
        return f"predicts other classes {champion_classes}"

    def records(
        self,
        logits: torch.Tensor,
        images: list[PredictedImage],
        spec: ModelSpec,
        config: EvaluateSettings,
        out_dir: Path | None,
    ) -> list[dict[str, Any]]:
        """The label, its probability and every class's probability.

        A model with a good class adds the decision it was evaluated with: ``defect_score`` (1 - the good
        class's probability), ``defective`` and the ``threshold`` it kept (``None``: the most probable class
        decided).
        """
        import torch

        classes = spec.classes
        probabilities = torch.softmax(logits, dim=1).numpy()
        good = None if spec.good_class is None else classes.index(spec.good_class)
        decided = None if good is None else flagged(probabilities, good, config.detection_threshold)
        records = []
        for number, (image, row) in enumerate(zip(images, probabilities, strict=True)):
            best = int(row.argmax())
            record: dict[str, Any] = {
                "path": str(image.path),
                "label": classes[best],
                "probability": round(float(row[best]), 6),
                "probabilities": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)},
            }
            if good is not None and decided is not None:
                threshold = config.detection_threshold
                record |= {
                    "defect_score": round(float(1.0 - row[good]), 6),
                    "defective": bool(decided[number]),
                    "threshold": None if threshold is None else round(threshold, 6),
                }
            records.append(record)
        return records

    def outcomes(self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings) -> list[str]:
        """The most probable class of each image."""
        return [spec.classes[i] for i in logits.argmax(1).tolist()]


TASK = Classification()
