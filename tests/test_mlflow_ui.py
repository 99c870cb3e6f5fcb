"""The MLflow UI as a user opens it: a real ``mlflow server`` and a real headless Chromium.

Two textile runs that differ in one setting and a DAGM run go into a store; the browser renders the runs
list, the chart view and a run's overlay. Screenshots are kept in ``test-artifacts/mlflow-ui/``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import run_steps, tiny_config, tiny_dagm_config

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "mlflow-ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ui(tracking: str, tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` over the test's store; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def browse(url: str, tmp_path: Path, screenshot: str) -> str:
    """Renders ``url`` in headless Chromium: saves a screenshot, returns the rendered page's text."""
    assert CHROMIUM, "Chromium (Debian package chromium) is needed"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    common += [
        "--window-size=1600,1300",
        "--virtual-time-budget=25000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]
    shot = subprocess.run(
        [*common, f"--screenshot={ARTIFACTS / screenshot}", url], capture_output=True, text=True, timeout=120
    )
    assert (ARTIFACTS / screenshot).is_file(), shot.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    text = re.sub(r"(\s*\|\s*)+", " | ", re.sub(r"<[^>]+>", " | ", dom))
    (ARTIFACTS / screenshot).with_suffix(".txt").write_text(text)
    return text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium); .ci/run installs it")
def test_runs_are_told_apart_charts_open_on_scores_and_overlays_are_images(
    ui: str, npy_dir: Path, dagm_dir: Path, tmp_path: Path
) -> None:
    plain = run_steps(npy_dir, tmp_path / "plain", tiny_config().to_dict())
    faster = run_steps(npy_dir, tmp_path / "faster", tiny_config("train.lr=0.01").to_dict())
    segmenter = run_steps(dagm_dir, tmp_path / "dagm", tiny_dagm_config().to_dict())
    client = MlflowClient()
    names = [client.get_run(s["mlflow_run_id"]).info.run_name for s in (plain, faster)]
    assert names[0] != names[1] and "lr=0.01" in names[1] and "lr=" not in names[0], names
    textile = client.get_experiment_by_name("textile").experiment_id

    runs = browse(f"{ui}/#/experiments/{textile}/runs", tmp_path, "textile-runs.png")
    assert names[0] in runs and names[1] in runs and "Training runs" in runs

    charts = browse(
        f"{ui}/#/experiments/{textile}/runs?compareRunsMode=CHART", tmp_path, "textile-charts.png"
    )
    sections = re.findall(r"\| ([\w/]+) \| \(\d+\) \| Add chart", charts)
    assert sections and sections[0] == "test" and "val" in sections, sections
    assert sections.index("val") < sections.index("visuals"), sections  # scores before pictures

    dagm_run = segmenter["mlflow_run_id"]
    images = [a.path for a in client.list_artifacts(dagm_run, "images")]
    assert any(path.startswith("images/visuals~overlays~worst_1+step+0") for path in images), images
    dagm = client.get_experiment_by_name("dagm").experiment_id
    overlay = browse(
        f"{ui}/#/experiments/{dagm}/runs/{dagm_run}/artifacts/evaluation/overlays/worst_1.png",
        tmp_path,
        "dagm-overlay.png",
    )
    assert "worst_1.png" in overlay
    dagm_charts = browse(f"{ui}/#/experiments/{dagm}/runs?compareRunsMode=CHART", tmp_path, "dagm-charts.png")
    assert "visuals/overlays" in dagm_charts
