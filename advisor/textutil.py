"""Text that reaches the user: one line of an error, and anything taken from a file or the Hub made safe to echo.

A leaf module (no advisor imports): every other module may use it.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 control characters, DEL, and the Unicode characters that reorder or hide text (bidi overrides,
# zero-width joiners are kept: they occur in real names). Tab and newline are handled by the callers' joins.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def first_line(value: BaseException | str, limit: int = 200) -> str:
    """An exception's (or a text's) message as one clean line of at most `limit` characters; the exception's
    type name when it has no message. Never raises, whatever the message holds."""
    text = str(value) if not isinstance(value, BaseException) else _message(value)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = clean(lines[0]) if lines else ""
    if not line and isinstance(value, BaseException):
        line = type(value).__name__
    return shorten(line, limit)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a __str__ that raises
        return ""


def one_line(value: BaseException | str, limit: int = 200) -> str:
    """All of a text (or an exception's message, else its type name) on one line, whitespace runs collapsed,
    cleaned and shortened."""
    text = _message(value) if isinstance(value, BaseException) else str(value)
    line = clean(" ".join(text.split()))
    if not line and isinstance(value, BaseException):
        line = type(value).__name__
    return shorten(line, limit)


def clean(text: str) -> str:
    """`text` without terminal escape sequences and control characters: safe to print on a terminal."""
    text = _ESCAPE_SEQUENCE.sub("", str(text))
    text = _CONTROL.sub("", text)
    # Unassigned and private-use code points print as nothing or as boxes; surrogates cannot be encoded.
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Cs",))


def shorten(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters, with an ellipsis and the number of characters left out."""
    if limit <= 0 or len(text) <= limit:
        return text
    cut = max(limit - 24, 8)
    return f"{text[:cut]}... ({len(text) - cut:,} more characters)"


def safe(value: object, limit: int = 200) -> str:
    """A value taken from a file, the Hub or the command line, ready to put in a message: one line, no control
    characters or escape sequences, at most `limit` characters. rich markup in it is escaped where a rich
    console prints it (see `markup`)."""
    return one_line(str(value), limit)


def markup(value: object, limit: int = 200) -> str:
    """`safe(value)` with rich markup escaped, for text printed through a rich console."""
    from rich.markup import escape

    return escape(safe(value, limit))
