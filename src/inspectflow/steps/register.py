"""Register: log the model to the MLflow Model Registry and decide, with a gate, whether it becomes champion.

The gate scores the current champion on the same test split as the new model, so the comparison is fair
even when the data changed since the champion was trained. Judging and moving the alias happen under the
registered model's lock (:mod:`inspectflow.lifecycle.lock`): two runs finishing together are judged one
after the other, the second against the first's outcome. The new version becomes ``champion`` when there
is none yet, or when it beats the champion's primary metric by more than ``min_improvement`` (the lower end
of the 95% paired bootstrap interval of the gain over the same test images, so that noise never moves
production) and no class's F1 drops by more than ``max_class_drop``; otherwise it becomes ``challenger``. A
run of a DVC experiment (``dvc exp run``) is judged the same way but only ever becomes ``challenger``
(decision ``held``). The decision and its reason are tags on the version.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspectflow import console
from inspectflow.config import PipelineConfig, RegisterConfig
from inspectflow.errors import one_line, pipeline_step
from inspectflow.lifecycle.audit import move_alias
from inspectflow.lifecycle.lock import registry_lock
from inspectflow.metrics.intervals import Interval, load_intervals, paired_gain
from inspectflow.metrics.operating_point import OPERATING_POINT_FILE
from inspectflow.metrics.operating_point import describe as describe_operating_point
from inspectflow.models.artifact import FEATURE_SVM
from inspectflow.names import (
    ARCHITECTURE_TAG,
    BASELINE_FILE,
    CHALLENGER,
    CHAMPION,
    CLASSES_TAG,
    DATA_DIGEST_TAG,
    DATA_SOURCE_TAG,
    DATA_VERSION_TAG,
    DVC_EXPERIMENT_TAG,
    GATE_BASELINE_SCORE_TAG,
    GATE_CHAMPION_SCORE_TAG,
    GATE_CHAMPION_VERSION_TAG,
    GATE_DECISION_TAG,
    GATE_NEW_SCORE_TAG,
    GATE_PRIMARY_METRIC_TAG,
    GATE_REASON_TAG,
    GATE_TEST_IMAGES_TAG,
    GIT_COMMIT_TAG,
    INTERVALS_FILE,
    LINEAGE_TAG_PREFIXES,
    MLFLOW_RUN_ID_TAG,
    REGISTERED_MODEL_NAME_TAG,
    REGISTERED_MODEL_VERSION_TAG,
    REGISTRY_SUMMARY_ARTIFACT,
    SCORES_FILE,
    SELECTION_TAG,
)
from inspectflow.tasks.base import Scores, Task

if TYPE_CHECKING:
    from collections.abc import Callable

    from inspectflow.data.dataset import Dataset
    from inspectflow.models.artifact import ModelSpec
    from inspectflow.serving.quantize import Int8Check

log = logging.getLogger(__name__)

# Scores are ratios of counts: 0.86 - 0.85 is 0.0100000000000001 in floating point, which must not count as
# beating a 0.01 margin.
_FLOAT_TOLERANCE = 1e-9


@dataclass
class GateDecision:
    """The gate's verdict on a new model version."""

    promote: bool
    reason: str
    new_score: float
    champion_score: float | None = None


#: Primary metrics a challenger improves by lowering them.
LOWER_IS_BETTER = frozenset({"false_reject_rate"})


