"""Train: fit the configured model on the training split, with per-epoch metrics and checkpoints."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from inspectflow import console
from inspectflow.config import PipelineConfig, TrainConfig
from inspectflow.data.dataset import Dataset, load_dataset
from inspectflow.data.splits import selection_folds, stratified_holdout
from inspectflow.errors import pipeline_step
from inspectflow.imaging import to_tensor
from inspectflow.models.artifact import FEATURE_SVM, ModelSpec, save_trained_model
from inspectflow.models.feature_svm import FeatureSvmClassifier, SplitResult, SvmResult, describe_cv
from inspectflow.models.networks import build_model, get_network
from inspectflow.models.patchcore import BankSummary, HeadSummary
from inspectflow.models.selection import Candidate, Choice, Estimate, FoldScorer, choose
from inspectflow.names import (
    CHECKPOINTS_ARTIFACTS,
    CV_METRICS,
    FEATURES_CACHE_TAG,
    HISTORY_ARTIFACT,
    SELECTION_ARTIFACT,
    SELECTION_METRICS,
    SELECTION_TAG,
    TRAIN_METRICS,
    VAL_METRICS,
)
from inspectflow.tasks import task_for
from inspectflow.tasks.base import LossFn, Task, logits_in_batches

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
#: Checkpoints (weights and optimizer state): the latest epoch's, to resume from, and the best-validating one.
LAST_CHECKPOINT, BEST_CHECKPOINT = "last.pt", "best.pt"


@dataclass
class TrainResult:
    """What training produced: the model, one metrics dict per epoch and the validation images it saw."""

    model: nn.Module
    spec: ModelSpec
    history: list[dict[str, float]] = field(default_factory=list)
    config: TrainConfig | None = None  # the settings used, ``auto`` resolved
    best_epoch: int = 0  # the epoch that validated best (0: no validation)
    #: The held-out validation images (float) and targets, to fix thresholds on (see ``Task.thresholds``).
    validation: tuple[torch.Tensor, torch.Tensor] = field(
        default_factory=lambda: (torch.zeros(0), torch.zeros(0))
    )


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch so that a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_device() -> torch.device:
    """The GPU when there is one (the cluster's train task asks for it), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(task: Task, config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """Turns the ``auto`` settings into what this run uses, from the data and what is installed.

    ``model``: the registry's pick for the task (:meth:`Task.auto_model`). ``weights``: ``imagenet`` for a
    network whose weights come from the installed package, else random (torchvision's ImageNet files are
    asked for by name); ``random`` also means random. ``precision``: on a GPU, bfloat16 autocast (float16
    where the GPU has no bfloat16); on a CPU, bfloat16 for the networks it was measured to speed up
    (``Network.bf16_faster``) when the CPU computes it natively, else float32.
    """
    from inspectflow.models.efficientnet import weights_installed

    model = (
        task.auto_model(dataset.info.preprocess, weights_installed())
        if config.model == "auto"
        else config.model
    )
    network = get_network(model)
    weights = config.weights
    if weights == "auto":
        weights = "imagenet" if network.weights == "package" and weights_installed() else "none"
    elif weights == "random":
        weights = "none"
    precision = config.precision
    device = training_device()
    if precision == "auto" and device.type == "cuda":  # tensor cores: mixed precision speeds up every model
        precision = "bf16" if _bf16_supported(device) else "fp16"
    elif precision == "auto":
        precision = "bf16" if network.bf16_faster and _bf16_supported(device) else "fp32"
    return config.model_copy(update={"model": model, "weights": weights, "precision": precision})


def _bf16_supported(device: torch.device) -> bool:
    """Whether the hardware computes in bfloat16 natively (AVX512-BF16 or AMX CPUs, Ampere and later GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class _Fit:
    """What one training run works with, set up once by :func:`train`."""

    config: TrainConfig
    model: nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    device: torch.device
    memory_format: torch.memory_format
    generator: torch.Generator
    #: The pretrained backbone's parameters, which ``train.frozen_share`` freezes first (empty: none).
    backbone: list[torch.nn.Parameter] = field(default_factory=list)
    #: Epochs, from the first, that train with the backbone frozen (set once the first epoch is timed).
    frozen_epochs: int = 0
    #: Loss scaling, which float16's narrow range needs (its state restarts with a resumed run).
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.precision == "fp16")

    def freeze_backbone(self, frozen: bool) -> None:
        """Freezes or thaws the backbone (frozen: no gradients for it, and backward stops before it)."""
        for parameter in self.backbone:
            parameter.requires_grad_(not frozen)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """bfloat16 or float16 autocast when the run asks for it, else nothing."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


class WarmupCosine:
    """A linear warm-up, then a cosine decay of the learning rate.

    The number of steps can be re-planned once the first epoch shows how many fit the time budget.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, peak: float, total_steps: int) -> None:
        self.optimizer = optimizer
        self.peak = peak
        self.total = max(1, total_steps)
        self.done = 0
        self._apply()

    def plan(self, total_steps: int) -> None:
        """Fits the rest of the decay into ``total_steps`` (counted from the start)."""
        self.total = max(self.done + 1, total_steps)

    def step(self) -> None:
        """Advances one optimisation step."""
        self.done += 1
        self._apply()

    def step_to_current(self) -> None:
        """Sets the learning rate of the current step (after ``done`` and ``total`` were restored)."""
        self._apply()

    def _apply(self) -> None:
        warmup = max(1, round(0.1 * self.total))
        if self.done < warmup:
            factor = (self.done + 1) / warmup
        else:
            progress = min(1.0, (self.done - warmup) / max(1, self.total - warmup))
            factor = 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in self.optimizer.param_groups:
            group["lr"] = self.peak * factor


