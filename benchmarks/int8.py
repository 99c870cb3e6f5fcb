"""int8 against fp32 on real sets, in one run: what ``register`` measures before it keeps an int8 engine.

For each set, a model of the task's default network is trained in-process as the train step trains it
(fine-tuning forced for the classifiers: a features+SVM model has no ONNX export, so no int8 engine), its
ONNX export quantized (``serving.quantize``: static, calibrated on 64 training images), and both run on the
test split: the share of test images decided alike, the primary metric under each, and images/s of fp32
and int8 ONNX Runtime (and eager PyTorch) on the same images. Usage::

    .venv/bin/python benchmarks/int8.py [--sets neu-cls casting kolektorsdd-seg] [--max-minutes 4]

The latest table is kept in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality import REAL, SETS, fit

from inspectflow.config import build_config
from inspectflow.imaging import to_tensor
from inspectflow.models.artifact import ModelSpec
from inspectflow.models.onnx import export_onnx
from inspectflow.serving.quantize import check_int8
from inspectflow.steps.ingest import ingest
from inspectflow.tasks import get_task
from inspectflow.tasks.base import logits_in_batches


def eager_rate(model: object, images: object) -> float:
    """Images/s of the eager PyTorch model on the test split (batches of 16, after a warm-up)."""
    logits_in_batches(model, images[:8], 8)  # type: ignore[arg-type,index]
    started = time.perf_counter()
    logits_in_batches(model, images, 16)  # type: ignore[arg-type]
    return len(images) / (time.perf_counter() - started)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", default=["neu-cls", "casting", "kolektorsdd-seg"])
    parser.add_argument("--max-minutes", type=float, default=4.0)
    args = parser.parse_args()
    print(
        "| set | network, size | test images | agreement | metric fp32 / int8 | images/s eager, fp32, int8 |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.sets:
        task_name, metric, extra = SETS[name]
        settings = [f"train.max_minutes={args.max_minutes}", *extra]
        if task_name == "classification":
            settings.append("train.method=finetune")
        config = build_config(name.split("-")[0], [*settings], task=task_name)
        dataset = ingest(REAL / name, config)
        task = get_task(task_name)
        model, method, thresholds, epochs = fit(task, dataset, config)
        evaluate = config.evaluate.applying(thresholds)
        spec = _spec(task, dataset, config, thresholds)
        test = to_tensor(dataset.split("test")[0])
        with tempfile.TemporaryDirectory() as folder:
            onnx = export_onnx(model, test[:2], Path(folder) / "model.onnx")  # type: ignore[arg-type]
            check, _ = check_int8(onnx, dataset, spec, task, evaluate, metric, 0.995)
            fp32_rate, int8_rate = _rates(onnx, Path(folder) / "model.int8.onnx", test)
        size = "x".join(str(side) for side in test.shape[2:])
        print(
            f"| {name} | {type(model).__name__} ({method}), {size}, {epochs} epochs | {check.test_images} "
            f"| {check.agreement:.2%} "
            f"| {metric} {check.fp32_score:.4f} / {check.int8_score:.4f} "
            f"| {eager_rate(model, test):.1f} / {fp32_rate:.1f} / {int8_rate:.1f} ({check.speedup:.2f}x) |",
            flush=True,
        )


def _rates(fp32: Path, int8: Path, images: object) -> tuple[float, float]:
    from inspectflow.models.onnx import OnnxPredictor

    return eager_rate(OnnxPredictor(fp32), images), eager_rate(OnnxPredictor(int8), images)


def _spec(task: object, dataset: object, config: object, thresholds: dict[str, float]) -> ModelSpec:
    """The spec the train step would keep: the classes, good class and thresholds decisions need."""
    info = dataset.info  # type: ignore[attr-defined]
    return ModelSpec(
        "benchmark",
        list(info.classes),
        info.preprocess,
        task=task.name,  # type: ignore[attr-defined]
        good_class=info.good_class,
        thresholds=thresholds,
    )


if __name__ == "__main__":
    main()
