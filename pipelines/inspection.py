"""The inspection pipeline: ingest -> validate -> train -> evaluate -> register."""

from kfp import dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from inspectflow.components import COMPONENT_IMAGE
from inspectflow.components.evaluate import evaluate
from inspectflow.components.ingest import ingest
from inspectflow.components.monitor import monitor
from inspectflow.components.register import register
from inspectflow.components.train import train
from inspectflow.components.validate import validate

#: On a cluster, credentials come from Kubernetes objects referenced by name (``infra/k8s``), so no value
#: is ever compiled into the pipeline; the local runner ignores them and uses this process's environment.
S3_SECRET = "inspectflow-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
TRACKING_CONFIG_MAP = "inspectflow-tracking"
TRACKING_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
#: What the train task asks of the cluster: one NVIDIA GPU, in the CUDA build of the component image.
TRAIN_IMAGE = f"{COMPONENT_IMAGE}-cuda"
TRAIN_RESOURCES = {"cpu": "4", "memory_request": "16G", "memory_limit": "32G", "gpus": "1"}


def _use_cluster_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_SECRET_KEYS})
    kubernetes.use_config_map_as_env(task, TRACKING_CONFIG_MAP, {key: key for key in TRACKING_KEYS})
    return task


def pipeline_name(workload: str) -> str:
    """The kfp pipeline name of a workload, such as ``inspectflow-textile``."""
    return f"inspectflow-{workload}"


def inspection_pipeline(workload: str, image: str | None = None) -> GraphComponent:
    """Returns the workload's pipeline, named after it (the steps are the same for every workload).

    Every step runs in ``COMPONENT_IMAGE`` but train, which asks for a GPU in its CUDA build; with
    ``image``, every step runs in that one (``inspectflow run --runner container`` on a CPU machine).

    The pipeline takes ``source`` (a folder, or an ``s3://bucket/prefix`` URI), ``config`` (the
    ``PipelineConfig`` as JSON: kfp dicts cannot hold null settings) and ``resume_run_id`` (an MLflow run
    that stopped, to continue: the same run, training from its last checkpoint; empty for a new run) and
    returns the register step's JSON summary.
    """
    name = pipeline_name(workload)

    @dsl.pipeline(name=name, description=f"Train, evaluate and gate the {workload} inspection model.")
    def pipeline(source: str, config: str, resume_run_id: str = "") -> str:
        return _steps(name, source, config, resume_run_id, image)

    return pipeline


def drift_pipeline(workload: str, image: str | None = None) -> GraphComponent:
    """The drift watch with retraining: ``inspectflow retrain --on-drift`` as a scheduled KFP run.

    One ``monitor`` step checks the new images (``images``) against the champion's training images; only
    when it says ``drift`` do the inspection pipeline's steps run, on ``source`` (the labelled data) with
    ``config``. Named ``inspectflow-<workload>-on-drift``.
    """
    name = f"{pipeline_name(workload)}-on-drift"

    @dsl.pipeline(name=name, description=f"Retrain the {workload} model when new images drift from its data.")
    def pipeline(images: str, source: str, config: str) -> None:
        check = _use_cluster_credentials(monitor(images=images, config=config, model_uri=""))
        check.set_caching_options(False)  # new images arrive under the same prefix
        if image is not None:
            check.set_container_image(image)
        with dsl.If(check.output == "drift", name="drift"):
            _steps(pipeline_name(workload), source, config, "", image)

    return pipeline


def _steps(name: str, source: str, config: str, resume_run_id: str, image: str | None) -> PipelineChannel:
    ingest_task = _use_cluster_credentials(
        ingest(
            source=source,
            config=config,
            resume_run_id=resume_run_id,
            pipeline_name=name,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
    )
    # Ingest opens the MLflow run: a cached result would make two pipeline runs share one MLflow run.
    ingest_task.set_caching_options(False)
    run_id = ingest_task.outputs["mlflow_run_id"]
    # The later steps take the data version as an input, so their cache keys change with the data.
    version = ingest_task.outputs["data_version"]
    dataset = ingest_task.outputs["dataset"]
    validate_task = _use_cluster_credentials(
        validate(dataset=dataset, config=config, mlflow_run_id=run_id, data_version=version)
    )
    # Training consumes no output of validation, but must never start on data that failed it.
    train_task = _use_cluster_credentials(
        train(dataset=dataset, config=config, mlflow_run_id=run_id, data_version=version)
    ).after(validate_task)
    train_task.set_container_image(TRAIN_IMAGE)
    train_task.set_cpu_request(TRAIN_RESOURCES["cpu"])
    train_task.set_memory_request(TRAIN_RESOURCES["memory_request"])
    train_task.set_memory_limit(TRAIN_RESOURCES["memory_limit"])
    train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(TRAIN_RESOURCES["gpus"])
    evaluate_task = _use_cluster_credentials(
        evaluate(
            dataset=dataset,
            model=train_task.outputs["model"],
            config=config,
            mlflow_run_id=run_id,
            data_version=version,
        )
    )
    register_task = _use_cluster_credentials(
        register(
            dataset=dataset,
            model=train_task.outputs["model"],
            evaluation=evaluate_task.outputs["evaluation"],
            config=config,
            mlflow_run_id=run_id,
            data_version=version,
        )
    )
    if image is not None:
        for task in (ingest_task, validate_task, train_task, evaluate_task, register_task):
            task.set_container_image(image)
    return register_task.output
