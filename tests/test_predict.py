"""Batch prediction with registered models: a tiny textile classifier and a tiny DAGM segmenter."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import TINY_SIDE, run_steps, tiny_config, tiny_dagm_config
from inspectflow.cli import cli
from inspectflow.config import TEXTILE_CLASSES
from inspectflow.errors import DataError
from inspectflow.serving.predict import predict_files

CLASSIFIER = "models:/textile-classifier@champion"
SEGMENTER = "models:/dagm-segmenter@champion"


@dataclass
class Store:
    """The module's MLflow store with both models registered, and the data they were trained on."""

    uri: str
    root: Path
    images: np.ndarray  # the textile training images, uint8 (N, 16, 16, 1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, dagm_dir: Path) -> Iterator[Store]:
    """Registers a tiny textile classifier and a tiny DAGM segmenter (one epoch each) in a sqlite store."""
    root = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rng = np.random.default_rng(1)
    npy = root / "npy"
    npy.mkdir()
    labels = np.repeat(np.arange(len(TEXTILE_CLASSES)), 10)
    images = rng.integers(0, 256, size=(len(labels), TINY_SIDE, TINY_SIDE, 1), dtype=np.uint8)
    np.save(npy / "X.npy", images)
    np.save(npy / "Y.npy", labels)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            # With their ONNX exports, for the engine tests.
            # The segmenter's decision threshold set for a target defect recall, as a line would sign it.
            textile = tiny_config("register.onnx=true")
            dagm = tiny_dagm_config("register.onnx=true", "evaluate.target_recall=0.95")
            assert run_steps(npy, root / "textile", textile.to_dict())["alias"] == "champion"
            assert run_steps(dagm_dir, root / "dagm", dagm.to_dict())["alias"] == "champion"
            yield Store(uri, root, images)
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture
def uses_store(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The module's store as this test's tracking URI (the CLI reads MLFLOW_TRACKING_URI)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    return store


def textile_pngs(store: Store, folder: Path) -> list[Path]:
    """Three training images as 16x16 grayscale PNGs, one upscaled to 24x20 RGB (any size and mode works)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(3):
        path = folder / f"patch{number}.png"
        Image.fromarray(store.images[number * 10, ..., 0], mode="L").save(path)
        paths.append(path)
    rgb = folder / "patch_rgb.png"
    Image.fromarray(store.images[25, ..., 0], mode="L").convert("RGB").resize((24, 20)).save(rgb)
    return [*paths, rgb]


def dagm_pngs(dagm_dir: Path, folder: Path) -> list[Path]:
    """Two DAGM test images as they are (32x32), and one resized to a non-square 48x40."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, source in enumerate(sorted((dagm_dir / "Class1" / "Test").glob("*.PNG"))[:2]):
        path = folder / f"surface{number}.png"
        path.write_bytes(source.read_bytes())
        paths.append(path)
    wide = folder / "wide.png"
    with Image.open(dagm_dir / "Class2" / "Test" / "0001.PNG") as image:
        image.resize((48, 40)).save(wide)
    return [*paths, wide]


def bad_png(folder: Path) -> Path:
    path = folder / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return path


# -- classification ------------------------------------------------------------------------------------------


def test_classifier_gives_one_record_per_image_with_probabilities_summing_to_one(
    uses_store: Store, tmp_path: Path
) -> None:
    paths = textile_pngs(uses_store, tmp_path / "in")

    records = list(predict_files(CLASSIFIER, paths, batch_size=3))

    assert [r["path"] for r in records] == [str(p) for p in paths]  # in order, across batches
    for record in records:
        assert set(record) == {"path", "label", "probability", "probabilities"}
        assert list(record["probabilities"]) == list(TEXTILE_CLASSES)
        assert record["label"] in TEXTILE_CLASSES
        assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-4)
        assert all(0.0 <= p <= 1.0 for p in record["probabilities"].values())
        assert record["probability"] == record["probabilities"][record["label"]]
        assert record["probability"] == max(record["probabilities"].values())


def test_classifier_records_do_not_depend_on_the_batch_size(uses_store: Store, tmp_path: Path) -> None:
    paths = textile_pngs(uses_store, tmp_path / "in")

    one = list(predict_files(CLASSIFIER, paths, batch_size=1))
    many = list(predict_files(CLASSIFIER, paths, batch_size=8))

    assert [r["label"] for r in one] == [r["label"] for r in many]
    for a, b in zip(one, many, strict=True):
        for name in TEXTILE_CLASSES:
            assert a["probabilities"][name] == pytest.approx(b["probabilities"][name], abs=1e-5)


