"""Train: fit the configured model on the training split, with per-epoch metrics and checkpoints."""

from __future__ import annotations

import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from inspectflow.config import PipelineConfig, TrainConfig
from inspectflow.data.dataset import Dataset, load_dataset
from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import pipeline_step
from inspectflow.features import SplitResult, SvmResult
from inspectflow.models.artifact import FEATURE_SVM, ModelSpec, save_trained_model
from inspectflow.models.factory import build_model
from inspectflow.models.feature_svm import FeatureSvmClassifier
from inspectflow.models.losses import segmentation_loss

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
#: Checkpoints (weights and optimizer state): the latest epoch's, to resume from, and the best-validating one.
LAST_CHECKPOINT, BEST_CHECKPOINT = "last.pt", "best.pt"


@dataclass
class TrainResult:
    """What training produced: the model and one metrics dict per epoch."""

    model: nn.Module
    spec: ModelSpec
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch so that a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_device() -> torch.device:
    """The GPU when there is one (the cluster's train task asks for it), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_tensor(images: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """Converts uint8 ``(N, H, W, C)`` images to float ``(N, C, H, W)`` in ``[0, 1]``."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def augment(tensors: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Applies one random horizontal flip and 90-degree rotation per sample to every tensor alike.

    Inspection images have no canonical orientation, so these eight symmetries preserve the label; applying
    the same transform to an image and its mask keeps them aligned. Images must be square.
    """
    count = len(tensors[0])
    flip = torch.rand(count, generator=generator) < 0.5
    turns = torch.randint(0, 4, (count,), generator=generator)
    out = []
    for tensor in tensors:
        tensor = torch.where(flip[:, None, None, None], tensor.flip(-1), tensor)
        for k in (1, 2, 3):
            chosen = turns == k
            if chosen.any():
                tensor[chosen] = torch.rot90(tensor[chosen], k, dims=(-2, -1))
        out.append(tensor)
    return tuple(out)


def random_crops(
    images: torch.Tensor, masks: torch.Tensor, side: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cuts one ``side`` x ``side`` crop per image.

    For half the images that have defects the crop is placed to contain a random defect pixel, so that
    small defects are not drowned by background. The pixel lands anywhere in the crop: always centring
    it would teach the network that defects sit in the middle.
    """
    height, width = images.shape[-2:]
    if side >= min(height, width):
        return images, masks
    crops, crop_masks = [], []
    for image, mask in zip(images, masks, strict=True):
        defect = torch.nonzero(mask[0])
        top = int(torch.randint(height - side + 1, (1,), generator=generator))
        left = int(torch.randint(width - side + 1, (1,), generator=generator))
        if len(defect) and torch.rand(1, generator=generator) < 0.5:
            y, x = defect[torch.randint(len(defect), (1,), generator=generator)][0].tolist()
            dy, dx = torch.randint(side, (2,), generator=generator).tolist()
            top = min(max(y - dy, 0), height - side)
            left = min(max(x - dx, 0), width - side)
        crops.append(image[:, top : top + side, left : left + side])
        crop_masks.append(mask[:, top : top + side, left : left + side])
    return torch.stack(crops), torch.stack(crop_masks)


