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
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from inspectflow.config import PipelineConfig, TrainConfig
from inspectflow.data.dataset import Dataset, load_dataset
from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import pipeline_step
from inspectflow.features import SplitResult, SvmResult
from inspectflow.imaging import to_tensor
from inspectflow.models.artifact import FEATURE_SVM, ModelSpec, save_trained_model
from inspectflow.models.factory import build_model
from inspectflow.models.feature_svm import FeatureSvmClassifier
from inspectflow.names import CHECKPOINTS_ARTIFACTS, FEATURES_CACHE_TAG, HISTORY_ARTIFACT
from inspectflow.tasks import task_for
from inspectflow.tasks.base import LossFn, Task

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


@dataclass
class _Fit:
    """What one training run works with, set up once by :func:`train`."""

    config: TrainConfig
    model: nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    memory_format: torch.memory_format
    generator: torch.Generator


def train(
    task: Task,
    dataset: Dataset,
    config: TrainConfig,
    checkpoint_dir: Path,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Trains the task's model on the training split.

    Part of the training split (``config.val_fraction``, stratified by :meth:`Dataset.strata`) is held out
    for per-epoch validation; the test split is never seen here.

    Args:
        task: What is learned (see :mod:`inspectflow.tasks`).
        dataset: Ingested (and validated) dataset.
        config: Training settings.
        checkpoint_dir: Where the ``last.pt`` and ``best.pt`` checkpoints go. Only these two are kept:
            a ResNet18 checkpoint with Adam's state weighs 135 MB, one per epoch would fill disks.
        on_epoch: Called after each epoch with the epoch number (1-based) and its metrics.

    Returns:
        The trained model (eval mode) with its spec and per-epoch history.
    """
    seed_everything(config.seed)
    images, _ = dataset.split("train")
    targets = task.targets(dataset, "train")
    held_out = (
        stratified_holdout(dataset.strata("train"), config.val_fraction, config.seed)
        if config.val_fraction > 0
        else np.zeros(len(images), dtype=bool)
    )
    held = torch.from_numpy(held_out)
    x_train, y_train = to_tensor(images[~held_out]), targets[~held]
    x_val, y_val = to_tensor(images[held_out], config.channels_last), targets[held]
    fit = _setup(task, config, len(x_train), dataset)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best_epoch = 0
    for epoch in range(1, config.epochs + 1):
        metrics = _train_epoch(task, fit, x_train, y_train, epoch)
        if task.recalibrate_batchnorm:
            recalibrate_batchnorm(fit.model, x_train, config.batch_size, fit.memory_format, fit.device)
        if len(x_val):
            metrics.update(_validate(task, fit, x_val, y_val))
        history.append(metrics)
        torch.save(
            {
                "epoch": epoch,
                "model": fit.model.state_dict(),
                "optimizer": fit.optimizer.state_dict(),
                "metrics": metrics,
            },
            checkpoint_dir / LAST_CHECKPOINT,
        )
        key = task.best_epoch_key
        # The best epoch so far, the latest on ties.
        if len(x_val) and (not best_epoch or metrics[key] >= history[best_epoch - 1][key]):
            best_epoch = epoch
            shutil.copyfile(checkpoint_dir / LAST_CHECKPOINT, checkpoint_dir / BEST_CHECKPOINT)
        log.info("epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    model = fit.model
    if config.keep_best and best_epoch:
        # The last epoch is not always the best: restore the one that validated best.
        model.load_state_dict(torch.load(checkpoint_dir / BEST_CHECKPOINT, weights_only=True)["model"])
        key = task.best_epoch_key
        log.info("kept epoch %d (%s=%.4f)", best_epoch, key, history[best_epoch - 1][key])
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    spec = ModelSpec(
        architecture=config.model,
        classes=list(dataset.info.classes),
        image_side=dataset.info.image_side,
        channels=dataset.info.channels,
        task=task.name,
    )
    return TrainResult(model=model, spec=spec, history=history)


def _setup(task: Task, config: TrainConfig, train_count: int, dataset: Dataset) -> _Fit:
    """Builds the model on the training device, the loss, AdamW and a one-cycle schedule."""
    model = build_model(config, len(dataset.info.classes), dataset.info.channels)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    device = training_device()
    log.info("training on %s", device)
    model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-train_count // config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(config.seed)
    return _Fit(config, model, task.loss(config), optimizer, scheduler, device, memory_format, generator)


def _train_epoch(
    task: Task, fit: _Fit, x_train: torch.Tensor, y_train: torch.Tensor, epoch: int
) -> dict[str, float]:
    """One pass over the training images in a seeded random order; returns ``train_*`` metrics."""
    config = fit.config
    fit.model.train()
    order = torch.randperm(len(x_train), generator=fit.generator)
    meter = task.meter()
    total_loss = 0.0
    batches = tqdm(
        range(0, len(order), config.batch_size),
        desc=f"epoch {epoch}/{config.epochs}",
        disable=not sys.stderr.isatty(),
        leave=False,
    )
    for start in batches:
        index = order[start : start + config.batch_size]
        batch, target = task.training_batch(x_train[index], y_train[index], config, fit.generator)
        batch = batch.to(fit.device).contiguous(memory_format=fit.memory_format)
        target = target.to(fit.device)
        fit.optimizer.zero_grad(set_to_none=True)
        logits = fit.model(batch)
        loss = fit.loss_fn(logits, target)
        loss.backward()
        fit.optimizer.step()
        fit.scheduler.step()
        total_loss += loss.item() * len(index)
        meter.update(logits.detach(), target)
    return {"train_loss": total_loss / len(x_train), **meter.result("train_")}


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
    batches = (
        images[start : start + batch_size].to(device).contiguous(memory_format=memory_format)
        for start in range(0, len(images), batch_size)
    )
    with torch.no_grad():
        update_bn(batches, model)


@torch.no_grad()
def _validate(task: Task, fit: _Fit, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Scores the held-out part of the training split: loss and the task's ``val_*`` figures."""
    fit.model.eval()
    meter = task.meter()
    total_loss = 0.0
    batch_size = fit.config.batch_size
    for start in range(0, len(x), batch_size):
        logits = fit.model(x[start : start + batch_size].to(fit.device))
        target = y[start : start + batch_size].to(fit.device)
        total_loss += float(fit.loss_fn(logits, target)) * len(target)
        meter.update(logits, target)
    return {"val_loss": total_loss / len(x), **meter.result("val_")}


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
            mlflow.set_tag(FEATURES_CACHE_TAG, "hit" if cache_hit else "miss")
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
            result_nn = train(task_for(config), dataset, config.train, Path(checkpoints), log_epoch)
            mlflow.log_artifacts(checkpoints, artifact_path=CHECKPOINTS_ARTIFACTS)
        save_trained_model(result_nn.model, result_nn.spec, model_dir)
        mlflow.log_dict({"epochs": result_nn.history}, HISTORY_ARTIFACT)
