"""PatchCore on the ImageNet EfficientNet-Lite0 (weights from pip): the anomaly task's first model.

Kept so that versions fitted with it load; ``patchcore_lite1`` is the default.
"""

from inspectflow.models.patchcore import patchcore_network

NETWORK = patchcore_network("lite0")
