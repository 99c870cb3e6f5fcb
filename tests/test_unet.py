"""U-Net, segmentation losses and segmentation metrics on tiny hand-made inputs."""

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from inspectflow.metrics.segmentation import (
    detection_rates,
    foreground_dice,
    foreground_iou,
    per_image_iou,
    pick_detection_threshold,
    pixel_counts,
    pooled_dice,
    pooled_iou,
)
from inspectflow.models.losses import (
    SegmentationLossName,
    bce_dice_loss,
    bce_loss,
    segmentation_loss,
    soft_dice_loss,
)
from inspectflow.models.networks.unet import UNet


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 48)])
def test_unet_returns_one_logit_channel_at_input_resolution(height: int, width: int) -> None:
    model = UNet()
    assert model(torch.rand(2, 1, height, width)).shape == (2, 1, height, width)


def test_unet_has_four_poolings_four_upsamplings_and_a_256_channel_bottleneck() -> None:
    model = UNet()
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    upsamplings = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in upsamplings] == [
        (256, 128),
        (128, 64),
        (64, 32),
        (32, 16),
    ]
    assert all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in upsamplings)
    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    # Encoder 16-32-64-128, bottleneck 256, then decoders whose first conv takes upsampled + skip channels
    # (concatenation doubles them), and the 1x1 head.
    assert [(m.in_channels, m.out_channels) for m in convs] == [
        (1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128),
        (128, 256), (256, 256),
        (256, 128), (128, 128), (128, 64), (64, 64), (64, 32), (32, 32), (32, 16), (16, 16),
        (16, 1),
    ]  # fmt: skip
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in convs[:-1])
    assert convs[-1].kernel_size == (1, 1)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs) - 1
    assert model.required_multiple == 16 and UNet(depth=3).required_multiple == 8


def test_unet_rejects_sides_that_are_not_multiples_of_16() -> None:
    with pytest.raises(ValueError, match=r"multiples of 16.*30x30"):
        UNet()(torch.rand(1, 1, 30, 30))
    with pytest.raises(ValueError, match="32x40"):
        UNet()(torch.rand(1, 1, 32, 40))
    with pytest.raises(ValueError, match="positive"):
        UNet(depth=0)


def _square_target() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = 0.2 * torch.rand(1, 1, 32, 32, generator=generator)
    target = torch.zeros(1, 1, 32, 32)
    target[..., 10:20, 12:24] = 1.0
    image = image + 0.6 * target  # a brighter rectangle on a noisy background
    return image, target


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Runs the test on one intra-op thread.

    On 32x32 tensors the threads' synchronization costs more than it saves, and on a shared 2-core
    machine a second thread waiting for a busy core made each step several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["dice", "bce", "bce+dice"])
@pytest.mark.usefixtures("one_thread")
def test_unet_overfits_one_tiny_image_with_each_loss(name: SegmentationLossName) -> None:
    torch.manual_seed(0)
    image, target = _square_target()
    model = UNet()
    loss_fn = segmentation_loss(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Each loss reaches Dice 1.0 within about 40 steps (seeds 0-4); 60 leaves a margin and stays fast.
    for _ in range(60):
        optimizer.zero_grad()
        loss = loss_fn(model(image), target)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = torch.sigmoid(model.eval()(image)) > 0.5
    dice = foreground_dice(predicted[:, 0].numpy(), target[:, 0].bool().numpy())
    assert dice > 0.9


def test_dice_loss_is_zero_for_perfect_logits_and_for_empty_on_empty() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1.0
    perfect = (2 * target - 1) * 50  # sigmoid = 0 or 1 to float precision
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)

    empty = torch.zeros(1, 1, 8, 8)
    assert soft_dice_loss(torch.full_like(empty, -50.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    # Without a defect, predicting one is penalized, and the penalty grows with its area.
    one_pixel = torch.full_like(empty, -50.0)
    one_pixel[..., 0, 0] = 50.0
    assert soft_dice_loss(one_pixel, empty).item() == pytest.approx(0.5)  # 1 - 1 / (1 + 1)
    assert soft_dice_loss(torch.full_like(empty, 50.0), empty).item() == pytest.approx(1 - 1 / 65)


def test_dice_loss_pools_the_batch_so_clean_images_do_not_dilute_a_missed_defect() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1.0  # 4 defect pixels in image 0, image 1 clean
    logits = torch.full_like(target, -50.0)  # predicts nothing anywhere
    # Pooled: 1 - 1 / (4 + 1) = 0.8, as for image 0 alone (averaged per image it would be 0.4).
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.8)


def test_bce_decreases_toward_the_correct_logits() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1.0
    direction = 2 * target - 1
    losses = [bce_loss(scale * direction, target).item() for scale in (-2.0, 0.0, 1.0, 3.0, 10.0)]
    assert losses == sorted(losses, reverse=True)
    assert losses[1] == pytest.approx(math.log(2))
    assert losses[-1] < 1e-4


def test_bce_dice_is_the_sum_and_names_resolve() -> None:
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    target = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.7).float()
    expected = bce_loss(logits, target) + soft_dice_loss(logits, target)
    assert bce_dice_loss(logits, target).item() == pytest.approx(expected.item())
    assert segmentation_loss("dice") is soft_dice_loss
    assert segmentation_loss("bce") is bce_loss
    assert segmentation_loss("bce+dice") is bce_dice_loss
    unknown: Any = "focal"  # not a SegmentationLossName, as from an unchecked config
    with pytest.raises(ValueError, match="unknown segmentation loss 'focal'"):
        segmentation_loss(unknown)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """Three 4x4 images: a partial overlap, an empty-empty image and a missed defect."""
    pred = np.zeros((3, 4, 4), dtype=bool)
    truth = np.zeros((3, 4, 4), dtype=bool)
    pred[0, 0, 0:3] = True  # 3 pixels
    truth[0, 0, 1:4] = True  # 3 pixels, 2 shared: intersection 2, union 4
    truth[2, 3, 3] = True  # 1 pixel, not predicted: intersection 0, union 1
    return pred, truth


