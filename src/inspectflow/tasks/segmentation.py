"""Segmentation: a defect mask per image (DAGM 2007 and any ``images/`` + ``masks/`` set).

Scored by foreground Dice and IoU, the mean per-image IoU of defective images and image-level detection
rates, all also broken down per image group (DAGM class); evaluation draws its best and worst test images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inspectflow.errors import DataError
from inspectflow.imaging import Preprocess
from inspectflow.metrics import operating_point
from inspectflow.metrics import segmentation as seg
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
    from inspectflow.data.layouts.base import Layout, SourceImage
    from inspectflow.models.artifact import ModelSpec, Predictor
    from inspectflow.tasks.base import LossFn
    from inspectflow.types import DataSettings, EvaluateSettings, RunSettings, TrainSettings

OVERLAYS_DIR = "overlays"
#: Input sides must divide by 2**5: the EfficientNet encoder downsamples five times (our U-Net four).
SIDE_MULTIPLE = 32
#: The most memory the cached images and masks of one dataset may take.
CACHE_BUDGET_BYTES = 2 << 30
#: The largest BCE weight of defect pixels that ``class_balance=auto`` sets (see :meth:`Segmentation.loss`).
MAX_POS_WEIGHT = 5.0


@dataclass
class SegmentationScores(operating_point.DecisionRates):
    """Test-split scores of a defect segmenter.

    Attributes:
        classes: Image groups (DAGM classes) the scores are broken down by.
        dice: Foreground Dice pooled over all test pixels (each image's own pixels: a small image enlarged
            to the working size weighs what it holds).
        iou: Foreground IoU pooled over all test pixels, the same way.
        mean_defect_iou: Mean per-image IoU over the defective test images.
        defect_dice: Foreground Dice pooled over the defective test images only (how well defects are
            outlined, apart from false alarms on clean images).
        detection_tpr: Share of defective images declared defective (highest pixel probability above the
            detection threshold).
        detection_fpr: Share of clean images declared defective.
        per_class: The same five figures for each group, plus its image counts.
        decision_rates: The escape and false-reject rates of the image-level decisions, with intervals.
        intersection: Each test image's pixels both predicted and truly defective, in test-split order (for
            bootstrap intervals and the gate's paired comparison), counted at the image's own size.
        predicted_area: Each test image's predicted defect pixels (at its own size).
        true_area: Each test image's true defect pixels (at its own size).
        flagged: Whether each test image was declared defective.
    """

    classes: list[str]
    dice: float
    iou: float
    mean_defect_iou: float
    detection_tpr: float
    detection_fpr: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    defect_dice: float = 0.0
    decision_rates: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    intersection: list[float] = field(default_factory=list)
    predicted_area: list[float] = field(default_factory=list)
    true_area: list[float] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)
    task: str = "segmentation"

    class_metric: ClassVar[str] = "IoU"

    @property
    def test_images(self) -> int:
        """How many test images were scored."""
        return round(sum(group["images"] for group in self.per_class.values()))

    def class_scores(self) -> dict[str, float]:
        """Per-group foreground IoU, which the gate compares with the champion's."""
        return {name: values["iou"] for name, values in self.per_class.items()}

    def metrics(self, prefix: str = TEST_METRICS) -> dict[str, float]:
        """Flattens the scores into MLflow metric names, such as ``test/iou/Class1``."""
        names = ("dice", "iou", "mean_defect_iou", "detection_tpr", "detection_fpr")
        flat = {f"{prefix}{name}": float(getattr(self, name)) for name in (*names, "defect_dice")}
        flat.update(self.rate_metrics(prefix))
        for group, values in self.per_class.items():
            flat.update({f"{prefix}{name}/{group}": values[name] for name in names})
        return flat

    def resampled(self, metric: str, picks: np.ndarray) -> np.ndarray:
        """``metric`` on each resample of the test images (rows of ``picks``, indices into them)."""
        if len(self.true_area) != self.test_images:
            raise ValueError("these scores keep no per-image outcomes to resample")
        both, predicted, truth = (np.asarray(values, float)[picks] for values in
                                  (self.intersection, self.predicted_area, self.true_area))  # fmt: skip
        defective, flagged = truth > 0, np.asarray(self.flagged, bool)[picks]
        if metric in ("escape_rate", "false_reject_rate"):
            return operating_point.resampled_rate(metric, defective, flagged)
        if metric in ("detection_tpr", "detection_fpr"):
            events = defective if metric == "detection_tpr" else ~defective
            counts = events.sum(axis=1)
            hits = (events & flagged).sum(axis=1)
            return np.divide(hits, counts, out=np.full(len(counts), np.nan), where=counts > 0)
        if metric == "mean_defect_iou":
            union = predicted + truth - both
            per_image = np.divide(both, union, out=np.ones(both.shape), where=union > 0)
            return np.divide(
                (per_image * defective).sum(axis=1), defective.sum(axis=1),
                out=np.ones(len(picks)), where=defective.any(axis=1),
            )  # fmt: skip
        if metric == "defect_dice":
            both, predicted, truth = both * defective, predicted * defective, truth * defective
        elif metric not in ("dice", "iou"):
            raise ValueError(f"{metric} is not a segmentation metric")
        both, total = both.sum(axis=1), predicted.sum(axis=1) + truth.sum(axis=1)
        if metric == "iou":
            return np.divide(both, total - both, out=np.ones(len(picks)), where=total - both > 0)
        return np.divide(2 * both, total, out=np.ones(len(picks)), where=total > 0)

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """Image-level detection as a two-class confusion matrix: ``clean``, ``defective``."""
        counts = self.confusion_counts()
        labels = ["clean", "defective"]
        return labels, [[counts[(actual, predicted)] for predicted in labels] for actual in labels]

    def confusion_counts(self) -> dict[tuple[str, str], int]:
        """Image-level detection: ``(defective|clean, defective|clean) -> images``."""
        # The detection rates are ratios of image counts, so the counts come back exactly.
        defective = sum(group["defective_images"] for group in self.per_class.values())
        clean = sum(group["images"] for group in self.per_class.values()) - defective
        found, false_alarms = round(self.detection_tpr * defective), round(self.detection_fpr * clean)
        return {
            ("defective", "defective"): found,
            ("defective", "clean"): round(defective) - found,
            ("clean", "defective"): false_alarms,
            ("clean", "clean"): round(clean) - false_alarms,
        }


