"""Real inspection images (``../shared/data/real``, never copied into the repository): default settings.

The quick variants train on small subsets within a minute or two (marked ``slow``; CI runs them; the
classifiers' are in ``test_real_classification.py``, so that two workers can run them side by side). The
full runs are the figures README quotes, one ``inspectflow run`` each with no ``--set``: 10 to 25 minutes on
two cores, so they are marked ``real`` and run on demand: ``pytest -m real``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import REAL, run_steps
from inspectflow.config import build_config
from inspectflow.names import ARCHITECTURE_TAG

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real not present")


@pytest.fixture(scope="module")
def kolektor_quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    """A KolektorSDD segmenter trained for 16 epochs with default settings and registered (gate floors off).

    It learns from 20 defective and 30 clean parts drawn (seeded) across the set's 50 commutators; the other
    349 images are held back, in a folder of links yielded with register's summary.
    """
    root = tmp_path_factory.mktemp("kolektor")
    rows = pd.read_csv(REAL / "kolektorsdd-seg" / "labels.csv")
    generator = np.random.default_rng(0)
    picked = [
        stem
        for defective, count in ((1, 20), (0, 30))
        for stem in generator.choice(rows.loc[rows["defective"] == defective, "stem"], count, replace=False)
    ]
    for folder, suffix in (("images", ".jpg"), ("masks", ".png")):
        (root / "train" / folder).mkdir(parents=True)
        for stem in picked:
            shutil.copy(REAL / "kolektorsdd-seg" / folder / f"{stem}{suffix}", root / "train" / folder)
    held_back = root / "held-back"
    held_back.mkdir()
    for stem in sorted(set(rows["stem"]) - set(picked)):
        (held_back / f"{stem}.jpg").symlink_to(REAL / "kolektorsdd-seg" / "images" / f"{stem}.jpg")
    config = build_config(
        "dagm",
        [
            # A number of epochs, not a time budget: the same model on a fast host, a slow one or beside
            # another test worker (2 minutes bought 28 epochs alone and half as many beside a worker).
            "train.epochs=16",
            "train.max_minutes=15",
            "register.min_score=0",
            "register.baseline_margin=null",
            "register.max_escape_rate=null",
            "register.onnx=false",
        ],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        try:
            yield run_steps(root / "train", root / "work", config.to_dict()), held_back
        finally:
            mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_quick_kolektorsdd_defects_are_found_with_default_settings(
    kolektor_quick: tuple[dict[str, Any], Path],
) -> None:
    summary, _ = kolektor_quick
    version = MlflowClient().get_model_version(summary["model_name"], summary["version"])
    assert version.tags[ARCHITECTURE_TAG] == "unet_lite0"
    metrics, baseline = summary["metrics"], summary["baseline"]["metrics"]
    assert metrics["test/iou"] > baseline["test/iou"] + 0.05, (metrics["test/iou"], baseline["test/iou"])
    assert metrics["test/detection_tpr"] > 0


@pytest.mark.slow
def test_the_drift_watch_passes_held_back_kolektorsdd_and_flags_neu_steel(
    kolektor_quick: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    """Issue 16's measure: held-back images of the model's own data are no drift; NEU steel is, exit 3."""
    summary, held_back = kolektor_quick
    model = f"models:/{summary['model_name']}/{summary['version']}"
    # 200 of each: the verdicts (benchmarks/drift.py times 349 and 500, with ONNX, as the issue asks).
    command = [sys.executable, "-m", "inspectflow", "monitor", "dagm", "--model", model]
    command += ["--set", "monitor.max_images=200"]
    results = {}
    for name, images in (("held back", held_back), ("neu", REAL / "neu-cls")):
        started = time.monotonic()
        done = subprocess.run(
            [*command, str(images)], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        results[name] = (done.returncode, done.stdout.strip(), round(time.monotonic() - started, 1))
    print(results)  # the figures of the notes (each check's wall time, start-up included)
    assert results["held back"][0] == 0 and "no drift" in results["held back"][1], results["held back"]
    assert "200 images" in results["held back"][1]
    assert results["neu"][0] == 3 and ": drift: features" in results["neu"][1], results["neu"]
    assert "200 images" in results["neu"][1]


def run_cli(workload: str, data: Path, work: Path, *extra: str) -> dict[str, float]:
    """Runs ``inspectflow run`` with default settings; returns the finished run's metrics."""
    command = [sys.executable, "-m", "inspectflow", "run", workload, "--data", str(data)]
    command += ["--workdir", str(work)]
    # The embedded store in `work`: mlflow.set_tracking_uri below exports the URI to this process's children.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    subprocess.run([*command, *extra], check=True, cwd=work, env=env, capture_output=True, timeout=3600)
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    client = MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "status='FINISHED'")
    return run.data.metrics


@pytest.mark.slow
@pytest.mark.real
def test_neu_reaches_macro_f1_095_with_defaults(tmp_path: Path) -> None:
    metrics = run_cli("textile", REAL / "neu-cls", tmp_path)
    assert metrics["test/macro_f1"] >= 0.95


@pytest.mark.slow
@pytest.mark.real
def test_kolektorsdd_detects_defects_and_outlines_them_with_defaults(tmp_path: Path) -> None:
    metrics = run_cli("dagm", REAL / "kolektorsdd-seg", tmp_path)
    assert metrics["test/detection_tpr"] >= 0.95 and 1 - metrics["test/detection_fpr"] >= 0.95
    assert metrics["test/defect_dice"] >= 0.5


@pytest.mark.slow
@pytest.mark.real
def test_crackforest_outlines_cracks_with_defaults(tmp_path: Path) -> None:
    metrics = run_cli("cracks", REAL / "crackforest-seg", tmp_path, "--task", "segmentation")
    assert metrics["test/defect_dice"] >= 0.6


@pytest.mark.slow
@pytest.mark.real
def test_kolektorsdd_operating_point_for_a_target_recall_travels_with_the_model(tmp_path: Path) -> None:
    """Issue 16's measure: escape and false-reject rates at recall 0.95, and predict deciding the same way."""
    data = REAL / "kolektorsdd-seg"
    metrics = run_cli("dagm", data, tmp_path, "--set", "evaluate.target_recall=0.95")
    for name in ("escape_rate", "false_reject_rate"):
        assert metrics[f"test/{name}_ci_low"] <= metrics[f"test/{name}"] <= metrics[f"test/{name}_ci_high"]
    threshold = metrics["val/detection_threshold"]
    client = MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "status='FINISHED'")
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "evaluation/per_image.csv", str(tmp_path)))
    picked = pd.concat([table[table["defective"]].head(1), table[~table["defective"]].head(1)])
    defective, clean = (data / "images" / Path(name).name for name in picked["image"])
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "inspectflow", "predict", "dagm", str(defective), str(clean)]
    command += ["--workdir", str(tmp_path), "--masks", str(tmp_path / "masks")]
    done = subprocess.run(command, check=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["threshold"] for r in records] == [pytest.approx(threshold, abs=1e-6)] * 2
    assert [r["defective"] for r in records] == [r["defect_score"] > threshold for r in records]
    # The decisions and scores evaluation made for the same two test images.
    assert [r["defective"] for r in records] == picked["detected"].tolist()
    assert [r["defect_score"] for r in records] == pytest.approx(picked["defect_score"].tolist(), abs=1e-3)
