from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from inspectflow.components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    config: str,
    mlflow_run_id: str,
    data_version: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> None:
    """Scores the model on the test split, in MLflow and in the KFP UI.

    Args:
        dataset: The validated dataset.
        model: The trained model.
        config: Pipeline configuration as JSON.
        mlflow_run_id: The pipeline's MLflow run.
        data_version: The dataset's DVC hash; an input so that kfp's cache key changes with the data.
        evaluation: Scores (JSON) and the confusion matrix (PNG, JSON).
        metrics: Test metrics for the KFP UI.
        confusion: Confusion matrix for the KFP UI: of the classes, or of clean and defective images.
    """
    import json
    from pathlib import Path

    from inspectflow.runner.worker import call_step

    scores = call_step(
        "inspectflow.steps.evaluate:evaluate_step",
        Path(dataset.path),
        Path(model.path),
        json.loads(config),
        mlflow_run_id,
        Path(evaluation.path),
    )
    for name, value in scores.metrics().items():
        metrics.log_metric(name, value)
    confusion.log_confusion_matrix(*scores.confusion_matrix())
