"""The drift watch (``inspectflow monitor``): do the line's images still look like the training images?

Every registered version keeps a reference (:func:`reference_profile`, logged by the register step under
its run's ``monitoring/`` artifacts): its training images in file order (whole runs of them where there are
more than the reference holds), described as :class:`~inspectflow.monitoring.drift.Profile` describes
them. :func:`monitor` profiles new images the
same way, with the same model and backbone, compares them (:func:`inspectflow.monitoring.drift.compare`)
and logs the check to the workload's monitoring experiment: the verdict as a tag, every test's statistic
and p-value and the prediction mix as metrics, and an HTML report with a figure.
"""

from __future__ import annotations

import functools
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

import numpy as np

from inspectflow.errors import DataError, InspectflowError
from inspectflow.monitoring.drift import (
    STATISTICS,
    Comparison,
    Profile,
    check_level,
    compare,
    describe,
)
from inspectflow.names import (
    CHAMPION,
    DRIFT_FIGURE_FILE,
    DRIFT_MODEL_TAG,
    DRIFT_REPORT_FILE,
    DRIFT_SOURCE_TAG,
    DRIFT_VERDICT_TAG,
    MONITORING_ARTIFACTS,
    REFERENCE_FILE,
)

if TYPE_CHECKING:
    from torch import nn

    from inspectflow.config import PipelineConfig
    from inspectflow.data.dataset import Dataset
    from inspectflow.models.artifact import ModelSpec, Predictor
    from inspectflow.tasks.base import Task


#: The backbone whose features the watch compares: ImageNet EfficientNet-Lite0, whose weights install with
#: pip, the same for every workload and model (a model's own features move with every retraining).
BACKBONE: Final = "efficientnet_lite0"
#: Images are shrunk to at most this side for the backbone: its ImageNet scale, and a bounded cost.
FEATURE_SIDE = 224
#: Folders of the segmentation layouts that hold masks, not images from the line (images/ + masks/, DAGM).
MASK_FOLDERS = frozenset({"masks", "Label"})
#: Images per forward pass of the backbone.
BATCH_SIZE = 32
#: The exit status of ``inspectflow monitor`` (and ``retrain --on-drift``) on drift: 1 is an error.
DRIFT_EXIT_CODE = 3
#: Consecutive training images a reference keeps together when it keeps only some: lots stay whole.
REFERENCE_RUN = 32
#: The new images the report shows as those that move the features most, and their thumbnails' side.
THUMBNAILS, THUMBNAIL_SIDE = 8, 96


@functools.cache
def feature_extractor() -> nn.Module:
    """The watch's backbone, frozen, with its ImageNet weights (built once per process: about 2 s)."""
    from inspectflow.models.backbones import build_extractor

    extractor, _ = build_extractor(BACKBONE, "imagenet")
    return extractor


def profile_images(
    images: np.ndarray,
    sizes: np.ndarray,
    outcomes: list[str],
    extractor: nn.Module,
    lots: list[str] | None = None,
) -> Profile:
    """Describes images as the watch compares them.

    Args:
        images: The images as the model takes them, uint8 ``(N, H, W, C)``.
        sizes: Each image's width, height and channels as decoded from its file, ``(N, 3)``.
        outcomes: The model's prediction of each image (:meth:`Task.outcomes`).
        extractor: The backbone (:func:`feature_extractor`).
        lots: The lot of each image (:func:`lot_of`); default none known.
    """
    from inspectflow.models.backbones import extract_features

    pixels = images.reshape(len(images), -1)
    sharpness, grain = detail(images)
    return Profile(
        features=extract_features(extractor, _shrink(images), BATCH_SIZE),
        brightness=pixels.mean(axis=1) / 255.0,
        contrast=pixels.std(axis=1) / 255.0,
        sharpness=sharpness,
        grain=grain,
        width=sizes[:, 0].astype(np.int64),
        height=sizes[:, 1].astype(np.int64),
        channels=sizes[:, 2].astype(np.int64),
        outcomes=np.asarray(outcomes, dtype=str),
        lots=np.asarray(lots if lots is not None else [""] * len(images), dtype=str),
    )


