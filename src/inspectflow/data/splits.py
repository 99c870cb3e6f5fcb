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


def selection_folds(
    strata: np.ndarray, *, folds: int, repeats: int, val_fraction: float, seed: int
) -> list[np.ndarray]:
    """The held-out parts that candidates of ``train.method=auto`` are compared on, as boolean masks.

    ``folds`` < 2: one stratified hold-out of ``val_fraction`` (the very one fine-tuning validates on, so
    that every candidate is scored on the same images). Otherwise repeated stratified k-fold: each sample
    held out once per repeat, so that a small set's estimate does not hang on one small validation split.
    A class with fewer samples than folds is spread over as many folds as it has samples.
    """
    if folds < 2:
        return [stratified_holdout(strata, val_fraction, seed)]
    rng = np.random.default_rng(seed)
    masks: list[np.ndarray] = []
    for _ in range(repeats):
        fold_of = np.empty(len(strata), dtype=np.int64)
        offset = int(rng.integers(folds))  # small classes do not all land in the first folds
        for label in sorted(set(strata.tolist()), key=str):
            members = rng.permutation(np.flatnonzero(strata == label))
            fold_of[members] = (np.arange(len(members)) + offset) % folds
            offset += len(members)
        masks.extend(fold_of == fold for fold in range(folds))
    return masks
