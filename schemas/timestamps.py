"""RFC 3339 timestamps in UTC, as every contract writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from schemas.errors import schema_violation

# RFC 3339 date-time (section 5.6) without leap seconds, which datetime cannot hold. Python's
# fromisoformat alone accepts more than this; the same pattern is in the JSON Schema files, and
# impossible days (February 30) are refused by the parser.
_RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)

RFC3339_PATTERN = _RFC3339.pattern


def require_utc(value: datetime, name: str) -> datetime:
    """Return ``value`` converted to UTC, refusing naive datetimes.

    Args:
        value: A timezone-aware datetime.
        name: The field name, for the error message.

    Returns:
        The same instant with ``tzinfo=UTC``.

    Raises:
        InputError: ``schema_violation`` when ``value`` is not a timezone-aware datetime.
    """
    if not isinstance(value, datetime):
        raise schema_violation(f"{name}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise schema_violation(f"{name}: datetime must be timezone-aware")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise schema_violation(f"{name}: {value.isoformat()} is out of range in UTC") from None


def format_rfc3339(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with microseconds, e.g. ``2026-01-02T03:04:05.000006Z``.

    Args:
        value: A timezone-aware datetime.

    Returns:
        The timestamp text.

    Raises:
        InputError: ``schema_violation`` when ``value`` is naive.
    """
    utc = require_utc(value, "timestamp")
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_rfc3339(text: str, name: str) -> datetime:
    """Parse an RFC 3339 date-time (any offset) into an aware UTC datetime.

    Args:
        text: The timestamp text.
        name: The field name, for the error message.

    Returns:
        The instant with ``tzinfo=UTC``.

    Raises:
        InputError: ``schema_violation`` when the text is not an RFC 3339 date-time.
    """
    if not _RFC3339.fullmatch(text):
        raise schema_violation(f"{name}: {text[:64]!r} is not an RFC 3339 date-time")
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise schema_violation(
            f"{name}: {text[:64]!r} is not a valid date-time ({error})"
        ) from None
