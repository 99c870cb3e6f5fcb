"""The drift watch on real images: its verdicts, and how long `inspectflow monitor` takes for hundreds.

Trains a KolektorSDD segmenter for a short budget on 20 defective and 30 clean parts drawn (seeded) across
the set, registers it as `inspectflow run` does (ONNX export included, the gate's floors off: the model only
needs to exist), then times `inspectflow monitor` as a user runs it (start-up included) on the 349 held-back
KolektorSDD images (expected: no drift) and on NEU steel patches (expected: drift, exit 3). Usage::

    .venv/bin/python benchmarks/drift.py [--max-minutes 2] [--neu-images 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def inspectflow(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the CLI with the embedded store in ``work``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "inspectflow", *args, "--workdir", str(work)]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-minutes", type=float, default=2.0, help="training budget of the segmenter")
    parser.add_argument("--neu-images", type=int, default=500, help="monitor.max_images of the NEU check")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspectflow-drift-") as scratch:
        root = Path(scratch)
        rows = pd.read_csv(REAL / "kolektorsdd-seg" / "labels.csv")
        generator = np.random.default_rng(0)
        picked = [
            stem
            for defective, count in ((1, 20), (0, 30))
            for stem in generator.choice(
                rows.loc[rows["defective"] == defective, "stem"], count, replace=False
            )
        ]
        for folder, suffix in (("images", ".jpg"), ("masks", ".png")):
            (root / "train" / folder).mkdir(parents=True)
            for stem in picked:
                shutil.copy(REAL / "kolektorsdd-seg" / folder / f"{stem}{suffix}", root / "train" / folder)
        held_back = root / "held-back"
        held_back.mkdir()
        for stem in sorted(set(rows["stem"]) - set(picked)):
            (held_back / f"{stem}.jpg").symlink_to(REAL / "kolektorsdd-seg" / "images" / f"{stem}.jpg")
        started = time.monotonic()
        settings = [
            f"train.max_minutes={options.max_minutes}",
            "register.min_score=0",
            "register.baseline_margin=null",
        ]
        trained = inspectflow(
            root, "run", "dagm", "--data", str(root / "train"), *(f"--set={s}" for s in settings)
        )
        if trained.returncode:
            sys.exit(f"training failed:\n{trained.stderr}")
        print(f"trained and registered dagm-segmenter version 1 in {time.monotonic() - started:.0f} s")
        print(f"{'images':<28}{'count':>6}{'seconds':>9}  exit  verdict")
        for name, source, limit in (
            ("KolektorSDD held back", held_back, 500),
            ("NEU steel", REAL / "neu-cls", options.neu_images),
        ):
            started = time.monotonic()
            done = inspectflow(
                root, "monitor", "dagm", str(source), "--model", "models:/dagm-segmenter/1",
                "--set", f"monitor.max_images={limit}",
            )  # fmt: skip
            elapsed = time.monotonic() - started
            line = done.stdout.strip() or done.stderr.strip()
            count = line.rsplit(" images against", 1)[0].rsplit(" ", 1)[-1]
            print(f"{name:<28}{count:>6}{elapsed:>9.1f}  {done.returncode:>4}  {line.split(': ', 1)[-1]}")


if __name__ == "__main__":
    main()
