# -*- test-case-name: tests.test_proto_smtp_client -*-
"""
The ESMTP client as a sans-IO engine: the relay's side of a delivery to a customer's primary server.

Server bytes go in through L{SMTPClientEngine.receive_data} and come out as events from
L{SMTPClientEngine.next_event}; the adapter's decisions go in through method calls
(L{SMTPClientEngine.send_message}, L{SMTPClientEngine.body_chunk}, ...) and commands come out of
L{SMTPClientEngine.data_to_send}.  A session looks like this::

    Greeted → [StartTLSNeeded → tls_started()] → [AUTH, inside the engine] → Ready
    Ready → send_message() → [DataReady → body_chunk()... → end_body()] → TransactionResult → Ready
    Ready → quit() → Closed
    anywhere: SessionFailed or TLSUnavailable, after which the engine is closed

Extensions used when the server offers them: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
(RFC 6152), SMTPUTF8 (RFC 6531), STARTTLS (RFC 3207), and AUTH (RFC 4954) with PLAIN
(RFC 4616) or LOGIN (draft-murchison-sasl-login) when L{ClientConfig.auth} is set, for a
smarthost; enhanced status codes (RFC 2034, RFC 3463) are read from every reply whose first line
starts with one.

This module must never touch a socket, a reactor, a clock or a store; it must never raise on
anything the server sends (every byte sequence ends in an event or a wait for more bytes); it
must never change a byte of message content except for the RFC 5321 §4.5.2 transparency dot; and
it must never put the AUTH password anywhere but base64 on the wire: not in a repr, an event, an
exception or a reason, and not on a connection without TLS unless the config allows it.
Twisted's own client gets that last part wrong (research/twisted-audit.md §2): it turns CRLF into
CR CR LF and loses, or worse obeys, a "." line that starts a 16 KiB chunk.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, Literal, TypeAlias, get_args

from strata_twisted.proto.smtp_reply import Reply

__all__ = [
    "NEED_DATA",
    "ClientConfig",
    "Closed",
    "DataReady",
    "Event",
    "Extensions",
    "Greeted",
    "NeedData",
    "Ready",
    "RecipientResult",
    "SMTPClientEngine",
    "SessionFailed",
    "StartTLSNeeded",
    "State",
    "TLSPolicy",
    "TLSUnavailable",
    "TransactionResult",
]


TLSPolicy: TypeAlias = Literal["none", "opportunistic", "required", "verify"]
"""
When to use STARTTLS (the Postfix ``smtp_tls_security_level`` names: none, may, encrypt, verify).

