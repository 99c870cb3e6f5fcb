"""Models in the MLflow Model Registry: logging a trained model, and loading a registered one to predict.

Both directions live here so that the registry format is defined once: the register step logs with
:func:`log_model`; the gate's re-scoring, batch prediction and the pyfunc load with
:func:`load_registered`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from inspectflow.data.dataset import Dataset
from inspectflow.errors import InspectflowError
from inspectflow.models.artifact import ModelSpec, Predictor
from inspectflow.models.onnx import ONNX_FILE
from inspectflow.names import MODEL_ARTIFACT
from inspectflow.serving.quantize import INT8_FILE

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from inspectflow.serving.quantize import Int8Check

#: What runs a registered model: PyTorch, or ONNX Runtime on the ONNX export logged with it (fp32), or on the
#: int8 engine quantized from it (kept only where it decides as fp32 does).
Engine = Literal["torch", "onnx", "int8"]
#: Each ONNX engine's file: a pytorch-flavor model keeps it in MLflow's ``extra_files/``, a pyfunc as its
#: artifact ``pyfunc.ENGINE_ARTIFACTS[engine]``.
ENGINE_FILES = {"onnx": ONNX_FILE, "int8": INT8_FILE}


def load_registered(
    uri: str, engine: Engine = "torch", idle_spin: bool = True
) -> tuple[Predictor, ModelSpec]:
    """Loads a registered model, whichever flavor it was logged in, and the spec it was logged with.

    The predictor is a callable on float image tensors; the spec says how images are brought to it and
    which thresholds apply (see :func:`log_model`). ``idle_spin`` is for an ONNX engine (see
    :class:`~inspectflow.models.onnx.OnnxPredictor`).

    Raises:
        TypeError: The model is a pyfunc that inspectflow did not write.
        InspectflowError: ``engine="onnx"`` for a version logged without an ONNX export.
    """
    import tempfile

    import mlflow

    from inspectflow.models.onnx import OnnxPredictor
    from inspectflow.serving.pyfunc import ImageModel

    info = mlflow.models.get_model_info(uri)  # one read of the MLmodel file, remote or local
    spec = _spec_from_metadata(info.metadata or {})
    # Into a folder of our own: without one, a local store hands MLflow the version's own folder, and it
    # writes a `registered_model_meta` file into another run's artifacts. Every engine loads into memory.
    with tempfile.TemporaryDirectory(prefix="inspectflow-model-") as copy:
        if "pytorch" in info.flavors and engine != "torch":
            onnx_path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=copy))
            engine_file = onnx_path / "extra_files" / ENGINE_FILES[engine]
            if not engine_file.is_file():
                raise InspectflowError(_no_onnx(uri, engine))
            return OnnxPredictor(engine_file, idle_spin), spec
        if "pytorch" in info.flavors:
            # A pt2 export (torch.export's program): already in inference mode, its layout fixed at export.
            predictor: Predictor = mlflow.pytorch.load_model(uri, dst_path=copy)
            return predictor, spec
        try:
            config = {"engine": engine, "idle_spin": idle_spin}
            model = mlflow.pyfunc.load_model(uri, dst_path=copy, model_config=config)
        except FileNotFoundError:
            raise InspectflowError(_no_onnx(uri, engine)) from None
        wrapper = model.unwrap_python_model()
    if not isinstance(wrapper, ImageModel):
        raise TypeError(f"{uri} is not an inspectflow model")
    return wrapper.predictor, spec


def _no_onnx(uri: str, engine: Engine) -> str:
    if engine == "int8":
        return (
            f"{uri} has no int8 engine (its decisions did not agree with fp32's on the test split, "
            "register.int8=false, no ONNX export, or an older version); use --engine onnx or torch"
        )
    return (
        f"{uri} was registered without an ONNX export (a features+svm model, register.onnx=false, or an "
        "older version); predict with --engine torch"
    )


def registered_spec(uri: str) -> ModelSpec:
    """Reads the spec a registered model was logged with, without loading the model."""
    import mlflow

    return _spec_from_metadata(mlflow.models.get_model_info(uri).metadata or {})


def _spec_from_metadata(metadata: dict[str, Any]) -> ModelSpec:
    """Versions logged before the spec travelled with them carry ``classes``, ``image_side``, ``channels``."""
    from inspectflow.imaging import Preprocess

    if "spec" in metadata:
        return ModelSpec.from_dict(dict(metadata["spec"]))
    side, channels = int(metadata["image_side"]), int(metadata["channels"])
    return ModelSpec("unknown", list(metadata["classes"]), Preprocess("resize", side, side, channels))


def log_model(
    predictor: Predictor,
    spec: ModelSpec,
    model_dir: Path,
    dataset: Dataset,
    flavor: str,
    onnx: bool = True,
    int8: Callable[[Path], tuple[Int8Check, Path]] | None = None,
) -> tuple[Any, Int8Check | None]:
    """Logs the model to the active MLflow run.

    ``pytorch`` logs a pt2 export with its signature and input example, loadable without inspectflow;
    ``pyfunc`` logs the model directory behind :class:`~inspectflow.serving.pyfunc.ImageModel`, which
    takes image paths or arrays of any size. With ``onnx``, a network's ONNX export (dynamic batch, height and
    width) travels with it: in ``extra_files/`` of a pytorch model, as the ``onnx`` artifact of a pyfunc.
    ``int8`` checks an int8 engine quantized from that export (``serving.quantize.check_int8``): one it
    accepts travels with it too.

    Returns:
        MLflow's ``ModelInfo``, and the int8 check (None without an ONNX export or ``int8``).
    """
    import tempfile

    from inspectflow.imaging import to_tensor

    # Two test images: the input example of the pt2 and ONNX exports and of the logged signature.
    example = to_tensor(dataset.split("test")[0][:2])
    with tempfile.TemporaryDirectory(prefix="inspectflow-onnx-") as folder:
        onnx_file = _export_onnx(predictor, example, Path(folder)) if onnx else None
        check, int8_file = int8(onnx_file) if int8 and onnx_file else (None, None)
        engines = {"onnx": onnx_file, "int8": int8_file if check and check.accepted else None}
        files = {engine: f for engine, f in engines.items() if f is not None}
        return _log_model(predictor, spec, model_dir, example, flavor, files), check


def _export_onnx(predictor: Predictor, example: torch.Tensor, folder: Path) -> Path | None:
    """The network's ONNX export in ``folder``; None for a model that is not one network (features+svm)."""
    from torch import nn

    from inspectflow.models.onnx import export_onnx

    if not isinstance(predictor, nn.Module):
        return None
    return export_onnx(predictor, example, folder / ONNX_FILE)


