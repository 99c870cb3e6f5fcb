"""Ingest: read a source layout into the cached, manifest-described dataset every later step uses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from inspectflow import console
from inspectflow.config import DataConfig, PipelineConfig
from inspectflow.data.dataset import (
    MANIFEST_FILE,
    Dataset,
    DatasetInfo,
    dataset_digest,
    pixel_sha256,
    save_dataset,
)
from inspectflow.data.layouts import SourceImage, detect_layout, get_layout, read_source
from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import DataError, pipeline_step
from inspectflow.imaging import SIZE_MULTIPLE, Preprocess
from inspectflow.names import (
    DATA_ARTIFACTS,
    DATA_COUNTS_ARTIFACT,
    DATA_DIGEST_TAG,
    DATA_FORMAT_TAG,
    DATA_SOURCE_TAG,
    DATA_SPLIT_ORIGIN_TAG,
    DATA_VERSION_TAG,
    GIT_COMMIT_TAG,
    WORKLOAD_TAG,
)

log = logging.getLogger(__name__)


def ingest(root: Path, config: DataConfig) -> Dataset:
    """Reads a dataset from ``root`` and caches it at the configured size.

    The source's own train/test split is kept when it has both parts; otherwise a seeded split is made,
    stratified by :meth:`Dataset.strata` (the label, and defective/clean when the layout has masks).

    Args:
        root: Data root in one of the supported layouts.
        config: Data settings.

    Returns:
        The dataset, images (and masks) brought to the working size (:func:`working_size`) with
        ``config.channels`` channels.

    Raises:
        DataError: ``root`` is missing, empty or structurally broken.
    """
    layout = detect_layout(root) if config.format == "auto" else get_layout(config.format)
    records = read_source(root, layout.name, config.classes, config.missing_masks)
    if not records:
        raise DataError(f"{root}: no images found")
    preprocess = working_size(records, config, layout.has_masks)
    shape = (len(records), preprocess.height, preprocess.width)
    images = np.zeros((*shape, preprocess.channels), dtype=np.uint8)
    masks = np.zeros(shape, dtype=np.uint8) if layout.has_masks else None
    rows = []
    for i, record in enumerate(records):
        row: dict[str, object] = {
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
        if masks is not None:
            row.update(_mask_row(record))
            if record.mask is not None:
                masks[i] = preprocess.mask(record.mask)
        rows.append(row)
    manifest = pd.DataFrame(rows)
    split_origin = "source" if _source_has_split(records) else "seeded"
    # No configured classes: one per label found (class folders, DAGM classes), in sorted order.
    classes = list(config.classes) if config.classes else sorted(set(manifest["label"].astype(str)))
    good_class = None if layout.has_masks else config.good_class  # a segmenter's defects are its masks
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
    )
    dataset = Dataset(images=images, manifest=manifest, info=info, masks=masks)
    if split_origin == "seeded":
        # Repeated images (real sets have them) go to one side together, or the split would leak them.
        group = manifest["sha256"].fillna(manifest["source"] + "#" + manifest["index"].astype(str))
        first = ~group.duplicated().to_numpy()
        held = stratified_holdout(dataset.strata()[first], config.test_fraction, config.split_seed)
        test_groups = set(group[first][held])
        manifest["split"] = np.where(group.isin(test_groups), "test", "train")
    return dataset


def _source_has_split(records: list[SourceImage]) -> bool:
    """True when the source assigns splits to both train and test, or to only some images.

    DAGM's samples ship Train alone: those get a seeded split. Partly missing splits are kept so that
    validation reports them rather than have them silently re-split.
    """
    splits = {record.split for record in records}
    return ("train" in splits and "test" in splits) or (None in splits and len(splits) > 1)


#: The most memory the cached images and masks of one dataset may take.
CACHE_BUDGET_BYTES = 2 << 30


def working_size(records: list[SourceImage], config: DataConfig, has_masks: bool) -> Preprocess:
    """Picks the size every image is brought to.

    ``data.image_side`` fixes a square (reached by ``data.resize``). Otherwise the data decides. For a
    classifier: a square of the median longest side, rounded to 16 and at most ``data.max_side``. For a
    segmenter, which must see defects at their own aspect: the images keep it, scaled so that the
    longest side is at most ``data.max_side`` and the cache within :data:`CACHE_BUDGET_BYTES`, on a canvas of
    the largest scaled size padded to a multiple of 32.
    """
    channels = config.channels
    if config.image_side is not None:
        return Preprocess(config.resize, config.image_side, config.image_side, channels)
    shapes = np.array([r.pixels.shape[:2] for r in records if r.pixels is not None] or [(16, 16)])
    if not has_masks:
        side = int(np.clip(round(float(np.median(shapes.max(axis=1))) / 16) * 16, 16, config.max_side))
        return Preprocess("resize", side, side, channels)
    scale = min(1.0, config.max_side / shapes.max())
    heights, widths = np.ceil(shapes[:, 0] * scale), np.ceil(shapes[:, 1] * scale)
    bytes_per_pixel = len(records) * (channels + 1)  # images and masks, uint8
    scale *= min(1.0, (CACHE_BUDGET_BYTES / (heights.max() * widths.max() * bytes_per_pixel)) ** 0.5)
    height, width = (-(-round(size * scale) // SIZE_MULTIPLE) * SIZE_MULTIPLE for size in shapes.max(axis=0))
    return Preprocess("scale", int(height), int(width), channels, scale)


def _mask_row(record: SourceImage) -> dict[str, object]:
    mask = record.mask
    return {
        "mask_source": record.mask_source,
        "mask_width": None if mask is None else mask.shape[1],
        "mask_height": None if mask is None else mask.shape[0],
        "mask_error": record.mask_error,
        "defect_flag": None if record.defect_flag is None else int(record.defect_flag),
        "defect_fraction": None if mask is None else float(mask.mean()),
    }


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
    import mlflow
    import mlflow.data.pandas_dataset
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
            dataset = ingest(root, config.data)
            save_dataset(dataset, out_dir)
            digest = dataset_digest(dataset.manifest)
            counts = dataset.manifest.groupby(["split", "label"]).size()
            log.info(
                "ingested %d images from %s (%s layout)", len(dataset.manifest), source, dataset.info.format
            )
            splits = dataset.manifest["split"].value_counts()
            console.note(
                f"{len(dataset.manifest)} images ({', '.join(f'{n} {s}' for s, n in splits.items())}), "
                f"{dataset.info.format} layout, data version {tags[DATA_VERSION_TAG][:12]}"
            )
            mlflow.set_tags(
                {
                    DATA_DIGEST_TAG: digest,
                    DATA_FORMAT_TAG: dataset.info.format,
                    DATA_SPLIT_ORIGIN_TAG: dataset.info.split_origin,
                }
            )
            # A table, not metrics: counts are the data's description, not scores to chart.
            mlflow.log_table(counts.rename("images").reset_index(), artifact_file=DATA_COUNTS_ARTIFACT)
            version = tags[DATA_VERSION_TAG][:12]  # DVC's hash names the data everywhere, MLflow included
            mlflow.log_input(
                mlflow.data.pandas_dataset.from_pandas(
                    dataset.manifest, source=source, name=f"{config.workload}-{version}", digest=version
                ),
                context="ingest",
            )
            mlflow.log_artifact(str(out_dir / MANIFEST_FILE), artifact_path=DATA_ARTIFACTS)
        return run_id, tags[DATA_VERSION_TAG]
