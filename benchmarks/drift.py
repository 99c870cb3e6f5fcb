"""The drift watch on real images, lot for lot: false alarms on normal batches, and real drift caught.

For each real set this registers a model trained on part of it, as ``inspectflow run`` does (its drift
reference included), then checks the held-back images as a line sends them: every contiguous window (in
file order) of 20 and of 50 images, and each whole item where the files name one (KolektorSDD's
commutators, eight views each). It counts the windows the watch calls drift, on the images as they are and
on the same images with brightness scaled by 0.8, a Gaussian blur of sigma 2, or the central 70% cropped and
resized back. Each window is one check at the watch's daily level (``monitor.alpha`` over
``monitor.checks_per_day``), from the same profile of every held-back image. Finally it times
``inspectflow monitor`` as a user runs it on NEU steel patches: another product (expected: exit 3).

* KolektorSDD: a segmenter trained for ``--max-minutes`` on a seeded half of the commutators (whole items,
  so that the held-back half holds lots the reference never saw).
* casting: a classifier (``data.good_class=ok_front``) on a seeded half of the good impellers and of the
  defective ones; the held-back good ones in file order.

Usage::

    .venv/bin/python benchmarks/drift.py [--max-minutes 1] [--stride 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
#: What a line's real drift does to an image, as the camera delivers it.
PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "as they are": lambda image: image,
    "brightness x0.8": lambda image: image.point(lambda value: value * 0.8),
    "blur sigma 2": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "central 70% crop": lambda image: image.crop(
        (
            round(image.width * 0.15),
            round(image.height * 0.15),
            round(image.width * 0.85),
            round(image.height * 0.85),
        )
    ).resize(image.size, Image.Resampling.BILINEAR),
}


def inspectflow(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the CLI with the embedded store in ``work``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "inspectflow", *args, "--workdir", str(work)]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=3600)


def split_kolektorsdd(root: Path, seed: int) -> tuple[list[str], list[str], list[Path]]:
    """A seeded half of the commutators to train on (images/ + masks/ under ``root/train``).

    Returns:
        The workload, its settings, and the held-back image files in file order.
    """
    source = REAL / "kolektorsdd-seg"
    files = sorted((source / "images").glob("*.jpg"))
    items = sorted({path.name.split("_")[0] for path in files})
    trained = set(np.random.default_rng(seed).choice(items, len(items) // 2, replace=False))
    for folder in ("images", "masks"):
        (root / "train" / folder).mkdir(parents=True)
    for path in files:
        if path.name.split("_")[0] in trained:
            shutil.copy(path, root / "train" / "images")
            shutil.copy(source / "masks" / f"{path.stem}.png", root / "train" / "masks")
    held = [path for path in files if path.name.split("_")[0] not in trained]
    return ["dagm"], ["--task", "segmentation"], held


def split_casting(root: Path, seed: int) -> tuple[list[str], list[str], list[Path]]:
    """A seeded half of each class to train on (class folders under ``root/train``)."""
    generator = np.random.default_rng(seed)
    held: list[Path] = []
    for folder in ("ok_front", "def_front"):
        files = sorted((REAL / "casting" / folder).glob("*.jpeg"))
        trained = generator.random(len(files)) < 0.5
        (root / "train" / folder).mkdir(parents=True)
        for path, train in zip(files, trained, strict=True):
            if train:
                shutil.copy(path, root / "train" / folder)
            elif folder == "ok_front":
                held.append(path)
    return ["casting"], ["--task", "classification", "--set", "data.good_class=ok_front"], held


def windows(count: int, size: int, stride: int) -> list[np.ndarray]:
    return [np.arange(start, start + size) for start in range(0, count - size + 1, stride)]


def measure(name: str, split: Callable, options: argparse.Namespace, root: Path) -> None:
    from inspectflow.config import build_config
    from inspectflow.monitoring.drift import check_level, compare
    from inspectflow.monitoring.watch import watched

    (workload,), run_options, held = split(root, options.seed)
    started = time.monotonic()
    settings = [
        f"train.max_minutes={options.max_minutes}",
        "register.min_score=0",
        "register.baseline_margin=null",
    ]
    trained = inspectflow(
        root, "run", workload, "--data", str(root / "train"), *run_options, *(f"--set={s}" for s in settings)
    )
    if trained.returncode:
        sys.exit(f"{name}: training failed:\n{trained.stdout[-2000:]}\n{trained.stderr[-2000:]}")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    config = build_config(workload, task=run_options[1])
    watch = watched(f"models:/{config.register_.model_name}/1")
    level = check_level(config.monitor.alpha, config.monitor.checks_per_day)
    print(
        f"\n{name}: {watch.name} trained and registered in {time.monotonic() - started:.0f} s, reference "
        f"{len(watch.reference)} training images; {len(held)} held back; each check at level {level:.2g}"
    )
    items = np.array([path.name.split("_")[0] for path in held])
    by_item = (
        [np.flatnonzero(items == item) for item in dict.fromkeys(items)] if name == "KolektorSDD" else []
    )
    print(
        f"{'images':<18}{'windows of 20':>16}{'windows of 50':>16}{'whole items':>14}  "
        "what moved (windows of 50)"
    )
    for kind, perturb in PERTURBATIONS.items():
        folder = root / "held" / kind.replace(" ", "-").replace("%", "")
        folder.mkdir(parents=True)
        for path in held:
            perturb(Image.open(path)).save(folder / f"{path.stem}.png")
        new, _, _ = watch.profile(folder, len(held))
        cells: list[str] = []
        moved: dict[str, int] = {}
        for sizes in (windows(len(new), 20, options.stride), windows(len(new), 50, options.stride), by_item):
            verdicts = []
            for rows in sizes:
                comparison = compare(watch.reference, new.subset(rows), level)
                verdicts.append(comparison.drift)
                if len(rows) == 50:
                    for what in comparison.drifted:
                        moved[what] = moved.get(what, 0) + 1
            cells.append(f"{np.mean(verdicts):.0%} of {len(verdicts)}" if verdicts else "-")
        print(f"{kind:<18}{cells[0]:>16}{cells[1]:>16}{cells[2]:>14}  {moved or ''}", flush=True)
    del os.environ["MLFLOW_TRACKING_URI"]
    if name == "KolektorSDD":
        started = time.monotonic()
        done = inspectflow(
            root,
            "monitor",
            workload,
            str(REAL / "neu-cls"),
            "--model",
            f"models:/{config.register_.model_name}/1",
        )
        line = done.stdout.strip() or done.stderr.strip()
        print(
            f"NEU steel, inspectflow monitor: exit {done.returncode} in {time.monotonic() - started:.0f} s: "
            f"{line}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-minutes", type=float, default=1.0, help="training budget of each model")
    parser.add_argument("--stride", type=int, default=1, help="images between consecutive windows' starts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the part trained on")
    options = parser.parse_args()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    print("share of windows the watch calls drift (held-back images in file order)")
    for name, split in (("KolektorSDD", split_kolektorsdd), ("casting", split_casting)):
        with tempfile.TemporaryDirectory(prefix="inspectflow-drift-") as scratch:
            measure(name, split, options, Path(scratch))


if __name__ == "__main__":
    main()
