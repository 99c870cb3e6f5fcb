"""The drift watch: statistics of new images against a model's training images, and the check."""