def test_an_undecodable_image_gets_an_error_record_and_the_rest_are_predicted(
    uses_store: Store, tmp_path: Path
) -> None:
    [good, other, *_] = textile_pngs(uses_store, tmp_path / "in")
    bad = bad_png(tmp_path / "in")

    records = list(predict_files(CLASSIFIER, [good, bad, other], batch_size=4))

    assert [r["path"] for r in records] == [str(good), str(bad), str(other)]
    assert "label" in records[0] and "label" in records[2]
    assert records[1]["error"].startswith(f"{bad}: cannot be decoded")
    with pytest.raises(DataError, match=r"broken\.png: cannot be decoded"):
        list(predict_files(CLASSIFIER, [good, bad], batch_size=4, fail_fast=True))


def test_palette_and_sixteen_bit_images_are_predicted_as_their_faithful_copies(
    uses_store: Store, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    colour = Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).quantize(32)
    colour.save(tmp_path / "palette.png")
    colour.convert("L").save(tmp_path / "gray.png")
    wide = (rng.random((16, 16)) * 65535).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.round(wide / 257).astype(np.uint8)).save(tmp_path / "eight.png")

    names = ("palette", "gray", "wide", "eight")
    records = list(predict_files(CLASSIFIER, [tmp_path / f"{n}.png" for n in names], 4))

    palette, gray, sixteen, eight = records
    assert palette["probabilities"] == gray["probabilities"]
    assert sixteen["probabilities"] == eight["probabilities"]


# -- segmentation --------------------------------------------------------------------------------------------


def test_segmenter_writes_a_mask_at_each_images_own_size(
    uses_store: Store, dagm_dir: Path, tmp_path: Path
) -> None:
    paths = dagm_pngs(dagm_dir, tmp_path / "in")
    masks = tmp_path / "masks"

    records = list(predict_files(SEGMENTER, paths, batch_size=2, mask_dir=masks))

    assert [r["path"] for r in records] == [str(p) for p in paths]
    for path, record in zip(paths, records, strict=True):
        assert set(record) == {"path", "defect_score", "defect_area", "defective", "threshold", "mask"}
        assert 0.0 <= record["defect_area"] <= 1.0 and 0.0 <= record["defect_score"] <= 1.0
        assert isinstance(record["defective"], bool)
        mask_path = Path(record["mask"])
        assert mask_path.parent == masks and mask_path.is_file()
        with Image.open(path) as image, Image.open(mask_path) as mask:
            assert mask.size == image.size
            pixels = np.asarray(mask)
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        assert record["defect_area"] == pytest.approx((pixels > 0).mean(), abs=1e-6)
    with Image.open(records[-1]["mask"]) as mask:
        assert mask.size == (48, 40)


def test_the_segmenter_decides_with_the_threshold_it_was_registered_with(
    uses_store: Store, dagm_dir: Path, tmp_path: Path
) -> None:
    """The operating point travels with the model: set on validation, reported on test, applied by predict."""
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("dagm-segmenter", "champion")
    run = client.get_run(version.run_id)
    threshold = run.data.metrics["val/detection_threshold"]
    rates = {k: v for k, v in run.data.metrics.items() if "escape_rate" in k or "false_reject_rate" in k}
    assert rates.pop("test/baseline_escape_rate") == 1.0  # the empty mask passes every part
    assert rates.pop("test/baseline_false_reject_rate") == 0.0
    assert set(rates) == {
        f"test/{name}{bound}"
        for name in ("escape_rate", "false_reject_rate")
        for bound in ("", "_ci_low", "_ci_high")
    }
    assert all(
        rates[f"test/{n}_ci_low"] <= rates[f"test/{n}"] <= rates[f"test/{n}_ci_high"]
        for n in ("escape_rate", "false_reject_rate")
    )
    assert (
        "escape rate" in version.description
        and "set on validation for defect recall 0.95" in version.description
    )
    point = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "evaluation/operating_point.json", str(tmp_path))
        ).read_text()
    )
    assert point["threshold"] == pytest.approx(threshold) and point["target_recall"] == 0.95
    defective = sorted((dagm_dir / "Class1" / "Test").glob("*.PNG"))  # defective and clean test images

    records = list(predict_files(SEGMENTER, defective, batch_size=4, mask_dir=None))

    assert all(record["threshold"] == pytest.approx(threshold, abs=1e-6) for record in records)
    assert all(record["defective"] == (record["defect_score"] > record["threshold"]) for record in records)


def test_images_with_the_same_name_in_different_folders_get_their_own_masks(
    uses_store: Store, dagm_dir: Path, tmp_path: Path
) -> None:
    paths = [dagm_dir / "Class1" / "Test" / "0000.PNG", dagm_dir / "Class2" / "Test" / "0000.PNG"]

    records = list(predict_files(SEGMENTER, paths, batch_size=2, mask_dir=tmp_path / "m"))

    assert records[0]["mask"] != records[1]["mask"]
    assert len(list((tmp_path / "m").iterdir())) == 2


