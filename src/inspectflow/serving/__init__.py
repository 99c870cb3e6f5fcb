"""The registered model: its format in the registry, the pyfunc that serves it, batch prediction."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The pyfunc class under its old name, imported only when asked for.

    Versions registered before this package existed pickled their pyfunc as
    ``inspectflow.serving.ImageClassifier``: unpickling them finds the class here.
    """
    if name == "ImageClassifier":
        from inspectflow.serving.pyfunc import ImageModel

        return ImageModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
