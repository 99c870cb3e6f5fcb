"""The drift check as a pipeline step (``inspectflow-<workload>-on-drift``).

The watch itself is :mod:`inspectflow.monitoring.watch`.
"""

from __future__ import annotations

import logging

from inspectflow.config import validate_config
from inspectflow.errors import pipeline_step
from inspectflow.monitoring.watch import monitor

log = logging.getLogger(__name__)


@pipeline_step("monitor")
def monitor_step(source: str, raw_config: dict[str, object], model_uri: str = "") -> str:
    """Checks the images under ``source`` against the model's training images; returns the verdict."""
    check = monitor(validate_config(raw_config), source, model_uri or None)
    log.info(check.line())
    return check.verdict
