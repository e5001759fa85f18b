"""Strict parsing of what strangers send (issue 11): numbers, secrets, text for headers.

``str.isdigit()`` accepts "²" and "٣", which ``int()`` then refuses or reads as another
number; ``hmac.compare_digest`` raises TypeError on non-ASCII ``str``. These helpers
answer "not valid" instead, so a caller turns that into a 4xx, never a 500.
"""

from __future__ import annotations

import hmac
import re
import unicodedata

_WHOLE = re.compile(r"[0-9]{1,18}")  # ASCII digits only; 18 keeps it far from any overflow
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def strict_int(text: str | None, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """A non-negative whole number written in ASCII digits within the bounds, else None."""
    if text is None or not _WHOLE.fullmatch(text):
        return None
    value = int(text)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        return None
    return value


def same_secret(supplied: str | bytes, expected: str | bytes) -> bool:
    """Constant-time comparison on bytes; a non-ASCII value never matches (and never raises)."""
    try:
        left = supplied.encode("ascii") if isinstance(supplied, str) else supplied
        right = expected.encode("utf-8") if isinstance(expected, str) else expected
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(left, right)


def has_control(text: str) -> bool:
    """CR, LF, other C0/C1 controls and Unicode line separators: never in a header or subject."""
    return bool(_CONTROL.search(text)) or any(unicodedata.category(ch) == "Cf" for ch in text if ord(ch) > 0x7F)


def without_control(text: str, limit: int | None = None) -> str:
    """``text`` with control characters replaced by spaces, cut to ``limit`` characters."""
    cleaned = "".join(" " if _CONTROL.match(ch) or unicodedata.category(ch) == "Cf" else ch for ch in text)
    return cleaned[:limit] if limit is not None else cleaned
