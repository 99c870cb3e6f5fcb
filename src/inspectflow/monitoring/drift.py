"""The drift watch's statistics: do new images still look like a model's training images, lot for lot?

Images come off a line in lots: a batch is a run of consecutive parts, not a random draw of everything the
line made, and normal lots differ from one another. A test that assumes independent images reads that
difference as drift, and with more images any difference becomes significant. So every statistic here is
judged against the spread between normal lots of the reference itself: :func:`lot_null` slides a window of
the new batch's size along the reference's images in file order (the order the line made them in, as far as
the files tell) and measures each window against the rest of the reference, exactly as the new batch is
measured against the whole reference. A gamma distribution fitted to those window statistics (by moments:
the usual approximation of an MMD's null) gives each new statistic its p-value, and the median window
statistic its unit: ``effect`` says how many normal lots' worth of shift the new batch shows.

The statistics (:class:`Profile`): the ImageNet backbone features (squared maximum mean discrepancy, Gaussian
kernel with the reference's median-distance bandwidth), and four image statistics, each as the shift of its
mean in units of the reference's standard deviation: brightness, contrast, sharpness (the finest scale's
Laplacian energy against the next scale's: blur lowers it, lots hardly move it) and grain (the next scale's
against the one after: a zoom lowers it), and the share of images
whose decoded size lies outside the sizes of the images they are measured against (a line's parts may
differ a little in size; a new camera or crop falls outside them all). The prediction mix is reported, not
judged: more defects off the line is the line's news.

Drift is declared when a test of the verdict has a p-value below the check's level divided by their number
(Bonferroni); the check's level is the daily false-alarm rate spread over the checks of a day
(:func:`check_level`), so that a watch over a stream stays within its rate for the whole day.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

#: The image statistics whose mean shift is judged against the spread between lots (attributes of
#: :class:`Profile`).
STATISTICS = ("brightness", "contrast", "sharpness", "grain")
#: Every test of the verdict, in the order they are reported: ``size`` is the share of images of a size
#: outside the others' range.
TESTS = ("features", *STATISTICS, "size")
#: How far beyond the reference's range of widths and heights a size still counts as the line's own (a
#: part a few rows taller is not a new camera).
SIZE_TOLERANCE = 0.02
#: The most reference windows a null is built from (evenly spaced starts): bounds a check's time.
MAX_WINDOWS = 200


@dataclass
class Profile:
    """A sample of images as the drift watch sees them, one row per image.

    Attributes:
        features: Backbone features ``(N, D)``.
        brightness: Mean pixel value of the image at the model's input, in ``[0, 1]``.
        contrast: Standard deviation of its pixel values, in ``[0, 1]``.
        sharpness: The Laplacian's standard deviation at the model's input over that at half the size.
        grain: The Laplacian's standard deviation at half the size over that at a quarter.
        width: Width as decoded from its file.
        height: Height as decoded from its file.
        channels: Channels as decoded (1 grayscale, 3 colour).
        outcomes: The model's prediction: a class name, or ``defective``/``clean``.
        lots: The lot each image belongs to where the reference knows it (``monitor.lots``), else ``""``.
    """

    features: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    sharpness: np.ndarray
    grain: np.ndarray
    width: np.ndarray
    height: np.ndarray
    channels: np.ndarray
    outcomes: np.ndarray
    lots: np.ndarray

    def __len__(self) -> int:
        return len(self.brightness)

    def subset(self, rows: np.ndarray) -> Profile:
        """The profile of some of its images (indices or a boolean mask), in their order."""
        return Profile(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def save(self, path: Path) -> None:
        """Writes the profile as one compressed ``.npz``."""
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> Profile:
        """Reads a profile written by :meth:`save` (no pickles: outcomes are a fixed-width string array).

        Raises:
            ValueError: The file lacks statistics (an older inspectflow's): the message names them.
        """
        with np.load(path, allow_pickle=False) as stored:
            missing = [f.name for f in fields(cls) if f.name not in stored.files]
            if missing:
                raise ValueError(f"without {', '.join(missing)}")
            return cls(**{f.name: stored[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Test:
    """One statistic of the watch: its value for the new images, its p-value, and its size in lots."""

    name: str
    statistic: float
    p_value: float
    #: The statistic over the median normal reference lot's (nan where lots do not move it, or not judged).
    effect: float = float("nan")
    #: Whether the verdict counts it (the prediction mix is reported only).
    decides: bool = True


@dataclass(frozen=True)
class Comparison:
    """New images against the reference: every test, and the verdict at the check's level."""

    tests: list[Test]
    check_level: float  # the family-wise false-alarm rate of this one check
    new_channels: list[int]
    mix: dict[str, tuple[float, float]]  # outcome -> (share among reference, share among new images)
    window: int  # images in each reference window of the lot null
    windows: int  # reference windows the lot null was built from
    unlike: list[int]  # the new images, those that move the features most (the MMD's witness) first

    @property
    def level(self) -> float:
        """The p-value below which one test of the verdict declares drift (Bonferroni)."""
        return self.check_level / max(1, sum(test.decides for test in self.tests))

    @property
    def drifted(self) -> list[str]:
        """What drifted: the significant tests of the verdict, and channel counts the reference never had."""
        names = [test.name for test in self.tests if test.decides and test.p_value < self.level]
        return names + [f"{count}-channel images" for count in self.new_channels]

    @property
    def drift(self) -> bool:
        """The verdict."""
        return bool(self.drifted)


def check_level(daily_alpha: float, checks_per_day: int) -> float:
    """One check's false-alarm rate: the day's spread evenly over its checks (a union bound holds the day)."""
    return daily_alpha / checks_per_day


def _reference_kernel(features: np.ndarray) -> tuple[np.ndarray, float]:
    """The Gaussian kernel among the reference's features, and its bandwidth (median squared distance)."""
    from sklearn.metrics.pairwise import euclidean_distances

    distances = euclidean_distances(features, squared=True)
    width = float(np.median(distances[np.triu_indices(len(features), 1)])) or 1.0
    return np.exp(-distances / width), width


def _kernel(first: np.ndarray, second: np.ndarray, width: float) -> np.ndarray:
    from sklearn.metrics.pairwise import euclidean_distances

    return np.exp(-euclidean_distances(first, second, squared=True) / width)


def _mmd2(within_first: np.ndarray, within_second: np.ndarray, between: np.ndarray) -> float:
    """The squared MMD (biased estimate, never negative) from the three kernel blocks."""
    return float(within_first.mean() + within_second.mean() - 2 * between.mean())


def _mean_shift(sample: np.ndarray, reference: np.ndarray) -> float:
    """How far a sample's mean lies from a reference's, in the reference's standard deviations."""
    return float(abs(sample.mean() - reference.mean()) / max(float(reference.std()), 1e-9))


def _outside(sizes: np.ndarray, reference: np.ndarray) -> float:
    """The share of ``(N, 2)`` widths and heights outside a reference's range (widened by the tolerance)."""
    low, high = reference.min(axis=0) * (1 - SIZE_TOLERANCE), reference.max(axis=0) * (1 + SIZE_TOLERANCE)
    outside = (sizes < low) | (sizes > high)
    return float(outside.any(axis=1).mean())


def lot_null(reference: Profile, size: int, kernel: np.ndarray) -> dict[str, np.ndarray]:
    """Each statistic of windows of ``size`` consecutive reference images, each against the rest of it.

    Windows start where a lot starts, when the reference knows its lots, else anywhere; at most
    :data:`MAX_WINDOWS` of them, evenly spaced. So the variation between runs of the line's parts, not only
    between single parts, is what a new batch is judged against. ``kernel`` is the reference's
    (:func:`_reference_kernel`).
    """
    count = len(reference)
    sizes = np.column_stack([reference.width, reference.height])
    starts = np.arange(count - size + 1)
    lot_starts = np.flatnonzero(np.r_[True, reference.lots[1:] != reference.lots[:-1]])
    if len(lot_starts) > 2 and lot_starts[1] <= count - size:  # lots known: windows start where one does
        starts = lot_starts[lot_starts <= count - size]
    starts = starts[
        np.unique(np.linspace(0, len(starts) - 1, min(MAX_WINDOWS, len(starts))).round().astype(int))
    ]
    null: dict[str, list[float]] = {name: [] for name in TESTS}
    for start in starts:
        window = np.zeros(count, dtype=bool)
        window[start : start + size] = True
        null["features"].append(
            _mmd2(kernel[window][:, window], kernel[~window][:, ~window], kernel[window][:, ~window])
        )
        for name in STATISTICS:
            values = getattr(reference, name)
            null[name].append(_mean_shift(values[window], values[~window]))
        null["size"].append(_outside(sizes[window], sizes[~window]))
    return {name: np.asarray(values) for name, values in null.items()}


def _gamma_tail(null: np.ndarray, observed: float) -> float:
    """The p-value of ``observed`` under a gamma fitted to the null's mean and variance."""
    from scipy.stats import gamma

    mean, variance = float(null.mean()), float(null.var())
    if mean <= 0 or variance <= 0:  # identical windows: only a larger value is a shift
        return 0.0 if observed > float(null.max()) + 1e-12 else 1.0
    return float(gamma.sf(observed, mean**2 / variance, scale=variance / mean))


def _effect(null: np.ndarray, observed: float) -> float:
    """The observed statistic in units of the median normal lot's (nan when lots do not move it at all)."""
    unit = float(np.median(null))
    return observed / unit if unit > 0 else float("nan")


def compare(reference: Profile, new: Profile, level: float = 0.01) -> Comparison:
    """Tests new images against the reference, lot for lot (see the module's docstring).

    Args:
        reference: A model's reference, its images in file order.
        new: The new images.
        level: The check's family-wise false-alarm rate (:func:`check_level`).
    """
    from scipy.stats import chi2_contingency

    kernel, width = _reference_kernel(reference.features)
    size = max(2, min(len(new), len(reference) // 2))
    null = lot_null(reference, size, kernel)
    within = _kernel(new.features, new.features, width)
    between = _kernel(new.features, reference.features, width)
    # The MMD's witness at each new image: high where new images crowd what the reference hardly visits.
    witness = within.mean(axis=1) - between.mean(axis=1)
    observed = {
        "features": _mmd2(within, kernel, between),
        **{name: _mean_shift(getattr(new, name), getattr(reference, name)) for name in STATISTICS},
        "size": _outside(
            np.column_stack([new.width, new.height]), np.column_stack([reference.width, reference.height])
        ),
    }
    tests = [
        Test(name, value, _gamma_tail(null[name], value), _effect(null[name], value))
        for name, value in observed.items()
    ]
    outcomes = sorted(set(reference.outcomes.tolist()) | set(new.outcomes.tolist()))
    counts = np.array([[np.sum(sample.outcomes == o) for o in outcomes] for sample in (reference, new)])
    mix = {o: (counts[0, i] / len(reference), counts[1, i] / len(new)) for i, o in enumerate(outcomes)}
    if len(outcomes) > 1:
        seen = counts[:, counts.sum(axis=0) > 0]
        chi2 = chi2_contingency(seen)
        tests.append(Test("prediction mix", float(chi2.statistic), float(chi2.pvalue), decides=False))
    new_channels = sorted(set(new.channels.tolist()) - set(reference.channels.tolist()))
    unlike = np.argsort(-witness, kind="stable").tolist()
    return Comparison(tests, level, [int(c) for c in new_channels], mix, size, len(null["features"]), unlike)


def describe(comparison: Comparison) -> str:
    """The verdict as one line: drift, what drifted and by how many normal lots' shift, or no drift."""
    features = next(test for test in comparison.tests if test.name == "features")
    if comparison.drift:
        significant = [t for t in comparison.tests if t.decides and t.p_value < comparison.level]
        sized = [f"{t.name} {t.effect:.1f}x" for t in significant if np.isfinite(t.effect)]
        moved = [f"{', '.join(sized)} a normal lot's shift"] if sized else []
        moved += [t.name for t in significant if not np.isfinite(t.effect)]
        moved += [f"{count}-channel images" for count in comparison.new_channels]
        return f"drift: {', '.join(moved)} (p < {comparison.level:.2g})"
    return (
        f"no drift (features {features.effect:.1f}x a normal lot's shift, p = {features.p_value:.3g}; "
        f"every test p >= {comparison.level:.2g})"
    )
