"""A tiny raw IMAP client for scripted comparisons between IMAP servers (tests and benchmarks).

`IMAPScript` sends one command at a time, exactly as written (with synchronizing literals where
asked), and collects what the server answered to it as raw bytes: every untagged response (a
literal ``{n}`` in a response is read as n octets and kept inline, so a response is one bytes
value however many lines it spans), every continuation request, and the tagged completion.  It
interprets nothing, so two servers' answers can be compared octet for octet, or after
`parse_response` has turned them into values.  A command that may end the connection (a
``* BYE`` for a mailbox deleted under the session) runs with ``allow_close=True``: what arrived
before the close is kept and the `Reply` says ``closed``.

`parse_response` reads one response into nested Python values: a parenthesised list is a
``list``, NIL is ``None``, a quoted string or a literal is ``bytes`` (RFC 3501 §4.3: the two
forms are the same string), and anything else is an `Atom` (numbers too, as written), with a
FETCH section name like ``BODY[HEADER.FIELDS (A B)]<0>`` kept as one atom.

Blocking sockets with timeouts, for tests and benchmarks only; 127.0.0.1 only by convention.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = [
    "Atom",
    "IMAPScript",
    "IMAPScriptError",
    "Literal",
    "Reply",
    "ServerClosed",
    "Value",
    "parse_response",
]


class IMAPScriptError(RuntimeError):
    """The server closed the connection, timed out, or answered what cannot be IMAP."""


class ServerClosed(IMAPScriptError):
    """The server closed the connection (an `IMAPScriptError`, so old callers catch it too)."""


class Atom(str):
    """An IMAP atom (or number, or flag) as written; compares as the string it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str(self)!r})"


Value: TypeAlias = "Atom | bytes | None | list[Value]"


@dataclass(frozen=True)
class Literal:
    """A piece of a command sent as a synchronizing literal ``{n}`` (RFC 3501 §4.3)."""

    data: bytes

    @classmethod
    def of(cls, text: str | bytes) -> Literal:
        return cls(text.encode("utf-8") if isinstance(text, str) else text)


@dataclass
class Reply:
    """Everything one command got back, raw: untagged responses, continuations, the tagged line."""

    command: bytes
    untagged: list[bytes] = field(default_factory=list)
    continuations: list[bytes] = field(default_factory=list)
    tagged: bytes = b""
    closed: bool = False  # the server closed the connection before the tagged reply

    @property
    def status(self) -> str:
        """OK, NO or BAD (the word after the tag)."""
        parts = self.tagged.split(b" ", 2)
        return parts[1].decode("ascii", "replace").upper() if len(parts) > 1 else ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def data(self, kind: str) -> list[list[Value]]:
        """The parsed untagged responses whose first word (or word after a number) is `kind`."""
        out = []
        for raw in self.untagged:
            values = parse_response(raw)
            words = [v for v in values[1:3] if isinstance(v, Atom)]
            if any(w.upper() == kind.upper() for w in words):
                out.append(values)
        return out


