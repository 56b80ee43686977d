"""Faceset extraction, augmentation, losses and the training loop (single process; Ray Train later)."""
