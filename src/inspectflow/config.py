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
from inspectflow.tasks import TASKS, get_task

TEXTILE_CLASSES = ["good", "color", "cut", "hole", "thread", "metal_contamination"]

#: What a workload name may look like: it names an experiment, a registered model, a pipeline and a DVC
#: stage.
WORKLOAD_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: The workloads inspectflow ships, each with a demo set, and what they change of their task's defaults.
#: Any other name is a user's own line: ``inspectflow run steel --task classification``.
WORKLOAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "textile": {"task": "classification"},
    "dagm": {"task": "segmentation"},
    "inserts": {
        # RGB (the holder and coatings differ in colour); the gate judges accuracy, as the insert papers do.
        "task": "classification",
        # The demo's synthetic inserts (160-320 px) are read at 160, where params.yaml's figures were
        # measured: the paper's features + SVM keep the demo run under a minute.
        "data": {"channels": 3, "max_side": 160},
        "validate": {"min_side": 32},
        "register": {"primary_metric": "accuracy", "flavor": "pyfunc"},
    },
}
#: Replaces a workload's defaults (still under the user's overrides) when a network is fine-tuned from
#: random weights asked for by name: with no ImageNet backbone there is no reason for a large input, and
#: from scratch the network needs a longer schedule. Measured on synthetic inserts (n=300): ResNet18 at
#: 224 px for 8 epochs reached 0.67 test accuracy, at 112 px for 30 epochs 0.93.
FROM_SCRATCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "inserts": {
        "data": {"image_side": 112},
        "train": {"model": "resnet18", "epochs": 30, "lr": 3e-3, "patience": None},
    },
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """How ingest reads the source and splits it.

    Attributes:
        format: Source layout: ``auto`` detects it from the files present; otherwise the name of a layout
            registered in :mod:`inspectflow.data.layouts`, such as ``kaggle-h5`` or ``dagm``.
        classes: Class names, in label-index order; labels outside this set fail validation; empty takes
            the labels found (class folders, CSV labels), sorted. For segmentation, the groups to read
            (DAGM classes such as ``Class1``); empty reads all.
        image_side: Side of the square images models see (pixels). ``None`` derives the size from the
            data: for classification the median longest side, rounded to 16 and at most ``max_side``, as a
            square for images of one aspect, else the images' median aspect with the same pixels; for
            segmentation one shape of the images' median aspect at their 90th-percentile pixel count,
            the longest side at most ``max_side``, sides a multiple of 32, each image scaled to it by its
            own factor (nothing padded).
        max_side: The largest working side ``image_side=None`` picks (for a classifier of wide or tall
            images: the side of the square whose pixels they get).
        resize: How ``image_side`` is reached: ``resize`` scales images (and masks) to the side; ``pad``
            centres them on a zero canvas, cropping what is larger (no resampling: defect edges stay sharp).
        channels: Channels of the cached images (1 = grayscale).
        good_class: The class of parts that pass (classification); every other class is a defect. With it a
            classifier also decides per image, defective or not, on its defect score (1 - the probability
            of this class), and reports escape and false-reject rates (see ``evaluate.target_recall``).
            ``None``: the classes are kinds of defect or of product, with no image-level decision.
        ordinal: The classes are graded levels (wear low / medium / high, a defect probability of 0, 1/3,
            2/3, 1), in the order of ``classes`` (or of the sorted folder names): classification then also
            reports quadratic-weighted kappa (``kappa``, which the gate can judge) and the mean absolute
            level error, and ``train.loss=cross_entropy+emd`` can weigh confusing far levels more than
            neighbours.
        missing_masks: An image of an ``images/`` + ``masks/`` set without a mask file: ``error`` fails
            validation naming it (a lost mask would teach that its defect is clean); ``clean`` reads it
            as defect-free.
        test_fraction: Test share of a seeded stratified split, used when the source defines no split.
        split_seed: Seed of that split.
    """

    format: str = "auto"
    classes: list[str] = Field(default_factory=list)
    image_side: int | None = Field(None, ge=8, le=4096)
    max_side: int = Field(640, ge=32, le=8192)
    resize: Literal["resize", "pad"] = "resize"
    channels: Literal[1, 3] = 1
    good_class: str | None = None
    ordinal: bool = False
    missing_masks: Literal["error", "clean"] = "error"
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
        unique_images: Fail on any two images with the same pixels. Otherwise (real sets often repeat an
            image) only identical images with different labels fail, and any image in both splits.
        min_defect_fraction: Smallest share of the image a defect mask may cover (segmentation).
        max_defect_fraction: Largest share of the image a defect mask may cover (segmentation).
    """

    min_per_class: int = Field(2, ge=1)
    expected_side: int | None = None
    min_side: int = Field(8, ge=1)
    unique_images: bool = False
    min_defect_fraction: float = Field(0.0, ge=0.0, le=1.0)
    max_defect_fraction: float = Field(0.5, gt=0.0, le=1.0)


class TrainConfig(_Section):
    """Model and optimisation.

    Attributes:
        model: A registered network (:mod:`inspectflow.models.networks`) that serves the task, or
            ``auto``: the registry's first-ranked one that the data and the install allow. For
            classification the ImageNet EfficientNet-Lite0 (``efficientnet_lite0``) when its weights package
            is installed and the images are at least 96 px, else ``residual_cnn`` (a small ResNet for small
            patches); for segmentation a U-Net on the ImageNet EfficientNet-Lite0 encoder (``unet_lite0``)
            when installed, else ``unet`` (16-256 channels, from scratch). ``resnet18`` is torchvision's.
        loss: One of the task's (``Task.losses``): ``cross_entropy`` for classification, or with
            ``data.ordinal`` ``cross_entropy+emd`` (plus the squared distance between the predicted and the
            true cumulative level distributions, so that a far level costs more than a neighbour);
            ``dice`` (smoothed soft Dice), ``bce`` (pixel-wise) or ``bce+dice`` for segmentation.
        crop: Segmentation trains on random square crops of this side (biased towards defects), a
            multiple of 32; ``None`` trains on whole images. Evaluation always uses whole images.
        weights: ``auto`` (``imagenet`` for a pretrained model, else random), ``imagenet`` (EfficientNet-Lite0
            from its pip package; ResNet18, VGG16 and MobileNetV2 from torchvision's files in
            ``TORCH_HOME``), ``none`` (random) or a path to a state dict. A ``features+svm`` extractor with
            random weights must be asked for by name: ``random``.
        method: ``finetune`` trains ``model``; ``features+svm`` (classification) extracts features with a
            frozen ImageNet CNN (``backbone`` at ``layer``) and fits an SVM (or a logistic regression:
            ``classifier``), estimated over ``repeats`` seeded, stratified 70/30 splits of the training
            split. ``auto`` lets the data choose: a classifier whose images suit the ImageNet backbone
            compares, cheapest first, a logistic regression and an RBF SVM on its ``pyramid`` features
            (EfficientNet-Lite0), head-only fine-tuning (``freeze_backbone``) and full fine-tuning of
            ``model``, all on the same held-out parts of the training split with the primary metric
            (macro-F1 where that is a rate), within ``max_minutes``; the winner is registered and the
            model card says what was compared. Otherwise (segmentation, small images) ``finetune``.
            ``patchcore`` (the anomaly task's only method) keeps a memory bank of ImageNet patch features
            of the good training images (``coreset_ratio``, ``max_bank``), and trains a small defect head
            on synthetic defects drawn on those images (``head_epochs``); no real defect is learned from.
        small_set: Training splits of fewer images are compared (and fine-tuning's epochs chosen) by
            ``folds``-fold stratified cross-validation rather than on one validation split, whose few
            images would make the choice noise.
        folds: Folds of that cross-validation.
        backbone: Feature extractor of ``features+svm``: ``efficientnet_lite0`` (pooled, 1280-d; its
            weights install with pip), ``vgg16`` (fc1) or ``mobilenet_v2``.
        layer: Where to cut the backbone: ``pool`` or ``pyramid`` (efficientnet_lite0: pooled maps of three
            blocks and the head, at the working size and at half of it, 4096-d), ``fc1`` (vgg16), ``pool``
            or ``features.N`` (mobilenet_v2); ``None`` is the backbone's default (``pool``).
        classifier: What ``features+svm`` fits on the features: ``svm`` or ``logistic`` (a class-balanced
            logistic regression).
        svm_kernel: SVM kernel (``rbf``, ``linear``, ``poly``, ``sigmoid``).
        coreset_ratio: Share of the good training patches ``patchcore``'s bank keeps (its greedy coreset).
        max_bank: The most patches the bank keeps, whatever the ratio; the coreset is chosen from at most
            ``max_bank / coreset_ratio`` patches (a random sample of them), which bounds fit time, the bank's
            memory (``max_bank`` x 152 floats) and the time a search takes.
        head_epochs: Passes of ``patchcore``'s defect head over the good training images, each with
            synthetic defects drawn anew (about 12 s a pass over KolektorSDD's 221 images at 640x256 here);
            ``0`` leaves the head out and the map is the bank's distances alone.
        svm_c: SVM regularisation C.
        repeats: Repeated 70/30 splits of ``features+svm``, each an MLflow child run.
        feature_cache: Folder of cached features, keyed by backbone, layer, weights and data version.
        freeze_backbone: Train only the classification head (pretrained models).
        frozen_share: Share of the time budget (``max_minutes``; of ``epochs`` if fewer) at the start
            of fine-tuning in which a pretrained backbone (``weights=imagenet`` of a network that declares
            one: ``unet_lite0``'s encoder) stays frozen while the rest learns, at a third of a step's cost
            for the U-Net; then everything trains. ``0`` trains everything from the first step.
        epochs: The most passes over the training split; early stopping and ``max_minutes`` may end sooner.
        patience: Stop when the validation score has not improved for this many epochs; ``None`` never.
        max_minutes: Time budget of training: the schedule is fitted to the epochs that fit it.
        class_balance: ``auto`` counters imbalance, the normal case on a line: class-weighted loss for
            classification; for segmentation, defective images make up at least a third of each epoch,
            crops land on defects and BCE weighs defect pixels up. ``none`` trains on the data as it is.
        precision: ``auto`` trains in bfloat16 autocast the models it was measured to speed up on a CPU
            with native bfloat16 (about 2x for ``unet`` and ``resnet18`` here), on a GPU every model in
            mixed precision (bfloat16 where supported, else float16 with loss scaling), else in float32;
            ``fp32``, ``bf16`` or ``fp16`` force one.
        batch_size: Images per optimisation step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        val_fraction: Share of the training split held out (stratified, seeded) for per-epoch validation.
        keep_best: Keep the epoch with the best validation score (macro-F1, or IoU for segmentation)
            rather than the last one.
        augment: Which orientation changes of training images keep their label: ``auto`` all that keep
            the image's shape (flips and 90-degree turns of square images; flips and the half turn of
            others), ``dihedral`` flips and 90-degree turns (square images), ``flips`` left-right and
            top-bottom flips, ``horizontal`` left-right flips only (parts with a top and a bottom), ``none``.
            ``true`` and ``false`` read as ``auto`` and ``none``.
        channels_last: Use the channels-last memory format (1.4-2.1x faster on CPU here).
        seed: Seed of initialisation, shuffling and augmentation.
    """

    model: str = "auto"
    loss: str = "cross_entropy"
    crop: int | None = Field(None, ge=16)
    weights: str = "auto"
    method: Literal["auto", "finetune", "features+svm", "patchcore"] = "auto"
    small_set: int = Field(1000, ge=0)
    folds: int = Field(5, ge=2)
    backbone: str = "efficientnet_lite0"
    layer: str | None = None
    classifier: Literal["svm", "logistic"] = "svm"
    svm_kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"
    svm_c: float = Field(1.0, gt=0.0)
    repeats: int = Field(5, ge=1)
    coreset_ratio: float = Field(0.1, gt=0.0, le=1.0)
    max_bank: int = Field(10000, ge=1)
    head_epochs: int = Field(10, ge=0)
    feature_cache: str = "~/.cache/inspectflow/features"
    freeze_backbone: bool = False
    frozen_share: float = Field(0.0, ge=0.0, lt=1.0)
    epochs: int = Field(30, ge=1)
    patience: int | None = Field(5, ge=1)
    max_minutes: float | None = Field(10.0, gt=0.0)
    class_balance: Literal["auto", "none"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    keep_best: bool = True
    augment: Literal["auto", "dihedral", "flips", "horizontal", "none"] = "auto"
    channels_last: bool = True
    seed: int = 0

    def learner(self) -> str:
        """What ``features+svm`` fits on the features, as runs, steps and benchmarks name it."""
        return "logistic regression" if self.classifier == "logistic" else f"{self.svm_kernel} SVM"

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_switch(cls, value: object) -> object:
        if isinstance(value, bool):  # the setting was a switch before it named orientations
            return "auto" if value else "none"
        return value

    def network_weights(self) -> tuple[str, str]:
        """The network this run loads weights into and the weights, as ``check_weights`` takes them.

        A features+svm extractor is the backbone, whose ``auto`` weights are ImageNet's.
        """
        if self.method == "features+svm":
            return self.backbone, "imagenet" if self.weights == "auto" else self.weights
        return self.model, self.weights


class EvaluateConfig(_Section):
    """Evaluation.

    Attributes:
        batch_size: Images per inference batch.
        mask_threshold: Probability above which a pixel is predicted defective (segmentation).
        detection_threshold: An image is declared defective when its defect score exceeds this: the highest
            pixel probability of a segmenter, 1 - the probability of ``data.good_class`` of a classifier.
            ``None`` (default): picked on the validation split after training, for ``target_recall`` if
            set; else a segmenter's is the score that best separates the validation split's defective from
            its clean images (``mask_threshold`` when it has no image of either kind) and a classifier's
            decision is its most probable class. The model keeps it.
        target_recall: The defect recall the line signs off (such as 0.99): the decision threshold flags at
            least this share of the validation split's defective images with the fewest good ones (the
            lowest such threshold: every defect those false rejects allow). The test split's escape and
            false-reject rates at the model's threshold are reported either way. A classifier needs
            ``data.good_class`` and a validation split (``train.method=finetune``).
        overlays: Best and worst test images drawn as overlays (image, truth, prediction) for MLflow.
    """

    batch_size: int = Field(32, ge=1)
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    detection_threshold: float | None = Field(None, ge=0.0, lt=1.0)
    target_recall: float | None = Field(None, gt=0.0, le=1.0)
    overlays: int = Field(4, ge=0)

    def applying(self, thresholds: dict[str, float]) -> EvaluateConfig:
        """These settings with the thresholds a trained model keeps (see ``ModelSpec.thresholds``).

        Keys that are not settings (how a threshold was picked) are left out.
        """
        return self.model_copy(update={k: v for k, v in thresholds.items() if k in type(self).model_fields})


class RegisterConfig(_Section):
    """The champion/challenger gate.

    No version is promoted, not even the first, unless its primary score reaches ``min_score`` and beats the
    trivial baseline (the training split's majority class for every image; an empty mask) by more than
    ``baseline_margin``.

    Attributes:
        model_name: Registered model name in the MLflow Model Registry; default ``<workload>-classifier``
            or ``<workload>-segmenter``.
        primary_metric: Metric the challenger must improve, one of the task's (``Task.primary_metrics``:
            ``macro_f1``, ``accuracy`` for classification; ``iou``, ``dice`` for segmentation).
            ``false_reject_rate`` (lower is better, either task) compares models at
            ``evaluate.target_recall``, each at its own threshold set for it: a version is not
            promoted at all when its test escape rate is significantly above ``1 - target_recall`` (the
            lower end of its 95% interval above it; passing every part is refused so), nor when it does not
            beat flagging every part (false-reject rate 1) by more than ``baseline_margin``.
        min_score: The primary score a version needs to be promoted at all (higher-is-better metrics).
        max_escape_rate: The highest test escape rate at the operating point (share of defective test
            images passed as good, at the model's detection threshold) a version may show to be promoted
            at all, whatever its primary score; ``None``: no such floor. Segmentation's default refuses a
            segmenter that passes more than a fifth of the defective parts.
        baseline_margin: How far the primary score must beat the trivial baseline's; ``None`` skips
            that floor (tests of the gate's mechanics on random data).
        min_improvement: The challenger must beat the champion's primary metric by more than this, with
            95% confidence: the lower end of the paired bootstrap interval of the gain, over resamples of
            the same test images for both, must be above it (two runs of the same settings never replace
            each other on noise).
        flavor: How the model is logged: ``pytorch`` (a pt2 export taking float tensors) or ``pyfunc`` (takes
            image paths or arrays, returns labels and probabilities; required by ``features+svm``). ``auto``
            follows the method trained: ``pyfunc`` for ``features+svm``, else ``pytorch``.
        onnx: Also export a network to ONNX (dynamic batch, height and width) and log it with the version,
            for ``inspectflow predict --engine onnx`` and the pyfunc's ``engine`` (not ``features+svm``).
        max_class_drop: Largest drop of any class's score (F1 for classification, IoU for segmentation) the
            challenger may show against the champion.
        int8: Also quantize the ONNX export to int8 (ONNX Runtime, static, calibrated on training images)
            and keep it with the version where it decides as fp32 does on the test split.
        int8_min_agreement: The share of test images the int8 engine must decide as fp32 does to be kept.
    """

    model_name: str = ""
    primary_metric: str = "macro_f1"
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    max_escape_rate: float | None = Field(None, ge=0.0, le=1.0)
    baseline_margin: float | None = Field(0.05, ge=0.0, le=1.0)
    min_improvement: float = Field(0.0, ge=0.0)
    max_class_drop: float = Field(0.05, ge=0.0)
    flavor: Literal["auto", "pytorch", "pyfunc"] = "auto"
    onnx: bool = True
    int8: bool = True
    int8_min_agreement: float = Field(0.995, gt=0.0, le=1.0)


class MonitorConfig(_Section):
    """The drift watch: new images against a sample of the champion's training images.

    Attributes:
        reference_size: Training images, in file order, whose features and statistics every registered
            version keeps as its reference (whole runs of consecutive images where there are more): the
            normal lots a new batch is judged against.
        max_images: The most new images a check reads (a seeded sample of the source).
        alpha: The false-alarm rate of a day's checks of images like the training ones: each check gets
            ``alpha / checks_per_day``, divided again among its tests (Bonferroni).
        checks_per_day: How many checks a day's stream makes (a batch an hour: 24).
        lots: What the reference's lots are: ``order`` (runs of consecutive files, the default),
            ``folder`` (each folder: a DAGM class, a day's folder) or ``prefix`` (the file name up to the
            first ``_`` or ``-``: KolektorSDD's commutators). Reference windows start where a lot does.
        experiment: MLflow experiment of the checks; default ``<workload>-monitoring``.
    """

    reference_size: int = Field(512, ge=10)
    max_images: int = Field(500, ge=10)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    checks_per_day: int = Field(24, ge=1)
    lots: Literal["order", "folder", "prefix"] = "order"
    experiment: str = ""


class ServeConfig(_Section):
    """The inference service (``inspectflow serve``): which model it serves and the bounds it keeps.

    Attributes:
        model: The registered model's name.
        alias: The alias served and followed (``champion``).
        uri: A fixed model URI to serve instead (``models:/name/3``, ``runs:/...``): nothing is followed.
        engine: ``auto`` (the version's int8 engine where it kept one, else its ONNX export in ONNX Runtime,
            else PyTorch), ``torch``, ``onnx`` or ``int8``.
        host: The address to listen on.
        port: The HTTP port.
        poll_seconds: How often the registry is asked where the alias points.
        max_request_mb: The largest request body.
        max_images: The most images in one request.
        max_batch: The most images one forward pass takes from requests that wait together; a request of
            more still goes through whole. Larger merged batches were slower per image for the larger
            models (features+SVM merged to 16: 0.5x its speed at 8; the dagm U-Net at 32: 0.6x).
        max_pixels: The most pixels in one image (width x height, read from its header before decoding).
        sample_to: A folder or ``s3://bucket/prefix`` that a sample of served images is written to, by date,
            for ``inspectflow monitor`` to read; empty: none are kept.
        sample_rate: The share of served images written to ``sample_to``.
        grace_seconds: How long a shutdown waits for the requests in flight.
    """

    model: str
    alias: str = "champion"
    uri: str = ""
    engine: Literal["auto", "torch", "onnx", "int8"] = "auto"
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    poll_seconds: float = Field(5.0, gt=0.0)
    max_request_mb: float = Field(32.0, gt=0.0)
    max_images: int = Field(64, ge=1)
    max_batch: int = Field(8, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    sample_to: str = ""
    sample_rate: float = Field(0.05, ge=0.0, le=1.0)
    grace_seconds: int = Field(30, ge=0)

    @property
    def served_uri(self) -> str:
        """The URI loaded: the fixed one, else the alias's."""
        return self.uri or f"models:/{self.model}@{self.alias}"


class TrackingConfig(_Section):
    """MLflow tracking.

    Attributes:
        experiment: MLflow experiment the runs go to; default: the workload's name.
    """

    experiment: str = ""


def _short_value(value: Any) -> str:
    """A setting's value for a run name: a path by its last part, a list by its length, at most 24 chars."""
    if isinstance(value, list):
        return f"[{len(value)}]"
    if value is None or isinstance(value, bool):
        return str(value).lower().replace("none", "null")  # as written in --set and params.yaml
    text = str(value)
    text = text.rpartition("/")[2] if "/" in text else text
    return text if len(text) <= 24 else text[:23] + "…"


#: Settings only one training method uses.
_FINETUNE_ONLY = [
    f"train.{k}"
    for k in [
        "model",
        "loss",
        "crop",
        "freeze_backbone",
        "frozen_share",
        "epochs",
        "patience",
        "max_minutes",
        "class_balance",
        "precision",
        "lr",
        "weight_decay",
        "val_fraction",
        "keep_best",
        "augment",
        "channels_last",
    ]
]
_SVM_ONLY = [
    f"train.{k}"
    for k in ["backbone", "layer", "classifier", "svm_kernel", "svm_c", "repeats", "feature_cache"]
]
_SELECTION_ONLY = ["train.small_set", "train.folds"]
_PATCHCORE_ONLY = ["train.coreset_ratio", "train.max_bank", "train.head_epochs"]
#: What patchcore reads of fine-tuning's settings: the network, and the good images held out to validate.
_PATCHCORE_SHARED = ["train.model", "train.val_fraction", "train.channels_last"]
_UNUSED_BY_METHOD = {
    "auto": [*_PATCHCORE_ONLY],
    "finetune": [*_SVM_ONLY, *_SELECTION_ONLY, *_PATCHCORE_ONLY],
    "features+svm": [*_FINETUNE_ONLY, *_SELECTION_ONLY, *_PATCHCORE_ONLY],
    "patchcore": [
        *(key for key in _FINETUNE_ONLY if key not in _PATCHCORE_SHARED),
        *_SVM_ONLY,
        *_SELECTION_ONLY,
        "train.weights",
    ],
}
#: Names rather than settings: they say where a run goes, not how it learns.
_NAMES = {"workload", "task", "register.model_name", "tracking.experiment", "monitor.experiment"}


class PipelineConfig(_Section):
    """The whole configuration of one pipeline run."""

    workload: str = Field("textile", pattern=WORKLOAD_NAME)
    task: str = "classification"
    data: DataConfig = Field(default_factory=DataConfig)
    # ``validate`` and ``register`` are BaseModel attributes, hence the trailing underscores and aliases.
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; choose from {', '.join(TASKS)}")
        return value

    @model_validator(mode="after")
    def _check_model_fits_data(self) -> PipelineConfig:
        task = get_task(self.task)
        task.check_config(self)
        _check_network_settings(self.train)
        if not self.register_.model_name:
            self.register_.model_name = f"{self.workload}-{task.model_kind}"
        if not self.tracking.experiment:
            self.tracking.experiment = self.workload
        if not self.monitor.experiment:
            self.monitor.experiment = f"{self.tracking.experiment}-monitoring"
        return self

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain JSON-able data, section names as users write them."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        """Returns the config as the JSON string the pipeline's ``config`` parameter carries."""
        return json.dumps(self.to_dict())

    def used(self) -> dict[str, Any]:
        """The settings this run uses, flat (``{"section.key": value}``), as logged to MLflow.

        Settings of the other method or task are left out: an SVM's kernel on a fine-tuning run, a mask
        threshold on a classifier's.
        """
        ignored = set(_UNUSED_BY_METHOD[self.train.method]) | set(get_task(self.task).unused_settings)
        return {key: value for key, value in self.flat().items() if key not in ignored}

    def differences(self) -> dict[str, Any]:
        """The used settings that differ from the workload's defaults (params.yaml and ``--set``)."""
        defaults = build_config(self.workload, task=self.task).used()
        mine = self.used()
        return {k: v for k, v in mine.items() if k in defaults and v != defaults[k] and k not in _NAMES}

    def title(self, model: str | None = None) -> str:
        """A run's readable name: workload, model and what differs, such as ``textile residual_cnn lr=0.01``.

        Args:
            model: The model that ``train.model=auto`` became, once known.
        """
        if self.train.method == "features+svm":
            learner = f"{self.train.learner()} on {self.train.backbone}"
        else:
            learner = model or self.train.model
        changed = {k: v for k, v in self.differences().items() if k not in ("train.model", "train.method")}
        # Training settings first: they are what runs are compared on; data and gate settings after.
        keys = sorted(changed, key=lambda key: (not key.startswith("train."), key))
        short = " ".join(f"{key.rpartition('.')[2]}={_short_value(changed[key])}" for key in keys)
        return f"{self.workload} {learner} {short}".strip()[:120]

    def flat(self) -> dict[str, Any]:
        """Returns ``{"section.key": value}`` for every setting, as logged to MLflow."""
        flat: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                flat.update({f"{section}.{key}": value for key, value in values.items()})
            else:
                flat[section] = values
        return flat


def _check_network_settings(train: TrainConfig) -> None:
    """Refuses settings the named network or backbone cannot take (read from the network registry).

    The registry imports torch, so it is read only when a network is named: ``auto`` needs no check.
    """
    if train.method == "features+svm" and train.weights == "none":
        raise ValueError(
            "train.method=features+svm with train.weights=none would extract features of random weights; "
            "use train.weights=imagenet (or auto), or train.weights=random if that is what you mean"
        )
    if train.model != "auto" and (train.freeze_backbone or train.weights == "imagenet"):
        from inspectflow.models.networks import get_network, networks

        if not _named(get_network, train.model).pretrained:
            pretrained = ("auto", *(n.name for n in networks() if n.pretrained and n.tasks))
            setting = "train.freeze_backbone" if train.freeze_backbone else "train.weights=imagenet"
            raise ValueError(f"{setting} applies to train.model in {pretrained} only")
    if train.method == "features+svm" or train.backbone != "efficientnet_lite0" or train.layer is not None:
        from inspectflow.models.backbones import resolve_layer

        resolve_layer(train.backbone, train.layer)


def _named(lookup: Any, name: str) -> Any:
    """A registry lookup whose ConfigError becomes the ValueError a pydantic validator reports."""
    try:
        return lookup(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


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
    workload: str,
    overrides: list[str] | None = None,
    params: dict[str, Any] | None = None,
    task: str | None = None,
) -> PipelineConfig:
    """Validates a workload's configuration: its task's defaults, its own, then ``params``, then overrides.

    Args:
        workload: Workload name: a built-in one (``textile``, ``dagm``, ``inserts``) or a line of the user's.
        overrides: ``section.key=value`` strings.
        params: Settings grouped by section (a ``params.yaml`` workload section; it may name the ``task``).
        task: The workload's task, needed for a workload that is not built in (unless ``params`` names it).

    Raises:
        ConfigError: The task is unknown or missing, or an override names an unknown setting or has a value
            of the wrong type.
    """
    requested = _merge(params or {}, parse_overrides(overrides or []))
    builtin = WORKLOAD_DEFAULTS.get(workload, {})
    task = task or requested.get("task") or builtin.get("task")
    if task is None:
        raise ConfigError(
            f"workload {workload!r} is not built in ({', '.join(WORKLOAD_DEFAULTS)}): say what it learns "
            f"with --task {'|'.join(TASKS)}, or task: in its params.yaml section"
        )
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    defaults = _merge(_merge(get_task(task).defaults, builtin), {"workload": workload, "task": task})
    train = _merge(defaults.get("train", {}), requested.get("train", {}))
    if train.get("weights") == "none" and train.get("method", "finetune") == "finetune":
        defaults = _merge(defaults, FROM_SCRATCH_DEFAULTS.get(workload, {}))
    return validate_config(_merge(defaults, {**requested, "task": task}))


def validate_config(raw: dict[str, Any]) -> PipelineConfig:
    """Validates a config dict, turning pydantic's errors into one readable :class:`ConfigError`."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
