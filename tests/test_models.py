import time
from pathlib import Path

import pytest
import torch

from inspectflow.errors import ConfigError
from inspectflow.imaging import Preprocess
from inspectflow.models import weights
from inspectflow.models.artifact import ModelSpec, load_trained_model, save_trained_model
from inspectflow.models.networks import build_model
from inspectflow.models.networks.residual_cnn import ResidualBlock, ResidualCNN
from inspectflow.models.networks.resnet18 import build_resnet18


def test_residual_cnn_has_three_additive_blocks_and_a_dense_head() -> None:
    model = ResidualCNN(num_classes=6, in_channels=1)
    assert sum(isinstance(m, ResidualBlock) for m in model.modules()) == 3
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 6)
    assert model.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 6)  # any size: global pooling


def test_resnet18_takes_grayscale_and_freezes_all_but_the_head() -> None:
    model = build_resnet18(num_classes=4, in_channels=1, weights="none", freeze_backbone=True)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 4)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_weights_load_from_a_local_state_dict(tmp_path: Path) -> None:
    source = build_resnet18(num_classes=3, in_channels=3, weights="none", freeze_backbone=False)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    model = build_resnet18(num_classes=5, in_channels=3, weights=str(path), freeze_backbone=False)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    gray = build_resnet18(num_classes=5, in_channels=1, weights=str(path), freeze_backbone=False)
    assert torch.allclose(gray.conv1.weight[:, 0], source.conv1.weight.sum(dim=1))


def test_bad_weight_files_fail_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.pt: weights file not found"):
        build_model("residual_cnn", 6, 1, str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.pt: not a readable PyTorch state dict"):
        build_model("residual_cnn", 6, 1, str(junk))


def test_imagenet_weights_read_from_the_torch_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    reference = build_resnet18(num_classes=1000, in_channels=3, weights="none", freeze_backbone=False)
    torch.save(reference.state_dict(), cached)
    model = build_resnet18(num_classes=6, in_channels=3, weights="imagenet", freeze_backbone=False)
    assert torch.equal(model.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_missing_imagenet_weights_fail_fast_saying_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # This machine has no route to the download host; pin that so the test never downloads 45 MB.
    monkeypatch.setattr(weights, "_reachable", lambda url: False)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"hub/checkpoints/resnet18-f37072fd.pth"):
        build_resnet18(num_classes=6, in_channels=1, weights="imagenet", freeze_backbone=False)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("architecture", "task", "channels", "shape"),
    [
        ("efficientnet_lite0", "classification", 1, (2, 3)),
        ("unet_lite0", "segmentation", 3, (2, 1, 64, 64)),
    ],
)
def test_pretrained_architectures_round_trip_through_the_model_artifact(
    architecture: str, task: str, channels: int, shape: tuple[int, ...], tmp_path: Path
) -> None:
    model = build_model(architecture, 3, channels).eval()
    preprocess = Preprocess(mode="resize", height=64, width=64, channels=channels)
    spec = ModelSpec(architecture=architecture, classes=["a", "b", "c"], preprocess=preprocess, task=task)
    save_trained_model(model, spec, tmp_path / "model")
    loaded, loaded_spec = load_trained_model(tmp_path / "model")
    images = torch.rand(2, channels, 64, 64)
    with torch.no_grad():
        expected = model(images)
        assert expected.shape == shape
        # Loaded for inference it runs channels-last: the same weights, summed in another order.
        torch.testing.assert_close(loaded(images), expected, rtol=0, atol=1e-4)
    assert loaded_spec == spec
