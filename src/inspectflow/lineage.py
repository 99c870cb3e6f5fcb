"""Lineage: which data, code, pipeline run and packages produced an MLflow run and a model version.

The data version is the content hash DVC gives a folder (``md5`` of its ``.dir`` listing), computed with
DVC's own hashing code, so the tag on a run equals the hash ``dvc add`` writes to ``data.dvc`` and
``dvc repro`` writes to ``dvc.lock`` for the same folder, whether or not the folder is tracked.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from inspectflow.names import (
    DATA_DIGEST_TAG,
    DATA_VERSION_TAG,
    DVC_EXPERIMENT_ENV,
    DVC_EXPERIMENT_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    LINEAGE_TAG_PREFIXES,
    PACKAGE_VERSION_TAG_PREFIX,
    PIPELINE_NAME_TAG,
    PIPELINE_RUN_ID_TAG,
    PIPELINE_RUN_NAME_TAG,
)

#: Packages whose versions are tagged on every run: what decides whether a result can be reproduced.
KEY_PACKAGES = (
    "inspectflow",
    "torch",
    "torchvision",
    "numpy",
    "scikit-learn",
    "kfp",
    "mlflow",
    "dvc",
    "great-expectations",
)
#: Set in a component image, where the source tree is not a git checkout.
GIT_COMMIT_ENV = "INSPECTFLOW_GIT_COMMIT"
#: ``true`` when the image was built from a tree with uncommitted changes.
GIT_DIRTY_ENV = "INSPECTFLOW_GIT_DIRTY"


def data_version(path: Path) -> str:
    """Returns DVC's content hash of a folder (``<md5>.dir``) or file (``<md5>``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    return str(_hash(path).hash_info.value)


def file_hashes(folder: Path) -> dict[str, str]:
    """Returns the DVC (md5) hash of every file under ``folder``, by path relative to it."""
    return {"/".join(key): hash_info.value for key, _, hash_info in _hash(folder)}


def _hash(path: Path) -> Any:
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    # A throwaway in-memory object store: only the hashes are wanted, nothing is cached.
    scratch = HashFileDB(MemoryFileSystem(), "/scratch")
    return build(scratch, str(path.resolve()), LocalFileSystem(), "md5", dry_run=True)[2]


@dataclass(frozen=True)
class GitState:
    """The commit a run's code came from, and whether the working tree differed from it."""

    commit: str
    dirty: bool


def git_state(cwd: Path | None = None) -> GitState | None:
    """Returns the git commit of ``cwd`` (``None`` outside a checkout), or the one baked into an image."""
    try:
        commit = _git(["rev-parse", "HEAD"], cwd)
        dirty = bool(_git(["status", "--porcelain", "--untracked-files=no"], cwd))
    except (OSError, subprocess.CalledProcessError):
        baked = os.environ.get(GIT_COMMIT_ENV)
        return GitState(baked, os.environ.get(GIT_DIRTY_ENV) == "true") if baked else None
    return GitState(commit, dirty)


def package_versions() -> dict[str, str]:
    """Returns the installed versions of :data:`KEY_PACKAGES`."""
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lineage_tags(
    source: Path, pipeline_name: str, kfp_run_name: str, kfp_run_id: str, version: str | None = None
) -> dict[str, str]:
    """Returns the lineage tags of a pipeline run: data version, git state, kfp names, package versions.

    Args:
        source: The data folder the run reads.
        pipeline_name: The kfp pipeline's name.
        kfp_run_name: The kfp pipeline run's name.
        kfp_run_id: The kfp pipeline run's id.
        version: The data version when already known (computed by the submitter); hashed here otherwise.
    """
    git = git_state()
    tags = {
        DATA_VERSION_TAG: version or data_version(source),
        GIT_COMMIT_TAG: git.commit if git else "unknown",
        GIT_DIRTY_TAG: str(git.dirty).lower() if git else "unknown",
        PIPELINE_NAME_TAG: pipeline_name,
        PIPELINE_RUN_NAME_TAG: kfp_run_name,
        PIPELINE_RUN_ID_TAG: kfp_run_id,
    }
    if experiment := os.environ.get(DVC_EXPERIMENT_ENV):
        tags[DVC_EXPERIMENT_TAG] = experiment
    tags.update({f"{PACKAGE_VERSION_TAG_PREFIX}{name}": value for name, value in package_versions().items()})
    return tags


def tagged_data_version(tags: dict[str, str]) -> str | None:
    """The data version a run or model version is tagged with: DVC's hash, else the dataset's digest."""
    return tags.get(DATA_VERSION_TAG) or tags.get(DATA_DIGEST_TAG) or None


