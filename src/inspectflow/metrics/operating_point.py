"""The operating point a line signs off: a threshold on an image's defect score, and the two rates it gives.

A part is declared defective when its defect score is above the threshold. At that threshold:

* the **escape rate** is the share of defective parts passed as good (1 - defect recall);
* the **false-reject rate** is the share of good parts flagged (scrapped or sent to manual review).

:func:`pick_threshold` chooses, on the validation split, the threshold that reaches a target defect recall
with the fewest false rejects; :func:`rates` reports both rates of the decisions on the test split with
bootstrap confidence intervals; :func:`curves` gives the ROC and precision-recall curves to plot.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from inspectflow.names import TEST_METRICS

if TYPE_CHECKING:
    import pandas as pd

#: The evaluation's summary of its operating point (threshold, both rates, curve areas), for the model card.
OPERATING_POINT_FILE = "operating_point.json"
#: The curves as tables (DVC plots) and as one figure (MLflow).
ROC_FILE = "roc.csv"
PRECISION_RECALL_FILE = "precision_recall.csv"
CURVES_FIGURE = "curves.png"
#: The per-image table's columns a task writes when it makes image-level decisions (see ``report``).
DECISION_COLUMNS = ("defective", "defect_score", "detected")
#: Two-sided confidence of the reported intervals.
CONFIDENCE = 0.95
#: Bootstrap resamples per interval: enough for stable 2.5% and 97.5% percentiles.
RESAMPLES = 2000


@dataclass(frozen=True)
class Rate:
    """A rate measured on ``total`` images, ``count`` of which were counted, with its confidence interval."""

    value: float
    low: float
    high: float
    count: int
    total: int

    def as_dict(self) -> dict[str, float | int | None]:
        """The rate as JSON-able fields (an unknown rate's as ``None``)."""
        return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, fields: dict[str, float | int | None]) -> Rate:
        """Rebuilds a rate from :meth:`as_dict`'s fields."""
        return cls(**{key: math.nan if value is None else value for key, value in fields.items()})  # type: ignore[arg-type]

    def __str__(self) -> str:
        return (
            f"{100 * self.value:.1f}% ({self.count} of {self.total}; {100 * CONFIDENCE:.0f}% CI "
            f"{100 * self.low:.1f}-{100 * self.high:.1f}%)"
        )


def pick_threshold(scores: npt.ArrayLike, defective: npt.ArrayLike, target_recall: float) -> float | None:
    """The threshold that flags at least ``target_recall`` of the defective images with the fewest good ones.

    Of the thresholds that flag as few good images, it is the lowest, so it flags the most defects: it sits
    at the highest good score still passed, and anything scoring above every passed good image is flagged.
    (On well separated validation scores, the highest threshold reaching the target would let through up to
    ``1 - target_recall`` of the defects for no fewer false rejects.)

    Args:
        scores: Each image's defect score, ``(N,)``.
        defective: Whether each image truly is defective, boolean ``(N,)``.
        target_recall: The share of defective images to flag, in ``(0, 1]``.

    Returns:
        The threshold, or ``None`` when there is no defective image to set it on.
    """
    values = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(defective, dtype=bool)
    defect_scores = np.sort(values[truth])[::-1]
    if defect_scores.size == 0:
        return None
    needed = max(1, math.ceil(target_recall * defect_scores.size - 1e-9))
    lowest_flagged = defect_scores[needed - 1]
    passed_good = values[~truth & (values < lowest_flagged)]
    if passed_good.size:
        return float(passed_good.max())
    return float(np.nextafter(values.min(), -np.inf))  # every good image is flagged anyway: flag all


def rates(defective: npt.ArrayLike, flagged: npt.ArrayLike, seed: int = 0) -> dict[str, Rate]:
    """The escape and false-reject rates of decisions ``flagged``, with percentile bootstrap intervals.

    Each rate is a share of one kind of image (defective, good), so each is resampled within its own kind.
    Where none or all of them were counted, every resample agrees and the bootstrap interval collapses to a
    point; the open side is then the exact binomial (Clopper-Pearson) bound, which 0 of 10 does not rule
    out either.

    Returns:
        ``{"escape_rate": ..., "false_reject_rate": ...}``; a rate with no image of its kind is NaN.
    """
    truth = np.asarray(defective, dtype=bool)
    decided = np.asarray(flagged, dtype=bool)
    generator = np.random.default_rng(seed)
    return {
        "escape_rate": _rate(~decided[truth], generator),
        "false_reject_rate": _rate(decided[~truth], generator),
    }


def rate_fields(defective: npt.ArrayLike, flagged: npt.ArrayLike) -> dict[str, dict[str, float | int | None]]:
    """:func:`rates` as JSON-able fields, as a task's scores keep them (see :class:`DecisionRates`)."""
    return {name: rate.as_dict() for name, rate in rates(defective, flagged).items()}


