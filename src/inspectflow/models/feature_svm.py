"""The ``features+svm`` classifier: a frozen ImageNet CNN's features fed to a standardised SVM."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from torch import nn

from inspectflow.features import extract_features


class FeatureSvmClassifier:
    """Classifies images with an SVM over CNN features, behind the same call as the torch classifiers.

    Args:
        extractor: Frozen feature extractor (see :func:`inspectflow.features.build_extractor`).
        svm: Fitted scikit-learn pipeline (scaler + SVC with probabilities).
        batch_size: Images per feature-extraction batch.
    """

    def __init__(self, extractor: nn.Module, svm: Pipeline, batch_size: int = 16) -> None:
        self.extractor = extractor.eval()
        self.svm = svm
        self.batch_size = batch_size

    def eval(self) -> FeatureSvmClassifier:
        """Matches ``nn.Module.eval`` so callers treat every classifier alike."""
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Returns class log-probabilities for float ``(N, C, H, W)`` images in ``[0, 1]``.

        Log-probabilities act as logits: ``argmax`` and ``softmax`` give what they give for a network.
        """
        pixels = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        features = extract_features(self.extractor, pixels, self.batch_size)
        probabilities = self.svm.predict_proba(features)
        return torch.from_numpy(np.log(np.clip(probabilities, 1e-12, 1.0))).float()
