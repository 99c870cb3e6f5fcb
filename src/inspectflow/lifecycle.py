"""The model lifecycle: who moved which alias when and why, manual promotion, rollback, run comparison.

Every alias move goes through :func:`move_alias`, which appends one audit entry to the registered model
itself, as a tag ``audit.NNNNNN`` holding compact JSON::

    {"seq": 3, "time": "2025-01-02T10:00:05Z", "actor": "alice@build-7", "action": "promote",
     "alias": "champion", "from": "1", "to": "2", "reason": "manual: ... (gate said: rejected: ...)"}

The trail therefore lives wherever the registry lives (the embedded sqlite store or an MLflow server), needs
no other storage, and shows in the MLflow UI. Tags never overwrite one another: the sequence number is one
more than the highest already present. Two writers moving aliases of the same model at the very same moment
could pick the same number (MLflow has no atomic append); pipeline runs of one workload do not overlap in
practice.

:func:`rollback` walks this trail back: the champion returns to the version it replaced when it became
champion (a rollback is itself never "undone" by a rollback, so two rollbacks go two steps back).

The text formatters (:func:`format_versions`, :func:`format_history`, :func:`format_table`, ...) render the
results for a terminal; the CLI commands are thin wrappers over these functions.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from inspectflow.errors import InspectflowError
from inspectflow.lineage import DATA_VERSION_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
Action = Literal["gate", "promote", "rollback"]
ACTIONS: tuple[str, ...] = ("gate", "promote", "rollback")

#: Names the user who moves an alias; the OS user name when unset. ``@host`` is appended unless it names one.
ACTOR_ENV = "INSPECTFLOW_ACTOR"
AUDIT_PREFIX = "audit."
_AUDIT_KEY = re.compile(r"^audit\.(\d+)$")
#: MLflow stores registered-model tag values in VARCHAR(5000) columns (PostgreSQL enforces it; sqlite does
#: not), although its client accepts longer values: the whole JSON entry must fit.
AUDIT_VALUE_LIMIT = 5000
_ELLIPSIS = "…"

#: Version tags (set by the register step and DVC tracking) that identify the data a version was trained on.
DATA_VERSION_TAGS = (DATA_VERSION_TAG, "data.digest")
#: Test metrics shown by ``compare``, in this order, with their column headers.
KEY_METRICS: dict[str, str] = {
    "test_accuracy": "acc",
    "test_macro_f1": "f1",
    "test_iou": "iou",
    "test_dice": "dice",
    "svm_accuracy_mean": "svm_acc",
}
_PARENT_RUN_TAG = "mlflow.parentRunId"
_PAGE = 1000


# --------------------------------------------------------------------------------------------- audit trail


@dataclass(frozen=True)
class AuditEntry:
    """One alias move, as stored in the registered-model tag ``audit.NNNNNN``.

    Attributes:
        seq: Sequence number, 1 for the model's first move.
        time: When, UTC ISO 8601 (``2025-01-02T10:00:05Z``).
        actor: Who: ``$INSPECTFLOW_ACTOR`` or the OS user, ``@`` the host.
        action: ``gate`` (the pipeline's register step), ``promote`` or ``rollback``.
        alias: The alias moved (``champion`` or ``challenger``).
        from_version: The version that held the alias before, ``None`` when none did (JSON ``from``).
        to_version: The version that holds it now (JSON ``to``).
        reason: Why.
    """

    seq: int
    time: str
    actor: str
    action: str
    alias: str
    from_version: str | None
    to_version: str
    reason: str

    @property
    def tag_key(self) -> str:
        """The registered-model tag holding this entry."""
        return f"{AUDIT_PREFIX}{self.seq:06d}"

    def to_json(self) -> str:
        """Compact JSON with the keys ``seq time actor action alias from to reason``."""
        return json.dumps(
            {
                "seq": self.seq,
                "time": self.time,
                "actor": self.actor,
                "action": self.action,
                "alias": self.alias,
                "from": self.from_version,
                "to": self.to_version,
                "reason": self.reason,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> AuditEntry:
        """Parses :meth:`to_json`'s output.

        Raises:
            ValueError: The text is not an audit entry.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            previous = data["from"]
            return cls(
                seq=int(data["seq"]),
                time=str(data["time"]),
                actor=str(data["actor"]),
                action=str(data["action"]),
                alias=str(data["alias"]),
                from_version=None if previous is None else str(previous),
                to_version=str(data["to"]),
                reason=str(data.get("reason", "")),
            )
        except KeyError as missing:
            raise ValueError(f"missing key {missing}") from None


def current_actor() -> str:
    """Who is moving an alias: ``$INSPECTFLOW_ACTOR`` or the OS user name, plus ``@host``.

    A value of ``$INSPECTFLOW_ACTOR`` that already holds an ``@`` (an e-mail address) is kept as it is.
    """
    actor = os.environ.get(ACTOR_ENV, "").strip()
    if actor and "@" in actor:
        return actor
    if not actor:
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for the uid, as in some containers
            actor = "unknown"
    return f"{actor}@{socket.gethostname() or 'unknown-host'}"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fit(entry: AuditEntry) -> AuditEntry:
    """Shortens the entry's reason (ending it with an ellipsis) until its JSON fits the tag value limit."""
    while len(text := entry.to_json()) > AUDIT_VALUE_LIMIT:
        keep = len(entry.reason) - (len(text) - AUDIT_VALUE_LIMIT) - len(_ELLIPSIS)
        if keep <= 0:
            return replace(entry, reason=_ELLIPSIS)
        entry = replace(entry, reason=entry.reason[:keep].rstrip() + _ELLIPSIS)
    return entry


def _audit_entries(model: RegisteredModel) -> list[AuditEntry]:
    entries = []
    for key, value in (model.tags or {}).items():
        if not _AUDIT_KEY.match(key):
            continue
        try:
            entries.append(AuditEntry.from_json(value))
        except (ValueError, TypeError) as error:
            log.warning(
                "registered model %s: unreadable audit tag %s (%s): %r", model.name, key, error, value
            )
    return sorted(entries, key=lambda entry: entry.seq)


def _next_seq(model: RegisteredModel) -> int:
    numbers = [int(match.group(1)) for key in (model.tags or {}) if (match := _AUDIT_KEY.match(key))]
    return max(numbers, default=0) + 1


def move_alias(
    client: MlflowClient, name: str, alias: str, version: str | int, action: Action, reason: str
) -> AuditEntry:
    """Points ``alias`` of registered model ``name`` at ``version`` and appends the move to the audit trail.

    Args:
        client: MLflow client of the registry.
        name: Registered model name.
        alias: Alias to move, such as ``champion``.
        version: The version that gets the alias.
        action: Why the alias moves: ``gate``, ``promote`` or ``rollback``.
        reason: A one-line reason; shortened (with an ellipsis) if the entry would exceed the tag limit.

    Returns:
        The audit entry written.

    Raises:
        ValueError: Unknown action.
        InspectflowError: No registered model ``name``.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    model = _registered_model(client, name)
    previous = model.aliases.get(alias)
    client.set_registered_model_alias(name, alias, str(version))
    entry = _fit(
        AuditEntry(
            seq=_next_seq(model),
            time=_utc_now(),
            actor=current_actor(),
            action=action,
            alias=alias,
            from_version=None if previous is None else str(previous),
            to_version=str(version),
            reason=reason,
        )
    )
    client.set_registered_model_tag(name, entry.tag_key, entry.to_json())
    log.info("%s@%s: %s -> %s (%s by %s)", name, alias, entry.from_version, version, action, entry.actor)
    return entry


def audit_trail(client: MlflowClient, name: str) -> list[AuditEntry]:
    """The audit entries of registered model ``name``, oldest first.

    Raises:
        InspectflowError: No registered model ``name``.
    """
    return _audit_entries(_registered_model(client, name))


# ------------------------------------------------------------------------------------------ registry reads


def _workload_hint(name: str) -> str:
    from inspectflow.config import WORKLOAD_DEFAULTS, build_config

    models = {}
    for workload in WORKLOAD_DEFAULTS:
        try:
            models[workload] = build_config(workload).register_.model_name
        except InspectflowError:  # pragma: no cover - the defaults are valid
            continue
    for workload, model_name in models.items():
        if model_name == name:
            return f"a pipeline run registers it: run `inspectflow run {workload}`"
    known = ", ".join(f"{workload} -> {model_name}" for workload, model_name in models.items())
    return f"a pipeline run registers one: run `inspectflow run WORKLOAD` ({known})"


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


def _registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise InspectflowError(
            f"no registered model named {name!r} in the MLflow registry at {client.tracking_uri}; "
            f"{_workload_hint(name)}"
        ) from None


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quoted = name.replace("'", "\\'")
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{quoted}'", max_results=_PAGE, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if _error_code(error) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        existing = sorted((str(v.version) for v in _all_versions(client, name)), key=_version_key)
        have = f"its versions are {', '.join(existing)}" if existing else "it has no versions"
        raise InspectflowError(f"{name} has no version {str(version)!r}; {have}") from None


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _score(tags: dict[str, str]) -> float | None:
    try:
        return float(tags["gate.new_score"])
    except (KeyError, ValueError):
        return None


def _data_version(tags: dict[str, str]) -> str | None:
    return next((tags[key] for key in DATA_VERSION_TAGS if tags.get(key)), None)


@dataclass(frozen=True)
class VersionRow:
    """One registered version, as :func:`list_versions` reports it.

    Attributes:
        version: The version number.
        created: When it was registered (UTC).
        aliases: Aliases it holds, such as ``("champion",)``.
        metric: The gate's primary metric name (version tag ``gate.primary_metric``), if tagged.
        score: The version's score on it (``gate.new_score``), if tagged.
        decision: The gate's decision, ``promoted`` or ``rejected`` (``gate.decision``), if tagged.
        reason: The gate's reason (``gate.reason``), if tagged.
        run_id: The MLflow run that produced it.
        data_version: The data version (tag ``data.dvc_md5``, else ``data.digest``), if tagged.
    """

    version: str
    created: datetime
    aliases: tuple[str, ...]
    metric: str | None
    score: float | None
    decision: str | None
    reason: str | None
    run_id: str | None
    data_version: str | None


def list_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """The versions of registered model ``name``, newest first.

    Raises:
        InspectflowError: No registered model ``name``.
    """
    model = _registered_model(client, name)
    held: dict[str, list[str]] = {}
    for alias, version in sorted(model.aliases.items()):
        held.setdefault(str(version), []).append(alias)
    rows = []
    for version in _all_versions(client, name):
        tags = dict(version.tags or {})
        number = str(version.version)
        rows.append(
            VersionRow(
                version=number,
                created=datetime.fromtimestamp((version.creation_timestamp or 0) / 1000, UTC),
                aliases=tuple(held.get(number, [])),
                metric=tags.get("gate.primary_metric") or None,
                score=_score(tags),
                decision=tags.get("gate.decision") or None,
                reason=tags.get("gate.reason") or None,
                run_id=version.run_id or None,
                data_version=_data_version(tags),
            )
        )
    return sorted(rows, key=lambda row: _version_key(row.version), reverse=True)


# -------------------------------------------------------------------------------------- promote / rollback


@dataclass(frozen=True)
class Promotion:
    """The outcome of :func:`promote`.

    Attributes:
        name: Registered model name.
        version: The version promoted to champion.
        previous: The champion before, ``None`` when there was none.
        gate_decision: The gate's decision on this version (``promoted``/``rejected``), if it was gated.
        gate_reason: The gate's reason, if it was gated.
        entry: The audit entry written; ``None`` when the version already was champion (nothing changed).
    """

    name: str
    version: str
    previous: str | None
    gate_decision: str | None
    gate_reason: str | None
    entry: AuditEntry | None

    @property
    def changed(self) -> bool:
        """Whether the champion alias moved."""
        return self.entry is not None


@dataclass(frozen=True)
class Rollback:
    """The outcome of :func:`rollback`.

    Attributes:
        name: Registered model name.
        from_version: The champion rolled back from.
        to_version: The champion now.
        entry: The audit entry written.
    """

    name: str
    from_version: str
    to_version: str
    entry: AuditEntry


def _gate_verdict(decision: str | None, reason: str | None) -> str:
    if not decision and not reason:
        return "gate said: nothing, the version was not gated"
    return f"gate said: {decision or '?'}: {reason or 'no reason recorded'}"


def promote(client: MlflowClient, name: str, version: str | int, reason: str) -> Promotion:
    """Makes ``version`` the champion by hand, whatever the gate said, and records it in the audit trail.

    The audit entry's reason is ``manual: <reason> (gate said: <decision>: <gate reason>)``. Promoting the
    version that already is champion changes nothing and writes no entry (``Promotion.changed`` is false).

    Args:
        client: MLflow client of the registry.
        name: Registered model name.
        version: The version to promote.
        reason: Why, in the operator's words.

    Raises:
        InspectflowError: No registered model ``name``, or it has no such version.
    """
    model = _registered_model(client, name)
    target = _get_version(client, name, version)
    number = str(target.version)
    tags = dict(target.tags or {})
    decision, gate_reason = tags.get("gate.decision") or None, tags.get("gate.reason") or None
    current = model.aliases.get(CHAMPION)
    previous = None if current is None else str(current)
    if previous == number:
        return Promotion(name, number, previous, decision, gate_reason, None)
    why = f"manual: {reason.strip() or 'no reason given'} ({_gate_verdict(decision, gate_reason)})"
    entry = move_alias(client, name, CHAMPION, number, "promote", why)
    return Promotion(name, number, entry.from_version, decision, gate_reason, entry)


def previous_champion(entries: list[AuditEntry], current: str, exists: Callable[[str], bool]) -> str:
    """The champion before ``current``, from the audit trail, skipping versions that no longer exist.

    The trail's last champion move must have made ``current`` champion, else the alias was moved outside
    inspectflow and the trail cannot tell what to restore.
    The entry that made ``current`` champion is the latest champion move to it that is not a rollback
    (a rollback back to ``current`` restored it; what ``current`` replaced is still what it replaced when it
    was promoted); its ``from`` is the previous champion. If that version was deleted, the search repeats
    from it, further back.

    Raises:
        InspectflowError: The trail does not say how ``current`` became champion, ``current`` was the first
            champion, or every earlier champion was deleted.
    """
    moves = [entry for entry in entries if entry.alias == CHAMPION]
    if moves and moves[-1].to_version != current:
        raise InspectflowError(
            f"the champion alias was moved outside inspectflow (the audit trail's last move made version "
            f"{moves[-1].to_version} champion, now it is version {current}); choose the version to restore "
            "with `inspectflow models promote`"
        )
    end, target, deleted = len(moves), current, []
    while True:
        made = next(
            (
                index
                for index in range(end - 1, -1, -1)
                if moves[index].to_version == target and moves[index].action != "rollback"
            ),
            None,
        )
        if made is None:
            if target == current:
                raise InspectflowError(
                    f"the audit trail does not record how version {current} became champion (the alias was "
                    "moved outside inspectflow); choose the version to restore with `inspectflow models "
                    "promote`"
                )
            break
        before = moves[made].from_version
        if before is None:
            break
        if before != current and exists(before):
            return before
        if before != current:
            deleted.append(before)
        end, target = made, before
    if deleted:
        raise InspectflowError(
            f"no previous champion to roll back to: the earlier champions (versions {', '.join(deleted)}) "
            "were deleted"
        )
    raise InspectflowError(
        f"no previous champion to roll back to: version {current} was the first champion; "
        "promote another version with `inspectflow models promote` instead"
    )


def rollback(client: MlflowClient, name: str, reason: str = "") -> Rollback:
    """Returns the champion alias to the previous champion, found from the audit trail.

    Args:
        client: MLflow client of the registry.
        name: Registered model name.
        reason: Why, in the operator's words.

    Raises:
        InspectflowError: No registered model ``name``, no champion, or no previous champion (see
            :func:`previous_champion`).
    """
    model = _registered_model(client, name)
    current = model.aliases.get(CHAMPION)
    if current is None:
        raise InspectflowError(f"{name} has no champion to roll back")
    current = str(current)
    existing = {str(version.version) for version in _all_versions(client, name)}
    target = previous_champion(_audit_entries(model), current, existing.__contains__)
    entry = move_alias(client, name, CHAMPION, target, "rollback", reason.strip() or "no reason given")
    return Rollback(name, current, target, entry)


# ------------------------------------------------------------------------------------------------ compare


@dataclass(frozen=True)
class RunRow:
    """One finished pipeline run in a :class:`Comparison`.

    Attributes:
        run_id: MLflow run id.
        run_name: MLflow run name (the kfp pipeline run's name).
        start_time: When it started (UTC).
        params: The run's values of the params that differ between the compared runs (absent: not logged).
        metrics: Its key test metrics (:data:`KEY_METRICS`) that it logged.
        data_version: Run tag ``data.dvc_md5``, else ``data.digest``.
        model_name: The registered model it registered (run tag ``registered_model.name``).
        version: The version it registered (run tag ``registered_model.version``).
        decision: The gate's decision on it (run tag ``gate.decision``).
        champion: Whether its version is the champion now.
    """

    run_id: str
    run_name: str
    start_time: datetime
    params: dict[str, str]
    metrics: dict[str, float]
    data_version: str | None
    model_name: str | None
    version: str | None
    decision: str | None
    champion: bool


@dataclass(frozen=True)
class Comparison:
    """The last finished pipeline runs of an experiment, side by side.

    Attributes:
        experiment: Experiment name.
        runs: The runs, newest first.
        differing_params: Params whose values differ between the runs, sorted (equal in all: omitted).
        metric_names: The key metrics that at least one run logged, in :data:`KEY_METRICS` order.
        champions: ``model name -> champion version`` for the models these runs registered.
    """

    experiment: str
    runs: list[RunRow]
    differing_params: list[str]
    metric_names: list[str]
    champions: dict[str, str] = field(default_factory=dict)

    @property
    def champion_run(self) -> RunRow | None:
        """The compared run that produced a champion, if any."""
        return next((run for run in self.runs if run.champion), None)


def _finished_pipeline_runs(client: MlflowClient, experiment_id: str, last_n: int) -> list[Run]:
    runs: list[Run] = []
    token = None
    while len(runs) < last_n:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"attributes.status = 'FINISHED' AND tags.{_PARENT_RUN_TAG} IS NULL",
            order_by=["attributes.start_time DESC"],
            max_results=min(max(last_n, 1), _PAGE),
            page_token=token,
        )
        # The filter already excludes child runs (the splits of features+svm); checked again for stores
        # that ignore it.
        runs.extend(run for run in page if _PARENT_RUN_TAG not in run.data.tags)
        token = page.token
        if not token:
            break
    return runs[:last_n]


def _champion_runs(client: MlflowClient, names: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    from mlflow.exceptions import MlflowException

    champions, run_ids = {}, set()
    for name in sorted(set(names)):
        try:
            version = client.get_registered_model(name).aliases.get(CHAMPION)
            if version is None:
                continue
            champions[name] = str(version)
            run_id = client.get_model_version(name, str(version)).run_id
        except MlflowException as error:
            log.debug("no champion of %s: %s", name, error)
            continue
        if run_id:
            run_ids.add(run_id)
    return champions, run_ids


def compare_runs(client: MlflowClient, experiment_name: str, last_n: int = 5) -> Comparison:
    """Compares the last ``last_n`` finished pipeline runs of an experiment.

    Only top-level runs count: the child runs of a pipeline run (tag ``mlflow.parentRunId``) do not.

    Args:
        client: MLflow client of the tracking store.
        experiment_name: The workload's experiment, such as ``textile``.
        last_n: How many runs, newest first.

    Raises:
        InspectflowError: ``last_n`` below 1, no such experiment, or no finished run in it.
    """
    if last_n < 1:
        raise InspectflowError(f"the number of runs to compare must be at least 1, not {last_n}")
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        from inspectflow.config import WORKLOAD_DEFAULTS

        workload = experiment_name if experiment_name in WORKLOAD_DEFAULTS else "WORKLOAD"
        raise InspectflowError(
            f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri}; a pipeline run "
            f"creates it: run `inspectflow run {workload}`"
        )
    runs = _finished_pipeline_runs(client, experiment.experiment_id, last_n)
    if not runs:
        raise InspectflowError(
            f"experiment {experiment_name!r} has no finished pipeline runs to compare yet (failed and "
            "running ones are left out)"
        )
    keys = sorted({key for run in runs for key in run.data.params})
    differing = [key for key in keys if len({run.data.params.get(key) for run in runs}) > 1]
    metric_names = [name for name in KEY_METRICS if any(name in run.data.metrics for run in runs)]
    champions, champion_run_ids = _champion_runs(
        client, (name for run in runs if (name := run.data.tags.get("registered_model.name")))
    )
    rows = []
    for run in runs:
        tags = run.data.tags
        name, version = (
            tags.get("registered_model.name") or None,
            tags.get("registered_model.version") or None,
        )
        is_champion = run.info.run_id in champion_run_ids or (
            name is not None and version is not None and champions.get(name) == version
        )
        rows.append(
            RunRow(
                run_id=run.info.run_id,
                run_name=run.info.run_name or "",
                start_time=datetime.fromtimestamp((run.info.start_time or 0) / 1000, UTC),
                params={key: run.data.params[key] for key in differing if key in run.data.params},
                metrics={key: run.data.metrics[key] for key in metric_names if key in run.data.metrics},
                data_version=_data_version(tags),
                model_name=name,
                version=version,
                decision=tags.get("gate.decision") or None,
                champion=is_champion,
            )
        )
    return Comparison(experiment_name, rows, differing, metric_names, champions)


# ------------------------------------------------------------------------------------------------- format


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + _ELLIPSIS


def _param_item(key: str, value: str, width: int) -> str:
    """``key=value`` in at most ``width`` characters: the value keeps its end (a path's last folders)."""
    item = f"{key}={value}"
    if len(item) <= width:
        return item
    room = width - len(key) - 2
    if room >= 4:
        return f"{key}={_ELLIPSIS}{value[len(value) - room :]}"
    return _clip(item, width)


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _short(digest: str | None, width: int = 8) -> str:
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:width]  # "md5:abc…" or a bare hex digest


def format_versions(name: str, rows: list[VersionRow]) -> str:
    """Renders :func:`list_versions` as a table, one line per version, newest first."""
    if not rows:
        return f"{name}: no versions"
    lines = [f"{name}: {len(rows)} version{'s' if len(rows) != 1 else ''}, newest first"]
    header = f"{'version':>7}  {'registered (UTC)':<16}  {'aliases':<20}  {'primary metric':<18}  "
    header += f"{'gate':<8}  {'data':<8}  run"
    lines.append(header)
    for row in rows:
        score = "-" if row.score is None else f"{row.score:.4f}"
        metric = f"{row.metric} {score}" if row.metric else score
        lines.append(
            f"{row.version:>7}  {_minute(row.created):<16}  {_clip(', '.join(row.aliases) or '-', 20):<20}  "
            f"{_clip(metric, 18):<18}  {row.decision or '-':<8}  {_short(row.data_version):<8}  "
            f"{(row.run_id or '-')[:12]}"
        )
    return "\n".join(lines)


def format_entry(entry: AuditEntry) -> str:
    """One audit entry on one line: sequence, time, action, alias ``from -> to``, actor, reason."""
    move = f"{entry.from_version or '-'} -> {entry.to_version}"
    return (
        f"{entry.seq:>4}  {entry.time.replace('T', ' ')}  {entry.action:<8}  {entry.alias:<10}  {move:<10}  "
        f"{entry.actor}: {entry.reason}"
    )


def format_history(name: str, entries: list[AuditEntry]) -> str:
    """Renders :func:`audit_trail` one line per alias move, oldest first."""
    if not entries:
        return f"{name}: no alias moves recorded"
    count = f"{len(entries)} alias move{'s' if len(entries) != 1 else ''}"
    header = f"{'seq':>4}  {'time (UTC)':<20}  {'action':<8}  {'alias':<10}  {'from -> to':<10}  who: why"
    return "\n".join([f"{name}: {count}, oldest first", header, *map(format_entry, entries)])


def format_promotion(result: Promotion) -> str:
    """Says what :func:`promote` did, with the gate's verdict on the version."""
    verdict = _gate_verdict(result.gate_decision, result.gate_reason)
    if not result.changed:
        return f"{result.name} version {result.version} already is champion; nothing changed ({verdict})"
    before = f"version {result.previous}" if result.previous else "no champion"
    return f"{result.name}@champion: {before} -> version {result.version} ({verdict})"


def format_rollback(result: Rollback) -> str:
    """Says what :func:`rollback` did."""
    return (
        f"{result.name}@champion rolled back: version {result.from_version} -> version {result.to_version}; "
        f"why: {result.entry.reason}"
    )


def _param_cell(params: dict[str, str], keys: list[str], width: int) -> list[str]:
    """The run's differing params as ``key=value`` items, wrapped to ``width`` (each item clipped to fit)."""
    lines = [""]
    for key in keys:
        item = _param_item(key, params.get(key, "-"), width)
        if not lines[-1]:
            lines[-1] = item
        elif len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    return lines


def format_table(comparison: Comparison, width: int = 110) -> str:
    """Renders a :class:`Comparison` as a fixed-width table, one row per run, at most ``width`` columns.

    Columns: champion mark ``*``, run name and short id, start time, data version, the key test metrics,
    registered version, then the params that differ (wrapped onto continuation lines when long).
    """
    rows = comparison.runs
    lines = [
        f"experiment {comparison.experiment}: the last {len(rows)} finished pipeline "
        f"run{'s' if len(rows) != 1 else ''}, newest first"
    ]
    metric_widths = [max(len(KEY_METRICS[name]), 6) for name in comparison.metric_names]
    fixed = [
        ("run", 22, "<"),
        ("start (UTC)", 16, "<"),
        ("data", 8, "<"),
        *(
            (KEY_METRICS[name], w, ">")
            for name, w in zip(comparison.metric_names, metric_widths, strict=True)
        ),
        ("ver", 3, ">"),
    ]
    gap = "  "
    offset = len("* ") + sum(w for _, w, _ in fixed) + len(gap) * len(fixed)
    params_width = max(width - offset, 16)

    def line(mark: str, cells: list[str]) -> str:
        """The champion mark and the fixed columns, padded to the params column."""
        parts = [f"{cell:{align}{w}}" for cell, (_, w, align) in zip(cells, fixed, strict=True)]
        return f"{mark:<1} " + gap.join(parts) + gap

    header_cells = [title for title, _, _ in fixed]
    params_title = "params that differ" if comparison.differing_params else "params: all equal"
    lines.append((line("", header_cells) + params_title).rstrip())
    for run in rows:
        label = f"{_clip(run.run_name, 13)} {run.run_id[:8]}" if run.run_name else run.run_id[:8]
        cells = [
            label,
            _minute(run.start_time),
            _short(run.data_version),
            *(f"{run.metrics[name]:.4f}" if name in run.metrics else "-" for name in comparison.metric_names),
            run.version or "-",
        ]
        params = _param_cell(run.params, comparison.differing_params, params_width)
        lines.append((line("*" if run.champion else "", cells) + params[0]).rstrip())
        lines.extend(" " * offset + more for more in params[1:])
    champions = ", ".join(f"{name}@champion (version {v})" for name, v in comparison.champions.items())
    footer = [
        f"* = the run of {champions}" if comparison.champion_run else f"champion: {champions or 'none'}"
    ]
    if comparison.metric_names:
        footer.append(
            "metrics: " + ", ".join(f"{KEY_METRICS[name]}={name}" for name in comparison.metric_names)
        )
    lines.extend(_clip(text, width) for text in footer)
    return "\n".join(lines)


__all__ = [
    "ACTIONS",
    "ACTOR_ENV",
    "AUDIT_VALUE_LIMIT",
    "CHALLENGER",
    "CHAMPION",
    "KEY_METRICS",
    "Action",
    "AuditEntry",
    "Comparison",
    "Promotion",
    "Rollback",
    "RunRow",
    "VersionRow",
    "audit_trail",
    "compare_runs",
    "current_actor",
    "format_entry",
    "format_history",
    "format_promotion",
    "format_rollback",
    "format_table",
    "format_versions",
    "list_versions",
    "move_alias",
    "previous_champion",
    "promote",
    "rollback",
]
