"""Running the pipeline: locally through kfp, a step worker, containers, or on a Kubeflow cluster."""