- ``none``: never, even when offered.
- ``opportunistic``: when offered.  Not offered, or refused with a 4xx/5xx reply to STARTTLS:
  carry on in plaintext (Postfix's ``may``).  A failed handshake leaves the connection in an
  unknown state: the adapter calls L{SMTPClientEngine.abort} and reconnects with ``none``.
- ``required`` and ``verify``: STARTTLS must be offered and accepted, else L{TLSUnavailable}.  The
  engine treats both alike; ``verify`` tells the adapter to check the certificate chain and name.
"""

_POLICIES: Final = frozenset(get_args(TLSPolicy))
_MUST_TLS: Final = frozenset({"required", "verify"})

# RFC 5321 §4.1.2 Domain / address-literal: printable ASCII without spaces is all we check.
_HELO_NAME: Final = re.compile(r"[\x21-\x7e]+", re.ASCII)
# Nothing below 0x20 (CR, LF, NUL...) or DEL may go into a command line: it could end it early.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ClientConfig:
    """
    How the client introduces itself, when it uses TLS, and how it logs in to a smarthost.

    ``auth`` is (username, password) for AUTH (RFC 4954), or None to never authenticate.  Both
    are sent UTF-8 encoded; RFC 4616 §2 wants each non-empty and without NUL.  The repr shows the
    username only.  ``auth_plaintext`` allows AUTH on a connection without TLS (a smarthost on
    loopback); by default the engine refuses to send credentials in the clear.
    """

    helo_name: str
    tls: TLSPolicy = "opportunistic"
    tls_active: bool = False  # implicit TLS (port 465): the connection is already encrypted
    auth: tuple[str, str] | None = None
    auth_plaintext: bool = False

    def __post_init__(self) -> None:
        if not _HELO_NAME.fullmatch(self.helo_name):
            raise ValueError(f"{self.helo_name!r} is not a usable EHLO name")
        if self.tls not in _POLICIES:
            raise ValueError(f"unknown TLS policy {self.tls!r}")
        if self.auth is not None:
            # Never the password in this text: the exception may be logged.
            username, password = self.auth
            if not username or "\0" in username:
                raise ValueError("the AUTH username must be non-empty and contain no NUL")
            if not password or "\0" in password:
                raise ValueError("the AUTH password must be non-empty and contain no NUL")

    def __repr__(self) -> str:
        # Written by hand (dataclass keeps it) so that the password never shows.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "auth" and value is not None:
                parts.append(f"auth=({value[0]!r}, '<redacted>')")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class NeedData(enum.Enum):
    """The type of L{NEED_DATA}."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""From L{SMTPClientEngine.next_event}: nothing to report until more bytes or an adapter call."""


@dataclass(frozen=True)
class Extensions:
    """
    What the server's EHLO reply offered (RFC 1869 §4.3).  Nothing is offered after HELO.

    ``max_size`` is the SIZE limit in octets, or None when SIZE came without a number or with 0,
    which means no fixed limit (RFC 1870 §4).
    """

    pipelining: bool = False
    size: bool = False
    max_size: int | None = None
    eight_bit_mime: bool = False
    smtputf8: bool = False
    starttls: bool = False
    enhanced_status_codes: bool = False
    auth_mechanisms: frozenset[str] = frozenset()  # SASL mechanisms after AUTH, upper case
    keywords: frozenset[str] = frozenset()  # every keyword offered, upper case, for the log

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Extensions:
        """
        Read the keywords of a positive EHLO reply.

        RFC 1869 §4.3: the first line names the server; each further line is a keyword, then its
        parameters after spaces.  Keywords are case-insensitive.  Unknown keywords are kept in
        ``keywords`` only; a SIZE parameter that is not a number counts as "no limit".  AUTH's
        parameters are the SASL mechanisms (RFC 4954 §3); the pre-standard "AUTH=..." line is
        only kept as a keyword (servers that send it send the standard line too).
        """
        keywords: set[str] = set()
        max_size: int | None = None
        mechanisms: set[str] = set()
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            keywords.add(keyword)
            if keyword == "SIZE" and len(words) > 1:
                number = words[1]
                # RFC 1870 §4: SIZE [1*20DIGIT]; 0 means no fixed maximum.
                if number.isascii() and number.isdigit() and len(number) <= 20:
                    max_size = int(number) or None
            elif keyword == "AUTH":
                mechanisms.update(word.upper() for word in words[1:])
        return cls(
            pipelining="PIPELINING" in keywords,
            size="SIZE" in keywords,
            max_size=max_size,
            eight_bit_mime="8BITMIME" in keywords,
            smtputf8="SMTPUTF8" in keywords,
            starttls="STARTTLS" in keywords,
            enhanced_status_codes="ENHANCEDSTATUSCODES" in keywords,
            auth_mechanisms=frozenset(mechanisms),
            keywords=frozenset(keywords),
        )


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Greeted:
    """The server's 2xx greeting arrived; EHLO is queued."""

    reply: Reply


@dataclass(frozen=True)
class StartTLSNeeded:
    """
    The server accepted STARTTLS.  Start the TLS handshake on the transport now (plaintext that
    came after the server's reply is already discarded, RFC 3207 §4.2), then call
    L{SMTPClientEngine.tls_started}, or L{SMTPClientEngine.abort} if the handshake fails.
    """


@dataclass(frozen=True)
class TLSUnavailable:
    """
    The TLS policy is ``required``/``verify`` and the server did not offer STARTTLS (``reply`` is a
    local 450 4.7.4) or refused it (``reply`` is the server's).  QUIT is queued and the engine is
    closed: write L{SMTPClientEngine.data_to_send}, close, and defer the mail.
    """

    reply: Reply


@dataclass(frozen=True)
class Ready:
    """The session can take a transaction: call L{SMTPClientEngine.send_message} or quit()."""


@dataclass(frozen=True)
class DataReady:
    """The server said 354: feed the content with body_chunk() and finish it with end_body()."""


@dataclass(frozen=True)
class RecipientResult:
    """
    What became of one recipient.

    ``local`` is True when the engine made the reply up (a message the server could not take, a
    connection lost or a protocol error) and False when the server said it.
    """

    recipient: str
    reply: Reply
    local: bool = False

    @property
    def delivered(self) -> bool:
        """The server took responsibility for the message (RFC 5321 §4.2.1, 2yz)."""
        return self.reply.code // 100 == 2

    @property
    def permanent(self) -> bool:
        """A 5yz failure: bounce.  Anything else that is not delivered: try again later."""
        return self.reply.code // 100 == 5


@dataclass(frozen=True)
class TransactionResult:
    """
    The end of one L{SMTPClientEngine.send_message}, one result per recipient, in order.

    RFC 5321 §4.1.1.4: the reply to the final "." (or a refusal of DATA) applies to every
    recipient that RCPT accepted; a refused RCPT keeps its own reply; a refused MAIL applies to
    all.  ``data_reply`` is the reply to the final "." or the refusal of DATA (or the 421/local
    failure that took their place), None when the transaction ended before DATA.
    """

    sender: str
    recipients: tuple[RecipientResult, ...]
    data_reply: Reply | None = None


@dataclass(frozen=True)
class SessionFailed:
    """
    The session is over: greeting refused, EHLO and HELO refused, AUTH impossible or refused,
    RSET refused, a 421 (RFC 5321 §3.8), a malformed or over-long reply, or abort().  ``reply``
    is the server's reply, if one caused it (its code says whether to defer or bounce).  A
    transaction in progress was reported first in a L{TransactionResult}.  The engine is closed:
    write L{SMTPClientEngine.data_to_send} (it may hold a polite QUIT) and close.
    """

    reply: Reply | None
    reason: str


@dataclass(frozen=True)
class Closed:
    """The server answered QUIT (``reply``) or closed the connection after it (None)."""

    reply: Reply | None


Event: TypeAlias = (
    Greeted
    | StartTLSNeeded
    | TLSUnavailable
    | Ready
    | DataReady
    | TransactionResult
    | SessionFailed
    | Closed
)


# -- states ---------------------------------------------------------------------------------------


class State(enum.Enum):
    """What the engine waits for: a reply to a command, or (READY, TLS, BODY) the adapter."""

    GREETING = "greeting"  # the server's 220
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    TLS = "tls"  # the adapter's TLS handshake
    AUTH = "auth"  # the reply to AUTH, or to one of our answers to its 334 challenges
    READY = "ready"  # the adapter's send_message() or quit()
    MAIL = "mail"
    RCPT = "rcpt"  # (pipelined: the next reply answers a RCPT)
    DATA = "data"  # the reply to DATA
    BODY = "body"  # the adapter's body_chunk()... end_body()
    DOT = "dot"  # the reply to the final "."
    RSET = "rset"
    QUIT = "quit"
    CLOSED = "closed"


# The transition table (h11 `_state.py` style).  Rules:
#
# 1. Each state waits for one thing: the reply to the command it is named after, or an adapter
#    call (TLS: tls_started(); READY: send_message() or quit(); BODY: end_body()).  Replies are
#    matched to commands strictly in order (RFC 2920 §3.2), so with PIPELINING the state names the
#    oldest command still unanswered.
# 2. A cell maps an outcome (the handler's verdict on a reply or call) to the next state.  A missing
#    cell is a bug in this module, never something a server can cause.
# 3. Any state but CLOSED may go to CLOSED, outside the table: a 421 (RFC 5321 §3.8), a malformed
#    reply, a refusal that ends the session, a TLS policy failure, EOF or abort().  QUIT's reply
#    also leads there.  Nothing leaves CLOSED.
# 4. Entering READY emits Ready, entering BODY DataReady, entering TLS StartTLSNeeded.
# 5. A transaction that ends before its final "." (MAIL refused while pipelining, no recipient
#    accepted, DATA refused) goes through RSET; one that ends at the "." (whatever the reply) or
#    with a non-pipelined MAIL refusal leaves nothing open and goes straight to READY
#    (RFC 5321 §4.1.1.5, §3.3).
# 6. With ClientConfig.auth set, the way to READY after the (last) EHLO, or after a refused
#    STARTTLS, goes through AUTH instead; AUTH loops on each 334 challenge (RFC 4954 §4) and leaves
#    for READY on 235.  Unable or refused to authenticate: CLOSED, per rule 3.
_TRANSITIONS: Final[dict[State, dict[str, State]]] = {
    State.GREETING: {"greeted": State.EHLO},
    State.EHLO: {
        "starttls": State.STARTTLS,
        "ready": State.READY,
        "auth": State.AUTH,
        "refused": State.HELO,
    },
    State.HELO: {"ready": State.READY},
    State.STARTTLS: {"accepted": State.TLS, "refused": State.READY, "auth": State.AUTH},
    State.TLS: {"tls_started": State.EHLO},
    State.AUTH: {"challenge": State.AUTH, "accepted": State.READY},
    State.READY: {"send_message": State.MAIL, "refused_locally": State.READY, "quit": State.QUIT},
    State.MAIL: {"accepted": State.RCPT, "refused": State.READY, "refused_pipelined": State.RCPT},
    State.RCPT: {"next": State.RCPT, "data": State.DATA, "none_accepted": State.RSET},
    State.DATA: {"go_ahead": State.BODY, "nobody": State.DOT, "refused": State.RSET},
    State.BODY: {"end_body": State.DOT},
    State.DOT: {"replied": State.READY},
    State.RSET: {"done": State.READY},
    State.QUIT: {},
    State.CLOSED: {},
}

_ENTRY_EVENTS: Final[dict[State, Callable[[], Event]]] = {
    State.READY: Ready,
    State.BODY: DataReady,
    State.TLS: StartTLSNeeded,
}

# RFC 5321 §4.5.3.2 client timeouts.  The RFC names none for EHLO, STARTTLS, RSET and QUIT: they
# get 5 minutes, as MAIL does (Postfix: smtp_helo_timeout, smtp_starttls_timeout, also 300s).
# READY waits for our own adapter, so its value only bounds an idle cached connection; BODY's
# 3 minutes are per data block, i.e. for each write to make progress.
_TIMEOUTS: Final[dict[State, float]] = {
    State.GREETING: 300.0,  # §4.5.3.2.1 initial 220 message
    State.EHLO: 300.0,
    State.HELO: 300.0,
    State.STARTTLS: 300.0,
    State.TLS: 300.0,
    State.AUTH: 300.0,  # RFC 4954 names none; Postfix waits smtp_helo_timeout
    State.READY: 300.0,
    State.MAIL: 300.0,  # §4.5.3.2.2 MAIL command
    State.RCPT: 300.0,  # §4.5.3.2.3 RCPT command
    State.DATA: 120.0,  # §4.5.3.2.4 DATA initiation
    State.BODY: 180.0,  # §4.5.3.2.5 data block
    State.DOT: 600.0,  # §4.5.3.2.6 DATA termination
    State.RSET: 300.0,
    State.QUIT: 300.0,
    State.CLOSED: 0.0,
}

# Reply limits: RFC 5321 §4.5.3.1.5 allows 512 octets a line; we take eight times that, and a
# hundred lines (an EHLO reply has about ten), before calling the server broken.
MAX_REPLY_LINE: Final = 4096
MAX_REPLY_LINES: Final = 100

# RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ]
# CRLF, the code 2-5 then two digits (1yz is never used in SMTP).
_REPLY_LINE: Final = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)
# RFC 2034 §4 / RFC 3463 §2: an enhanced code, then a space (or nothing), opens the text.
_ENHANCED_PREFIX: Final = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)", re.ASCII)

