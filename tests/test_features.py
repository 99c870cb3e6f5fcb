from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from inspectflow.errors import ConfigError
from inspectflow.models.backbones import build_extractor, extract_features, resolve_layer
from inspectflow.models.efficientnet import build_efficientnet_lite0
from inspectflow.models.feature_svm import (
    SplitResult,
    cached_features,
    feature_cache_key,
    fit_classifier,
    images_digest,
    svm_repeated_splits,
    weights_identity,
)
from inspectflow.models.torchvision_compat import import_torchvision
from inspectflow.steps.ingest import ingest


def random_images(n: int, side: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, channels), dtype=np.uint8)


def test_vgg16_fc1_gives_4096_frozen_features_in_eval_mode() -> None:
    extractor, dim = build_extractor("vgg16", "none")
    assert dim == 4096
    assert not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())
    features = extract_features(extractor, random_images(3, 32), batch_size=2)
    assert features.shape == (3, 4096) and features.dtype == np.float32
    assert (features >= 0).all()  # fc1 is taken after its ReLU


def test_mobilenet_pool_and_block_cuts_give_their_widths() -> None:
    images = random_images(5, 64)
    extractor, dim = build_extractor("mobilenet_v2", "none")
    assert dim == 1280
    assert extract_features(extractor, images, batch_size=2).shape == (5, 1280)
    block, block_dim = build_extractor("mobilenet_v2", "none", layer="features.6")
    assert block_dim == 32
    assert extract_features(block, images, batch_size=4).shape == (5, 32)
    last, last_dim = build_extractor("mobilenet_v2", "none", layer="features.18")
    assert last_dim == 1280
    assert extract_features(last, np.zeros((0, 64, 64, 3), np.uint8), batch_size=4).shape == (0, 1280)


def test_features_match_a_manual_imagenet_normalisation_in_any_batching() -> None:
    extractor, _ = build_extractor("mobilenet_v2", "none", layer="features.3")
    images = random_images(4, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tensor = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        expected = extractor(tensor).numpy()
    np.testing.assert_allclose(extract_features(extractor, images, batch_size=3), expected, atol=1e-5)
    np.testing.assert_allclose(extract_features(extractor, images, batch_size=1), expected, atol=1e-5)


def test_grayscale_images_are_repeated_to_three_channels() -> None:
    extractor, _ = build_extractor("mobilenet_v2", "none", layer="features.2")
    gray = random_images(3, 32, channels=1)
    from_gray = extract_features(extractor, gray, batch_size=2)
    from_rgb = extract_features(extractor, np.repeat(gray, 3, axis=-1), batch_size=2)
    np.testing.assert_allclose(from_gray, from_rgb, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\|3\)"):
        extract_features(extractor, gray[..., 0], batch_size=2)


@pytest.mark.parametrize(
    ("backbone", "layer"),
    [("mobilenet_v2", "features.19"), ("mobilenet_v2", "features.-1"), ("mobilenet_v2", "fc1"),
     ("mobilenet_v2", "classifier"), ("vgg16", "pool"), ("efficientnet_lite0", "features.3"),
     ("efficientnet_lite0", "fc1"), ("resnet18", None)],
)  # fmt: skip
def test_bad_layers_fail_naming_the_valid_choices(backbone: str, layer: str | None) -> None:
    with pytest.raises(ValueError, match=r"pool|fc1|mobilenet_v2"):
        build_extractor(backbone, "none", layer=layer)


def test_layer_defaults_resolve_to_their_names() -> None:
    assert resolve_layer("vgg16", None) == "fc1"
    assert resolve_layer("mobilenet_v2", None) == "pool"
    assert resolve_layer("mobilenet_v2", "features.0") == "features.0"
    assert resolve_layer("efficientnet_lite0", None) == resolve_layer("efficientnet_lite0", "pool") == "pool"


def test_weights_load_from_a_state_dict_with_another_head(tmp_path: Path) -> None:
    torchvision = import_torchvision()
    source = torchvision.models.mobilenet_v2(weights=None, num_classes=6)
    path = tmp_path / "mobilenet.pt"
    torch.save(source.state_dict(), path)
    extractor, _ = build_extractor("mobilenet_v2", str(path), layer="features.1")
    assert torch.equal(extractor.state_dict()["0.1.conv.0.0.weight"], source.features[1].conv[0][0].weight)
    wrong = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ConfigError, match=r"resnet\.pt: weights do not fit MobileNetV2"):
        build_extractor("mobilenet_v2", str(wrong))


def test_efficientnet_features_load_a_finetuned_classifier_and_their_own_state(tmp_path: Path) -> None:
    classifier = build_efficientnet_lite0(num_classes=4, in_channels=1, weights="none", freeze_backbone=False)
    path = tmp_path / "finetuned.pt"
    torch.save(classifier.state_dict(), path)
    extractor, dim = build_extractor("efficientnet_lite0", str(path))
    assert dim == 1280
    assert torch.equal(extractor.state_dict()["conv_head.weight"], classifier.net.conv_head.weight)
    rebuilt, _ = build_extractor("efficientnet_lite0", "none")
    rebuilt.load_state_dict(extractor.state_dict())  # what load_trained_model does with a features+svm model
    images = random_images(2, 64, channels=1)
    np.testing.assert_array_equal(
        extract_features(rebuilt, images, batch_size=2), extract_features(extractor, images, batch_size=2)
    )
    with pytest.raises(ConfigError, match=r"finetuned\.pt: weights do not fit MobileNetV2"):
        build_extractor("mobilenet_v2", str(path))


