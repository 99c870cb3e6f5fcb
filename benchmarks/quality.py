"""Quality on real inspection data: each real set with default settings, next to its trivial baseline.

For every set in ``../shared/data/real`` (or the ones named with ``--sets``) this trains the workload's
defaults in-process (ingest, train, evaluate: what ``inspectflow run`` does, without the kfp overhead) and
prints one row: the primary score on the test split with its 95% bootstrap interval, the trivial
baseline's (majority class, empty mask), frozen EfficientNet-Lite0 features + a class-balanced RBF SVM on
the same split (classification, macro-F1), the method ``train.method=auto`` chose, the training minutes and
the working size. Segmentation rows also give image-level detection at the threshold picked on validation,
as the pipeline picks it. Usage::

    .venv/bin/python benchmarks/quality.py [--sets neu-cls casting] [--max-minutes 10] [--set key=value]
    .venv/bin/python benchmarks/quality.py --sets elpv-mono --subset 250   # a stratified subset
    .venv/bin/python benchmarks/quality.py --sets casting --subset 100 --candidates
    .venv/bin/python benchmarks/quality.py --sets crackforest-seg --root /tmp/varied  # see varied_sizes.py

``--candidates`` also trains each candidate of ``train.method=auto`` by hand (its settings forced, trained
as that method trains alone) and prints a row for each: what the default is measured against.

Without ``--max-minutes`` each set trains for its task's default budget (10 minutes for classification,
15 for segmentation).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from inspectflow.config import EvaluateConfig, PipelineConfig, build_config
from inspectflow.data.dataset import Dataset
from inspectflow.metrics.intervals import score_intervals
from inspectflow.models.artifact import Predictor
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import CANDIDATE_SETTINGS, choose_method, train, train_feature_svm
from inspectflow.tasks import get_task
from inspectflow.tasks.base import Task
from inspectflow.tasks.segmentation import predict_masks

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
#: Each real set: its task, the figure a quality engineer reads first, and what its user says of the data.
SETS: dict[str, tuple[str, str, list[str]]] = {
    "neu-cls": ("classification", "macro_f1", []),
    "casting": ("classification", "macro_f1", []),
    # Graded levels of defect probability: ordinal, judged by quadratic-weighted kappa.
    "elpv-mono": ("classification", "kappa", ["data.ordinal=true", "register.primary_metric=kappa"]),
    "kolektorsdd-seg": ("segmentation", "defect_dice", []),
    "crackforest-seg": ("segmentation", "defect_dice", []),
}

#: ``train.method=auto``'s candidates, each as the settings that train it by hand.
CANDIDATES: dict[str, list[str]] = {
    name: [
        f"train.{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in settings.items()
    ]
    for name, settings in CANDIDATE_SETTINGS.items()
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


def stratified_subset(source: Path, size: int, into: Path, seed: int = 0) -> Path:
    """Copies a seeded, stratified subset of ``size`` images of a class-folder set into ``into``."""
    rng = np.random.default_rng(seed)
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    files = {folder.name: sorted(f for f in folder.iterdir() if f.is_file()) for folder in folders}
    total = sum(len(found) for found in files.values())
    for label, found in files.items():
        (into / label).mkdir(parents=True)
        count = max(2, round(size * len(found) / total))
        for file in rng.choice(np.array(found, dtype=object), size=count, replace=False):
            shutil.copy(file, into / label / file.name)
    return into


def fit(task: Task, dataset: Dataset, config: PipelineConfig) -> tuple[Predictor, str, dict[str, float], int]:
    """Trains as the train step does: the model, the method that trained it, its thresholds, epochs."""
    chosen = choose_method(task, dataset, config) if config.train.method == "auto" else None
    settings = chosen.config if chosen else config.train
    if settings.method == "features+svm":
        classifier, _, _, _ = train_feature_svm(dataset, settings)
        return classifier, f"features + {settings.learner()} ({settings.layer or 'pool'})", {}, 0
    with tempfile.TemporaryDirectory() as checkpoints:
        result = (
            chosen.trained if chosen and chosen.trained else train(task, dataset, settings, Path(checkpoints))
        )
    thresholds = task.thresholds(config.evaluate, result.model, *result.validation)
    method = "finetune head-only" if settings.freeze_backbone else "finetune"
    return result.model, method, thresholds, len(result.history)


def measure(
    name: str,
    max_minutes: float | None,
    extra: list[str] | None = None,
    subset: int | None = None,
    root: Path = REAL,
) -> dict[str, str]:
    task_name, metric, settings = SETS[name]
    budget = [] if max_minutes is None else [f"train.max_minutes={max_minutes}"]
    config = build_config(name.split("-")[0], [*settings, *budget, *(extra or [])], task=task_name)
    with tempfile.TemporaryDirectory() as folder:
        source = (
            root / name if subset is None else stratified_subset(root / name, subset, Path(folder) / name)
        )
        dataset = ingest(source, config)
    task = get_task(task_name)
    started = time.perf_counter()
    model, method, thresholds, epochs = fit(task, dataset, config)
    minutes = (time.perf_counter() - started) / 60
    evaluate_config = config.evaluate.applying(thresholds)
    scores = task.evaluate(model, dataset, evaluate_config)
    interval = score_intervals(scores, [metric])[metric]
    baseline = task.baseline(dataset, evaluate_config)
    preprocess = dataset.info.preprocess
    row = {
        "set": name if subset is None else f"{name} ({subset} images)",
        "metric": metric,
        "score": f"{interval.value:.4f} ({interval.low:.3f}-{interval.high:.3f})",
        "baseline": f"{getattr(baseline, metric):.4f}",
        "features+svm": f"{feature_svm_score(dataset):.4f}" if task_name == "classification" else "-",
        "method": method,
        "train min": f"{minutes:.1f}",
        "epochs": str(epochs),
        "size": f"{preprocess.height}x{preprocess.width}",
    }
    if metric != "macro_f1" and task_name == "classification":
        row["macro_f1"] = f"{scores.macro_f1:.4f}"  # type: ignore[attr-defined]
    if task_name == "segmentation":
        tpr, fpr = scores.detection_tpr, scores.detection_fpr  # type: ignore[attr-defined]
        row["detection"] = f"TPR {tpr:.3f} FPR {fpr:.3f}"
        row["iou"] = f"{scores.iou:.4f}"  # type: ignore[attr-defined]
        row["dice"] = f"{scores.dice:.4f}"  # type: ignore[attr-defined]
        if root != REAL and (REAL / name / "masks").is_dir():
            row["iou vs original masks"] = (
                f"{iou_on_originals(model, dataset, evaluate_config, REAL / name):.4f}"
            )
    return row


def iou_on_originals(model: Predictor, dataset: Dataset, config: EvaluateConfig, original: Path) -> float:
    """Pooled IoU of a rescaled copy's test predictions against the original set's masks.

    Each prediction is restored onto its image and enlarged to the original's size: the copy's score with
    the truth it was made from, not with the copy's resampled masks (which themselves differ from it).
    """
    from PIL import Image

    images, _ = dataset.split("test")
    predicted, _ = predict_masks(model, images, config.batch_size, config.mask_threshold)
    rows = dataset.manifest[dataset.manifest["split"] == "test"]
    masks = {path.stem: path for path in (original / "masks").iterdir()}
    both = union = 0
    for mask, source, height, width in zip(
        predicted, rows["source"], rows["height"], rows["width"], strict=True
    ):
        truth = np.asarray(Image.open(masks[Path(source).stem]).convert("L")) > 127
        on_image = dataset.info.preprocess.restore(mask, int(height), int(width)).astype(np.uint8)
        enlarged = (
            np.asarray(Image.fromarray(on_image).resize(truth.shape[::-1], Image.Resampling.NEAREST)) > 0
        )
        both += int((enlarged & truth).sum())
        union += int((enlarged | truth).sum())
    return both / union if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=None, choices=SETS, help="default: those under --root")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--set", action="append", default=[], help="a setting for every set, as in --set")
    parser.add_argument("--subset", type=int, default=None, help="a stratified subset of this many images")
    parser.add_argument("--root", type=Path, default=REAL, help="where the sets are (varied_sizes.py copies)")
    parser.add_argument("--candidates", action="store_true", help="also each auto candidate by hand")
    parser.add_argument("--only-candidates", action="store_true", help="the candidates, not the default")
    args = parser.parse_args()
    rows = []
    for name in args.sets or [s for s in SETS if (args.root / s).is_dir()]:
        by_hand = (args.candidates or args.only_candidates) and SETS[name][0] == "classification"
        hand = list(CANDIDATES.values()) if by_hand else []
        for settings in hand if args.only_candidates else [[], *hand]:
            rows.append(measure(name, args.max_minutes, [*args.set, *settings], args.subset, args.root))
            print(rows[-1], flush=True)  # a set can take 15 minutes: show each as it ends
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row.get(c, "").ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    main()
