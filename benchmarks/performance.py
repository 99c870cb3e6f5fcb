"""Performance of every workload on this machine, printed as one table.

All figures come from one run, so the ratios between them hold on a shared, noisy machine:

* the fp32 and bf16 matmul peaks of this machine (``torch.mm`` of 2048x2048 matrices);
* for each workload's models at their default input: training images/s in fp32 and with
  ``train.precision=auto``, the FLOPs of a training step (three forward passes, each counted by
  ``torch.utils.flop_counter``) and the GFLOP/s
  achieved as a share of the peak of the precision used, inference images/s in eager PyTorch and in ONNX
  Runtime, and the data path's share of a training step (the task's crops and augmentation);
* the local kfp pipeline's overhead per step (textile n=300, 2 epochs), against the same five steps run by
  a plain script (both from a fresh interpreter, imports included);
* ``inspectflow models list`` start-up.

Run: ``python benchmarks/performance.py [--quick] [--skip-pipeline]``; the latest table is kept in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from inspectflow.config import TrainConfig
from inspectflow.models.networks import build_model, get_network
from inspectflow.models.onnx import OnnxPredictor, export_onnx
from inspectflow.steps.train import _bf16_supported, training_device
from inspectflow.tasks import get_task

#: The training device: the GPU when there is one, as in training.
DEVICE = training_device()


@dataclass(frozen=True)
class Workload:
    """A model at its default training input, as its workload trains it."""

    workload: str
    model: str
    task: str
    channels: int
    side: int  # training input side (segmentation: the crop)
    batch_size: int
    outputs: int
    source_side: int  # side of the images the data path crops from


WORKLOADS = (
    Workload("textile", "residual_cnn", "classification", 1, 64, 16, 6, 64),
    Workload("textile 128 px+", "efficientnet_lite0", "classification", 3, 160, 16, 6, 160),
    Workload("inserts finetune", "resnet18", "classification", 3, 160, 16, 2, 160),
    Workload("dagm scratch", "unet", "segmentation", 1, 256, 8, 1, 512),
    Workload("dagm", "unet_lite0", "segmentation", 1, 256, 8, 1, 512),
)


def timed(step: Callable[[], object], seconds: float, warmup: int = 2) -> float:
    """Seconds per call of ``step``, after warm-up calls, averaged over about ``seconds``."""
    for _ in range(warmup):
        step()
    calls, started = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / calls


def matmul_peak(dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of square matrix products in ``dtype``."""
    size = 2048
    a, b = (torch.rand(size, size, dtype=dtype, device=DEVICE) for _ in range(2))
    return 2 * size**3 / timed(lambda: torch.mm(a, b), seconds) / 1e9


def training_step(
    work: Workload, precision: str
) -> tuple[Callable[[], None], torch.Tensor, torch.nn.Module, Callable[[], None]]:
    """A training step of the model at its default input, as the training loop runs it."""
    loss = "bce+dice" if work.task == "segmentation" else "cross_entropy"  # each task's default
    config = TrainConfig.model_validate(
        {
            "model": work.model,
            "weights": "none",
            "batch_size": work.batch_size,
            "crop": work.side,
            "loss": loss,
        }
    )
    model = build_model(config.model, work.outputs, work.channels)
    model = model.to(DEVICE, memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    task = get_task(work.task)
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(work.batch_size, work.channels, work.source_side, work.source_side)
    if work.task == "segmentation":
        targets = (torch.rand(work.batch_size, 1, work.source_side, work.source_side) > 0.99).float()
    else:
        targets = torch.randint(0, work.outputs, (work.batch_size,))
    loss_fn = task.loss(config, targets, work.outputs)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)  # as the training loop
    batch, target = (tensor.to(DEVICE) for tensor in task.training_batch(source, targets, config, generator))

    def data() -> None:
        task.training_batch(source, targets, config, generator)[0].contiguous(
            memory_format=torch.channels_last
        )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(DEVICE.type, dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        with autocast:
            logits = model(batch.contiguous(memory_format=torch.channels_last))
        loss_fn(logits.float(), target).backward()
        optimizer.step()

    return step, batch, model, data


def measure(work: Workload, seconds: float, peaks: dict[str, float], folder: Path) -> dict[str, str]:
    """One table row: training and inference throughput, FLOP rate, data path share."""
    supported = _bf16_supported(DEVICE)
    auto = "bf16" if supported and (DEVICE.type == "cuda" or get_network(work.model).bf16_faster) else "fp32"
    fp32_step, batch, model, data = training_step(work, "fp32")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch.contiguous(memory_format=torch.channels_last))
    # A training step is taken as three forward passes (the backward pass costs two). The counter's own
    # backward count is not used: it ignores groups in convolution_backward, 40x too many for depthwise.
    flops_per_image = 3 * counter.get_total_flops() / len(batch)
    fp32_rate = len(batch) / timed(fp32_step, seconds)
    auto_step = training_step(work, auto)[0] if auto != "fp32" else fp32_step
    auto_rate = len(batch) / timed(auto_step, seconds) if auto != "fp32" else fp32_rate
    step_seconds = len(batch) / auto_rate
    data_seconds = timed(data, seconds / 4)

    model.eval()
    images = torch.rand(32 if work.task == "classification" else 4, work.channels, work.side, work.side)
    channels_last = images.to(DEVICE).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager_rate = len(images) / timed(lambda: model(channels_last), seconds)
    onnx = OnnxPredictor(export_onnx(model.cpu(), images[:2], folder / f"{work.model}.onnx"))
    onnx_rate = len(images) / timed(lambda: onnx(images), seconds)
    achieved = flops_per_image * auto_rate / 1e9
    # Inference runs fp32 in both engines: their FLOP rates against the fp32 peak show how much room is left.
    eager_share, onnx_share = (
        flops_per_image / 3 * rate / 1e9 / peaks["fp32"] for rate in (eager_rate, onnx_rate)
    )
    return {
        "workload": work.workload,
        "model @ input": f"{work.model} @ {work.side} px, batch {work.batch_size}",
        "train fp32 img/s": f"{fp32_rate:.1f}",
        "train auto img/s": f"{auto_rate:.1f} ({auto}, {auto_rate / fp32_rate:.2f}x)",
        "GFLOP/img (train step)": f"{flops_per_image / 1e9:.2f}",
        "achieved GFLOP/s": f"{achieved:.0f} ({100 * achieved / peaks[auto]:.0f}% of {auto} peak)",
        "infer eager img/s": f"{eager_rate:.1f} ({100 * eager_share:.0f}% of fp32 peak)",
        "infer ONNX img/s": f"{onnx_rate:.1f} ({onnx_rate / eager_rate:.2f}x; {100 * onnx_share:.0f}%)",
        "data path": f"{100 * data_seconds / (data_seconds + step_seconds):.1f}% of a step",
    }


