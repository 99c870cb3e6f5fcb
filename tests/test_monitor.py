"""The drift watch: its statistics, the reference each registered version keeps, `inspectflow monitor`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import TINY_SIDE, run_steps, tiny_config
from inspectflow.cli import cli
from inspectflow.config import TEXTILE_CLASSES
from inspectflow.errors import DataError, InspectflowError
from inspectflow.monitoring.drift import Profile, check_level, compare, describe
from inspectflow.monitoring.watch import detail, lot_of, monitor, reference_rows

# -- the statistics ---------------------------------------------------------------------------------------


def profile(features: np.ndarray, brightness: float = 0.5, channels: int = 1, seed: int = 0) -> Profile:
    n = len(features)
    rng = np.random.default_rng(seed)
    return Profile(
        features=features,
        brightness=rng.normal(brightness, 0.05, n),
        contrast=rng.normal(0.2, 0.02, n),
        sharpness=rng.normal(1.5, 0.1, n),
        grain=rng.normal(1.2, 0.1, n),
        width=np.full(n, 64),
        height=np.full(n, 64),
        channels=np.full(n, channels),
        outcomes=np.array(["good", "hole"] * (n // 2)),
        lots=np.full(n, ""),
    )


def lots(count: int, size: int, seed: int, offset: float = 0.0) -> np.ndarray:
    """Features of ``count`` lots of ``size`` consecutive images: each lot shifted its own way."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(offset, 1.0, size=(count, 1, 16))
    return (centres + rng.normal(0, 0.5, size=(count, size, 16))).reshape(count * size, 16)


def test_a_new_lot_is_judged_against_the_spread_between_lots_not_between_images() -> None:
    reference = profile(lots(10, 20, seed=0))
    new_lot = profile(lots(1, 20, seed=1), seed=1)
    level = check_level(0.05, 24)

    lot_aware = compare(reference, new_lot, level)
    features = next(test for test in lot_aware.tests if test.name == "features")
    shifted = compare(reference, profile(lots(1, 20, seed=2, offset=4.0), seed=2), level)

    assert not lot_aware.drift, describe(lot_aware)
    assert lot_aware.window == 20 and lot_aware.windows == 181  # every start
    assert features.effect < 3
    # the same lot against the images one by one (a reference of one lot) reads as drift
    assert compare(profile(lots(1, 200, seed=0)), new_lot, level).drift
    assert shifted.drifted == ["features"]
    assert next(test for test in shifted.tests if test.name == "features").effect > 3
    assert describe(shifted).startswith("drift: features ") and "x a normal lot's shift (p < " in describe(
        shifted
    )


def test_the_level_is_the_days_false_alarm_rate_over_its_checks_then_over_the_tests() -> None:
    rng = np.random.default_rng(1)
    comparison = compare(profile(rng.normal(size=(100, 16))), profile(rng.normal(size=(40, 16))), 0.01)

    assert check_level(0.05, 24) == pytest.approx(0.05 / 24)
    assert comparison.level == pytest.approx(0.01 / 6)  # features, four image statistics, size
    assert [test.name for test in comparison.tests if not test.decides] == ["prediction mix"]


def test_brighter_images_or_new_channel_counts_are_drift() -> None:
    rng = np.random.default_rng(2)
    reference = profile(rng.normal(size=(100, 16)))

    brighter = compare(reference, profile(rng.normal(size=(50, 16)), brightness=0.7, seed=3))
    colour = compare(reference, profile(rng.normal(size=(50, 16)), channels=3, seed=4))

    assert brighter.drift and brighter.drifted == ["brightness"]
    assert colour.drift and colour.drifted == ["3-channel images"]


