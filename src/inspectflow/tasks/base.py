"""What a task is: the one seam between the pipeline's steps and what differs between learning problems.

The steps (train, evaluate, register) and prediction are written once; everything that differs between
classifying an image and segmenting its defects (targets, loss, training crops, the per-epoch validation
figures, prediction, scores and evaluation artifacts, which configurations fit) is a method of a
:class:`Task`. A task is chosen once, from the configuration (``PipelineConfig.task``) or from a trained
model's spec, with :func:`inspectflow.tasks.get_task`.

Task modules import torch inside their methods, so that configuration checks and the data steps can use a
task without paying for the import.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from inspectflow.names import TEST_METRICS

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from inspectflow.data.dataset import Dataset
    from inspectflow.data.layouts.base import Layout, SourceImage
    from inspectflow.imaging import Preprocess
    from inspectflow.metrics.operating_point import Rate
    from inspectflow.models.artifact import ModelSpec, Predictor
    from inspectflow.models.networks import Network
    from inspectflow.types import DataSettings, EvaluateSettings, RunSettings, TrainSettings

#: A training loss: ``(logits, targets) -> scalar``.
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


class Scores(Protocol):
    """Test-split scores of any task, as the gate, MLflow and DVC read them."""

    task: str
    classes: list[str]
    #: The per-class score the promotion gate guards against regressions (``F1``, ``IoU``).
    class_metric: ClassVar[str]

    @property
    def test_images(self) -> int:
        """How many test images the scores were computed on (the gate's reasons name it)."""
        ...

    def class_scores(self) -> dict[str, float]:
        """The per-class score the gate compares with the champion's."""
        ...

    def metrics(self, prefix: str = TEST_METRICS) -> dict[str, float]:
        """Flat MLflow metrics, such as ``test/macro_f1`` and ``test/f1/<class>``."""
        ...

    def confusion_counts(self) -> dict[tuple[str, str], int]:
        """``(actual, predicted) -> count``: classes, or defective/clean images for a segmenter."""
        ...

    def resampled(self, metric: str, picks: np.ndarray) -> np.ndarray:
        """``metric`` recomputed on each resample of the test images (NaN where one has nothing to count).

        ``picks`` rows are resamples: indices into the test split, repeats allowed. Computed from the
        per-image outcomes the scores keep; bootstrap intervals and the gate's paired comparison
        (:mod:`inspectflow.metrics.intervals`) read it.
        """
        ...

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """Row and column labels and the counts (rows actual), as the KFP UI draws a confusion matrix."""
        ...

    def rates(self) -> dict[str, Rate]:
        """The escape and false-reject rates of the image-level decisions (none when the task made none)."""
        ...

    @property
    def escape_rate(self) -> float:
        """Share of defective test images passed as good (NaN when unknown)."""
        ...

    @property
    def false_reject_rate(self) -> float:
        """Share of good test images flagged (NaN when unknown)."""
        ...


def describe_scores(scores: Scores, metric: str) -> str:
    """The metric, and the escape and false-reject rates where the task decided per image: one line."""
    line = f"{metric} {getattr(scores, metric):.4f}"
    if not (math.isnan(scores.escape_rate) or math.isnan(scores.false_reject_rate)):
        line += f", escape rate {scores.escape_rate:.1%}, false-reject rate {scores.false_reject_rate:.1%}"
    return line


class Meter(Protocol):
    """Accumulates one epoch's figures (accuracy, pooled IoU, ...) batch by batch."""

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds one batch."""
        ...

    def result(self, prefix: str) -> dict[str, float]:
        """The epoch's figures, named ``<prefix><figure>``."""
        ...


@dataclass
class PredictedImage:
    """One image given to :meth:`Task.records`: where it came from and its size as stored."""

    path: Path
    height: int
    width: int
    number: int  # position in the whole prediction request, to name output files uniquely


@dataclass
class Prediction:
    """One image's prediction: its JSON-able record, and the images that go with it (PNG bytes by name).

    Batch prediction writes each file beside its output and puts its path in the record under its name;
    the inference service sends it base64-encoded.
    """

    record: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


class Task(ABC):
    """What one kind of learning problem does differently; see the module docstring."""

    #: The task's name, as ``PipelineConfig.task`` and a model's spec give it.
    name: ClassVar[str]
    #: What its registered model is called: ``<workload>-<model_kind>`` (``classifier``, ``segmenter``).
    model_kind: ClassVar[str]
    #: What every workload of this task starts from, by section (see the settings' docstrings).
    defaults: ClassVar[dict[str, dict[str, Any]]]
    #: Settings this task never reads (left out of the run's logged parameters).
    unused_settings: ClassVar[tuple[str, ...]]
    #: ``train.loss`` values of this task.
    losses: ClassVar[tuple[str, ...]]
    #: ``register.primary_metric`` values of this task (attributes of its scores).
    primary_metrics: ClassVar[tuple[str, ...]]
    #: The per-epoch validation figure that picks the best epoch.
    best_epoch_key: ClassVar[str]
    #: Whether BatchNorm statistics are recomputed on whole training images after each epoch.
    recalibrate_batchnorm: ClassVar[bool]
    #: Whether prediction writes a file per image (mask PNGs), which needs an output folder.
    writes_files: ClassVar[bool]
    #: Whether the task's networks take any image height and width (fully convolutional), so that the
    #: registered export does too and a champion can be scored on data of another size.
    any_input_size: ClassVar[bool] = False
    #: The test metrics a run's summary shows (attributes of its scores).
    headline_metrics: ClassVar[tuple[str, ...]]
    #: The data-quality rule sets validation applies to its datasets (``manifest``, ``counts``, ``masks``).
    data_rules: ClassVar[tuple[str, ...]] = ("manifest", "counts")
    #: Whether ``train.method=auto`` also compares frozen-feature classifiers (features+svm) and head-only
    #: fine-tuning with full fine-tuning; without, ``auto`` fine-tunes.
    compares_methods: ClassVar[bool] = False

    def check_config(self, config: RunSettings) -> None:
        """Refuses settings that do not fit this task (the model, loss and primary metric it names).

        Raises:
            ValueError: The message names the setting.
        """
        if config.train.model != "auto" and self.name not in self.network(config.train.model).tasks:
            raise ValueError(f"train.model={config.train.model} does not fit the {self.name} workload")
        checks = (
            ("train.loss", config.train.loss, self.losses),
            ("register.primary_metric", config.register_.primary_metric, self.primary_metrics),
        )
        for setting, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{setting}={value} does not fit the {self.name} workload")
        if config.register_.primary_metric == "false_reject_rate" and config.evaluate.target_recall is None:
            raise ValueError(
                "register.primary_metric=false_reject_rate compares models at a defect recall the line signs "
                "off: set evaluate.target_recall (such as 0.95)"
            )

    @abstractmethod
    def working_size(self, shapes: np.ndarray, config: DataSettings, count: int) -> Preprocess:
        """The size every image is brought to when ``data.image_side`` leaves it to the data.

        Args:
            shapes: ``(N, 2)`` heights and widths of the decodable source images.
            config: Data settings (``max_side``, ``channels``).
            count: Images in the dataset (for the cache's memory budget).
        """

    def good_class(self, configured: str | None) -> str | None:
        """The class of parts that pass, kept with the dataset and model: ``data.good_class`` by default."""
        return configured

    def read_masks(
        self, root: Path, records: list[SourceImage], preprocess: Preprocess, layout: Layout
    ) -> tuple[np.ndarray, list[dict[str, Any]]] | None:
        """The defect masks ingest caches for this task, and their manifest columns; ``None``: none.

        Args:
            root: The data root, for error messages.
            records: The source's images, with their masks as the layout read them.
            preprocess: How images are brought to the working size (masks follow exactly).
            layout: The source's layout (whether it holds masks).

        Raises:
            DataError: The task learns from masks the source does not have.
        """
        return None

    def strata(self, dataset: Dataset, split: str | None = None) -> np.ndarray:
        """What a seeded split is stratified by, for all rows or one split's: the label (a task may add)."""
        return self._split_rows(dataset, split)["label"].astype(str).to_numpy()

    @staticmethod
    def _split_rows(dataset: Dataset, split: str | None) -> pd.DataFrame:
        manifest = dataset.manifest
        return manifest if split is None else manifest[manifest["split"] == split]

    @abstractmethod
    def table(
        self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings, sizes: list[tuple[int, int]]
    ) -> pd.DataFrame:
        """One row per image for the registered pyfunc (its ``predict``): what :meth:`records` says.

        ``sizes`` are the images' heights and widths as stored, to map outputs back onto them.
        """

    @abstractmethod
    def targets(self, dataset: Dataset, split: str) -> torch.Tensor:
        """The training targets of one split: class indices, or float masks ``(n, 1, H, W)``."""

    def network(self, name: str) -> Network:
        """The registered network ``name`` (imports the registry, and torch with it).

        Raises:
            ValueError: No network has that name (for a config validator to report).
        """
        from inspectflow.errors import ConfigError
        from inspectflow.models.networks import get_network, network_names

        try:
            return get_network(name)
        except ConfigError:
            known = ", ".join(["auto", *network_names(self.name)])
            raise ValueError(
                f"train.model={name} is not a registered network (the {self.name} task trains {known})"
            ) from None

    def selection_score(
        self, probabilities: np.ndarray, truth: np.ndarray, dataset: Dataset, metric: str
    ) -> float:
        """``metric`` of a candidate's class probabilities ``(n, classes)`` for held-out training images.

        ``train.method=auto`` compares candidates by it (tasks that set ``compares_methods``).
        """
        raise NotImplementedError(f"the {self.name} task does not compare training methods")

    def auto_model(self, preprocess: Preprocess, pretrained_installed: bool) -> str:
        """The ``train.model`` that ``auto`` means for data of this working size: the registry's pick."""
        from inspectflow.models.networks import auto_network

        side = min(preprocess.height, preprocess.width)
        return auto_network(self.name, side, pretrained_installed).name

    @abstractmethod
    def loss(self, config: TrainSettings, targets: torch.Tensor, classes: int) -> LossFn:
        """The training loss; with ``class_balance=auto`` weighted from the training ``targets``."""

    def epoch_order(
        self, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> torch.Tensor:
        """The training images' indices for one epoch: a seeded shuffle."""
        import torch

        return torch.randperm(len(targets), generator=generator)

    def inference_batch(self, batch_size: int, height: int, width: int) -> int:
        """Images per forward pass without gradients (validation, evaluation) for images of this size."""
        return batch_size

    def thresholds(
        self,
        config: EvaluateSettings,
        predictor: Predictor,
        images: torch.Tensor,
        targets: torch.Tensor,
        good_class: int | None = None,
    ) -> dict[str, float]:
        """The evaluation settings a trained model keeps, and evaluation and prediction apply.

        Args:
            config: Evaluation settings; those left to the data are fixed here.
            predictor: The trained model.
            images: The validation images, float ``(n, C, H, W)`` (possibly none).
            targets: Their targets, as :meth:`targets` makes them.
            good_class: The index of the class of parts that pass (``data.good_class``), if any.
        """
        return {}

    @abstractmethod
    def training_batch(
        self, images: torch.Tensor, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops and augments one training batch (images ``(n, C, H, W)`` float)."""

    @abstractmethod
    def meter(self) -> Meter:
        """A fresh accumulator of one epoch's figures."""

    @abstractmethod
    def evaluate(
        self, predictor: Predictor, dataset: Dataset, config: EvaluateSettings, out_dir: Path | None = None
    ) -> Scores:
        """Scores a model on the dataset's test split.

        Args:
            predictor: The model, a callable on float ``(N, C, H, W)`` images.
            dataset: The dataset whose test split is scored.
            config: Evaluation settings.
            out_dir: Where the evaluation artifacts go (confusion matrix, overlays); none when ``None``
                (the gate re-scoring a champion).
        """

    @abstractmethod
    def baseline(self, dataset: Dataset, config: EvaluateSettings) -> Scores:
        """The test-split scores of the trivial model every real one must beat (see the gate)."""

    #: What the trivial model does, for the gate's reasons.
    baseline_description: ClassVar[str]

    @abstractmethod
    def scores_from_dict(self, data: dict[str, Any]) -> Scores:
        """Rebuilds scores saved as JSON."""

    def champion_mismatch(self, champion_classes: list[str], classes: list[str]) -> str | None:
        """Why a champion with other classes cannot be scored on this data, or ``None`` when it can."""
        return None

    @abstractmethod
    def records(
        self,
        logits: torch.Tensor,
        images: list[PredictedImage],
        spec: ModelSpec,
        config: EvaluateSettings,
    ) -> list[Prediction]:
        """Turns one batch of model outputs into one prediction per image.

        ``spec`` is the model's: its classes, its good class, and how the images were brought to its input
        (to map outputs back onto them); ``config`` holds the thresholds it keeps.
        """

    @abstractmethod
    def outcomes(self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings) -> list[str]:
        """Each image's prediction as the drift watch counts it: its class, or defective or clean."""


#: One row per test image (its name, truth, prediction, score), written by every task's evaluation.
PER_IMAGE_FILE = "per_image.csv"


def write_per_image(rows: dict[str, Any], out_dir: Path) -> Path:
    """Writes the per-image evaluation table (columns of equal length) into ``out_dir``."""
    import pandas as pd

    path = out_dir / PER_IMAGE_FILE
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def logits_in_batches(predictor: Predictor, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Runs a model over float images already in tensors, in batches, without gradients: float logits.

    No images give no logits (an empty tensor).
    """
    import torch

    with torch.no_grad():
        starts = range(0, len(images), batch_size)
        logits = [predictor(images[start : start + batch_size]).float() for start in starts]
    return torch.cat(logits) if logits else torch.zeros(0)


def batched(predictor: Predictor, images: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    """Runs a model over uint8 images ``(N, H, W, C)`` in batches, without gradients."""
    import torch

    from inspectflow.imaging import to_tensor

    with torch.no_grad():
        return [
            # Channels-last is the uint8 images' own layout: no copy, and what the networks run fastest on.
            predictor(to_tensor(images[start : start + batch_size], channels_last=True))
            for start in range(0, len(images), batch_size)
        ]