def lot_of(source: str, lots: str) -> str:
    """The lot a file (its path relative to the data root) belongs to, by ``monitor.lots``.

    ``order``: none known (every window of consecutive images is a lot); ``folder``: its folder (a DAGM
    class, a day's folder); ``prefix``: its file name up to the first ``_`` or ``-`` (KolektorSDD's
    ``kos12_Part3`` is commutator ``kos12``).
    """
    path = PurePosixPath(source)
    if lots == "folder":
        return str(path.parent)
    if lots == "prefix":
        return re.split(r"[_-]", path.name, maxsplit=1)[0]
    return ""


def detail(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's sharpness and grain: how its detail spreads over three scales.

    The Laplacian's standard deviation at the image's size, at half of it and at a quarter (2x2 means).
    Sharpness is the first over the second: blur lowers it. Grain is the second over the third: a zoomed-in
    image's texture is coarser, its grain lower. A lot of parts with more or less texture moves every scale
    alike, and neither ratio.
    """
    scales = [images.astype(np.float32).mean(axis=3)]
    for _ in range(2):
        gray = scales[-1]
        height, width = (gray.shape[1] // 2) * 2, (gray.shape[2] // 2) * 2
        scales.append(
            gray[:, :height, :width].reshape(len(gray), height // 2, 2, width // 2, 2).mean(axis=(2, 4))
        )
    fine, middle, coarse = (_laplacian_std(gray) for gray in scales)
    return fine / np.maximum(middle, 1e-6), middle / np.maximum(coarse, 1e-6)


def _laplacian_std(gray: np.ndarray) -> np.ndarray:
    """The standard deviation of each ``(N, H, W)`` image's 4-neighbour Laplacian over its interior."""
    if min(gray.shape[1:]) < 3:  # no interior: a tiny image has no detail to measure
        return np.zeros(len(gray), dtype=np.float32)
    inner = gray[:, 1:-1, 1:-1]
    laplacian = 4 * inner - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1] - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:]
    return laplacian.reshape(len(gray), -1).std(axis=1)


def _shrink(images: np.ndarray) -> np.ndarray:
    """The images with their longest side at most :data:`FEATURE_SIDE` (antialiased bilinear), as uint8."""
    import torch

    height, width = images.shape[1:3]
    scale = FEATURE_SIDE / max(height, width)
    if scale >= 1:
        return images
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    shrunk = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True)
    return shrunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def predict_outcomes(task: Task, predictor: Predictor, images: np.ndarray, spec: ModelSpec) -> list[str]:
    """The model's prediction of each uint8 image, with the thresholds it keeps."""
    from inspectflow.config import EvaluateConfig
    from inspectflow.tasks.base import batched

    config = EvaluateConfig().applying(spec.thresholds)
    size = task.inference_batch(config.batch_size, *images.shape[1:3])
    return [
        label for logits in batched(predictor, images, size) for label in task.outcomes(logits, spec, config)
    ]


def reference_profile(
    task: Task, dataset: Dataset, predictor: Predictor, spec: ModelSpec, config: PipelineConfig
) -> Profile:
    """The reference a model keeps: its training images in file order, at most ``monitor.reference_size``.

    Where there are more, it keeps runs of :data:`REFERENCE_RUN` consecutive images from evenly spaced
    places, so that the lots the watch calibrates on stay lots.
    """
    manifest = dataset.manifest.reset_index(drop=True)  # positions: rows of dataset.images
    train = manifest[manifest["split"] == "train"].sort_values(["source", "index"], kind="stable").index
    chosen = train.to_numpy()[reference_rows(len(train), config.monitor.reference_size)]
    images = dataset.images[chosen]
    rows = dataset.manifest.iloc[chosen]
    sizes = rows[["width", "height", "channels"]].to_numpy()
    outcomes = predict_outcomes(task, predictor, images, spec)
    lots = [lot_of(source, config.monitor.lots) for source in rows["source"]]
    return profile_images(images, sizes, outcomes, feature_extractor(), lots)


