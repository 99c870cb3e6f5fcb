"""``inspectflow models`` (the registry's versions and aliases), ``compare`` and ``runs``."""

from __future__ import annotations

from pathlib import Path

import click

from inspectflow.cli.common import open_client, registered_name
from inspectflow.cli.options import JSON, WORKDIR, WORKLOAD


@click.group()
def models() -> None:
    """Registered model versions: list, promote, roll back, audit history."""


@models.command("list")
@WORKLOAD
@WORKDIR
@JSON
def models_list(workload: str, workdir: Path, as_json: bool) -> None:
    """Versions with their aliases, the test score the gate judged and its decision, newest first."""
    from inspectflow.lifecycle.aliases import list_versions
    from inspectflow.lifecycle.render import format_versions, to_json

    client = open_client(workdir)
    name = registered_name(workload, client)
    rows = list_versions(client, name)
    click.echo(to_json({"model": name, "versions": rows}) if as_json else format_versions(name, rows))


@models.command("promote")
@WORKLOAD
@click.argument("version")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@WORKDIR
def models_promote(workload: str, version: str, reason: str, workdir: Path) -> None:
    """Make VERSION the champion by hand (the gate's verdict on it is shown and recorded)."""
    from inspectflow.lifecycle.aliases import promote
    from inspectflow.lifecycle.render import format_promotion

    client = open_client(workdir)
    click.echo(format_promotion(promote(client, registered_name(workload, client), version, reason)))


@models.command("rollback")
@WORKLOAD
@click.option("--reason", default="", help="Why, for the audit trail.")
@WORKDIR
def models_rollback(workload: str, reason: str, workdir: Path) -> None:
    """Move the champion back to the previous champion."""
    from inspectflow.lifecycle.aliases import rollback
    from inspectflow.lifecycle.render import format_rollback

    client = open_client(workdir)
    click.echo(format_rollback(rollback(client, registered_name(workload, client), reason)))


@models.command("history")
@WORKLOAD
@WORKDIR
@JSON
def models_history(workload: str, workdir: Path, as_json: bool) -> None:
    """The audit trail of alias moves: who, when, from, to, why; and moves made outside inspectflow."""
    from inspectflow.lifecycle.audit import audit_entries, moves_outside_the_trail, registered_model
    from inspectflow.lifecycle.render import format_history, to_json

    client = open_client(workdir)
    name = registered_name(workload, client)
    model = registered_model(client, name)
    entries = audit_entries(model)
    outside = moves_outside_the_trail(model, entries)
    if as_json:
        click.echo(to_json({"model": name, "moves": entries, "outside_inspectflow": outside}))
    else:
        click.echo(format_history(name, entries, outside))


@click.command("compare")
@WORKLOAD
@click.option("--last", "last_n", type=click.IntRange(min=1), default=5, show_default=True)
@WORKDIR
@JSON
def compare(workload: str, last_n: int, workdir: Path, as_json: bool) -> None:
    """Recent runs side by side: differing parameters, metrics, data versions; champion marked *."""
    from inspectflow.lifecycle.comparison import compare_runs
    from inspectflow.lifecycle.render import format_table, to_json

    experiment = workload  # every workload's experiment is named after it unless configured otherwise
    comparison = compare_runs(open_client(workdir), experiment, last_n)
    click.echo(to_json(comparison) if as_json else format_table(comparison))


@click.command("runs")
@click.option("--clean", is_flag=True, help="Mark abandoned runs KILLED.")
@click.option("--last", "last_n", type=click.IntRange(min=1), default=10, show_default=True)
@WORKDIR
def runs(clean: bool, last_n: int, workdir: Path) -> None:
    """Unfinished and failed runs: which are still going, which were abandoned, and why runs failed.

    A run whose ``inspectflow run`` process on this machine is gone is marked KILLED by any command that
    opens the store; one from elsewhere (a cluster) is abandoned when its heartbeat is an hour old, and
    ``--clean`` marks it KILLED.
    """
    from inspectflow.lifecycle.runs import unfinished_runs

    found = unfinished_runs(open_client(workdir), last_n, clean)
    if not found:
        click.echo("no unfinished or failed runs")
    for run in found:
        click.echo(f"{run.run_id}  {run.status:<9}  {run.name}  {run.detail}")


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [models, compare, runs]
