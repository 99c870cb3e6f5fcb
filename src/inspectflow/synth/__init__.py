"""Synthetic stand-ins for the public datasets, written in their real on-disk layouts."""
