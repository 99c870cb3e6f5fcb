from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from inspectflow.components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate(
    dataset: Input[Dataset], config: str, mlflow_run_id: str, data_version: str, report: Output[HTML]
) -> None:
    """Checks the dataset against the data-quality suite; fails, naming the bad files, when it does not pass.

    Args:
        dataset: The ingested dataset.
        config: Pipeline configuration as JSON.
        mlflow_run_id: The pipeline's MLflow run.
        data_version: The dataset's DVC hash; an input so that kfp's cache key changes with the data.
        report: The HTML validation report.
    """
    import json
    from pathlib import Path

    from inspectflow.runner.worker import call_step

    call_step(
        "inspectflow.steps.validate:validate_step",
        Path(dataset.path),
        json.loads(config),
        mlflow_run_id,
        Path(report.path),
    )
