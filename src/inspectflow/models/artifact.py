"""The trained-model artifact passed from train to evaluate and register.

A model directory holds ``model.pt`` (the state dict, loaded with ``weights_only``) and ``model.json`` (what
is needed to rebuild the architecture and read its outputs: classes, input shape, architecture settings).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from inspectflow.config import TrainConfig

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"


@dataclass
class ModelSpec:
    """How to rebuild a trained model and interpret its outputs."""

    architecture: str
    classes: list[str]  # output classes of a classifier; the image groups (DAGM classes) of a segmenter
    image_side: int
    channels: int
    task: str = "classification"


def save_trained_model(model: nn.Module, spec: ModelSpec, out_dir: Path) -> None:
    """Writes the model directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out_dir / WEIGHTS_FILE)
    (out_dir / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2))


def load_trained_model(model_dir: Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuilds a trained model in eval mode from its directory."""
    from inspectflow.models.factory import build_model

    spec = ModelSpec(**json.loads((model_dir / SPEC_FILE).read_text()))
    # weights=none: the trained state dict below replaces any initialisation.
    config = TrainConfig.model_validate({"model": spec.architecture, "weights": "none"})
    model = build_model(config, len(spec.classes), spec.channels)
    model.load_state_dict(torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec
