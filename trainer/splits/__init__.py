"""Seeded splits of landmark photos and their manifests on disk."""
