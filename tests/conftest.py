"""Shared fixtures: tiny generated datasets in each supported layout and an isolated MLflow store."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from inspectflow.config import TEXTILE_CLASSES, PipelineConfig, build_config
from inspectflow.synth.textile import synthesize_textile

TINY_SIDE = 16

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per test worker, for its step subprocesses too: two workers of two threads each on
    # two cores spin-wait in OpenMP and ran a training run three times slower than one thread each.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most slow tests first, each file's own order kept.

    README's command runs the suite on two workers a file at a time (``--dist loadfile``): started first, the
    long files finish together while the quick ones fill the gaps, instead of one worker idling at the end.
    """
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``CI`` set) a skipped test fails: .ci/run installs every tool and the data sits beside it.

    A skip on a developer's machine says what is missing (kubectl, Chromium, ../shared/data, the component
    image); in CI the same skip would hide a check that never ran.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"


@pytest.fixture(scope="session")
def kaggle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic textile set in the Kaggle h5+csv layout (48 images)."""
    root = tmp_path_factory.mktemp("kaggle")
    synthesize_textile(root, n=48, seed=3)
    return root


def write_class_folders(root: Path, per_class: int = 4, side: int = TINY_SIDE, seed: int = 0) -> Path:
    """Writes ``<root>/<class>/NNNN.png`` random non-constant grayscale images."""
    rng = np.random.default_rng(seed)
    for label in TEXTILE_CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            pixels = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / label / f"{number:04d}.png")
    return root


@pytest.fixture
def folders_dir(tmp_path: Path) -> Path:
    """Class folders of random 16x16 PNGs, 4 per class."""
    return write_class_folders(tmp_path / "folders")


@pytest.fixture
def npy_dir(tmp_path: Path) -> Path:
    """An ``X.npy``/``Y.npy`` pair: 10 random 16x16 images per class, integer labels."""
    rng = np.random.default_rng(1)
    root = tmp_path / "npy"
    root.mkdir()
    labels = np.repeat(np.arange(len(TEXTILE_CLASSES)), 10)
    np.save(root / "X.npy", rng.integers(0, 256, size=(len(labels), TINY_SIDE, TINY_SIDE, 1), dtype=np.uint8))
    np.save(root / "Y.npy", labels)
    return root


def tiny_config(*overrides: str) -> PipelineConfig:
    """Textile config for 16x16 test images and one quick epoch."""
    base = [
        f"data.classes=[{', '.join(TEXTILE_CLASSES)}]",
        f"data.image_side={TINY_SIDE}",
        f"validate.expected_side={TINY_SIDE}",
        "train.epochs=1",
        "train.batch_size=8",
        # Random pixels teach nothing: the gate's floors are tested on their own.
        "register.min_score=0",
        "register.baseline_margin=null",
        "register.onnx=false",  # the ONNX export (seconds) is tested on its own
        "register.int8=false",  # and so is its int8 engine
    ]
    return build_config("textile", [*base, *overrides])


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An isolated sqlite MLflow store, exported so step subprocesses use it too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


DAGM_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dagm-samples"
#: The real inspection sets beside the repository (never copied into it).
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def subset(source: Path, out: Path, per_folder: int, folders: list[str]) -> Path:
    """Copies the first ``per_folder`` images of some folders (class folders, or images/ and masks/)."""
    for folder in folders:
        files = sorted((source / folder).iterdir())[:per_folder]
        (out / folder).mkdir(parents=True)
        for file in files:
            shutil.copy(file, out / folder / file.name)
    return out


@pytest.fixture(scope="session")
def dagm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic DAGM set: 2 classes x 12 images of 32x32, half defective (copy it to change it)."""
    from inspectflow.synth.dagm import synthesize_dagm

    root = tmp_path_factory.mktemp("dagm")
    synthesize_dagm(root, classes=2, n=12, size=32, seed=2)
    return root


def tiny_dagm_config(*overrides: str) -> PipelineConfig:
    """DAGM config for 32x32 test images and one quick epoch on 16x16 crops."""
    base = [
        "train.model=unet",
        "train.epochs=1",
        "train.crop=16",
        "train.batch_size=4",
        "register.min_score=0",
        "register.onnx=false",
        "register.int8=false",
    ]
    floors_off = ["register.baseline_margin=null", "register.max_escape_rate=null"]
    return build_config("dagm", [*base, *floors_off, *overrides])


@pytest.fixture(scope="session")
def inserts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic insert set: Intact/ and Damaged/ folders, 16 RGB images of varying size."""
    from inspectflow.synth.inserts import synthesize_inserts

    root = tmp_path_factory.mktemp("inserts")
    synthesize_inserts(root, n=16, seed=4)
    return root


def tiny_inserts_config(*overrides: str) -> PipelineConfig:
    """Inserts config at 64 px with random weights; MobileNet features for the SVM (VGG16 is slow on CPU)."""
    base = ["data.image_side=64", "weights=random", "backbone=mobilenet_v2", "epochs=1", "repeats=3"]
    base += [
        "register.min_score=0",
        "register.baseline_margin=null",
        "register.onnx=false",
        "register.int8=false",
    ]
    return build_config("inserts", [*base, *overrides])


@pytest.fixture
def isolated_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keeps the user's ~/.config/kfp/context.json (namespace, cookies) and KF_PIPELINES_* out of tests."""
    from kfp.client import client

    monkeypatch.setattr(client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    for name in (
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
        "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME",
    ):
        monkeypatch.delenv(name, raising=False)


def run_steps(source: Path, work: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Runs the five steps in this process (no kfp), as the pipeline does; returns register's summary."""
    from inspectflow.steps.evaluate import evaluate_step
    from inspectflow.steps.ingest import ingest_step
    from inspectflow.steps.register import register_step
    from inspectflow.steps.train import train_step
    from inspectflow.steps.validate import validate_step

    run_id, _ = ingest_step(str(source), config, work / "dataset", "test-pipeline", "test-run", "test-run-id")
    validate_step(work / "dataset", config, run_id, work / "report.html")
    train_step(work / "dataset", config, run_id, work / "model")
    evaluate_step(work / "dataset", work / "model", config, run_id, work / "evaluation")
    return register_step(work / "dataset", work / "model", work / "evaluation", config, run_id)
