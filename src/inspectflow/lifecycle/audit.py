"""The audit trail: every alias move, appended to the registered model as a tag ``audit.NNNNNN``.

Each tag holds one entry as compact JSON::

    {"seq": 3, "time": "2025-01-02T10:00:05Z", "actor": "alice@build-7", "action": "promote",
     "alias": "champion", "from": "1", "to": "2", "reason": "manual: ... (gate said: rejected: ...)"}

The trail therefore lives wherever the registry lives (the embedded sqlite store or an MLflow server), needs
no other storage, and shows in the MLflow UI. Tags never overwrite one another: the sequence number is one
more than the highest already present. Two writers moving aliases of the same model at the very same moment
could pick the same number (MLflow has no atomic append); pipeline runs of one workload do not overlap in
practice.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from inspectflow.errors import InspectflowError
from inspectflow.names import AUDIT_TAG_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import RegisteredModel

log = logging.getLogger(__name__)

Action = Literal["gate", "promote", "rollback"]
ACTIONS: tuple[str, ...] = ("gate", "promote", "rollback")

#: Names the user who moves an alias; the OS user name when unset. ``@host`` is appended unless it names one.
ACTOR_ENV = "INSPECTFLOW_ACTOR"
_AUDIT_KEY = re.compile(rf"^{re.escape(AUDIT_TAG_PREFIX)}(\d+)$")
#: MLflow stores registered-model tag values in VARCHAR(5000) columns (PostgreSQL enforces it; sqlite does
#: not), although its client accepts longer values: the whole JSON entry must fit.
AUDIT_VALUE_LIMIT = 5000
#: Marks text cut to fit, here and in the rendered tables.
ELLIPSIS = "…"


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
        return f"{AUDIT_TAG_PREFIX}{self.seq:06d}"

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
        keep = len(entry.reason) - (len(text) - AUDIT_VALUE_LIMIT) - len(ELLIPSIS)
        if keep <= 0:
            return replace(entry, reason=ELLIPSIS)
        entry = replace(entry, reason=entry.reason[:keep].rstrip() + ELLIPSIS)
    return entry


def audit_entries(model: RegisteredModel) -> list[AuditEntry]:
    """The audit entries among a registered model's tags, oldest first; unreadable ones are logged."""
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


#: Moves the registered model's description shows, newest first (all of them stay in the tags).
DESCRIBED_MOVES = 20


def model_description(model: RegisteredModel, entries: list[AuditEntry]) -> str:
    """The registered model's description (Markdown): how its aliases move, where they are, the trail."""
    aliases = ", ".join(f"`@{a}` version {v}" for a, v in sorted((model.aliases or {}).items())) or "none"
    rows = [
        f"| {e.seq} | {e.time.replace('T', ' ').rstrip('Z')} | {e.action} | {e.alias} | "
        f"{e.from_version or '-'} → {e.to_version} | {e.actor} | {e.reason.replace('|', '/')} |"
        for e in reversed(entries[-DESCRIBED_MOVES:])
    ]
    return "\n".join(
        [
            "Registered by inspectflow. `@champion` moves only through the pipeline's gate, `inspectflow "
            "models promote` or `inspectflow models rollback`; each move is recorded here and in the "
            "`audit.NNNNNN` tags. An alias set in this UI is not recorded: `inspectflow models history` "
            "flags it.",
            "",
            f"**Aliases now**: {aliases}",
            "",
            f"**Alias moves** (newest first, the last {DESCRIBED_MOVES}):",
            "",
            "| # | time (UTC) | action | alias | from → to | who | why |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def moves_outside_the_trail(model: RegisteredModel, entries: list[AuditEntry]) -> list[str]:
    """Alias moves made without inspectflow (the MLflow UI, its API): where aliases and the trail disagree.

    An alias that points elsewhere than its last recorded move, one that is gone, and a recorded move whose
    ``from`` is not where the previous one left the alias each say that something moved it unrecorded.
    """
    found: list[str] = []
    last: dict[str, str] = {}
    for entry in entries:
        before = last.get(entry.alias)
        if before is not None and entry.from_version != before:
            found.append(
                f"{entry.alias} was on version {entry.from_version} before move {entry.seq}, but the trail "
                f"had left it on version {before}: moved outside inspectflow in between"
            )
        last[entry.alias] = entry.to_version
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    for alias, version in sorted(last.items()):
        now = aliases.get(alias)
        if now is None:
            found.append(f"{alias} was removed outside inspectflow (the trail left it on version {version})")
        elif now != version:
            found.append(
                f"{alias} points at version {now}, but the trail left it on version {version}: "
                "moved outside inspectflow (use inspectflow models promote, which records why)"
            )
    for alias in sorted(set(aliases) - set(last)):
        found.append(f"{alias} (version {aliases[alias]}) was set outside inspectflow: no move recorded")
    return found


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
    model = registered_model(client, name)
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
    model = registered_model(client, name)
    client.update_registered_model(name, description=model_description(model, audit_entries(model)))
    log.info("%s@%s: %s -> %s (%s by %s)", name, alias, entry.from_version, version, action, entry.actor)
    return entry


def audit_trail(client: MlflowClient, name: str) -> list[AuditEntry]:
    """The audit entries of registered model ``name``, oldest first.

    Raises:
        InspectflowError: No registered model ``name``.
    """
    return audit_entries(registered_model(client, name))


def registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    """Reads registered model ``name``.

    Raises:
        InspectflowError: No such model; the message says which pipeline run would register it.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise InspectflowError(
            f"no registered model named {name!r} in the MLflow registry at {client.tracking_uri}; "
            f"{_workload_hint(name)}"
        ) from None


def error_code(error: Exception) -> str:
    """The MLflow error code of an exception, such as ``RESOURCE_DOES_NOT_EXIST``; empty when none."""
    return str(getattr(error, "error_code", ""))


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
