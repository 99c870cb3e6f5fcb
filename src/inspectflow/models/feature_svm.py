"""The ``features+svm`` method: a frozen ImageNet CNN's features, cached, fed to a standardised SVM.

Features are cached on disk by backbone, layer, weights and data, since extraction dominates the cost and
the SVM is cheap. The SVM is cross-validated over repeated seeded, stratified 70/30 splits of the training
split (the test split is the gate's, never seen by an estimate); the classifier wraps the extractor and the
fitted SVM behind the same call as the networks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import nn

from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import ConfigError
from inspectflow.models.backbones import extract_features, resolve_layer
from inspectflow.names import CV_METRICS

if TYPE_CHECKING:
    from inspectflow.data.dataset import Dataset

#: Part of every cache key: bump it when extraction changes (preprocessing, cut points) to orphan old caches.
_FEATURE_FORMAT = 1
_HASH_CHUNK = 1 << 20


def weights_identity(weights: str) -> str:
    """Identifies a ``weights`` setting by content, for cache keys.

    Args:
        weights: ``none``, ``imagenet`` or a path to a state dict.

    Returns:
        ``none``, ``imagenet`` or ``file:<sha256 of the file's bytes>`` (so a retrained file at the same path
        gets a new identity).

    Raises:
        ConfigError: The path is not a file.
    """
    if weights in ("none", "imagenet"):
        return weights
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found (weights takes none, imagenet or a path)")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return f"file:{digest.hexdigest()}"


def images_digest(dataset: Dataset) -> str:
    """What the features of a dataset depend on: its images in order, at the size and channels cached.

    The same source at another working size (``data.max_side``) or channel count has other features, and a
    cache file holds one row per image in order.
    """
    rows = "\n".join(map(str, dataset.manifest["sha256"]))
    return hashlib.sha256(f"{rows}\n{dataset.info.preprocess!r}".encode()).hexdigest()


def feature_cache_key(backbone: str, layer: str | None, weights_id: str, data_digest: str) -> str:
    """Names the cached features of one extractor over one dataset.

    Args:
        backbone: ``efficientnet_lite0``, ``vgg16`` or ``mobilenet_v2``.
        layer: Cut point; ``None`` and the backbone's explicit default give the same key.
        weights_id: Identity of the weights, such as :func:`weights_identity`'s.
        data_digest: Digest of the images in order at their cached size (:func:`images_digest`).

    Returns:
        The first 16 hex digits of a sha256 over the inputs and the feature format version.

    Raises:
        ValueError: Unknown backbone or layer.
    """
    fields = {
        "format": _FEATURE_FORMAT,
        "backbone": backbone,
        "layer": resolve_layer(backbone, layer),
        "weights": weights_id,
        "data": data_digest,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def cached_features(cache_dir: Path, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Loads ``cache_dir/<key>.npy``, or computes and stores it.

    The file is written to a temporary name and renamed into place, so an interrupted run never leaves a
    truncated cache behind, and concurrent runs at worst compute twice.

    Args:
        cache_dir: Cache folder; created when missing.
        key: File stem, such as :func:`feature_cache_key`'s.
        compute: Produces the features on a miss.

    Returns:
        The features and whether they came from the cache.

    Raises:
        ValueError: The key is not a plain file name.
    """
    if not key or Path(key).name != key or key in (".", ".."):
        raise ValueError(f"cache key must be a plain file name, got {key!r}")
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False), True
        except (OSError, ValueError, EOFError):
            pass  # unreadable (written by another tool or damaged on disk): recompute and replace it
    features = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".npy.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, features, allow_pickle=False)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return features, False


@dataclass
class SplitResult:
    """Scores of one seeded split, on its held-out part.

    Attributes:
        index: Split number, from 0.
        seed: Seed of the split and the SVM (``seed + index``).
        accuracy: Accuracy on the held-out part.
        macro_f1: Macro-F1 on the held-out part (over all classes; 0 for a class absent from it).
        recall: Recall per class name on the held-out part (0 for a class absent from it).
        train_size: Samples the split's SVM was fitted on.
        test_size: Held-out samples.
    """

    index: int
    seed: int
    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    train_size: int
    test_size: int


@dataclass
class SvmResult:
    """Scores over all splits; std is the population std (``np.std``).

    Attributes:
        splits: Per-split results, in order.
        accuracy_mean: Mean held-out accuracy.
        accuracy_std: Std of the held-out accuracy.
        macro_f1_mean: Mean held-out macro-F1.
        macro_f1_std: Std of the held-out macro-F1.
        recall_mean: Mean recall per class name.
        recall_std: Std of the recall per class name.
    """

    splits: list[SplitResult]
    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    recall_mean: dict[str, float]
    recall_std: dict[str, float]


#: A logistic regression's regularisation: ELPV's graded cells scored within 0.03 kappa for C in 0.01-0.3 on
#: the standardised 4096-d pyramid features; 1 overfits them.
LOGISTIC_C = 0.1


