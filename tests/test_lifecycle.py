"""The model lifecycle against a real (sqlite) MLflow registry: audit trail, promote, rollback, compare.

Versions are registered from a run's artifact path with ``create_model_version`` (no model is trained or
logged) and tagged as the register step tags them.
"""

import contextlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from inspectflow.errors import InspectflowError
from inspectflow.lifecycle.aliases import list_versions, previous_champion, promote, rollback
from inspectflow.lifecycle.audit import (
    AUDIT_VALUE_LIMIT,
    AuditEntry,
    audit_entries,
    audit_trail,
    move_alias,
    moves_outside_the_trail,
)
from inspectflow.lifecycle.comparison import compare_runs
from inspectflow.lifecycle.render import (
    format_history,
    format_promotion,
    format_rollback,
    format_table,
    format_versions,
)
from inspectflow.tracking import ensure_experiment

MODEL = "textile-classifier"


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store with its schema created: migrating a new store takes seconds."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def registry(request: pytest.FixtureRequest, migrated_db: Path) -> None:
    """Starts the ``tracking`` fixture's store (for tests that use it) as a copy of the migrated one."""
    if "tracking" in request.fixturenames:
        uri = request.getfixturevalue("tracking")
        shutil.copyfile(migrated_db, uri.removeprefix("sqlite:///"))


def pipeline_run(
    client: MlflowClient,
    params: dict[str, str],
    metrics: dict[str, float],
    *,
    digest: str = "ab" * 32,
    name: str = "run",
    children: int = 0,
) -> str:
    """A finished top-level run shaped like a pipeline run, with ``children`` nested child runs."""
    experiment_id = ensure_experiment("textile")
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tag("data.digest", digest)
        for index in range(children):
            with mlflow.start_run(run_name=f"split-{index}", nested=True, experiment_id=experiment_id):
                mlflow.log_params({"split.index": index, "train.C": f"child-{index}"})
                mlflow.log_metric("test/accuracy", 0.0)
    return str(run.info.run_id)


def register(client: MlflowClient, run_id: str, score: float, promoted: bool, reason: str) -> str:
    """Registers a version of the run as the register step does: tags, then the gate's alias move."""
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # already there
        client.create_registered_model(MODEL)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    version = str(client.create_model_version(MODEL, source, run_id=run_id).version)
    decision = "promoted" if promoted else "rejected"
    tags = {
        "gate.decision": decision,
        "gate.reason": reason,
        "gate.primary_metric": "macro_f1",
        "gate.new_score": f"{score:.6f}",
        "data.digest": "ab" * 32,
    }
    for key, value in tags.items():
        client.set_model_version_tag(MODEL, version, key, value)
    move_alias(client, MODEL, "champion" if promoted else "challenger", version, "gate", reason)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags(
            {"registered_model.name": MODEL, "registered_model.version": version, "gate.decision": decision}
        )
    return version


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}


@pytest.mark.usefixtures("tracking")
def test_promote_rollback_promote_moves_the_champion_and_audits_every_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INSPECTFLOW_ACTOR", "alice")
    client = MlflowClient()
    v1 = register(client, pipeline_run(client, {"lr": "0.01"}, {}), 0.80, True, "no champion yet")
    v2 = register(client, pipeline_run(client, {"lr": "0.02"}, {}), 0.81, False, "gain +0.0100 too small")
    assert aliases(client) == {"champion": v1, "challenger": v2}

    promoted = promote(client, MODEL, v2, "line 3 needs the new model")
    assert promoted.changed and promoted.previous == v1 and promoted.gate_decision == "rejected"
    assert "gate said: rejected: gain +0.0100 too small" in format_promotion(promoted)
    assert aliases(client)["champion"] == v2

    rolled = rollback(client, MODEL, reason="false rejects on line 3")
    assert (rolled.from_version, rolled.to_version) == (v2, v1)
    assert aliases(client)["champion"] == v1
    assert f"version {v2} -> version {v1}" in format_rollback(rolled)

    again = promote(client, MODEL, v2, "retry after the lighting fix")
    assert again.previous == v1
    assert aliases(client) == {"champion": v2, "challenger": v2}

    trail = audit_trail(client, MODEL)
    champion_moves = [entry for entry in trail if entry.alias == "champion"]
    assert [(e.action, e.from_version, e.to_version) for e in champion_moves] == [
        ("gate", None, v1),
        ("promote", v1, v2),
        ("rollback", v2, v1),
        ("promote", v1, v2),
    ]
    assert [e.seq for e in trail] == [1, 2, 3, 4, 5]  # plus the gate's challenger move
    assert trail[1].alias == "challenger" and trail[1].action == "gate"
    for entry in trail:
        assert entry.actor.startswith("alice@")
        assert datetime.fromisoformat(entry.time).tzinfo is not None
        assert abs((datetime.now(UTC) - datetime.fromisoformat(entry.time)).total_seconds()) < 300
    assert champion_moves[1].reason == (
        "manual: line 3 needs the new model (gate said: rejected: gain +0.0100 too small)"
    )
    assert champion_moves[2].reason == "false rejects on line 3"

    # The entries are registered-model tags audit.NNNNNN of compact JSON.
    tags = client.get_registered_model(MODEL).tags
    stored = json.loads(tags["audit.000003"])
    assert set(stored) == {"seq", "time", "actor", "action", "alias", "from", "to", "reason"}
    assert (stored["action"], stored["from"], stored["to"]) == ("promote", v1, v2)

    history = format_history(MODEL, trail).splitlines()
    assert len(history) == 2 + len(trail)
    assert "rollback" in history[-2] and f"{v2} -> {v1}" in history[-2] and "alice@" in history[-2]
    assert "false rejects on line 3" in history[-2]
    assert "gate" in history[2] and f"- -> {v1}" in history[2]

    rows = list_versions(client, MODEL)
    assert [row.version for row in rows] == [v2, v1]
    assert rows[0].aliases == ("challenger", "champion") and rows[1].aliases == ()
    assert (rows[0].metric, rows[0].score, rows[0].decision) == ("macro_f1", 0.81, "rejected")
    assert rows[0].data_version == "ab" * 32 and rows[0].run_id
    table = format_versions(MODEL, rows).splitlines()
    assert len(table) == 4 and "challenger, champion" in table[2] and "macro_f1 0.8100" in table[2]
    assert all(len(line) <= 110 for line in table)