def resampled_rate(name: str, defective: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """``escape_rate`` or ``false_reject_rate`` per resample (rows of per-image flags; NaN: none to count)."""
    events = defective if name == "escape_rate" else ~defective
    wrong = events & (~flagged if name == "escape_rate" else flagged)
    counts = events.sum(axis=1)
    return np.divide(wrong.sum(axis=1), counts, out=np.full(len(counts), np.nan), where=counts > 0)


class DecisionRates:
    """What the scores of a task that decides per image (defective or not) add: both rates at its threshold.

    The scores dataclass holds ``decision_rates`` (:func:`rate_fields`; empty without image-level
    decisions), so the rates travel with ``scores.json`` and the gate can compare them.
    """

    decision_rates: dict[str, dict[str, float | int | None]]

    def rates(self) -> dict[str, Rate]:
        """The escape and false-reject rates with their intervals (none without image-level decisions)."""
        return {name: Rate.from_dict(fields) for name, fields in self.decision_rates.items()}

    def rate_metrics(self, prefix: str) -> dict[str, float]:
        """The known rates as flat metrics: ``<prefix>escape_rate``, ``<prefix>false_reject_rate``."""
        return {
            f"{prefix}{name}": rate.value for name, rate in self.rates().items() if not math.isnan(rate.value)
        }

    @property
    def escape_rate(self) -> float:
        """Share of defective test images passed as good (NaN when unknown)."""
        return self._value("escape_rate")

    @property
    def false_reject_rate(self) -> float:
        """Share of good test images flagged (NaN when unknown)."""
        return self._value("false_reject_rate")

    def _value(self, name: str) -> float:
        value = self.decision_rates.get(name, {}).get("value")
        return math.nan if value is None else float(value)


def _rate(events: np.ndarray, generator: np.random.Generator) -> Rate:
    total, count = int(events.size), int(events.sum())
    if total == 0:
        return Rate(math.nan, math.nan, math.nan, 0, 0)
    value = count / total
    tail = (1 - CONFIDENCE) / 2
    if count == 0:
        return Rate(0.0, 0.0, 1 - tail ** (1 / total), count, total)
    if count == total:
        return Rate(1.0, tail ** (1 / total), 1.0, count, total)
    means = generator.binomial(total, value, size=RESAMPLES) / total  # resampling Bernoulli outcomes
    low, high = np.quantile(means, [tail, 1 - tail])
    return Rate(value, float(low), float(high), count, total)


@dataclass(frozen=True)
class Curves:
    """The ROC and precision-recall curves of a defect score, and their areas."""

    false_positive_rate: list[float]
    true_positive_rate: list[float]
    roc_thresholds: list[float]
    precision: list[float]
    recall: list[float]
    roc_auc: float
    average_precision: float


def curves(scores: npt.ArrayLike, defective: npt.ArrayLike) -> Curves | None:
    """ROC and precision-recall curves (scikit-learn); ``None`` without both kinds of image."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    values = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(defective, dtype=bool)
    if truth.all() or not truth.any():
        return None
    false_positive_rate, true_positive_rate, thresholds = roc_curve(truth, values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's notes on ties at the ends of the curve
        precision, recall, _ = precision_recall_curve(truth, values)
    return Curves(
        false_positive_rate=false_positive_rate.tolist(),
        true_positive_rate=true_positive_rate.tolist(),
        # roc_curve's first threshold is +inf (nothing flagged): kept finite for JSON and CSV.
        roc_thresholds=np.minimum(thresholds, np.finfo(np.float64).max).tolist(),
        precision=precision.tolist(),
        recall=recall.tolist(),
        roc_auc=float(roc_auc_score(truth, values)),
        average_precision=float(average_precision_score(truth, values)),
    )


def report(
    out_dir: Path,
    table: pd.DataFrame,
    found: dict[str, Rate],
    threshold: float | None,
    target_recall: float | None,
    good_quantile: float | None = None,
) -> dict[str, float]:
    """The test split's operating point: its rates, and curves from the per-image table an evaluation wrote.

    Reads the table's :data:`DECISION_COLUMNS` (a task without image-level decisions writes none: nothing
    to report) and writes :data:`OPERATING_POINT_FILE`, the ROC and precision-recall tables and their
    figure into ``out_dir``.

    Args:
        out_dir: The evaluation's folder.
        table: The per-image table.
        found: The escape and false-reject rates of the table's decisions, as the scores hold them
            (:meth:`DecisionRates.rates`).
        threshold: The decision threshold the decisions were made with, for the summary and the figure.
        target_recall: The defect recall it was set for on validation, if it was.
        good_quantile: The quantile of good validation images' scores it was set at instead, if it was
            (no defective validation image).

    Returns:
        Test metrics: the ``_ci_low`` and ``_ci_high`` bounds of ``test/escape_rate`` and
        ``test/false_reject_rate`` (the rates themselves are the scores' metrics), ``test/roc_auc`` and
        ``test/average_precision``.
    """
    import pandas as pd

    if not found or not set(DECISION_COLUMNS) <= set(table.columns):
        return {}
    defective = table["defective"].to_numpy(bool)
    scores = table["defect_score"].to_numpy(np.float64)
    metrics: dict[str, float] = {}
    for name, rate in found.items():
        if not math.isnan(rate.value):
            metrics.update(
                {f"{TEST_METRICS}{name}_ci_low": rate.low, f"{TEST_METRICS}{name}_ci_high": rate.high}
            )
    drawn = curves(scores, defective)
    if drawn is not None:
        metrics[f"{TEST_METRICS}roc_auc"] = drawn.roc_auc
        metrics[f"{TEST_METRICS}average_precision"] = drawn.average_precision
        pd.DataFrame(
            {"false_positive_rate": drawn.false_positive_rate, "true_positive_rate": drawn.true_positive_rate,
             "threshold": drawn.roc_thresholds}
        ).to_csv(out_dir / ROC_FILE, index=False)  # fmt: skip
        pd.DataFrame({"recall": drawn.recall, "precision": drawn.precision}).to_csv(
            out_dir / PRECISION_RECALL_FILE, index=False
        )
        _plot(drawn, found, scores, defective, threshold, out_dir / CURVES_FIGURE)
    summary = {
        "threshold": threshold,
        "target_recall": None if good_quantile is not None else target_recall,
        "good_quantile": good_quantile,
        **{name: rate.as_dict() for name, rate in found.items()},
        "roc_auc": None if drawn is None else drawn.roc_auc,
        "average_precision": None if drawn is None else drawn.average_precision,
    }
    (out_dir / OPERATING_POINT_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False, default=str))
    return metrics


def describe(summary: dict[str, object]) -> str:
    """One line for a model card: both rates at the threshold, and what the threshold was set for."""
    parts = []
    for name, label in (("escape_rate", "escape rate"), ("false_reject_rate", "false-reject rate")):
        fields = summary.get(name)
        if isinstance(fields, dict) and fields.get("total"):
            parts.append(f"{label} {Rate.from_dict(fields)}")
    threshold = summary.get("threshold")
    target, quantile = summary.get("target_recall"), summary.get("good_quantile")
    at = f" at defect score > {threshold:.4g}" if isinstance(threshold, float) else ""
    why = f", set on validation for defect recall {target}" if target is not None else ""
    if quantile is not None:
        why = f", set at the {quantile} quantile of good validation images' scores (no defective one)"
    return f"Test{at}{why}: " + "; ".join(parts) + "." if parts else ""


def _plot(
    drawn: Curves,
    found: dict[str, Rate],
    scores: np.ndarray,
    defective: np.ndarray,
    threshold: float | None,
    path: Path,
) -> None:
    """The ROC and precision-recall curves, and the histograms of good and defective images' scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc, pr, spread) = plt.subplots(1, 3, figsize=(13.5, 4))
    roc.plot(drawn.false_positive_rate, drawn.true_positive_rate)
    escape, false_reject = found["escape_rate"], found["false_reject_rate"]
    if not (math.isnan(escape.value) or math.isnan(false_reject.value)):
        roc.plot([false_reject.value], [1 - escape.value], "o", color="red", label="operating point")
        roc.legend(loc="lower right")
    roc.set(xlabel="false-reject rate (good parts flagged)", ylabel="defect recall (1 - escape rate)",
            title=f"ROC, AUC {drawn.roc_auc:.3f}", xlim=(0, 1), ylim=(0, 1.02))  # fmt: skip
    pr.plot(drawn.recall, drawn.precision)
    pr.set(xlabel="defect recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"precision-recall, AP {drawn.average_precision:.3f}")  # fmt: skip
    # One set of bins for both kinds, so that their overlap reads as it is.
    bins = np.histogram_bin_edges(scores, bins=30)
    for kind, label, color in ((~defective, "good", "tab:green"), (defective, "defective", "tab:red")):
        spread.hist(scores[kind], bins=bins, alpha=0.6, color=color, label=f"{label} ({int(kind.sum())})")
    if threshold is not None:
        spread.axvline(threshold, color="black", linestyle="--", label="threshold")
    spread.set(xlabel="defect score", ylabel="test images", title="defect scores of the test images")
    spread.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