def train(
    dataset: Dataset, config: TrainConfig, checkpoint_dir: Path, on_epoch: EpochCallback | None = None
) -> TrainResult:
    """Trains a classifier, or a segmenter when the dataset has masks, on the training split.

    Part of the training split (``config.val_fraction``, stratified) is held out for per-epoch validation;
    the test split is never seen here.

    Args:
        dataset: Ingested (and validated) dataset.
        config: Training settings.
        checkpoint_dir: Where the ``last.pt`` and ``best.pt`` checkpoints go. Only these two are kept:
            a ResNet18 checkpoint with Adam's state weighs 135 MB, one per epoch would fill disks.
        on_epoch: Called after each epoch with the epoch number (1-based) and its metrics.

    Returns:
        The trained model (eval mode) with its spec and per-epoch history.
    """
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    segmentation = dataset.masks is not None
    images, labels = dataset.split("train")
    strata = labels.astype(str)
    if segmentation:
        targets = torch.from_numpy(dataset.split_masks("train")).unsqueeze(1).float()
        strata = np.char.add(strata, (targets.flatten(1).amax(1) > 0).numpy().astype(str))
    else:
        targets = torch.tensor(labels)  # a copy: pandas hands out read-only arrays
    held_out = (
        stratified_holdout(strata, config.val_fraction, config.seed)
        if config.val_fraction > 0
        else np.zeros(len(labels), dtype=bool)
    )
    held = torch.from_numpy(held_out)
    x_train, y_train = to_tensor(images[~held_out]), targets[~held]
    x_val, y_val = to_tensor(images[held_out], config.channels_last), targets[held]

    model = build_model(config, len(dataset.info.classes), dataset.info.channels)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    device = training_device()
    log.info("training on %s", device)
    model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        segmentation_loss(config.loss) if segmentation else nn.CrossEntropyLoss()  # type: ignore[arg-type]
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-len(x_train) // config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best_key = "val_iou" if segmentation else "val_accuracy"
    best_epoch = 0
    show_progress = sys.stderr.isatty()

    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss, correct = 0.0, 0
        batches = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not show_progress,
            leave=False,
        )
        for start in batches:
            index = order[start : start + config.batch_size]
            batch, target = x_train[index], y_train[index]
            if segmentation and config.crop:
                batch, target = random_crops(batch, target, config.crop, generator)
            if config.augment:
                batch, target = (
                    augment((batch, target), generator)
                    if segmentation
                    else (
                        augment((batch,), generator)[0],
                        target,
                    )
                )
            batch = batch.to(device).contiguous(memory_format=memory_format)
            target = target.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(batch)
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(index)
            if not segmentation:
                correct += int((logits.argmax(1) == target).sum())
        metrics = {"train_loss": total_loss / len(x_train)}
        if not segmentation:
            metrics["train_accuracy"] = correct / len(x_train)
        if not segmentation:
            # Segmenters train on defect-biased crops and keep BatchNorm's running averages of them:
            # recalibrating on whole images measurably hurt their IoU, while classifiers need it.
            recalibrate_batchnorm(model, x_train, config.batch_size, memory_format, device)
        if len(x_val):
            metrics.update(_validate(model, x_val, y_val, loss_fn, config.batch_size, segmentation, device))
        history.append(metrics)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
        }
        torch.save(state, checkpoint_dir / LAST_CHECKPOINT)
        # The best epoch so far, the latest on ties.
        if len(x_val) and (not best_epoch or metrics[best_key] >= history[best_epoch - 1][best_key]):
            best_epoch = epoch
            shutil.copyfile(checkpoint_dir / LAST_CHECKPOINT, checkpoint_dir / BEST_CHECKPOINT)
        log.info("epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    if config.keep_best and best_epoch:
        # The last epoch is not always the best: restore the one that validated best.
        model.load_state_dict(torch.load(checkpoint_dir / BEST_CHECKPOINT, weights_only=True)["model"])
        log.info("kept epoch %d (%s=%.4f)", best_epoch, best_key, history[best_epoch - 1][best_key])
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    spec = ModelSpec(
        architecture=config.model,
        classes=list(dataset.info.classes),
        image_side=dataset.info.image_side,
        channels=dataset.info.channels,
        task="segmentation" if segmentation else "classification",
    )
    return TrainResult(model=model, spec=spec, history=history)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    memory_format: torch.memory_format,
    device: torch.device,
) -> None:
    """Recomputes BatchNorm running statistics as exact averages over the training images.

    With few optimisation steps the running averages trail weights that changed a lot, so the model
    scores far worse in eval mode than in training; one forward pass with the final weights fixes that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size].to(device).contiguous(memory_format=memory_format))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


@torch.no_grad()
def _validate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
    segmentation: bool,
    device: torch.device,
) -> dict[str, float]:
    """Scores the held-out part of the training split: loss, and accuracy or pooled Dice/IoU."""
    model.eval()
    total_loss, correct, intersection, predicted, truth = 0.0, 0, 0.0, 0.0, 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size].to(device))
        target = y[start : start + batch_size].to(device)
        total_loss += float(loss_fn(logits, target)) * len(target)
        if segmentation:
            mask = logits > 0  # probability > 0.5
            intersection += float((mask & (target > 0)).sum())
            predicted += float(mask.sum())
            truth += float(target.sum())
        else:
            correct += int((logits.argmax(1) == target).sum())
    metrics = {"val_loss": total_loss / len(x)}
    if segmentation:
        union = predicted + truth - intersection
        metrics["val_dice"] = 2 * intersection / (predicted + truth) if predicted + truth else 1.0
        metrics["val_iou"] = intersection / union if union else 1.0
    else:
        metrics["val_accuracy"] = correct / len(x)
    return metrics


def train_feature_svm(
    dataset: Dataset, config: TrainConfig, on_split: Callable[[SplitResult], None] | None = None
) -> tuple[FeatureSvmClassifier, ModelSpec, SvmResult, bool]:
    """The ``features+svm`` method: frozen CNN features, an SVM estimated over repeated 70/30 splits.

    Features of every image are cached by backbone, layer, weights and data version, so a second run on the
    same data (another kernel or C, say) does not extract them again. The repeated splits cover the whole
    dataset, as the method prescribes; the returned classifier is fitted on the training split only, so the
    test split still scores it fairly.

    Returns:
        The classifier, its spec, the repeated-split result and whether the features came from the cache.
    """
    from inspectflow.data.dataset import dataset_digest
    from inspectflow.features import (
        build_extractor,
        cached_features,
        extract_features,
        feature_cache_key,
        fit_svm,
        svm_repeated_splits,
        weights_identity,
    )

    seed_everything(config.seed)  # random weights (weights=none) must be the same in every run
    extractor, _ = build_extractor(config.backbone, config.weights, config.layer)
    weights_id = weights_identity(config.weights)
    if config.weights == "none":  # features of random weights depend on the seed that drew them
        weights_id += f":seed={config.seed}"
    key = feature_cache_key(config.backbone, config.layer, weights_id, dataset_digest(dataset.manifest))
    cache_dir = Path(config.feature_cache).expanduser()
    started = time.perf_counter()
    device = training_device()
    features, cache_hit = cached_features(
        cache_dir, key, lambda: extract_features(extractor.to(device), dataset.images, config.batch_size)
    )
    extractor = extractor.cpu()  # the registered model serves on CPU
    log.info(
        "%s %s features of %d images in %.1f s (%s)",
        "reused cached" if cache_hit else "extracted",
        config.backbone,
        len(features),
        time.perf_counter() - started,
        cache_dir / f"{key}.npy",
    )
    index = {c: i for i, c in enumerate(dataset.info.classes)}
    labels = dataset.manifest["label"].map(index).to_numpy(dtype=np.int64)
    result = svm_repeated_splits(
        features,
        labels,
        dataset.info.classes,
        kernel=config.svm_kernel,
        c=config.svm_c,
        repeats=config.repeats,
        seed=config.seed,
        on_split=on_split,
    )
    train_rows = (dataset.manifest["split"] == "train").to_numpy()
    svm = fit_svm(features[train_rows], labels[train_rows], config.svm_kernel, config.svm_c, config.seed)
    spec = ModelSpec(
        architecture=FEATURE_SVM,
        classes=list(dataset.info.classes),
        image_side=dataset.info.image_side,
        channels=dataset.info.channels,
        backbone=config.backbone,
        layer=config.layer,
    )
    return FeatureSvmClassifier(extractor, svm, config.batch_size), spec, result, cache_hit


@pipeline_step("train")
def train_step(dataset_dir: Path, raw_config: dict[str, object], run_id: str, model_dir: Path) -> None:
    """Runs training as a pipeline step, logging to the MLflow run.

    ``finetune`` logs per-epoch metrics and the last and best checkpoints; ``features+svm`` logs one child
    run per split and the mean and standard deviation of accuracy and per-class recall on the parent run.
    """
    import mlflow

    from inspectflow.config import validate_config
    from inspectflow.tracking import resume_run

    config: PipelineConfig = validate_config(raw_config)
    dataset = load_dataset(dataset_dir)

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics, step=epoch)

    def log_split(split: SplitResult) -> None:
        parent = mlflow.active_run()
        experiment = parent.info.experiment_id if parent else None  # else MLflow picks its default one
        with mlflow.start_run(run_name=f"split-{split.index}", nested=True, experiment_id=experiment):
            mlflow.log_params({"split.index": split.index, "split.seed": split.seed})
            recalls = {f"recall_{c}": r for c, r in split.recall.items()}
            mlflow.log_metrics({"accuracy": split.accuracy, **recalls})

    with resume_run(run_id):
        if config.train.method == "features+svm":
            classifier, spec, result, cache_hit = train_feature_svm(dataset, config.train, log_split)
            save_trained_model(classifier, spec, model_dir)
            mlflow.set_tag("features.cache", "hit" if cache_hit else "miss")
            summary = {"svm_accuracy_mean": result.accuracy_mean, "svm_accuracy_std": result.accuracy_std}
            summary.update({f"svm_recall_mean_{c}": v for c, v in result.recall_mean.items()})
            summary.update({f"svm_recall_std_{c}": v for c, v in result.recall_std.items()})
            mlflow.log_metrics(summary)
            log.info(
                "SVM over %d splits: accuracy %.4f ± %.4f",
                len(result.splits),
                result.accuracy_mean,
                result.accuracy_std,
            )
            return
        # Checkpoints go to MLflow, not into the model artifact that evaluate and register read.
        with tempfile.TemporaryDirectory() as checkpoints:
            result_nn = train(dataset, config.train, Path(checkpoints), log_epoch)
            mlflow.log_artifacts(checkpoints, artifact_path="checkpoints")
        save_trained_model(result_nn.model, result_nn.spec, model_dir)
        mlflow.log_dict({"epochs": result_nn.history}, "training/history.json")
