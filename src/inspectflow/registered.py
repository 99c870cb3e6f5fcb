"""Models in the MLflow Model Registry: logging a trained model, and loading a registered one to predict.

Both directions live here so that the registry format is defined once: the register step logs with
:func:`log_model`; the gate's re-scoring, batch prediction and the pyfunc load with
:func:`load_registered_predictor`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from inspectflow.data.dataset import Dataset
from inspectflow.models.artifact import ModelSpec, Predictor
from inspectflow.names import MODEL_ARTIFACT


def load_registered_predictor(uri: str) -> Predictor:
    """Loads a registered model as a callable on float image tensors, whichever flavor it was logged in.

    Raises:
        TypeError: The model is a pyfunc that inspectflow did not write.
    """
    import mlflow

    from inspectflow.serving import ImageClassifier

    flavors = mlflow.models.get_model_info(uri).flavors
    if "pytorch" in flavors:
        predictor: Predictor = mlflow.pytorch.load_model(uri)
        return predictor
    wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if not isinstance(wrapper, ImageClassifier):
        raise TypeError(f"{uri} is not an inspectflow model")
    return wrapper.predictor


def registered_spec(uri: str) -> ModelSpec:
    """Reads the spec a registered model was logged with (see :func:`log_model`).

    Versions logged before the spec travelled with them carry ``classes``, ``image_side`` and ``channels``.
    """
    import mlflow

    from inspectflow.imaging import Preprocess

    metadata = mlflow.models.get_model_info(uri).metadata or {}
    if "spec" in metadata:
        return ModelSpec.from_dict(dict(metadata["spec"]))
    side, channels = int(metadata["image_side"]), int(metadata["channels"])
    return ModelSpec("unknown", list(metadata["classes"]), Preprocess("resize", side, side, channels))


def log_model(predictor: Predictor, spec: ModelSpec, model_dir: Path, dataset: Dataset, flavor: str) -> Any:
    """Logs the model to the active MLflow run.

    ``pytorch`` logs a pt2 export with its signature and input example, loadable without inspectflow;
    ``pyfunc`` logs the model directory behind :class:`~inspectflow.serving.ImageClassifier`, which takes
    image paths or arrays of any size.

    Returns:
        MLflow's ``ModelInfo``.
    """
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    import inspectflow
    from inspectflow.imaging import to_tensor
    from inspectflow.serving import ImageClassifier

    # The +cpu local tag of the installed torch is not installable from PyPI: name the release.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    # The spec travels with the registered model: prediction brings images to its input and applies its
    # thresholds as training and evaluation did.
    metadata = {"spec": asdict(spec)}
    if flavor == "pyfunc":
        # No signature: the model takes paths or arrays of any size, which no MLflow schema describes, and
        # MLflow would refuse every input that does not match the one it inferred.
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=ImageClassifier(),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            # The wrapper's code travels with the model, so serving needs no inspectflow install.
            code_paths=[str(Path(inspectflow.__file__).parent)],
            pip_requirements=[*requirements, "scikit-learn", "pillow", "pandas", "torchvision==0.28.0"],
            metadata=metadata,
        )
    tensor = to_tensor(dataset.split("test")[0][:2])
    with torch.no_grad():
        signature = infer_signature(tensor.numpy(), predictor(tensor).numpy())
    return mlflow.pytorch.log_model(
        predictor,
        name=MODEL_ARTIFACT,
        input_example=tensor.numpy(),
        signature=signature,
        pip_requirements=requirements,
        metadata=metadata,
    )
