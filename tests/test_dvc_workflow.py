"""The data-versioning and model-lifecycle workflow on a clean clone, as README tells a newcomer to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from inspectflow.lineage import data_version

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
MODEL = "textile-classifier"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean clone of the committed repository, with the README's data command run in it."""
    root = tmp_path_factory.mktemp("dvc") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True)
    sh(root, "inspectflow", "data", "demo")
    return root


def sh(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs a command the way a user's shell would, with this environment's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the embedded default
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["INSPECTFLOW_ACTOR"] = "ci@inspectflow"
    # `dvc exp run` commits the experiment to a git ref: CI machines may have no git identity.
    for role in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{role}_NAME", "inspectflow CI")
        env.setdefault(f"GIT_{role}_EMAIL", "ci@inspectflow.invalid")
    result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def registry(clone: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def locked_md5(clone: Path) -> str:
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    (dep,) = [d for d in lock["stages"]["train@textile"]["deps"] if d["path"] == "data/textile"]
    return str(dep["md5"])


def test_demo_data_is_the_version_data_dvc_records(clone: Path) -> None:
    status = sh(clone, "dvc", "status", "data.dvc")
    assert "changed" not in status.stdout, status.stdout


def test_repro_trains_and_the_champion_carries_the_locked_data_version(clone: Path) -> None:
    sh(clone, "dvc", "repro", "train@textile")
    champion = registry(clone).get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["data.dvc_md5"] == locked_md5(clone)
    assert champion.tags["git.commit"] == sh(clone, "git", "rev-parse", "HEAD").stdout.strip()
    assert champion.tags["kfp.pipeline_name"] == "inspectflow-textile"
    assert champion.tags["version.torch"].startswith("2.13.0")
    assert json.loads((clone / "metrics" / "textile.json").read_text())["test/accuracy"] >= 0.9
    assert (clone / "plots" / "textile" / "training.csv").read_text().startswith("epoch,")
    lineage = sh(clone, "inspectflow", "lineage", f"models:/{MODEL}@champion").stdout
    assert locked_md5(clone) in lineage and "dvc.lock:train@textile" in lineage


def test_retrain_is_a_no_op_on_unchanged_data(clone: Path) -> None:
    result = sh(clone, "inspectflow", "retrain", "textile", "--params", "params.yaml")
    assert "nothing to retrain" in result.stdout
    assert len(registry(clone).search_model_versions(f"name='{MODEL}'")) == 1


def test_an_experiment_registers_a_challenger_and_leaves_the_champion(clone: Path) -> None:
    sh(clone, "git", "add", "dvc.lock", "metrics", "plots")  # README: commit the baseline
    sh(clone, "git", "commit", "--quiet", "-m", "textile baseline")
    sh(clone, "dvc", "exp", "run", "-S", "textile.train.lr=0.01", "-n", "faster-lr", "train@textile")
    client = registry(clone)
    assert champion(client) == "1"
    version = client.get_model_version(MODEL, "2")
    assert version.aliases == ["challenger"] and version.tags["dvc.experiment"] == "faster-lr"
    assert version.tags["gate.decision"] in ("held", "rejected"), version.tags["gate.reason"]
    experiment = client.get_experiment_by_name("textile")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 2
    assert "DVC experiment faster-lr" in sh(clone, "inspectflow", "lineage", f"models:/{MODEL}/2").stdout
    metrics = json.loads((clone / "metrics" / "textile.json").read_text())
    assert all(name.startswith("test/") for name in metrics), metrics  # scores only
    diff = sh(clone, "dvc", "metrics", "diff", "--all").stdout
    assert "metrics/textile.json" in diff and "test/accuracy" in diff
    table = sh(clone, "inspectflow", "compare", "textile").stdout
    assert "train.lr" in table and "*" in table


def test_promote_rollback_promote_leaves_four_audit_entries(clone: Path) -> None:
    client = registry(clone)
    assert champion(client) == "1"
    sh(clone, "inspectflow", "models", "promote", "textile", "2", "--reason", "line 3 trial")
    assert champion(client) == "2"
    sh(clone, "inspectflow", "models", "rollback", "textile", "--reason", "false rejects on line 3")
    assert champion(client) == "1"
    sh(clone, "inspectflow", "models", "promote", "textile", "2", "--reason", "retrial after the fix")
    assert champion(client) == "2"
    history = sh(clone, "inspectflow", "models", "history", "textile").stdout
    # seq, date, time, action, alias, ...: the moves of the champion alias
    champion_moves = [line for line in history.splitlines()[2:] if line.split()[4] == "champion"]
    assert len(champion_moves) == 4, history  # the gate's first promotion, then the three by hand
    assert "ci@inspectflow" in history and "false rejects on line 3" in history
    listing = sh(clone, "inspectflow", "models", "list", "textile").stdout
    assert "champion" in listing and "challenger" in listing


def test_retrain_runs_after_the_data_changes(clone: Path, tmp_path: Path) -> None:
    sh(clone, "inspectflow", "synth", "textile", "--out", str(tmp_path / "new"), "--n", "300", "--seed", "7")
    sh(clone, "inspectflow", "data", "import", "textile", str(tmp_path / "new"))
    result = sh(clone, "inspectflow", "retrain", "textile", "--params", "params.yaml", "--set", "epochs=1")
    assert "retraining" in result.stdout
    latest = max(registry(clone).search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert str(latest.version) == "3"
    assert latest.tags["data.dvc_md5"] == data_version(clone / "data" / "textile") != locked_md5(clone)
