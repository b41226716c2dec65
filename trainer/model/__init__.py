"""The embedding network and its export (model file plus manifest)."""
