"""The streaming half: Kafka images in, batched embedding, Milvus kNN vote, landmark tags out.

:mod:`worker.core` is the pure decision logic over one batch; everything else is an adapter
(Kafka, Milvus, the Keras model, Prometheus, HTTP health) or a console command
(``landmark-worker``, ``landmark-publish``, ``landmark-follow``).
"""