def detection_cut(config: EvaluateSettings) -> float:
    """The image score above which an image counts as defective.

    A model without a picked threshold: any pixel above the mask threshold.
    """
    return config.mask_threshold if config.detection_threshold is None else config.detection_threshold


def detection_from_validation(values: np.ndarray, defective: np.ndarray, config: EvaluateSettings) -> float:
    """The detection threshold picked on validation image scores.

    For ``target_recall`` if set, else the best separation of defective from clean images;
    ``mask_threshold`` when neither can be picked.
    """
    if config.target_recall is None:
        return seg.pick_detection_threshold(values, defective, default=config.mask_threshold)
    picked = operating_point.pick_threshold(values, defective, config.target_recall)
    return config.mask_threshold if picked is None else picked


def image_scores(probabilities: torch.Tensor) -> torch.Tensor:
    """Each image's defect score: its highest pixel probability (``(N, 1, H, W)`` -> ``(N,)``).

    A faint defect the mask threshold misses still scores above every clean part, which a predicted area
    cannot tell from no defect at all.
    """
    return probabilities.flatten(1).amax(1)


#: Pixels per forward pass in inference: a U-Net's activations of larger batches leave the CPU caches.
#: Measured on 200 images of 256x256: 15 s in batches of 32, 8 s in batches of 4.
INFERENCE_PIXELS = 4 * 256 * 256