def decide(
    new: Scores,
    champion: Scores | None,
    config: RegisterConfig,
    *,
    baseline: Scores | None = None,
    baseline_description: str = "the trivial baseline",
    target_recall: float | None = None,
) -> GateDecision:
    """Decides whether a new model replaces the champion; all three must be scored on the same test images.

    One number judges: the primary metric, as named, on the test split, for the new model, the champion and
    the trivial baseline alike, whatever the method (a method's own estimate, such as features+svm's
    cross-validation on the training split, is shown beside it, never judged in its place). Each reason
    names the metric, its test images and the baseline's value, to be checked against the scores files.

    Two floors come first, so that not even a first version is promoted when it learned nothing: the primary
    score must reach ``config.min_score`` and beat the trivial ``baseline`` by more than
    ``config.baseline_margin``. For ``false_reject_rate`` (lower is better) the two trivial models are
    passing every part, whose escape rate the first floor refuses (the test escape rate must not be
    significantly above ``1 - target_recall``), and flagging every part (false-reject rate 1), which it must
    beat by more than ``config.baseline_margin``. ``config.max_escape_rate`` refuses any test escape rate
    above it, whatever the primary score (a segmenter of fair IoU can still pass half the parts).

    Args:
        new: The new model's test scores.
        champion: The champion's scores on the same test images, or ``None`` when there is no champion.
        config: Gate settings.
        baseline: The trivial model's scores on the same test images (``None``: no baseline floor).
        baseline_description: What the trivial model does, for the reason.
        target_recall: The defect recall the thresholds were set for (``evaluate.target_recall``), which
            the escape-rate floor of ``false_reject_rate`` holds the new model to.

    Returns:
        The decision with a one-line reason.
    """
    metric = config.primary_metric
    lower = metric in LOWER_IS_BETTER
    new_score = float(getattr(new, metric))
    judged = f"test {metric} {new_score:.4f} on {new.test_images} test images"
    refusal = (
        _rate_floors(new, judged, config, target_recall)
        if lower
        else _score_floors(new_score, judged, config, baseline, baseline_description)
    ) or _escape_floor(new, config)
    if refusal:
        return GateDecision(False, refusal, new_score)
    floor = "" if baseline is None else f" (trivial baseline: {float(getattr(baseline, metric)):.4f})"
    if champion is None:
        return GateDecision(True, f"no champion yet; {judged}{floor}", new_score)
    champion_score = float(getattr(champion, metric))
    if math.isnan(champion_score):
        reason = f"the champion has no {metric} on this data; not promoted, promote manually if meant"
        return GateDecision(False, reason, new_score)
    # Paired on the same test images: the gain's 95% interval, not its point, must clear min_improvement.
    gain = paired_gain(new, champion, metric, lower)
    kind = new.class_metric
    new_classes, champion_classes = new.class_scores(), champion.class_scores()
    drops = {
        c: champion_classes[c] - new_classes[c]
        for c in new.classes
        if champion_classes[c] - new_classes[c] > config.max_class_drop + _FLOAT_TOLERANCE
    }
    same = f"on the same {new.test_images} test images{floor}"
    if gain.low <= config.min_improvement + _FLOAT_TOLERANCE:
        reason = (
            f"test {metric} {new_score:.4f} vs champion {champion_score:.4f} {same}: gain {gain.signed()}, "
            f"whose lower end is not above the required {config.min_improvement:.4f}"
        )
        return GateDecision(False, reason, new_score, champion_score)
    beats = f"test {metric} {new_score:.4f} beats champion {champion_score:.4f} by {gain.signed()} {same}"
    if drops:
        worst = ", ".join(f"{c} {kind} -{d:.4f}" for c, d in sorted(drops.items()))
        reason = f"{beats} but per-class {kind} drops beyond {config.max_class_drop:.4f}: {worst}"
        return GateDecision(False, reason, new_score, champion_score)
    reason = (
        f"{beats} (lower end > {config.min_improvement:.4f}), no class {kind} drops more than "
        f"{config.max_class_drop:.4f}"
    )
    return GateDecision(True, reason, new_score, champion_score)


def _score_floors(
    new_score: float, judged: str, config: RegisterConfig, baseline: Scores | None, baseline_description: str
) -> str | None:
    """Why a higher-is-better primary score is not good enough to be promoted at all (``None``: it is)."""
    metric = config.primary_metric
    floor = None if baseline is None else float(getattr(baseline, metric))
    if new_score < config.min_score - _FLOAT_TOLERANCE:
        beside = "" if floor is None else f" (trivial baseline: {floor:.4f})"
        return f"{judged} is below register.min_score {config.min_score:.4f}{beside}; not promoted"
    margin = config.baseline_margin
    if floor is not None and margin is not None and new_score <= floor + margin + _FLOAT_TOLERANCE:
        return (
            f"{judged} does not beat the trivial baseline ({baseline_description}: test {metric} "
            f"{floor:.4f} on the same images) by more than register.baseline_margin {margin:.4f}; "
            "not promoted"
        )
    return None


