"""Reason codes and the exception for input that a worker cannot tag.

A bad photo or a malformed event is data, not a crash: the worker turns an :class:`InputError`
into a dead letter carrying its :class:`ReasonCode`, and keeps consuming.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why an input could not be tagged; the fixed list dead letters draw from."""

    UNDECODABLE_IMAGE = "undecodable_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_SMALL = "image_too_small"
    BLANK_IMAGE = "blank_image"
    BAD_REFERENCE = "bad_reference"
    REFERENCE_UNREACHABLE = "reference_unreachable"
    SCHEMA_VIOLATION = "schema_violation"
    EMBEDDING_FAILED = "embedding_failed"
    #: The Kafka client could not parse the record (a header name that is not UTF-8, a failed
    #: CRC, a compressed batch that inflates past its bound): only its position is known.
    UNREADABLE_RECORD = "unreadable_record"
    #: The broker kept refusing this record's own output (its tag event or dead letter) while
    #: it took the rest of the batch's: this minimal dead letter stands in for that output.
    OUTPUT_REFUSED = "output_refused"


class InputError(ValueError):
    """An input (event, photo, document) that breaks a contract.

    Attributes:
        reason: The machine-readable reason code.
        message: A human-readable explanation naming what was wrong.
    """

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[InputError], tuple[ReasonCode, str]]:
        # Keeps the exception picklable across process pools (decode workers).
        return (type(self), (self.reason, self.message))


def schema_violation(message: str) -> InputError:
    """Build an :class:`InputError` with reason ``schema_violation``.

    Args:
        message: What was wrong, naming the offending field.

    Returns:
        The error, ready to raise.
    """
    return InputError(ReasonCode.SCHEMA_VIOLATION, message)
