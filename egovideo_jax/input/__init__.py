"""Video input: frame sampling, decoding, resizing and CLIP normalisation."""
