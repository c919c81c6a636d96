# -*- test-case-name: tests.test_proto_smtp_server -*-
"""
An SMTP reply as a value: code, enhanced status code and text, and its exact wire form.

This module turns replies into bytes and nothing else.  It never reads from or writes to a
transport, and it never puts a byte on the wire that could end a reply line early: CR, LF and
anything outside printable ASCII in the text are replaced, so a reply built from a peer's input or
an exception's text cannot inject a second reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from strata_twisted.errors import MailError

# RFC 3463 §2: class "." subject "." detail, class 2, 4 or 5, subject and detail 1-3 digits.
_ENHANCED: Final = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", re.ASCII)

# Every character that is not printable ASCII (or a space) becomes "?".
_UNSAFE: Final = re.compile(r"[^\x20-\x7e]")

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, code and CRLF included.
_MAX_REPLY_LINE: Final = 512


@dataclass(frozen=True)
class Reply:
    """
    One SMTP reply, single- or multi-line.

    ``enhanced`` is the RFC 3463 code written after the reply code on every line (RFC 2034 §4), or
    None where none belongs: greetings, the answer to EHLO/HELO, 3xx intermediate replies.
    """

    code: int
    enhanced: str | None
    text: str | tuple[str, ...]

    def __post_init__(self) -> None:
        # RFC 5321 §4.2: a reply code is three digits, the first 2 to 5 (1yz is never used).
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code {self.code} is not in 200-599")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise ValueError(f"{self.enhanced!r} is not an RFC 3463 status code")
            # RFC 3463 §2: the class (2, 4, 5) says what the reply code's first digit says.
            if self.enhanced[0] != str(self.code)[0]:
                raise ValueError(f"enhanced code {self.enhanced} does not match {self.code}")

    @classmethod
    def from_error(cls, err: MailError) -> Reply:
        """
        The reply a L{MailError} stands for.

        The error path must not raise: an enhanced code whose class disagrees with the reply code
        (``code=550`` on a class whose default is ``4.3.0``) takes the class of the code, as
        Postfix's ``smtpd_check_reject`` does, and a malformed one becomes ``X.0.0``.
        """
        klass = str(err.code)[0]
        enhanced = err.enhanced or ""
        if _ENHANCED.fullmatch(enhanced):
            enhanced = klass + enhanced[1:]
        else:
            enhanced = f"{klass}.0.0"
        return cls(err.code, enhanced, err.public_text)

    @property
    def ok(self) -> bool:
        """True for a positive reply: 2xx completion or 3xx intermediate (RFC 5321 §4.2.1)."""
        return 200 <= self.code < 400

    @property
    def lines(self) -> tuple[str, ...]:
        """The text lines, at least one (possibly empty)."""
        if isinstance(self.text, str):
            return (self.text,)
        return self.text or ("",)

    def to_bytes(self) -> bytes:
        """
        The reply as it goes on the wire.

        RFC 5321 §4.2.1: every line but the last is ``code "-" text``, the last ``code SP text``.
        """
        lines = self.lines
        out: list[str] = []
        for index, line in enumerate(lines):
            body = _UNSAFE.sub("?", line)
            if self.enhanced is not None:
                body = f"{self.enhanced} {body}" if body else self.enhanced
            if index < len(lines) - 1:
                text = f"{self.code}-{body}"
            else:
                text = f"{self.code} {body}" if body else str(self.code)
            out.append(text[: _MAX_REPLY_LINE - 2] + "\r\n")
        return "".join(out).encode("ascii")
