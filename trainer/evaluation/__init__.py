"""Measuring embedding models: hit@k, the kNN vote and GAP, and the figures."""
