"""HOD narration pipeline: detections, tracks, motion facts, prompts and narrators."""
