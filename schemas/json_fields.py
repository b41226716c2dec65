"""Hand-written checks for JSON documents, with messages that name the offending field.

``jsonschema`` is a development-only dependency, so the runtime validates documents with these
small helpers; the unit tests check that they accept and reject exactly what the JSON Schema
files under ``schemas/json/`` do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

from schemas.errors import schema_violation
from schemas.timestamps import format_rfc3339, parse_rfc3339

JsonObject = dict[str, Any]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> JsonObject:
    document: JsonObject = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document


def load_json_object(data: bytes, what: str) -> JsonObject:
    """Parse UTF-8 JSON text that must be one object.

    Args:
        data: The encoded document.
        what: What the document is (e.g. ``"tag event"``), for error messages.

    Returns:
        The parsed object.

    Raises:
        InputError: ``schema_violation`` for non-UTF-8 bytes, invalid JSON (including ``NaN``
            and duplicate keys) or a top-level value that is not an object.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise schema_violation(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise schema_violation(
            f"{what}: not UTF-8 ({error.reason} at byte {error.start})"
        ) from None
    try:
        document = json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicate_keys
        )
    except (ValueError, RecursionError) as error:
        raise schema_violation(f"{what}: invalid JSON ({error})") from None
    if not isinstance(document, dict):
        raise schema_violation(f"{what}: expected a JSON object, got {_json_type(document)}")
    return document


def dump_json(document: JsonObject) -> bytes:
    """Serialise a document as compact UTF-8 JSON, refusing NaN and infinities.

    Args:
        document: The object to write.

    Returns:
        The UTF-8 bytes.
    """
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_keys(
    document: JsonObject, where: str, required: Collection[str], optional: Collection[str] = ()
) -> None:
    """Refuse missing required keys and keys the schema does not list.

    Args:
        document: The object to check.
        where: The object's path in the document, for error messages.
        required: Keys that must be present.
        optional: Keys that may be present.

    Raises:
        InputError: ``schema_violation`` naming the first missing or unexpected key.
    """
    for key in required:
        if key not in document:
            raise schema_violation(f"{where}: missing required key {key!r}")
    allowed = set(required) | set(optional)
    for key in document:
        if key not in allowed:
            raise schema_violation(f"{where}: unexpected key {key!r}")


def check_text(
    value: object,
    where: str,
    *,
    min_length: int = 1,
    max_length: int | None = None,
    pattern: re.Pattern[str] | None = None,
) -> str:
    """Check that ``value`` is a string within the given length that is valid Unicode.

    Args:
        value: The value to check.
        where: Its path, for error messages.
        min_length: Fewest characters allowed.
        max_length: Most characters allowed, if limited.
        pattern: A regular expression the whole string must match. Matched with ``fullmatch``,
            so that ``$`` cannot accept a trailing newline (Python's ``$`` does, ECMA 262's and
            so JSON Schema's does not).

    Returns:
        The string.

    Raises:
        InputError: ``schema_violation`` when the value breaks a rule.
    """
    if not isinstance(value, str):
        raise schema_violation(f"{where}: expected string, got {_json_type(value)}")
    if len(value) < min_length:
        raise schema_violation(f"{where}: shorter than {min_length} characters")
    if max_length is not None and len(value) > max_length:
        raise schema_violation(f"{where}: longer than {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise schema_violation(f"{where}: contains unpaired surrogates") from None
    if pattern is not None and not pattern.fullmatch(value):
        raise schema_violation(f"{where}: {value[:64]!r} does not match {pattern.pattern}")
    return value


def check_number(
    value: object,
    where: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Check that ``value`` is a finite JSON number (not a boolean) within bounds.

    Args:
        value: The value to check.
        where: Its path, for error messages.
        minimum: Inclusive lower bound, if any.
        maximum: Inclusive upper bound, if any.

    Returns:
        The value as a float.

    Raises:
        InputError: ``schema_violation`` when the value breaks a rule.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise schema_violation(f"{where}: expected number, got {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise schema_violation(f"{where}: {value} is too large") from None
    if not math.isfinite(number):
        raise schema_violation(f"{where}: must be finite, got {number}")
    if minimum is not None and number < minimum:
        raise schema_violation(f"{where}: {number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise schema_violation(f"{where}: {number} is above the maximum {maximum}")
    return number


def check_integer(
    value: object,
    where: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Check that ``value`` is an integer (not a boolean; ``2.0`` counts, as in JSON Schema).

    Args:
        value: The value to check.
        where: Its path, for error messages.
        minimum: Inclusive lower bound, if any.
        maximum: Inclusive upper bound, if any.

    Returns:
        The value as an int.

    Raises:
        InputError: ``schema_violation`` when the value breaks a rule.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise schema_violation(f"{where}: expected integer, got {_json_type(value)}")
    if minimum is not None and value < minimum:
        raise schema_violation(f"{where}: {value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise schema_violation(f"{where}: {value} is above the maximum {maximum}")
    return value


def check_object(value: object, where: str) -> JsonObject:
    """Check that ``value`` is a JSON object.

    Args:
        value: The value to check.
        where: Its path, for error messages.

    Returns:
        The object.

    Raises:
        InputError: ``schema_violation`` when it is not an object.
    """
    if not isinstance(value, dict):
        raise schema_violation(f"{where}: expected object, got {_json_type(value)}")
    return value


def check_array(value: object, where: str) -> list[Any]:
    """Check that ``value`` is a JSON array.

    Args:
        value: The value to check.
        where: Its path, for error messages.

    Returns:
        The list.

    Raises:
        InputError: ``schema_violation`` when it is not an array.
    """
    if not isinstance(value, list):
        raise schema_violation(f"{where}: expected array, got {_json_type(value)}")
    return value


def check_timestamp(value: object, where: str) -> datetime:
    """Check that ``value`` is an RFC 3339 date-time string and parse it.

    Args:
        value: The value to check.
        where: Its path, for error messages.

    Returns:
        The aware UTC datetime.

    Raises:
        InputError: ``schema_violation`` when it is not an RFC 3339 date-time.
    """
    return parse_rfc3339(check_text(value, where), where)


def optional_timestamp(value: datetime | None) -> str | None:
    """Format an optional datetime for JSON (``None`` stays ``None``).

    Args:
        value: An aware datetime or ``None``.

    Returns:
        The RFC 3339 text or ``None``.
    """
    return None if value is None else format_rfc3339(value)
