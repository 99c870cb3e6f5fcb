"""inspectflow: Kubeflow-style MLOps pipelines for industrial visual inspection."""

__version__ = "0.1.0"
