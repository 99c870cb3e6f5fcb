"""ONNX: a trained network exported with dynamic batch, height and width, run in ONNX Runtime.

The registered model carries its ONNX export beside the PyTorch one (see ``registered.log_model``), so
serving can run without torch's eager overhead: ``inspectflow predict --engine onnx``, or the pyfunc loaded
with ``model_config={"engine": "onnx"}``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

ONNX_FILE = "model.onnx"


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Exports ``model`` (in eval mode) to ``path`` with torch's exporter (``torch.export`` based).

    Batch, height and width are dynamic: a classifier serves any batch, a segmenter any image size its
    architecture allows (the export records constraints such as multiples of 32).
    """
    auto = torch.export.Dim.AUTO
    # A copy in the default memory format: the weights of a channels-last model (as it trained) would
    # be exported with layout transposes around every convolution, which made ONNX Runtime slower than eager.
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    example = example.contiguous()
    # The exporter reports each stage on stdout and through warnings: a step log needs none of it.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
        _quiet("torch.onnx", "torch.export", "onnxscript"),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: auto, 2: auto, 3: auto},),
            dynamo=True,
            # onnxscript's graph optimization (constant folding, fusions ONNX Runtime does not find on its
            # own) doubles the export time and ONNX Runtime's speed: 2.2x eager for the textile CNN here.
            optimize=True,
            verbose=False,
        )
        assert program is not None  # the exporter returns its program when given no file
        program.save(str(path))
    return path


class OnnxPredictor:
    """Maps float images ``(N, C, H, W)`` in ``[0, 1]`` to logits, as the exported network did.

    ``idle_spin``: whether ONNX Runtime's worker threads spin while they wait for the next run. Spinning is
    fastest for a process that only predicts; the inference service turns it off, as spinning workers took
    the core its event loop needs (the textile CNN served 1.9x the images a second with four clients
    without, 0.87x with one).
    """

    def __init__(self, path: Path, idle_spin: bool = True) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        if not idle_spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Runs the network on a batch."""
        batch = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: batch})
        return torch.from_numpy(logits)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