@pytest.mark.usefixtures("tracking")
def test_alias_moves_made_outside_inspectflow_are_flagged_and_the_description_shows_the_trail() -> None:
    client = MlflowClient()
    v1 = register(client, pipeline_run(client, {"lr": "0.01"}, {}), 0.80, True, "no champion yet")
    v2 = register(client, pipeline_run(client, {"lr": "0.02"}, {}), 0.81, False, "gain too small")
    model = client.get_registered_model(MODEL)
    assert moves_outside_the_trail(model, audit_entries(model)) == []
    assert "| 2 |" in model.description and f"`@champion` version {v1}" in model.description

    client.set_registered_model_alias(MODEL, "champion", v2)  # as the MLflow UI would: no trail entry
    client.set_registered_model_alias(MODEL, "production", v1)
    model = client.get_registered_model(MODEL)
    outside = moves_outside_the_trail(model, audit_entries(model))
    assert any(f"champion points at version {v2}" in line and f"version {v1}" in line for line in outside)
    assert any(line.startswith("production") for line in outside)
    shown = format_history(MODEL, audit_entries(model), outside).splitlines()
    assert shown[-2].startswith("! champion points at") and shown[-1].startswith("! production")


@pytest.mark.usefixtures("tracking")
def test_lifecycle_errors_are_clear_and_a_repeated_promotion_changes_nothing() -> None:
    client = MlflowClient()
    with pytest.raises(
        InspectflowError, match=r"no registered model named 'textile-classifier'.*inspectflow run textile"
    ):
        list_versions(client, MODEL)
    with pytest.raises(InspectflowError, match=r"'nope'.*inspectflow run WORKLOAD"):
        audit_trail(client, "nope")

    v1 = register(client, pipeline_run(client, {}, {}), 0.8, True, "no champion yet")
    with pytest.raises(InspectflowError, match=r"version 1 was the first champion"):
        rollback(client, MODEL)
    with pytest.raises(InspectflowError, match=r"textile-classifier has no version '7'; its versions are 1"):
        promote(client, MODEL, 7, "typo")
    with pytest.raises(InspectflowError, match=r"no version 'latest'"):
        promote(client, MODEL, "latest", "typo")

    same = promote(client, MODEL, v1, "again")
    assert not same.changed and "already is champion; nothing changed" in format_promotion(same)
    assert len(audit_trail(client, MODEL)) == 1

    # A very long reason is cut to fit MLflow's registered-model tag column.
    v2 = register(client, pipeline_run(client, {}, {}), 0.7, False, "worse")
    entry = promote(client, MODEL, v2, "x" * 20_000).entry
    assert entry is not None and entry.reason.endswith("…")
    stored = client.get_registered_model(MODEL).tags[entry.tag_key]
    assert len(stored) <= AUDIT_VALUE_LIMIT and AuditEntry.from_json(stored) == entry

    # The alias moved outside inspectflow: the trail cannot say what came before.
    client.set_registered_model_alias(MODEL, "champion", v1)
    with pytest.raises(InspectflowError, match=r"moved outside inspectflow .*made version 2 champion"):
        rollback(client, MODEL)
    promote(client, MODEL, v2, "back in sync")

    # A rollback skips a previous champion that was deleted.
    v3 = register(client, pipeline_run(client, {}, {}), 0.9, True, "better")  # from 2
    promote(client, MODEL, v1, "try")  # from 3
    client.delete_model_version(MODEL, v3)
    assert rollback(client, MODEL).to_version == v2


