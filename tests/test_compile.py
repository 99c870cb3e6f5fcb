"""The compiled pipelines: strict kfp specs, equal to their committed golden copies, free of credentials."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from inspectflow.config import WORKLOAD_DEFAULTS
from inspectflow.pipelines.compile import compile_all
from inspectflow.pipelines.inspection import S3_SECRET, S3_SECRET_KEYS

GOLDEN = Path(__file__).resolve().parents[1] / "infra" / "pipelines"
WORKLOADS = sorted(WORKLOAD_DEFAULTS)
DOWNSTREAM = ("validate", "train", "evaluate", "register")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out)
    return {w: list(yaml.safe_load_all((out / f"inspectflow-{w}.yaml").read_text())) for w in WORKLOADS}


def without_sdk_version(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in doc.items() if k != "sdkVersion"} for doc in documents]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_each_pipeline_parses_strictly_as_a_pipeline_spec(compiled: dict, workload: str) -> None:
    spec, platform = compiled[workload]
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert parsed.pipeline_info.name == f"inspectflow-{workload}"
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_each_pipeline_matches_its_golden_copy(compiled: dict, workload: str) -> None:
    golden = list(yaml.safe_load_all((GOLDEN / f"inspectflow-{workload}.yaml").read_text()))
    assert without_sdk_version(compiled[workload]) == without_sdk_version(golden), (
        f"the {workload} pipeline changed: review the change, then `inspectflow compile --out {GOLDEN}`"
    )


def test_train_asks_the_cluster_for_a_gpu_and_memory(compiled: dict) -> None:
    train = compiled["textile"][0]["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"].endswith("-cuda")
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["resources"]["memoryRequest"] > 0 and train["resources"]["memoryLimit"] > 0


def test_every_later_step_is_keyed_by_the_data_version_ingest_computes(compiled: dict) -> None:
    tasks = compiled["textile"][0]["root"]["dag"]["tasks"]
    assert tasks["ingest"]["cachingOptions"] == {}  # enableCache absent: never cached (it opens the run)
    for name in DOWNSTREAM:
        version = tasks[name]["inputs"]["parameters"]["data_version"]["taskOutputParameter"]
        assert version == {"outputParameterKey": "data_version", "producerTask": "ingest"}


@pytest.mark.parametrize("workload", WORKLOADS)
def test_credentials_are_referenced_by_name_only(compiled: dict, workload: str) -> None:
    text = yaml.safe_dump_all(compiled[workload])
    for executor in compiled[workload][1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == S3_SECRET
        assert {item["secretKey"] for item in secret["keyToEnv"]} == set(S3_SECRET_KEYS)
    # Nothing that looks like an access key, a secret or a password with a value.
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)(password|secret_access_key|token)\W{1,4}[:=]\s*\S", text)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)  # no user:password@host URL


def test_an_image_given_runs_every_step_in_it(tmp_path: Path) -> None:
    """``--runner container`` on a CPU machine: all five steps in one image, the CUDA one included."""
    from kfp import compiler

    from inspectflow.pipelines.inspection import inspection_pipeline

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(inspection_pipeline("textile", "localhost/inspectflow:dev"), str(path))
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
    assert {name: e["container"]["image"] for name, e in executors.items()} == {
        f"exec-{step}": "localhost/inspectflow:dev" for step in ("ingest", *DOWNSTREAM)
    }
