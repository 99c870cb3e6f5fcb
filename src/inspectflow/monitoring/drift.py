"""The drift watch's statistics: are new images drawn from the distribution of a model's training images?

A :class:`Profile` describes a sample of images by what the watch compares: ImageNet backbone features,
simple image statistics (brightness, contrast, width, height, channels) and the model's predictions on them.
:func:`compare` tests a new sample against the reference one a registered model keeps:

* the features with a kernel two-sample test, the maximum mean discrepancy (MMD, Gaussian kernel with the
  median-distance bandwidth) with a permutation p-value (Gretton et al., 2012; the test Rabanser et al.,
  2019, found the most reliable on pretrained features);
* each image statistic with a two-sample Kolmogorov-Smirnov test, and the channel counts by the new ones
  the reference never had;
* the prediction mix (predicted classes, or defective and clean) with a chi-square test. It is reported,
  not part of the verdict: more defects coming off the line is the line's news, not a sign that the model
  sees images it was not trained for.

Drift is declared when any test of the verdict is significant at ``alpha`` divided by their number
(Bonferroni), so that a check of images like the training ones says "drift" at most ``alpha`` of the time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

#: The image statistics compared one by one (attributes of :class:`Profile`).
STATISTICS = ("brightness", "contrast", "width", "height")


@dataclass
class Profile:
    """A sample of images as the drift watch sees them, one row per image.

    Attributes:
        features: Backbone features ``(N, D)``.
        brightness: Mean pixel value of the image at the model's input, in ``[0, 1]``.
        contrast: Standard deviation of its pixel values, in ``[0, 1]``.
        width: Width as decoded from its file.
        height: Height as decoded from its file.
        channels: Channels as decoded (1 grayscale, 3 colour).
        outcomes: The model's prediction: a class name, or ``defective``/``clean``.
    """

    features: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    width: np.ndarray
    height: np.ndarray
    channels: np.ndarray
    outcomes: np.ndarray

    def __len__(self) -> int:
        return len(self.brightness)

    def save(self, path: Path) -> None:
        """Writes the profile as one compressed ``.npz``."""
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> Profile:
        """Reads a profile written by :meth:`save` (no pickles: outcomes are a fixed-width string array)."""
        with np.load(path, allow_pickle=False) as stored:
            return cls(**{f.name: stored[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Test:
    """One two-sample test of the watch."""

    name: str
    statistic: float
    p_value: float
    #: Whether the verdict counts it (the prediction mix is reported only).
    decides: bool = True


@dataclass(frozen=True)
class Comparison:
    """New images against the reference: every test, and the verdict at ``alpha``."""

    tests: list[Test]
    alpha: float
    new_channels: list[int]
    mix: dict[str, tuple[float, float]]  # outcome -> (share among reference, share among new images)

    @property
    def level(self) -> float:
        """The p-value below which one test of the verdict declares drift (Bonferroni)."""
        return self.alpha / max(1, sum(test.decides for test in self.tests))

    @property
    def drifted(self) -> list[str]:
        """What drifted: the significant tests of the verdict, and channel counts the reference never had."""
        names = [test.name for test in self.tests if test.decides and test.p_value < self.level]
        return names + [f"{count}-channel images" for count in self.new_channels]

    @property
    def drift(self) -> bool:
        """The verdict."""
        return bool(self.drifted)


def mmd_test(
    reference: np.ndarray, new: np.ndarray, permutations: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """The squared MMD between two samples of features and its permutation p-value.

    The Gaussian kernel's bandwidth is the median squared distance between all the points (the median
    heuristic); the unbiased estimate of MMD² is computed for the observed split and for ``permutations``
    random relabellings of the pooled points, all at once from one kernel matrix.

    Returns:
        ``(mmd2, p_value)``; the p-value is ``(1 + relabellings at least as extreme) / (1 + permutations)``.
    """
    from sklearn.metrics.pairwise import euclidean_distances

    pooled = np.concatenate([reference, new]).astype(np.float64)
    n, total = len(reference), len(pooled)
    distances = euclidean_distances(pooled, squared=True)
    off_diagonal = distances[~np.eye(total, dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-distances / bandwidth)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out each point's kernel with itself
    generator = np.random.default_rng(seed)
    # Row 0 is the observed split; each further row a relabelling: True marks a "reference" point.
    labels = np.zeros((permutations + 1, total), dtype=bool)
    labels[0, :n] = True
    for row in labels[1:]:
        row[generator.permutation(total)[:n]] = True
    first = labels.astype(np.float64)
    to_first = first @ kernel  # each point's summed kernel with the "reference" points, per relabelling
    row_sums = kernel.sum(axis=1)
    m = total - n
    within_first = (to_first * first).sum(axis=1)
    between = (to_first * (1.0 - first)).sum(axis=1)
    within_second = row_sums.sum() - 2 * between - within_first
    statistics = within_first / (n * (n - 1)) + within_second / (m * (m - 1)) - 2 * between / (n * m)
    observed = float(statistics[0])
    p_value = (1 + int((statistics[1:] >= observed).sum())) / (1 + permutations)
    return observed, p_value


def compare(reference: Profile, new: Profile, alpha: float = 0.01, permutations: int = 1000) -> Comparison:
    """Tests new images against the reference (see the module's docstring)."""
    from scipy.stats import chi2_contingency, ks_2samp

    mmd2, p_value = mmd_test(reference.features, new.features, permutations)
    tests = [Test("features", mmd2, p_value)]
    for name in STATISTICS:
        result = ks_2samp(getattr(reference, name), getattr(new, name))
        tests.append(Test(name, float(result.statistic), float(result.pvalue)))
    outcomes = sorted(set(reference.outcomes.tolist()) | set(new.outcomes.tolist()))
    counts = np.array([[np.sum(sample.outcomes == o) for o in outcomes] for sample in (reference, new)])
    mix = {o: (counts[0, i] / len(reference), counts[1, i] / len(new)) for i, o in enumerate(outcomes)}
    if len(outcomes) > 1:
        seen = counts[:, counts.sum(axis=0) > 0]
        chi2 = chi2_contingency(seen)
        tests.append(Test("prediction mix", float(chi2.statistic), float(chi2.pvalue), decides=False))
    new_channels = sorted(set(new.channels.tolist()) - set(reference.channels.tolist()))
    return Comparison(tests, alpha, [int(c) for c in new_channels], mix)


def describe(comparison: Comparison) -> str:
    """The verdict as one line: drift and what drifted, or no drift with the feature test's p-value."""
    features = next(test for test in comparison.tests if test.name == "features")
    if comparison.drift:
        return f"drift: {', '.join(comparison.drifted)} (p < {comparison.level:.2g})"
    return f"no drift (features p = {features.p_value:.3g}; every test p >= {comparison.level:.2g})"
