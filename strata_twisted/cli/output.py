"""
How the ``strata`` command writes: text escaped for terminals, exact JSON, tables, and times
for people.  Nothing here knows about stores or operations.

Text output escapes control characters: headers, addresses and the primaries' replies come from
strangers, and a raw ESC could rewrite the admin's terminal.  ``--json`` output is exact.  Times
are shown in local time with their UTC offset.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from typing import TextIO

# C0 and C1 controls but tab and newline, and the bidirectional overrides (CVE-2021-42574).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` / ``\\uNNNN`` escapes."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(escape, text)


class Output:
    """Standard output for one command."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.broken_pipe = False

    def write(self, text: str) -> None:
        """Write to ``out``; once the reader has gone (``strata queue list | head``), write
        nothing more, but let the command finish what it was doing."""
        if self.broken_pipe:
            return
        try:
            self.out.write(text)
        except BrokenPipeError:
            self.broken_pipe = True

    def flush(self) -> None:
        if not self.broken_pipe:
            try:
                self.out.flush()
            except BrokenPipeError:
                self.broken_pipe = True
        if self.broken_pipe:
            _discard_output(self.out)

    def emit_json(self, value: object) -> None:
        self.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def print(self, text: str = "") -> None:
        self.write(printable(text) + "\n")

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.print("  ".join(cells).rstrip())


def _discard_output(out: TextIO) -> None:
    """Point ``out``'s file descriptor at /dev/null, so the interpreter's last flush of what is
    still buffered does not fail (and print a traceback) on the closed pipe."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def when(timestamp: float | None) -> str:
    """Local time with its UTC offset: the admin, the server and its logs may not share a zone."""
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(timestamp))


def ago(now: float, then: float) -> str:
    return f"{age(now - then)} ago"


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def duration_text(seconds: float) -> str:
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{suffix}"
    return f"{seconds:g}s"
