"""The inspection pipeline: ingest -> validate -> train -> evaluate -> register."""

from kfp import dsl

from inspectflow.components.evaluate import evaluate
from inspectflow.components.ingest import ingest
from inspectflow.components.register import register
from inspectflow.components.train import train
from inspectflow.components.validate import validate


@dsl.pipeline(
    name="inspectflow-inspection", description="Train, evaluate and gate a visual-inspection model."
)
def inspection_pipeline(source: str, config: str) -> str:
    """Runs the five steps on one dataset; returns the register step's JSON summary.

    Args:
        source: Data root the ingest step reads.
        config: Pipeline configuration as JSON (``inspectflow.config.PipelineConfig``); a string rather
            than a kfp dict because kfp dicts cannot hold null settings.
    """
    ingest_task = ingest(
        source=source,
        config=config,
        kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    # Ingest opens the MLflow run: a cached result would make two pipeline runs share one MLflow run.
    ingest_task.set_caching_options(False)
    run_id = ingest_task.outputs["Output"]
    dataset = ingest_task.outputs["dataset"]
    validate_task = validate(dataset=dataset, config=config, mlflow_run_id=run_id)
    # Training consumes no output of validation, but must never start on data that failed it.
    train_task = train(dataset=dataset, config=config, mlflow_run_id=run_id).after(validate_task)
    evaluate_task = evaluate(
        dataset=dataset, model=train_task.outputs["model"], config=config, mlflow_run_id=run_id
    )
    register_task = register(
        dataset=dataset,
        model=train_task.outputs["model"],
        evaluation=evaluate_task.outputs["evaluation"],
        config=config,
        mlflow_run_id=run_id,
    )
    return register_task.output
