"""Textile benchmark: training and inference throughput, and the local pipeline's overhead.

Prints figures measured in one run, so ratios between them hold even on a shared, noisy machine:

* training images/s of the residual CNN, channels-last against the default memory format;
* inference images/s;
* the local kfp pipeline's wall time against the same five steps called in-process; the difference is
  what the pipeline costs on top of the steps' own compute (subprocesses, imports, artifact copies).

Run: ``python benchmarks/textile.py [--n 300] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import torch

from inspectflow.config import build_config
from inspectflow.models.residual_cnn import ResidualCNN


def images_per_second(step: object, batch: torch.Tensor, repeats: int) -> float:
    """Times ``step(batch)`` after two warm-up calls."""
    assert callable(step)
    for _ in range(2):
        step(batch)
    started = time.perf_counter()
    for _ in range(repeats):
        step(batch)
    return repeats * len(batch) / (time.perf_counter() - started)


def throughput(batch_size: int, repeats: int) -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 6, (batch_size,))
    for channels_last in (False, True):
        model = ResidualCNN(num_classes=6)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
        batch = torch.rand(batch_size, 1, 64, 64).contiguous(memory_format=memory_format)
        optimizer = torch.optim.AdamW(model.parameters())

        def train_step(
            x: torch.Tensor, model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer
        ) -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), labels).backward()
            optimizer.step()

        train_rate = images_per_second(train_step, batch, repeats)
        model.eval()
        big = torch.rand(128, 1, 64, 64).contiguous(memory_format=memory_format)
        with torch.no_grad():
            infer_rate = images_per_second(model, big, repeats)
        layout = "channels_last" if channels_last else "contiguous   "
        print(f"residual_cnn {layout} train {train_rate:8.0f} img/s   inference {infer_rate:8.0f} img/s")


def pipeline_overhead(n: int, epochs: int) -> None:
    from inspectflow.local import run_local
    from inspectflow.steps.evaluate import evaluate_step
    from inspectflow.steps.ingest import ingest_step
    from inspectflow.steps.register import register_step
    from inspectflow.steps.train import train_step
    from inspectflow.steps.validate import validate_step
    from inspectflow.synth.textile import synthesize_textile
    from inspectflow.tracking import configure_tracking

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize_textile(root / "data", n=n, seed=0)
        config = build_config("textile", [f"train.epochs={epochs}"])
        raw = config.to_dict()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        configure_tracking(root / "inproc")
        work = root / "inproc"
        timings: dict[str, float] = {}
        started = time.perf_counter()
        run_id, _ = ingest_step(str(root / "data"), raw, work / "dataset", "bench", "bench", "bench")
        timings["ingest"] = time.perf_counter() - started
        steps = [
            ("validate", lambda: validate_step(work / "dataset", raw, run_id, work / "report.html")),
            ("train", lambda: train_step(work / "dataset", raw, run_id, work / "model")),
            ("evaluate", lambda: evaluate_step(work / "dataset", work / "model", raw, run_id, work / "eval")),
            ("register", lambda: register_step(work / "dataset", work / "model", work / "eval", raw, run_id)),
        ]
        for name, step in steps:
            started = time.perf_counter()
            step()
            timings[name] = time.perf_counter() - started
        compute = sum(timings.values())

        os.environ.pop("MLFLOW_TRACKING_URI", None)
        started = time.perf_counter()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # kfp echoes every step's log
            run_local(str(root / "data"), config, root / "kfp")
        wall = time.perf_counter() - started

    print("in-process step times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"steps' own compute {compute:.1f} s; local kfp pipeline wall {wall:.1f} s")
    print(f"pipeline overhead {wall - compute:.1f} s ({(wall - compute) / 5:.1f} s per step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images in the pipeline run")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    throughput(args.batch_size, args.repeats)
    pipeline_overhead(args.n, args.epochs)


if __name__ == "__main__":
    main()
