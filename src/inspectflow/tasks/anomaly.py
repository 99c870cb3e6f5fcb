"""Anomaly detection: learned from good parts only, an anomaly map and score per image.

For lines whose defects are too rare and too varied to label: the model (``patchcore``) keeps what good parts
look like, and anything unlike them scores high. Training images are the good parts of the training split
only; its defective images, if any, go to validation (where the decision threshold is picked) with a share of
the good ones. An image is defective when its mask shows a defect or, with ``data.good_class``, when its label
is another class; masks are optional (MVTec AD's layout, ``images/`` + ``masks/``; class folders have none).

Scored by image-level AUROC and average precision and the escape and false-reject rates at the model's
threshold; with masks also by pixel-level AUROC, AUPRO (per-region overlap up to a 30% false-positive rate)
and Dice and IoU of the thresholded maps, computed at the working size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inspectflow.metrics import anomaly as maps_metrics
from inspectflow.metrics import operating_point
from inspectflow.metrics import segmentation as seg
from inspectflow.names import GOOD_QUANTILE_THRESHOLD, TEST_METRICS
from inspectflow.tasks.base import (
    PredictedImage,
    Prediction,
    Task,
    batched,
    logits_in_batches,
    write_per_image,
)
from inspectflow.tasks.segmentation import TASK as SEGMENTATION
from inspectflow.tasks.segmentation import detection_from_validation, inference_batch, overlay_panels

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from inspectflow.data.dataset import Dataset
    from inspectflow.data.layouts.base import Layout, SourceImage
    from inspectflow.imaging import Preprocess
    from inspectflow.models.artifact import ModelSpec, Predictor
    from inspectflow.tasks.base import LossFn, Meter
    from inspectflow.types import DataSettings, EvaluateSettings, RunSettings, TrainSettings

#: Without a defective validation image, the threshold is this quantile of the good validation images'
#: scores (the model card says so).
GOOD_QUANTILE = 0.99
#: The false-positive rate AUPRO integrates up to (MVTec AD's).
AUPRO_FPR_LIMIT = 0.3
OVERLAYS_DIR = "overlays"
NO_GRADIENT = "the anomaly task is not fine-tuned: train.method=patchcore fits its bank and defect head"


@dataclass
class AnomalyScores(operating_point.DecisionRates):
    """Test-split scores of an anomaly detector.

    Attributes:
        classes: The test images' labels (``good`` and the defect kinds of MVTec AD; the classes of a
            class-folder set), which the decisions are broken down by.
        image_auroc: ROC AUC of the image scores, defective against good images (NaN without both).
        image_ap: Average precision of the image scores for finding the defective images.
        pixel_auroc: ROC AUC of the map's pixels against the defect masks (NaN without masks).
        aupro: Area under the per-region-overlap curve up to a false-positive rate of 0.3, over 0.3.
        dice: Foreground Dice of the thresholded maps, pooled over the test pixels (NaN without masks).
        iou: Foreground IoU of the thresholded maps, pooled the same way.
        per_class: Per label, its images and the share of them decided right (a defect kind's found, the
            good class's passed).
        decision_rates: The escape and false-reject rates at the model's threshold, with intervals.
        image_score: Each test image's anomaly score, in test-split order (for resampling).
        defective: Whether each test image is defective.
        flagged: Whether each test image was declared defective.
    """

    classes: list[str]
    image_auroc: float
    image_ap: float
    pixel_auroc: float = math.nan
    aupro: float = math.nan
    dice: float = math.nan
    iou: float = math.nan
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    decision_rates: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    image_score: list[float] = field(default_factory=list)
    defective: list[bool] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)
    task: str = "anomaly"

    class_metric: ClassVar[str] = "share decided right"

    @property
    def test_images(self) -> int:
        """How many test images were scored."""
        return len(self.image_score)

    def class_scores(self) -> dict[str, float]:
        """Per label, the share of its images decided right, which the gate compares with the champion's."""
        return {name: values["correct"] for name, values in self.per_class.items()}

    def metrics(self, prefix: str = TEST_METRICS) -> dict[str, float]:
        """Flat MLflow metrics (``test/image_auroc``, ``test/correct/<label>``); unknown figures left out."""
        names = ("image_auroc", "image_ap", "pixel_auroc", "aupro", "dice", "iou")
        flat = {f"{prefix}{name}": float(getattr(self, name)) for name in names}
        flat.update(
            {f"{prefix}correct/{label}": values["correct"] for label, values in self.per_class.items()}
        )
        flat.update(self.rate_metrics(prefix))
        return {name: value for name, value in flat.items() if not math.isnan(value)}

    def resampled(self, metric: str, picks: np.ndarray) -> np.ndarray:
        """``metric`` on each resample of the test images (rows of ``picks``, indices into them).

        The image-level figures only: the pixel-level ones would need every map again.
        """
        defective = np.asarray(self.defective, bool)[picks]
        if metric in ("escape_rate", "false_reject_rate"):
            return operating_point.resampled_rate(metric, defective, np.asarray(self.flagged, bool)[picks])
        if metric not in ("image_auroc", "image_ap"):
            raise ValueError(f"{metric} is not resampled by the anomaly task (image-level figures only)")
        scores = np.asarray(self.image_score, float)[picks]
        return np.array([_image_figure(metric, s, d) for s, d in zip(scores, defective, strict=True)])

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """Image-level decisions as a two-class confusion matrix: ``clean``, ``defective``."""
        counts = self.confusion_counts()
        labels = ["clean", "defective"]
        return labels, [[counts[(actual, predicted)] for predicted in labels] for actual in labels]

    def confusion_counts(self) -> dict[tuple[str, str], int]:
        """``(defective|clean, defective|clean) -> images``."""
        names = {True: "defective", False: "clean"}
        counts = {(a, p): 0 for a in names.values() for p in names.values()}
        for actual, predicted in zip(self.defective, self.flagged, strict=True):
            counts[(names[bool(actual)], names[bool(predicted)])] += 1
        return counts


def _image_figure(metric: str, scores: np.ndarray, defective: np.ndarray) -> float:
    """Image AUROC or average precision of one set of scores (NaN without both kinds of image)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if defective.all() or not defective.any():
        return math.nan
    if metric == "image_auroc":
        return float(roc_auc_score(defective, scores))
    return float(average_precision_score(defective, scores))


def anomaly_maps(predictor: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's anomaly maps ``(N, H, W)`` float32 of uint8 images, in batches."""
    size = inference_batch(batch_size, *images.shape[1:3])
    maps = [logits[:, 0].float().numpy() for logits in batched(predictor, images, size)]
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]), np.float32)


