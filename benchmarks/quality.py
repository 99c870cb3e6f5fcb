"""Quality on real inspection data: each real set with default settings, next to its trivial baseline.

For every set in ``../shared/data/real`` (or the ones named with ``--sets``) this trains the workload's
defaults in-process (ingest, train, evaluate: what ``inspectflow run`` does, without the kfp overhead) and
prints one row: the primary score on the test split, the trivial baseline's (majority class, empty mask),
frozen EfficientNet-Lite0 features + a class-balanced RBF SVM on the same split (classification), the
training minutes and the settings ``auto`` became. Segmentation rows also give image-level detection at the
threshold picked on validation, as the pipeline picks it. Usage::

    .venv/bin/python benchmarks/quality.py [--sets neu-cls casting] [--max-minutes 10]

Without ``--max-minutes`` each set trains for its task's default budget (10 minutes for classification,
15 for segmentation).
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
#: Each real set: its task and the figure a quality engineer reads first.
SETS = {
    "neu-cls": ("classification", "macro_f1"),
    "casting": ("classification", "macro_f1"),
    "kolektorsdd-seg": ("segmentation", "defect_dice"),
    "crackforest-seg": ("segmentation", "defect_dice"),
}


def feature_svm_score(dataset: Dataset) -> float:
    """Macro-F1 of frozen EfficientNet-Lite0 features + a class-balanced RBF SVM on the test split."""
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from inspectflow.models.backbones import build_extractor, extract_features

    extractor, _ = build_extractor("efficientnet_lite0", "imagenet", None)
    features = extract_features(extractor, dataset.images, 32)
    train_x, train_y = features[(dataset.manifest["split"] == "train").to_numpy()], dataset.split("train")[1]
    test_x, test_y = features[(dataset.manifest["split"] == "test").to_numpy()], dataset.split("test")[1]
    svm = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced"))
    svm.fit(train_x, train_y)
    return float(f1_score(test_y, svm.predict(test_x), average="macro"))


def measure(name: str, max_minutes: float | None) -> dict[str, str]:
    task_name, metric = SETS[name]
    overrides = [] if max_minutes is None else [f"train.max_minutes={max_minutes}"]
    config = build_config(name.split("-")[0], overrides, task=task_name)
    dataset = ingest(REAL / name, config)
    task = get_task(task_name)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:
        result = train(task, dataset, config.train, Path(checkpoints))
    minutes = (time.perf_counter() - started) / 60
    evaluate_config = config.evaluate.applying(
        task.thresholds(config.evaluate, result.model, *result.validation)
    )
    scores = task.evaluate(result.model, dataset, evaluate_config)
    baseline = task.baseline(dataset, evaluate_config)
    resolved = result.config
    assert resolved is not None
    row = {
        "set": name,
        "metric": metric,
        "score": f"{getattr(scores, metric):.4f}",
        "baseline": f"{getattr(baseline, metric):.4f}",
        "features+svm": f"{feature_svm_score(dataset):.4f}" if task_name == "classification" else "-",
        "train min": f"{minutes:.1f}",
        "epochs": str(len(result.history)),
        "settings": f"{resolved.model} {resolved.weights} {resolved.precision} "
        f"{dataset.info.preprocess.height}x{dataset.info.preprocess.width}",
    }
    if task_name == "segmentation":
        row["detection"] = f"TPR {scores.detection_tpr:.3f} FPR {scores.detection_fpr:.3f}"  # type: ignore[attr-defined]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=[s for s in SETS if (REAL / s).is_dir()], choices=SETS)
    parser.add_argument("--max-minutes", type=float, default=None)
    args = parser.parse_args()
    rows = []
    for name in args.sets:
        rows.append(measure(name, args.max_minutes))
        print(rows[-1], flush=True)  # a set can take 15 minutes: show each as it ends
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row.get(c, "").ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    main()
