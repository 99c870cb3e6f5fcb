"""Whether to retrain: is the data a new version for the champion, and, when checked, has the line drifted?

The policy behind ``inspectflow retrain``. :func:`decide_retrain` is pure: it takes the data version, the
champion (:func:`champion_of` reads it from the registry) and the drift verdict, if one was asked for, and
returns the decision with the line that explains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from inspectflow.names import CHAMPION, DATA_VERSION_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class Champion:
    """The registered version a retrain would challenge.

    Attributes:
        version: Its version number.
        data_version: The data version it was trained on (its ``data.dvc_md5`` tag); None when untagged.
    """

    version: str
    data_version: str | None


class Verdict(Enum):
    """What to do."""

    RETRAIN = "retrain"
    """The data is a new version for the champion (and drifted, when drift was checked): run the pipeline."""
    NO_DRIFT = "no drift"
    """Drift was checked and there is none: nothing to retrain."""
    SAME_DATA = "same data"
    """The champion was trained on this very data version: nothing to retrain."""
    NEEDS_NEW_DATA = "needs new data"
    """The images drifted but the data is the champion's own: label images of the new conditions first."""


@dataclass(frozen=True)
class RetrainDecision:
    """The decision and the line that explains it.

    Attributes:
        verdict: What to do.
        reason: One line for the user, naming the data, the model and the versions compared.
    """

    verdict: Verdict
    reason: str

    @property
    def retrain(self) -> bool:
        """Whether to run the pipeline."""
        return self.verdict is Verdict.RETRAIN


def decide_retrain(
    model_name: str,
    source: str,
    data_version: str,
    champion: Champion | None,
    drift_images: str | None = None,
    drifted: bool | None = None,
) -> RetrainDecision:
    """Whether to retrain on ``source``, given the champion and the drift check's verdict, if any.

    Args:
        model_name: The registered model the run would register a version of.
        source: The data (a folder or s3:// URI), as named in the reason.
        data_version: The version of that data.
        champion: The model's champion; None when it has none yet (a run is then due).
        drift_images: The new images the drift check looked at, when one was made.
        drifted: The drift check's verdict on them against the champion; None when no check was made.

    Returns:
        The decision: with ``drifted`` False, no retrain (no drift); else no retrain when the champion was
        trained on ``data_version`` (the data needs new labelled images first if the images drifted), and
        a retrain otherwise.

    Raises:
        ValueError: A drift verdict without the champion it was measured against or the images checked.
    """
    if drifted is not None and (champion is None or drift_images is None):
        raise ValueError("a drift verdict is measured on new images against a champion")
    if drifted is False and champion is not None:
        return RetrainDecision(
            Verdict.NO_DRIFT,
            f"{drift_images}: no drift from {model_name} version {champion.version}; nothing to retrain",
        )
    if champion is not None and champion.data_version == data_version:
        if drifted:
            return RetrainDecision(
                Verdict.NEEDS_NEW_DATA,
                f"{source}: data version {data_version} is the one {model_name} version {champion.version} "
                "was trained on; add labelled images of the new conditions (inspectflow data import), "
                "then retrain",
            )
        return RetrainDecision(
            Verdict.SAME_DATA,
            f"{source}: data version {data_version} is the one {model_name} version {champion.version} "
            "(@champion) was trained on; nothing to retrain",
        )
    if champion is None:
        trained_on = "no champion yet"
    else:
        trained_on = champion.data_version if champion.data_version is not None else "unknown"
    return RetrainDecision(
        Verdict.RETRAIN, f"{source}: data version {data_version} (champion: {trained_on}); retraining"
    )


def champion_of(client: MlflowClient, model_name: str) -> Champion | None:
    """The model's champion as :func:`decide_retrain` weighs it.

    Args:
        client: A client of the store.
        model_name: The registered model.

    Returns:
        Its ``@champion`` version, or None when the model or the alias does not exist yet.
    """
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    return Champion(str(version.version), version.tags.get(DATA_VERSION_TAG))
