"""Anomaly detection on real sets: PatchCore learned from good parts only, beside a supervised segmenter.

For each set (``../shared/data/real``) this runs what ``inspectflow run NAME --task anomaly`` runs, in-process
(ingest, fit, threshold on validation, evaluate), and prints one row: image AUROC with its 95% bootstrap
interval, image AP, pixel AUROC and AUPRO (sets with masks), the escape and false-reject rates at the
threshold, fit seconds (the bank's and the defect head's), the map fitting chose (absolute or relative, with
both maps' validation AUROC), the bank's patches and megabytes, and PatchCore's inference images/s. Beside
it, at the same working size, the supervised segmenter of the same backbone (``unet_lite0``, what the
segmentation task trains): its training images/s (forward and backward, batch 8) and inference images/s,
both eager. ``--set train.head_epochs=0`` measures the bank's map alone.
Usage::

    .venv/bin/python benchmarks/anomaly.py [--sets kolektorsdd-seg casting] [--set train.max_bank=20000]

The training split's defective images never reach the bank nor the defect head: they go to validation with a
share of the good ones, where the threshold is picked.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from inspectflow.config import build_config
from inspectflow.data.dataset import Dataset
from inspectflow.imaging import to_tensor
from inspectflow.metrics.intervals import score_intervals
from inspectflow.models.networks import build_model
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import train_patchcore
from inspectflow.tasks import get_task
from inspectflow.tasks.anomaly import AnomalyScores

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
#: Each real set and the settings that say which of its parts are good (masks say it where there are).
SETS: dict[str, list[str]] = {
    "kolektorsdd-seg": [],
    "casting": ["data.good_class=ok_front"],
}
BATCH = 8


def images_per_second(model: torch.nn.Module, images: np.ndarray, train: bool = False) -> float:
    """Eager images/s of ``model`` over ``images``, batches of :data:`BATCH` (training steps if ``train``)."""
    batches = [to_tensor(images[i : i + BATCH], channels_last=True) for i in range(0, len(images), BATCH)]
    optimizer = torch.optim.AdamW(model.parameters()) if train else None
    model.train(train)
    started = time.perf_counter()
    for batch in batches:
        if optimizer is None:
            with torch.no_grad():
                model(batch)
            continue
        logits = model(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(images) / (time.perf_counter() - started)


def measure(name: str, extra: list[str]) -> dict[str, str]:
    config = build_config(name.split("-")[0], [*SETS[name], *extra], task="anomaly")
    dataset: Dataset = ingest(REAL / name, config)
    task = get_task("anomaly")
    trained, bank, head = train_patchcore(task, dataset, config.train)
    thresholds = task.thresholds(config.evaluate, trained.model, *trained.validation)
    test_images, _ = dataset.split("test")
    started = time.perf_counter()
    scores = task.evaluate(trained.model, dataset, config.evaluate.applying(thresholds))
    assert isinstance(scores, AnomalyScores)
    evaluate_seconds = time.perf_counter() - started
    auroc = score_intervals(scores, ["image_auroc"])["image_auroc"]
    preprocess = dataset.info.preprocess
    segmenter = build_model("unet_lite0", 1, preprocess.channels, task="segmentation")
    sample = test_images[: 4 * BATCH]
    row = {
        "set": name,
        "size": f"{preprocess.height}x{preprocess.width}",
        "image AUROC": f"{auroc.value:.4f} ({auroc.low:.3f}-{auroc.high:.3f})",
        "image AP": f"{scores.image_ap:.4f}",
        "pixel AUROC": f"{scores.pixel_auroc:.4f}",
        "AUPRO": f"{scores.aupro:.4f}",
        "escape": f"{scores.escape_rate:.3f}",
        "false reject": f"{scores.false_reject_rate:.3f}",
        "fit s": f"{bank.seconds + head.seconds:.0f} (bank {bank.seconds:.0f}, head {head.seconds:.0f})",
        "map": ("relative" if bank.relative else "absolute")
        + "".join(f", validation {kind} {auroc:.3f}" for kind, auroc in bank.validation_auroc.items()),
        "bank": f"{bank.kept} of {bank.patches} patches, {bank.bytes / 2**20:.1f} MB",
        "evaluate s": f"{evaluate_seconds:.0f} ({len(test_images)} images)",
        "patchcore infer img/s": f"{images_per_second(trained.model, sample):.1f}",
        "unet_lite0 infer img/s": f"{images_per_second(segmenter, sample):.1f}",
        "unet_lite0 train img/s": f"{images_per_second(segmenter, sample, train=True):.1f}",
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=None, choices=SETS, help="default: those present")
    parser.add_argument("--set", action="append", default=[], help="a setting for every set, as in --set")
    args = parser.parse_args()
    torch.manual_seed(0)
    for name in args.sets or [s for s in SETS if (REAL / s).is_dir()]:
        row = measure(name, args.set)
        print(" | ".join(f"{key}: {value}" for key, value in row.items()), flush=True)


if __name__ == "__main__":
    main()
