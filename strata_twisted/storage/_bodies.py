"""
Rules every storage backend applies to message ids and bodies, kept in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Queue ids become file names (SQLite) and keys (Redis): a safe, bounded alphabet.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_message_id(message_id: str) -> None:
    """Raise ValueError unless ``message_id`` is ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128)."""
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"invalid queue id {message_id!r}")


def header_section(lines: Iterable[bytes]) -> bytes:
    """The lines of a message up to and including the first blank line (CRLF or bare LF)."""
    out: list[bytes] = []
    for line in lines:
        out.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(out)


def check_body_range(offset: int, length: int) -> None:
    """Raise ValueError unless ``offset`` and ``length`` (of a body range read) are both >= 0."""
    if offset < 0 or length < 0:
        raise ValueError(f"invalid body range: offset {offset}, length {length}")
