"""Metrics the tasks share: image-level decisions (operating point) and segmentation scores."""
