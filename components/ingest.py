from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from inspectflow.components import COMPONENT_IMAGE


# kfp runs the function's source alone, so its outputs are declared inline, in the form kfp documents.
@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest(
    source: str,
    config: str,
    resume_run_id: str,
    pipeline_name: str,
    kfp_run_name: str,
    kfp_run_id: str,
    dataset: Output[Dataset],
) -> NamedTuple("Outputs", [("mlflow_run_id", str), ("data_version", str)]):  # type: ignore[valid-type]
    """Reads the source data into the cached dataset and opens the MLflow run.

    Args:
        source: Data root: a folder, or an ``s3://bucket/prefix`` URI that is downloaded first.
        config: Pipeline configuration as JSON (see ``inspectflow.config.PipelineConfig``).
        resume_run_id: An MLflow run to continue instead of opening a new one (empty: a new one).
        pipeline_name: The kfp pipeline's name, tagged on the MLflow run.
        kfp_run_name: The pipeline run's name, tagged on the MLflow run.
        kfp_run_id: The pipeline run's id, tagged on the MLflow run.
        dataset: The dataset artifact (images, manifest).

    Returns:
        The MLflow run id the later steps log to, and the source's DVC hash, which the later steps take as
        an input so that kfp's cache key changes with the data.
    """
    import json
    from pathlib import Path

    from inspectflow.runner.worker import call_step

    return call_step(
        "inspectflow.steps.ingest:ingest_step",
        source,
        json.loads(config),
        Path(dataset.path),
        pipeline_name,
        kfp_run_name,
        kfp_run_id,
        resume_run_id,
    )
