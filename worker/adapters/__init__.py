"""Adapters around the worker's pure core: Kafka, Milvus, the Keras model, the photo fetcher."""