def _escape_floor(new: Scores, config: RegisterConfig) -> str | None:
    """Why a version that passes too many defective test parts is not promoted at all (None: it may be)."""
    if config.max_escape_rate is None:
        return None
    escape = new.rates().get("escape_rate")
    if escape is None or math.isnan(escape.value):
        return (
            f"no escape rate on this test split (it needs defective images and decisions), which "
            f"register.max_escape_rate {config.max_escape_rate:.1%} judges; not promoted"
        )
    if escape.value > config.max_escape_rate + _FLOAT_TOLERANCE:
        return (
            f"test escape rate {escape} at the operating point is above register.max_escape_rate "
            f"{config.max_escape_rate:.1%}: too many defective parts pass for use on a line; not promoted"
        )
    return None


def _rate_floors(new: Scores, judged: str, config: RegisterConfig, target_recall: float | None) -> str | None:
    """Why a false-reject rate is not promoted at all: escapes beyond the target, or flagging everything."""
    escape = new.rates().get("escape_rate")
    new_score = new.false_reject_rate
    if escape is None or math.isnan(escape.value) or math.isnan(new_score) or target_recall is None:
        return (
            "no escape and false-reject rates on this test split (it needs defective and good images); "
            "not promoted"
        )
    allowed = 1 - target_recall
    if escape.low > allowed + _FLOAT_TOLERANCE:
        return (
            f"test escape rate {escape} is significantly above the {allowed:.1%} that "
            f"evaluate.target_recall {target_recall} allows; not promoted"
        )
    if config.baseline_margin is not None and new_score >= 1 - config.baseline_margin - _FLOAT_TOLERANCE:
        return (
            f"{judged} does not beat flagging every part (false_reject_rate 1.0000) by more than "
            f"register.baseline_margin {config.baseline_margin:.4f}; not promoted"
        )
    return None


def model_card(
    config: PipelineConfig,
    task: Task,
    version: str,
    alias: str,
    tags: dict[str, str],
    decision: GateDecision,
    scores: Scores,
    baseline: Scores,
    operating: str = "",
    estimate: str | None = None,
    intervals: dict[str, Interval] | None = None,
    selection: str | None = None,
    engines: str = "",
) -> str:
    """A version's description (Markdown): verdict, scores against the champion and baseline, data, use.

    ``operating`` is the operating point's line (:func:`inspectflow.metrics.operating_point.describe`), if
    any; ``estimate`` the method's own estimate (:func:`inspectflow.models.feature_svm.describe_cv`), shown
    as not judged; ``intervals`` the test scores' 95% bootstrap intervals, shown beside them; ``selection``
    what ``train.method=auto`` compared and why the method won; ``engines`` the int8 engine's line.
    """
    name, metric = config.register_.model_name, config.register_.primary_metric
    champion = tags.get(GATE_CHAMPION_VERSION_TAG) or "none"

    def row(score: str, champion_score: float | None = None) -> str:
        theirs = "-" if champion_score is None else f"{champion_score:.4f}"
        mine = f"{getattr(scores, score):.4f}"
        if (interval := (intervals or {}).get(score)) is not None:
            mine += f" ({interval.low:.4f} to {interval.high:.4f})"
        return f"| test {score} | {mine} | {theirs} | {getattr(baseline, score):.4f} |"

    # The task's headline figures, those it has on this run (no rates without image-level decisions).
    others = [m for m in task.headline_metrics if m != metric and not math.isnan(getattr(scores, m))]
    rows = [row(metric, decision.champion_score), *map(row, others)]
    worst = min(scores.class_scores().items(), key=lambda item: item[1], default=None)
    data = f"`{tags.get(DATA_SOURCE_TAG, '?')}`, DVC version `{tags.get(DATA_VERSION_TAG, '?')[:12]}`"
    code = f"git `{tags.get(GIT_COMMIT_TAG, 'unknown')[:12]}`"
    judged = (
        f"The gate judged test {metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better) on "
        f"the test split's {scores.test_images} images, the same for this version, the champion and the "
        "trivial baseline."
    )
    return "\n".join(
        [
            f"**{tags[GATE_DECISION_TAG]}**, `@{alias}`: {decision.reason}",
            "",
            f"| score ({scores.test_images} test images) | version {version}"
            f"{' (95% interval)' if intervals else ''} | champion (version {champion}) "
            "| trivial baseline |",
            "|---|---|---|---|",
            *rows,
            "",
            judged,
            *([f"Not judged: {estimate}."] if estimate else []),
            *([f"Method: {selection}."] if selection else []),
            f"Weakest class: {worst[0]} ({scores.class_metric} {worst[1]:.4f})." if worst else "",
            *([operating] if operating else []),
            *([engines] if engines else []),
            f"Data: {data}; code: {code}; MLflow run `{tags.get(MLFLOW_RUN_ID_TAG)}`.",
            "",
            f"Use: `inspectflow predict {config.workload} IMAGE... --model models:/{name}/{version}`, or "
            f'`mlflow.pyfunc.load_model("models:/{name}/{version}")` (lineage: `inspectflow lineage '
            f"models:/{name}/{version}`).",
        ]
    )