def train(
    task: Task,
    dataset: Dataset,
    config: TrainConfig,
    checkpoint_dir: Path,
    on_epoch: EpochCallback | None = None,
    resume: bool = False,
    held_out: np.ndarray | None = None,
) -> TrainResult:
    """Trains the task's model on the training split.

    Part of the training split (``config.val_fraction``, stratified by :meth:`Task.strata`) is held out
    for per-epoch validation; the test split is never seen here. Training stops after ``config.epochs``,
    when the validation score has not improved for ``config.patience`` epochs, or when the next epoch would
    overrun ``config.max_minutes``; the learning-rate schedule is fitted to the epochs that the budget
    allows once the first epoch has been timed.

    Args:
        task: What is learned (see :mod:`inspectflow.tasks`).
        dataset: Ingested (and validated) dataset.
        config: Training settings (``auto`` ones are resolved here, see :func:`resolve`).
        checkpoint_dir: Where the ``last.pt`` and ``best.pt`` checkpoints go. Only these two are kept:
            a ResNet18 checkpoint with Adam's state weighs 135 MB, one per epoch would fill disks.
        on_epoch: Called after each epoch with the epoch number (1-based) and its metrics, once both
            checkpoints are written.
        resume: Continue from ``checkpoint_dir/last.pt`` when it is there: the weights, the optimizer,
            the schedule, every random generator and the history are restored, so the run goes on as if
            it had never stopped (the same seed gives the same model as an uninterrupted run).
        held_out: Which images of the training split to validate on (a boolean mask over it), in place of
            the ``val_fraction`` hold-out: a fold of ``train.method=auto``'s comparison.

    Returns:
        The trained model (eval mode) with its spec, per-epoch history and resolved settings.
    """
    config = resolve(task, config, dataset)
    seed_everything(config.seed)
    x_train, y_train, x_val, y_val = _hold_out(task, dataset, config, held_out)
    fit = _setup(task, config, y_train, dataset)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    history, best_epoch = _epochs(
        task, fit, (x_train, y_train, x_val, y_val), checkpoint_dir, on_epoch, resume
    )
    model, key = fit.model, task.best_epoch_key
    if config.keep_best and best_epoch:
        # The last epoch is not always the best: restore the one that validated best.
        model.load_state_dict(torch.load(checkpoint_dir / BEST_CHECKPOINT, weights_only=True)["model"])
        log.info("kept epoch %d (%s=%.4f)", best_epoch, key, history[best_epoch - 1][key])
    kept = f", kept epoch {best_epoch} ({key} {history[best_epoch - 1][key]:.4f})" if best_epoch else ""
    console.note(f"{len(history)} epoch{'s' if len(history) != 1 else ''} of {config.model}{kept}")
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    spec = _spec(task, dataset, config.model)
    return TrainResult(
        model=model,
        spec=spec,
        history=history,
        config=config,
        validation=(x_val, y_val),
        best_epoch=best_epoch,
    )


def _spec(task: Task, dataset: Dataset, architecture: str) -> ModelSpec:
    """The spec of a network trained on ``dataset`` for ``task`` (its thresholds are set after)."""
    return ModelSpec(
        architecture=architecture,
        classes=list(dataset.info.classes),
        preprocess=dataset.info.preprocess,
        task=task.name,
        good_class=dataset.info.good_class,
    )


_Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _hold_out(task: Task, dataset: Dataset, config: TrainConfig, held_out: np.ndarray | None) -> _Split:
    """The training images and targets, and the validation part held out of them (stratified, seeded)."""
    images, _ = dataset.split("train")
    targets = task.targets(dataset, "train")
    if held_out is None:
        held_out = (
            stratified_holdout(task.strata(dataset, "train"), config.val_fraction, config.seed)
            if config.val_fraction > 0
            else np.zeros(len(images), dtype=bool)
        )
    held = torch.from_numpy(held_out)
    x_train, y_train = to_tensor(images[~held_out]), targets[~held]
    x_val, y_val = to_tensor(images[held_out], config.channels_last), targets[held]
    return x_train, y_train, x_val, y_val


