from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from inspectflow.augment import augment
from inspectflow.config import EvaluateConfig
from inspectflow.data.dataset import load_dataset, save_dataset
from inspectflow.models.artifact import load_trained_model, save_trained_model
from inspectflow.steps.evaluate import evaluate
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import train
from inspectflow.tasks import get_task, load_scores, save_scores
from inspectflow.tasks.classification import plot_confusion, score_predictions

CLASSIFICATION = get_task("classification")


@pytest.fixture
def tiny_dataset(npy_dir: Path):
    return ingest(npy_dir, tiny_config())


def test_training_logs_every_epoch_and_checkpoints(tiny_dataset, tmp_path: Path) -> None:
    seen = []
    config = tiny_config("train.epochs=2").train
    result = train(
        CLASSIFICATION, tiny_dataset, config, tmp_path / "ckpt", lambda epoch, m: seen.append((epoch, m))
    )
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy"} <= set(seen[0][1])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "last.pt"]
    checkpoint = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and "optimizer" in checkpoint
    assert result.spec.classes == tiny_dataset.info.classes


def test_training_is_seeded(tiny_dataset, tmp_path: Path) -> None:
    config = tiny_config().train
    first = train(CLASSIFICATION, tiny_dataset, config, tmp_path / "a").model.state_dict()
    second = train(CLASSIFICATION, tiny_dataset, config, tmp_path / "b").model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


class Killed(Exception):
    """Stands for the process dying after an epoch."""


def test_a_resumed_run_ends_with_the_model_of_an_uninterrupted_one(tiny_dataset, tmp_path: Path) -> None:
    config = tiny_config("train.epochs=4", "train.max_minutes=null").train
    whole = train(CLASSIFICATION, tiny_dataset, config, tmp_path / "whole")

    def die_after_two(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(CLASSIFICATION, tiny_dataset, config, tmp_path / "killed", die_after_two)
    epochs = []
    resumed = train(
        CLASSIFICATION, tiny_dataset, config, tmp_path / "killed", lambda e, m: epochs.append(e), resume=True
    )

    assert epochs == [3, 4] and len(resumed.history) == 4

    def figures(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in epoch.items() if k != "train/epoch_seconds"} for epoch in history]

    assert figures(resumed.history) == figures(whole.history)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_trained_model_round_trips(tiny_dataset, tmp_path: Path) -> None:
    result = train(
        CLASSIFICATION, tiny_dataset, tiny_config("train.channels_last=false").train, tmp_path / "ckpt"
    )
    save_trained_model(result.model, result.spec, tmp_path / "model")
    model, spec = load_trained_model(tmp_path / "model")
    batch = torch.rand(3, 1, 16, 16)
    assert spec == result.spec
    saved, trained = model.state_dict(), result.model.state_dict()  # type: ignore[attr-defined]
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    # Loaded for inference it runs channels-last: the same function, to float rounding.
    assert torch.allclose(model(batch), result.model(batch), atol=1e-5)


def test_augment_keeps_pixels_and_shape() -> None:
    batch = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    (out,) = augment((batch.clone(),), torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    assert torch.equal(out.flatten(1).sort().values, batch.flatten(1).sort().values)


def orientations_drawn(image: torch.Tensor, kind: str) -> set[bytes]:
    """The distinct orientations of ``image`` that ``augment`` draws over many samples."""
    (out,) = augment((image.repeat(200, 1, 1, 1),), torch.Generator().manual_seed(1), kind)
    return {sample.numpy().tobytes() for sample in out}


def test_augment_changes_only_the_orientations_the_setting_allows() -> None:
    square = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)
    wide = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)
    assert len(orientations_drawn(square, "auto")) == len(orientations_drawn(square, "dihedral")) == 8
    assert len(orientations_drawn(square, "flips")) == len(orientations_drawn(wide, "auto")) == 4
    assert orientations_drawn(square, "horizontal") == {
        square[0].numpy().tobytes(),
        square[0].flip(-1).numpy().tobytes(),
    }
    with pytest.raises(ValueError, match="2x3 images are not square"):
        augment((wide,), torch.Generator(), "dihedral")


def test_a_classifier_keeps_the_images_detail_and_aspect_at_the_pixels_of_its_working_square() -> None:
    def size(height: int, width: int, max_side: int = 320) -> tuple[int, int]:
        data = tiny_config(f"data.max_side={max_side}").data
        preprocess = CLASSIFICATION.working_size(np.array([[height, width]] * 3), data, 3)
        return preprocess.height, preprocess.width

    config = tiny_config("data.image_side=null", "validate.expected_side=null")
    assert config.data.max_side == 320  # a 300 px solar cell's 3 px cracks are read at its own size
    assert CLASSIFICATION.working_size(np.array([[300, 300]]), config.data, 1).height == 304
    assert size(200, 190) == (192, 192)  # within 10% of square: the square
    assert size(200, 190, max_side=160) == (160, 160)
    assert size(125, 330, max_side=160) == (96, 256)  # a tool flank: its aspect at 160x160's pixels
    assert size(125, 330) == (128, 336)  # at its own size
    assert size(60, 30) == (64, 32)  # never larger than the images


def test_scores_match_hand_computed_values() -> None:
    scores = score_predictions(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b"])
    assert scores.accuracy == 0.75
    assert scores.precision == {"a": 1.0, "b": pytest.approx(2 / 3)}
    assert scores.recall == {"a": 0.5, "b": 1.0}
    assert scores.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores.confusion == [[1, 1], [0, 2]]
    assert scores.metrics()["test/f1/b"] == pytest.approx(0.8)


def test_evaluate_scores_the_test_split_and_plots(tiny_dataset, tmp_path: Path) -> None:
    result = train(CLASSIFICATION, tiny_dataset, tiny_config().train, tmp_path / "ckpt")
    scores = evaluate(CLASSIFICATION, result.model, tiny_dataset, EvaluateConfig(batch_size=4))
    assert sum(scores.support.values()) == (tiny_dataset.manifest["split"] == "test").sum()
    plot_confusion(scores, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    save_scores(scores, tmp_path / "scores.json")
    assert repr(load_scores(tmp_path / "scores.json")) == repr(scores)  # repr: NaN (no kappa) equals NaN


def test_graded_levels_train_with_the_emd_loss_and_are_scored_by_kappa(npy_dir: Path, tmp_path: Path) -> None:
    config = tiny_config("data.ordinal=true", "train.loss=cross_entropy+emd", "register.primary_metric=kappa")
    dataset = ingest(npy_dir, config)
    save_dataset(dataset, tmp_path / "data")
    assert load_dataset(tmp_path / "data").info.ordinal  # the levels' order travels with the cached set
    result = train(CLASSIFICATION, dataset, config.train, tmp_path / "ckpt")
    scores = evaluate(CLASSIFICATION, result.model, dataset, EvaluateConfig(batch_size=4))
    assert -1 <= scores.kappa <= 1 and 0 <= scores.mean_level_error <= len(scores.classes) - 1
    assert CLASSIFICATION.baseline(dataset, config.evaluate).kappa == 0.0  # one level for all: chance