@dataclass
class _Registration:
    """What the register step works with, read once."""

    config: PipelineConfig
    task: Task
    dataset: Dataset
    spec: ModelSpec
    scores: Scores
    baseline: Scores
    client: Any  # MlflowClient
    intervals: dict[str, Interval]  # the test scores' 95% bootstrap intervals, from the evaluate step

    @property
    def name(self) -> str:
        return self.config.register_.model_name

    def gate(self, champion: Scores | None) -> GateDecision:
        """The gate on the new model's test scores, against the champion's on the same images if any."""
        return decide(
            self.scores,
            champion,
            self.config.register_,
            baseline=self.baseline,
            baseline_description=self.task.baseline_description,
            target_recall=self.config.evaluate.target_recall,
        )


def _judge(reg: _Registration) -> tuple[GateDecision, Any]:
    """The gate's decision against the champion of this moment, which it returns too (or ``None``)."""
    from mlflow.exceptions import MlflowException

    from inspectflow.serving.registered import load_registered

    try:
        champion_version = reg.client.get_model_version_by_alias(reg.name, CHAMPION)
    except MlflowException:
        champion_version = None  # no registered model or no champion yet
    # The floors first: a model that learned nothing is refused whatever the champion.
    decision = reg.gate(None)
    if not decision.promote or champion_version is None:
        return decision, champion_version
    champion = f"the champion (version {champion_version.version})"
    champion_classes = json.loads(champion_version.tags.get(CLASSES_TAG, "[]"))
    if mismatch := reg.task.champion_mismatch(champion_classes, reg.spec.classes):
        reason = f"{champion} {mismatch}; promote manually if intended"
        return GateDecision(False, reason, decision.new_score), champion_version
    try:
        predictor, champion_spec = load_registered(f"models:/{reg.name}/{champion_version.version}")
        # Each model is scored with the thresholds it keeps, as it serves.
        champion_config = reg.config.evaluate.applying(champion_spec.thresholds)
        champion_scores = reg.task.evaluate(predictor, reg.dataset, champion_config)
    except Exception as error:  # a champion of an older export, another input size, another format
        reason = (
            f"{champion} cannot be scored on this data ({one_line(error)}); not promoted, promote manually "
            "if meant"
        )
        return GateDecision(False, reason, decision.new_score), champion_version
    return reg.gate(champion_scores), champion_version


