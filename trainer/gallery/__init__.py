"""Bulk-loading reference embeddings into a Milvus collection behind the workers' alias."""