def test_segmenter_skips_an_undecodable_image(uses_store: Store, dagm_dir: Path, tmp_path: Path) -> None:
    [good, *_] = dagm_pngs(dagm_dir, tmp_path / "in")
    bad = bad_png(tmp_path / "in")

    records = list(predict_files(SEGMENTER, [bad, good], batch_size=2, mask_dir=tmp_path / "m"))

    assert "error" in records[0] and Path(records[1]["mask"]).is_file()
    assert len(list((tmp_path / "m").iterdir())) == 1


# -- the CLI -------------------------------------------------------------------------------------------------


def test_cli_predict_writes_one_json_line_per_image(uses_store: Store, tmp_path: Path) -> None:
    paths = textile_pngs(uses_store, tmp_path / "in")
    out = tmp_path / "out" / "predictions.jsonl"
    out.parent.mkdir()

    result = CliRunner().invoke(
        cli, ["predict", "textile", *map(str, paths), "--output", str(out), "--batch-size", "2"]
    )

    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == len(paths)
    records = [json.loads(line) for line in lines]
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert all(r["label"] in TEXTILE_CLASSES for r in records)
    assert f"wrote {len(paths)} predictions to {out}" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.jsonl"]


def test_cli_predict_without_output_prints_json_lines(uses_store: Store, tmp_path: Path) -> None:
    paths = textile_pngs(uses_store, tmp_path / "in")[:2]

    result = CliRunner().invoke(cli, ["predict", "textile", *map(str, paths)])

    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["path"] for r in records] == [str(p) for p in paths]


def test_cli_predict_dagm_puts_masks_beside_the_output(
    uses_store: Store, dagm_dir: Path, tmp_path: Path
) -> None:
    paths = dagm_pngs(dagm_dir, tmp_path / "in")
    out = tmp_path / "out" / "areas.jsonl"
    out.parent.mkdir()

    result = CliRunner().invoke(cli, ["predict", "dagm", *map(str, paths), "--output", str(out)])

    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(paths)
    assert all(Path(r["mask"]).parent == out.parent / "masks" for r in records)
    assert len(list((out.parent / "masks").iterdir())) == len(paths)


def test_cli_predict_with_a_bad_input_predicts_the_rest_and_exits_non_zero(
    uses_store: Store, tmp_path: Path
) -> None:
    [good, *_] = textile_pngs(uses_store, tmp_path / "in")
    bad = bad_png(tmp_path / "in")
    out = tmp_path / "out" / "predictions.jsonl"
    out.parent.mkdir()

    result = CliRunner().invoke(
        cli, ["predict", "textile", str(bad), str(good), "--output", str(out), "--batch-size", "1"]
    )

    assert result.exit_code == 1
    assert isinstance(result.exception, DataError)
    assert "1 of 2 images could not be predicted" in str(result.exception) and "broken.png" in str(
        result.exception
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert "error" in lines[0] and "label" in lines[1]


def test_cli_predict_fail_fast_stops_and_leaves_no_file(uses_store: Store, tmp_path: Path) -> None:
    [good, *_] = textile_pngs(uses_store, tmp_path / "in")
    bad = bad_png(tmp_path / "in")
    out = tmp_path / "out" / "predictions.jsonl"
    out.parent.mkdir()

    result = CliRunner().invoke(
        cli,
        ["predict", "textile", str(good), str(bad), "--output", str(out), "--batch-size", "1", "--fail-fast"],
    )

    assert result.exit_code == 1
    assert "broken.png" in str(result.exception)
    assert list(out.parent.iterdir()) == []


# -- engines -------------------------------------------------------------------------------------------------


def test_the_onnx_engine_predicts_as_pytorch_does(uses_store: Store, dagm_dir: Path, tmp_path: Path) -> None:
    textile = textile_pngs(uses_store, tmp_path / "textile")
    eager = list(predict_files(CLASSIFIER, textile, batch_size=3))
    onnx = list(predict_files(CLASSIFIER, textile, batch_size=3, engine="onnx"))
    assert [r["label"] for r in onnx] == [r["label"] for r in eager]
    for ours, theirs in zip(onnx, eager, strict=True):
        assert all(abs(ours[k] - theirs[k]) <= 1e-4 for k in theirs if k.startswith("p_"))

    surfaces = dagm_pngs(dagm_dir, tmp_path / "dagm")  # one of another size: ONNX takes any height and width
    eager = list(predict_files(SEGMENTER, surfaces, 2, tmp_path / "m1"))
    onnx = list(predict_files(SEGMENTER, surfaces, 2, tmp_path / "m2", engine="onnx"))
    for ours, theirs in zip(onnx, eager, strict=True):
        assert abs(ours["defect_score"] - theirs["defect_score"]) <= 1e-4


def test_predict_cli_takes_the_onnx_engine(uses_store: Store, tmp_path: Path) -> None:
    paths = textile_pngs(uses_store, tmp_path / "in")
    result = CliRunner().invoke(cli, ["predict", "textile", *map(str, paths), "--engine", "onnx"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [record["label"] in TEXTILE_CLASSES for record in records] == [True] * 4
