"""Train: fit the configured classifier on the training split, with per-epoch metrics and checkpoints."""

from __future__ import annotations

import logging
import random
import sys
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
from inspectflow.models.artifact import ModelSpec, save_trained_model
from inspectflow.models.factory import build_classifier

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float], Path], None]


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


def to_tensor(images: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """Converts uint8 ``(N, H, W, C)`` images to float ``(N, C, H, W)`` in ``[0, 1]``."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Applies a random horizontal flip and 90-degree rotation to each square image of a batch.

    Inspection patches have no canonical orientation, so these eight symmetries are label-preserving.
    """
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    turns = torch.randint(0, 4, (len(batch),), generator=generator)
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            batch[chosen] = torch.rot90(batch[chosen], k, dims=(-2, -1))
    return batch


def train(
    dataset: Dataset, config: TrainConfig, checkpoint_dir: Path, on_epoch: EpochCallback | None = None
) -> TrainResult:
    """Trains a classifier on the dataset's training split.

    Args:
        dataset: Ingested (and validated) dataset.
        config: Training settings.
        checkpoint_dir: Where ``epoch_NNN.pt`` checkpoints go, one per epoch.
        on_epoch: Called after each epoch with the epoch number (1-based), its metrics and checkpoint.

    Returns:
        The trained model (eval mode) with its spec and per-epoch history.
    """
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    images, labels = dataset.split("train")
    held_out = (
        stratified_holdout(labels, config.val_fraction, config.seed)
        if config.val_fraction > 0
        else np.zeros(len(labels), dtype=bool)
    )
    x_train = to_tensor(images[~held_out], config.channels_last)
    y_train = torch.from_numpy(labels[~held_out])
    x_val, y_val = to_tensor(images[held_out], config.channels_last), torch.from_numpy(labels[held_out])

    classes = dataset.info.classes
    model = build_classifier(config, len(classes), dataset.info.channels)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-len(x_train) // config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.CrossEntropyLoss()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
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
            if config.augment:
                batch = augment(batch, generator)
            if config.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            logits = model(batch)
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(index)
            correct += int((logits.argmax(1) == target).sum())
        metrics = {"train_loss": total_loss / len(x_train), "train_accuracy": correct / len(x_train)}
        recalibrate_batchnorm(model, x_train, config.batch_size)
        if len(x_val):
            val_loss, val_accuracy = _score(model, x_val, y_val, loss_fn, config.batch_size)
            metrics.update(val_loss=val_loss, val_accuracy=val_accuracy)
        history.append(metrics)
        checkpoint = checkpoint_dir / f"epoch_{epoch:03d}.pt"
        torch.save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "metrics": metrics,
            },
            checkpoint,
        )
        log.info("epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics, checkpoint)

    model = model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    spec = ModelSpec(
        architecture=config.model,
        classes=list(classes),
        image_side=dataset.info.image_side,
        channels=dataset.info.channels,
    )
    return TrainResult(model=model, spec=spec, history=history)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
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
        model(images[start : start + batch_size])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


@torch.no_grad()
def _score(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, batch_size: int
) -> tuple[float, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += float(loss_fn(logits, target)) * len(target)
        correct += int((logits.argmax(1) == target).sum())
    return total_loss / len(x), correct / len(x)


@pipeline_step("train")
def train_step(dataset_dir: Path, raw_config: dict[str, object], run_id: str, model_dir: Path) -> None:
    """Runs training as a pipeline step, logging per-epoch metrics and checkpoints to the MLflow run."""
    import mlflow

    from inspectflow.config import validate_config
    from inspectflow.tracking import resume_run

    config: PipelineConfig = validate_config(raw_config)

    def log_epoch(epoch: int, metrics: dict[str, float], checkpoint: Path) -> None:
        mlflow.log_metrics(metrics, step=epoch)
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")

    with resume_run(run_id):
        result = train(load_dataset(dataset_dir), config.train, model_dir / "checkpoints", log_epoch)
        save_trained_model(result.model, result.spec, model_dir)
        mlflow.log_dict({"epochs": result.history}, "training/history.json")
