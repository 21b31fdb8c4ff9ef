"""Inference over scans: slice-wise scoring and the end-to-end scan scorer."""
