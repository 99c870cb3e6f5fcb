"""Ingest: read a source layout into the cached, manifest-described dataset every later step uses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from inspectflow.config import DataConfig, PipelineConfig
from inspectflow.data.dataset import (
    Dataset,
    DatasetInfo,
    dataset_digest,
    pixel_sha256,
    save_dataset,
)
from inspectflow.data.sources import SourceImage, detect_format, read_source
from inspectflow.data.splits import stratified_holdout
from inspectflow.errors import DataError, pipeline_step

log = logging.getLogger(__name__)

SEGMENTATION_LAYOUTS = ("dagm", "images-masks")


def ingest(root: Path, config: DataConfig) -> Dataset:
    """Reads a dataset from ``root`` and caches it at the configured size.

    The source's own train/test split is kept when it has both parts; otherwise a seeded split is made,
    stratified by label (and, for segmentation, by defective/clean).

    Args:
        root: Data root in one of the supported layouts.
        config: Data settings.

    Returns:
        The dataset, images (and masks) brought to ``config.image_side`` with ``config.channels`` channels.

    Raises:
        DataError: ``root`` is missing, empty or structurally broken.
    """
    layout = detect_format(root) if config.format == "auto" else config.format
    records = read_source(root, layout, config.classes)
    if not records:
        raise DataError(f"{root}: no images found")
    segmentation = layout in SEGMENTATION_LAYOUTS
    side = config.image_side or _native_side(records)
    channels = config.channels
    images = np.zeros((len(records), side, side, channels), dtype=np.uint8)
    masks = np.zeros((len(records), side, side), dtype=np.uint8) if segmentation else None
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
            "dtype": record.dtype,
            "pixel_std": None,
            "decode_error": record.decode_error,
        }
        if record.pixels is not None:
            images[i] = to_cache(record.pixels, side, channels, config.resize)
            row.update(
                sha256=pixel_sha256(record.pixels),
                height=record.pixels.shape[0],
                width=record.pixels.shape[1],
                pixel_std=float(images[i].std()),
            )
        if masks is not None:
            row.update(_mask_row(record))
            if record.mask is not None:
                masks[i] = _fit(record.mask.astype(np.uint8), side, config.resize, Image.Resampling.NEAREST)
        rows.append(row)
    manifest = pd.DataFrame(rows)
    split_origin = "source" if _source_has_split(records) else "seeded"
    if split_origin == "seeded":
        strata = manifest["label"].astype(str)
        if segmentation:
            strata = strata + "/" + (manifest["defect_fraction"].fillna(0) > 0).astype(str)
        test = stratified_holdout(strata.to_numpy(), config.test_fraction, config.split_seed)
        manifest["split"] = np.where(test, "test", "train")
    # No configured classes: one per label found (class folders, DAGM classes), in sorted order.
    classes = list(config.classes) if config.classes else sorted(set(manifest["label"].astype(str)))
    info = DatasetInfo(
        classes=classes,
        source=str(root),
        format=layout,
        image_side=side,
        channels=channels,
        split_origin=split_origin,
    )
    return Dataset(images=images, manifest=manifest, info=info, masks=masks)


def _source_has_split(records: list[SourceImage]) -> bool:
    """True when the source assigns splits to both train and test, or to only some images.

    DAGM's samples ship Train alone: those get a seeded split. Partly missing splits are kept so that
    validation reports them rather than have them silently re-split.
    """
    splits = {record.split for record in records}
    return ("train" in splits and "test" in splits) or (None in splits and len(splits) > 1)


def _native_side(records: list[SourceImage]) -> int:
    """The largest source side, rounded up to a multiple of 16 so that the U-Net's poolings divide it."""
    sides = [max(r.pixels.shape[:2]) for r in records if r.pixels is not None] or [16]
    return -(-max(sides) // 16) * 16


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


def to_cache(pixels: np.ndarray, side: int, channels: int, resize: str) -> np.ndarray:
    """Converts stored pixels to the cache's uint8 ``(side, side, channels)``.

    Samples that are not uint8 are clipped only so that the row can be cached; validation rejects them.
    """
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(pixels.shape[2])
    if mode is None:
        raise DataError(f"unsupported channel count {pixels.shape[2]}")
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    array = _fit(array, side, resize, Image.Resampling.BILINEAR)
    return array[..., np.newaxis] if channels == 1 else array


def _fit(array: np.ndarray, side: int, resize: str, resample: Image.Resampling) -> np.ndarray:
    """Brings a 2-D (or HxWx3) uint8 array to ``side`` x ``side`` by resizing or by centred zero-padding."""
    height, width = array.shape[:2]
    if (height, width) == (side, side):
        return array
    if resize == "resize":
        return np.asarray(Image.fromarray(array).resize((side, side), resample))
    canvas = np.zeros((side, side, *array.shape[2:]), dtype=array.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    src = array[
        max(0, -top) : max(0, -top) + min(height, side), max(0, -left) : max(0, -left) + min(width, side)
    ]
    canvas[max(0, top) : max(0, top) + src.shape[0], max(0, left) : max(0, left) + src.shape[1]] = src
    return canvas


@pipeline_step("ingest")
def ingest_step(
    source: str,
    raw_config: dict[str, object],
    out_dir: Path,
    pipeline_name: str,
    kfp_run_name: str,
    kfp_run_id: str,
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

    Returns:
        The MLflow run id every later step logs to, and the source's DVC hash.
    """
    import mlflow
    import mlflow.data.pandas_dataset

    from inspectflow.config import validate_config
    from inspectflow.data.transfer import local_copy
    from inspectflow.lineage import DATA_VERSION_TAG, lineage_tags
    from inspectflow.tracking import resume_run, start_pipeline_run

    config: PipelineConfig = validate_config(raw_config)
    with local_copy(source) as root:
        tags = {
            "inspectflow.workload": config.workload,
            "data.source": source,
            **lineage_tags(root, pipeline_name, kfp_run_name, kfp_run_id),
        }
        run_id = start_pipeline_run(config.tracking.experiment, kfp_run_name, config.flat(), tags)
        with resume_run(run_id):
            dataset = ingest(root, config.data)
            save_dataset(dataset, out_dir)
            digest = dataset_digest(dataset.manifest)
            counts = dataset.manifest.groupby(["split", "label"]).size()
            log.info(
                "ingested %d images from %s (%s layout)", len(dataset.manifest), source, dataset.info.format
            )
            mlflow.set_tags(
                {
                    "data.digest": digest,
                    "data.format": dataset.info.format,
                    "data.split_origin": dataset.info.split_origin,
                }
            )
            mlflow.log_metrics({f"data.{split}.{label}": int(n) for (split, label), n in counts.items()})
            mlflow.log_input(
                mlflow.data.pandas_dataset.from_pandas(
                    dataset.manifest, source=source, name=f"{config.workload}-{tags[DATA_VERSION_TAG][:12]}"
                ),
                context="ingest",
            )
            mlflow.log_artifact(str(out_dir / "manifest.csv"), artifact_path="data")
        return run_id, tags[DATA_VERSION_TAG]