def _epochs(
    task: Task,
    fit: _Fit,
    split: _Split,
    checkpoint_dir: Path,
    on_epoch: EpochCallback | None,
    resume: bool,
) -> tuple[list[dict[str, float]], int]:
    """Trains epoch by epoch until a stop, checkpointing each; returns the history and the best epoch."""
    config, (x_train, y_train, x_val, y_val) = fit.config, split
    history: list[dict[str, float]] = []
    best_epoch = 0
    key = task.best_epoch_key
    started = time.perf_counter()
    if resume and (checkpoint_dir / LAST_CHECKPOINT).is_file():
        state = torch.load(checkpoint_dir / LAST_CHECKPOINT, weights_only=True)
        history, best_epoch = _restore(fit, state)
        started -= state["elapsed"]
        log.info("resumed after epoch %d of %d", len(history), config.epochs)
    if not resume or not history:
        fit.frozen_epochs = _frozen_epochs(config, None) if fit.backbone else 0
    epoch_started = time.perf_counter()
    for epoch in range(len(history) + 1, config.epochs + 1):
        fit.freeze_backbone(epoch <= fit.frozen_epochs)
        metrics = _train_epoch(task, fit, x_train, y_train, epoch)
        # Pretrained statistics drift slowly; from scratch, the running averages trail the weights.
        if task.recalibrate_batchnorm and config.weights == "none":
            recalibrate_batchnorm(fit.model, x_train, config.batch_size, fit.memory_format, fit.device)
        if len(x_val):
            metrics.update(_validate(task, fit, x_val, y_val))
        elapsed = time.perf_counter() - started
        epoch_seconds, epoch_started = time.perf_counter() - epoch_started, time.perf_counter()
        metrics[f"{TRAIN_METRICS}epoch_seconds"] = elapsed / epoch
        history.append(metrics)
        # The best epoch so far, the latest on ties.
        improved = len(x_val) and (not best_epoch or metrics[key] >= history[best_epoch - 1][key])
        best_epoch = epoch if improved else best_epoch
        torch.save(_state(fit, epoch, history, best_epoch, elapsed), checkpoint_dir / LAST_CHECKPOINT)
        if improved:
            shutil.copyfile(checkpoint_dir / LAST_CHECKPOINT, checkpoint_dir / BEST_CHECKPOINT)
        log.info("epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        stop = _stop_reason(config, epoch, best_epoch, elapsed, epoch_seconds)
        if stop:
            log.info("stopped after epoch %d: %s", epoch, stop)
            console.note(f"stopped: {stop}")
            break
        if epoch == 1 and fit.backbone and config.max_minutes is not None and not resume:
            fit.frozen_epochs = _frozen_epochs(config, epoch_seconds)
        # The budget's epochs, once timed: after the first epoch, and again after the first with the backbone
        # trained (a step through it costs more than one that stops before it).
        if config.max_minutes is not None and epoch in (1, fit.frozen_epochs + 1):
            fitting = epoch + int((config.max_minutes * 60 - elapsed) // epoch_seconds)
            fit.schedule.plan(min(config.epochs, fitting) * _steps_per_epoch(len(x_train), config.batch_size))
    return history, best_epoch


def _frozen_epochs(config: TrainConfig, epoch_seconds: float | None) -> int:
    """How many epochs train with the backbone frozen: ``frozen_share`` of the budget or of the epochs.

    Of the epochs when those end training first. The budget's share is known once the first (frozen)
    epoch is timed; until then (``epoch_seconds=None``) the first epoch is frozen.
    """
    if not config.frozen_share or config.weights != "imagenet":
        return 0
    of_epochs = round(config.frozen_share * config.epochs)
    if config.max_minutes is None or not of_epochs:
        return of_epochs
    if epoch_seconds is None:
        return 1
    return max(1, min(of_epochs, int(config.frozen_share * config.max_minutes * 60 // epoch_seconds)))


def _state(fit: _Fit, epoch: int, history: list[dict[str, float]], best_epoch: int, elapsed: float) -> dict:
    """Everything a resumed run needs to go on exactly as this one would have."""
    return {
        "epoch": epoch,
        "model": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(),
        "metrics": history[-1],
        "history": history,
        "best_epoch": best_epoch,
        "elapsed": elapsed,
        "frozen_epochs": fit.frozen_epochs,
        "schedule": (fit.schedule.done, fit.schedule.total),
        "generator": fit.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": _numpy_state(),
        "python_rng": random.getstate(),
    }


def _numpy_state() -> tuple[str, list[int], int, int, float]:
    """NumPy's global generator state in plain types, which ``torch.load(weights_only=True)`` reads back."""
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    return str(name), [int(key) for key in keys], int(position), int(has_gauss), float(cached)


def _restore(fit: _Fit, state: dict) -> tuple[list[dict[str, float]], int]:
    """Puts a saved run back where it stopped; returns its history and best epoch."""
    fit.model.load_state_dict(state["model"])
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.schedule.done, fit.schedule.total = state["schedule"]
    fit.frozen_epochs = int(state.get("frozen_epochs", 0))
    fit.schedule.step_to_current()
    fit.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    name, keys, position, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(state["python_rng"])
    return list(state["history"]), int(state["best_epoch"])


def _stop_reason(
    config: TrainConfig, epoch: int, best_epoch: int, elapsed: float, epoch_seconds: float
) -> str | None:
    """Why training should end after ``epoch``, if it should: no improvement, or no time for another.

    Another epoch is taken to last as long as the last one (not the mean: frozen epochs are shorter).
    """
    if config.patience is not None and best_epoch and epoch - best_epoch >= config.patience:
        return f"no better validation score for {config.patience} epochs"
    if config.max_minutes is not None and elapsed + epoch_seconds > config.max_minutes * 60:
        return f"another epoch would overrun train.max_minutes={config.max_minutes:g}"
    return None


def _steps_per_epoch(count: int, batch_size: int) -> int:
    return max(1, -(-count // batch_size))


def _setup(task: Task, config: TrainConfig, y_train: torch.Tensor, dataset: Dataset) -> _Fit:
    """Builds the model on the training device, the loss, AdamW and the learning-rate schedule."""
    model = build_model(
        config.model,
        len(dataset.info.classes),
        dataset.info.channels,
        config.weights,
        config.freeze_backbone,
        task.name,
    )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    device = training_device()
    log.info("training %s (%s weights, %s) on %s", config.model, config.weights, config.precision, device)
    model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    trainable = [p for p in model.parameters() if p.requires_grad]
    prefix = None if config.freeze_backbone else get_network(config.model).backbone
    backbone = [] if prefix is None else [p for n, p in model.named_parameters() if n.startswith(prefix)]
    # The fused kernel updates all parameters in one pass: 40 -> 25 ms a step for ResNet18 on this CPU.
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    schedule = WarmupCosine(
        optimizer, config.lr, config.epochs * _steps_per_epoch(len(y_train), config.batch_size)
    )
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = task.loss(config, y_train, len(dataset.info.classes))
    return _Fit(config, model, loss_fn, optimizer, schedule, device, memory_format, generator, backbone)


def _train_epoch(
    task: Task, fit: _Fit, x_train: torch.Tensor, y_train: torch.Tensor, epoch: int
) -> dict[str, float]:
    """One pass over the training images in the task's seeded order; returns ``train/*`` metrics."""
    config = fit.config
    fit.model.train()
    order = task.epoch_order(y_train, config, fit.generator)
    meter = task.meter()
    total_loss = 0.0
    starts = range(0, len(order), config.batch_size)
    for batch_number, start in enumerate(starts, 1):
        index = order[start : start + config.batch_size]
        batch, target = task.training_batch(x_train[index], y_train[index], config, fit.generator)
        batch = batch.to(fit.device).contiguous(memory_format=fit.memory_format)
        target = target.to(fit.device)
        fit.optimizer.zero_grad(set_to_none=True)
        with fit.autocast():
            logits = fit.model(batch)
        loss = fit.loss_fn(logits.float(), target)
        fit.scaler.scale(loss).backward()
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        fit.schedule.step()
        total_loss += loss.item() * len(index)
        meter.update(logits.detach().float(), target)
        loss_so_far = total_loss / (start + len(index))
        console.progress(batch_number, len(starts), f"train epoch {epoch}/{config.epochs}", loss=loss_so_far)
    return {f"{TRAIN_METRICS}loss": total_loss / len(order), **meter.result(TRAIN_METRICS)}


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
    """Scores the held-out part of the training split: loss and the task's ``val/*`` figures."""
    fit.model.eval()
    meter = task.meter()
    total_loss = 0.0
    batch_size = task.inference_batch(fit.config.batch_size, *x.shape[2:])
    for start in range(0, len(x), batch_size):
        with fit.autocast():
            logits = fit.model(x[start : start + batch_size].to(fit.device)).float()
        target = y[start : start + batch_size].to(fit.device)
        total_loss += float(fit.loss_fn(logits, target)) * len(target)
        meter.update(logits, target)
    return {f"{VAL_METRICS}loss": total_loss / len(x), **meter.result(VAL_METRICS)}


def train_feature_svm(
    dataset: Dataset, config: TrainConfig, on_split: Callable[[SplitResult], None] | None = None
) -> tuple[FeatureSvmClassifier, ModelSpec, SvmResult, bool]:
    """The ``features+svm`` method: frozen CNN features, a classifier cross-validated over 70/30 splits.

    The classifier is an SVM or a logistic regression (``classifier``).

    Features of every image are cached by backbone, layer, weights and data version, so a second run on the
    same data (another kernel or C, say) does not extract them again. The repeated splits, the method's own
    estimate, are drawn from the training split only, and the returned classifier is fitted on the whole
    training split: the test split is seen by neither, so the gate's test scores stay the registered model's.

    Returns:
        The classifier, its spec, the cross-validation result and whether the features came from the cache.
    """
    from inspectflow.models.feature_svm import fit_classifier, svm_repeated_splits

    extractor, features, cache_hit = backbone_features(dataset, config)
    train_rows = (dataset.manifest["split"] == "train").to_numpy()
    labels = dataset.split("train")[1]
    result = svm_repeated_splits(
        features[train_rows],
        labels,
        dataset.info.classes,
        classifier=config.classifier,
        kernel=config.svm_kernel,
        c=config.svm_c,
        repeats=config.repeats,
        seed=config.seed,
        on_split=on_split,
    )
    svm = fit_classifier(
        features[train_rows], labels, config.classifier, config.svm_kernel, config.svm_c, config.seed
    )
    spec = ModelSpec(
        architecture=FEATURE_SVM,
        classes=list(dataset.info.classes),
        preprocess=dataset.info.preprocess,
        backbone=config.backbone,
        layer=config.layer,
        good_class=dataset.info.good_class,
    )
    return FeatureSvmClassifier(extractor, svm, config.batch_size), spec, result, cache_hit


def backbone_features(dataset: Dataset, config: TrainConfig) -> tuple[nn.Module, np.ndarray, bool]:
    """The frozen backbone (on the CPU) and its features of every image, cached; whether they were."""
    from inspectflow.models.backbones import build_extractor, extract_features
    from inspectflow.models.feature_svm import (
        cached_features,
        feature_cache_key,
        images_digest,
        weights_identity,
    )

    seed_everything(config.seed)  # random weights (weights=random) must be the same in every run
    weights = {"auto": "imagenet", "random": "none"}.get(config.weights, config.weights)
    extractor, _ = build_extractor(config.backbone, weights, config.layer)
    weights_id = weights_identity(weights)
    if weights == "none":  # features of random weights depend on the seed that drew them
        weights_id += f":seed={config.seed}"
    key = feature_cache_key(config.backbone, config.layer, weights_id, images_digest(dataset))
    cache_dir = Path(config.feature_cache).expanduser()
    started = time.perf_counter()
    device = training_device()
    features, cache_hit = cached_features(
        cache_dir, key, lambda: extract_features(extractor.to(device), dataset.images, config.batch_size)
    )
    log.info(
        "%s %s features of %d images in %.1f s (%s)",
        "reused cached" if cache_hit else "extracted",
        config.backbone,
        len(features),
        time.perf_counter() - started,
        cache_dir / f"{key}.npy",
    )
    return extractor.cpu(), features, cache_hit  # the registered model serves on CPU


#: Share of ``train.max_minutes`` head-only fine-tuning may take in ``train.method=auto``'s comparison; full
#: fine-tuning, the costliest candidate, gets what is left.
HEAD_ONLY_SHARE = 0.2
#: Metrics the candidates are compared on when the gate's is a rate (``false_reject_rate``).
_SELECTION_FALLBACK = "macro_f1"


@dataclass
class MethodChoice:
    """What ``train.method=auto`` settled on: the settings to train, and what was compared."""

    config: TrainConfig  # the winner's settings (``method`` no longer ``auto``)
    choice: Choice | None = None  # None: one candidate only, nothing compared
    trained: TrainResult | None = None  # a fine-tuned winner trained on the very split it is registered from


def choose_method(
    task: Task,
    dataset: Dataset,
    config: PipelineConfig,
    on_estimate: Callable[[Estimate], None] | None = None,
) -> MethodChoice:
    """Resolves ``train.method=auto``: compares the candidates that fit the task and the data.

    The candidates, cheapest first: a logistic regression and an RBF SVM on frozen ``train.backbone``
    features at ``train.layer`` (``pyramid`` unless set; where the task compares methods, the backbone's
    ImageNet weights are installed, the images are large enough for it, the model is logged as pyfunc and
    no threshold needs a validation split), head-only fine-tuning
    (a pretrained ``model``) and full fine-tuning. All are scored on the same held-out parts of the
    training split (one validation split, or ``train.folds`` folds below ``train.small_set`` images) with
    the primary metric, within ``train.max_minutes``. On one validation split a fine-tuned winner is the
    registered model; on folds the winner is trained again on the whole training split (in its own
    ``train.max_minutes``), fine-tuning for the median of its folds' best epochs where early stopping ended
    them, else for the epochs its budget allows.
    """
    train_config = resolve(task, config.train.model_copy(update={"method": "finetune"}), dataset)
    strata = task.strata(dataset, "train")
    small = len(strata) < train_config.small_set
    folds = train_config.folds if small else 1
    candidates = _candidates(task, dataset, config, train_config, folds)
    if len(candidates) == 1:
        return MethodChoice(train_config)
    held_out = selection_folds(
        strata, folds=folds, repeats=1, val_fraction=train_config.val_fraction, seed=train_config.seed
    )
    parts = (
        f"{folds} folds of the training split's {len(strata)} images"
        if small
        else f"the same {int(held_out[0].sum())} validation images of the training split"
    )
    budget = None if train_config.max_minutes is None else train_config.max_minutes * 60
    choice = choose(candidates, held_out, _selection_metric(config), parts, budget, on_estimate)
    console.note(choice.describe())
    winner = train_config.model_copy(update=choice.winner.settings)
    trained = choice.winner.trained
    if winner.method == "features+svm":
        return MethodChoice(winner, choice)
    if not small:
        return MethodChoice(winner, choice, trained[0])
    # The folds choose the epochs where they stopped on their own (no better validation score for
    # train.patience epochs); where the budget cut them short, the final training takes its own budget.
    patience = winner.patience
    settled = patience is not None and all(len(r.history) - r.best_epoch >= patience for r in trained)
    epochs = int(np.median([r.best_epoch or len(r.history) for r in trained])) if settled else winner.epochs
    # The final model trains on the whole training split (a validation split stays only where thresholds
    # are picked on it).
    keep_validation = config.evaluate.target_recall is not None
    final: dict[str, Any] = {"epochs": epochs, "patience": None, "keep_best": keep_validation}
    if not keep_validation:
        final["val_fraction"] = 0.0
    return MethodChoice(winner.model_copy(update=final), choice)


def _selection_metric(config: PipelineConfig) -> str:
    """The gate's primary metric, or macro-F1 when that is a rate the candidates have no threshold for."""
    metric = config.register_.primary_metric
    return _SELECTION_FALLBACK if metric == "false_reject_rate" else metric


#: ``train.method=auto``'s candidates, each as the settings that train it alone (a features candidate reads
#: ``train.layer`` where set: the pooled head alone misses fine detail, see ``PyramidFeatures``).
CANDIDATE_SETTINGS: dict[str, dict[str, Any]] = {
    "features+logistic": {"method": "features+svm", "layer": "pyramid", "classifier": "logistic"},
    "features+svm rbf": {
        "method": "features+svm",
        "layer": "pyramid",
        "classifier": "svm",
        "svm_kernel": "rbf",
    },
    "finetune head-only": {"method": "finetune", "freeze_backbone": True},
    "finetune": {"method": "finetune", "freeze_backbone": False},
}


def _candidates(
    task: Task, dataset: Dataset, config: PipelineConfig, train_config: TrainConfig, folds: int
) -> list[Candidate]:
    """The methods worth comparing here, cheapest first (full fine-tuning always).

    Each of the ``folds`` trainings of a fine-tuning candidate gets its share of ``train.max_minutes``.
    """
    from inspectflow.models.efficientnet import weights_installed

    metric = _selection_metric(config)
    backbone = get_network(train_config.backbone)
    preprocess = dataset.info.preprocess
    features_fit = (
        task.compares_methods
        and backbone.weights == "package"
        and weights_installed()
        and min(preprocess.height, preprocess.width) >= backbone.auto_min_side
        and config.register_.flavor != "pytorch"
        and config.evaluate.target_recall is None
    )
    candidates: list[Candidate] = []
    if features_fit:
        features: list[np.ndarray] = []  # extracted (or read from the cache) once, by the first candidate
        for name in ("features+logistic", "features+svm rbf"):
            features_settings = dict(CANDIDATE_SETTINGS[name])
            features_settings["layer"] = train_config.layer or features_settings["layer"]
            candidate = train_config.model_copy(update=features_settings)
            scorer = _features_scorer(task, dataset, candidate, metric, features)
            candidates.append(Candidate(name, features_settings, scorer))
    tunings = [("finetune", False)]
    if task.compares_methods and get_network(train_config.model).pretrained:
        tunings.insert(0, ("finetune head-only", True))
    for name, frozen in tunings:
        settings = CANDIDATE_SETTINGS[name]
        budget = train_config.max_minutes
        if budget is not None and len(candidates) + len(tunings) > 1:  # other candidates share the budget
            budget *= (HEAD_ONLY_SHARE if frozen else 1 - HEAD_ONLY_SHARE) / folds
        candidate_config = train_config.model_copy(update={**settings, "max_minutes": budget})
        candidates.append(
            Candidate(name, settings, _finetune_scorer(task, dataset, candidate_config, metric))
        )
    return candidates


def _features_scorer(
    task: Task, dataset: Dataset, config: TrainConfig, metric: str, features: list[np.ndarray]
) -> FoldScorer:
    """Fits the features' classifier on the training split less a held-out part and scores that part."""
    from inspectflow.models.feature_svm import fit_classifier

    def score(held_out: np.ndarray) -> tuple[float, None]:
        if not features:
            _, extracted, _ = backbone_features(dataset, config)
            features.append(extracted[(dataset.manifest["split"] == "train").to_numpy()])
        labels = dataset.split("train")[1]
        fitted = fit_classifier(
            features[0][~held_out], labels[~held_out], config.classifier, config.svm_kernel, config.svm_c,
            config.seed,
        )  # fmt: skip
        probabilities = fitted.predict_proba(features[0][held_out])
        return task.selection_score(probabilities, labels[held_out], dataset, metric), None

    return score


def _finetune_scorer(task: Task, dataset: Dataset, config: TrainConfig, metric: str) -> FoldScorer:
    """Fine-tunes on the training split less a held-out part (its validation) and scores that part."""

    def score(held_out: np.ndarray) -> tuple[float, TrainResult]:
        with tempfile.TemporaryDirectory() as checkpoints:
            result = train(task, dataset, config, Path(checkpoints), held_out=held_out)
        images, targets = result.validation
        logits = logits_in_batches(result.model, images, config.batch_size)
        probabilities = torch.softmax(logits, dim=1).numpy()
        return task.selection_score(probabilities, targets.numpy(), dataset, metric), result

    return score


@pipeline_step("train")
def train_step(dataset_dir: Path, raw_config: dict[str, object], run_id: str, model_dir: Path) -> None:
    """Runs training as a pipeline step, logging to the MLflow run.

    ``auto`` first compares its candidates (:func:`choose_method`; a child run each, the comparison in
    ``training/selection.json`` and a run tag). ``finetune`` logs per-epoch metrics and the last and best
    checkpoints; ``features+svm`` logs one child run per split of the training split and, on the parent
    run, the mean and standard deviation of accuracy, macro-F1 and per-class recall under ``cv/`` (shown
    beside the test scores; the gate judges those).
    """
    import mlflow

    from inspectflow.config import validate_config
    from inspectflow.tracking import name_run, resume_run

    requested: PipelineConfig = validate_config(raw_config)
    dataset = load_dataset(dataset_dir)
    task = task_for(requested)
    config, trained = requested, None
    with resume_run(run_id, "train"):
        if requested.train.method == "auto":
            chosen = choose_method(task, dataset, requested, _log_candidate)
            config, trained = requested.model_copy(update={"train": chosen.config}), chosen.trained
            if chosen.choice is not None:
                mlflow.log_dict(chosen.choice.as_dict(), SELECTION_ARTIFACT)
                mlflow.set_tag(SELECTION_TAG, chosen.choice.describe())
                mlflow.log_params({"train.method_chosen": chosen.config.method})
        if config.train.method == "features+svm":
            if requested.train.method == "auto":
                name_run(run_id, config.title())  # the name says which method won
            _train_feature_svm_step(dataset, config, model_dir)
        elif config.train.method == "patchcore":
            _patchcore_step(task, dataset, config, model_dir)
        else:
            _finetune_step(task, dataset, config, requested.train, run_id, model_dir, trained)


@contextlib.contextmanager
def _child_run(name: str) -> Iterator[None]:
    """A run nested under the active one, in its experiment (else MLflow would pick its default one)."""
    import mlflow

    parent = mlflow.active_run()
    experiment = parent.info.experiment_id if parent else None
    with mlflow.start_run(run_name=name, nested=True, experiment_id=experiment):
        yield


def _log_candidate(estimate: Estimate) -> None:
    """One child run per candidate of ``train.method=auto``: its settings, scores and seconds."""
    import mlflow

    with _child_run(f"candidate {estimate.name}"):
        mlflow.log_params({f"train.{key}": value for key, value in estimate.settings.items()})
        mlflow.log_metrics(
            {
                f"{SELECTION_METRICS}mean": estimate.mean,
                f"{SELECTION_METRICS}std": estimate.std,
                f"{SELECTION_METRICS}seconds": estimate.seconds,
            }
        )
        for part, score in enumerate(estimate.scores):
            mlflow.log_metric(f"{SELECTION_METRICS}score", score, step=part)


def _train_feature_svm_step(dataset: Dataset, config: PipelineConfig, model_dir: Path) -> None:
    """The features+svm method in the step: the classifier, its cross-validated estimate under ``cv/``."""
    import mlflow

    def log_split(split: SplitResult) -> None:
        with _child_run(f"split-{split.index}"):
            mlflow.log_params({"split.index": split.index, "split.seed": split.seed})
            recalls = {f"{CV_METRICS}recall/{c}": r for c, r in split.recall.items()}
            figures = {f"{CV_METRICS}accuracy": split.accuracy, f"{CV_METRICS}macro_f1": split.macro_f1}
            mlflow.log_metrics({**figures, **recalls})

    classifier, spec, result, cache_hit = train_feature_svm(dataset, config.train, log_split)
    save_trained_model(classifier, spec, model_dir)
    mlflow.set_tag(FEATURES_CACHE_TAG, "hit" if cache_hit else "miss")
    summary = {
        f"{CV_METRICS}accuracy_mean": result.accuracy_mean,
        f"{CV_METRICS}accuracy_std": result.accuracy_std,
        f"{CV_METRICS}macro_f1_mean": result.macro_f1_mean,
        f"{CV_METRICS}macro_f1_std": result.macro_f1_std,
    }
    summary.update({f"{CV_METRICS}recall_mean/{c}": v for c, v in result.recall_mean.items()})
    summary.update({f"{CV_METRICS}recall_std/{c}": v for c, v in result.recall_std.items()})
    mlflow.log_metrics(summary)
    estimate = describe_cv(summary, len(result.splits))
    learner = config.train.learner()
    log.info("%s %s", learner, estimate)
    console.note(f"{config.train.backbone} {config.train.layer or 'pool'} features + {learner}, {estimate}")


def train_patchcore(
    task: Task, dataset: Dataset, config: TrainConfig
) -> tuple[TrainResult, BankSummary, HeadSummary]:
    """The ``patchcore`` method: a memory bank of the good training images' patches, and the defect head.

    The defective images of the training split, if any, never enter the bank nor the head's training: they
    go to validation, with ``val_fraction`` of the good ones (stratified, seeded), where the map is chosen
    and the threshold picked; the head learns from synthetic defects on the bank's images.
    """
    from inspectflow.models.patchcore import PatchCore, fit, fit_head

    config = resolve(task, config, dataset)
    images, _ = dataset.split("train")
    targets = task.targets(dataset, "train")
    held = targets.numpy() > 0
    good = np.flatnonzero(~held)
    if config.val_fraction > 0 and len(good) > 1:
        strata = task.strata(dataset, "train")[good]
        held[good[stratified_holdout(strata, config.val_fraction, config.seed)]] = True
    bank = images[~held]
    seed_everything(config.seed)  # random weights (weights=random) must be the same in every run
    classes, channels = len(dataset.info.classes), dataset.info.channels
    model = build_model(config.model, classes, channels, config.weights, task=task.name)
    assert isinstance(model, PatchCore)  # the anomaly task's networks are PatchCore models
    # Channels-last: the backbone's pass, most of fitting's time, runs about 1.8x faster on this CPU.
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
    starts = range(0, len(bank), config.batch_size)
    batches = (to_tensor(bank[start : start + config.batch_size], config.channels_last) for start in starts)
    validation = (to_tensor(images[held], config.channels_last), targets[torch.from_numpy(held)])
    compare_on = (validation[0], validation[1].numpy() > 0)
    summary = fit(model, batches, len(bank), config.coreset_ratio, config.max_bank, config.seed, compare_on)
    unseen = validation[0][~compare_on[1]]  # good parts the head never trains on: they set its gain
    head = fit_head(model, bank, config.head_epochs, config.seed, unseen, config.channels_last)
    model = model.to(memory_format=torch.contiguous_format).eval()
    spec = _spec(task, dataset, config.model)
    return TrainResult(model, spec, config=config, validation=validation), summary, head


def _patchcore_step(task: Task, dataset: Dataset, config: PipelineConfig, model_dir: Path) -> None:
    """The patchcore method in the step: the bank's size and fit time, the threshold, the model."""
    import mlflow

    trained, bank, head = train_patchcore(task, dataset, config.train)
    thresholds = task.thresholds(config.evaluate, trained.model, *trained.validation)
    trained.spec.thresholds = thresholds
    mlflow.log_metrics(
        {
            f"{TRAIN_METRICS}bank_patches": bank.kept,
            f"{TRAIN_METRICS}good_patches": bank.patches,
            f"{TRAIN_METRICS}bank_mb": bank.bytes / 2**20,
            f"{TRAIN_METRICS}fit_seconds": bank.seconds + head.seconds,
            f"{TRAIN_METRICS}head_seconds": head.seconds,
            f"{TRAIN_METRICS}head_gain": head.gain,
            f"{TRAIN_METRICS}relative_map": float(bank.relative),
            **{f"{VAL_METRICS}image_auroc_{kind}": value for kind, value in bank.validation_auroc.items()},
            **{f"{VAL_METRICS}{name}": value for name, value in thresholds.items()},
        }
    )
    save_trained_model(trained.model, trained.spec, model_dir)
    threshold, images = thresholds["detection_threshold"], len(trained.validation[0])
    compared = bank.validation_auroc
    chosen = (
        f"; {'relative' if bank.relative else 'absolute'} map (validation image AUROC absolute "
        f"{compared['absolute']:.4f}, relative {compared['relative']:.4f})"
        if compared
        else ""
    )
    trained_head = (
        f"defect head {head.epochs} epochs on synthetic defects (loss {head.loss:.3f}), "
        f"{head.seconds:.0f} s; "
        if head.epochs
        else ""
    )
    console.note(
        f"PatchCore bank of {bank.kept} patches ({bank.bytes / 2**20:.1f} MB) of {bank.patches} good ones, "
        f"{bank.seconds:.0f} s{chosen}; {trained_head}threshold {threshold:.4f} on {images} validation images"
    )


def _finetune_step(
    task: Task,
    dataset: Dataset,
    config: PipelineConfig,
    requested: TrainConfig,
    run_id: str,
    model_dir: Path,
    trained: TrainResult | None,
) -> None:
    """Fine-tuning in the step (or the winner ``auto`` already trained): checkpoints, thresholds, model.

    ``requested``: the train settings as given, whose ``auto`` values are logged as what they became.
    """
    import mlflow

    from inspectflow.tracking import heartbeat, name_run

    if trained is None:
        # Checkpoints go to MLflow after every epoch, not into the model artifact that evaluate and register
        # read: a run that was killed resumes from them (``inspectflow run --resume``).
        with tempfile.TemporaryDirectory() as tmp:
            checkpoints = Path(tmp) / CHECKPOINTS_ARTIFACTS
            resumed = _download_checkpoints(run_id, Path(tmp))

            def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
                # The checkpoint first: an epoch in the metrics is always one a resumed run goes on from.
                mlflow.log_artifacts(str(checkpoints), artifact_path=CHECKPOINTS_ARTIFACTS)
                mlflow.log_metrics(metrics, step=epoch)
                heartbeat()

            trained = train(task, dataset, config.train, checkpoints, log_epoch, resume=resumed)
    else:  # trained while candidates were compared: its epochs go to the run now
        for epoch, metrics in enumerate(trained.history, 1):
            mlflow.log_metrics(metrics, step=epoch)
    # What ``auto`` became: ingest logged every setting but these.
    resolved = trained.config.model_dump() if trained.config else {}
    used = config.used()
    mlflow.log_params(
        {
            f"train.{k}": v
            for k, v in resolved.items()
            if getattr(requested, k) == "auto" and k != "method" and f"train.{k}" in used
        }
    )
    if trained.config and requested.model == "auto":
        name_run(run_id, config.title(trained.config.model))  # the name says which model it became
    good = dataset.info.good_index
    thresholds = task.thresholds(config.evaluate, trained.model, *trained.validation, good_class=good)
    trained.spec.thresholds = thresholds
    # What evaluation and prediction will apply, picked on the validation images.
    mlflow.log_metrics({f"{VAL_METRICS}{name}": value for name, value in thresholds.items()})
    save_trained_model(trained.model, trained.spec, model_dir)
    mlflow.log_dict({"epochs": trained.history}, HISTORY_ARTIFACT)


def _download_checkpoints(run_id: str, into: Path) -> bool:
    """Fetches the run's checkpoints into ``into/checkpoints`` when it has a ``last.pt``; says if it had."""
    import mlflow

    saved = {
        Path(item.path).name for item in mlflow.MlflowClient().list_artifacts(run_id, CHECKPOINTS_ARTIFACTS)
    }
    if LAST_CHECKPOINT not in saved:
        return False
    mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=CHECKPOINTS_ARTIFACTS, dst_path=str(into)
    )
    return True
