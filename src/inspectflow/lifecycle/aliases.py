"""Registered versions and their aliases: listing, manual promotion, rollback to the previous champion.

Every alias move goes through :func:`~inspectflow.lifecycle.audit.move_alias`, so each one is in the audit
trail. :func:`rollback` walks that trail back: the champion returns to the version it replaced when it became
champion (a rollback is itself never "undone" by a rollback, so two rollbacks go two steps back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from inspectflow.errors import InspectflowError
from inspectflow.lifecycle.audit import AuditEntry, audit_entries, error_code, move_alias, registered_model
from inspectflow.lifecycle.lock import registry_lock
from inspectflow.lineage import tagged_data_version
from inspectflow.names import (
    CHAMPION,
    GATE_DECISION_TAG,
    GATE_NEW_SCORE_TAG,
    GATE_PRIMARY_METRIC_TAG,
    GATE_REASON_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

_PAGE = 1000


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
        if error_code(error) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        existing = sorted((str(v.version) for v in _all_versions(client, name)), key=_version_key)
        have = f"its versions are {', '.join(existing)}" if existing else "it has no versions"
        raise InspectflowError(f"{name} has no version {str(version)!r}; {have}") from None


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _score(tags: dict[str, str]) -> float | None:
    try:
        return float(tags[GATE_NEW_SCORE_TAG])
    except (KeyError, ValueError):
        return None


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
    model = registered_model(client, name)
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
                metric=tags.get(GATE_PRIMARY_METRIC_TAG) or None,
                score=_score(tags),
                decision=tags.get(GATE_DECISION_TAG) or None,
                reason=tags.get(GATE_REASON_TAG) or None,
                run_id=version.run_id or None,
                data_version=tagged_data_version(tags),
            )
        )
    return sorted(rows, key=lambda row: _version_key(row.version), reverse=True)


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


def gate_verdict(decision: str | None, reason: str | None) -> str:
    """What the gate said about a version, for the audit reason of a promotion and its report."""
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
    with registry_lock(client, name):  # the champion read here is still the champion when it moves
        model = registered_model(client, name)
        target = _get_version(client, name, version)
        number = str(target.version)
        tags = dict(target.tags or {})
        decision, gate_reason = tags.get(GATE_DECISION_TAG) or None, tags.get(GATE_REASON_TAG) or None
        current = model.aliases.get(CHAMPION)
        previous = None if current is None else str(current)
        if previous == number:
            return Promotion(name, number, previous, decision, gate_reason, None)
        why = f"manual: {reason.strip() or 'no reason given'} ({gate_verdict(decision, gate_reason)})"
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
    with registry_lock(client, name):
        model = registered_model(client, name)
        current = model.aliases.get(CHAMPION)
        if current is None:
            raise InspectflowError(f"{name} has no champion to roll back")
        current = str(current)
        existing = {str(version.version) for version in _all_versions(client, name)}
        target = previous_champion(audit_entries(model), current, existing.__contains__)
        entry = move_alias(client, name, CHAMPION, target, "rollback", reason.strip() or "no reason given")
        return Rollback(name, current, target, entry)
