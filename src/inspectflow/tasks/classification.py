"""Classification: one class per image (textile, inserts).

Scored by accuracy, macro-F1 and per-class precision, recall and F1, with a confusion matrix (rows are true
classes). Graded levels (``data.ordinal``) are also scored by quadratic-weighted kappa and the mean absolute
level error, which count confusing far levels as worse than confusing neighbours. With a good class
(``data.good_class``) a classifier also decides per image whether the part is defective: its defect score
is 1 - the probability of the good class, flagged above the threshold the model keeps (picked on validation
for ``evaluate.target_recall``), or, with no threshold, when its most probable class is not the good one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inspectflow.imaging import Preprocess
from inspectflow.metrics import operating_point
from inspectflow.names import TEST_METRICS, VAL_METRICS
from inspectflow.tasks.base import (
    PredictedImage,
    Prediction,
    Task,
    batched,
    logits_in_batches,
    write_per_image,
)

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
        kappa: Graded levels only (``data.ordinal``): quadratic-weighted Cohen's kappa (1 perfect, 0 chance;
            a confusion costs the square of the levels between); NaN for unordered classes.
        mean_level_error: Graded levels only: mean absolute distance between true and predicted level
            (in levels); NaN for unordered classes.
        truth: Each test image's true class index, in test-split order (for bootstrap intervals and the
            gate's paired comparison).
        predicted: Each test image's predicted class index.
        defective: With a good class, whether each test image is of a defect class.
        flagged: With a good class, whether each test image was declared defective.
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
    kappa: float = math.nan
    mean_level_error: float = math.nan
    truth: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    defective: list[bool] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)
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
        if not math.isnan(self.kappa):
            flat |= {f"{prefix}kappa": self.kappa, f"{prefix}mean_level_error": self.mean_level_error}
        flat.update(self.rate_metrics(prefix))
        for name, values in (("recall", self.recall), ("f1", self.f1)):
            flat.update({f"{prefix}{name}/{cls}": value for cls, value in values.items()})
        return flat

    def resampled(self, metric: str, picks: np.ndarray) -> np.ndarray:
        """``metric`` on each resample of the test images (rows of ``picks``, indices into them)."""
        if len(self.truth) != self.test_images:
            raise ValueError("these scores keep no per-image outcomes to resample")
        if metric in ("escape_rate", "false_reject_rate"):
            defective, flagged = np.asarray(self.defective, bool), np.asarray(self.flagged, bool)
            return operating_point.resampled_rate(metric, defective[picks], flagged[picks])
        truth, predicted = np.asarray(self.truth)[picks], np.asarray(self.predicted)[picks]
        if metric == "accuracy":
            return np.mean(truth == predicted, axis=1)
        if metric == "mean_level_error":
            return np.mean(np.abs(truth - predicted), axis=1)
        levels = len(self.classes)
        cells = (np.arange(len(picks))[:, None] * levels + truth) * levels + predicted
        confusion = np.bincount(cells.ravel(), minlength=len(picks) * levels**2).reshape(-1, levels, levels)
        if metric == "macro_f1":
            hits = np.diagonal(confusion, axis1=1, axis2=2)
            either = confusion.sum(axis=2) + confusion.sum(axis=1)
            return np.mean(np.divide(2 * hits, either, out=np.zeros(hits.shape), where=either > 0), axis=1)
        if metric == "kappa":
            return kappa_of_confusions(confusion)
        raise ValueError(f"{metric} is not a classification metric")

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


def score_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], ordinal: bool = False
) -> ClassificationScores:
    """Computes accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    ``ordinal``: the classes are levels in label-index order; also quadratic-weighted kappa and the mean
    absolute level error.
    """
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
        kappa=quadratic_kappa(y_true, y_pred, len(classes)) if ordinal else math.nan,
        mean_level_error=float(np.mean(np.abs(y_true - y_pred))) if ordinal and len(y_true) else math.nan,
        truth=[int(label) for label in y_true],
        predicted=[int(label) for label in y_pred],
    )


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, levels: int) -> float:
    """Quadratic-weighted Cohen's kappa of level indices (as scikit-learn's ``cohen_kappa_score``).

    0 (chance) where it is undefined: a single level on both sides agrees no better than chance.
    """
    cells = np.bincount(y_true * levels + y_pred, minlength=levels * levels).reshape(1, levels, levels)
    return float(kappa_of_confusions(cells)[0])


def kappa_of_confusions(confusion: np.ndarray) -> np.ndarray:
    """Quadratic-weighted kappa of each confusion matrix ``(..., levels, levels)``, rows true levels."""
    levels = confusion.shape[-1]
    grid = np.arange(levels)
    weights = (grid[:, None] - grid[None, :]) ** 2
    total = confusion.sum(axis=(-2, -1), keepdims=True).clip(min=1)
    expected = confusion.sum(axis=-1, keepdims=True) * confusion.sum(axis=-2, keepdims=True) / total
    observed_cost = (weights * confusion).sum(axis=(-2, -1))
    expected_cost = (weights * expected).sum(axis=(-2, -1))
    ratio = np.divide(observed_cost, expected_cost, out=np.ones(observed_cost.shape), where=expected_cost > 0)
    return 1.0 - ratio


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
        title=f"accuracy {scores.accuracy:.3f}, macro-F1 {scores.macro_f1:.3f}"
        + ("" if math.isnan(scores.kappa) else f", kappa {scores.kappa:.3f}"),
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
        # Images up to 320 px are read at their own size: a 3 px crack in a 300 px solar cell is lost at 160
        # (ELPV: kappa 0.79 from features at 160 px, 0.84 at 304). Fine-tuning at that size pays only where
        # train.method=auto's comparison, within the time budget, finds it does.
        "data": {"max_side": 320},
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
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy", "cross_entropy+emd")
    primary_metrics: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy", "kappa", "false_reject_rate")
    best_epoch_key: ClassVar[str] = f"{VAL_METRICS}macro_f1"
    # Few optimisation steps leave BatchNorm's running averages behind the weights: classifiers need the
    # recomputation (segmenters train on defect-biased crops, where it measurably hurt their IoU).
    recalibrate_batchnorm: ClassVar[bool] = True
    writes_files: ClassVar[bool] = False
    headline_metrics: ClassVar[tuple[str, ...]] = (
        "accuracy",
        "macro_f1",
        "kappa",
        "mean_level_error",
        "escape_rate",
        "false_reject_rate",
    )

    def check_config(self, config: RunSettings) -> None:
        """Also refuses one class, and ``features+svm`` with a flavor other than pyfunc."""
        if config.train.method == "features+svm" and config.register_.flavor == "pytorch":
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
        graded = {"register.primary_metric": config.register_.primary_metric, "train.loss": config.train.loss}
        for setting, value in graded.items():
            if value in ("kappa", "cross_entropy+emd") and not config.data.ordinal:
                raise ValueError(f"{setting}={value} is for graded levels: set data.ordinal=true")

    compares_methods: ClassVar[bool] = True

    def selection_score(
        self, probabilities: np.ndarray, truth: np.ndarray, dataset: Dataset, metric: str
    ) -> float:
        """``metric`` of the most probable classes (``metric`` one of the scores' attributes)."""
        info = dataset.info
        return float(
            getattr(score_predictions(truth, probabilities.argmax(1), info.classes, info.ordinal), metric)
        )

    def working_size(self, shapes: np.ndarray, config: DataSettings, count: int) -> Preprocess:
        """The images' median shape, with the pixels of a square of their median longest side.

        That side is rounded to 16 and at most ``data.max_side``. Images of one aspect within 10% get that
        square; wider or taller ones keep their median aspect at the same pixel count (with ``max_side``
        160 a 330x125 tool flank is read at 96x256, not squashed into 160x160), each side at most its
        median and rounded to 16, so that detail along the long side is not lost to a square.
        """
        side = float(np.clip(round(float(np.median(shapes.max(axis=1))) / 16) * 16, 16, config.max_side))
        aspect = float(np.median(shapes[:, 1] / shapes[:, 0]))  # width / height
        if abs(np.log(aspect)) <= np.log(1.1):
            return Preprocess("resize", int(side), int(side), config.channels)
        median_height, median_width = np.median(shapes, axis=0)
        height = min(side / aspect**0.5, median_height)
        width = min(side * aspect**0.5, median_width)
        height, width = (max(16, round(size / 16) * 16) for size in (height, width))
        return Preprocess("resize", int(height), int(width), config.channels)

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
        ``cross_entropy+emd`` adds the squared earth mover's distance between the predicted and the true
        level distributions (Hou et al., 2016), which grows with the square of the levels between.
        """
        import torch
        from torch import nn

        weights = None
        if config.class_balance != "none":
            counts = torch.bincount(targets, minlength=classes).float()
            weights = torch.where(
                counts > 0, len(targets) / (len(counts) * counts.clamp(min=1)), torch.zeros(())
            )
        cross_entropy = nn.CrossEntropyLoss(weight=weights)
        if config.loss != "cross_entropy+emd":
            return cross_entropy
        from inspectflow.models.losses import squared_emd_loss

        return lambda logits, target: (
            cross_entropy(logits, target) + squared_emd_loss(logits, target, weights)
        )

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
        logits = logits_in_batches(predictor, images, config.batch_size)
        scores = defect_scores(torch.softmax(logits, dim=1).numpy(), good_class)
        picked = operating_point.pick_threshold(scores, targets.numpy() != good_class, config.target_recall)
        return {} if picked is None else {"detection_threshold": picked}

    def training_batch(
        self, images: torch.Tensor, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flips and turns the images as ``train.augment`` allows (labels do not change)."""
        from inspectflow.augment import augment

        if config.augment != "none":
            (images,) = augment((images,), generator, config.augment)
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
        scores = score_predictions(labels, predicted, classes, dataset.info.ordinal)
        decisions: dict[str, Any] = {}
        if good is not None:
            decisions = {
                "defective": labels != good,
                "defect_score": defect_scores(probabilities, good),
                "detected": flagged(probabilities, good, config.detection_threshold),
            }
            scores.decision_rates = operating_point.rate_fields(decisions["defective"], decisions["detected"])
            scores.defective = decisions["defective"].tolist()
            scores.flagged = decisions["detected"].tolist()
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
        scores = score_predictions(
            labels, np.full_like(labels, majority), dataset.info.classes, dataset.info.ordinal
        )
        if (good := dataset.info.good_index) is not None:
            decided = np.full(len(labels), majority != good)  # every image gets the majority's decision
            scores.decision_rates = operating_point.rate_fields(labels != good, decided)
            scores.defective, scores.flagged = (labels != good).tolist(), decided.tolist()
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
    ) -> list[Prediction]:
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
            records.append(Prediction(record))
        return records

    def outcomes(self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings) -> list[str]:
        """The most probable class of each image."""
        return [spec.classes[i] for i in logits.argmax(1).tolist()]


TASK = Classification()
