"""
Strata serving IMAP to real clients: a ``twistd -n strata`` subprocess with the ``[imap]`` section
on, one protected domain in mode ``both`` (so intake puts a copy of each message in the
recipient's INBOX), and users imported from a Dovecot passwd-file.  For the interop tests of
imaplib, imapclient and mbsync and for the IMAP security tests.

Mail reaches the mailboxes only through SMTP intake, the way it does in production: `deliver`
and `deliver_many` send it with smtplib and return Strata's queue ids.  What intake stored is the
sent bytes behind one prepended ``Received:`` header; `split_stored` checks exactly that.

`RawIMAP` is a bare socket client for what a real client library will not send (commands
pipelined in one packet before STARTTLS, oversized literals, overlong lines).

Loopback only; every process started here is stopped by `StrataIMAP.stop` (the fixtures do it).
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from passlib.hash import sha512_crypt  # type: ignore[import-untyped]  # libpass, Strata's dep

from tests.peers.net import free_port, wait_for_port
from tests.peers.strata import StrataProcess

__all__ = [
    "DOMAIN",
    "SENDER",
    "RawIMAP",
    "StrataIMAP",
    "fetch_bodies",
    "split_stored",
    "strata_imap_factory",
    "unverified_context",
]

DOMAIN = "example.test"
SENDER = "sender@outside.test"

_QUEUED = re.compile(rb"queued as (\S+)")
# The one header field intake prepends (README "What intake guarantees"), folded over lines.
_RECEIVED = re.compile(rb"\AReceived: from [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def password_for(address: str) -> str:
    """Each test user's password: distinct per user, with a non-letter to exercise quoting."""
    return "pw-" + address.split("@")[0] + "!"


def passwd_line(address: str, password: str) -> str:
    """A Dovecot passwd-file line as ``doveadm pw -s SHA512-CRYPT`` writes it (5000 rounds)."""
    return f"{address}:{{SHA512-CRYPT}}{sha512_crypt.using(rounds=5000).hash(password)}\n"


