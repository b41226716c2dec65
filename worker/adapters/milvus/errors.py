"""What can go wrong with the gallery in Milvus, and which failures are worth a retry."""

from __future__ import annotations

import grpc
from pymilvus.exceptions import ErrorCode, MilvusException, MilvusUnavailableException

#: gRPC status codes after which the same call may well succeed a moment later.
TRANSIENT_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
#: Milvus's error code for a collection that exists but is not loaded into memory.
COLLECTION_NOT_LOADED = 101


class GalleryMismatchError(Exception):
    """The collection behind the alias does not fit the model (dimension or model version)."""


class GalleryUnavailableError(Exception):
    """Milvus could not be reached, or the alias does not exist, after all retries."""


def is_transient(error: BaseException) -> bool:
    """Whether a failed Milvus call is worth retrying (server restarting, overloaded, slow)."""
    if isinstance(error, MilvusUnavailableException | ConnectionError | TimeoutError):
        return True
    if isinstance(error, grpc.RpcError):
        code = error.code() if callable(getattr(error, "code", None)) else None
        return code in TRANSIENT_GRPC_CODES
    if isinstance(error, MilvusException):
        code = error.code
        if code in TRANSIENT_GRPC_CODES or code == ErrorCode.RATE_LIMIT:
            return True
        message = str(error.message).lower()
        return any(
            hint in message
            for hint in ("unavailable", "deadline", "timeout", "connection refused", "retry")
        )
    return False


def is_timeout(error: BaseException) -> bool:
    """Whether a failed Milvus call ran out of time (a stalled or overloaded server)."""
    if isinstance(error, TimeoutError):
        return True
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
        return bool(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    if isinstance(error, MilvusException):
        message = str(error.message).lower()
        return error.code == grpc.StatusCode.DEADLINE_EXCEEDED or any(
            hint in message for hint in ("deadline", "timeout", "timed out")
        )
    return False


def is_collection_gone(error: BaseException) -> bool:
    """Whether the collection searched no longer exists (the alias moved and it was dropped)."""
    if not isinstance(error, MilvusException):
        return False
    message = str(error.message).lower()
    return error.code == ErrorCode.COLLECTION_NOT_FOUND or (
        "collection" in message and ("not found" in message or "not exist" in message)
    )


def is_not_loaded(error: BaseException) -> bool:
    """Whether the collection exists but is not loaded (e.g. the Milvus server restarted)."""
    if not isinstance(error, MilvusException):
        return False
    message = str(error.message).lower()
    return error.code == COLLECTION_NOT_LOADED or (
        "load" in message
        and ("released" in message or "not loaded" in message or "call load" in message)
    )