def twice(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` float images enlarged 2x, bilinear."""
    height, width = images.shape[1:]
    enlarged = [
        Image.fromarray(image.astype(np.float32)).resize((2 * width, 2 * height), Image.Resampling.BILINEAR)
        for image in images
    ]
    return np.stack([np.asarray(image) for image in enlarged])


def test_blur_lowers_sharpness_a_zoom_lowers_grain_and_a_darker_copy_keeps_both() -> None:
    rng = np.random.default_rng(5)
    texture = twice(rng.normal(120, 40, size=(4, 32, 32))) + rng.normal(0, 12, size=(4, 64, 64))
    shifted = [np.roll(texture, shift, axis) for shift, axis in ((1, 1), (1, 2), ((1, 1), (1, 2)))]
    blurred = (texture + sum(shifted)) / 4
    zoomed = twice(texture[:, 16:48, 16:48])  # the central half, enlarged back

    def of(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return detail(images.clip(0, 255).astype(np.uint8)[..., np.newaxis])

    sharpness, grain = of(texture)
    darker = of(texture * 0.8)

    assert (of(blurred)[0] < 0.8 * sharpness).all()
    assert (of(zoomed)[1] < 0.5 * grain).all()
    assert darker[0] == pytest.approx(sharpness, rel=0.05) and darker[1] == pytest.approx(grain, rel=0.05)


def test_known_lots_are_where_reference_windows_start() -> None:
    assert lot_of("images/kos12_Part3.jpg", "prefix") == "kos12"
    assert lot_of("Class4/Train/0001.PNG", "folder") == "Class4/Train"
    assert lot_of("Class4/Train/0001.PNG", "order") == ""
    reference = profile(lots(10, 20, seed=0))
    reference.lots = np.repeat([f"lot{i}" for i in range(10)], 20)

    whole = compare(reference, profile(lots(1, 20, seed=1), seed=1))

    assert whole.window == 20 and whole.windows == 10  # the ten whole lots, not 181 runs


def test_a_reference_keeps_whole_runs_of_consecutive_images() -> None:
    assert reference_rows(10, 20).tolist() == list(range(10))
    rows = reference_rows(1000, 128)
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    assert len(rows) == 128 and [len(run) for run in runs] == [32] * 4
    assert rows[0] == 0 and rows[-1] == 999


def test_a_profile_round_trips_through_its_file(tmp_path: Path) -> None:
    original = profile(np.random.default_rng(3).normal(size=(10, 4)).astype(np.float32))
    original.save(tmp_path / "reference.npz")

    loaded = Profile.load(tmp_path / "reference.npz")

    assert all(np.array_equal(getattr(loaded, name), getattr(original, name)) for name in vars(original))


# -- a registered model and its reference -------------------------------------------------------------------


def write_patches(root: Path, count: int, seed: int, kind: str = "fabric") -> Path:
    """Writes 16x16 grayscale PNGs, a folder per textile class: smooth fabric, or stripes (other)."""
    rng = np.random.default_rng(seed)
    for number in range(count):
        if kind == "fabric":
            pixels = rng.normal(110, 25, size=(TINY_SIDE, TINY_SIDE))
        else:
            pixels = np.tile(np.where(np.arange(TINY_SIDE) % 4 < 2, 230.0, 20.0), (TINY_SIDE, 1))
            pixels += rng.normal(0, 5, size=pixels.shape)
        folder = root / TEXTILE_CLASSES[number % len(TEXTILE_CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(folder / f"{number:04d}.png")
    return root


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny textile classifier registered from 96 fabric patches; yields the store's folder."""
    root = tmp_path_factory.mktemp("monitor")
    source = write_patches(root / "source", 96, seed=0)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            assert run_steps(source, root / "work", tiny_config().to_dict())["alias"] == "champion"
            yield root
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture
def store(registered: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module's store as this test's tracking URI (the CLI reads MLFLOW_TRACKING_URI)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered / 'mlflow.db'}")
    return registered


def test_held_back_images_of_the_training_kind_are_no_drift_and_the_check_is_logged(
    store: Path, tmp_path: Path
) -> None:
    held_back = write_patches(tmp_path / "new", 60, seed=1)

    check = monitor(tiny_config(), str(held_back))

    assert check.verdict == "no drift", check.line()
    assert check.images == 60 and check.model == "textile-classifier version 1"
    run = mlflow.get_run(check.run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "textile-monitoring"
    assert run.data.tags["monitor.verdict"] == "no drift"
    assert run.data.tags["monitor.model"] == "textile-classifier version 1"
    assert 0 < run.data.metrics["drift/features_p_value"] <= 1
    assert run.data.metrics["drift/features_effect"] > 0
    assert run.data.params["check_level"] == str(0.05 / 24)
    assert sum(v for k, v in run.data.metrics.items() if k.startswith("mix/")) == pytest.approx(1.0)
    report = Path(mlflow.artifacts.download_artifacts(run_id=check.run_id, artifact_path="monitoring"))
    page = (report / "drift_report.html").read_text()
    assert "<h1>no drift</h1>" in page and "normal lots' shifts" in page
    assert page.count('alt="new image"') == 8  # the images most unlike the reference
    assert (report / "drift.png").stat().st_size > 0


def test_the_cli_exits_3_on_drift_and_0_without(store: Path, tmp_path: Path) -> None:
    stripes = write_patches(tmp_path / "stripes", 40, seed=2, kind="stripes")
    held_back = write_patches(tmp_path / "fabric", 40, seed=3)

    drifted = CliRunner().invoke(cli, ["monitor", "textile", str(stripes)])
    steady = CliRunner().invoke(cli, ["monitor", "textile", str(held_back)])

    assert drifted.exit_code == 3, drifted.output
    assert drifted.output.startswith(f"{stripes}: drift: features") and drifted.output.count("\n") == 1
    assert steady.exit_code == 0, steady.output
    assert "no drift" in steady.output


def test_masks_are_not_read_and_an_unreadable_file_is_skipped_by_name(store: Path, tmp_path: Path) -> None:
    images = write_patches(tmp_path / "new" / "images", 30, seed=4)
    write_patches(tmp_path / "new" / "masks", 30, seed=5, kind="stripes")
    (images / "good" / "broken.png").write_bytes(b"not a png")

    check = monitor(tiny_config(), str(tmp_path / "new"))

    assert check.images == 30 and check.verdict == "no drift", check.line()
    assert check.unreadable == [
        f"{Path('images', 'good', 'broken.png')}: " + check.unreadable[0].split(": ", 1)[1]
    ]
    assert "1 unreadable skipped" in check.line()


def test_a_folder_without_images_is_one_clear_error(store: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(DataError, match=rf"{tmp_path / 'empty'}: no image files \(\.png, .*\) to check"):
        monitor(tiny_config(), str(tmp_path / "empty"))
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"no decodable image to check \(1 unreadable; broken\.png: "):
        monitor(tiny_config(), str(tmp_path / "empty"))


def test_retrain_on_drift_waits_for_drift_and_for_new_labelled_data(store: Path, tmp_path: Path) -> None:
    source = str(store / "source")
    steady = write_patches(tmp_path / "fabric", 40, seed=6)
    stripes = write_patches(tmp_path / "stripes", 40, seed=7, kind="stripes")

    quiet = CliRunner().invoke(cli, ["retrain", "textile", "--data", source, "--on-drift", str(steady)])
    drifted = CliRunner().invoke(cli, ["retrain", "textile", "--data", source, "--on-drift", str(stripes)])

    assert quiet.exit_code == 0, quiet.output
    assert "no drift from textile-classifier version 1; nothing to retrain" in quiet.output
    assert drifted.exit_code == 3, drifted.output
    assert "is the one textile-classifier version 1 was trained on; add labelled images" in drifted.output


def test_a_reference_of_an_older_inspectflow_is_named(store: Path, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    source = client.get_model_version("textile-classifier", "1").source
    older = profile(np.zeros((4, 2)))
    np.savez_compressed(tmp_path / "reference.npz", features=older.features, brightness=older.brightness)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "reference.npz"), artifact_path="monitoring")
    version = client.create_model_version("textile-classifier", source, run_id=run.info.run_id).version

    with pytest.raises(
        InspectflowError, match=f"version {version}\\) keeps a drift reference without contrast, sharpness"
    ):
        monitor(
            tiny_config(),
            str(write_patches(tmp_path / "new", 12, seed=9)),
            f"models:/textile-classifier/{version}",
        )


def test_a_version_registered_without_a_reference_is_named(store: Path, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    source = client.get_model_version("textile-classifier", "1").source
    with mlflow.start_run() as bare:  # a version of an older inspectflow: a run without monitoring/
        pass
    version = client.create_model_version("textile-classifier", source, run_id=bare.info.run_id).version

    with pytest.raises(InspectflowError, match=f"version {version}\\) keeps no drift reference"):
        monitor(
            tiny_config(),
            str(write_patches(tmp_path / "new", 12, seed=8)),
            f"models:/textile-classifier/{version}",
        )
