"""Hiding the credentials a URI may carry, wherever a URI is shown.

``http://user:secret@host/photo.jpg`` and ``http://user:secret@milvus:19530`` are legal URIs, and
people do put credentials in them. Anything the project shows (log lines, error messages, dead
letters' messages, the refusal of a setting) goes through :func:`redact_uri` for a URI it holds,
or :func:`redact_text` for text that may contain one: the user-info part is replaced by
``***``, the rest is kept so that the message still says which URI it was.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"

#: A scheme, ``//``, then user-info up to the last ``@`` before the host's end.
_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s'\"]*@)")


def redact_uri(uri: str) -> str:
    """``uri`` with any user-info (``user:password@``) replaced by ``***@``.

    Text that does not parse as a URI is redacted as free text.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    if "@" not in parts.netloc:
        return redact_text(uri)
    host = parts.netloc.rpartition("@")[2]
    return redact_text(urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{host}")))


def redact_text(text: str) -> str:
    """Every ``scheme://user-info@`` in ``text`` with its user-info replaced by ``***@``."""
    return _USER_INFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