def _held_for_experiment(decision: GateDecision, run_tags: dict[str, str]) -> tuple[GateDecision, str]:
    """The decision and its outcome (``promoted``, ``rejected``, or ``held`` under a DVC experiment)."""
    if decision.promote and (experiment := run_tags.get(DVC_EXPERIMENT_TAG)):
        # Experiments explore; the champion moves on a run of committed params, or by hand.
        reason = (
            f"{decision.reason}; held as challenger: DVC experiment {experiment} registers challengers only "
            "(inspectflow models promote makes it champion)"
        )
        return replace(decision, promote=False, reason=reason), "held"
    return decision, "promoted" if decision.promote else "rejected"


def _gate_tags(
    reg: _Registration, decision: GateDecision, outcome: str, champion_version: Any
) -> dict[str, str]:
    """The version's ``gate.*`` tags: what was judged, on which images, against what."""
    metric = reg.config.register_.primary_metric
    return {
        GATE_DECISION_TAG: outcome,
        GATE_REASON_TAG: decision.reason,
        GATE_PRIMARY_METRIC_TAG: metric,
        GATE_NEW_SCORE_TAG: f"{decision.new_score:.6f}",
        GATE_TEST_IMAGES_TAG: str(reg.scores.test_images),
        GATE_BASELINE_SCORE_TAG: f"{float(getattr(reg.baseline, metric)):.6f}",
        GATE_CHAMPION_VERSION_TAG: champion_version.version if champion_version else "",
        GATE_CHAMPION_SCORE_TAG: "" if decision.champion_score is None else f"{decision.champion_score:.6f}",
    }


def _describe(
    reg: _Registration,
    run: Any,
    version: str,
    alias: str,
    tags: dict[str, str],
    decision: GateDecision,
    evaluation_dir: Path,
    engines: str = "",
) -> None:
    """Writes the version's model card and the run's outcome (tags and the note's result line).

    ``engines`` is the int8 check's line, if any (:meth:`~inspectflow.serving.quantize.Int8Check.line`).
    """
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from inspectflow.models.feature_svm import describe_cv

    metric, scores = reg.config.register_.primary_metric, reg.scores
    result_note = (
        f"**Result**: test {metric} {getattr(scores, metric):.4f} on {scores.test_images} test "
        f"images (trivial baseline: {getattr(reg.baseline, metric):.4f}); `{reg.name}` version {version} is "
        f"`@{alias}` ({tags[GATE_DECISION_TAG]}: {decision.reason})"
    )
    point = evaluation_dir / OPERATING_POINT_FILE
    operating = describe_operating_point(json.loads(point.read_text())) if point.is_file() else ""
    estimate = describe_cv(run.data.metrics, reg.config.train.repeats)
    card = model_card(
        reg.config, reg.task, version, alias, {**run.data.tags, **tags}, decision, scores, reg.baseline,
        operating, estimate, reg.intervals, run.data.tags.get(SELECTION_TAG), engines,
    )  # fmt: skip
    reg.client.update_model_version(reg.name, version, description=card)
    mlflow.set_tags(
        {
            REGISTERED_MODEL_NAME_TAG: reg.name,
            REGISTERED_MODEL_VERSION_TAG: version,
            GATE_DECISION_TAG: tags[GATE_DECISION_TAG],
            GATE_REASON_TAG: decision.reason,
            MLFLOW_RUN_NOTE: f"{run.data.tags.get(MLFLOW_RUN_NOTE, '')}\n\n{result_note}".strip(),
        }
    )


def _int8_check(reg: _Registration) -> Callable[[Path], tuple[Int8Check, Path]] | None:
    """The int8 check of the version's ONNX export, at its thresholds, on the gate's metric; None if off."""
    from functools import partial

    from inspectflow.serving.quantize import check_int8

    settings = reg.config.register_
    if not settings.int8:
        return None
    config = reg.config.evaluate.applying(reg.spec.thresholds)
    metric, agreement = settings.primary_metric, settings.int8_min_agreement
    return partial(
        check_int8, dataset=reg.dataset, spec=reg.spec, task=reg.task, config=config, metric=metric,
        min_agreement=agreement,
    )  # fmt: skip