def unverified_context() -> ssl.SSLContext:
    """A client TLS context that accepts Strata's self-signed certificate (loopback tests)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def split_stored(stored: bytes, sent: bytes, queue_id: str | None = None) -> bytes:
    """
    Check that `stored` is exactly `sent` behind one ``Received:`` header (naming `queue_id` when
    given) and return that header; raise AssertionError naming the first difference otherwise.
    """
    match = _RECEIVED.match(stored)
    assert match is not None, f"stored message does not start with Received: {stored[:200]!r}"
    received = match.group(0)
    if stored[len(received) :] != sent:
        rest = stored[len(received) :]
        at = next(
            (i for i, (a, b) in enumerate(zip(rest, sent, strict=False)) if a != b),
            min(len(rest), len(sent)),
        )
        raise AssertionError(
            f"stored bytes differ from the sent ones at offset {at} (stored {len(rest)}, sent "
            f"{len(sent)} octets): stored {rest[at : at + 60]!r}, sent {sent[at : at + 60]!r}"
        )
    if queue_id is not None:
        assert f" id {queue_id}".encode() in received, (received, queue_id)
    return received


def fetch_bodies(client: imaplib.IMAP4, uids: str = "1:*") -> dict[int, bytes]:
    """UID FETCH `uids` (BODY.PEEK[]) in the selected mailbox, by UID (imaplib, no parsing help)."""
    typ, data = client.uid("FETCH", uids, "(UID BODY.PEEK[])")
    assert typ == "OK", data
    out: dict[int, bytes] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        match = re.search(rb"UID (\d+)", head)
        assert match is not None, head
        out[int(match.group(1))] = body
    return out


Parsed = Any
"""A parsed IMAP value: bytes (quoted string or literal), str (atom, number), None, list."""


def parse_fetch(data: Sequence[Any]) -> dict[int, dict[str, Parsed]]:
    """
    imaplib's FETCH data (lines, and (line, literal) pairs) → {sequence number: {item: value}}.
    A string comes back as bytes whether the server sent it quoted or as a literal (RFC 3501
    §4.3: the same string); item names are upper-cased atoms like ``BODY[1]`` or ``BODY[]<0>``.
    """
    stream = bytearray()
    for piece in data:
        if isinstance(piece, tuple):
            stream += piece[0] + b"\r\n" + piece[1]
        elif piece is not None:
            stream += piece + b"\n"  # one response per line; \n is whitespace below
    return _parse_responses(bytes(stream))


def _parse_responses(stream: bytes) -> dict[int, dict[str, Parsed]]:
    out: dict[int, dict[str, Parsed]] = {}
    pos = 0
    while pos < len(stream):
        while pos < len(stream) and stream[pos : pos + 1] in (b" ", b"\n", b"\r", b")"):
            pos += 1
        if pos >= len(stream):
            break
        match = re.compile(rb"(\d+) \(").match(stream, pos)
        assert match is not None, bytes(stream[pos : pos + 80])
        seq = int(match.group(1))
        values, pos = _parse_list(stream, match.end())
        items = out.setdefault(seq, {})
        for key, value in zip(values[::2], values[1::2], strict=True):
            items[str(key).upper()] = value
    return out


def _parse_list(data: bytes, pos: int) -> tuple[list[Parsed], int]:
    """Values up to the closing parenthesis (consumed); returns them and the position after."""
    values: list[Parsed] = []
    while True:
        while data[pos : pos + 1] in (b" ", b"\n"):
            pos += 1
        c = data[pos : pos + 1]
        if c == b")":
            return values, pos + 1
        if c == b"(":
            inner, pos = _parse_list(data, pos + 1)
            values.append(inner)
        elif c == b'"':
            end = pos + 1
            text = bytearray()
            while data[end : end + 1] != b'"':
                if data[end : end + 1] == b"\\":
                    end += 1
                text += data[end : end + 1]
                end += 1
            values.append(bytes(text))
            pos = end + 1
        elif c == b"{":
            match = re.compile(rb"\{(\d+)\}\r\n").match(data, pos)
            assert match is not None, bytes(data[pos : pos + 40])
            start = match.end()
            values.append(bytes(data[start : start + int(match.group(1))]))
            pos = start + int(match.group(1))
        else:
            match = re.compile(rb"[^ ()\[\n]+(\[[^\]]*\](<\d+>)?)?").match(data, pos)
            assert match is not None and match.end() > pos, bytes(data[pos : pos + 40])
            atom = match.group(0).decode("ascii", "replace")
            values.append(None if atom == "NIL" else atom)
            pos = match.end()


class StrataIMAP:
    """
    One Strata with IMAP (plain with STARTTLS, and implicit TLS), domain ``example.test`` in mode
    ``both`` and `users` (local parts) imported with SHA512-CRYPT hashes.

    ``imap``: extra ``[imap]`` keys, TOML values as text (``{"login_max_delay": "2"}``);
    ``intake``: extra ``[intake]`` keys likewise.  ``submission``: turn SMTP submission on (on
    ``submission_port``, no implicit TLS) with these extra ``[submission]`` keys.
    """

    def __init__(
        self,
        root: Path,
        *,
        users: Sequence[str] = ("alice", "bob"),
        imap: Mapping[str, str] | None = None,
        intake: Mapping[str, str] | None = None,
        submission: Mapping[str, str] | None = None,
    ) -> None:
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.submission_port = free_port() if submission is not None else None
        intake_keys = "".join(f"{k} = {v}\n" for k, v in (intake or {}).items())
        imap_keys = "".join(f"{k} = {v}\n" for k, v in (imap or {}).items())
        if submission is not None:
            imap_keys += (
                f'[submission]\nlisten = ["127.0.0.1:{self.submission_port}"]\ntls_listen = []\n'
                + "".join(f"{k} = {v}\n" for k, v in submission.items())
            )
        # StrataProcess ends its config inside [intake]: our intake keys come first.
        self.strata = StrataProcess(
            root,
            extra_config=intake_keys
            + f'[imap]\nlisten = ["127.0.0.1:{self.imap_port}"]\n'
            + f'tls_listen = ["127.0.0.1:{self.imaps_port}"]\n'
            + imap_keys,
        )
        self.users = {f"{u}@{DOMAIN}": password_for(f"{u}@{DOMAIN}") for u in users}
        self._unused = list(self.users)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> StrataIMAP:
        strata = self.strata
        args = ["domain", "add", DOMAIN, "--relay", "127.0.0.1:1", "--mode", "both"]
        args += ["--no-monitor"]
        # The per-domain portal policy: IMAP login only while it is open.
        if "--portal" in strata.cli("domain", "add", "--help").stdout:
            args += ["--portal", "always"]
        strata.cli(*args)
        passwd = strata.root / "users.passwd"
        passwd.write_text("".join(passwd_line(a, p) for a, p in self.users.items()))
        strata.cli("user", "import", DOMAIN, str(passwd))
        strata.start()
        ports = [self.imap_port, self.imaps_port]
        if self.submission_port is not None:
            ports.append(self.submission_port)
        for port in ports:
            if not wait_for_port(port, 30):
                raise RuntimeError(f"Strata is not listening for IMAP on {port}\n{self.log()}")
        return self

    def stop(self) -> None:
        self.strata.stop()

    @property
    def pid(self) -> int:
        return self.strata.pid

    def log(self) -> str:
        return self.strata.log_text()[-4000:]

    @property
    def certificate(self) -> Path:
        """The self-signed certificate Strata generated on first start (STARTTLS and port 993)."""
        return self.strata.data_dir / "tls" / "cert.pem"

    def rss(self) -> int:
        """The server process's resident set size in bytes (VmRSS)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024

    # -- users ------------------------------------------------------------------------------------

    def fresh_user(self) -> tuple[str, str]:
        """A user no other test has had yet: (address, password)."""
        assert self._unused, "no unused users left: create StrataIMAP with more"
        address = self._unused.pop(0)
        return address, self.users[address]

    # -- mail in, through SMTP intake -------------------------------------------------------------

    def _smtp(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.strata.port, timeout=120)
        client.ehlo("client.test")
        return client

    @staticmethod
    def _send(client: smtplib.SMTP, recipients: Sequence[str], message: bytes) -> str:
        options = ["BODY=8BITMIME"] if any(b > 0x7F for b in message) else []
        code, text = client.mail(SENDER, options)
        assert code == 250, (code, text)
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        # smtplib.data dot-stuffs and adds the final dot; bytes are sent as they are otherwise.
        code, text = client.data(message)
        assert code == 250, (code, text)
        match = _QUEUED.search(text)
        assert match is not None, text
        return match.group(1).decode()

    def deliver(self, recipients: str | Sequence[str], message: bytes) -> str:
        """Send one message through intake (CRLF line endings, please); its queue id."""
        rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
        with self._smtp() as client:
            return self._send(client, rcpts, message)

    def deliver_many(self, items: Sequence[tuple[str, bytes]], connections: int = 4) -> list[str]:
        """
        Send (recipient, message) pairs over `connections` parallel SMTP sessions; the queue ids
        in `items`' order.  Within a session the messages go in order: with one session, the
        arrival order (and so the UID order) is `items`' order.
        """
        ids: list[str] = [""] * len(items)

        def session(part: int) -> None:
            with self._smtp() as client:
                for i in range(part, len(items), connections):
                    rcpt, message = items[i]
                    ids[i] = self._send(client, [rcpt], message)

        with ThreadPoolExecutor(connections) as pool:
            for result in [pool.submit(session, p) for p in range(connections)]:
                result.result()
        return ids

    # -- IMAP clients -----------------------------------------------------------------------------

    def imaplib(self, address: str | None = None) -> imaplib.IMAP4:
        """An imaplib connection on the plain port, logged in as `address` when given."""
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=60)
        if address is not None:
            typ, data = client.login(address, self.users[address])
            assert typ == "OK", data
        return client

    def raw(self, *, tls: bool = False, timeout: float = 20.0, source: str = "") -> RawIMAP:
        """A `RawIMAP` on the plain port, or on the implicit-TLS port; from `source` if given."""
        port = self.imaps_port if tls else self.imap_port
        return RawIMAP(port, tls=tls, timeout=timeout, source=source)


