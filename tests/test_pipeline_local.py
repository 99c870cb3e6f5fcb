"""End to end: the ``inspectflow`` CLI runs the kfp pipeline with ``kfp.local.SubprocessRunner``."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image

from conftest import TINY_SIDE, write_class_folders
from inspectflow.config import TEXTILE_CLASSES

pytestmark = pytest.mark.slow
TINY = [f"data.image_side={TINY_SIDE}", f"validate.expected_side={TINY_SIDE}", "train.epochs=1"]
# Random pixels teach nothing: these tests are about the pipeline's mechanics, not the gate's floors.
NO_FLOORS = ["register.min_score=0", "register.baseline_margin=null"]
TINY += NO_FLOORS


def inspectflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the embedded default
    command = [sys.executable, "-m", "inspectflow", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)


def run_textile(data: Path, workdir: Path, overrides: list[str]) -> subprocess.CompletedProcess[str]:
    sets = [arg for item in overrides for arg in ("--set", item)]
    return inspectflow("run", "textile", "--data", str(data), "--workdir", str(workdir), *sets)


def registry(workdir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_pipeline_runs_and_registers_a_champion(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "data", per_class=10, side=TINY_SIDE)
    result = run_textile(data, tmp_path / "work", TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "textile-classifier version 1 -> @champion" in result.stdout
    assert re.search(r"MLflow run:\s+[0-9a-f]{32}", result.stdout)
    client = registry(tmp_path / "work")
    version = client.get_model_version_by_alias("textile-classifier", "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags["kfp.pipeline_run_name"].startswith("inspectflow-textile-")
    assert run.data.tags["gate.decision"] == "promoted"


def test_a_corrupt_image_fails_the_run_naming_the_file(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "data", per_class=10, side=TINY_SIDE)
    (data / "hole" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    before = tree_digest(data)
    result = run_textile(data, tmp_path / "work", TINY)
    assert result.returncode != 0
    assert "hole/0003.png" in result.stderr and "cannot be decoded" in result.stderr
    with pytest.raises(MlflowException):
        registry(tmp_path / "work").get_registered_model("textile-classifier")
    assert tree_digest(data) == before


def test_a_label_outside_the_class_set_fails_naming_the_row(kaggle_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(kaggle_dir, data)
    table = pd.read_csv(data / "train64.csv")
    table.loc[3, "indication_type"] = "stain"
    table.to_csv(data / "train64.csv", index=False)
    classes = f"data.classes=[{', '.join(TEXTILE_CLASSES)}]"  # named: a label outside them is an error
    result = run_textile(data, tmp_path / "work", ["train.epochs=1", classes])
    assert result.returncode != 0
    assert f"train64.h5[{table.loc[3, 'index']}]" in result.stderr and "stain" in result.stderr
    with pytest.raises(MlflowException):
        registry(tmp_path / "work").get_registered_model("textile-classifier")


def test_acceptance_demo_data_reaches_090_and_a_rerun_is_not_promoted(tmp_path: Path) -> None:
    """The issue's 'done when': synth 600 images, 3 epochs, champion with accuracy >= 0.9; rerun gated."""
    data, work = tmp_path / "demo", tmp_path / "work"
    synth = inspectflow("synth", "textile", "--out", str(data), "--n", "600", "--seed", "1")
    assert synth.returncode == 0, synth.stderr
    first = run_textile(data, work, ["train.epochs=3"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    accuracy = float(re.search(r"test_accuracy:\s+([0-9.]+)", first.stdout).group(1))
    assert accuracy >= 0.9, first.stdout[-2000:]
    assert "-> @champion" in first.stdout

    second = run_textile(data, work, ["train.epochs=3"])
    assert second.returncode == 0, second.stderr[-3000:]
    client = registry(work)
    assert str(client.get_model_version_by_alias("textile-classifier", "champion").version) == "1"
    latest = client.get_model_version("textile-classifier", "2")
    assert latest.aliases == ["challenger"]
    assert latest.tags["gate.decision"] == "rejected" and latest.tags["gate.reason"]


def test_dagm_pipeline_registers_a_segmenter_and_refuses_a_bad_mask(dagm_dir: Path, tmp_path: Path) -> None:
    tiny = ["train.model=unet", "train.epochs=1", "train.crop=16", "train.batch_size=4", *NO_FLOORS]
    result = inspectflow(
        "run",
        "dagm",
        "--data",
        str(dagm_dir),
        "--workdir",
        str(tmp_path / "work"),
        *[a for o in tiny for a in ("--set", o)],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "dagm-segmenter version 1 -> @champion" in result.stdout
    version = registry(tmp_path / "work").get_model_version_by_alias("dagm-segmenter", "champion")
    assert version.tags["gate.primary_metric"] == "iou"

    bad = tmp_path / "bad"
    shutil.copytree(dagm_dir, bad)
    mask = sorted((bad / "Class2" / "Test" / "Label").glob("*_label.PNG"))[0]
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    before = tree_digest(bad)
    failed = inspectflow(
        "run",
        "dagm",
        "--data",
        str(bad),
        "--workdir",
        str(tmp_path / "badwork"),
        *[a for o in tiny for a in ("--set", o)],
    )
    assert failed.returncode != 0
    assert f"Class2/Test/{mask.name.replace('_label', '')}" in failed.stderr
    with pytest.raises(MlflowException):
        registry(tmp_path / "badwork").get_registered_model("dagm-segmenter")
    assert tree_digest(bad) == before


def test_acceptance_dagm_synthetic_reaches_iou_050(tmp_path: Path) -> None:
    """The DAGM issue's 'done when': 2 classes, 200 images of 256 px each, a few minutes of training."""
    data, work = tmp_path / "dagm", tmp_path / "work"
    synth = inspectflow("synth", "dagm", "--out", str(data), "--classes", "2", "--n", "200", "--size", "256")
    assert synth.returncode == 0, synth.stderr
    # The recipe that issue measured: our U-Net from scratch on 128 px crops.
    recipe = ["train.model=unet", "train.epochs=10", "train.crop=128", "train.lr=0.005", "train.batch_size=4"]
    recipe += ["train.precision=fp32"]
    sets = [arg for item in recipe for arg in ("--set", item)]
    result = inspectflow("run", "dagm", "--data", str(data), "--workdir", str(work), *sets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    iou = float(re.search(r"test_iou:\s+([0-9.]+)", result.stdout).group(1))
    assert iou >= 0.5, result.stdout[-2000:]
    assert "dagm-segmenter version 1 -> @champion" in result.stdout


def test_acceptance_inserts_from_random_weights_reach_090_and_serve_paths(tmp_path: Path) -> None:
    """The inserts issue's 'done when': ResNet18 fine-tuned from random weights on 300 synthetic inserts."""
    import mlflow

    data, work = tmp_path / "inserts", tmp_path / "work"
    assert inspectflow("synth", "inserts", "--out", str(data), "--n", "300").returncode == 0
    result = inspectflow(
        "run", "inserts", "--data", str(data), "--workdir", str(work),
        "--set", "method=finetune", "--set", "weights=none",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert float(re.search(r"test_accuracy:\s+([0-9.]+)", result.stdout).group(1)) >= 0.9
    assert "inserts-classifier version 1 -> @champion" in result.stdout
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/inserts-classifier@champion")
    paths = [str(p) for p in sorted((data / "Damaged").iterdir())[:3]]
    predictions = model.predict(paths)
    assert len(predictions) == 3 and set(predictions["label"]) <= {"Intact", "Damaged"}