_QUIT: Final = b"QUIT\r\n"


def _parse_reply(code: int, lines: list[str]) -> Reply:
    """A reply from its lines' texts, with the enhanced code taken out of every line that has it."""
    enhanced: str | None = None
    match = _ENHANCED_PREFIX.match(lines[0])
    # RFC 3463 §2: the class must agree with the reply code; if it does not, it is just text.
    if match is not None and match.group(1)[0] == str(code)[0]:
        enhanced = match.group(1)
        lines = [_strip_enhanced(line, enhanced) for line in lines]
    return Reply(code, enhanced, lines[0] if len(lines) == 1 else tuple(lines))


def _strip_enhanced(line: str, enhanced: str) -> str:
    if line == enhanced:
        return ""
    if line.startswith(enhanced + " "):
        return line[len(enhanced) + 1 :]
    return line


@dataclass
class _Transaction:
    """One send_message() while it is in progress."""

    sender: str
    recipients: tuple[str, ...]
    pipelined: bool
    mail_reply: Reply | None = None
    rcpt_replies: list[Reply] = field(default_factory=list)

    @property
    def mail_accepted(self) -> bool:
        return self.mail_reply is not None and self.mail_reply.code // 100 == 2

    @property
    def any_accepted(self) -> bool:
        return self.mail_accepted and any(r.code // 100 == 2 for r in self.rcpt_replies)

    def rcpt_command(self, index: int) -> bytes:
        return f"RCPT TO:<{self.recipients[index]}>\r\n".encode()


class SMTPClientEngine:
    """
    One SMTP client session, without I/O.

    The adapter: after every C{receive_data(bytes_from_server)} and every call of its own
    (send_message, end_body, abort... may queue events too: a message refused locally is reported
    at once), take events from L{next_event} until L{NEED_DATA}, acting on each as its docstring
    says (calling back into the engine from there is fine), then write L{data_to_send} to the
    transport.  Re-arm one timer with L{timeout_for_state} after each such round; when it fires,
    call L{abort}.  On connection loss call C{receive_data(b"")}.

    Misusing the API (send_message() when not Ready, body_chunk() before DataReady...) raises
    RuntimeError or ValueError; nothing the server sends makes the engine raise.
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._state = State.GREETING
        self._tls_active = config.tls_active
        self._extensions = Extensions()
        self._buffer = bytearray()
        self._lines: list[str] = []  # the texts of the reply being read, so far
        self._code = 0  # and its code
        self._events: deque[Event] = deque()
        self._outgoing: list[bytes] = []
        self._transaction: _Transaction | None = None
        self._held: deque[Reply] = deque()  # replies that came during message content
        # AUTH LOGIN: our base64 answers to the server's next 334 challenges, in order.
        self._auth_answers: deque[bytes] = deque()
        # Message content, while in BODY.
        self._line_start = True  # the next content byte starts a line
        self._tail = b""  # the last two content bytes

    # -- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def extensions(self) -> Extensions:
        """What the last EHLO reply offered (nothing before it, after HELO, or right after TLS)."""
        return self._extensions

    def timeout_for_state(self) -> float:
        """
        Seconds the adapter should wait in the current state before calling L{abort}.

        RFC 5321 §4.5.3.2: 5 minutes for the greeting, MAIL and RCPT, 2 for the reply to DATA, 3 for
        each block of message content to be written, 10 for the reply to the final ".".
        """
        return _TIMEOUTS[self._state]

    # -- input and output -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server; C{b""} means the server closed the connection."""
        if self._state is State.CLOSED:
            return
        if not data:
            self.abort("connection closed by the server")
            return
        if self._state is State.TLS:
            # RFC 3207 §4.2: nothing that comes in the clear after the server's "220" counts
            # (a reply injected there would be read as said under TLS).
            return
        self._buffer += data

    def data_to_send(self) -> bytes:
        """The bytes queued for the server since the last call."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def next_event(self) -> Event | NeedData:
        """The next event, or L{NEED_DATA}: more bytes or an adapter call are needed."""
        while not self._events and self._step():
            pass
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    # -- adapter calls ----------------------------------------------------------------------------

    def tls_started(self) -> None:
        """
        The TLS handshake after L{StartTLSNeeded} succeeded: forget what the server offered in the
        clear and say EHLO again (RFC 3207 §4.2).
        """
        if self._state is State.CLOSED:
            return
        if self._state is not State.TLS:
            raise RuntimeError("tls_started() without a StartTLSNeeded event")
        self._tls_active = True
        self._extensions = Extensions()
        self._buffer.clear()
        self._send(f"EHLO {self.config.helo_name}\r\n".encode("ascii"))
        self._go("tls_started")

    def send_message(
        self,
        sender: str,
        recipients: Sequence[str],
        size: int,
        body_8bit: bool = False,
        smtputf8: bool = False,
    ) -> None:
        """
        Start one transaction; only after L{Ready}.  The result comes as a L{TransactionResult}.

        ``sender`` is "" for the null reverse-path; ``size`` is the content's size in octets before
        dot-stuffing (RFC 1870 §3), sent as SIZE= when the server offers SIZE.  A message larger
        than the server's SIZE limit is not sent: every recipient gets a local 552 5.3.4
        (RFC 1870 §6.1).

        ``body_8bit``: sent as BODY=8BITMIME when the server offers 8BITMIME (RFC 6152 §3).  An
        8-bit message goes to a server without 8BITMIME as it is, unconverted, as Postfix does by
        default: the content's bytes are never changed here.

        ``smtputf8``: the envelope or headers need SMTPUTF8.  Sent as SMTPUTF8 when offered;
        when not, the message is not sent and every recipient gets a local 553 5.6.7
        (RFC 6531 §3.2: such a message must not go to a server without SMTPUTF8).

        With PIPELINING, MAIL, every RCPT and DATA go in one write (RFC 2920 §3.1); without it,
        one command per reply.
        """
        if self._state is not State.READY:
            raise RuntimeError(f"send_message() in state {self._state.name}, not READY")
        recipients = tuple(recipients)
        if not recipients:
            raise ValueError("a message needs at least one recipient")
        for address in (sender, *recipients):
            if _CONTROL.search(address):
                raise ValueError(f"control character in address {address!r}")
        if any(not recipient for recipient in recipients):
            raise ValueError("empty recipient address")
        if size < 0:
            raise ValueError("size must not be negative")
        ext = self._extensions
        refusal: Reply | None = None
        if smtputf8 and not ext.smtputf8:
            refusal = Reply(
                553,
                "5.6.7",
                "Strata: SMTPUTF8 is required, but was not offered by the server; message not sent",
            )
        elif ext.max_size is not None and size > ext.max_size:
            refusal = Reply(
                552,
                "5.3.4",
                f"Strata: message size {size} exceeds the server's fixed maximum message size "
                f"{ext.max_size}; message not sent",
            )
        if refusal is not None:
            results = tuple(RecipientResult(r, refusal, local=True) for r in recipients)
            self._events.append(TransactionResult(sender, results, None))
            self._go("refused_locally")
            return
        params = ""
        if ext.size:
            params += f" SIZE={size}"
        if body_8bit and ext.eight_bit_mime:
            params += " BODY=8BITMIME"
        if smtputf8:
            params += " SMTPUTF8"
        # RFC 6531 §3.3: with SMTPUTF8 the addresses are UTF-8; without it they should be ASCII,
        # and if they are not, the server's refusal says so.
        mail = f"MAIL FROM:<{sender}>{params}\r\n".encode()
        tx = _Transaction(sender, recipients, pipelined=ext.pipelining)
        self._transaction = tx
        if tx.pipelined:
            commands = [mail] + [tx.rcpt_command(i) for i in range(len(recipients))]
            self._send(b"".join(commands) + b"DATA\r\n")
        else:
            self._send(mail)
        self._go("send_message")

    def body_chunk(self, data: bytes) -> None:
        """
        Message content, in pieces of any size cut anywhere.  Ignored once the engine is closed.

        RFC 5321 §4.5.2: a line that begins with "." gets one more "." in front.  A line begins at
        the start of the content and after every LF, bare or not: the server's intake turns a bare
        LF into CRLF, and a receiver that counts a bare LF as a line end must not see a lone "."
        there as the end of the data (SMTP smuggling).  Nothing else changes: CRLF stays CRLF, a
        bare CR or LF passes through as it is.
        """
        if self._state is State.CLOSED:
            return
        if self._state is not State.BODY:
            raise RuntimeError(f"body_chunk() in state {self._state.name}, not after DataReady")
        if not data:
            return
        out = data.replace(b"\n.", b"\n..")
        if self._line_start and data[:1] == b".":
            out = b"." + out
        self._outgoing.append(out)
        self._line_start = data[-1:] == b"\n"
        self._tail = (self._tail + data[-2:])[-2:]

    def end_body(self) -> None:
        """
        The content is complete: end it with CRLF "." CRLF (RFC 5321 §4.1.1.4).

        The CRLF before the "." is added only when the content does not already end with one, so
        content that ends in CRLF arrives unchanged.  Empty content is sent as just ".": it arrives
        empty.  Ignored once the engine is closed.
        """
        if self._state is State.CLOSED:
            return
        if self._state is not State.BODY:
            raise RuntimeError(f"end_body() in state {self._state.name}, not after DataReady")
        if self._tail in (b"", b"\r\n"):
            self._send(b".\r\n")
        else:
            self._send(b"\r\n.\r\n")
        self._go("end_body")

    def quit(self) -> None:
        """Say QUIT (only when L{Ready}); L{Closed} follows.  Ignored once the engine is closed."""
        if self._state is State.CLOSED:
            return
        if self._state is not State.READY:
            raise RuntimeError(f"quit() in state {self._state.name}, not READY")
        self._send(_QUIT)
        self._go("quit")

    def abort(self, reason: str) -> None:
        """
        The adapter gives up on the session: a timeout, a failed TLS handshake, a lost connection.

        A transaction in progress is reported with a local 451 4.4.2 for every recipient not
        already refused, even after the final "." was sent: the server may have taken the message,
        and a duplicate is better than a loss (RFC 5321 §6.1).  Then L{SessionFailed}, or
        L{Closed} if QUIT was already said.
        """
        if self._state is State.CLOSED:
            return
        if self._state is State.QUIT:
            self._events.append(Closed(None))
            self._close()
            return
        self._fail(None, reason)

    # -- replies ----------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one reply if there is one; False when nothing can happen without more input."""
        if self._state in (State.CLOSED, State.TLS):
            return False
        if self._state is State.DOT and self._held:
            self._on_reply(self._held.popleft())
            return True
        reply = self._read_reply()
        if reply is None:
            return False
        if isinstance(reply, str):
            self._fail(None, reply, enhanced="4.5.0")
        else:
            self._on_reply(reply)
        return True

    def _read_reply(self) -> Reply | str | None:
        """The next whole reply, None if it is not all here yet, or what is wrong with it."""
        buf = self._buffer
        while True:
            end = buf.find(b"\n", 0, MAX_REPLY_LINE + 2)
            if end < 0:
                if len(buf) > MAX_REPLY_LINE + 1:
                    return f"reply line longer than {MAX_REPLY_LINE} octets"
                return None
            line = bytes(buf[:end])
            del buf[: end + 1]
            # RFC 5321 §2.3.8 wants CRLF; a bare LF is tolerated.
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_REPLY_LINE:
                return f"reply line longer than {MAX_REPLY_LINE} octets"
            match = _REPLY_LINE.fullmatch(line)
            if match is None:
                return f"malformed reply line {line[:80]!r}"
            code = int(match.group(1))
            if self._lines and code != self._code:
                # RFC 5321 §4.2.1: every line of a multi-line reply has the same code.
                return f"reply code changed from {self._code} to {code} inside a reply"
            self._code = code
            self._lines.append((match.group(3) or b"").decode("utf-8", "replace"))
            if len(self._lines) > MAX_REPLY_LINES:
                return f"reply longer than {MAX_REPLY_LINES} lines"
            if match.group(2) != b"-":
                lines = self._lines
                self._lines = []
                return _parse_reply(code, lines)

    def _on_reply(self, reply: Reply) -> None:
        state = self._state
        positive = reply.code // 100 == 2
        if reply.code == 421 and state is not State.QUIT:
            # RFC 5321 §3.8: the server is closing the connection, at any point.
            self._fail(reply, "the server is closing the connection (421)")
            return
        match state:
            case State.GREETING:
                # RFC 5321 §3.1: 220 greets; 554 (or anything else) refuses, and the client
                # should say QUIT.  Any 2xx is taken, as Postfix does.
                if positive:
                    self._events.append(Greeted(reply))
                    self._send(f"EHLO {self.config.helo_name}\r\n".encode("ascii"))
                    self._go("greeted")
                else:
                    self._fail(reply, "the server refused the session", polite=True)
            case State.EHLO:
                if positive:
                    self._extensions = Extensions.from_ehlo(reply)
                    self._after_hello()
                elif reply.code // 100 == 5:
                    # RFC 5321 §3.2: a server that does not know EHLO answers 5xx; try HELO.
                    self._send(f"HELO {self.config.helo_name}\r\n".encode("ascii"))
                    self._go("refused")
                else:
                    self._fail(reply, "the server refused EHLO", polite=True)
            case State.HELO:
                if positive:
                    self._extensions = Extensions()
                    self._after_hello()
                else:
                    self._fail(reply, "the server refused EHLO and HELO", polite=True)
            case State.STARTTLS:
                if positive:
                    # RFC 3207 §4.2: what the server sent after its reply, in the clear, is not
                    # part of the TLS session.
                    self._buffer.clear()
                    self._lines = []
                    self._go("accepted")
                elif self.config.tls in _MUST_TLS:
                    self._tls_unavailable(reply)
                else:
                    # RFC 3207 §4: the client decides; opportunistic TLS carries on in plaintext
                    # (and AUTH, if configured, will not, unless auth_plaintext allows it).
                    self._authenticate_or_ready("refused")
            case State.AUTH:
                self._auth_reply(reply)
            case State.READY:
                self._fail(reply, "unexpected reply while no command was pending")
            case State.RSET:
                if positive:
                    self._go("done")
                else:
                    self._fail(reply, "the server refused RSET")
            case State.BODY:
                # A reply before the final "." (RFC 5321 §4.1.1.4 has none).  A refusal is kept
                # as the answer to the "." once it is sent; success for content not yet all sent,
                # or a second reply, is a broken server, and must not count as delivery.
                if positive or self._held:
                    self._fail(None, "unexpected reply during message content", enhanced="4.5.0")
                else:
                    self._held.append(reply)
            case State.QUIT:
                self._events.append(Closed(reply))
                self._close()
            case State.MAIL | State.RCPT | State.DATA | State.DOT:
                self._transaction_reply(reply)
            case State.TLS | State.CLOSED:  # pragma: no cover - _step reads nothing here
                pass

    def _after_hello(self) -> None:
        """EHLO or HELO succeeded: STARTTLS, Ready, or TLSUnavailable, as the policy says."""
        tls = self.config.tls
        if self._tls_active or tls == "none":
            self._authenticate_or_ready("ready")
        elif self._extensions.starttls:
            # RFC 2920 §3.1: STARTTLS is not pipelined; it waits for its reply.
            self._send(b"STARTTLS\r\n")
            self._go("starttls")
        elif tls in _MUST_TLS:
            self._tls_unavailable(
                Reply(450, "4.7.4", "Strata: TLS is required, but was not offered by the server")
            )
        else:
            self._authenticate_or_ready("ready")

    # -- AUTH (RFC 4954) --------------------------------------------------------------------------

    def _authenticate_or_ready(self, outcome: str) -> None:
        """
        The session is as secure as it will get: go Ready (by ``outcome``), or first say AUTH.

        PLAIN goes with its initial response (RFC 4954 §4, RFC 4616 §2: NUL user NUL password, no
        authorization identity); LOGIN, if PLAIN is not offered, answers two 334 challenges with
        the username and then the password.  Nothing secret is queued before both checks pass.
        """
        auth = self.config.auth
        if auth is None:
            self._go(outcome)
            return
        if not self._tls_active and not self.config.auth_plaintext:
            self._fail(None, "refusing to send credentials without TLS", polite=True)
            return
        username, password = (part.encode("utf-8") for part in auth)
        mechanisms = self._extensions.auth_mechanisms
        if "PLAIN" in mechanisms:
            initial = base64.b64encode(b"\0" + username + b"\0" + password)
            self._send(b"AUTH PLAIN " + initial + b"\r\n")
        elif "LOGIN" in mechanisms:
            self._auth_answers.extend(
                base64.b64encode(part) + b"\r\n" for part in (username, password)
            )
            self._send(b"AUTH LOGIN\r\n")
        else:
            self._fail(None, "smarthost offers no AUTH mechanism we support", polite=True)
            return
        self._go("auth")

    def _auth_reply(self, reply: Reply) -> None:
        """
        A reply to AUTH or to one of our answers: 334 asks for the next answer, 2xx (235) means
        logged in, 4xx and 5xx end the session.  The texts here never quote what we sent.
        """
        klass = reply.code // 100
        if reply.code == 334 and self._auth_answers:
            # The challenge text ("Username:", "Password:" in base64) is not checked: servers
            # word it differently, and the order is what the mechanism fixes.
            self._send(self._auth_answers.popleft())
            self._go("challenge")
        elif klass == 2:
            self._auth_answers.clear()
            self._go("accepted")
        elif klass == 3:
            # A challenge we have no answer for; RFC 4954 §4: "*" cancels the exchange.
            self._send(b"*\r\n")
            self._fail(reply, "smarthost authentication failed: unexpected challenge", polite=True)
        elif klass == 4:
            self._fail(
                reply, "smarthost authentication failed temporarily; will try again", polite=True
            )
        else:
            # 535 5.7.8 (RFC 4954 §6) and every other 5xx: retrying with the same credentials
            # cannot help.
            self._fail(
                reply,
                "smarthost authentication failed permanently: the credentials were refused",
                polite=True,
            )

    def _transaction_reply(self, reply: Reply) -> None:
        tx = self._transaction
        assert tx is not None  # MAIL, RCPT, DATA and DOT only come with a transaction
        positive = reply.code // 100 == 2
        match self._state:
            case State.MAIL:
                tx.mail_reply = reply
                if positive:
                    if not tx.pipelined:
                        self._send(tx.rcpt_command(0))
                    self._go("accepted")
                elif tx.pipelined:
                    # The RCPTs and DATA already sent get their replies (503s) in turn.
                    self._go("refused_pipelined")
                else:
                    # RFC 5321 §4.1.4: a refused MAIL opens no transaction; nothing to RSET.
                    self._finish(reply, None, "refused")
            case State.RCPT:
                tx.rcpt_replies.append(reply)
                done = len(tx.rcpt_replies)
                if done < len(tx.recipients):
                    if not tx.pipelined:
                        self._send(tx.rcpt_command(done))
                    self._go("next")
                elif tx.pipelined or tx.any_accepted:
                    if not tx.pipelined:
                        self._send(b"DATA\r\n")
                    self._go("data")
                else:
                    self._finish(reply, None, "none_accepted")
            case State.DATA:
                if reply.code // 100 == 3:
                    if tx.any_accepted:
                        self._line_start = True
                        self._tail = b""
                        self._go("go_ahead")
                    else:
                        # RFC 2920 §3.1: DATA accepted with no valid recipient (a server that
                        # should have said 554): send an empty message, whose reply is a refusal.
                        self._send(b".\r\n")
                        self._go("nobody")
                else:
                    # After a refused MAIL (pipelined) the DATA refusal is just a 503: noise.
                    self._finish(reply, reply if tx.mail_accepted else None, "refused")
            case State.DOT:
                self._finish(reply, reply, "replied")
            case _:  # pragma: no cover - _on_reply sends only the four states above
                pass

    def _finish(self, final: Reply, data_reply: Reply | None, outcome: str) -> None:
        """Report the transaction and move on, through RSET if the outcome leads there."""
        self._report(final, data_reply, local=False)
        if _TRANSITIONS[self._state][outcome] is State.RSET:
            self._send(b"RSET\r\n")
        self._go(outcome)

    def _report(self, final: Reply, data_reply: Reply | None, *, local: bool) -> None:
        """The TransactionResult: ``final`` for every recipient neither MAIL nor RCPT refused."""
        tx = self._transaction
        assert tx is not None
        self._transaction = None
        self._held.clear()
        results: list[RecipientResult] = []
        for index, recipient in enumerate(tx.recipients):
            if tx.mail_reply is not None and not tx.mail_accepted:
                results.append(RecipientResult(recipient, tx.mail_reply))
            elif index < len(tx.rcpt_replies) and tx.rcpt_replies[index].code // 100 != 2:
                results.append(RecipientResult(recipient, tx.rcpt_replies[index]))
            else:
                results.append(RecipientResult(recipient, final, local))
        self._events.append(TransactionResult(tx.sender, tuple(results), data_reply))

    # -- failures ---------------------------------------------------------------------------------

    def _tls_unavailable(self, reply: Reply) -> None:
        self._events.append(TLSUnavailable(reply))
        self._send(_QUIT)
        self._close()

    def _fail(
        self, reply: Reply | None, reason: str, *, polite: bool = False, enhanced: str = "4.4.2"
    ) -> None:
        """End the session; report a transaction in progress with ``reply`` or a local 451."""
        if self._transaction is not None:
            final = reply or Reply(451, enhanced, f"Strata: {reason}")
            after_data = self._state in (State.DATA, State.BODY, State.DOT)
            self._report(final, final if after_data else None, local=reply is None)
        self._events.append(SessionFailed(reply, reason))
        if polite:
            self._send(_QUIT)
        self._close()

    # -- helpers ----------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._outgoing.append(data)

    def _go(self, outcome: str) -> None:
        self._state = _TRANSITIONS[self._state][outcome]
        entry = _ENTRY_EVENTS.get(self._state)
        if entry is not None:
            self._events.append(entry())

    def _close(self) -> None:
        self._state = State.CLOSED
        self._transaction = None
        self._buffer.clear()
        self._lines = []
        self._held.clear()
        self._auth_answers.clear()