@pipeline_step("register")
def register_step(
    dataset_dir: Path, model_dir: Path, evaluation_dir: Path, raw_config: dict[str, object], run_id: str
) -> dict[str, Any]:
    """Registers the trained model, applies the gate and moves the aliases.

    Returns:
        A summary: MLflow run id, model name and version, alias, gate decision and reason, test metrics.
    """
    import mlflow
    from mlflow import MlflowClient

    from inspectflow.config import validate_config
    from inspectflow.data.dataset import dataset_digest, load_dataset
    from inspectflow.models.artifact import load_trained_model
    from inspectflow.monitoring.watch import log_reference, reference_profile
    from inspectflow.serving.registered import log_model
    from inspectflow.tasks import load_scores, task_for
    from inspectflow.tracking import resume_run

    config = validate_config(raw_config)
    model, spec = load_trained_model(model_dir)
    dataset = load_dataset(dataset_dir)
    reg = _Registration(
        config, task_for(config), dataset, spec, load_scores(evaluation_dir / SCORES_FILE),
        load_scores(evaluation_dir / BASELINE_FILE), MlflowClient(),
        load_intervals(evaluation_dir / INTERVALS_FILE),
    )  # fmt: skip
    name, gate_config = reg.name, config.register_
    with resume_run(run_id, "register", final=True) as run:
        flavor = gate_config.flavor
        if flavor == "auto":  # the method trained decides: a features+svm model is logged only as pyfunc
            flavor = "pyfunc" if spec.architecture == FEATURE_SVM else "pytorch"
            mlflow.log_param("register.flavor_logged", flavor)
        model_info, int8 = log_model(
            model, spec, model_dir, dataset, flavor, gate_config.onnx, _int8_check(reg)
        )
        if int8 is not None:
            mlflow.log_metrics(int8.metrics())
        # What the drift watch compares new images with travels with every version (inspectflow monitor).
        log_reference(reference_profile(reg.task, dataset, model, spec, config))
        version = str(mlflow.register_model(model_info.model_uri, name).version)
        tags = {
            CLASSES_TAG: json.dumps(spec.classes),
            ARCHITECTURE_TAG: spec.architecture,
            DATA_DIGEST_TAG: dataset_digest(dataset.manifest),
            MLFLOW_RUN_ID_TAG: run.info.run_id,
            # Lineage: data version, git commit, kfp pipeline and run, package versions.
            **{k: v for k, v in run.data.tags.items() if k.startswith(LINEAGE_TAG_PREFIXES)},
            **(int8.tags() if int8 else {}),
        }
        # Judged and moved under the model's lock: the champion compared against is still the champion
        # when the alias moves, whatever other runs finish meanwhile.
        with registry_lock(reg.client, name):
            decision, champion_version = _judge(reg)
            decision, outcome = _held_for_experiment(decision, run.data.tags)
            alias = CHAMPION if decision.promote else CHALLENGER
            tags |= _gate_tags(reg, decision, outcome, champion_version)
            for key, value in tags.items():
                reg.client.set_model_version_tag(name, version, key, value)
            move_alias(reg.client, name, alias, version, action="gate", reason=decision.reason)
        engines = int8.line(gate_config.int8_min_agreement) if int8 else ""
        _describe(reg, run, version, alias, tags, decision, evaluation_dir, engines)
        summary = {
            "mlflow_run_id": run.info.run_id,
            "model_name": name,
            "version": version,
            "alias": alias,
            "decision": outcome,
            "reason": decision.reason,
            "metrics": reg.scores.metrics(),
            "intervals": {metric: [i.low, i.high] for metric, i in reg.intervals.items()},
            "baseline": {"description": reg.task.baseline_description, "metrics": reg.baseline.metrics()},
            "gate": asdict(decision),
        }
        mlflow.log_dict(summary, REGISTRY_SUMMARY_ARTIFACT)
    log.info("%s version %s -> %s: %s", name, version, alias, decision.reason)
    console.note(f"{name} version {version} -> @{alias}")
    return summary
