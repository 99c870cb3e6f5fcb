"""Typed pipeline configuration, validated once.

A run's configuration is the workload's defaults, updated by ``--set section.key=value`` overrides, then
validated by :class:`PipelineConfig`. The validated config travels to every pipeline step as JSON (a kfp
string parameter: kfp dicts cannot hold nulls) and each step re-validates it with :func:`validate_config`,
so a step never sees an unchecked value and the MLflow run logs exactly what ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inspectflow.errors import ConfigError

TEXTILE_CLASSES = ["good", "color", "cut", "hole", "thread", "metal_contamination"]

Workload = Literal["textile", "dagm", "inserts"]
#: What each workload learns (a task of :mod:`inspectflow.tasks`): a class per image, or a defect mask.
WORKLOAD_TASKS: dict[str, str] = {
    "textile": "classification",
    "dagm": "segmentation",
    "inserts": "classification",
}
#: Each workload's defaults, applied under the user's ``--set`` overrides.
WORKLOAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "textile": {},
    "dagm": {
        # classes: the DAGM classes to read, all found when empty; the side of the source images is kept
        # (512 for DAGM), padded up to a multiple of 16 for the U-Net's four poolings.
        "data": {"classes": [], "image_side": None},
        "validate": {"expected_side": None, "min_per_class": 1},
        "train": {
            "model": "unet",
            "loss": "bce+dice",
            "batch_size": 4,
            "lr": 5e-3,
            "epochs": 10,
            "crop": 128,
        },
        "register": {"model_name": "dagm-segmenter", "primary_metric": "iou"},
        "tracking": {"experiment": "dagm"},
    },
    "inserts": {
        # classes: one per folder (Intact, Damaged, or wear levels), found when empty; RGB at the
        # backbones' 224 px.
        "data": {"classes": [], "image_side": 224, "channels": 3},
        "validate": {"expected_side": None, "min_side": 32},
        "train": {"model": "resnet18", "weights": "imagenet", "epochs": 8, "batch_size": 16, "lr": 1e-3},
        "register": {"model_name": "inserts-classifier", "primary_metric": "accuracy", "flavor": "pyfunc"},
        "tracking": {"experiment": "inserts"},
    },
}
#: Replaces a workload's defaults (still under the user's overrides) when a network is fine-tuned from
#: random weights: with no ImageNet backbone there is no reason for its 224 px input, and from scratch the
#: network needs a longer schedule. Measured on synthetic inserts (n=300): ResNet18 at 224 px for 8 epochs
#: reached 0.67 test accuracy, at 112 px for 30 epochs 0.93, in half the time of 8 epochs at 224 px.
FROM_SCRATCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "inserts": {"data": {"image_side": 112}, "train": {"epochs": 30, "lr": 3e-3}},
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """How ingest reads the source and splits it.

    Attributes:
        format: Source layout: ``auto`` detects it from the files present; otherwise the name of a layout
            registered in :mod:`inspectflow.data.layouts`, such as ``kaggle-h5`` or ``dagm``.
        classes: Class names, in label-index order; labels outside this set fail validation. For
            segmentation, the groups to read (DAGM classes such as ``Class1``); empty reads all.
        image_side: Side of the cached square images (pixels); ``None`` keeps the sources' side, padded up
            to a multiple of 16 (segmentation only).
        resize: ``resize`` scales images (and masks) to the side; ``pad`` centres them on a zero canvas,
            cropping what is larger (no resampling: defect edges stay sharp).
        channels: Channels of the cached images (1 = grayscale).
        test_fraction: Test share of a seeded stratified split, used when the source defines no split.
        split_seed: Seed of that split.
    """

    format: str = "auto"
    classes: list[str] = Field(default_factory=lambda: list(TEXTILE_CLASSES))
    image_side: int | None = Field(64, ge=8, le=4096)
    resize: Literal["resize", "pad"] = "resize"
    channels: Literal[1, 3] = 1
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0

    @field_validator("format")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        if value == "auto":
            return value
        from inspectflow.data.layouts import layout_names  # imports every reader: only when one is named

        names = layout_names()
        if value not in names:
            raise ValueError(f"unknown layout {value!r}; choose one of {', '.join(['auto', *names])}")
        return value


class ValidateConfig(_Section):
    """Data-quality expectations checked before anything is trained.

    Attributes:
        min_per_class: Minimum images of every class in each split.
        expected_side: Width and height every source image must have; ``None`` accepts any size of at
            least ``min_side``.
        min_side: Smallest accepted source width or height.
        min_defect_fraction: Smallest share of the image a defect mask may cover (segmentation).
        max_defect_fraction: Largest share of the image a defect mask may cover (segmentation).
    """

    min_per_class: int = Field(2, ge=1)
    expected_side: int | None = 64
    min_side: int = Field(8, ge=1)
    min_defect_fraction: float = Field(0.0, ge=0.0, le=1.0)
    max_defect_fraction: float = Field(0.5, gt=0.0, le=1.0)


class TrainConfig(_Section):
    """Model and optimisation.

    Attributes:
        model: ``residual_cnn`` (the textile example's small ResNet) or ``resnet18`` (torchvision) for
            classification; ``unet`` for segmentation.
        loss: ``cross_entropy`` for classification; ``dice`` (smoothed soft Dice), ``bce`` (pixel-wise) or
            ``bce+dice`` for segmentation.
        crop: Segmentation trains on random square crops of this side (biased towards defects), a
            multiple of 16; ``None`` trains on whole images. Evaluation always uses whole images.
        weights: ``none``, ``imagenet`` (torchvision enum, from ``TORCH_HOME``) or a path to a state dict.
        method: ``finetune`` trains ``model``; ``features+svm`` (classification) extracts features with a
            frozen ImageNet CNN (``backbone`` at ``layer``) and fits an SVM, estimated over ``repeats``
            seeded, stratified 70/30 splits of the whole dataset.
        backbone: Feature extractor of ``features+svm``: ``vgg16`` (fc1) or ``mobilenet_v2``.
        layer: Where to cut the backbone: ``fc1`` (vgg16), ``pool`` or ``features.N`` (mobilenet_v2);
            ``None`` is the backbone's default.
        svm_kernel: SVM kernel (``rbf``, ``linear``, ``poly``, ``sigmoid``).
        svm_c: SVM regularisation C.
        repeats: Repeated 70/30 splits of ``features+svm``, each an MLflow child run.
        feature_cache: Folder of cached features, keyed by backbone, layer, weights and data version.
        freeze_backbone: Train only the classification head (``resnet18``).
        epochs: Passes over the training split.
        batch_size: Images per optimisation step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        val_fraction: Share of the training split held out (stratified, seeded) for per-epoch validation.
        keep_best: Keep the epoch with the best validation score (accuracy, or IoU for segmentation)
            rather than the last one.
        augment: Random flips and 90-degree rotations of training images.
        channels_last: Use the channels-last memory format (1.4-2.1x faster on CPU here).
        seed: Seed of initialisation, shuffling and augmentation.
    """

    model: Literal["residual_cnn", "resnet18", "unet"] = "residual_cnn"
    loss: Literal["cross_entropy", "dice", "bce", "bce+dice"] = "cross_entropy"
    crop: int | None = Field(None, ge=16)
    weights: str = "none"
    method: Literal["finetune", "features+svm"] = "finetune"
    backbone: Literal["vgg16", "mobilenet_v2"] = "vgg16"
    layer: str | None = None
    svm_kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"
    svm_c: float = Field(1.0, gt=0.0)
    repeats: int = Field(5, ge=1)
    feature_cache: str = "~/.cache/inspectflow/features"
    freeze_backbone: bool = False
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    keep_best: bool = True
    augment: bool = True
    channels_last: bool = True
    seed: int = 0


class EvaluateConfig(_Section):
    """Evaluation.

    Attributes:
        batch_size: Images per inference batch.
        mask_threshold: Probability above which a pixel is predicted defective (segmentation).
        detection_threshold: An image is declared defective when its predicted defect area exceeds this
            share of the image (segmentation).
        overlays: Best and worst test images drawn as overlays (image, truth, prediction) for MLflow.
    """

    batch_size: int = Field(32, ge=1)
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    detection_threshold: float = Field(0.001, ge=0.0, lt=1.0)
    overlays: int = Field(4, ge=0)


class RegisterConfig(_Section):
    """The champion/challenger gate.

    Attributes:
        model_name: Registered model name in the MLflow Model Registry.
        primary_metric: Metric the challenger must improve.
        min_improvement: The challenger must beat the champion's primary metric by more than this.
        flavor: How the model is logged: ``pytorch`` (a pt2 export taking float tensors) or ``pyfunc`` (takes
            image paths or arrays, returns labels and probabilities; required by ``features+svm``).
        max_class_drop: Largest drop of any class's score (F1 for classification, IoU for segmentation) the
            challenger may show against the champion.
    """

    model_name: str = "textile-classifier"
    primary_metric: Literal["macro_f1", "accuracy", "iou", "dice"] = "macro_f1"
    min_improvement: float = Field(0.0, ge=0.0)
    max_class_drop: float = Field(0.05, ge=0.0)
    flavor: Literal["pytorch", "pyfunc"] = "pytorch"


class TrackingConfig(_Section):
    """MLflow tracking.

    Attributes:
        experiment: MLflow experiment the runs go to.
    """

    experiment: str = "textile"


class PipelineConfig(_Section):
    """The whole configuration of one pipeline run."""

    workload: Workload = "textile"
    data: DataConfig = Field(default_factory=DataConfig)
    # ``validate`` and ``register`` are BaseModel attributes, hence the trailing underscores and aliases.
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check_model_fits_data(self) -> PipelineConfig:
        from inspectflow.tasks import get_task  # the tasks' checks, imported lazily: config stays light

        get_task(self.task).check_config(self)
        if self.train.freeze_backbone and self.train.model != "resnet18":
            raise ValueError("train.freeze_backbone applies to train.model=resnet18 only")
        if self.train.weights == "imagenet" and self.train.model != "resnet18":
            raise ValueError("train.weights=imagenet applies to train.model=resnet18 only")
        return self

    @property
    def task(self) -> str:
        """The workload's task: ``classification`` or ``segmentation``."""
        return WORKLOAD_TASKS[self.workload]

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain JSON-able data, section names as users write them."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        """Returns the config as the JSON string the pipeline's ``config`` parameter carries."""
        return json.dumps(self.to_dict())

    def flat(self) -> dict[str, Any]:
        """Returns ``{"section.key": value}`` for every setting, as logged to MLflow."""
        flat: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                flat.update({f"{section}.{key}": value for key, value in values.items()})
            else:
                flat[section] = values
        return flat


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turns ``["train.epochs=3", "data.format=npy"]`` into a nested dict.

    Values are read as YAML scalars or lists, so ``3`` is an int, ``true`` a bool, ``null`` None and
    ``[a, b]`` a list. A key without a section (``method=finetune``) names the one setting of that name,
    when exactly one section has it.

    Raises:
        ConfigError: An override is not of the form ``key=value``, or a short key is unknown or ambiguous.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, for example train.epochs=3")
        if "." not in key and key not in PipelineConfig.model_fields:
            key = _qualify(key, item)
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return nested


def _qualify(name: str, item: str) -> str:
    """Finds the section of a short setting name: ``epochs`` -> ``train.epochs``."""
    sections = {
        field.alias or section: field.annotation
        for section, field in PipelineConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    matches = [f"{section}.{name}" for section, model in sections.items() if name in model.model_fields]
    if len(matches) != 1:
        problem = f"is in several sections: {matches}" if matches else "is not a setting"
        raise ConfigError(f"--set {item!r}: {name!r} {problem}; write it as section.{name}")
    return matches[0]


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_params(path: Path, workload: str) -> dict[str, Any]:
    """Reads a workload's section of a ``params.yaml`` (grouped by workload, then by step).

    Raises:
        ConfigError: The file is not YAML, or its ``workload`` section is missing or not a mapping.
    """
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read parameters: {exc}") from None
    section = params.get(workload) if isinstance(params, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: no '{workload}:' section of settings grouped by step")
    return section


def build_config(
    workload: str, overrides: list[str] | None = None, params: dict[str, Any] | None = None
) -> PipelineConfig:
    """Validates a workload's configuration: its defaults, then ``params``, then the overrides.

    Args:
        workload: Workload name, such as ``textile``.
        overrides: ``section.key=value`` strings.
        params: Settings grouped by section (a ``params.yaml`` workload section).

    Raises:
        ConfigError: An override names an unknown setting or has a value of the wrong type.
    """
    if workload not in WORKLOAD_DEFAULTS:
        raise ConfigError(f"unknown workload {workload!r}; choose from {sorted(WORKLOAD_DEFAULTS)}")
    requested = _merge(params or {}, parse_overrides(overrides or []))
    defaults = {"workload": workload, **WORKLOAD_DEFAULTS[workload]}
    train = _merge(defaults.get("train", {}), requested.get("train", {}))
    weights = train.get("weights", TrainConfig.model_fields["weights"].default)
    method = train.get("method", TrainConfig.model_fields["method"].default)
    if weights == "none" and method == "finetune":
        defaults = _merge(defaults, FROM_SCRATCH_DEFAULTS.get(workload, {}))
    return validate_config(_merge(defaults, requested))


def validate_config(raw: dict[str, Any]) -> PipelineConfig:
    """Validates a config dict, turning pydantic's errors into one readable :class:`ConfigError`."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
