"""Landmark photo data sets: listings, decoding and augmentation."""
