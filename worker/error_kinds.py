"""The small, fixed vocabulary of the errors metric (``landmark_worker_errors_total{kind}``)."""

from __future__ import annotations

from kafka.errors import KafkaError

from worker.adapters.kafka import PublishError
from worker.ports import TransactionFailed


def error_kind(error: BaseException) -> str:
    """The ``kind`` label for an error the worker recovered from.

    The gallery's errors are recognised by name, so that the loop does not import pymilvus.
    """
    name = type(error).__name__
    if isinstance(error, PublishError):
        return "publish_failed"
    if isinstance(error, TransactionFailed):
        return "transaction_fenced" if error.fenced else "transaction_failed"
    if isinstance(error, KafkaError):
        return "kafka"
    if name == "GalleryUnavailableError":
        return "gallery_unavailable"
    if name == "GalleryMismatchError":
        return "gallery_mismatch"
    return "unexpected"