class IMAPScript:
    """One IMAP connection that runs commands one by one and returns raw `Reply` values."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._buf = bytearray()
        self._tag = 0
        self.sent = 0  # commands sent, for the benchmark's commands/s
        self.greeting = self.read_response()

    # ------------------------------------------------------------------ reading

    def _recv(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError as error:
            raise IMAPScriptError(f"no answer within {self.sock.gettimeout()}s") from error
        if not data:
            raise ServerClosed("the server closed the connection")
        self._buf += data

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[: end + 2])
                del self._buf[: end + 2]
                return line
            self._recv()

    def _octets(self, count: int) -> bytes:
        while len(self._buf) < count:
            self._recv()
        data = bytes(self._buf[:count])
        del self._buf[:count]
        return data

    def read_response(self) -> bytes:
        """One whole response: its lines and the literals inside it, without the final CRLF."""
        out = bytearray()
        while True:
            line = self._line()
            out += line
            count = _literal_length(line)
            if count is None:
                return bytes(out[:-2])
            out += self._octets(count)

    def pending(self, wait: float) -> bool:
        """Whether a response starts arriving within `wait` seconds."""
        if self._buf:
            return True
        self.sock.settimeout(wait)
        try:
            self._recv()
        except IMAPScriptError:
            return bool(self._buf)
        finally:
            self.sock.settimeout(self.timeout)
        return True

    # ------------------------------------------------------------------ commands

    def next_tag(self) -> bytes:
        self._tag += 1
        return b"s%04d" % self._tag

    def run(self, *pieces: str | bytes | Literal, allow_close: bool = False) -> Reply:
        """
        Send ``TAG`` and the pieces as one command, literals as ``{n}`` after waiting for the
        server's continuation, and collect every response up to the tagged one.

        When the server closes the connection first, this raises `ServerClosed`; with
        `allow_close` it returns what came before instead, with ``closed`` set (and no tagged
        line).  A connection the server had closed already gives an empty closed reply.
        """
        reply = Reply(command=_command_text(pieces))
        try:
            return self._run(reply, pieces)
        except (ServerClosed, BrokenPipeError, ConnectionResetError):
            if not allow_close:
                raise
            reply.closed = True
            return reply

    def _run(self, reply: Reply, pieces: Sequence[str | bytes | Literal]) -> Reply:
        tag = self.next_tag()
        line = bytearray(tag + b" ")
        for piece in pieces:
            if isinstance(piece, Literal):
                line += b"{%d}\r\n" % len(piece.data)
                self.sock.sendall(bytes(line))
                line = bytearray()
                while True:  # untagged data may come before the continuation
                    response = self.read_response()
                    if response.startswith(b"+"):
                        reply.continuations.append(response)
                        break
                    if response.startswith(tag + b" "):
                        reply.tagged = response  # refused before the literal was sent
                        self.sent += 1
                        return reply
                    reply.untagged.append(response)
                line += piece.data
            else:
                line += piece.encode("utf-8") if isinstance(piece, str) else piece
        line += b"\r\n"
        self.sock.sendall(bytes(line))
        self.sent += 1
        return self._collect(tag, reply)

    def _collect(self, tag: bytes, reply: Reply) -> Reply:
        while True:
            response = self.read_response()
            if response.startswith(tag + b" "):
                reply.tagged = response
                return reply
            if response.startswith(b"+"):
                reply.continuations.append(response)
            else:
                reply.untagged.append(response)

    def login(self, user: str, password: str) -> Reply:
        reply = self.run("LOGIN ", Literal.of(user), " ", Literal.of(password))
        if not reply.ok:
            raise IMAPScriptError(f"LOGIN {user} failed: {reply.tagged!r}")
        return reply

    # ------------------------------------------------------------------ IDLE (RFC 2177)

    def idle_start(self) -> tuple[bytes, Reply]:
        """Send IDLE and wait for the server's continuation; returns (tag, partial reply)."""
        tag = self.next_tag()
        reply = Reply(command=b"IDLE")
        self.sock.sendall(tag + b" IDLE\r\n")
        self.sent += 1
        while True:
            response = self.read_response()
            if response.startswith(b"+"):
                reply.continuations.append(response)
                return tag, reply
            if response.startswith(tag + b" "):
                raise IMAPScriptError(f"IDLE refused: {response!r}")
            reply.untagged.append(response)

    def idle_wait(
        self, reply: Reply, until: Callable[[list[bytes]], bool], timeout: float = 10.0
    ) -> bool:
        """Collect untagged responses while idling, until `until(untagged)` holds or time is up."""
        deadline = time.monotonic() + timeout
        while not until(reply.untagged):
            left = deadline - time.monotonic()
            if left <= 0 or not self.pending(left):
                return False
            reply.untagged.append(self.read_response())
        return True

    def idle_done(self, tag: bytes, reply: Reply) -> Reply:
        """Send DONE and collect up to IDLE's tagged completion."""
        self.sock.sendall(b"DONE\r\n")
        return self._collect(tag, reply)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def logout(self) -> Reply | None:
        """LOGOUT and close; None when the server was gone already."""
        try:
            return self.run("LOGOUT")
        except (IMAPScriptError, OSError):
            return None
        finally:
            self.close()

    def __enter__(self) -> IMAPScript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _literal_length(line: bytes) -> int | None:
    """n when `line` ends with ``{n}`` (or ``{n+}``/``~{n}``) before its CRLF, else None."""
    if not line.endswith(b"}\r\n"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    digits = line[start + 1 : -3].rstrip(b"+")
    return int(digits) if digits.isdigit() else None


def _command_text(pieces: Sequence[str | bytes | Literal]) -> bytes:
    out = bytearray()
    for piece in pieces:
        if isinstance(piece, Literal):
            out += b"{%d}" % len(piece.data)
        else:
            out += piece.encode("utf-8") if isinstance(piece, str) else piece
    return bytes(out)


# ---------------------------------------------------------------------- parsing

_ATOM_END = frozenset(b" ()\r\n")


def parse_response(data: bytes) -> list[Value]:
    """
    One response (as `IMAPScript.read_response` returns it) as a list of values.

    Tolerant: the text after a status word is read as atoms too (callers drop it); an unclosed
    list or string ends at the end of the data.
    """
    values, _ = _parse_list(data, 0, closing=False)
    return values


def _parse_list(data: bytes, pos: int, *, closing: bool) -> tuple[list[Value], int]:
    out: list[Value] = []
    size = len(data)
    while pos < size:
        char = data[pos]
        if char in b" \r\n":
            pos += 1
        elif char == 0x28:  # (
            inner, pos = _parse_list(data, pos + 1, closing=True)
            out.append(inner)
        elif char == 0x29:  # )
            if closing:
                return out, pos + 1
            out.append(Atom(")"))
            pos += 1
        elif char == 0x22:  # "
            text, pos = _quoted(data, pos)
            out.append(text)
        elif char in b"{~" and _literal_at(data, pos) is not None:
            start, count = _literal_at(data, pos)  # type: ignore[misc]
            out.append(data[start : start + count])
            pos = start + count
        else:
            start = pos
            depth = 0
            while pos < size:
                c = data[pos]
                if c == 0x5B:  # [ : a section spec runs to its ] (spaces, parentheses inside)
                    depth += 1
                elif c == 0x5D and depth:
                    depth -= 1
                elif depth == 0 and c in _ATOM_END:
                    break
                pos += 1
            word = data[start:pos].decode("utf-8", "surrogateescape")
            out.append(None if word.upper() == "NIL" else Atom(word))
    return out, pos


def _literal_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """(start of the literal's data, its length) for ``{n}CRLF`` or ``~{n}CRLF`` at `pos`."""
    if data[pos] == 0x7E:
        pos += 1
    if pos >= len(data) or data[pos] != 0x7B:
        return None
    end = data.find(b"}\r\n", pos)
    if end < 0:
        return None
    digits = data[pos + 1 : end].rstrip(b"+")
    if not digits.isdigit():
        return None
    return end + 3, int(digits)


def _quoted(data: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    pos += 1
    while pos < len(data):
        char = data[pos]
        if char == 0x5C and pos + 1 < len(data):
            out.append(data[pos + 1])
            pos += 2
            continue
        if char == 0x22:
            return bytes(out), pos + 1
        out.append(char)
        pos += 1
    return bytes(out), pos