def test_pooled_dice_and_iou_on_hand_made_masks() -> None:
    pred, truth = _masks()
    # Pooled: intersection 2, |P| = 3, |T| = 4, union 5.
    assert foreground_dice(pred, truth) == pytest.approx(2 * 2 / 7)
    assert foreground_iou(pred, truth) == pytest.approx(2 / 5)
    empty = np.zeros((2, 4, 4), dtype=bool)
    assert foreground_dice(empty, empty) == 1.0
    assert foreground_iou(empty, empty) == 1.0
    assert foreground_dice(pred, pred) == 1.0 and foreground_iou(truth, truth) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        foreground_iou(pred, truth[:2])


def test_pooled_scores_weigh_each_image_by_its_weight() -> None:
    pred, truth = _masks()
    both, predicted, true = pixel_counts(pred, truth)
    np.testing.assert_array_equal(both, [2, 0, 0])
    # The third image (one missed pixel) stands for 4 of its own pixels per mask pixel: union 4 + 4.
    weights = np.array([1.0, 1.0, 4.0])
    assert pooled_iou(both * weights, predicted * weights, true * weights) == pytest.approx(2 / 8)
    assert pooled_dice(both * weights, predicted * weights, true * weights) == pytest.approx(2 * 2 / 10)


def test_per_image_iou_on_hand_made_masks() -> None:
    pred, truth = _masks()
    np.testing.assert_allclose(per_image_iou(pred, truth), [0.5, 1.0, 0.0])


def test_detection_rates_with_a_threshold() -> None:
    fraction = np.array([0.0, 0.01, 0.05, 0.2, 0.0, 0.03, 0.02])
    defective = np.array([False, False, False, True, True, True, True])
    rates = detection_rates(fraction, defective, threshold=0.02)
    # Declared (> 0.02): images 2, 3, 5. Defective 3..6 -> TP 3, 5; FN 4, 6. Clean 0..2 -> FP 2.
    assert rates == {
        "true_positive_rate": pytest.approx(0.5),
        "false_positive_rate": pytest.approx(1 / 3),
        "true_positives": 2,
        "false_negatives": 2,
        "false_positives": 1,
        "true_negatives": 2,
        "n_defective": 4,
        "n_clean": 3,
    }
    # No clean image: the false positive rate is 0.0 and n_clean says why.
    only_defective = detection_rates(np.array([0.5]), np.array([True]), threshold=0.1)
    assert only_defective["false_positive_rate"] == 0.0 and only_defective["n_clean"] == 0
    assert only_defective["true_positive_rate"] == 1.0


def test_picked_detection_threshold_is_the_highest_clean_score_below_the_faintest_defect() -> None:
    # Clean images score up to 0.4; defects 0.45 and more.
    scores = np.array([0.0, 0.1, 0.4, 0.0, 0.45, 0.9, 0.99])
    defective = np.array([False, False, False, False, True, True, True])
    threshold = pick_detection_threshold(scores, defective, default=0.5)
    assert threshold == pytest.approx(0.4)
    rates = detection_rates(scores, defective, threshold)
    assert rates["true_positive_rate"] == 1.0 and rates["false_positive_rate"] == 0.0


def test_picked_detection_threshold_prefers_fewer_false_alarms_among_equal_cuts() -> None:
    # Cut above 0.02: TPR 2/3, FPR 0. Cut above 0.005: TPR 1, FPR 1/3. Both J = 2/3.
    scores = np.array([0.0, 0.0, 0.01, 0.008, 0.05, 0.2])
    defective = np.array([False, False, False, True, True, True])
    assert pick_detection_threshold(scores, defective, default=0.5) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("scores", "defective"),
    [
        ([0.1, 0.2], [True, True]),  # no clean image
        ([0.1, 0.2], [False, False]),  # no defective image
        ([0.3, 0.0], [False, True]),  # the cut that separates them would invert them
    ],
)
def test_picked_detection_threshold_is_the_default_without_a_cut_that_helps(
    scores: list[float], defective: list[bool]
) -> None:
    assert pick_detection_threshold(np.array(scores), np.array(defective), default=0.5) == 0.5