def reference_rows(count: int, size: int) -> np.ndarray:
    """Which of ``count`` images in file order a reference of at most ``size`` keeps (whole runs)."""
    if count <= size:
        return np.arange(count)
    run = min(REFERENCE_RUN, size)
    starts = np.linspace(0, count - run, size // run).round().astype(int)
    rows = np.unique(np.concatenate([np.arange(start, start + run) for start in starts]))
    return rows[:size]


def log_reference(profile: Profile) -> None:
    """Logs a reference under the active MLflow run's ``monitoring/`` artifacts."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="inspectflow-reference-") as folder:
        path = Path(folder) / REFERENCE_FILE
        profile.save(path)
        mlflow.log_artifact(str(path), artifact_path=MONITORING_ARTIFACTS)


@dataclass
class Check:
    """One drift check: what was compared with what, and the outcome."""

    model: str  # ``<name> version <n>``
    source: str
    images: int
    unreadable: list[str]
    comparison: Comparison
    run_id: str

    @property
    def verdict(self) -> str:
        """``drift`` or ``no drift``."""
        return "drift" if self.comparison.drift else "no drift"

    def line(self) -> str:
        """The one line a terminal shows."""
        skipped = f", {len(self.unreadable)} unreadable skipped" if self.unreadable else ""
        return (
            f"{self.source}: {describe(self.comparison)}; {self.images} images{skipped} against "
            f"{self.model}'s training sample"
        )


@dataclass
class Watched:
    """A registered version as the watch sees it: its reference, its model and what it decides."""

    name: str  # ``<name> version <n>``
    reference: Profile
    predictor: Predictor
    spec: ModelSpec
    task: Task

    def profile(
        self, root: Path, limit: int, seed: int = 0, source: str | None = None
    ) -> tuple[Profile, np.ndarray, list[str]]:
        """The profile of the images under a local folder, in file order (a seeded sample of ``limit``).

        Returns:
            The profile, the images as the model takes them, and a line for each unreadable file.

        Raises:
            DataError: No decodable image (named as ``source``, default the folder).
        """
        from inspectflow.imaging import IMAGE_SUFFIXES

        images, sizes, unreadable = _read_images(root, self.spec, limit, seed)
        where = source or str(root)
        if unreadable and not len(images):
            raise DataError(
                f"{where}: no decodable image to check ({len(unreadable)} unreadable; {unreadable[0]})"
            )
        if not len(images):
            raise DataError(f"{where}: no image files ({', '.join(IMAGE_SUFFIXES)}) to check")
        outcomes = predict_outcomes(self.task, self.predictor, images, self.spec)
        return profile_images(images, sizes, outcomes, feature_extractor()), images, unreadable


def watched(uri: str) -> Watched:
    """The reference and model of a registered version (``models:/<name>@<alias>`` or ``/<version>``).

    Raises:
        InspectflowError: No such model version, or one registered without a reference (or an older one).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from inspectflow.lineage import model_version
    from inspectflow.serving.registered import load_registered
    from inspectflow.tasks import get_task

    try:
        version = model_version(uri)
    except MlflowException as exc:
        raise InspectflowError(f"{uri}: {exc.message}") from None
    model = f"{version.name} version {version.version}"
    with tempfile.TemporaryDirectory(prefix="inspectflow-monitor-") as scratch:
        try:
            stored = mlflow.artifacts.download_artifacts(
                run_id=version.run_id,
                artifact_path=f"{MONITORING_ARTIFACTS}/{REFERENCE_FILE}",
                dst_path=scratch,
            )
        except (MlflowException, OSError):
            raise InspectflowError(
                f"{uri} ({model}) keeps no drift reference (registered before the drift watch): retrain to "
                "watch it"
            ) from None
        try:
            reference = Profile.load(Path(stored))
        except ValueError as missing:  # a reference of an older inspectflow lacks statistics
            raise InspectflowError(
                f"{uri} ({model}) keeps a drift reference {missing} (an older inspectflow's): retrain to "
                "watch it"
            ) from None
    try:  # ONNX Runtime predicts about twice as fast as the pt2 export here; a version may have no export
        predictor, spec = load_registered(f"models:/{version.name}/{version.version}", "onnx")
    except InspectflowError:
        predictor, spec = load_registered(f"models:/{version.name}/{version.version}")
    return Watched(model, reference, predictor, spec, get_task(spec.task))


def monitor(config: PipelineConfig, source: str, model_uri: str | None = None, seed: int = 0) -> Check:
    """Checks the images under ``source`` (a folder or ``s3://`` prefix) for drift from a training set.

    At most ``monitor.max_images`` images are read (a seeded sample, in file order); files under mask
    folders are skipped and so are files that cannot be decoded (named in the report). The check is logged
    as a run of the ``monitor.experiment`` MLflow experiment.

    Args:
        config: The workload's configuration (its ``monitor`` settings and registered model name).
        source: The new images.
        model_uri: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``; default the champion.
        seed: Seed of the image sample.

    Raises:
        InspectflowError: No such model version, or one registered without a reference.
        DataError: No decodable image under ``source``.
    """
    import mlflow

    from inspectflow.data.transfer import local_copy
    from inspectflow.tracking import ensure_experiment

    watch = watched(model_uri or f"models:/{config.register_.model_name}@{CHAMPION}")
    with local_copy(source) as root:
        new, images, unreadable = watch.profile(root, config.monitor.max_images, seed, source)
    level = check_level(config.monitor.alpha, config.monitor.checks_per_day)
    comparison = compare(watch.reference, new, level)
    description = (
        f"Drift checks of new images against `{config.register_.model_name}`'s training images "
        "(`inspectflow monitor`): the verdict is the `monitor.verdict` tag, the report under monitoring/."
    )
    experiment_id = ensure_experiment(config.monitor.experiment, description)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"monitor {Path(source.rstrip('/')).name}"
    ) as run:
        check = Check(watch.name, source, len(images), unreadable, comparison, run.info.run_id)
        _log(check, watch.reference, new, images, config)
    return check


