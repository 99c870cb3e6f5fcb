"""Mixed precision on real data: ``train.precision=auto`` against fp32, curves side by side.

Trains the same model twice from the same seed on a real set from ``../shared/data/real/`` (ResNet18 on NEU
steel defects, the U-Net on CrackForest cracks), with a fixed number of epochs and no time budget, and
prints per epoch the training loss and validation score of both, the seconds per epoch and, at the end, the
speed-up and the difference of the best validation scores.

Run: ``python benchmarks/precision.py [--sets neu crackforest] [--epochs 6]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from inspectflow.config import build_config
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import train
from inspectflow.tasks import task_for

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
#: Set -> (folder, task, model, overrides, validation metric).
SETS = {
    "neu": ("neu-cls", "classification", "resnet18", ["data.max_side=128"], "val/macro_f1"),
    "crackforest": ("crackforest-seg", "segmentation", "unet", [], "val/iou"),
}


def curves(name: str, epochs: int) -> None:
    folder, task_name, model, overrides, metric = SETS[name]
    settings = [
        f"train.model={model}",
        "train.weights=none",
        f"train.epochs={epochs}",
        "train.max_minutes=null",
        "train.patience=null",
        *overrides,
    ]
    histories = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "auto"):
            config = build_config(name, [*settings, f"train.precision={precision}"], task=task_name)
            dataset = ingest(REAL / folder, config)
            result = train(task_for(config), dataset, config.train, Path(tmp) / precision)
            assert result.config is not None
            histories[f"{precision} ({result.config.precision})"] = result.history
    (fp32_name, fp32), (auto_name, auto) = histories.items()
    print(f"\n{name}: {model}, {epochs} epochs, {metric}")
    print(f"epoch | {fp32_name} loss | {fp32_name} {metric} | {auto_name} loss | {auto_name} {metric}")
    for epoch, (ours, theirs) in enumerate(zip(fp32, auto, strict=True), start=1):
        print(
            f"{epoch:5d} | {ours['train/loss']:.4f} | {ours[metric]:.4f} | "
            f"{theirs['train/loss']:.4f} | {theirs[metric]:.4f}"
        )
    speedup = fp32[-1]["train/epoch_seconds"] / auto[-1]["train/epoch_seconds"]
    best_fp32, best_auto = max(h[metric] for h in fp32), max(h[metric] for h in auto)
    seconds = f"fp32 {fp32[-1]['train/epoch_seconds']:.1f}, auto {auto[-1]['train/epoch_seconds']:.1f}"
    print(
        f"{name}: seconds per epoch {seconds} "
        f"({speedup:.2f}x); best {metric} fp32 {best_fp32:.4f}, auto {best_auto:.4f} "
        f"(difference {best_auto - best_fp32:+.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    for name in args.sets:
        curves(name, args.epochs)


if __name__ == "__main__":
    main()
