"""File helpers: atomic writes and JSON (``io``), frame and label image files (``images``); the compute device and
precision (``device``)."""
