"""What the layers below the configuration read of it, as protocols.

The tasks and models sit below :mod:`inspectflow.config` (it reads their registries: defaults, checks,
network names), so they cannot import its classes; they type the settings they read with these protocols,
which :class:`~inspectflow.config.PipelineConfig` and its sections satisfy. Read-only properties, so that a
section's ``Literal`` fields match a ``str`` here.
"""

from __future__ import annotations

from typing import Protocol


class DataSettings(Protocol):
    """The ``data`` settings a task reads."""

    @property
    def classes(self) -> list[str]: ...
    @property
    def good_class(self) -> str | None: ...
    @property
    def ordinal(self) -> bool: ...
    @property
    def image_side(self) -> int | None: ...
    @property
    def max_side(self) -> int: ...
    @property
    def channels(self) -> int: ...


class TrainSettings(Protocol):
    """The ``train`` settings a task reads."""

    @property
    def model(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def loss(self) -> str: ...
    @property
    def crop(self) -> int | None: ...
    @property
    def class_balance(self) -> str: ...
    @property
    def augment(self) -> str: ...


class EvaluateSettings(Protocol):
    """The ``evaluate`` settings a task reads."""

    @property
    def batch_size(self) -> int: ...
    @property
    def mask_threshold(self) -> float: ...
    @property
    def detection_threshold(self) -> float | None: ...
    @property
    def target_recall(self) -> float | None: ...
    @property
    def overlays(self) -> int: ...


class RegisterSettings(Protocol):
    """The ``register`` settings a task checks."""

    @property
    def primary_metric(self) -> str: ...
    @property
    def flavor(self) -> str: ...


class RunSettings(Protocol):
    """A run's whole configuration, as a task checks it."""

    @property
    def task(self) -> str: ...
    @property
    def data(self) -> DataSettings: ...
    @property
    def train(self) -> TrainSettings: ...
    @property
    def evaluate(self) -> EvaluateSettings: ...
    @property
    def register_(self) -> RegisterSettings: ...
