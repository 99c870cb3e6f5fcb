"""ONNX export and serving: every architecture matches eager PyTorch to 1e-4 on probabilities, at sizes and
batch sizes other than the example it was exported with; a pyfunc model serves its ONNX export."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from conftest import tiny_config
from inspectflow.errors import InspectflowError
from inspectflow.imaging import Preprocess, to_tensor
from inspectflow.models.artifact import ModelSpec, save_trained_model
from inspectflow.models.networks import build_model
from inspectflow.models.onnx import OnnxPredictor, export_onnx
from inspectflow.serving.registered import load_registered, log_model
from inspectflow.steps.ingest import ingest

#: The largest difference of a probability between ONNX Runtime and eager PyTorch.
TOLERANCE = 1e-4


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or the sigmoid of a segmenter's one channel."""
    return torch.sigmoid(logits) if logits.ndim == 4 else torch.softmax(logits, dim=1)


@pytest.mark.parametrize(
    ("architecture", "channels", "outputs", "shapes"),
    [
        ("residual_cnn", 1, 6, [(5, 64, 64), (1, 64, 64)]),
        ("unet", 1, 1, [(3, 64, 64), (1, 96, 160)]),  # a segmenter takes any size (multiples of 16)
        pytest.param("resnet18", 3, 2, [(4, 112, 112)], marks=pytest.mark.slow),
        pytest.param("efficientnet_lite0", 3, 2, [(4, 112, 112)], marks=pytest.mark.slow),
        pytest.param("unet_lite0", 1, 1, [(2, 64, 64), (1, 96, 160)], marks=pytest.mark.slow),
    ],
)
def test_onnx_export_matches_eager_pytorch(
    architecture: str, channels: int, outputs: int, shapes: list[tuple[int, int, int]], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(architecture, outputs, channels).eval()
    onnx = OnnxPredictor(export_onnx(model, torch.rand(2, channels, 64, 64), tmp_path / "model.onnx"))
    for batch, height, width in shapes:
        images = torch.rand(batch, channels, height, width)
        with torch.no_grad():
            expected = probabilities(model(images))
        got = probabilities(onnx(images))
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= TOLERANCE


def test_a_pyfunc_model_serves_its_onnx_export(npy_dir: Path, tracking: str, tmp_path: Path) -> None:
    config = tiny_config()
    dataset = ingest(npy_dir, config)
    torch.manual_seed(0)
    model = build_model("residual_cnn", 6, 1).eval()
    spec = ModelSpec("residual_cnn", config.data.classes, Preprocess("resize", 16, 16, 1))
    save_trained_model(model, spec, tmp_path / "model")
    with mlflow.start_run():
        uri = log_model(model, spec, tmp_path / "model", dataset, "pyfunc", onnx=True)[0].model_uri
        plain = log_model(model, spec, tmp_path / "model", dataset, "pyfunc", onnx=False)[0].model_uri

    images = to_tensor(dataset.split("test")[0])
    eager, _ = load_registered(uri)
    onnx, onnx_spec = load_registered(uri, "onnx")
    assert isinstance(onnx, OnnxPredictor) and onnx_spec == spec
    with torch.no_grad():
        difference = (probabilities(onnx(images)) - probabilities(eager(images))).abs().max().item()
    assert difference <= TOLERANCE
    with pytest.raises(InspectflowError, match="without an ONNX export"):
        load_registered(plain, "onnx")
    frame = mlflow.pyfunc.load_model(uri, model_config={"engine": "onnx"}).predict(
        list(dataset.split("test")[0])
    )
    assert np.allclose(frame.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
