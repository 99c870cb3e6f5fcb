"""The anomaly task: PatchCore learned from good parts only, end to end on a synthetic MVTec-style set."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from conftest import run_steps
from inspectflow.config import build_config, validate_config
from inspectflow.models.networks import build_model
from inspectflow.models.patchcore import PatchCore, fit, fit_head, greedy_coreset
from inspectflow.monitoring.watch import monitor
from inspectflow.serving.predict import predict_files
from inspectflow.synth.defects import draw_defect
from inspectflow.synth.mvtec import write_mvtec


def test_the_coreset_covers_every_cluster_before_it_repeats_one() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(8) * 100  # eight far-apart clusters of 50 close points each
    points = (centres[:, None, :] + torch.randn(8, 50, 8, generator=generator)).reshape(-1, 8)
    chosen = greedy_coreset(points, 8, seed=1)
    assert sorted((chosen // 50).tolist()) == list(range(8))


def test_a_fitted_model_reloads_with_its_bank_and_scores_the_same() -> None:
    torch.manual_seed(0)
    model = build_model("patchcore_lite1", 1, 1, weights="imagenet", task="anomaly")
    assert isinstance(model, PatchCore)
    images = torch.rand(6, 1, 64, 64)
    # Validation images of both kinds: fitting compares the absolute and relative maps on them.
    validation = (torch.rand(4, 1, 64, 64), np.array([False, False, True, True]))
    validation[0][2:, :, 20:30, 20:30] = 1.0
    summary = fit(
        model, [images[:3], images[3:]], 6, coreset_ratio=0.5, max_bank=40, seed=0, validation=validation
    )
    assert summary.patches == 6 * 8 * 8 and summary.kept == 40 and model.memory.shape == (40, 152)
    assert set(summary.validation_auroc) == {"absolute", "relative"}
    won = summary.validation_auroc["relative"] > summary.validation_auroc["absolute"]
    assert summary.relative == won == bool(model.relative)
    model.relative.fill_(1.0)  # the choice travels in the state dict
    reloaded = build_model("patchcore_lite1", 1, 1, weights="none", task="anomaly")
    reloaded.load_state_dict(model.state_dict())
    probe = torch.rand(2, 1, 64, 96)  # any size: the maps follow the image
    with torch.no_grad():
        maps = model.eval()(probe)
        assert maps.shape == (2, 1, 64, 96) and 0 <= float(maps.min()) <= float(maps.max()) < 1
        assert torch.allclose(reloaded.eval()(probe), maps)
    # A bank fitted before block maps were standardised per image keeps reading them unstandardised.
    older = build_model("patchcore_lite1", 1, 1, weights="none", task="anomaly")
    older.load_state_dict({k: v for k, v in model.state_dict().items() if k != "standardized"})
    assert bool(model.standardized) and not bool(older.standardized)


def test_a_synthetic_defect_changes_the_image_only_where_its_mask_lies() -> None:
    image = np.random.default_rng(0).integers(90, 160, (64, 96, 1), dtype=np.uint8)
    for seed in range(6):
        drawn, mask = draw_defect(image, np.random.default_rng(seed))
        assert drawn.shape == image.shape and drawn.dtype == np.uint8 and 0 < mask.sum() < mask.size / 4
        changed = np.abs(drawn.astype(int) - image.astype(int))[..., 0] > 0
        assert changed[mask].mean() > 0.9
        again, _ = draw_defect(image, np.random.default_rng(seed))
        assert np.array_equal(again, drawn)  # the seed decides it all


def test_the_defect_head_adds_to_the_map_and_travels_in_the_state_dict() -> None:
    torch.manual_seed(0)
    model = build_model("patchcore_lite1", 1, 1, weights="imagenet", task="anomaly")
    assert isinstance(model, PatchCore)
    good = np.random.default_rng(0).integers(80, 170, (6, 64, 64, 1), dtype=np.uint8)
    batches = [torch.from_numpy(good).permute(0, 3, 1, 2).float() / 255]
    fit(model, batches, 6, coreset_ratio=0.5, max_bank=40, seed=0)
    summary = fit_head(model, good, epochs=1, seed=0)
    assert summary.epochs == 1 and summary.gain == pytest.approx(float(model.head_gain)) and summary.gain > 0
    assert not any(p.requires_grad for p in model.parameters())  # frozen again once fitted
    probe = torch.rand(2, 1, 64, 96)
    reloaded = build_model("patchcore_lite1", 1, 1, weights="none", task="anomaly")
    reloaded.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(probe), model.eval()(probe))
        with_head = model.anomaly_map(probe)
        # A model fitted before the head loads with none: its map is the bank's distances alone.
        older = build_model("patchcore_lite1", 1, 1, weights="none", task="anomaly")
        older.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head")})
        older.eval()
        model.head_gain.zero_()
        assert float(older.head_gain) == 0 and torch.allclose(
            older.anomaly_map(probe), model.anomaly_map(probe)
        )
        assert bool((with_head >= model.anomaly_map(probe)).all())
    assert fit_head(model, good, epochs=0, seed=0).gain == 0 == float(model.head_gain)


@pytest.mark.usefixtures("tracking")
def test_a_synthetic_mvtec_category_registers_a_detector_whose_predict_agrees_with_evaluation(
    tmp_path: Path,
) -> None:
    data = write_mvtec(tmp_path / "category")
    config = build_config("bottle", ["register.min_score=0"], task="anomaly").to_dict()
    summary = run_steps(data, tmp_path / "run", config)
    assert summary["model_name"] == "bottle-detector" and summary["alias"] == "champion"
    assert {"test/image_auroc", "test/pixel_auroc", "test/aupro"} <= set(summary["metrics"])
    dataset = pd.read_csv(tmp_path / "run" / "dataset" / "manifest.csv")
    assert set(dataset.loc[dataset["split"] == "train", "label"]) == {"good"}  # no defect seen in training
    # The bank holds ImageNet features: the fitted backbone is the pip package's, untouched.
    fitted = torch.load(tmp_path / "run" / "model" / "model.pt")
    imagenet = PatchCore("imagenet").state_dict()
    assert all(torch.equal(fitted[name], imagenet[name]) for name in imagenet if name.startswith("trunk."))
    evaluation = tmp_path / "run" / "evaluation"
    drawn = {"curves.png", *(f"overlays/{kind}_1.png" for kind in ("best", "escape", "false_reject"))}
    assert all((evaluation / name).is_file() for name in drawn)
    # No defective validation image (train/ holds good parts only): the card says how the threshold was set.
    card = MlflowClient().get_model_version("bottle-detector", summary["version"]).description
    assert "0.99 quantile of good validation images' scores" in card
    table = pd.read_csv(evaluation / "per_image.csv")
    picked = [table.index[table["defective"]][0], table.index[~table["defective"]][0]]
    paths = [data / str(table.loc[i, "image"]) for i in picked]
    uri = "models:/bottle-detector@champion"
    records = list(predict_files(uri, paths, 2, mask_dir=tmp_path / "masks", engine="torch"))
    for i, record in zip(picked, records, strict=True):
        assert record["defect_score"] == pytest.approx(table.loc[i, "defect_score"], abs=1e-5)
        assert record["defective"] == table.loc[i, "detected"]
        assert Path(record["anomaly_map"]).is_file() and Path(record["mask"]).is_file()
    assert np.isfinite([r["threshold"] for r in records]).all()
    # The drift watch checks new parts against the champion's training sample, with its decisions' mix.
    check = monitor(validate_config(config), str(data / "test"))
    mix = {k: v for k, v in mlflow.get_run(check.run_id).data.metrics.items() if k.startswith("mix/")}
    assert check.images == len(table) and set(mix) <= {"mix/defective", "mix/clean"}
    assert sum(mix.values()) == pytest.approx(1.0)
