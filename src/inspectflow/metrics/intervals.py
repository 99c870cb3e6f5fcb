"""Bootstrap intervals of test scores, and the paired comparison of two models on the same test images.

A test split of 40 images measures a macro-F1 to about ±0.15: a score without its interval invites reading
noise as progress. Every score is resampled over the test images (percentile bootstrap, seeded, so that a
run's figures are reproducible); two models scored on the same images are compared on the same resamples
(paired), whose spread is much narrower than either model's own when they agree on most images.

The scores recompute their metrics on resamples themselves (:meth:`inspectflow.tasks.base.Scores.resampled`,
vectorised over all resamples at once), from the per-image outcomes they keep.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from inspectflow.tasks.base import Scores

#: Resamples of every interval: percentile ends stable to about 0.005 for the usual test split.
RESAMPLES = 1000
CONFIDENCE = 0.95
#: One seed for every interval: the same test images get the same resamples in every run and for every model.
SEED = 20161


@dataclass(frozen=True)
class Interval:
    """A point estimate and the ends of its bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} (95% interval {self.low:.4f} to {self.high:.4f})"

    def signed(self) -> str:
        """As a difference: ``+0.0250 (95% interval -0.0100 to +0.0600)``."""
        return f"{self.value:+.4f} (95% interval {self.low:+.4f} to {self.high:+.4f})"


def save_intervals(intervals: dict[str, Interval], path: Path) -> None:
    """Writes ``{"macro_f1": [value, low, high]}`` (``intervals.json`` of an evaluation)."""
    path.write_text(json.dumps({name: [i.value, i.low, i.high] for name, i in intervals.items()}, indent=2))


def load_intervals(path: Path) -> dict[str, Interval]:
    """Reads :func:`save_intervals`' file; none when it is missing (an evaluation from before intervals)."""
    if not path.is_file():
        return {}
    return {name: Interval(*ends) for name, ends in json.loads(path.read_text()).items()}


def resamples(images: int, count: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``(count, images)`` indices of test images, each row a resample with replacement."""
    return np.random.default_rng(seed).integers(0, images, size=(count, images))


def _ends(values: np.ndarray, point: float) -> Interval:
    """The percentile interval of resampled values (NaN resamples, such as none of a class, left out)."""
    kept = values[~np.isnan(values)]
    if math.isnan(point) or not len(kept):
        return Interval(point, math.nan, math.nan)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(kept, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def score_intervals(scores: Scores, metrics: list[str], count: int = RESAMPLES) -> dict[str, Interval]:
    """Each metric's test value and its bootstrap interval (metrics the scores lack are left out)."""
    picks = resamples(scores.test_images, count)
    intervals = {}
    for metric in metrics:
        point = float(getattr(scores, metric))
        if not math.isnan(point):
            intervals[metric] = _ends(scores.resampled(metric, picks), point)
    return intervals


def paired_gain(
    new: Scores, champion: Scores, metric: str, lower_is_better: bool, count: int = RESAMPLES
) -> Interval:
    """How much the new model beats the champion on ``metric`` (positive: better), with a paired interval.

    Both must have been scored on the same test images in the same order; each resample picks the same
    images for both.

    Raises:
        ValueError: The two were scored on different numbers of images.
    """
    if new.test_images != champion.test_images:
        raise ValueError(
            f"paired comparison needs the same test images: {new.test_images} vs {champion.test_images}"
        )
    picks = resamples(new.test_images, count)
    sign = -1.0 if lower_is_better else 1.0
    point = sign * (float(getattr(new, metric)) - float(getattr(champion, metric)))
    gains = sign * (new.resampled(metric, picks) - champion.resampled(metric, picks))
    return _ends(gains, point)
