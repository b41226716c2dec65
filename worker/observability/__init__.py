"""What the worker shows of itself: Prometheus metrics, health endpoints, structured logs."""
