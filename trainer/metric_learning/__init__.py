"""Triplet metric learning: miners and losses."""
