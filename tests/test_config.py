import pytest

from inspectflow.config import build_config, parse_overrides, validate_config
from inspectflow.errors import ConfigError


def test_defaults_validate_and_round_trip_through_a_dict() -> None:
    config = build_config("textile")
    assert config.train.model == "auto" and config.task == "classification"
    assert config.register_.primary_metric == "macro_f1"
    assert validate_config(config.to_dict()) == config
    assert "register" in config.to_dict() and "validate" in config.to_dict()


def test_overrides_are_typed_yaml_scalars() -> None:
    parsed = parse_overrides(["train.epochs=3", "train.augment=false", "validate.expected_side=null"])
    assert parsed == {"train": {"epochs": 3, "augment": False}, "validate": {"expected_side": None}}
    config = build_config("textile", ["train.epochs=3", "data.classes=[a, b]"])
    assert config.train.epochs == 3
    assert config.data.classes == ["a", "b"]


def test_flat_names_every_setting() -> None:
    flat = build_config("textile").flat()
    assert flat["train.epochs"] == 30
    assert flat["register.model_name"] == "textile-classifier"
    assert flat["tracking.experiment"] == "textile"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "train.epoch"),
        ("train.epochs=zero", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("data.format=tiff", "data.format"),
        ("train.freeze_backbone=true", "resnet18"),
        ("train.weights=imagenet", "resnet18"),
        ("register.flavor=torchscript", "register.flavor"),
        ("epochs", "key=value"),
        ("evaluate.target_recall=0.95", "needs data.good_class"),
        ("register.primary_metric=false_reject_rate", "set evaluate.target_recall"),
        ("register.primary_metric=dice", "does not fit the classification"),
        # Networks, losses and backbones are read from the registries, not listed in the config.
        (
            "train.model=resnet50",
            r"train.model=resnet50 is not a registered network .*residual_cnn, resnet18",
        ),
        ("train.model=unet", "train.model=unet does not fit the classification"),
        ("train.loss=dice", "train.loss=dice does not fit the classification"),
        (
            "train.backbone=resnet99",
            "unknown backbone 'resnet99'; choose one of efficientnet_lite0, mobilenet_v2",
        ),
        ("train.layer=fc1", "efficientnet_lite0 layer must be pool"),
    ],
)
def test_bad_overrides_fail_with_the_setting_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config("textile", ["train.model=residual_cnn", override])


def test_the_flavor_follows_the_method_unless_set_and_an_impossible_pair_is_one_clear_error() -> None:
    # auto: the trained model's flavor, resolved at register (pyfunc for features+svm, else pytorch)
    assert build_config("textile", ["train.method=features+svm"]).register_.flavor == "auto"
    assert build_config("textile").register_.flavor == "auto"
    assert build_config("textile", ["register.flavor=pyfunc"]).register_.flavor == "pyfunc"
    with pytest.raises(ConfigError, match=r"features\+svm is logged as register.flavor=pyfunc .*not pytorch"):
        build_config("textile", ["train.method=features+svm", "register.flavor=pytorch"])


def test_fine_tuning_from_random_weights_gets_its_own_recipe_under_the_users_overrides() -> None:
    pretrained = build_config("inserts")
    assert (pretrained.data.image_side, pretrained.train.weights, pretrained.train.patience) == (
        None,
        "auto",
        5,
    )
    scratch = build_config("inserts", ["method=finetune", "weights=none"])
    assert (scratch.data.image_side, scratch.train.epochs, scratch.train.lr) == (112, 30, 3e-3)
    assert scratch.train.patience is None
    mine = build_config("inserts", ["weights=none", "epochs=2", "data.image_side=64"])
    assert (mine.data.image_side, mine.train.epochs) == (64, 2)
    # Features of random weights are asked for by name, and still taken at the data's side.
    assert build_config("inserts", ["method=features+svm", "weights=random"]).data.image_side is None
    with pytest.raises(ConfigError, match="weights=random"):
        build_config("inserts", ["method=features+svm", "weights=none"])


def test_a_workload_of_the_users_own_needs_its_task_and_gets_its_own_names() -> None:
    steel = build_config("steel", task="classification")
    assert (steel.task, steel.register_.model_name, steel.tracking.experiment) == (
        "classification",
        "steel-classifier",
        "steel",
    )
    assert build_config("cracks", params={"task": "segmentation"}).register_.model_name == "cracks-segmenter"
    with pytest.raises(ConfigError, match="--task"):
        build_config("steel")
    with pytest.raises(ConfigError, match="workload"):
        build_config("Steel Line", task="classification")


def test_a_target_recall_needs_a_validation_split_to_be_set_on() -> None:
    with pytest.raises(ConfigError, match=r"train\.method=finetune"):
        build_config(
            "inserts", ["train.method=features+svm", "data.good_class=Intact", "evaluate.target_recall=0.95"]
        )


def test_a_classifier_can_be_gated_on_false_rejects_at_a_signed_recall() -> None:
    config = build_config(
        "textile",
        ["data.good_class=good", "evaluate.target_recall=0.99", "register.primary_metric=false_reject_rate"],
    )

    assert config.used()["data.good_class"] == "good" and "evaluate.detection_threshold" in config.used()


def test_every_dvc_stage_reads_a_demo_set_with_a_valid_section_and_declares_its_plots() -> None:
    from pathlib import Path

    import yaml

    from inspectflow.config import WORKLOAD_DEFAULTS, read_params

    root = Path(__file__).resolve().parents[1]
    params_file = root / "params.yaml"
    workloads = yaml.safe_load(params_file.read_text())["workloads"]
    plots = {next(iter(entry)) for entry in yaml.safe_load((root / "dvc.yaml").read_text())["plots"]}
    assert {"textile", "dagm", "inserts", "dagm-anomaly"} <= set(workloads)
    tasks = {}
    for workload, folder in workloads.items():
        assert folder in WORKLOAD_DEFAULTS, f"{workload}: data/{folder} is no demo set"
        config = build_config(workload, params=read_params(params_file, workload))  # raises if invalid
        tasks[workload] = config.task
        decided_per_image = config.task != "classification" or config.data.good_class is not None
        assert f"plots/{workload}/confusion.csv" in plots
        assert (f"plots/{workload}/roc.csv" in plots) == decided_per_image, workload
    assert tasks["dagm-anomaly"] == "anomaly"
