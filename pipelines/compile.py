"""Compiles the pipeline to the YAML a Kubeflow Pipelines cluster runs, one file per workload."""

from pathlib import Path

from kfp import compiler

from inspectflow.config import WORKLOAD_DEFAULTS, PipelineConfig, build_config
from inspectflow.pipelines.inspection import inspection_pipeline, pipeline_name


def compile_pipeline(config: PipelineConfig, package_path: Path) -> Path:
    """Writes the workload's pipeline with ``config`` as the default of its ``config`` parameter.

    ``source`` stays a required parameter: it names data the cluster reads (``s3://bucket/prefix``).
    """
    package_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        inspection_pipeline(config.workload),
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
