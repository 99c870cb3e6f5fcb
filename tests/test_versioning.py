"""The versioned data folder: DVC-equal data versions, the demo sets, imports from folders and S3."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from inspectflow.data import versioning
from inspectflow.data.transfer import local_copy
from inspectflow.data.versioning import find_dvc_repo, import_dataset, record, write_demo
from inspectflow.errors import DataError, InspectflowError
from inspectflow.lineage import data_version

REPO_ROOT = Path(__file__).parents[1]
DVC = Path(sys.executable).with_name("dvc")
BUCKET = "inspectflow-data"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dvc(repo: Path, *args: str) -> str:
    result = subprocess.run(
        [str(DVC), *args], cwd=repo, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def dvc_out_md5(dvc_file: Path) -> str:
    [out] = yaml.safe_load(dvc_file.read_text())["outs"]
    return str(out["md5"])


def leftovers(data_root: Path, workload: str) -> list[str]:
    """Names beside ``data_root/<workload>`` that an import may leave: incoming or previous folders."""
    return sorted(
        p.name
        for p in data_root.iterdir()
        if p.name == f".{workload}.incoming" or p.name.startswith(f"{workload}.previous-")
    )


@pytest.fixture
def dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh git + DVC repository in ``tmp_path/repo``."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, timeout=30)
    dvc(repo, "init", "-q")
    return repo


# -- data_version --------------------------------------------------------------------------------------------


def test_data_version_equals_the_md5_dvc_add_records(dvc_repo: Path) -> None:
    folder = dvc_repo / "data" / "set"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)) * 7)
    (folder / "sub" / "deeper" / "c.csv").write_text("x,y\n1,2\n")
    single = dvc_repo / "data" / "single.bin"
    single.write_bytes(b"\x00\x01" * 1000)
    ours = data_version(folder), data_version(single)  # before DVC has ever seen the folder

    dvc(dvc_repo, "add", "data/set", "data/single.bin")

    recorded = dvc_out_md5(dvc_repo / "data" / "set.dvc"), dvc_out_md5(dvc_repo / "data" / "single.bin.dvc")
    assert ours == recorded
    assert ours[0].endswith(".dir") and not ours[1].endswith(".dir")
    assert data_version(folder) == recorded[0]  # and unchanged once the folder is tracked


def test_data_version_of_a_missing_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such"):
        data_version(tmp_path / "no-such")


# -- write_demo ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # synthesizes all three demo sets (about 10 s)
def test_the_demo_sets_are_the_version_data_dvc_records(tmp_path: Path) -> None:
    assert all(write_demo(tmp_path, ["textile", "dagm", "inserts"]).values())
    assert data_version(tmp_path) == dvc_out_md5(REPO_ROOT / "data.dvc")


def test_write_demo_keeps_an_existing_folder(tmp_path: Path) -> None:
    assert write_demo(tmp_path, ["textile"]) == {"textile": True}
    before = snapshot(tmp_path / "textile")
    (tmp_path / "textile" / "train64.csv").write_text("edited by hand\n")

    assert write_demo(tmp_path, ["textile"]) == {"textile": False}

    after = snapshot(tmp_path / "textile")
    assert after["train64.csv"] == b"edited by hand\n"  # left alone, not re-synthesized
    assert {k: v for k, v in after.items() if k != "train64.csv"} == {
        k: v for k, v in before.items() if k != "train64.csv"
    }


# -- import_dataset from a local folder ----------------------------------------------------------------------


def test_import_from_a_class_folder_tree(folders_dir: Path, tmp_path: Path) -> None:
    data_root = tmp_path / "data"  # created by the import

    result = import_dataset("textile", str(folders_dir), data_root)

    assert result.path == data_root / "textile"
    assert result.layout == "folders"
    assert result.files == 24  # 6 classes x 4 images
    assert result.kept_previous is None
    assert snapshot(result.path) == snapshot(folders_dir)
    assert leftovers(data_root, "textile") == []


def test_import_from_the_kaggle_layout_keeps_the_data_version(kaggle_dir: Path, tmp_path: Path) -> None:
    result = import_dataset("textile", str(kaggle_dir), tmp_path / "data")

    assert result.layout == "kaggle-h5"
    assert result.files == len(snapshot(kaggle_dir))
    assert data_version(result.path) == data_version(kaggle_dir)


def test_a_source_in_no_supported_layout_fails_and_leaves_the_current_data_untouched(
    folders_dir: Path, tmp_path: Path
) -> None:
    data_root = tmp_path / "data"
    import_dataset("textile", str(folders_dir), data_root)
    before = snapshot(data_root / "textile")
    junk = tmp_path / "junk"
    (junk / "docs").mkdir(parents=True)
    (junk / "notes.txt").write_text("not images\n")
    (junk / "docs" / "readme.md").write_text("# nothing to see\n")

    with pytest.raises(DataError, match="not a dataset in a supported layout") as caught:
        import_dataset("textile", str(junk), data_root)

    assert str(junk) in str(caught.value)
    assert snapshot(data_root / "textile") == before
    assert leftovers(data_root, "textile") == []
    assert sorted(p.name for p in data_root.iterdir()) == ["textile"]


def test_a_missing_or_empty_source_fails_without_leftovers(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    with pytest.raises(DataError, match="not a folder"):
        import_dataset("textile", str(tmp_path / "missing"), data_root)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no files"):
        import_dataset("textile", str(tmp_path / "empty"), data_root)
    assert list(data_root.iterdir()) == []


def test_replacing_a_folder_the_dvc_cache_does_not_hold_keeps_it_beside(
    folders_dir: Path, kaggle_dir: Path, tmp_path: Path
) -> None:
    data_root = tmp_path / "data"  # not in any DVC repository: nothing can restore the old folder
    import_dataset("textile", str(folders_dir), data_root)
    old = snapshot(data_root / "textile")

    result = import_dataset("textile", str(kaggle_dir), data_root)

    assert result.kept_previous is not None
    # Beside the data root, not inside it, where `dvc add` would record the backup as data.
    assert result.kept_previous.parent == tmp_path / "data-previous"
    assert result.kept_previous.name.startswith("textile-")
    stamp = result.kept_previous.name.removeprefix("textile-")
    datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ")  # a UTC timestamp
    assert snapshot(result.kept_previous) == old
    assert snapshot(data_root / "textile") == snapshot(kaggle_dir)
    assert not (data_root / ".textile.incoming").exists()


class _FrozenDatetime(datetime):
    """``datetime`` whose ``now`` is always the same second."""

    @classmethod
    def now(cls, tz: Any = None) -> _FrozenDatetime:
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_two_replacements_in_the_same_second_keep_both_previous_folders(
    folders_dir: Path, kaggle_dir: Path, npy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(versioning, "datetime", _FrozenDatetime)
    data_root = tmp_path / "data"
    import_dataset("textile", str(folders_dir), data_root)
    first = import_dataset("textile", str(kaggle_dir), data_root)

    second = import_dataset("textile", str(npy_dir), data_root)

    assert first.kept_previous is not None and second.kept_previous is not None
    assert first.kept_previous != second.kept_previous
    assert snapshot(first.kept_previous) == snapshot(folders_dir)
    assert snapshot(second.kept_previous) == snapshot(kaggle_dir)


def test_replacing_a_folder_whose_files_are_all_in_the_dvc_cache_deletes_it(
    dvc_repo: Path, folders_dir: Path, kaggle_dir: Path
) -> None:
    data_root = dvc_repo / "data"
    import_dataset("textile", str(folders_dir), data_root)
    old = snapshot(data_root / "textile")
    output = record(data_root / "textile")
    assert "textile.dvc" in output or (data_root / "textile.dvc").is_file()
    old_version = dvc_out_md5(data_root / "textile.dvc")

    result = import_dataset("textile", str(kaggle_dir), data_root)

    assert result.kept_previous is None
    assert leftovers(data_root, "textile") == []
    assert snapshot(data_root / "textile") == snapshot(kaggle_dir)
    # The promise behind deleting it: the old .dvc file still brings the old folder back.
    dvc(dvc_repo, "checkout", "--force", "data/textile.dvc")
    assert snapshot(data_root / "textile") == old
    assert data_version(data_root / "textile") == old_version


def test_a_folder_changed_since_dvc_add_is_kept(dvc_repo: Path, folders_dir: Path, kaggle_dir: Path) -> None:
    data_root = dvc_repo / "data"
    import_dataset("textile", str(folders_dir), data_root)
    record(data_root / "textile")
    (data_root / "textile" / "good" / "0000.png").write_bytes(b"edited after dvc add")
    changed = snapshot(data_root / "textile")

    result = import_dataset("textile", str(kaggle_dir), data_root)

    assert result.kept_previous is not None
    assert snapshot(result.kept_previous) == changed


# -- record --------------------------------------------------------------------------------------------------


def test_record_writes_the_dvc_file_with_the_data_version(dvc_repo: Path, folders_dir: Path) -> None:
    target = dvc_repo / "data" / "textile"
    shutil.copytree(folders_dir, target)

    record(target)

    assert dvc_out_md5(dvc_repo / "data" / "textile.dvc") == data_version(target)


def test_record_outside_a_dvc_repository_is_an_inspectflow_error(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "textile"
    folder.mkdir(parents=True)
    assert find_dvc_repo(folder) is None
    with pytest.raises(InspectflowError, match="not inside a DVC repository"):
        record(folder)
    assert not (tmp_path / "data" / "textile.dvc").exists()


# -- import_dataset from S3 ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint on loopback (moto's threaded server), stopped at the end."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 client of the endpoint, with dummy credentials in the environment and a fresh bucket."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def upload(client: Any, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_import_from_an_s3_prefix(s3: Any, s3_endpoint: str, kaggle_dir: Path, tmp_path: Path) -> None:
    upload(s3, kaggle_dir, "datasets/textile")
    s3.put_object(Bucket=BUCKET, Key="datasets/textile/", Body=b"")  # a folder marker, as consoles make
    s3.put_object(Bucket=BUCKET, Key="datasets/textile-old/stray.txt", Body=b"other prefix")
    data_root = tmp_path / "data"

    result = import_dataset("textile", f"s3://{BUCKET}/datasets/textile", data_root, s3_endpoint)

    assert result.layout == "kaggle-h5"
    assert result.files == len(snapshot(kaggle_dir))
    assert snapshot(result.path) == snapshot(kaggle_dir)
    assert data_version(result.path) == data_version(kaggle_dir)
    assert leftovers(data_root, "textile") == []


def test_import_from_s3_keeps_nested_class_folders(
    s3: Any, s3_endpoint: str, folders_dir: Path, tmp_path: Path
) -> None:
    upload(s3, folders_dir, "sets/fabric")

    result = import_dataset("textile", f"s3://{BUCKET}/sets/fabric/", tmp_path / "data", s3_endpoint)

    assert (result.layout, result.files) == ("folders", 24)
    assert snapshot(result.path) == snapshot(folders_dir)


def test_an_s3_prefix_with_no_objects_is_a_data_error(
    s3: Any, s3_endpoint: str, folders_dir: Path, tmp_path: Path
) -> None:
    upload(s3, folders_dir, "sets/fabric")
    data_root = tmp_path / "data"
    import_dataset("textile", str(folders_dir), data_root)
    before = snapshot(data_root / "textile")
    uri = f"s3://{BUCKET}/sets/nothing-here"

    with pytest.raises(DataError, match="no objects under this prefix") as caught:
        import_dataset("textile", uri, data_root, s3_endpoint)

    assert uri in str(caught.value)
    assert snapshot(data_root / "textile") == before
    assert leftovers(data_root, "textile") == []


def test_a_missing_bucket_is_a_data_error(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"s3://no-such-bucket/x: cannot read from S3"):
        import_dataset("textile", "s3://no-such-bucket/x", tmp_path / "data", s3_endpoint)
    assert leftovers(tmp_path / "data", "textile") == []


def test_a_pipeline_source_on_s3_is_read_from_a_temporary_local_copy(
    s3: Any, s3_endpoint: str, kaggle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(s3, kaggle_dir, "runs/textile")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # as the pipeline pods get it from their config map

    with local_copy(f"s3://{BUCKET}/runs/textile") as root:
        assert snapshot(root) == snapshot(kaggle_dir)
    assert not root.exists()  # the download is gone once ingest has read it
    with local_copy(str(kaggle_dir)) as root:
        assert root == kaggle_dir
    with pytest.raises(DataError, match="no such data folder"), local_copy(str(kaggle_dir / "missing")):
        pass


def test_an_image_without_a_checkout_reports_the_commit_and_state_it_was_built_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspectflow.lineage import GIT_COMMIT_ENV, GIT_DIRTY_ENV, GitState, git_state

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no checkout above: as in an image
    monkeypatch.setenv(GIT_COMMIT_ENV, "a" * 40)
    monkeypatch.setenv(GIT_DIRTY_ENV, "true")
    assert git_state(tmp_path) == GitState("a" * 40, True)
    monkeypatch.delenv(GIT_DIRTY_ENV)
    assert git_state(tmp_path) == GitState("a" * 40, False)
    monkeypatch.delenv(GIT_COMMIT_ENV)
    assert git_state(tmp_path) is None