def _read_images(
    root: Path, spec: ModelSpec, limit: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes a seeded sample of the image files under ``root`` into the model's input form.

    Returns:
        The images uint8 ``(N, H, W, C)``, their decoded width, height and channels ``(N, 3)``, and a
        ``<file>: <problem>`` line for each file that could not be decoded.
    """
    from inspectflow.imaging import IMAGE_SUFFIXES, decode

    files = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not MASK_FOLDERS & set(path.relative_to(root).parts[:-1])
    )
    if len(files) > limit:
        chosen = np.random.default_rng(seed).choice(len(files), size=limit, replace=False)
        files = [files[i] for i in sorted(chosen)]
    images, sizes, unreadable = [], [], []
    for path in files:
        pixels, error = decode(path)
        if pixels is None:
            unreadable.append(f"{path.relative_to(root)}: {error}")
            continue
        pixels = pixels[..., np.newaxis] if pixels.ndim == 2 else pixels  # (H, W, C), as read_image gives
        images.append(spec.preprocess.image(pixels))
        sizes.append(pixels.shape[1::-1] + pixels.shape[2:])  # width, height, channels
    if not images:
        return (
            np.zeros((0, 1, 1, spec.channels), dtype=np.uint8),
            np.zeros((0, 3), dtype=np.int64),
            unreadable,
        )
    return np.stack(images), np.asarray(sizes, dtype=np.int64), unreadable


def _log(check: Check, reference: Profile, new: Profile, images: np.ndarray, config: PipelineConfig) -> None:
    """Logs a check to its MLflow run: tags, parameters, metrics, the HTML report and its figure."""
    import mlflow

    comparison = check.comparison
    mlflow.set_tags(
        {DRIFT_VERDICT_TAG: check.verdict, DRIFT_MODEL_TAG: check.model, DRIFT_SOURCE_TAG: check.source}
    )
    mlflow.log_params(
        {
            "images": check.images,
            "reference_images": len(reference),
            "unreadable": len(check.unreadable),
            "alpha_per_day": config.monitor.alpha,
            "checks_per_day": config.monitor.checks_per_day,
            "check_level": comparison.check_level,
            "lot_window": comparison.window,
            "lot_windows": comparison.windows,
        }
    )
    metrics = {"drift": float(comparison.drift)}
    for test in comparison.tests:
        key = test.name.replace(" ", "_")
        metrics[f"drift/{key}_statistic"] = test.statistic
        metrics[f"drift/{key}_p_value"] = test.p_value
        metrics[f"drift/{key}_effect"] = test.effect
    for outcome, (before, now) in comparison.mix.items():
        metrics[f"mix/{outcome}"] = now
        metrics[f"mix_reference/{outcome}"] = before
    mlflow.log_metrics({key: value for key, value in metrics.items() if np.isfinite(value)})
    with tempfile.TemporaryDirectory(prefix="inspectflow-drift-") as folder:
        out = Path(folder)
        _plot(reference, new, out / DRIFT_FIGURE_FILE)
        figure = (out / DRIFT_FIGURE_FILE).read_bytes()
        (out / DRIFT_REPORT_FILE).write_text(
            _report_html(
                check,
                reference,
                new,
                figure,
                images[comparison.unlike[:THUMBNAILS]],
                config.monitor.alpha,
                config.monitor.checks_per_day,
            )
        )
        mlflow.log_artifacts(str(out), artifact_path=MONITORING_ARTIFACTS)


def _report_html(
    check: Check,
    reference: Profile,
    new: Profile,
    figure: bytes,
    unlike: np.ndarray,
    daily: float,
    checks: int,
) -> str:
    """The check as one self-contained HTML page.

    The verdict, the tests, the mix, the figure, and thumbnails of the new images that move the features
    most (``unlike``, uint8 ``(N, H, W, C)``).
    """
    import base64
    import html

    import pandas as pd

    comparison = check.comparison
    tests = pd.DataFrame(
        [
            {
                "test": test.name,
                "statistic": f"{test.statistic:.4g}",
                "p-value": f"{test.p_value:.4g}",
                "normal lots' shifts": f"{test.effect:.2f}" if np.isfinite(test.effect) else "",
                "counts in verdict": "yes" if test.decides else "no (reported)",
                "drift": "yes" if test.decides and test.p_value < comparison.level else "",
            }
            for test in comparison.tests
        ]
    )
    mix = pd.DataFrame(
        [
            {"prediction": o, "reference": f"{a:.1%}", "new images": f"{b:.1%}"}
            for o, (a, b) in comparison.mix.items()
        ]
    )
    means = pd.DataFrame(
        [
            {"statistic": name, "reference median": f"{np.median(getattr(reference, name)):.4g}",
             "new median": f"{np.median(getattr(new, name)):.4g}"}
            for name in (*STATISTICS, "width", "height")
        ]
    )  # fmt: skip
    unreadable = "".join(f"<li>{html.escape(line)}</li>" for line in check.unreadable)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Drift check: {html.escape(check.source)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head><body>
<h1>{html.escape(check.verdict)}</h1>
<p>{html.escape(check.line())}</p>
<p>Each statistic is judged against windows of {comparison.window} consecutive reference images
({comparison.windows} of them), each measured against the rest of the reference: "normal lots' shifts" is the
new images' statistic over the median window's. Drift when a test of the verdict has p &lt;
{comparison.level:.3g} (this check's false-alarm rate {comparison.check_level:.3g}: the day's {daily}
over {checks} checks, Bonferroni, then over its tests), or the new images have channel counts the reference
never had.</p>
<h2>Tests</h2>{tests.to_html(index=False)}
<h2>Image statistics</h2>{means.to_html(index=False)}
<h2>Prediction mix</h2>{mix.to_html(index=False)}
<p><img alt="drift figure" src="data:image/png;base64,{base64.b64encode(figure).decode()}"></p>
<h2>The new images most unlike the reference</h2><p>{_thumbnails(unlike)}</p>
{f"<h2>Unreadable files</h2><ul>{unreadable}</ul>" if unreadable else ""}
</body></html>
"""


def _thumbnails(images: np.ndarray) -> str:
    """Inline PNG thumbnails (longest side :data:`THUMBNAIL_SIDE`) of uint8 ``(N, H, W, C)`` images."""
    import base64
    import io

    from PIL import Image

    tags = []
    for pixels in images:
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        tags.append(f'<img alt="new image" src="data:image/png;base64,{encoded}">')
    return " ".join(tags)


def _plot(reference: Profile, new: Profile, path: Path) -> None:
    """Brightness and contrast histograms and the features' principal components, reference against new."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, name in zip(axes[:2], ("brightness", "contrast"), strict=True):
        values = np.concatenate([getattr(reference, name), getattr(new, name)])
        bins = np.linspace(values.min(), values.max() + 1e-9, 30)
        ax.hist(getattr(reference, name), bins=bins, alpha=0.6, density=True, label="reference")
        ax.hist(getattr(new, name), bins=bins, alpha=0.6, density=True, label="new images")
        ax.set(title=name, xlabel=name)
        ax.legend()
    components = min(2, *reference.features.shape)
    pca = PCA(n_components=components).fit(reference.features)
    for sample, label in ((reference, "reference"), (new, "new images")):
        points = pca.transform(sample.features)
        axes[2].scatter(points[:, 0], points[:, -1], s=8, alpha=0.6, label=label)
    axes[2].set(title="backbone features (PCA of the reference)", xlabel="PC 1", ylabel=f"PC {components}")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