def score_maps(dataset: Dataset, maps: np.ndarray, config: EvaluateSettings) -> AnomalyScores:
    """Scores the test split's anomaly maps ``(n, H, W)``."""
    scores = maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0)
    defective = dataset.defective("test")
    flagged = scores > _cut(config)
    labels = dataset.labels("test")
    per_class = {
        name: {
            "images": float((labels == name).sum()),
            "correct": float((flagged == defective)[labels == name].mean()),
        }
        for name in sorted(set(labels.tolist()))
    }
    predicted = maps > config.mask_threshold
    result = AnomalyScores(
        classes=sorted(per_class),
        image_auroc=_image_figure("image_auroc", scores, defective),
        image_ap=_image_figure("image_ap", scores, defective),
        per_class=per_class,
        decision_rates=operating_point.rate_fields(defective, flagged),
        image_score=scores.tolist(),
        defective=defective.tolist(),
        flagged=flagged.tolist(),
    )
    if dataset.masks is not None and (truth := dataset.split_masks("test") > 0).any():
        result.pixel_auroc = maps_metrics.pixel_auroc(maps, truth)
        result.aupro = maps_metrics.aupro(maps, truth, AUPRO_FPR_LIMIT)
        result.dice = seg.foreground_dice(predicted, truth)
        result.iou = seg.foreground_iou(predicted, truth)
    return result


