"""Compiles the pipeline to the YAML a Kubeflow Pipelines cluster runs, one file per workload."""

from pathlib import Path

from kfp import compiler

from inspectflow.config import WORKLOAD_DEFAULTS, PipelineConfig, build_config
from inspectflow.pipelines.inspection import drift_pipeline, inspection_pipeline, pipeline_name


def compile_pipeline(config: PipelineConfig, package_path: Path, on_drift: bool = False) -> Path:
    """Writes the workload's pipeline with ``config`` as the default of its ``config`` parameter.

    ``source`` stays a required parameter: it names data the cluster reads (``s3://bucket/prefix``). With
    ``on_drift``, the pipeline that retrains only when its ``images`` drift (:func:`drift_pipeline`).
    """
    package_path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = drift_pipeline if on_drift else inspection_pipeline
    compiler.Compiler().compile(
        pipeline(config.workload),
        str(package_path),
        pipeline_parameters={"config": config.to_json()},
    )
    return package_path


def compile_all(out_dir: Path) -> list[Path]:
    """Writes ``<out_dir>/inspectflow-<workload>.yaml`` for every workload, with its default settings."""
    return [
        compile_pipeline(build_config(workload), out_dir / f"{pipeline_name(workload)}.yaml")
        for workload in sorted(WORKLOAD_DEFAULTS)
    ]
