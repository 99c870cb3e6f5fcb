"""Seeded stratified splits."""

from __future__ import annotations

import numpy as np


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Marks a seeded, per-class share of the samples as held out.

    Every class with at least two samples keeps at least one sample on each side, so small classes stay
    represented in both parts (where scikit-learn's splitter would refuse them).

    Args:
        labels: One label per sample (any hashable dtype).
        fraction: Share of each class to hold out, in ``(0, 1)``.
        seed: Seed of the shuffle.

    Returns:
        A boolean mask, True for held-out samples.
    """
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels.tolist()), key=str):
        members = np.flatnonzero(labels == label)
        count = round(len(members) * fraction)
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out[rng.permutation(members)[:count]] = True
    return held_out