class RawIMAP:
    """
    IMAP over a bare socket: send exactly the bytes given, read lines and literals as they come.
    For the security tests only (pipelining before STARTTLS, oversized literals and lines).
    """

    def __init__(
        self, port: int, *, tls: bool = False, timeout: float = 20.0, source: str = ""
    ) -> None:
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.sock: socket.socket = (
            unverified_context().wrap_socket(sock, server_hostname="strata.test") if tls else sock
        )
        self._buf = bytearray()
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError(f"closed by the server; unread: {bytes(self._buf)!r}")
        self._buf += data

    def line(self) -> bytes:
        """The next line, CRLF included (a literal's announcement too)."""
        while (end := self._buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self._buf[: end + 2])
        del self._buf[: end + 2]
        return line

    def octets(self, count: int) -> bytes:
        while len(self._buf) < count:
            self._fill()
        data = bytes(self._buf[:count])
        del self._buf[:count]
        return data

    def octets_slowly(self, count: int, chunk: int = 64 * 1024, pause: float = 0.002) -> bytes:
        """`count` octets read at most `chunk` at a time with `pause` seconds between reads."""
        out = bytearray()
        while len(out) < count:
            if not self._buf:
                self._fill()
            take = min(len(self._buf), count - len(out), chunk)
            out += self._buf[:take]
            del self._buf[:take]
            time.sleep(pause)
        return bytes(out)

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Every line up to and including the tagged completion for `tag` (literals inline)."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            if (m := re.search(rb"\{(\d+)\+?\}\r\n\Z", line)) is not None:
                line += self.octets(int(m.group(1)))
                line += self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def pending(self, wait: float) -> bytes:
        """Whatever the server sends within `wait` seconds (b"" when nothing)."""
        deadline = time.monotonic() + wait
        old = self.sock.gettimeout()
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    self._fill()
                except TimeoutError:
                    break
                except (ConnectionError, ssl.SSLError):
                    break
        finally:
            self.sock.settimeout(old)
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def starttls(self) -> None:
        """Upgrade the socket (after the server said OK to STARTTLS); anything buffered is lost."""
        assert not self._buf, f"unread plaintext before the TLS handshake: {bytes(self._buf)!r}"
        self.sock = unverified_context().wrap_socket(self.sock, server_hostname="strata.test")

    def closed_by_server(self, wait: float = 5.0) -> bool:
        """True when the server closes the connection within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
                self._buf += data
        except (TimeoutError, ssl.SSLError):
            return False
        except ConnectionError:
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawIMAP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def strata_imap_factory(tmp_path: Path) -> Iterator[Any]:
    """Builds started `StrataIMAP` servers under tmp_path (keyword arguments as its); stops all."""
    started: list[StrataIMAP] = []

    def make(name: str = "strata", **kwargs: Any) -> StrataIMAP:
        server = StrataIMAP(tmp_path / name, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()
