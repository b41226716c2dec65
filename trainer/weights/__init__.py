"""Offline ImageNet weights: reading PyTorch checkpoints safely, fetching and converting them."""
