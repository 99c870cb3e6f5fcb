"""The DAGM segmentation workload: reading the real layout, mask validation, training and evaluation."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DAGM_SAMPLES, tiny_dagm_config
from inspectflow.augment import augment, random_crops
from inspectflow.config import EvaluateConfig, RegisterConfig
from inspectflow.data.dataset import MASK_COLUMNS, load_dataset, save_dataset
from inspectflow.data.layouts import detect_layout
from inspectflow.data.layouts.dagm import parse_labels_txt
from inspectflow.errors import DataError
from inspectflow.imaging import Preprocess
from inspectflow.models.networks import build_model
from inspectflow.steps.evaluate import evaluate
from inspectflow.steps.ingest import ingest
from inspectflow.steps.register import decide
from inspectflow.steps.train import train
from inspectflow.tasks import get_task, task_for
from inspectflow.tasks.segmentation import (
    SegmentationScores,
    draw_overlays,
    native_pixels,
    predict_masks,
    score_masks,
    score_segmentation,
)
from inspectflow.validation import validate_dataset

SEGMENTATION = get_task("segmentation")


def validate(dataset, config):
    return validate_dataset(dataset, dataset.info.classes, config.validate_, task_for(config).data_rules)


@pytest.mark.skipif(not DAGM_SAMPLES.is_dir(), reason="../shared/data/dagm-samples not present")
def test_the_real_dagm_samples_ingest_and_validate_cleanly() -> None:
    config = tiny_dagm_config()
    dataset = ingest(DAGM_SAMPLES, config)
    assert dataset.info.format == "dagm" and dataset.info.classes == ["Class1", "Class2", "Class4"]
    assert len(dataset.manifest) == 15
    assert int((dataset.manifest["defect_fraction"] > 0).sum()) == 9
    assert int(dataset.manifest["defect_flag"].sum()) == 9
    assert dataset.info.preprocess == Preprocess("resize", 512, 512, 1) and dataset.masks is not None
    assert dataset.info.split_origin == "seeded"  # the samples ship Train only
    assert set(dataset.manifest["split"]) == {"train", "test"}
    report = validate(dataset, config)
    assert report.success, report.summary()


def test_labels_txt_is_parsed_as_dagm_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "Labels.txt"
    path.write_bytes(b"1\r\n0001\t1\t0001.PNG\t0\t0001_label.PNG\r\n0002\t0\t0002.PNG\t0\t0\t\r\n")
    assert parse_labels_txt(path) == {"0001.PNG": (True, "0001_label.PNG"), "0002.PNG": (False, None)}
    path.write_bytes(b"1\r\n0001 1 0001.PNG\r\n")
    with pytest.raises(DataError, match=r"Labels\.txt: line 2"):
        parse_labels_txt(path)


def test_synthetic_dagm_keeps_its_split_and_class_subsets(dagm_dir: Path) -> None:
    assert detect_layout(dagm_dir).name == "dagm"
    dataset = ingest(dagm_dir, tiny_dagm_config("data.classes=[Class2]"))
    assert set(dataset.manifest["label"]) == {"Class2"} and dataset.info.split_origin == "source"
    assert dataset.images.shape == (12, 32, 32, 1) and dataset.masks.shape == (12, 32, 32)
    assert validate(dataset, tiny_dagm_config()).success
    with pytest.raises(DataError, match=r"Class7"):
        ingest(dagm_dir, tiny_dagm_config("data.classes=[Class7]"))


def test_images_masks_layout_matches_by_stem_and_binarizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(
            tmp_path / "images" / f"p{i}.png"
        )
    soft = np.zeros((40, 40), np.uint8)
    soft[10:20, 10:20] = 200  # not a clean 255, and a faint halo that must not count
    soft[9, 10:20] = 60
    Image.fromarray(soft).save(tmp_path / "masks" / "p3_mask.png")
    # Only p3 has a mask: the others are missing theirs, which fails validation unless they are clean.
    strict = tiny_dagm_config("data.image_side=48", "data.resize=pad")
    refused = validate(ingest(tmp_path, strict), strict)
    assert not refused.success and "images/p0.png (mask_error no mask file" in refused.summary()
    config = tiny_dagm_config("data.image_side=48", "data.resize=pad", "data.missing_masks=clean")
    dataset = ingest(tmp_path, config)
    assert dataset.info.format == "images-masks"
    row = dataset.manifest.index[dataset.manifest["source"] == "images/p3.png"][0]
    assert dataset.manifest.loc[row, "defect_fraction"] == pytest.approx(100 / 1600)
    assert dataset.masks[row].sum() == 100  # padded, not resampled: the area is kept exactly
    assert dataset.masks.sum() == 100
    assert validate(dataset, config).success


def test_a_mask_of_the_wrong_size_fails_validation_naming_the_image(dagm_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dagm"
    shutil.copytree(dagm_dir, root)
    label_dir = root / "Class1" / "Train" / "Label"
    mask_file = sorted(label_dir.glob("*_label.PNG"))[0]
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask_file)
    image = mask_file.name.replace("_label", "")
    report = validate(ingest(root, tiny_dagm_config()), tiny_dagm_config())
    assert not report.success
    assert f"mask has another size: Class1/Train/{image}" in report.summary()


def test_a_labels_txt_flag_contradicting_its_mask_fails_validation(dagm_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dagm"
    shutil.copytree(dagm_dir, root)
    labels = root / "Class2" / "Test" / "Label" / "Labels.txt"
    lines = labels.read_bytes().split(b"\r\n")
    clean = next(i for i, line in enumerate(lines[1:], 1) if line.split(b"\t")[1:2] == [b"0"])
    fields = lines[clean].split(b"\t")
    lines[clean] = b"\t".join([fields[0], b"1", fields[2], b"0", b"0"])  # defective, yet no mask
    labels.write_bytes(b"\r\n".join(lines))
    report = validate(ingest(root, tiny_dagm_config()), tiny_dagm_config())
    name = fields[2].decode()
    assert "defect flag contradicts its mask" in report.summary()
    assert f"Class2/Test/{name}" in report.summary()


def test_defect_area_bounds_are_enforced(dagm_dir: Path) -> None:
    config = tiny_dagm_config("validate.max_defect_fraction=0.001")
    report = validate(ingest(dagm_dir, config), config)
    assert not report.success and "defect area" in report.summary()


def test_dataset_with_masks_round_trips(dagm_dir: Path, tmp_path: Path) -> None:
    dataset = ingest(dagm_dir, tiny_dagm_config())
    save_dataset(dataset, tmp_path / "ds")
    loaded = load_dataset(tmp_path / "ds")
    assert np.array_equal(loaded.masks, dataset.masks)
    assert set(MASK_COLUMNS) <= set(loaded.manifest.columns)


def test_images_of_many_sizes_are_each_scaled_to_one_working_shape_with_their_masks(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    sizes = [(40, 60), (80, 120), (120, 180), (60, 90), (100, 100)]  # (height, width)
    for number, (height, width) in enumerate(sizes):
        image = np.full((height, width), 90, dtype=np.uint8)
        mask = np.zeros((height, width), dtype=np.uint8)
        # A defect at the same place relative to each image: scaled alike, image and mask must still meet.
        rows, cols = slice(height // 4, height // 2), slice(width // 2, 3 * width // 4)
        image[rows, cols], mask[rows, cols] = 250, 255
        Image.fromarray(image).save(tmp_path / "images" / f"{number}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{number}.png")
    dataset = ingest(tmp_path, tiny_dagm_config())
    # The median aspect (1.5) at the 90th percentile's pixels (16960), sides rounded to 32: nothing padded.
    assert dataset.info.preprocess == Preprocess("resize", 96, 160, 1)
    assert dataset.images.shape == (5, 96, 160, 1) and dataset.masks.shape == (5, 96, 160)
    assert (dataset.images > 0).all()  # no canvas: every pixel is the image's
    for image, mask in zip(dataset.images[..., 0], dataset.masks, strict=True):
        bright = image > 170
        assert (bright & (mask > 0)).sum() / (bright | (mask > 0)).sum() > 0.9
        assert 0.05 < mask.mean() < 0.1  # a sixteenth of each image, wherever its size
    # Scores count each image's own pixels: a 40x60 image is 2400 of the 96x160 it was scaled to.
    test = dataset.manifest["split"] == "test"
    own = (dataset.manifest.loc[test, "height"] * dataset.manifest.loc[test, "width"] / (96 * 160)).tolist()
    assert native_pixels(dataset, "test") == pytest.approx(own)
    # A mask predicted at the working size goes back onto each image at its own size.
    back = dataset.info.preprocess.restore(dataset.masks[0], *sizes[0])
    assert back.shape == sizes[0] and back[11:19, 31:44].all() and not back[22:, :].any()


def test_joint_augmentation_and_crops_keep_image_and_mask_aligned() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(6, 1, 32, 32)
    mask = (image > 0.7).float()  # the mask is a function of the image: any misalignment shows
    crops, crop_masks = random_crops(image, mask, 16, generator)
    assert crops.shape == (6, 1, 16, 16)
    assert torch.equal(crop_masks, (crops > 0.7).float())
    turned, turned_mask = augment((crops.clone(), crop_masks.clone()), generator)
    assert torch.equal(turned_mask, (turned > 0.7).float())


def test_segmentation_training_evaluation_and_overlays(dagm_dir: Path, tmp_path: Path) -> None:
    config = tiny_dagm_config("train.epochs=2")
    dataset = ingest(dagm_dir, config)
    epochs = []
    result = train(SEGMENTATION, dataset, config.train, tmp_path / "ckpt", lambda e, m: epochs.append(m))
    assert result.spec.task == "segmentation" and {"val/iou", "val/dice"} <= set(epochs[0])
    scores = evaluate(SEGMENTATION, result.model, dataset, config.evaluate)
    assert isinstance(scores, SegmentationScores)
    assert set(scores.per_class) == {"Class1", "Class2"}
    assert {"test/iou", "test/iou/Class1", "test/detection_fpr/Class2"} <= set(scores.metrics())
    images, _ = dataset.split("test")
    pred, image_scores = predict_masks(result.model, images, batch_size=4, threshold=0.5)
    assert image_scores.shape == (len(images),) and ((image_scores > 0.5) == pred.any(axis=(1, 2))).all()
    assert score_segmentation(dataset, pred, image_scores, config.evaluate) == scores
    paths = draw_overlays(dataset, pred, 2, tmp_path / "overlays")
    # Two panels of at least 256 px (the 32 px images enlarged) under a caption.
    assert len(paths) == 4 and all(Image.open(p).size == (2 * 256 + 8, 256 + 34) for p in paths)


def test_the_pretrained_encoder_stays_frozen_for_its_share_of_the_epochs_then_trains(
    dagm_dir: Path, tmp_path: Path
) -> None:
    settings = ["train.model=unet_lite0", "train.crop=32", "train.epochs=2", "train.max_minutes=null"]
    config = tiny_dagm_config(*settings, "train.frozen_share=0.5")  # one of two epochs
    dataset = ingest(dagm_dir, config)
    states = []
    last = tmp_path / "ckpt" / "last.pt"
    keep = lambda *_: states.append(torch.load(last)["model"])  # noqa: E731
    train(SEGMENTATION, dataset, config.train, last.parent, keep)
    initial = build_model("unet_lite0", 2, 1, "imagenet", task="segmentation")
    encoder = [n for n, _ in initial.named_parameters() if n.startswith("net.encoder.")]
    decoder = [n for n, _ in initial.named_parameters() if n.startswith("net.decoder.")]
    weights = initial.state_dict()
    assert all(torch.equal(states[0][name], weights[name]) for name in encoder)  # epoch 1: frozen
    assert not all(torch.equal(states[0][name], weights[name]) for name in decoder)
    assert not all(torch.equal(states[1][name], states[0][name]) for name in encoder)  # epoch 2: trained


def test_pooled_scores_count_each_image_at_its_own_size() -> None:
    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[:, :2, :2] = True
    pred = truth.copy()
    pred[1] = False  # the second image's defect missed
    groups, scores = np.array(["a", "a"]), np.array([0.9, 0.1])
    assert score_masks(pred, scores, truth, groups, EvaluateConfig()).iou == pytest.approx(4 / 8)
    # The second image was enlarged 2x2 to the working size: its 4 mask pixels are 1 of its own.
    weighted = score_masks(pred, scores, truth, groups, EvaluateConfig(), np.array([1.0, 0.25]))
    assert weighted.iou == pytest.approx(4 / 5) and weighted.dice == pytest.approx(8 / 9)
    assert weighted.mean_defect_iou == pytest.approx(0.5)  # per image: sizes do not matter
    assert weighted.true_area == [4.0, 1.0] and weighted.test_images == 2


def test_segmentation_scores_by_hand() -> None:
    truth = np.zeros((3, 4, 4), bool)
    truth[0, :2, :2] = True  # defective, 4 px
    pred = np.zeros_like(truth)
    pred[0, :2, :] = True  # 8 px, 4 right
    pred[2, 0, 0] = True  # a false alarm on a clean image
    image_scores = np.array([0.9, 0.2, 0.6])  # the false alarm is flagged, the faint clean image is not
    config = EvaluateConfig(detection_threshold=0.5)
    scores = score_masks(pred, image_scores, truth, np.array(["a", "a", "b"]), config)
    assert scores.iou == pytest.approx(4 / 9) and scores.dice == pytest.approx(8 / 13)
    assert scores.mean_defect_iou == pytest.approx(0.5)
    assert (scores.detection_tpr, scores.detection_fpr) == (1.0, 0.5)
    assert scores.per_class["b"]["iou"] == 0.0 and scores.per_class["a"]["iou"] == pytest.approx(0.5)


def test_the_detection_threshold_is_picked_on_validation_unless_set() -> None:
    # Validation: two defective images, one faint (below the mask threshold), and two clean ones with
    # stray pixels of lower probability.
    logits = torch.full((4, 1, 8, 8), -10.0)
    logits[0, 0, :2] = 3.0  # a clear defect, p 0.95
    logits[1, 0, :3] = -1.0  # a faint one, p 0.27: no pixel in the mask
    logits[2, 0, 0, :2] = -2.0  # stray pixels, p 0.12
    logits[3, 0, 0, :4] = -3.0  # p 0.05
    targets = torch.zeros(4, 1, 8, 8)
    targets[0, 0, :2] = targets[1, 0, :3] = 1.0
    images = torch.arange(4.0).view(4, 1, 1, 1)  # the model below looks an image's logits up by its value

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return logits[batch.flatten(1)[:, 0].long()]

    picked = SEGMENTATION.thresholds(EvaluateConfig(batch_size=3), predictor, images, targets)
    # The cut below the faint defect separates them; the threshold hugs the clean side, at the strays' score.
    assert picked["detection_threshold"] == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))))
    assert picked["mask_threshold"] == 0.5
    fixed = SEGMENTATION.thresholds(EvaluateConfig(detection_threshold=0.01), predictor, images, targets)
    assert fixed["detection_threshold"] == 0.01
    # For a target recall of one defect in two: flagging the clear one costs no false reject, and neither
    # does flagging the faint one too, so the threshold flags both, at the strays' score.
    half = SEGMENTATION.thresholds(
        EvaluateConfig(batch_size=3, target_recall=0.5), predictor, images, targets
    )
    assert half["detection_threshold"] == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))))
    # Once a stray scores between them, the faint defect costs a false reject: the target stops at one.
    logits[2, 0, 0, :2] = 0.0  # p 0.5
    stricter = SEGMENTATION.thresholds(
        EvaluateConfig(batch_size=3, target_recall=0.5), predictor, images, targets
    )
    assert stricter["detection_threshold"] == pytest.approx(0.5)


def test_the_gate_guards_per_class_iou() -> None:
    truth = np.zeros((60, 10, 10), bool)
    truth[:, :5, :5] = True  # a 25-pixel defect in every image
    groups = np.array(["Class1"] * 30 + ["Class2"] * 30)

    def scores(extra1: int, extra2: int) -> SegmentationScores:
        """Each defect found, with ``extra`` false pixels in each image of that group."""
        pred = truth.copy()
        for image, extra in enumerate([extra1] * 30 + [extra2] * 30):
            pred[image, 9, :extra] = pred[image, 8, : max(0, extra - 10)] = True
        return score_masks(pred, np.ones(60), truth, groups, EvaluateConfig())

    gate = RegisterConfig(primary_metric="iou", max_class_drop=0.05)
    assert decide(scores(5, 5), scores(17, 17), gate).promote
    blocked = decide(scores(0, 16), scores(12, 12), gate)
    assert not blocked.promote and "Class2 IoU -0.0659" in blocked.reason
