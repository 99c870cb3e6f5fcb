"""ImageNet CNN features + SVM: the classic baseline of the cutting-insert workload.

A frozen ImageNet backbone (pooled EfficientNet-Lite0, VGG16 fc1 or a globally pooled MobileNetV2 block) turns
each image into a feature vector; a standardised SVM is then cross-validated over repeated seeded, stratified
70/30 splits of the training split (the test split is the gate's, never seen by an estimate). Features are
cached on disk by backbone, layer, weights and data, since extraction dominates the cost and the SVM is cheap.
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
from typing import Any, Literal, get_args

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import nn

from inspectflow import console
from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import ConfigError
from inspectflow.models.efficientnet import FEATURE_DIM as LITE0_FEATURE_DIM
from inspectflow.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD, build_lite0_extractor
from inspectflow.models.torchvision_compat import import_torchvision
from inspectflow.models.weights import load_all_but_head, load_pretrained_state
from inspectflow.names import CV_METRICS

Backbone = Literal["efficientnet_lite0", "vgg16", "mobilenet_v2"]

#: Part of every cache key: bump it when extraction changes (preprocessing, cut points) to orphan old caches.
_FEATURE_FORMAT = 1
_DEFAULT_LAYERS: dict[str, str] = {"efficientnet_lite0": "pool", "vgg16": "fc1", "mobilenet_v2": "pool"}
_MOBILENET_BLOCKS = 19  # len(mobilenet_v2().features)
_HASH_CHUNK = 1 << 20


def resolve_layer(backbone: str, layer: str | None) -> str:
    """Validates a cut point and fills in the backbone's default.

    Args:
        backbone: ``efficientnet_lite0``, ``vgg16`` or ``mobilenet_v2``.
        layer: ``None`` for the default; ``pool`` for EfficientNet-Lite0; ``fc1`` for VGG16; ``pool`` or
            ``features.N`` for MobileNetV2.

    Returns:
        The explicit layer name (``pool`` or ``fc1`` for ``None``).

    Raises:
        ValueError: Unknown backbone or a layer the backbone does not have.
    """
    if backbone not in _DEFAULT_LAYERS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(get_args(Backbone))}")
    if layer is None:
        return _DEFAULT_LAYERS[backbone]
    if backbone != "mobilenet_v2":
        if layer != _DEFAULT_LAYERS[backbone]:
            raise ValueError(f"{backbone} layer must be {_DEFAULT_LAYERS[backbone]} (or None), got {layer!r}")
        return layer
    if layer == "pool" or _mobilenet_block(layer) is not None:
        return layer
    raise ValueError(
        f"mobilenet_v2 layer must be pool (or None) or features.N with N in 0..{_MOBILENET_BLOCKS - 1}, "
        f"got {layer!r}"
    )


def _mobilenet_block(layer: str) -> int | None:
    prefix, _, index = layer.partition(".")
    # isdecimal rejects signs and spaces, so "features.-1" cannot wrap around to the last block.
    if prefix != "features" or not index.isdecimal() or int(index) >= _MOBILENET_BLOCKS:
        return None
    return int(index)


def build_extractor(backbone: Backbone, weights: str, layer: str | None = None) -> tuple[nn.Module, int]:
    """Builds a frozen feature extractor from an ImageNet classifier.

    Args:
        backbone: ``efficientnet_lite0``: the globally average-pooled features before the classifier
            (1280-d; ImageNet weights from a pip package, no network needed). ``vgg16``: the first fully
            connected layer and its ReLU (fc1, 4096-d), as in the classic insert-inspection papers.
            ``mobilenet_v2``: a globally average-pooled block output.
        weights: ``none``, ``imagenet`` or a path to the backbone's state dict (see
            :func:`~inspectflow.models.weights.load_pretrained_state`; for EfficientNet-Lite0, also a
            fine-tuned ``efficientnet_lite0`` classifier's, see
            :func:`~inspectflow.models.efficientnet.build_efficientnet_lite0`).
        layer: Cut point; ``None`` for the default (see :func:`resolve_layer`). For MobileNetV2, ``pool``
            (the last block, 1280-d) or ``features.N``, which pools block ``N`` of ``.features``.

    Returns:
        The extractor in eval mode with gradients off, mapping float ``(N, 3, H, W)`` ImageNet-normalised
        images to ``(N, D)`` features, and ``D``.

    Raises:
        ValueError: Unknown backbone or layer.
        ConfigError: The weights cannot be loaded or do not fit the backbone.
    """
    layer = resolve_layer(backbone, layer)
    torchvision = import_torchvision()
    models = torchvision.models
    extractor: nn.Module
    if backbone == "efficientnet_lite0":
        extractor, dim = build_lite0_extractor(weights), LITE0_FEATURE_DIM
    elif backbone == "vgg16":
        vgg = models.vgg16(weights=None)
        _load_weights(vgg, weights, models.VGG16_Weights.IMAGENET1K_V1, head_prefix="classifier.6.")
        extractor = nn.Sequential(
            vgg.features, vgg.avgpool, nn.Flatten(1), vgg.classifier[0], vgg.classifier[1]
        )
        dim = vgg.classifier[0].out_features
    else:
        mobilenet = models.mobilenet_v2(weights=None)
        _load_weights(
            mobilenet, weights, models.MobileNet_V2_Weights.IMAGENET1K_V1, head_prefix="classifier."
        )
        block = _MOBILENET_BLOCKS - 1 if layer == "pool" else _mobilenet_block(layer)
        assert block is not None  # resolve_layer accepted it
        blocks = mobilenet.features[: block + 1]
        extractor = nn.Sequential(blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        dim = blocks[-1].out_channels
    extractor.eval()
    for parameter in extractor.parameters():
        parameter.requires_grad = False
    return extractor, int(dim)


def _load_weights(model: nn.Module, weights: str, enum_member: Any, head_prefix: str) -> None:
    state = load_pretrained_state(weights, enum_member)
    if state is not None:
        load_all_but_head(model, state, head_prefix, weights, type(model).__name__)


def extract_features(extractor: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Runs an extractor over uint8 images in batches.

    Images are scaled to ``[0, 1]`` and normalised with the ImageNet mean and std; they are not resized
    (callers prepare 224x224 images, but the backbones' pooling accepts any size).

    Args:
        extractor: A module from :func:`build_extractor`.
        images: ``(N, H, W, 3)`` RGB or ``(N, H, W, 1)`` grayscale uint8 images; grayscale is repeated to
            three channels.
        batch_size: Images per forward pass.

    Returns:
        ``(N, D)`` float32 features.

    Raises:
        ValueError: The images are not ``(N, H, W, 1|3)`` or the batch size is not positive.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W, 1|3), got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(extractor.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    outputs: list[np.ndarray] = []
    # An empty set still runs one (empty) pass, so the result has the extractor's width.
    starts = range(0, len(images), batch_size) if len(images) else [0]
    with torch.no_grad():
        for number, start in enumerate(starts, 1):
            console.progress(number - 1, len(starts), "extract features")
            # Converted per batch: a float copy of the whole set would be 4x the uint8 memory.
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
            outputs.append(extractor((batch - mean) / std).float().cpu().numpy())
    return np.concatenate(outputs).astype(np.float32, copy=False)


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


def feature_cache_key(backbone: str, layer: str | None, weights_id: str, data_digest: str) -> str:
    """Names the cached features of one extractor over one dataset.

    Args:
        backbone: ``efficientnet_lite0``, ``vgg16`` or ``mobilenet_v2``.
        layer: Cut point; ``None`` and the backbone's explicit default give the same key.
        weights_id: Identity of the weights, such as :func:`weights_identity`'s.
        data_digest: Digest of the images in order (the caller's; e.g. the manifest's sha256).

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


