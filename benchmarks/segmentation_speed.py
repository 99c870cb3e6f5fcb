"""Epochs a segmenter gets in its time budget, before the frozen start and the bf16 decoder and now.

Both are timed in one run, so that the ratio holds on a machine whose speed varies.

For each set (``../shared/data/real`` or ``--root``): ingest once with the defaults, then time training
epochs of ``unet_lite0``

* before: float32, every step through the encoder (``train.precision=fp32 train.frozen_share=0``);
* now: the defaults, an epoch with the pretrained encoder frozen and one with it trained (the decoder in
  bfloat16 autocast where the CPU has it natively),

each epoch with its validation pass, and projects the epochs that fit ``train.max_minutes`` (the task's
default 15): before ``budget / epoch``, now ``frozen_share * budget / frozen epoch`` plus the rest of the
budget over trained epochs, as training plans them. Usage::

    .venv/bin/python benchmarks/segmentation_speed.py [--sets kolektorsdd-seg crackforest-seg] [--root DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from inspectflow.config import build_config
from inspectflow.data.dataset import Dataset
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import train
from inspectflow.tasks import get_task

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SEGMENTATION = get_task("segmentation")


def epoch_seconds(dataset: Dataset, settings: list[str], epochs: int) -> list[float]:
    """Trains ``epochs`` epochs with ``settings`` and returns each epoch's seconds (validation included)."""
    config = build_config(
        "speed", [*settings, f"train.epochs={epochs}", "train.max_minutes=null"], task="segmentation"
    )
    times: list[float] = []
    last = [time.perf_counter()]

    def lap(epoch: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as checkpoints:
        train(SEGMENTATION, dataset, config.train, Path(checkpoints), lap)
    return times


def measure(name: str, root: Path) -> dict[str, str]:
    defaults = build_config("speed", [], task="segmentation").train
    dataset = ingest(root / name, build_config("speed", [], task="segmentation"))
    before = epoch_seconds(
        dataset, ["train.model=unet_lite0", "train.precision=fp32", "train.frozen_share=0"], 2
    )[-1]
    # frozen_share 0.5 of 4 epochs: two frozen, then two trained; the second of each is timed (warm).
    now = epoch_seconds(dataset, ["train.model=unet_lite0", "train.frozen_share=0.5"], 4)
    frozen, trained = now[1], now[3]
    budget = (defaults.max_minutes or 15.0) * 60
    share = defaults.frozen_share
    epochs_before = budget / before
    epochs_now = share * budget / frozen + (1 - share) * budget / trained
    preprocess = dataset.info.preprocess
    return {
        "set": f"{name} ({root.name})",
        "size": f"{preprocess.height}x{preprocess.width}",
        "epoch before s": f"{before:.1f}",
        "frozen epoch s": f"{frozen:.1f}",
        "trained epoch s": f"{trained:.1f}",
        "epochs in budget before": f"{epochs_before:.0f}",
        "now": f"{epochs_now:.0f}",
        "ratio": f"{epochs_now / epochs_before:.2f}x",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["kolektorsdd-seg", "crackforest-seg"])
    parser.add_argument("--root", type=Path, default=REAL)
    args = parser.parse_args()
    rows = []
    for name in args.sets:
        rows.append(measure(name, args.root))
        print(rows[-1], flush=True)
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    main()
