"""Triplet metric learning in pieces that compose: distances, miners, samplers and losses."""