def fit_classifier(
    features: np.ndarray, labels: np.ndarray, classifier: str, kernel: str, c: float, seed: int
) -> Pipeline:
    """Fits a standardised, class-balanced SVM or logistic regression with probability estimates.

    Classes are weighted inversely to their frequency: on real inspection sets, mostly defect-free, an
    unweighted classifier settles on the majority class.

    Args:
        features: ``(N, D)`` features.
        labels: ``N`` integer class indices.
        classifier: ``svm`` or ``logistic`` (regularised by :data:`LOGISTIC_C`).
        kernel: SVC kernel (``rbf``, ``linear``, ``poly``, ``sigmoid``).
        c: SVC regularisation ``C``.
        seed: Seed of the SVM's probability calibration's internal cross-validation.

    Returns:
        The fitted ``StandardScaler`` + classifier pipeline; an SVM's ``predict`` uses its decision function.
    """
    model = (
        LogisticRegression(C=LOGISTIC_C, class_weight="balanced", max_iter=5000)
        if classifier == "logistic"
        else SVC(kernel=kernel, C=c, class_weight="balanced", probability=True, random_state=seed)
    )
    pipeline = Pipeline([("scale", StandardScaler()), (classifier, model)])
    with warnings.catch_warnings():
        # scikit-learn 1.9 deprecates probability=True (removal in 1.11); the stack pins 1.9.1. Its suggested
        # CalibratedClassifierCV would predict by calibrated probability, changing the paper's SVM accuracy.
        warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
        pipeline.fit(features, labels)
    return pipeline


def svm_repeated_splits(
    features: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    classifier: str = "svm",
    kernel: str = "rbf",
    c: float = 1.0,
    repeats: int = 5,
    test_fraction: float = 0.3,
    seed: int = 0,
    on_split: Callable[[SplitResult], None] | None = None,
) -> SvmResult:
    """Cross-validates the classifier over repeated seeded, stratified holdout splits of the rows it is given.

    Give it the training split's rows only: an estimate that saw the test images would not be the registered
    model's, nor comparable with the test scores the gate judges. Split ``i`` holds out ``test_fraction`` of
    each class with seed ``seed + i`` (see :func:`~inspectflow.data.splits.stratified_holdout`) and fits the
    SVM with the same seed.

    Args:
        features: ``(N, D)`` features.
        labels: ``N`` class indices into ``classes``.
        classes: Class names, in index order.
        classifier: ``svm`` or ``logistic`` (see :func:`fit_classifier`).
        kernel: SVC kernel.
        c: SVC regularisation ``C``.
        repeats: Number of splits.
        test_fraction: Share of each class held out for testing.
        seed: Seed of the first split.
        on_split: Called with each split's result as soon as it is scored (e.g. to log a child run).

    Returns:
        Per-split results with the mean and population std of accuracy, macro-F1 and per-class recall.

    Raises:
        ValueError: Mismatched shapes, labels outside ``classes`` or ``repeats`` below 1.
    """
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"expected (N, D) features for {len(labels)} labels, got {features.shape}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must be class indices in 0..{len(classes) - 1}")
    indices = list(range(len(classes)))
    splits: list[SplitResult] = []
    for index in range(repeats):
        split_seed = seed + index
        test = stratified_holdout(labels, test_fraction, split_seed)
        model = fit_classifier(features[~test], labels[~test], classifier, kernel, c, split_seed)
        predicted = model.predict(features[test])
        recall = recall_score(labels[test], predicted, labels=indices, average=None, zero_division=0)
        result = SplitResult(
            index=index,
            seed=split_seed,
            accuracy=float(accuracy_score(labels[test], predicted)),
            macro_f1=float(
                f1_score(labels[test], predicted, labels=indices, average="macro", zero_division=0)
            ),
            recall={name: float(value) for name, value in zip(classes, recall, strict=True)},
            train_size=int((~test).sum()),
            test_size=int(test.sum()),
        )
        splits.append(result)
        if on_split is not None:
            on_split(result)
    accuracies = np.array([s.accuracy for s in splits])
    macro_f1s = np.array([s.macro_f1 for s in splits])
    recalls = {name: np.array([s.recall[name] for s in splits]) for name in classes}
    return SvmResult(
        splits=splits,
        accuracy_mean=float(accuracies.mean()),
        accuracy_std=float(accuracies.std()),
        macro_f1_mean=float(macro_f1s.mean()),
        macro_f1_std=float(macro_f1s.std()),
        recall_mean={name: float(values.mean()) for name, values in recalls.items()},
        recall_std={name: float(values.std()) for name, values in recalls.items()},
    )


def describe_cv(metrics: dict[str, float], splits: int) -> str | None:
    """The cross-validation estimate among a run's metrics, named as what it is; ``None`` when it has none.

    For the train step's line and the model card: shown beside the test scores, never in their place.
    """
    figures = [
        f"{name} {metrics[f'{CV_METRICS}{name}_mean']:.4f} ± {metrics[f'{CV_METRICS}{name}_std']:.4f}"
        for name in ("accuracy", "macro_f1")
        if f"{CV_METRICS}{name}_mean" in metrics and f"{CV_METRICS}{name}_std" in metrics
    ]
    if not figures:
        return None
    return f"cross-validated on the training split over {splits} splits: {', '.join(figures)}"


class FeatureSvmClassifier:
    """Classifies images with an SVM or a logistic regression over CNN features, like the torch classifiers.

    Args:
        extractor: Frozen feature extractor (see :func:`inspectflow.models.backbones.build_extractor`).
        svm: Fitted scikit-learn pipeline (scaler + SVC with probabilities).
        batch_size: Images per feature-extraction batch.
    """

    def __init__(self, extractor: nn.Module, svm: Pipeline, batch_size: int = 16) -> None:
        self.extractor = extractor.eval()
        self.svm = svm
        self.batch_size = batch_size

    def eval(self) -> FeatureSvmClassifier:
        """Matches ``nn.Module.eval`` so callers treat every classifier alike."""
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Returns class log-probabilities for float ``(N, C, H, W)`` images in ``[0, 1]``.

        Log-probabilities act as logits: ``argmax`` and ``softmax`` give what they give for a network.
        """
        pixels = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        features = extract_features(self.extractor, pixels, self.batch_size)
        probabilities = self.svm.predict_proba(features)
        return torch.from_numpy(np.log(np.clip(probabilities, 1e-12, 1.0))).float()