class Anomaly(Task):
    """An anomaly map per image, from a memory of good parts (``patchcore``); see the module docstring."""

    name: ClassVar[str] = "anomaly"
    model_kind: ClassVar[str] = "detector"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # KolektorSDD's 500x1260 parts at 256x640: a patch (8 px) still sees a crack a few pixels wide.
        "data": {"max_side": 640},
        "validate": {"min_per_class": 1},
        "train": {"method": "patchcore", "model": "patchcore_lite1", "batch_size": 8},
        # Ranking defective above good parts is what the memory learns; the operating point follows.
        "register": {"primary_metric": "image_auroc", "min_score": 0.7, "int8": False},
    }
    unused_settings: ClassVar[tuple[str, ...]] = ("data.ordinal", "train.loss", "train.crop")
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy",)  # none is used: nothing trains by gradient
    primary_metrics: ClassVar[tuple[str, ...]] = ("image_auroc", "image_ap", "false_reject_rate")
    best_epoch_key: ClassVar[str] = "val/image_auroc"
    recalibrate_batchnorm: ClassVar[bool] = False
    writes_files: ClassVar[bool] = True
    any_input_size: ClassVar[bool] = True
    headline_metrics: ClassVar[tuple[str, ...]] = (
        "image_auroc",
        "escape_rate",
        "false_reject_rate",
        "image_ap",
    )
    baseline_description: ClassVar[str] = "the same score for every image"
    # Not ``counts``: defect kinds are absent from an MVTec training split by design; ``good_parts`` instead.
    data_rules: ClassVar[tuple[str, ...]] = ("manifest", "good_parts")

    def working_size(self, shapes: np.ndarray, config: DataSettings, count: int) -> Preprocess:
        """The segmenter's: one shape of the images' median aspect, sides a multiple of 32, nothing padded."""
        return SEGMENTATION.working_size(shapes, config, count)

    def read_masks(
        self, root: Path, records: list[SourceImage], preprocess: Preprocess, layout: Layout
    ) -> tuple[np.ndarray, list[dict[str, Any]]] | None:
        """The defect masks when the layout has them (the pixel-level scores need them), else none."""
        return SEGMENTATION.read_masks(root, records, preprocess, layout) if layout.has_masks else None

    def strata(self, dataset: Dataset, split: str | None = None) -> np.ndarray:
        """The label and whether the image is defective, so that both keep their proportions."""
        rows = self._split_rows(dataset, split)
        if "defect_fraction" not in rows:  # no masks: the label says it
            return rows["label"].astype(str).to_numpy()
        defective = (rows["defect_fraction"].fillna(0) > 0).astype(str)
        return (rows["label"].astype(str) + "/" + defective).to_numpy()

    def check_config(self, config: RunSettings) -> None:
        """Refuses any method but ``patchcore``."""
        if config.train.method != "patchcore":
            raise ValueError(f"train.method={config.train.method} does not fit the anomaly task (patchcore)")
        super().check_config(config)

    def targets(self, dataset: Dataset, split: str) -> torch.Tensor:
        """Whether each image is defective, as floats ``(n,)``."""
        import torch

        return torch.from_numpy(dataset.defective(split).astype(np.float32))

    def loss(self, config: TrainSettings, targets: torch.Tensor, classes: int) -> LossFn:
        """None: the anomaly task's model is fitted by ``patchcore``, not by the fine-tuning loop."""
        raise NotImplementedError(NO_GRADIENT)

    def training_batch(
        self, images: torch.Tensor, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """None: see :meth:`loss`."""
        raise NotImplementedError(NO_GRADIENT)

    def meter(self) -> Meter:
        """None: see :meth:`loss`."""
        raise NotImplementedError(NO_GRADIENT)

    def thresholds(
        self,
        config: EvaluateSettings,
        predictor: Predictor,
        images: torch.Tensor,
        targets: torch.Tensor,
        good_class: int | None = None,
    ) -> dict[str, float]:
        """The detection threshold, set or picked on the validation images, and the same for the maps' pixels.

        With defective validation images it is the score that reaches ``target_recall`` with the fewest
        false rejects, or without a target the one that best separates them from the good ones; with none,
        the :data:`GOOD_QUANTILE` quantile of the good images' scores.
        """
        detection, basis = config.detection_threshold, {}
        if detection is None:
            logits = logits_in_batches(
                predictor, images, inference_batch(config.batch_size, *images.shape[2:])
            )
            values = logits.flatten(1).amax(1).numpy() if len(logits) else np.zeros(0)
            defective = targets.numpy() > 0
            if defective.any() and (~defective).any():
                detection = detection_from_validation(values, defective, config)
            elif len(good := values[~defective]):
                detection = float(np.quantile(good, GOOD_QUANTILE))
                basis = {GOOD_QUANTILE_THRESHOLD: GOOD_QUANTILE}
            else:
                detection = config.mask_threshold
        detection = min(max(float(detection), 1e-6), 1 - 1e-6)
        return {"mask_threshold": detection, "detection_threshold": detection, **basis}

    def evaluate(
        self, predictor: Predictor, dataset: Dataset, config: EvaluateSettings, out_dir: Path | None = None
    ) -> AnomalyScores:
        """Scores the test split; writes overlays of the best and worst images and the per-image table."""
        images, _ = dataset.split("test")
        maps = anomaly_maps(predictor, images, config.batch_size)
        scores = score_maps(dataset, maps, config)
        if out_dir is not None:
            draw_map_overlays(dataset, maps, scores, config.overlays, out_dir / OVERLAYS_DIR)
            rows = {
                "image": dataset.file_names("test"),
                "label": dataset.labels("test"),
                "defective": np.asarray(scores.defective, bool),
                "defect_score": np.asarray(scores.image_score),
                "detected": np.asarray(scores.flagged, bool),
            }
            write_per_image(rows, out_dir)
        return scores

    def baseline(self, dataset: Dataset, config: EvaluateSettings) -> AnomalyScores:
        """Scores giving every image and pixel the same score (every part passed)."""
        images, _ = dataset.split("test")
        return score_maps(dataset, np.zeros(images.shape[:3], np.float32), config)

    def scores_from_dict(self, data: dict[str, Any]) -> AnomalyScores:
        """Rebuilds :class:`AnomalyScores`."""
        return AnomalyScores(**data)

    def table(
        self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings, sizes: list[tuple[int, int]]
    ) -> pd.DataFrame:
        """What :meth:`records` gives, the mask as an array at each image's stored size."""
        import pandas as pd

        predictions = self._predictions(logits, spec, config, sizes)
        return pd.DataFrame(
            {
                "defect_score": [p["defect_score"] for p, _, _ in predictions],
                "defect_area": [p["defect_area"] for p, _, _ in predictions],
                "defective": [p["defective"] for p, _, _ in predictions],
                "threshold": [p["threshold"] for p, _, _ in predictions],
                "mask": [mask.astype(np.uint8) for _, mask, _ in predictions],
            }
        )

    def records(
        self,
        logits: torch.Tensor,
        images: list[PredictedImage],
        spec: ModelSpec,
        config: EvaluateSettings,
    ) -> list[Prediction]:
        """Each image's anomaly score, defect area, decision and threshold, and its two PNGs.

        ``mask`` (255 = above the pixel threshold) and ``anomaly_map`` (0-255 for scores 0-1), both at the
        image's stored size.
        """
        sizes = [(image.height, image.width) for image in images]
        predictions = self._predictions(logits, spec, config, sizes)
        return [
            Prediction(
                {"path": str(image.path), **record},
                {"mask": _png(mask.astype(np.uint8) * 255), "anomaly_map": _png(heat)},
            )
            for image, (record, mask, heat) in zip(images, predictions, strict=True)
        ]

    def _predictions(
        self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings, sizes: list[tuple[int, int]]
    ) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
        """Per image: its record, its mask and its 8-bit map, both restored to its stored size."""
        maps = logits[:, 0].float().numpy()
        cut = _cut(config)
        found = []
        for values, (height, width) in zip(maps, sizes, strict=True):
            mask = spec.preprocess.restore(values > config.mask_threshold, height, width)
            heat = spec.preprocess.restore((values.clip(0, 1) * 255).astype(np.uint8), height, width)
            score = float(values.max())
            record = {
                "defect_score": round(score, 6),
                "defect_area": round(float(mask.mean()), 6),
                "defective": score > cut,
                "threshold": round(cut, 6),
            }
            found.append((record, mask, heat))
        return found

    def outcomes(self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings) -> list[str]:
        """``defective`` where the image's score is above the model's threshold, else ``clean``."""
        cut = _cut(config)
        return ["defective" if value > cut else "clean" for value in logits.flatten(1).amax(1).tolist()]


def draw_map_overlays(
    dataset: Dataset, maps: np.ndarray, scores: AnomalyScores, count: int, out_dir: Path
) -> list[Path]:
    """Draws the anomaly maps of the test images the model is surest and least sure about, one PNG each.

    ``best_<k>``: the defective images with the highest scores; ``escape_<k>``: the defective ones with the
    lowest; ``false_reject_<k>``: the good ones with the highest. Each shows the image and its map (the
    ``inferno`` colour scale over scores 0-1) with the true defect, where known, outlined in green.
    """
    import matplotlib
    from PIL import Image

    images, _ = dataset.split("test")
    truth = dataset.split_masks("test") > 0 if dataset.masks is not None else np.zeros(maps.shape, bool)
    image_scores = np.asarray(scores.image_score)
    defective = np.asarray(scores.defective, bool)
    by_score = np.argsort(image_scores, kind="stable")
    ranked = {
        "best": [i for i in by_score[::-1] if defective[i]],
        "escape": [i for i in by_score if defective[i]],
        "false_reject": [i for i in by_score[::-1] if not defective[i]],
    }
    colours = matplotlib.colormaps["inferno"]
    names = dataset.file_names("test")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, order in ranked.items():
        for rank, i in enumerate(order[:count], start=1):
            gray = np.repeat(images[i][..., :1], 3, axis=2).astype(np.float32)
            heat = colours(np.clip(maps[i], 0, 1))[..., :3] * 255.0
            caption = f"{kind} {rank}: score {image_scores[i]:.4f}  {names[i]}"
            panels = overlay_panels(gray, 0.5 * gray + 0.5 * heat, truth[i], caption, "anomaly map")
            path = out_dir / f"{kind}_{rank}.png"  # by rank: the MLflow UI lines runs' overlays up
            Image.fromarray(panels).save(path)
            paths.append(path)
    return paths


def _cut(config: EvaluateSettings) -> float:
    """The score above which an image is defective: the model's threshold (none set: nothing is)."""
    return config.detection_threshold if config.detection_threshold is not None else 1.0


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


TASK = Anomaly()
