"""The pipeline's steps as plain functions: ingest, validate, train, evaluate, register, and monitor.

Each module holds the step's logic (pure, unit-tested) and a ``*_step`` function that adds MLflow tracking;
the kfp components in ``inspectflow.components`` are thin doors onto the ``*_step`` functions.
"""
