"""The training input pipeline (Grain): record source, frame sampling of slow/fast clips,
augmentation, tokenisation, batches."""
