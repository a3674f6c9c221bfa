"""Training: contrastive losses for video-text co-training."""