def _log_model(
    predictor: Predictor,
    spec: ModelSpec,
    model_dir: Path,
    tensor: torch.Tensor,
    flavor: str,
    onnx_files: dict[str, Path],
) -> Any:
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    import inspectflow
    from inspectflow.serving.pyfunc import ENGINE_ARTIFACTS, ImageModel
    from inspectflow.tasks import get_task

    # The +cpu local tag of the installed torch is not installable from PyPI: name the release.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    # The spec travels with the registered model: prediction brings images to its input and applies its
    # thresholds as training and evaluation did.
    metadata = {"spec": asdict(spec)}
    if flavor == "pyfunc":
        # No signature: the model takes paths or arrays of any size, which no MLflow schema describes, and
        # MLflow would refuse every input that does not match the one it inferred. For the same reason it
        # warns that the predict method's type hints describe no schema: they are not meant to.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Tt]ype hint", category=UserWarning)
            return mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=ImageModel(),
                artifacts={
                    MODEL_ARTIFACT: str(model_dir),
                    **{ENGINE_ARTIFACTS[engine]: str(f) for engine, f in onnx_files.items()},
                },
                # The wrapper's code travels with the model, so serving needs no inspectflow install.
                code_paths=[str(Path(inspectflow.__file__).parent)],
                pip_requirements=[
                    *requirements,
                    *([f"onnxruntime=={_version('onnxruntime')}"] if onnx_files else []),
                    "scikit-learn",
                    "pillow",
                    "pandas",
                    "torchvision==0.28.0",
                ],
                metadata=metadata,
                # Declared so that loading may override them: ``model_config={"engine": "onnx"}``.
                model_config={"engine": "torch", "idle_spin": True},
            )
    with torch.no_grad():
        signature = infer_signature(tensor.numpy(), predictor(tensor).numpy())
    if get_task(spec.task).any_input_size:
        # -1 marks a dimension MLflow exports as dynamic: the batch, and here height and width too.
        channels_in, channels_out = tensor.shape[1], signature.outputs.inputs[0].shape[1]
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels_in, -1, -1))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels_out, -1, -1))]),
        )
    return mlflow.pytorch.log_model(
        predictor,
        name=MODEL_ARTIFACT,
        input_example=tensor.numpy(),
        signature=signature,
        pip_requirements=requirements,
        metadata=metadata,
        extra_files=[str(f) for f in onnx_files.values()] or None,
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