def fit_svm(features: np.ndarray, labels: np.ndarray, kernel: str, c: float, seed: int) -> Pipeline:
    """Fits a standardised, class-balanced SVM with probability estimates.

    Classes are weighted inversely to their frequency: on real inspection sets, mostly defect-free, an
    unweighted SVM settles on the majority class.

    Args:
        features: ``(N, D)`` features.
        labels: ``N`` integer class indices.
        kernel: SVC kernel (``rbf``, ``linear``, ``poly``, ``sigmoid``).
        c: SVC regularisation ``C``.
        seed: Seed of the probability calibration's internal cross-validation.

    Returns:
        The fitted ``StandardScaler`` + ``SVC`` pipeline; ``predict`` uses the SVM's decision function.
    """
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "svm",
                SVC(kernel=kernel, C=c, class_weight="balanced", probability=True, random_state=seed),
            ),
        ]
    )
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
    kernel: str = "rbf",
    c: float = 1.0,
    repeats: int = 5,
    test_fraction: float = 0.3,
    seed: int = 0,
    on_split: Callable[[SplitResult], None] | None = None,
) -> SvmResult:
    """Cross-validates an SVM over repeated seeded, stratified holdout splits of the rows it is given.

    Give it the training split's rows only: an estimate that saw the test images would not be the registered
    model's, nor comparable with the test scores the gate judges. Split ``i`` holds out ``test_fraction`` of
    each class with seed ``seed + i`` (see :func:`~inspectflow.data.splits.stratified_holdout`) and fits the
    SVM with the same seed.

    Args:
        features: ``(N, D)`` features.
        labels: ``N`` class indices into ``classes``.
        classes: Class names, in index order.
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
        model = fit_svm(features[~test], labels[~test], kernel, c, split_seed)
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
