from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from inspectflow.components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    config: str,
    mlflow_run_id: str,
    data_version: str,
) -> str:
    """Registers the model in MLflow and moves ``champion`` only if the gate passes.

    Args:
        dataset: The dataset the champion is re-scored on.
        model: The trained model.
        evaluation: The new model's scores.
        config: Pipeline configuration as JSON.
        mlflow_run_id: The pipeline's MLflow run.
        data_version: The dataset's DVC hash; an input so that kfp's cache key changes with the data.

    Returns:
        A JSON summary: run id, model version, alias, the gate's decision and reason, test metrics.
    """
    import json
    from pathlib import Path

    from inspectflow.runner.worker import call_step

    summary = call_step(
        "inspectflow.steps.register:register_step",
        Path(dataset.path),
        Path(model.path),
        Path(evaluation.path),
        json.loads(config),
        mlflow_run_id,
    )
    return json.dumps(summary)