def inference_batch(batch_size: int, height: int, width: int) -> int:
    """``batch_size``, capped to :data:`INFERENCE_PIXELS` pixels per batch (at least one image)."""
    return max(1, min(batch_size, INFERENCE_PIXELS // (height * width)))


def predict_masks(
    predictor: Predictor, images: np.ndarray, batch_size: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Runs a segmenter over uint8 images in batches.

    Returns:
        Boolean masks ``(N, H, W)`` and each image's defect score ``(N,)``.
    """
    import torch

    masks, scores = [], []
    for logits in batched(predictor, images, inference_batch(batch_size, *images.shape[1:3])):
        probabilities = torch.sigmoid(logits)
        masks.append((probabilities > threshold)[:, 0].numpy())
        scores.append(image_scores(probabilities).numpy())
    if not masks:
        return np.zeros((0, *images.shape[1:3]), dtype=bool), np.zeros(0, dtype=np.float32)
    return np.concatenate(masks), np.concatenate(scores)


def score_masks(
    pred: np.ndarray,
    scores: np.ndarray,
    truth: np.ndarray,
    groups: np.ndarray,
    config: EvaluateSettings,
    native_pixels: np.ndarray | None = None,
) -> SegmentationScores:
    """Computes the segmentation scores, overall and per group, from predicted masks and image scores.

    ``native_pixels`` is, per image, how many of its own pixels one pixel of the masks stands for (``None``:
    one): pooled Dice and IoU count each image at its own size, as its masks go back onto it, so that a
    small image enlarged to the working size weighs what it holds.
    """
    weights = np.ones(len(truth)) if native_pixels is None else np.asarray(native_pixels, float)
    both, predicted, true = (counts * weights for counts in seg.pixel_counts(pred, truth))
    defective = np.asarray(true > 0, dtype=bool)

    def figures(rows: np.ndarray) -> dict[str, float]:
        on_defects = np.asarray(rows & defective, dtype=bool)
        rates = seg.detection_rates(scores[rows], defective[rows], detection_cut(config))
        per_image = seg.per_image_iou(pred[on_defects], truth[on_defects])
        return {
            "dice": seg.pooled_dice(both[rows], predicted[rows], true[rows]),
            "iou": seg.pooled_iou(both[rows], predicted[rows], true[rows]),
            "mean_defect_iou": float(per_image.mean()) if on_defects.any() else 1.0,
            "defect_dice": seg.pooled_dice(both[on_defects], predicted[on_defects], true[on_defects]),
            "detection_tpr": float(rates["true_positive_rate"]),
            "detection_fpr": float(rates["false_positive_rate"]),
            "images": float(rows.sum()),
            "defective_images": float(on_defects.sum()),
        }

    names = sorted(set(groups.tolist()))
    overall = figures(np.ones(len(truth), dtype=bool))
    return SegmentationScores(
        classes=names,
        dice=overall["dice"],
        iou=overall["iou"],
        mean_defect_iou=overall["mean_defect_iou"],
        defect_dice=overall["defect_dice"],
        detection_tpr=overall["detection_tpr"],
        detection_fpr=overall["detection_fpr"],
        decision_rates=operating_point.rate_fields(defective, scores > detection_cut(config)),
        intersection=both.tolist(),
        predicted_area=predicted.tolist(),
        true_area=true.tolist(),
        flagged=(scores > detection_cut(config)).tolist(),
        per_class={name: figures(groups == name) for name in names},
    )


def native_pixels(dataset: Dataset, split: str) -> np.ndarray | None:
    """Per image of ``split``, its own pixels per pixel of the working size (``None``: not resized).

    Only ``resize`` changes how many pixels an image has; ``pad`` keeps them and ``scale`` (segmenters
    registered before) kept one factor for all.
    """
    preprocess = dataset.info.preprocess
    if preprocess.mode != "resize":
        return None
    rows = dataset.manifest[dataset.manifest["split"] == split]
    sizes = (rows["height"].fillna(preprocess.height) * rows["width"].fillna(preprocess.width)).to_numpy(
        float
    )
    return sizes / (preprocess.height * preprocess.width)


def score_segmentation(
    dataset: Dataset, pred: np.ndarray, scores: np.ndarray, config: EvaluateSettings
) -> SegmentationScores:
    """Scores predicted test masks ``(n, H, W)`` and image scores ``(n,)``, overall and per image group.

    Pooled figures count each image at its own size (:func:`native_pixels`).
    """
    groups = dataset.labels("test")
    truth = dataset.split_masks("test") > 0
    return score_masks(pred, scores, truth, groups, config, native_pixels(dataset, "test"))


#: The smallest side of an overlay panel: small images are enlarged (nearest neighbour) to be read.
OVERLAY_MIN_SIDE = 256


def draw_overlays(dataset: Dataset, pred: np.ndarray, count: int, out_dir: Path) -> list[Path]:
    """Draws the best and worst test images by IoU (defective images first), one PNG each.

    Each PNG has a caption (rank, IoU, source image) over two panels of at least
    :data:`OVERLAY_MIN_SIDE` pixels: the image, and the image with the true defect outlined in green and
    the prediction filled in translucent red. Files are named after their rank (``worst_1.png``).

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
        caption = f"{kind} {rank % count + 1}: IoU {iou[i]:.2f}  {names[i]}"
        overlay = _overlay(images[i], truth[i], pred[i], caption)
        # Named by rank only: the same names in every run, so the MLflow UI lines runs' overlays up.
        path = out_dir / f"{kind}_{rank % count + 1}.png"
        Image.fromarray(overlay).save(path)
        paths.append(path)
    return paths


def _overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, caption: str) -> np.ndarray:
    """``caption`` over two titled panels: the image; truth outlined in green, prediction filled in red."""
    gray = np.repeat(image[..., :1], 3, axis=2).astype(np.float32)
    marked = gray.copy()
    marked[pred] = 0.55 * marked[pred] + 0.45 * np.array([255.0, 0.0, 0.0])
    return overlay_panels(gray, marked, truth, caption, "truth: green outline; prediction: red")


def overlay_panels(
    gray: np.ndarray, marked: np.ndarray, truth: np.ndarray, caption: str, title: str
) -> np.ndarray:
    """``caption`` over two panels: the RGB image ``gray``, and ``marked`` titled ``title``.

    The true defect is outlined in green on ``marked``; both are enlarged to at least
    :data:`OVERLAY_MIN_SIDE` pixels.
    """
    from PIL import Image, ImageDraw

    scale = max(1, -(-OVERLAY_MIN_SIDE // min(truth.shape)))  # ceiling division
    marked = marked.copy()
    eroded = truth.copy()
    eroded[1:, :] &= truth[:-1, :]
    eroded[:-1, :] &= truth[1:, :]
    eroded[:, 1:] &= truth[:, :-1]
    eroded[:, :-1] &= truth[:, 1:]
    marked[truth & ~eroded] = (0.0, 255.0, 0.0)
    panels = [np.kron(p, np.ones((scale, scale, 1))).clip(0, 255).astype(np.uint8) for p in (gray, marked)]
    height, width = panels[0].shape[:2]
    header, gap = 34, 8
    canvas = Image.new("RGB", (2 * width + gap, height + header), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), caption, fill="black")
    for number, (panel, heading) in enumerate(zip(panels, ("image", title), strict=True)):
        left = number * (width + gap)
        canvas.paste(Image.fromarray(panel), (left, header))
        draw.text((left + 4, 18), heading, fill="black")
    return np.asarray(canvas)


class OverlapMeter:
    """Pools intersection and areas over an epoch for foreground Dice and IoU (pixel probability > 0.5)."""

    def __init__(self) -> None:
        self.intersection = 0.0
        self.predicted = 0.0
        self.truth = 0.0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds one batch of logit maps and float masks, both ``(n, 1, H, W)``."""
        mask = logits > 0  # probability > 0.5
        self.intersection += float((mask & (targets > 0)).sum())
        self.predicted += float(mask.sum())
        self.truth += float(targets.sum())

    def result(self, prefix: str) -> dict[str, float]:
        """``<prefix>dice`` and ``<prefix>iou`` (1 when both masks are empty)."""
        total = self.predicted + self.truth
        union = total - self.intersection
        return {
            f"{prefix}dice": 2 * self.intersection / total if total else 1.0,
            f"{prefix}iou": self.intersection / union if union else 1.0,
        }


class Segmentation(Task):
    """A defect-probability map per image, learned with Dice and/or BCE on defect-biased crops."""

    name: ClassVar[str] = "segmentation"
    model_kind: ClassVar[str] = "segmenter"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # Side of the longest working image: KolektorSDD's 500x1260 parts train at half resolution.
        "data": {"max_side": 640},
        "validate": {"min_per_class": 1},
        # No patience: validation IoU of a few defective images swings from epoch to epoch, and early
        # stopping measured on KolektorSDD quit at epoch 10 of 20 with twice the false alarms. The budget
        # ends training (epochs only caps it); the best-validating epoch is kept. The decoder learns
        # first on the frozen pretrained encoder, at a third of a step's cost.
        "train": {
            "epochs": 100,
            "frozen_share": 0.25,
            "loss": "bce+dice",
            "batch_size": 8,
            "lr": 2e-3,
            "crop": 256,
            "max_minutes": 15.0,
            "patience": None,
        },
        # A segmenter is used for its decisions too: one that passes a fifth of the defective parts is not
        # promoted, whatever its IoU.
        "register": {"primary_metric": "iou", "min_score": 0.2, "max_escape_rate": 0.2},
    }
    unused_settings: ClassVar[tuple[str, ...]] = ("data.good_class", "data.ordinal")
    losses: ClassVar[tuple[str, ...]] = ("dice", "bce", "bce+dice")
    primary_metrics: ClassVar[tuple[str, ...]] = ("iou", "dice", "false_reject_rate")

    best_epoch_key: ClassVar[str] = f"{VAL_METRICS}iou"
    recalibrate_batchnorm: ClassVar[bool] = False
    writes_files: ClassVar[bool] = True
    any_input_size: ClassVar[bool] = True
    # The escape rate beside IoU: a fair IoU can hide half the defective parts passed.
    headline_metrics: ClassVar[tuple[str, ...]] = (
        "iou",
        "escape_rate",
        "false_reject_rate",
        "dice",
        "defect_dice",
        "detection_tpr",
        "detection_fpr",
    )
    data_rules: ClassVar[tuple[str, ...]] = ("manifest", "counts", "masks")

    def working_size(self, shapes: np.ndarray, config: DataSettings, count: int) -> Preprocess:
        """One working shape chosen from the data, each image brought to it by its own factor.

        The shape has the images' median aspect and the pixel count of their 90th percentile (the detail
        of nearly every image is kept; smaller ones are enlarged), its longest side at most
        ``data.max_side``, the cache (images and masks) within :data:`CACHE_BUDGET_BYTES`, each side
        rounded to :data:`SIDE_MULTIPLE`. Nothing is padded: on a set of many sizes a canvas of the
        largest would spend most of the compute of small images on padding, and crops of them would show
        little else. An image of another aspect is stretched to it (the ingest line says by how much).
        """
        aspect = float(np.median(shapes[:, 1] / shapes[:, 0]))  # width / height
        area = float(np.quantile(shapes[:, 0].astype(float) * shapes[:, 1], 0.9))
        height, width = (area / aspect) ** 0.5, (area * aspect) ** 0.5
        scale = min(1.0, config.max_side / max(height, width))
        bytes_per_pixel = count * (config.channels + 1)  # images and masks, uint8
        scale *= min(1.0, (CACHE_BUDGET_BYTES / (height * width * scale**2 * bytes_per_pixel)) ** 0.5)
        sides = (max(1, round(size * scale / SIDE_MULTIPLE)) * SIDE_MULTIPLE for size in (height, width))
        height, width = sides
        return Preprocess("resize", int(height), int(width), config.channels)

    def good_class(self, configured: str | None) -> str | None:
        """None: a segmenter's defects are its masks."""
        return None

    def read_masks(
        self, root: Path, records: list[SourceImage], preprocess: Preprocess, layout: Layout
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Every image's mask at the working size (all clean without a mask file), and its manifest columns.

        Raises:
            DataError: The source's layout holds no masks.
        """
        if not layout.has_masks:
            raise DataError(
                f"{root}: the segmentation task learns from defect masks, and the {layout.name} layout has "
                "none (use images/ + masks/, or DAGM's layout)"
            )
        masks = np.zeros((len(records), preprocess.height, preprocess.width), dtype=np.uint8)
        rows = []
        for i, record in enumerate(records):
            mask = record.mask
            if mask is not None:
                masks[i] = preprocess.mask(mask)
            rows.append(
                {
                    "mask_source": record.mask_source,
                    "mask_width": None if mask is None else mask.shape[1],
                    "mask_height": None if mask is None else mask.shape[0],
                    "mask_error": record.mask_error,
                    "defect_flag": None if record.defect_flag is None else int(record.defect_flag),
                    "defect_fraction": None if mask is None else float(mask.mean()),
                }
            )
        return masks, rows

    def strata(self, dataset: Dataset, split: str | None = None) -> np.ndarray:
        """The label and whether the image is defective, so clean and defective images stay in proportion."""
        rows = self._split_rows(dataset, split)
        defective = (rows["defect_fraction"].fillna(0) > 0).astype(str)
        return (rows["label"].astype(str) + "/" + defective).to_numpy()

    def table(
        self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings, sizes: list[tuple[int, int]]
    ) -> pd.DataFrame:
        """What :meth:`records` gives, the mask as an array at each image's stored size.

        Columns ``defect_score``, ``defect_area``, ``defective``, ``threshold`` and ``mask`` (uint8, 1 =
        defect).
        """
        import pandas as pd
        import torch

        probabilities = torch.sigmoid(logits)
        pixels = (probabilities[:, 0] > config.mask_threshold).numpy()
        scores = image_scores(probabilities).numpy()
        masks = [
            spec.preprocess.restore(mask, height, width).astype(np.uint8)
            for mask, (height, width) in zip(pixels, sizes, strict=True)
        ]
        cut = detection_cut(config)
        return pd.DataFrame(
            {
                "defect_score": scores,
                "defect_area": [float(mask.mean()) for mask in masks],
                "defective": scores > cut,
                "threshold": cut,
                "mask": masks,
            }
        )

    def inference_batch(self, batch_size: int, height: int, width: int) -> int:
        """``batch_size`` capped to :data:`INFERENCE_PIXELS` pixels (whole images, not training crops)."""
        return inference_batch(batch_size, height, width)

    def check_config(self, config: RunSettings) -> None:
        """Also refuses ``features+svm`` and sides the networks' downsampling does not divide."""
        if config.train.method == "features+svm":
            raise ValueError("train.method=features+svm applies to classification workloads only")
        super().check_config(config)
        # auto may pick any of the task's networks: sides must suit the most demanding one.
        multiple = (
            SIDE_MULTIPLE if config.train.model == "auto" else self.network(config.train.model).side_multiple
        )
        for name, side in (("data.image_side", config.data.image_side), ("train.crop", config.train.crop)):
            if side is not None and side % multiple:
                raise ValueError(
                    f"{name}={side} must be a multiple of {multiple} (what train.model={config.train.model} "
                    "downsamples by)"
                )

    def targets(self, dataset: Dataset, split: str) -> torch.Tensor:
        """Float defect masks ``(n, 1, H, W)``."""
        import torch

        return torch.from_numpy(dataset.split_masks(split)).unsqueeze(1).float()

    def loss(self, config: TrainSettings, targets: torch.Tensor, classes: int) -> LossFn:
        """Smoothed soft Dice, pixel-wise BCE, or their sum.

        With ``class_balance=auto`` BCE weighs defect pixels up by the square root of the clean-to-defect
        pixel ratio of the defective training images, at most :data:`MAX_POS_WEIGHT`: a defect of 0.5% of
        the pixels would otherwise teach the network that predicting nothing is nearly right, while larger
        weights (10 and more) measured on KolektorSDD spread false alarms over clean parts.
        """
        from inspectflow.models.losses import segmentation_loss

        pos_weight = 1.0
        defective = targets.flatten(1).amax(1) > 0
        if config.class_balance == "auto" and defective.any():
            share = float(targets[defective].mean())
            pos_weight = min(MAX_POS_WEIGHT, ((1 - share) / share) ** 0.5)
        return segmentation_loss(config.loss, pos_weight)  # type: ignore[arg-type]  # names checked by check_config

    def epoch_order(
        self, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> torch.Tensor:
        """With ``class_balance=auto``, defective images make up at least a third of each epoch.

        Rare defective images are drawn again (with replacement) rather than clean ones dropped from
        every epoch: the epoch keeps its length, and clean images still teach what is not a defect.
        """
        import torch

        count = len(targets)
        defective = torch.nonzero(targets.flatten(1).amax(1) > 0).flatten()
        wanted = -(-count // 3)
        if config.class_balance == "none" or len(defective) >= wanted or not len(defective):
            return torch.randperm(count, generator=generator)
        clean = torch.nonzero(targets.flatten(1).amax(1) == 0).flatten()
        extra = defective[torch.randint(len(defective), (wanted - len(defective),), generator=generator)]
        kept_clean = clean[torch.randperm(len(clean), generator=generator)[: count - wanted]]
        order = torch.cat([defective, extra, kept_clean])
        return order[torch.randperm(len(order), generator=generator)]

    def thresholds(
        self,
        config: EvaluateSettings,
        predictor: Predictor,
        images: torch.Tensor,
        targets: torch.Tensor,
        good_class: int | None = None,
    ) -> dict[str, float]:
        """The pixel threshold, and the detection threshold as set or else picked on the validation images.

        The picked threshold is the image score (highest pixel probability) that reaches
        ``target_recall`` with the fewest false rejects, or without a target the one that best separates
        the validation split's defective and clean images: a stray pixel on a clean part need not be a
        detection, and a faint defect below the mask threshold need not be an escape.
        """
        import torch

        detection = config.detection_threshold
        if detection is None:
            size = inference_batch(config.batch_size, *images.shape[2:])
            logits = logits_in_batches(predictor, images, size)
            defective = (targets.flatten(1).amax(1) > 0).numpy()
            values = image_scores(torch.sigmoid(logits)).numpy() if len(logits) else np.zeros(0)
            detection = detection_from_validation(values, defective, config)
        return {"mask_threshold": config.mask_threshold, "detection_threshold": detection}

    def training_batch(
        self, images: torch.Tensor, targets: torch.Tensor, config: TrainSettings, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cuts defect-biased crops, then flips and rotates images and masks alike."""
        from inspectflow.augment import augment, random_crops

        if config.crop:
            # class_balance=auto: crops of defective images nearly always show the defect.
            on_defect = 0.8 if config.class_balance == "auto" else 0.5
            images, targets = random_crops(images, targets, config.crop, generator, on_defect)
        if config.augment != "none":
            images, targets = augment((images, targets), generator, config.augment)
        return images, targets

    def meter(self) -> OverlapMeter:
        """Pooled foreground Dice and IoU."""
        return OverlapMeter()

    def evaluate(
        self, predictor: Predictor, dataset: Dataset, config: EvaluateSettings, out_dir: Path | None = None
    ) -> SegmentationScores:
        """Scores the test split; writes overlays of the best and worst images and the per-image table."""
        images, _ = dataset.split("test")
        pred, image_score = predict_masks(predictor, images, config.batch_size, config.mask_threshold)
        scores = score_segmentation(dataset, pred, image_score, config)
        if out_dir is not None:
            draw_overlays(dataset, pred, config.overlays, out_dir / OVERLAYS_DIR)
            truth = dataset.split_masks("test") > 0
            rows = {
                "image": dataset.file_names("test"),
                "group": dataset.labels("test"),
                "defective": truth.reshape(len(truth), -1).any(axis=1),
                "defect_score": image_score,
                "detected": image_score > detection_cut(config),
                "iou": seg.per_image_iou(pred, truth),
            }
            write_per_image(rows, out_dir)
        return scores

    baseline_description: ClassVar[str] = "an empty mask for every image"

    def baseline(self, dataset: Dataset, config: EvaluateSettings) -> SegmentationScores:
        """Scores predicting no defect anywhere."""
        truth = dataset.split_masks("test")
        return score_segmentation(dataset, np.zeros(truth.shape, dtype=bool), np.zeros(len(truth)), config)

    def scores_from_dict(self, data: dict[str, Any]) -> SegmentationScores:
        """Rebuilds :class:`SegmentationScores`."""
        return SegmentationScores(**data)

    def records(
        self,
        logits: torch.Tensor,
        images: list[PredictedImage],
        spec: ModelSpec,
        config: EvaluateSettings,
    ) -> list[Prediction]:
        """Each image's defect score and area, whether it is defective, and its ``mask`` PNG.

        ``defective`` is the score above the model's threshold, which the record gives too. The mask is
        mapped back onto the image as it was stored (255 = defect).
        """
        import io

        import torch
        from PIL import Image

        probabilities = torch.sigmoid(logits)
        masks = (probabilities[:, 0] > config.mask_threshold).numpy()
        scores = image_scores(probabilities).tolist()
        records = []
        for image, mask, score in zip(images, masks, scores, strict=True):
            restored = spec.preprocess.restore(mask, image.height, image.width)
            full = Image.fromarray(restored.astype(np.uint8) * 255)
            area = float(restored.mean())
            record: dict[str, Any] = {
                "path": str(image.path),
                "defect_score": round(score, 6),
                "defect_area": round(area, 6),
                "defective": score > detection_cut(config),
                "threshold": round(detection_cut(config), 6),  # the model's: it decided "defective"
            }
            png = io.BytesIO()
            full.save(png, format="PNG")
            records.append(Prediction(record, {"mask": png.getvalue()}))
        return records

    def outcomes(self, logits: torch.Tensor, spec: ModelSpec, config: EvaluateSettings) -> list[str]:
        """``defective`` where the image's defect score is above the model's threshold, else ``clean``."""
        import torch

        flagged = image_scores(torch.sigmoid(logits)) > detection_cut(config)
        return ["defective" if value else "clean" for value in flagged.tolist()]


TASK = Segmentation()
