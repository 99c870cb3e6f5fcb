"""Choosing the training method from the data (``train.method=auto``).

A set of 160 images and a set of 16 000 want different methods: frozen ImageNet features with an SVM
learn from a handful of images per class in seconds, where fine-tuning a network overfits the few or needs
the many. Rather than guess, candidates are compared on the training split (the test split stays the
gate's), cheapest first, every one on the same held-out parts with the same metric, and the best mean
wins; on a tie the cheaper. What was compared, and why the winner won, is kept for the model card.

This module is the comparison; how each candidate trains and scores a held-out part is the train step's
(:func:`inspectflow.steps.train.choose_method`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A candidate's score on one held-out part: trains on the training split less ``held_out`` (a boolean
#: mask over the training split) and returns the metric on ``held_out``, with what it trained (to reuse).
FoldScorer = Callable[[np.ndarray], tuple[float, Any]]


@dataclass
class Candidate:
    """One way to train, as the ``train`` settings that select it and how it scores a held-out part."""

    name: str
    settings: dict[str, Any]
    score: FoldScorer


@dataclass
class Estimate:
    """A candidate's scores on every held-out part, and the seconds they took."""

    name: str
    settings: dict[str, Any]
    scores: list[float]
    seconds: float
    trained: list[Any] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> float:
        """The mean score over the held-out parts."""
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """The scores' population standard deviation."""
        return float(np.std(self.scores))

    def describe(self) -> str:
        """``name mean ± std (seconds)``."""
        spread = f" ± {self.std:.4f}" if len(self.scores) > 1 else ""
        return f"{self.name} {self.mean:.4f}{spread} ({self.seconds:.0f} s)"


@dataclass
class Choice:
    """The comparison's outcome."""

    winner: Estimate
    estimates: list[Estimate]
    metric: str
    parts: str  # what the candidates were scored on, such as "5 folds of the training split's 160 images"
    skipped: list[str] = field(default_factory=list)  # candidates not run, each with why

    def describe(self) -> str:
        """One line for logs and the model card: what was compared, on what, and why the winner won."""
        compared = "; ".join(estimate.describe() for estimate in self.estimates)
        skipped = f"; not run: {', '.join(self.skipped)}" if self.skipped else ""
        return (
            f"train.method=auto compared {self.metric} on {self.parts}: {compared}{skipped}. "
            f"{self.winner.name} won: the highest mean (the cheaper one on a tie)"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the run's ``selection.json``."""
        return {
            "metric": self.metric,
            "parts": self.parts,
            "winner": self.winner.name,
            "candidates": [
                {"name": e.name, "settings": e.settings, "scores": e.scores, "seconds": e.seconds}
                for e in self.estimates
            ],
            "skipped": self.skipped,
        }


def choose(
    candidates: list[Candidate],
    held_out: list[np.ndarray],
    metric: str,
    parts: str,
    budget_s: float | None = None,
    on_estimate: Callable[[Estimate], None] | None = None,
) -> Choice:
    """Scores the candidates, cheapest first, on every held-out part, and picks the best mean.

    A candidate is not started once the budget is spent, nor after one that scored 1 on every part (none
    can beat it); at least one always runs.

    Args:
        candidates: In order of cost, cheapest first.
        held_out: Boolean masks over the training split, the same for every candidate.
        metric: The metric the scores are (higher is better), for the description.
        parts: What the masks are, for the description.
        budget_s: Seconds for the whole comparison; ``None``: no limit.
        on_estimate: Called with each candidate's estimate as it completes (a child run each).
    """
    started = time.perf_counter()
    estimates: list[Estimate] = []
    skipped: list[str] = []
    for candidate in candidates:
        if perfect := next((e for e in estimates if min(e.scores) >= 1.0), None):
            skipped.append(f"{candidate.name} ({perfect.name} was already perfect)")
            continue
        if estimates and budget_s is not None and time.perf_counter() - started >= budget_s:
            skipped.append(f"{candidate.name} (the time budget was spent)")
            continue
        began = time.perf_counter()
        outcomes = [candidate.score(mask) for mask in held_out]
        estimate = Estimate(
            name=candidate.name,
            settings=candidate.settings,
            scores=[float(score) for score, _ in outcomes],
            seconds=time.perf_counter() - began,
            trained=[trained for _, trained in outcomes],
        )
        estimates.append(estimate)
        if on_estimate is not None:
            on_estimate(estimate)
    # max() keeps the first of equal means: the cheaper candidate on a tie.
    winner = max(estimates, key=lambda estimate: estimate.mean)
    return Choice(winner, estimates, metric, parts, skipped)