def test_cache_computes_once_then_hits(tmp_path: Path) -> None:
    calls: list[int] = []
    expected = np.arange(12, dtype=np.float32).reshape(3, 4)

    def compute() -> np.ndarray:
        calls.append(1)
        return expected

    cache = tmp_path / "cache" / "features"
    first, hit = cached_features(cache, "abc123", compute)
    assert not hit and calls == [1]
    second, hit = cached_features(cache, "abc123", compute)
    assert hit and calls == [1]
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    assert sorted(p.name for p in cache.iterdir()) == ["abc123.npy"]  # no temporary file left behind


def test_cache_recomputes_a_damaged_file_and_rejects_path_keys(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"junk")
    features, hit = cached_features(tmp_path, "bad", lambda: np.ones((2, 2), np.float32))
    assert not hit and features.shape == (2, 2)
    assert cached_features(tmp_path, "bad", lambda: np.zeros(1))[1]
    with pytest.raises(ValueError, match="plain file name"):
        cached_features(tmp_path, "../escape", lambda: np.zeros(1))


def test_a_failed_compute_leaves_no_cache_file(tmp_path: Path) -> None:
    def fail() -> np.ndarray:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cached_features(tmp_path, "key", fail)
    assert list(tmp_path.iterdir()) == []


def test_cache_key_is_stable_short_hex_and_changes_with_each_input() -> None:
    base = feature_cache_key("mobilenet_v2", "pool", "none", "d1")
    assert base == feature_cache_key("mobilenet_v2", None, "none", "d1")  # None is the default layer
    assert len(base) == 16 and int(base, 16) >= 0
    variants = {
        feature_cache_key("vgg16", None, "none", "d1"),
        feature_cache_key("efficientnet_lite0", None, "none", "d1"),
        feature_cache_key("mobilenet_v2", "features.3", "none", "d1"),
        feature_cache_key("mobilenet_v2", "pool", "imagenet", "d1"),
        feature_cache_key("mobilenet_v2", "pool", "none", "d2"),
    }
    assert len(variants) == 5 and base not in variants


def test_features_of_the_same_images_at_another_size_or_order_are_other_features(npy_dir: Path) -> None:
    # Issue 27: features extracted at 224 px were read back for a run at 304 px of the same source.
    dataset = ingest(npy_dir, tiny_config())
    larger = replace(
        dataset, info=replace(dataset.info, preprocess=replace(dataset.info.preprocess, height=32))
    )
    reordered = replace(dataset, manifest=dataset.manifest.iloc[::-1].reset_index(drop=True))
    digests = {images_digest(d) for d in (dataset, larger, reordered)}
    assert len(digests) == 3 and images_digest(dataset) == images_digest(ingest(npy_dir, tiny_config()))


def test_weights_identity_hashes_file_contents(tmp_path: Path) -> None:
    assert weights_identity("none") == "none"
    assert weights_identity("imagenet") == "imagenet"
    path = tmp_path / "w.pt"
    path.write_bytes(b"abc")
    first = weights_identity(str(path))
    assert first == "file:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    path.write_bytes(b"abd")  # retrained in place: same path, new identity
    assert weights_identity(str(path)) != first
    with pytest.raises(ConfigError, match=r"missing\.pt: weights file not found"):
        weights_identity(str(tmp_path / "missing.pt"))


def blobs(per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = np.concatenate([rng.normal(-5, 1, (per_class, 8)), rng.normal(5, 1, (per_class, 8))])
    labels = np.repeat([0, 1], per_class)
    return features.astype(np.float32), labels


def test_svm_separates_two_blobs_on_every_split() -> None:
    features, labels = blobs()
    seen: list[SplitResult] = []
    result = svm_repeated_splits(features, labels, ["ok", "worn"], repeats=4, seed=7, on_split=seen.append)
    assert seen == result.splits
    assert [s.index for s in seen] == [0, 1, 2, 3]
    assert [s.seed for s in seen] == [7, 8, 9, 10]
    assert all(s.train_size == 28 and s.test_size == 12 for s in seen)  # stratified 70/30
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    assert result.recall_mean == {"ok": 1.0, "worn": 1.0}
    assert result.recall_std == {"ok": 0.0, "worn": 0.0}


def test_svm_recall_covers_every_class_and_std_is_the_population_std() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(30, 4)).astype(np.float32)  # pure noise: scores vary between splits
    labels = np.repeat([0, 1, 2], 10)
    result = svm_repeated_splits(features, labels, ["a", "b", "c", "absent"], kernel="linear", repeats=3)
    assert len(result.splits) == 3
    assert all(set(s.recall) == {"a", "b", "c", "absent"} for s in result.splits)
    assert result.recall_mean["absent"] == 0.0
    accuracies = [s.accuracy for s in result.splits]
    assert result.accuracy_std == pytest.approx(float(np.std(accuracies)))
    again = svm_repeated_splits(features, labels, ["a", "b", "c", "absent"], kernel="linear", repeats=3)
    assert [s.accuracy for s in again.splits] == accuracies  # seeded: reproducible


def test_svm_rejects_bad_inputs() -> None:
    features, labels = blobs(per_class=5)
    with pytest.raises(ValueError, match="repeats"):
        svm_repeated_splits(features, labels, ["a", "b"], repeats=0)
    with pytest.raises(ValueError, match="class indices"):
        svm_repeated_splits(features, labels, ["a"])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        svm_repeated_splits(features[:3], labels, ["a", "b"])


@pytest.mark.parametrize("classifier", ["svm", "logistic"])
def test_fit_classifier_gives_a_scaled_probabilistic_pipeline(classifier: str) -> None:
    features, labels = blobs()
    model = fit_classifier(features, labels, classifier, "rbf", 1.0, seed=0)
    assert [name for name, _ in model.steps] == ["scale", classifier]
    probabilities = model.predict_proba(features[:3])
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (model.predict(features) == labels).all()
