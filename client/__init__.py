"""Client tools that need no model: ``landmark-publish`` and ``landmark-follow`` (schemas only, no TensorFlow)."""
