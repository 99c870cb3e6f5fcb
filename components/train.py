from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from inspectflow.components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset], config: str, mlflow_run_id: str, data_version: str, model: Output[Model]
) -> None:
    """Trains the configured model, with per-epoch metrics and checkpoints in MLflow.

    Args:
        dataset: The validated dataset.
        config: Pipeline configuration as JSON.
        mlflow_run_id: The pipeline's MLflow run.
        data_version: The dataset's DVC hash; an input so that kfp's cache key changes with the data.
        model: The trained model (state dict and spec).
    """
    import json
    from pathlib import Path

    from inspectflow.runner.worker import call_step

    call_step(
        "inspectflow.steps.train:train_step",
        Path(dataset.path),
        json.loads(config),
        mlflow_run_id,
        Path(model.path),
    )
