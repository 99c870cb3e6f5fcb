from kfp import dsl
from kfp.dsl import Dataset, Output

from inspectflow.components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest(source: str, config: str, kfp_run_name: str, kfp_run_id: str, dataset: Output[Dataset]) -> str:
    """Reads the source data into the cached dataset and opens the MLflow run.

    Args:
        source: Data root.
        config: Pipeline configuration as JSON (see ``inspectflow.config.PipelineConfig``).
        kfp_run_name: The pipeline run's name, tagged on the MLflow run.
        kfp_run_id: The pipeline run's id, tagged on the MLflow run.
        dataset: The dataset artifact (images, manifest).

    Returns:
        The MLflow run id the later steps log to.
    """
    import json
    from pathlib import Path

    from inspectflow.steps.ingest import ingest_step

    return ingest_step(Path(source), json.loads(config), Path(dataset.path), kfp_run_name, kfp_run_id)
