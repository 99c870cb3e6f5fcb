"""The one guarded place that imports torchvision.

torchvision 0.28.0 (the only release matching torch 2.13.0) ships on PyPI as a CUDA build. On a CPU torch
its import fails with ``operator torchvision::nms does not exist``, because its Python side registers fake
kernels for ``nms``/``qnms`` whose schemas live in the missing C++ library. Defining the two schemas first
lets ``torchvision.models`` import. ``torchvision.ops`` and ``torchvision.io`` stay unusable, so images are
decoded with Pillow everywhere. On a build whose C++ library loads, the schemas already exist and nothing
is defined.
"""

from __future__ import annotations

from types import ModuleType

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Imports torchvision, defining the missing operator schemas on CPU-only torch first."""
    global _library
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if missing and _library is None:
        _library = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it unregisters
        for name in missing:
            _library.define(_SCHEMAS[name])
    import torchvision

    return torchvision


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True