def recorded_data_versions(repo: Path) -> dict[str, tuple[str, str]]:
    """Returns ``{path: (md5, where)}`` for every output of ``*.dvc`` files and dependency in ``dvc.lock``.

    ``where`` names the file that records it (``data.dvc``, or ``dvc.lock:<stage>``); paths are relative
    to ``repo``.
    """
    recorded: dict[str, tuple[str, str]] = {}
    lock = repo / "dvc.lock"
    if lock.exists():
        stages: dict[str, Any] = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage, entry in stages.items():
            for dep in entry.get("deps", []):
                if "md5" in dep:
                    recorded[dep["path"]] = (dep["md5"], f"dvc.lock:{stage}")
    for dvc_file in sorted(p for p in repo.glob("*.dvc") if p.is_file()):  # not the .dvc folder
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            recorded[out["path"]] = (out["md5"], dvc_file.name)
    return recorded


def _git(args: list[str], cwd: Path | None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@dataclass
class Lineage:
    """The chain data version -> pipeline run -> MLflow run -> model version of one registered model."""

    model: str
    version: str
    aliases: list[str]
    run_id: str
    experiment: str
    tags: dict[str, str]  # the version's lineage tags
    recorded_in: list[str]  # the DVC files of ``repo`` that record this data version


def model_version(model_uri: str) -> Any:
    """The MLflow ``ModelVersion`` that ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` names.

    Raises:
        InspectflowError: The URI is not one of those.
        MlflowException: No such version.
    """
    from mlflow import MlflowClient

    from inspectflow.errors import InspectflowError

    reference = model_uri.removeprefix("models:/")
    name, at, alias = reference.partition("@")
    if not at:
        name, _, alias = reference.rpartition("/")
    if not model_uri.startswith("models:/") or not name or not alias:
        raise InspectflowError(f"{model_uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    client = MlflowClient()
    return client.get_model_version_by_alias(name, alias) if at else client.get_model_version(name, alias)


def describe(model_uri: str, repo: Path) -> Lineage:
    """Reads the lineage of ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

    Raises:
        InspectflowError: The URI is malformed or names no registered version.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from inspectflow.errors import InspectflowError

    client = MlflowClient()
    try:
        version = model_version(model_uri)
        if not version.run_id:
            raise InspectflowError(f"{model_uri}: version {version.version} was not logged from a run")
        run = client.get_run(version.run_id)
        experiment = client.get_experiment(run.info.experiment_id).name
    except MlflowException as exc:
        raise InspectflowError(f"{model_uri}: {exc.message}") from None
    tags = {k: v for k, v in version.tags.items() if k.startswith(LINEAGE_TAG_PREFIXES)}
    md5 = tags.get(DATA_VERSION_TAG)
    recorded = sorted(
        f"{where} ({path})" for path, (hash_, where) in recorded_data_versions(repo).items() if hash_ == md5
    )
    return Lineage(
        version.name, version.version, list(version.aliases), run.info.run_id, experiment, tags, recorded
    )


def format_lineage(lineage: Lineage) -> str:
    """Renders the chain, one link per block, for a terminal."""
    tags = lineage.tags
    recorded = ", ".join(lineage.recorded_in) or "not recorded in this repository's data.dvc or dvc.lock"
    dirty = " (working tree had uncommitted changes)" if tags.get(GIT_DIRTY_TAG) == "true" else ""
    if experiment := tags.get(DVC_EXPERIMENT_TAG):
        dirty = f" + DVC experiment {experiment} (its params and code: dvc exp show)"
    versions = ", ".join(
        f"{k.removeprefix(PACKAGE_VERSION_TAG_PREFIX)} {v}"
        for k, v in sorted(tags.items())
        if k.startswith(PACKAGE_VERSION_TAG_PREFIX)
    )
    aliases = ", ".join(f"@{a}" for a in lineage.aliases) or "no alias"
    lines = [
        f"data version   {tags.get(DATA_VERSION_TAG, 'unknown')}",
        f"               recorded in: {recorded}",
        f"pipeline run   {tags.get(PIPELINE_NAME_TAG, '?')} / {tags.get(PIPELINE_RUN_NAME_TAG, '?')}",
        f"               code: git {tags.get(GIT_COMMIT_TAG, 'unknown')}{dirty}",
        f"               packages: {versions or 'unknown'}",
        f"MLflow run     {lineage.run_id} (experiment {lineage.experiment})",
        f"model version  {lineage.model} version {lineage.version} ({aliases})",
    ]
    return "\n".join(lines)
