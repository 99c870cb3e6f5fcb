"""The versioned data folder: ``data/<workload>``, tracked as a whole by ``data.dvc``.

Datasets enter it by :func:`write_demo` (the deterministic synthetic sets, byte for byte the ones the
repository's ``data.dvc`` records) or :func:`import_dataset` (a local folder or S3 prefix in a supported
layout); either way :func:`record` then runs ``dvc add``, so the version is hashed, cached and ready to push.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from inspectflow.errors import DataError, InspectflowError

DEMO_SEED = 0


def _demo_textile(out: Path) -> None:
    from inspectflow.synth.textile import synthesize_textile

    synthesize_textile(out, n=600, seed=DEMO_SEED)


def _demo_dagm(out: Path) -> None:
    from inspectflow.synth.dagm import synthesize_dagm

    synthesize_dagm(out, classes=2, n=200, size=256, seed=DEMO_SEED)


def _demo_inserts(out: Path) -> None:
    from inspectflow.synth.inserts import synthesize_inserts

    synthesize_inserts(out, n=300, seed=DEMO_SEED)


#: Each workload's demo set: deterministic, so every machine writes the same bytes.
DEMO_SETS: dict[str, Callable[[Path], None]] = {
    "textile": _demo_textile,
    "dagm": _demo_dagm,
    "inserts": _demo_inserts,
}


def write_demo(data_root: Path, workloads: list[str]) -> dict[str, bool]:
    """Synthesizes the demo set of each workload into ``data_root/<workload>``, keeping existing folders.

    Returns:
        For each workload, whether its folder was written (``False``: it existed and was left alone).
    """
    written = {}
    for workload in workloads:
        target = data_root / workload
        written[workload] = not target.exists()
        if written[workload]:
            DEMO_SETS[workload](target)
    return written


@dataclass
class ImportResult:
    """What :func:`import_dataset` did."""

    path: Path
    files: int
    layout: str
    kept_previous: Path | None  # where the replaced folder was moved, when DVC could not restore it


def import_dataset(
    workload: str, source: str, data_root: Path, endpoint_url: str | None = None
) -> ImportResult:
    """Copies a dataset (local folder or ``s3://bucket/prefix``) into ``data_root/<workload>``.

    The copy is checked to be in a supported layout before anything is replaced. A replaced folder is
    deleted only when the DVC cache holds every one of its files (so ``git checkout`` of the old
    ``data.dvc`` and ``dvc checkout`` bring it back); otherwise it is moved to ``<data_root>-previous/``
    with a timestamp.

    Raises:
        DataError: The source cannot be read or is in no supported layout.
    """
    from inspectflow.data.layouts import detect_layout
    from inspectflow.data.transfer import fetch

    data_root.mkdir(parents=True, exist_ok=True)
    target = data_root / workload
    incoming = data_root / f".{workload}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)  # a previous import that was interrupted
    try:
        files = fetch(source, incoming, endpoint_url)
        try:
            layout = detect_layout(incoming).name
        except DataError as exc:
            raise DataError(f"{source}: not a dataset in a supported layout ({exc})") from None
        kept = None
        if target.exists():
            cache = _dvc_cache(data_root)
            if cache is not None and _restorable(target, cache):
                shutil.rmtree(target)
            else:
                kept = _keep_aside(target, data_root)
        incoming.rename(target)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return ImportResult(target, files, layout, kept)


def _keep_aside(folder: Path, data_root: Path) -> Path:
    """Moves a folder DVC cannot restore beside the data root (not into it: `dvc add` would record it)."""
    aside = data_root.parent / f"{data_root.name}-previous"
    aside.mkdir(exist_ok=True)
    stamp = f"{folder.name}-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
    kept, count = aside / stamp, 1
    while kept.exists():  # a clock that did not move
        kept, count = aside / f"{stamp}-{count}", count + 1
    folder.rename(kept)
    return kept


def record(path: Path) -> str:
    """Records ``path`` with ``dvc add`` (hash, cache, ``.dvc`` file) and returns DVC's output.

    Raises:
        InspectflowError: ``path`` is not inside a DVC repository, or ``dvc add`` failed.
    """
    repo = find_dvc_repo(path)
    if repo is None:
        raise InspectflowError(f"{path}: not inside a DVC repository (run `dvc init` in the git repository)")
    dvc = Path(sys.executable).with_name("dvc")
    command = [str(dvc) if dvc.exists() else "dvc", "add", str(path.resolve().relative_to(repo))]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode:
        raise InspectflowError(f"`{' '.join(command)}` failed in {repo}:\n{result.stderr.strip()}")
    return result.stdout.strip()


def find_dvc_repo(start: Path) -> Path | None:
    """Returns the closest folder at or above ``start`` that holds a ``.dvc`` directory."""
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _dvc_cache(start: Path) -> Path | None:
    repo = find_dvc_repo(start)
    return None if repo is None else repo / ".dvc" / "cache" / "files" / "md5"


def _restorable(folder: Path, cache: Path) -> bool:
    from inspectflow.lineage import file_hashes

    return all((cache / md5[:2] / md5[2:]).exists() for md5 in file_hashes(folder).values())