def test_a_rollback_needs_a_trail_that_says_how_the_champion_got_there() -> None:
    with pytest.raises(InspectflowError, match=r"does not record how version 4 became champion"):
        previous_champion([], "4", lambda v: True)


def entry(seq: int, action: str, before: str | None, after: str) -> AuditEntry:
    return AuditEntry(seq, "2025-01-01T00:00:00Z", "a@h", action, "champion", before, after, "")


def test_two_rollbacks_go_two_steps_back_and_deleted_versions_are_skipped() -> None:
    trail = [entry(1, "gate", None, "1"), entry(2, "gate", "1", "2"), entry(3, "promote", "2", "3")]
    trail.append(entry(4, "rollback", "3", "2"))
    assert previous_champion(trail, "2", lambda v: True) == "1"  # not back to the rolled-back 3
    assert previous_champion(trail[:3], "3", lambda v: v != "2") == "1"
    with pytest.raises(InspectflowError, match=r"earlier champions \(versions 2, 1\) were deleted"):
        previous_champion(trail[:3], "3", lambda v: v == "3")
    trail.append(entry(5, "rollback", "2", "1"))  # the second rollback went back to 1, the first champion
    with pytest.raises(InspectflowError, match="version 1 was the first champion"):
        previous_champion(trail, "1", lambda v: True)


@pytest.mark.usefixtures("tracking")
def test_compare_marks_the_champion_and_shows_only_differing_params_of_top_level_runs() -> None:
    client = MlflowClient()
    common = {"train.epochs": "3", "data.source": "/data/" + "very-long-folder-name/" * 6 + "textile"}
    old = pipeline_run(
        client,
        {**common, "train.lr": "0.01", "train.model": "residual_cnn"},
        {"test/accuracy": 0.9, "test/macro_f1": 0.88, "test/f1/hole": 0.5},
        name="inspection-pipeline-2025-01-01-aaaaaaaaaaa",
    )
    register(client, old, 0.88, True, "no champion yet")
    new = pipeline_run(
        client,
        {**common, "train.lr": "0.02", "train.model": "residual_cnn"},
        {"test/accuracy": 0.91, "test/macro_f1": 0.885, "cv/accuracy_mean": 0.93},
        digest="cd" * 32,
        children=2,
    )
    register(client, new, 0.885, False, "gain too small")
    experiment_id = ensure_experiment("textile")
    with mlflow.start_run(experiment_id=experiment_id, run_name="broken") as failed:
        mlflow.log_param("train.lr", "9")
    client.set_terminated(failed.info.run_id, "FAILED")

    comparison = compare_runs(client, "textile", last_n=5)
    assert [run.run_id for run in comparison.runs] == [new, old]  # no child runs, no failed run
    assert comparison.differing_params == ["train.lr"]
    assert comparison.metric_names == ["test/accuracy", "test/macro_f1", "cv/accuracy_mean"]
    assert [run.champion for run in comparison.runs] == [False, True]
    assert comparison.champion_run is not None and comparison.champion_run.run_id == old
    assert comparison.champions == {MODEL: "1"}
    newest = comparison.runs[0]
    assert (newest.version, newest.decision, newest.data_version) == ("2", "rejected", "cd" * 32)
    assert newest.params == {"train.lr": "0.02"} and newest.metrics["cv/accuracy_mean"] == 0.93

    assert [run.run_id for run in compare_runs(client, "textile", last_n=1).runs] == [new]

    table = format_table(comparison).splitlines()
    assert all(len(line) <= 110 for line in table), "\n".join(table)
    champion_line = next(line for line in table if line.startswith("*"))
    assert old[:8] in champion_line and "train.lr=0.01" in champion_line and "0.8800" in champion_line
    assert "cdcdcdcd" in table[2] and "train.lr=0.02" in table[2] and table[2].startswith(" ")
    assert "train.epochs" not in "\n".join(table)

    # Differing params too long for one line wrap onto continuation lines at the params column.
    with mlflow.start_run(experiment_id=experiment_id, run_name="wide"):
        mlflow.log_params({"data.source": "/elsewhere", "train.model": "resnet18", "train.lr": "0.03"})
    wide = format_table(compare_runs(client, "textile", last_n=3)).splitlines()
    assert all(len(line) <= 110 for line in wide), "\n".join(wide)
    column = wide[1].index("params that differ")
    assert any(line[:column].isspace() and line[column:].startswith("train.") for line in wide[3:])

    with pytest.raises(InspectflowError, match=r"no MLflow experiment named 'dagm'.*inspectflow run dagm"):
        compare_runs(client, "dagm", last_n=3)
