"""Video decoding (PyAV), frame sampling and frame preprocessing."""