IN_PROCESS = """
import os, sys, time
from pathlib import Path
started = time.perf_counter()
from inspectflow.config import build_config
from inspectflow.steps.evaluate import evaluate_step
from inspectflow.steps.ingest import ingest_step
from inspectflow.steps.register import register_step
from inspectflow.steps.train import train_step
from inspectflow.steps.validate import validate_step
from inspectflow.tracking import configure_tracking
data, work, epochs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
raw = build_config("textile", [f"train.epochs={epochs}"]).to_dict()
configure_tracking(work)
imported = time.perf_counter()
run_id, _ = ingest_step(str(data), raw, work / "dataset", "bench", "bench", "bench")
validate_step(work / "dataset", raw, run_id, work / "report.html")
train_step(work / "dataset", raw, run_id, work / "model")
evaluate_step(work / "dataset", work / "model", raw, run_id, work / "eval")
register_step(work / "dataset", work / "model", work / "eval", raw, run_id)
print("seconds", imported - started, time.perf_counter() - imported)
"""

PIPELINE = """
import sys, time
from pathlib import Path
started = time.perf_counter()
from inspectflow.config import build_config
from inspectflow.runner.local import run_local
run_local(sys.argv[1], build_config("textile", [f"train.epochs={sys.argv[3]}"]), Path(sys.argv[2]))
print("seconds", time.perf_counter() - started)
"""


def fresh(script: str, *args: str) -> list[float]:
    """Runs ``script`` in a fresh interpreter (no tracking URI of the caller's); returns what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    last = [line for line in done.stdout.splitlines() if line.startswith("seconds ")][-1]
    return [float(value) for value in last.split()[1:]]


def pipeline_overhead(n: int, epochs: int) -> dict[str, float]:
    """Wall seconds of the five steps in a script and in the local kfp pipeline, both from a fresh process."""
    from inspectflow.synth.textile import synthesize_textile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize_textile(root / "data", n=n, seed=0)
        started = time.perf_counter()
        imports, steps = fresh(IN_PROCESS, str(root / "data"), str(root / "script"), str(epochs))
        script = time.perf_counter() - started
        started = time.perf_counter()
        fresh(PIPELINE, str(root / "data"), str(root / "kfp"), str(epochs))
        pipeline = time.perf_counter() - started
    return {"script": script, "imports": imports, "steps": steps, "pipeline": pipeline}


def models_list_startup() -> float:
    """Seconds for ``inspectflow models list textile`` on an empty folder."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "inspectflow", "models", "list", "textile", "--workdir", tmp],
            env=env,
            capture_output=True,
        )
        return time.perf_counter() - started


def markdown(rows: list[dict[str, str]]) -> str:
    """A Markdown table of the rows (pipes inside cells are not expected)."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[key] for key in header) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings (noisier figures)")
    parser.add_argument("--skip-pipeline", action="store_true", help="no pipeline or start-up figures")
    parser.add_argument("--models", nargs="+", choices=[w.model for w in WORKLOADS], help="only these rows")
    parser.add_argument("--n", type=int, default=300, help="images in the pipeline run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the pipeline run")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 4.0
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    print(f"{cpu}; {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads")
    if DEVICE.type == "cuda":
        print(f"training and eager inference on {torch.cuda.get_device_name()}; ONNX Runtime on the CPU")
    peaks = {"fp32": matmul_peak(torch.float32, seconds), "bf16": matmul_peak(torch.bfloat16, seconds)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for work in WORKLOADS:
            if args.models and work.model not in args.models:
                continue
            rows.append(measure(work, seconds, peaks, Path(folder)))
            print(f"measured {work.model}", file=sys.stderr)
    print(markdown(rows))
    if args.skip_pipeline:
        return
    figures = pipeline_overhead(args.n, args.epochs)
    per_step = (figures["pipeline"] - figures["script"]) / 5
    print(
        f"\npipeline (textile n={args.n}, {args.epochs} epochs, fresh interpreters): script "
        f"{figures['script']:.1f} s (imports {figures['imports']:.1f} s, steps {figures['steps']:.1f} s), "
        f"local kfp pipeline {figures['pipeline']:.1f} s = {figures['pipeline'] / figures['script']:.2f}x, "
        f"{per_step:.1f} s per step on top"
    )
    print(f"inspectflow models list start-up: {models_list_startup():.1f} s")


if __name__ == "__main__":
    main()
