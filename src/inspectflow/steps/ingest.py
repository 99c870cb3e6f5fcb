"""Ingest: read a source layout into the cached, manifest-described dataset every later step uses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inspectflow import console
from inspectflow.config import DataConfig, PipelineConfig
from inspectflow.data.dataset import (
    MANIFEST_FILE,
    Dataset,
    DatasetInfo,
    dataset_digest,
    decoded_bytes,
    pixel_sha256,
    save_dataset,
)
from inspectflow.data.layouts import SourceImage, detect_layout, get_layout, read_source
from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import DataError, pipeline_step
from inspectflow.imaging import Preprocess
from inspectflow.names import (
    DATA_ARTIFACTS,
    DATA_COUNTS_ARTIFACT,
    DATA_DECODED_BYTES_TAG,
    DATA_DIGEST_TAG,
    DATA_FORMAT_TAG,
    DATA_SOURCE_TAG,
    DATA_SPLIT_ORIGIN_TAG,
    DATA_VERSION_TAG,
    DATA_WORKING_SIZE_TAG,
    GIT_COMMIT_TAG,
    WORKLOAD_TAG,
)
from inspectflow.tasks import task_for
from inspectflow.tasks.base import Task

log = logging.getLogger(__name__)


def ingest(root: Path, config: PipelineConfig) -> Dataset:
    """Reads a dataset from ``root`` and caches it at the working size, as the run's task learns from it.

    The source's own train/test split is kept when it has both parts; otherwise a seeded split is made,
    stratified by the task's :meth:`~inspectflow.tasks.base.Task.strata` (the label, and defective/clean
    for a segmenter), with repeated images on one side together.

    Args:
        root: Data root in one of the supported layouts.
        config: The run's configuration (its ``data`` settings and task).

    Returns:
        The dataset, images (and the task's masks) brought to the working size (:func:`working_size`) with
        ``data.channels`` channels.

    Raises:
        DataError: ``root`` is missing, empty or structurally broken, or lacks what the task learns from.
    """
    task, data = task_for(config), config.data
    layout = detect_layout(root) if data.format == "auto" else get_layout(data.format)
    records = read_source(root, layout.name, data.classes, data.missing_masks)
    if not records:
        raise DataError(f"{root}: no images found")
    preprocess = working_size(task, records, data)
    images, rows = _cache_images(records, preprocess)
    masks = None
    read = task.read_masks(root, records, preprocess, layout)
    if read is not None:
        masks, mask_rows = read
        rows = [row | extra for row, extra in zip(rows, mask_rows, strict=True)]
    manifest = pd.DataFrame(rows)
    split_origin = "source" if _source_has_split(records) else "seeded"
    # No configured classes: one per label found (class folders, DAGM classes), in sorted order.
    classes = list(data.classes) if data.classes else sorted(set(manifest["label"].astype(str)))
    good_class = task.good_class(data.good_class)
    if good_class is not None and good_class not in classes:
        raise DataError(
            f"{root}: data.good_class {good_class!r} is not one of its classes ({', '.join(classes)})"
        )
    info = DatasetInfo(
        classes=classes,
        source=str(root),
        format=layout.name,
        preprocess=preprocess,
        split_origin=split_origin,
        good_class=good_class,
        ordinal=data.ordinal,
    )
    dataset = Dataset(images=images, manifest=manifest, info=info, masks=masks)
    if split_origin == "seeded":
        # Repeated images (real sets have them) go to one side together, or the split would leak them.
        group = manifest["sha256"].fillna(manifest["source"] + "#" + manifest["index"].astype(str))
        first = ~group.duplicated().to_numpy()
        held = stratified_holdout(task.strata(dataset)[first], data.test_fraction, data.split_seed)
        test_groups = set(group[first][held])
        manifest["split"] = np.where(group.isin(test_groups), "test", "train")
    return dataset


def _cache_images(
    records: list[SourceImage], preprocess: Preprocess
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every image at the working size, and its manifest row (a decoding error keeps its row)."""
    images = np.zeros(
        (len(records), preprocess.height, preprocess.width, preprocess.channels), dtype=np.uint8
    )
    rows: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {
            "source": record.source,
            "index": record.index,
            "label": record.label,
            "split": record.split,
            "sha256": None,
            "width": None,
            "height": None,
            "channels": None,
            "dtype": record.dtype,
            "pixel_std": None,
            "decode_error": record.decode_error,
        }
        if record.pixels is not None:
            images[i] = preprocess.image(record.pixels)
            row.update(
                sha256=pixel_sha256(record.pixels),
                height=record.pixels.shape[0],
                width=record.pixels.shape[1],
                channels=record.pixels.shape[2] if record.pixels.ndim == 3 else 1,
                pixel_std=float(images[i].std()),
            )
        rows.append(row)
    return images, rows


def _source_has_split(records: list[SourceImage]) -> bool:
    """True when the source assigns splits to both train and test, or to only some images.

    DAGM's samples ship Train alone: those get a seeded split. Partly missing splits are kept so that
    validation reports them rather than have them silently re-split.
    """
    splits = {record.split for record in records}
    return ("train" in splits and "test" in splits) or (None in splits and len(splits) > 1)


def working_size(task: Task, records: list[SourceImage], config: DataConfig) -> Preprocess:
    """Picks the size every image is brought to.

    ``data.image_side`` fixes a square (reached by ``data.resize``); otherwise the task sizes the images
    from the data (:meth:`~inspectflow.tasks.base.Task.working_size`).
    """
    if config.image_side is not None:
        return Preprocess(config.resize, config.image_side, config.image_side, config.channels)
    shapes = np.array([r.pixels.shape[:2] for r in records if r.pixels is not None] or [(16, 16)])
    return task.working_size(shapes, config, len(records))


@pipeline_step("ingest")
def ingest_step(
    source: str,
    raw_config: dict[str, object],
    out_dir: Path,
    pipeline_name: str,
    kfp_run_name: str,
    kfp_run_id: str,
    resume_run_id: str = "",
) -> tuple[str, str]:
    """Runs ingest as the pipeline's first step: opens the MLflow run and writes the dataset artifact.

    The run is tagged with its lineage (:func:`inspectflow.lineage.lineage_tags`): the source's DVC hash,
    the git commit, the kfp pipeline and run names and the key package versions.

    Args:
        source: Data root: a folder, or an ``s3://bucket/prefix`` URI, downloaded first.
        raw_config: The pipeline configuration as a dict.
        out_dir: Where the dataset artifact goes.
        pipeline_name: The kfp pipeline's name, tagged on the MLflow run.
        kfp_run_name: The kfp pipeline run's name, tagged on the MLflow run.
        kfp_run_id: The kfp pipeline run's id, tagged on the MLflow run.
        resume_run_id: A run that stopped before it finished, continued instead of opening a new one (its
            settings must be the same: MLflow keeps the parameters it logged).

    Returns:
        The MLflow run id every later step logs to, and the source's DVC hash.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    from inspectflow.config import validate_config
    from inspectflow.data.transfer import local_copy
    from inspectflow.lineage import lineage_tags
    from inspectflow.tracking import (
        ensure_experiment,
        experiment_description,
        reopen_pipeline_run,
        resume_run,
        run_description,
        start_pipeline_run,
    )

    config: PipelineConfig = validate_config(raw_config)
    with local_copy(source) as root:
        tags = {
            WORKLOAD_TAG: config.workload,
            DATA_SOURCE_TAG: source,
            **lineage_tags(root, pipeline_name, kfp_run_name, kfp_run_id),
        }
        if tags[GIT_COMMIT_TAG] != "unknown":
            tags[MLFLOW_GIT_COMMIT] = tags[GIT_COMMIT_TAG]  # where the MLflow UI shows a run's commit
        # ``auto`` settings are logged by the step that resolves them (MLflow params cannot change).
        params = {key: value for key, value in config.used().items() if value != "auto"}
        if resume_run_id:
            run_id = reopen_pipeline_run(resume_run_id, params, tags)
        else:
            experiment_id = ensure_experiment(config.tracking.experiment, experiment_description(config))
            run_id = start_pipeline_run(
                experiment_id, config.title(), params, tags, run_description(config, tags)
            )
        with resume_run(run_id, "ingest"):
            dataset = ingest(root, config)
            save_dataset(dataset, out_dir)
            _log_dataset(dataset, source, config.workload, tags[DATA_VERSION_TAG], out_dir)
        return run_id, tags[DATA_VERSION_TAG]


def _working_size_note(dataset: Dataset) -> str:
    """The working size, what the images and masks weigh decoded at it, and the most any aspect changed."""
    preprocess = dataset.info.preprocess
    megabytes = decoded_bytes(dataset) / 2**20
    note = f"working size {preprocess.height}x{preprocess.width}, {megabytes:.1f} MB decoded"
    sizes = dataset.manifest[["height", "width"]].dropna().to_numpy(dtype=float)
    if preprocess.mode == "resize" and len(sizes):
        change = np.exp(np.abs(np.log(sizes[:, 1] / sizes[:, 0] * preprocess.height / preprocess.width)))
        if change.max() > 1.01:  # images of other shapes are stretched to the working one
            note += f", aspect changed by up to {change.max() - 1:.0%} (median {np.median(change) - 1:.0%})"
    return note


def _log_dataset(dataset: Dataset, source: str, workload: str, data_version: str, out_dir: Path) -> None:
    """Logs the ingested dataset to the open run: its tags, counts, MLflow dataset input and manifest."""
    import mlflow
    import mlflow.data.pandas_dataset

    log.info("ingested %d images from %s (%s layout)", len(dataset.manifest), source, dataset.info.format)
    splits = dataset.manifest["split"].value_counts()
    version = data_version[:12]  # DVC's hash names the data everywhere, MLflow included
    console.note(
        f"{len(dataset.manifest)} images ({', '.join(f'{n} {s}' for s, n in splits.items())}), "
        f"{dataset.info.format} layout, data version {version}; {_working_size_note(dataset)}"
    )
    mlflow.set_tags(
        {
            DATA_DIGEST_TAG: dataset_digest(dataset.manifest),
            DATA_FORMAT_TAG: dataset.info.format,
            DATA_SPLIT_ORIGIN_TAG: dataset.info.split_origin,
            DATA_WORKING_SIZE_TAG: f"{dataset.info.preprocess.height}x{dataset.info.preprocess.width}",
            DATA_DECODED_BYTES_TAG: str(decoded_bytes(dataset)),
        }
    )
    # A table, not metrics: counts are the data's description, not scores to chart.
    counts = dataset.manifest.groupby(["split", "label"]).size()
    mlflow.log_table(counts.rename("images").reset_index(), artifact_file=DATA_COUNTS_ARTIFACT)
    mlflow.log_input(
        mlflow.data.pandas_dataset.from_pandas(
            dataset.manifest, source=source, name=f"{workload}-{version}", digest=version
        ),
        context="ingest",
    )
    mlflow.log_artifact(str(out_dir / MANIFEST_FILE), artifact_path=DATA_ARTIFACTS)
