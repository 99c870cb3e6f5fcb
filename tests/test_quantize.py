"""The int8 engine: quantized from a version's ONNX export at register, checked against fp32 on the test
split, kept with the version and its check's figures, and run by ``predict`` and ``auto`` serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from conftest import run_steps, tiny_config
from inspectflow.names import INT8_AGREEMENT_TAG, INT8_METRIC_DELTA_TAG, INT8_SPEEDUP_TAG, INT8_TAG
from inspectflow.serving.predict import load_model, predict_files

pytestmark = pytest.mark.slow


def test_an_agreeing_int8_engine_is_kept_with_its_figures_and_served(
    npy_dir: Path, tracking: str, tmp_path: Path
) -> None:
    # Any agreement is enough here: random pixels teach nothing, so the figures, not the verdict, are tested.
    config = tiny_config("register.onnx=true", "register.int8=true", "register.int8_min_agreement=0.01")
    run_steps(npy_dir, tmp_path / "run", config.to_dict())
    version = MlflowClient().get_model_version("textile-classifier", "1")
    assert version.tags[INT8_TAG] == "accepted"
    assert 0.01 <= float(version.tags[INT8_AGREEMENT_TAG]) <= 1.0
    assert abs(float(version.tags[INT8_METRIC_DELTA_TAG])) <= 1.0
    assert float(version.tags[INT8_SPEEDUP_TAG]) > 0
    assert "int8 engine (ONNX Runtime, static): " in version.description
    assert load_model("models:/textile-classifier/1", "auto").engine == "int8"
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("L", (16, 16), 90).save(image)
    (record,) = predict_files("models:/textile-classifier/1", [image], batch_size=1, engine="int8")
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_an_int8_engine_that_disagrees_is_not_kept(
    npy_dir: Path, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from inspectflow.errors import InspectflowError
    from inspectflow.serving import quantize

    check_int8 = quantize.check_int8

    def disagreeing(*args: Any, **kwargs: Any) -> tuple[quantize.Int8Check, Path]:
        check, path = check_int8(*args, **kwargs)  # the real engine and figures, only the verdict forced
        return dataclasses.replace(check, accepted=False), path

    monkeypatch.setattr(quantize, "check_int8", disagreeing)
    config = tiny_config("register.onnx=true", "register.int8=true")
    run_steps(npy_dir, tmp_path / "run", config.to_dict())
    version = MlflowClient().get_model_version("textile-classifier", "1")
    assert version.tags[INT8_TAG] == "refused"
    assert "not kept" in version.description
    assert load_model("models:/textile-classifier/1", "auto").engine == "onnx"
    with pytest.raises(InspectflowError, match="has no int8 engine"):
        load_model("models:/textile-classifier/1", "int8")
