# -*- test-case-name: tests.test_proto_smtp_server -*-
"""
The ESMTP server as a sans-IO engine: bytes in, events out; replies in, bytes out.

The adapter feeds what the peer sent to L{SMTPServerEngine.receive_data}, takes events from
L{SMTPServerEngine.next_event} until it gets L{NEED_DATA}, answers the events that need an answer
with L{SMTPServerEngine.respond}, and writes L{SMTPServerEngine.data_to_send} to the peer.  The
engine answers everything that needs no policy itself (NOOP, RSET, syntax and sequence errors).

Extensions: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), ENHANCEDSTATUSCODES
(RFC 2034, RFC 3463), SMTPUTF8 (RFC 6531), STARTTLS (RFC 3207) and, when mechanisms are configured,
AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.  The engine runs the SASL exchange
and decodes the credentials; checking them is the adapter's job (L{Auth}).  For a client the
adapter trusts (the webmail), XCLIENT ADDR (Postfix's XCLIENT_README) names the end user's
address (L{XClient}).

This module must never touch a socket, a reactor, a clock or a store, and it must never raise on
anything a peer sends: every byte sequence ends in an event, a reply, or a wait for more bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from strata_twisted.proto.smtp_reply import Reply

__all__ = [
    "AUTH_MECHANISMS",
    "NEED_DATA",
    "Auth",
    "DataAborted",
    "DataChunk",
    "DataEnd",
    "DataStart",
    "Event",
    "Hello",
    "MailFrom",
    "NeedData",
    "Quit",
    "RcptTo",
    "Refused",
    "Reset",
    "SMTPServerEngine",
    "ServerLimits",
    "StartTLS",
    "State",
    "XClient",
]


@dataclass(frozen=True)
class ServerLimits:
    """What one session may send before the engine refuses it."""

    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    # Octets of one command line, its CRLF not counted; longer ones get 500 5.5.2.  Message
    # content has no line limit: this is also how much of an unfinished content line is held
    # before it is handed on (SASL responses may always be 12288 octets, RFC 4954 §4).
    max_command_line_length: int = 8192
    max_errors: int = 20  # then 421 4.7.0 and close

    def __post_init__(self) -> None:
        if self.max_message_size < 0:
            raise ValueError("max_message_size must not be negative")
        for name in ("max_recipients", "max_command_line_length", "max_errors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


_DEFAULT_LIMITS: Final = ServerLimits()


class NeedData(enum.Enum):
    """The type of L{NEED_DATA}."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by L{SMTPServerEngine.next_event} when it needs more bytes, a response, or is closed."""


# Events.  "Needs respond": the engine parses nothing further until respond() answers it.


@dataclass(frozen=True)
class Hello:
    """EHLO or HELO.  Needs respond; a positive answer ends any open transaction."""

    verb: Literal["EHLO", "HELO"]
    name: str


@dataclass(frozen=True)
class MailFrom:
    """MAIL FROM.  Needs respond.  ``sender`` is "" for the null reverse-path ``<>``."""

    sender: str
    size: int | None = None
    body: Literal["7BIT", "8BITMIME"] | None = None
    smtputf8: bool = False
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RcptTo:
    """RCPT TO.  Needs respond; only positively answered recipients count."""

    recipient: str
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class DataStart:
    """DATA with at least one accepted recipient.  Needs respond (default 354)."""


@dataclass(frozen=True)
class Auth:
    """
    A complete AUTH exchange (RFC 4954 §4), its credentials decoded.  Needs respond.

    The default answer is C{235 2.7.0 Authentication successful} and makes the session
    authenticated; pass ``user=`` to L{SMTPServerEngine.respond} to record the identity the
    adapter confirmed.  A 4xx/5xx answer (C{535 5.7.8}, C{454 4.7.0}) leaves it unauthenticated.
    ``authzid`` is "" when the client asked for no other identity (always, for LOGIN).
    """

    mechanism: Literal["PLAIN", "LOGIN"]
    authzid: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class DataChunk:
    """
    Message content: dot-unstuffed, every line ending in CRLF.  No respond.

    Chunks are cut where the input was: a chunk may end inside a long line, which the next one
    continues.  Content lines may be of any length (the line limit is for commands only).
    """

    data: bytes


@dataclass(frozen=True)
class DataEnd:
    """The final "." arrived and the message is whole.  Needs respond, with an explicit reply."""


@dataclass(frozen=True)
class DataAborted:
    """The engine refused the message at the final "."; ``reply`` is already queued.  No respond."""

    reply: Reply


@dataclass(frozen=True)
class Refused:
    """
    The engine refused a MAIL or RCPT for one of its limits: a declared SIZE over
    ``max_message_size`` (552), a recipient past ``max_recipients`` (452).  ``reply`` is already
    queued; ``argument`` is the command's argument as sent.  No respond: it is there so the
    adapter can log what was refused, and why.
    """

    command: Literal["MAIL", "RCPT"]
    argument: str
    reply: Reply


@dataclass(frozen=True)
class Reset:
    """RSET: 250 is already queued; drop the transaction.  No respond."""


@dataclass(frozen=True)
class StartTLS:
    """
    STARTTLS: 220 is already queued and input buffered after the command was discarded.

    Any open transaction is over (RFC 3207 §4.2): drop its sender and recipients.  Write the
    pending bytes, start TLS, then call L{SMTPServerEngine.tls_started}.  No respond.
    """


@dataclass(frozen=True)
class XClient:
    """
    XCLIENT ADDR=... from a client allowed to send it (Postfix's XCLIENT_README): the end user's
    address, as an IP address text, or None for ``[UNAVAILABLE]``/``[TEMPUNAVAIL]``.  The 220
    greeting is queued afresh and the session is as after connect (EHLO again); drop the
    transaction and the HELO name.  No respond.
    """

    address: str | None


@dataclass(frozen=True)
class Quit:
    """QUIT: 221 is queued and the engine is closed.  Write the pending bytes and close."""


Event: TypeAlias = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | Auth
    | DataChunk
    | DataEnd
    | DataAborted
    | Refused
    | Reset
    | StartTLS
    | Quit
    | XClient
)
_Answerable: TypeAlias = Hello | MailFrom | RcptTo | DataStart | DataEnd | Auth

AUTH_MECHANISMS: Final = ("PLAIN", "LOGIN")
"""The SASL mechanisms the engine can run, for the C{auth_mechanisms} option."""


class State(enum.Enum):
    """Where the session is (RFC 5321 §3.3: a mail transaction is MAIL, RCPT..., DATA)."""

    CONNECTED = "connected"  # no HELO/EHLO yet (also right after STARTTLS, RFC 3207 §4.2)
    GREETED = "greeted"  # HELO/EHLO accepted, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient accepted yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading message content up to the final "."
    CLOSED = "closed"


# Replies the engine gives on its own.
_OK: Final = Reply(250, "2.0.0", "Ok")
_MAIL_OK: Final = Reply(250, "2.1.0", "Ok")
_RCPT_OK: Final = Reply(250, "2.1.5", "Ok")
_START_DATA: Final = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
_BYE: Final = Reply(221, "2.0.0", "Bye")
_READY_FOR_TLS: Final = Reply(220, "2.0.0", "Ready to start TLS")
_HELP: Final = Reply(214, "2.0.0", "Strata ESMTP, see RFC 5321")
# RFC 5321 §3.5.3: 252 when the server cannot verify but will accept and attempt delivery.
_CANNOT_VRFY: Final = Reply(
    252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"
)

_NEED_HELO: Final = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
_NEED_MAIL: Final = Reply(503, "5.5.1", "Error: need MAIL command")
_NEED_RCPT: Final = Reply(503, "5.5.1", "Error: need RCPT command")
_NESTED_MAIL: Final = Reply(503, "5.5.1", "Error: nested MAIL command")
_IN_TRANSACTION: Final = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
_TLS_ACTIVE: Final = Reply(503, "5.5.1", "Error: TLS already active")
# RFC 5321 §3.3 / RFC 2920 §3.1: DATA after every RCPT failed gets 554 (or 503), never 354.
_NO_VALID_RCPT: Final = Reply(554, "5.5.1", "Error: no valid recipients")

_BAD_SYNTAX: Final = Reply(500, "5.5.2", "Error: bad syntax")
_LINE_TOO_LONG: Final = Reply(500, "5.5.2", "Error: line too long")
_NOT_RECOGNIZED: Final = Reply(500, "5.5.2", "Error: command not recognized")
_NOT_IMPLEMENTED: Final = Reply(502, "5.5.1", "Error: command not implemented")
_MAIL_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
_RCPT_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
_BAD_SENDER: Final = Reply(501, "5.1.7", "Bad sender address syntax")
_BAD_RECIPIENT: Final = Reply(501, "5.1.3", "Bad recipient address syntax")
_BAD_PARAMETER: Final = Reply(501, "5.5.4", "Bad parameter syntax")
_BAD_SIZE: Final = Reply(501, "5.5.4", "Bad SIZE parameter")
# RFC 1870 §6.1: a declared SIZE above the fixed maximum gets 552.
_SIZE_EXCEEDED: Final = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
# RFC 5321 §4.5.3.1.10: 452 for too many recipients (the client sends the rest later).
_TOO_MANY_RCPTS: Final = Reply(452, "4.5.3", "Error: too many recipients")
_MESSAGE_TOO_BIG: Final = Reply(552, "5.3.4", "Error: message file too big")
# RFC 4954 §6 and §4.
_AUTH_OK: Final = Reply(235, "2.7.0", "Authentication successful")
_AUTH_REQUIRED: Final = Reply(530, "5.7.0", "Authentication required")
_ENCRYPTION_REQUIRED: Final = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
_ALREADY_AUTHENTICATED: Final = Reply(503, "5.5.1", "Error: already authenticated")
_UNKNOWN_MECHANISM: Final = Reply(504, "5.5.4", "Unrecognized authentication type")
_CANNOT_DECODE: Final = Reply(501, "5.5.2", "Cannot decode response")
_AUTH_CANCELLED: Final = Reply(501, "5.0.0", "Authentication cancelled")
_AUTH_LINE_TOO_LONG: Final = Reply(500, "5.5.6", "Authentication Exchange line is too long")
_BAD_AUTH_PARAMETER: Final = Reply(501, "5.5.4", "Bad AUTH parameter")
# Postfix's XCLIENT replies (XCLIENT_README; smtpd's texts).
_XCLIENT_REFUSED: Final = Reply(550, "5.7.0", "Error: insufficient authorization")
_XCLIENT_AFTER_AUTH: Final = Reply(503, "5.5.1", "Error: XCLIENT not allowed after AUTH")


def _syntax(usage: str) -> Reply:
    return Reply(501, "5.5.4", f"Syntax: {usage}")


def _unsupported(keyword: str) -> Reply:
    # RFC 5321 §4.1.1.11: 555 for a MAIL/RCPT parameter that is not recognized or not implemented.
    return Reply(555, "5.5.4", f"Unsupported option: {keyword}")


# The command table (h11 `_state.py` style).  Rules:
#
# 1. Commands are read in CONNECTED, GREETED, MAIL and RCPT only.  In DATA the input is message
#    content up to the final "."; in CLOSED nothing is read.
# 2. A cell holding a State: the command is allowed here and leads there.  Commands the engine
#    answers itself move at once; commands that need respond() move only on a positive (2xx/3xx)
#    answer, and any other answer leaves the state as it was (RFC 5321 §4.1.4: a rejected command
#    changes nothing).
# 3. A cell holding a Reply: the command is out of sequence here; that reply is sent and nothing
#    changes (RFC 5321 §4.1.4, 503 "bad sequence of commands").
# 4. A verb in no row gets 502 5.5.1 when it is a known SMTP verb we do not implement
#    (_UNIMPLEMENTED), else 500 5.5.2.  AUTH counts as unimplemented, in every state, when the
#    engine has no auth_mechanisms.
# 5. Transitions outside the table: the end of message content leads to GREETED whatever the
#    answer to the final "." (RFC 5321 §4.1.1.4: the transaction is over either way); QUIT, EOF,
#    timeout(), too many errors and any 421 reply lead to CLOSED.
# 6. EHLO/HELO and RSET end any transaction (RFC 5321 §4.1.4, §4.1.1.5).  So does STARTTLS, which
#    leads to CONNECTED from every state it is read in: the server forgets everything said before
#    it and the client must say EHLO again after the handshake (RFC 3207 §4.2).  RFC 3207 does not
#    forbid STARTTLS inside a transaction, and Postfix answers it there with 220 and drops the
#    transaction (smtpd.c starttls_cmd: "RFC 2487 does not forbid the use of STARTTLS while mail
#    transfer is in progress"; Postfix 3.7.11 checked: RCPT after the handshake gets 503).
# 7. AUTH (RFC 4954 §4) is allowed between transactions only.  While its exchange runs, input
#    lines are SASL responses, not commands; the exchange ends in an Auth event or a reply.  A
#    session authenticates once (503 after that) and forgets it at STARTTLS (RFC 3207 §4.2).
# 8. XCLIENT (Postfix's XCLIENT_README) is allowed between transactions, before AUTH, from a
#    client the adapter allows (550 5.7.0 from any other); it leads to CONNECTED with a fresh 220
#    greeting: the client must say EHLO again.
_TRANSITIONS: Final[dict[State, dict[str, State | Reply]]] = {
    State.CONNECTED: {
        "EHLO": State.GREETED,
        "HELO": State.GREETED,
        "MAIL": _NEED_HELO,
        "RCPT": _NEED_MAIL,
        "DATA": _NEED_RCPT,
        "RSET": State.CONNECTED,
        "NOOP": State.CONNECTED,
        "VRFY": State.CONNECTED,
        "HELP": State.CONNECTED,
        "STARTTLS": State.CONNECTED,
        "AUTH": _NEED_HELO,
        "QUIT": State.CLOSED,
        "XCLIENT": State.CONNECTED,
    },
    State.GREETED: {
        "EHLO": State.GREETED,
        "HELO": State.GREETED,
        "MAIL": State.MAIL,
        "RCPT": _NEED_MAIL,
        "DATA": _NEED_RCPT,
        "RSET": State.GREETED,
        "NOOP": State.GREETED,
        "VRFY": State.GREETED,
        "HELP": State.GREETED,
        "STARTTLS": State.CONNECTED,
        "AUTH": State.GREETED,
        "QUIT": State.CLOSED,
        "XCLIENT": State.CONNECTED,
    },
    State.MAIL: {
        "EHLO": State.GREETED,
        "HELO": State.GREETED,
        "MAIL": _NESTED_MAIL,
        "RCPT": State.RCPT,
        "DATA": _NO_VALID_RCPT,
        "RSET": State.GREETED,
        "NOOP": State.MAIL,
        "VRFY": State.MAIL,
        "HELP": State.MAIL,
        "STARTTLS": State.CONNECTED,
        "AUTH": _IN_TRANSACTION,
        "QUIT": State.CLOSED,
        "XCLIENT": _IN_TRANSACTION,
    },
    State.RCPT: {
        "EHLO": State.GREETED,
        "HELO": State.GREETED,
        "MAIL": _NESTED_MAIL,
        "RCPT": State.RCPT,
        "DATA": State.DATA,
        "RSET": State.GREETED,
        "NOOP": State.RCPT,
        "VRFY": State.RCPT,
        "HELP": State.RCPT,
        "STARTTLS": State.CONNECTED,
        "AUTH": _IN_TRANSACTION,
        "QUIT": State.CLOSED,
        "XCLIENT": _IN_TRANSACTION,
    },
}

_UNIMPLEMENTED: Final = frozenset(
    {"EXPN", "AUTH", "BDAT", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"}
)

# Command line: the verb, then its arguments after spaces or tabs.
_COMMAND: Final = re.compile(r"([^ \t]*)[ \t]*(.*)", re.DOTALL)
_MAIL_FROM: Final = re.compile(r"FROM:[ \t]*", re.IGNORECASE | re.ASCII)  # "FROM: <a@b>" too
_RCPT_TO: Final = re.compile(r"TO:[ \t]*", re.IGNORECASE | re.ASCII)

# RFC 5321 §4.1.2 path syntax, widened by RFC 6531 §3.3 to UTF-8 (any non-ASCII code point; the
# surrogates that stand for invalid UTF-8 bytes are left out, so invalid UTF-8 is malformed).
_UTF8: Final = r"\u0080-\ud7ff\ue000-\U0010ffff"  # regex escapes, not characters
# "<" inner ">" rest; a quoted string may hold "<", ">" and escaped quotes.
_PATH: Final = re.compile(r'<((?:[^<>"\\]|"(?:[^"\\]|\\.)*")*)>(.*)', re.DOTALL)
# A-d-l ":" — the obsolete source route, which RFC 5321 §4.1.1.3 says to accept and ignore.
_AT_DOMAIN: Final = r'@(?:\[[^\]]*\]|[^,:@"\[\]]+)'
_SOURCE_ROUTE: Final = re.compile(f"{_AT_DOMAIN}(?:,{_AT_DOMAIN})*:")
# Local-part = Dot-string / Quoted-string.  Dots are not checked further (Postfix accepts "a..b").
_DOT_STRING: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~." + _UTF8 + r"-]+")
_QUOTED_STRING: Final = re.compile(
    r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e' + _UTF8 + r']|\\[\x20-\x7e])*"'
)
# Domain = sub-domain *("." sub-domain); "_" is tolerated, as it is in the wild.
_LABEL: Final = r"[A-Za-z0-9_" + _UTF8 + r"-]+"
_DOMAIN: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS_LITERAL: Final = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")
# RFC 5321 §4.1.2 esmtp-param = esmtp-keyword ["=" esmtp-value]; RFC 6531 §3.3 allows UTF-8 values.
_PARAM: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e" + _UTF8 + r"]+))?")
_SPACES: Final = re.compile(r"[ \t]+")
# RFC 5321 §4.1.1.3: RCPT TO:<Postmaster>, without a domain, names this server's postmaster.
_POSTMASTER: Final = re.compile(r"<(postmaster)>(.*)", re.IGNORECASE | re.ASCII | re.DOTALL)
# A HELO/EHLO name must not carry control characters or invalid UTF-8 (it ends up in headers).
_BAD_NAME: Final = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")
# RFC 3461 §4: xtext = *( xchar / hexchar ), xchar any of "!".."~" but "+" and "=".
_XTEXT: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")
# RFC 4954 §4: a SASL response line may be 12288 octets, more than a command line.
_AUTH_LINE_LENGTH: Final = 12288
# The LOGIN mechanism's prompts (draft-murchison-sasl-login): "Username:", "Password:".
_LOGIN_USERNAME: Final = base64.b64encode(b"Username:").decode("ascii")
_LOGIN_PASSWORD: Final = base64.b64encode(b"Password:").decode("ascii")


class _TooLong(enum.Enum):
    TOO_LONG = "TOO_LONG"


_TOO_LONG: Final = _TooLong.TOO_LONG


def _split_path(text: str) -> tuple[str, str] | None:
    """
    Split ``<path> params`` into the mailbox (source route dropped; "" for ``<>``) and the
    parameter text; None when the path is malformed.
    """
    match = _PATH.match(text)
    if match is None:
        return None
    inner, rest = match.group(1), match.group(2)
    if rest and rest[0] not in " \t":
        return None
    if not inner:
        return "", rest
    route = _SOURCE_ROUTE.match(inner)
    if route is not None:
        inner = inner[route.end() :]
    if not _is_mailbox(inner):
        return None
    return inner, rest


def _is_mailbox(address: str) -> bool:
    """RFC 5321 §4.1.2 Mailbox = Local-part "@" ( Domain / address-literal )."""
    local, at, domain = address.rpartition("@")
    if not at:
        return False
    if not (_DOT_STRING.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        return False
    return bool(_DOMAIN.fullmatch(domain) or _ADDRESS_LITERAL.fullmatch(domain))


def _parse_params(text: str) -> dict[str, str | None] | Reply:
    """Parse ``KEY[=VALUE]`` words into an upper-cased keyword dict; a Reply when malformed."""
    params: dict[str, str | None] = {}
    for word in _SPACES.split(text.strip(" \t")):
        if not word:
            continue
        match = _PARAM.fullmatch(word)
        if match is None:
            return _BAD_PARAMETER
        keyword = match.group(1).upper()
        if keyword in params:
            return _BAD_PARAMETER
        params[keyword] = match.group(2)
    return params


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])`` in one copy instead of two (the slice, then the bytes)."""
    with memoryview(buf) as view:  # released at once: the bytearray may be resized after
        return bytes(view[start:end])


def _xclient_address(value: str) -> str | None:
    """
    An XCLIENT ADDR value (xtext, RFC 3461 §4): an IPv4 address, ``IPV6:`` and an IPv6 address,
    or ``[UNAVAILABLE]``/``[TEMPUNAVAIL]`` (returned as ""); None when malformed.
    """
    if not _XTEXT.fullmatch(value):
        return None
    text = re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
    if text.upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
        return ""
    if text[:5].upper() == "IPV6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _b64decode(data: bytes) -> bytes | None:
    """Strict base64 (RFC 4648 §4, padding required), or None."""
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        return None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class _Pending:
    """An event that waits for respond(), and where each kind of answer leads."""

    event: _Answerable
    default: Reply | None
    on_success: State
    on_failure: State


@dataclass
class _Exchange:
    """An AUTH exchange in progress: the mechanism, and for LOGIN the username once given."""

    mechanism: Literal["PLAIN", "LOGIN"]
    username: str | None = None


class SMTPServerEngine:
    """
    One SMTP server session, without I/O.

    Pipelined commands (RFC 2920) are answered strictly in order: while an event waits for
    L{respond}, nothing further is parsed and L{next_event} returns L{NEED_DATA}.

    AUTH is off unless ``auth_mechanisms`` names some of L{AUTH_MECHANISMS}.  It is offered over
    TLS only, unless ``auth_plaintext``; ``auth_required`` refuses MAIL before a successful AUTH.
    ``xclient``: the client may send XCLIENT ADDR (it is the trusted webmail); offered in EHLO.
    """

    def __init__(
        self,
        hostname: str,
        limits: ServerLimits = _DEFAULT_LIMITS,
        *,
        tls_available: bool = False,
        tls_active: bool = False,
        banner: str = "ESMTP Strata",
        auth_mechanisms: tuple[str, ...] = (),
        auth_plaintext: bool = False,
        auth_required: bool = False,
        xclient: bool = False,
    ) -> None:
        for mechanism in auth_mechanisms:
            if mechanism not in AUTH_MECHANISMS:
                raise ValueError(f"unknown AUTH mechanism {mechanism!r}")
        if len(set(auth_mechanisms)) != len(auth_mechanisms):
            raise ValueError("auth_mechanisms names a mechanism twice")
        if auth_required and not auth_mechanisms:
            raise ValueError("auth_required needs auth_mechanisms")
        self.hostname = hostname
        self.limits = limits
        self.banner = banner
        self._tls_available = tls_available
        self._tls_active = tls_active
        self._auth_mechanisms = auth_mechanisms
        self._auth_plaintext = auth_plaintext
        self._auth_required = auth_required
        self._xclient = xclient
        self._exchange: _Exchange | None = None  # an AUTH exchange reading SASL responses
        self._authenticated_as: str | None = None
        self._state = State.CONNECTED
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self._pending: _Pending | None = None
        self._awaiting_tls = False  # after StartTLS, until tls_started()
        self._errors = 0
        self._recipients = 0  # accepted recipients in this transaction
        self._discarding = False  # dropping the rest of an over-long command line
        # Message content, while in DATA.
        self._after_crlf = True  # the previous content line ended in CRLF (or there was none)
        self._mid_line = False  # the start of the current content line was handed over already
        self._content_size = 0
        self._refusal: Reply | None = None  # set once the message is doomed

    # -- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_data(self) -> bool:
        """True while message content is being received (the adapter's DATA timeout applies)."""
        return self._state is State.DATA and self._pending is None

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def awaiting_response(self) -> bool:
        return self._pending is not None

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated(self) -> bool:
        """True once an L{Auth} got a positive answer, until STARTTLS."""
        return self._authenticated_as is not None

    @property
    def authenticated_as(self) -> str | None:
        """The identity the adapter confirmed for the session's L{Auth}, or None."""
        return self._authenticated_as

    @property
    def _tls_offered(self) -> bool:
        return self._tls_available and not self._tls_active

    @property
    def _auth_offered(self) -> bool:
        # RFC 4954 §4 and §14: plaintext mechanisms only under TLS unless configured otherwise.
        return bool(self._auth_mechanisms) and (self._tls_active or self._auth_plaintext)

    # -- input and output -------------------------------------------------------------------------

    def greeting(self) -> None:
        """Queue the RFC 5321 §4.3.1 greeting, ``220 <hostname> ESMTP Strata``."""
        self._queue(Reply(220, None, f"{self.hostname} {self.banner}"))

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; C{b""} means the peer closed the connection."""
        if self._state is State.CLOSED:
            return
        if not data:
            self._close()
            return
        if self._awaiting_tls:
            # RFC 3207 §4.2: nothing sent in the clear after STARTTLS may count.
            return
        self._buffer += data

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer since the last call."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def next_event(self) -> Event | NeedData:
        """The next event, or L{NEED_DATA} (more bytes needed, a response pending, or closed)."""
        while self._state is not State.CLOSED and self._pending is None and not self._awaiting_tls:
            if self._state is State.DATA:
                return self._read_content()
            if self._exchange is not None:
                event = self._read_sasl_response(self._exchange)
            else:
                event = self._read_command()
            if event is not None:
                return event
        return NEED_DATA

    def respond(self, reply: Reply | None = None, *, user: str | None = None) -> None:
        """
        Answer the event that waits for a response; None gives its default success reply.

        A 2xx/3xx reply applies the event's transition; any other leaves the state as it was,
        except after L{DataEnd}, which ends the transaction either way.  A late answer after the
        engine closed is ignored.

        ``user`` is for L{Auth} only: the identity the adapter confirmed, kept as
        L{authenticated_as} when the answer is positive (default: the event's username).  An
        L{Auth} takes a 2xx, 4xx or 5xx answer, never a 3xx.
        """
        pending = self._pending
        if pending is None:
            if self._state is State.CLOSED:
                return
            raise RuntimeError("no event is waiting for a response")
        if user is not None and not isinstance(pending.event, Auth):
            raise ValueError("user= answers an Auth event only")
        if reply is None:
            if pending.default is None:
                raise ValueError(f"{type(pending.event).__name__} needs an explicit reply")
            reply = pending.default
        if isinstance(pending.event, Auth) and 300 <= reply.code < 400:
            # RFC 4954 §4: the exchange is over; 334 challenges are the engine's business.
            raise ValueError("an Auth event takes a 2xx, 4xx or 5xx reply")
        self._pending = None
        if reply.ok:
            self._state = pending.on_success
            event = pending.event
            if isinstance(event, Hello | MailFrom):
                self._recipients = 0
            elif isinstance(event, RcptTo):
                self._recipients += 1
            elif isinstance(event, DataStart):
                self._after_crlf = True
                self._mid_line = False
                self._content_size = 0
                self._refusal = None
            elif isinstance(event, Auth):
                self._authenticated_as = event.username if user is None else user
        else:
            self._state = pending.on_failure
        self._reply(reply)

    def tls_started(self) -> None:
        """
        TLS is up after L{StartTLS}: forget everything said in the clear (RFC 3207 §4.2) and stop
        offering STARTTLS.
        """
        if self._state is State.CLOSED:
            return
        if not self._awaiting_tls:
            raise RuntimeError("tls_started() without a StartTLS event")
        self._awaiting_tls = False
        self._tls_active = True
        self._state = State.CONNECTED
        self._recipients = 0
        self._authenticated_as = None
        self._buffer.clear()

    def timeout(self) -> None:
        """The peer was silent too long: 421 4.4.2 and close (RFC 5321 §4.5.3.2)."""
        if self._state is State.CLOSED:
            return
        self._queue(Reply(421, "4.4.2", f"{self.hostname} Error: timeout exceeded"))
        self._close()

    # -- replies ----------------------------------------------------------------------------------

    def _queue(self, reply: Reply) -> None:
        self._outgoing.append(reply.to_bytes())

    def _reply(self, reply: Reply) -> None:
        """Queue a reply; count it if it is an error, and close on 421 or too many errors."""
        self._queue(reply)
        if reply.code == 421:
            # RFC 5321 §3.8: 421 means the server closes the channel.
            self._close()
        elif reply.code >= 400:
            self._errors += 1
            if self._errors >= self.limits.max_errors:
                self._queue(Reply(421, "4.7.0", f"{self.hostname} Error: too many errors"))
                self._close()

    def _close(self) -> None:
        self._state = State.CLOSED
        self._pending = None
        self._awaiting_tls = False
        self._exchange = None
        self._buffer.clear()

    def _expect(self, event: _Answerable, default: Reply | None, on_success: State) -> None:
        self._pending = _Pending(event, default, on_success, self._state)

    # -- commands ---------------------------------------------------------------------------------

    def _take_line(self, limit: int) -> bytes | NeedData | _TooLong:
        """
        One input line without its line end; NEED_DATA until its LF, _TOO_LONG for a line of
        more than ``limit`` octets (whose bytes are dropped as they come).
        """
        buf = self._buffer
        end = buf.find(b"\n")
        if end < 0:
            # Without its LF a line of limit+2 octets is too long even if its last octet is CR.
            if self._discarding or len(buf) >= limit + 2:
                self._discarding = True
                buf.clear()
            return NEED_DATA
        line = bytes(buf[:end])
        del buf[: end + 1]
        if self._discarding:
            self._discarding = False
            return _TOO_LONG
        # RFC 5321 §2.3.8 wants CRLF; a bare LF is accepted as well (Postfix does the same).
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limit:
            return _TOO_LONG
        return line

    def _read_command(self) -> Event | NeedData | None:
        """One command line: its event, NEED_DATA, or None when the engine answered it itself."""
        line = self._take_line(self.limits.max_command_line_length)
        if isinstance(line, NeedData):
            return NEED_DATA
        if isinstance(line, _TooLong):
            self._reply(_LINE_TOO_LONG)
            return None
        return self._dispatch(line)

    def _dispatch(self, line: bytes) -> Event | None:
        # Invalid UTF-8 becomes lone surrogates, which no address or name pattern accepts.
        text = line.decode("utf-8", "surrogateescape").strip(" \t")
        if not text:
            self._reply(_BAD_SYNTAX)
            return None
        match = _COMMAND.fullmatch(text)
        assert match is not None  # the pattern matches any string
        verb, args = match.group(1), match.group(2)
        # RFC 5321 §2.4: verbs are case-insensitive.
        verb = verb.upper() if verb.isascii() and verb.isalpha() else ""
        cell = _TRANSITIONS.get(self._state, {}).get(verb)
        if cell is None or (verb == "AUTH" and not self._auth_mechanisms):
            self._reply(_NOT_IMPLEMENTED if verb in _UNIMPLEMENTED else _NOT_RECOGNIZED)
            return None
        if isinstance(cell, Reply):
            self._reply(cell)
            return None
        match verb:
            case "EHLO" | "HELO":
                return self._hello(verb, args, cell)
            case "MAIL":
                return self._mail(args, cell)
            case "RCPT":
                return self._rcpt(args, cell)
            case "DATA":
                return self._data(args, cell)
            case "RSET":
                return self._rset(args, cell)
            case "STARTTLS":
                return self._starttls(args, cell)
            case "AUTH":
                return self._auth(args, cell)
            case "XCLIENT":
                return self._xclient_command(args, cell)
            case "QUIT":
                self._queue(_BYE)
                self._close()
                return Quit()
            case "VRFY":
                self._reply(_CANNOT_VRFY if args else _syntax("VRFY address"))
            case "HELP":
                self._reply(_HELP)
            case _:  # NOOP: RFC 5321 §4.1.1.9, any argument is ignored
                self._reply(_OK)
        return None

    def _hello(self, verb: Literal["EHLO", "HELO"], args: str, target: State) -> Event | None:
        if not args or _BAD_NAME.search(args):
            self._reply(_syntax(f"{verb} hostname"))
            return None
        if verb == "EHLO":
            # RFC 1869 §4.3: the first line names the server, each further line an extension.
            lines = [self.hostname, "PIPELINING", f"SIZE {self.limits.max_message_size}"]
            lines += ["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
            if self._tls_offered:
                lines.append("STARTTLS")
            if self._auth_offered:
                lines.append(" ".join(("AUTH", *self._auth_mechanisms)))
            if self._xclient:
                lines.append("XCLIENT ADDR")
            default = Reply(250, None, tuple(lines))
        else:
            default = Reply(250, None, self.hostname)
        event = Hello(verb, args)
        self._expect(event, default, target)
        return event

    def _mail(self, args: str, target: State) -> Event | None:
        if self._auth_required and not self.authenticated:
            self._reply(_AUTH_REQUIRED)
            return None
        prefix = _MAIL_FROM.match(args)
        if prefix is None:
            self._reply(_MAIL_SYNTAX)
            return None
        path = _split_path(args[prefix.end() :])
        if path is None:
            self._reply(_BAD_SENDER)
            return None
        sender, rest = path
        params = _parse_params(rest)
        if isinstance(params, Reply):
            self._reply(params)
            return None
        size: int | None = None
        body: Literal["7BIT", "8BITMIME"] | None = None
        smtputf8 = False
        for keyword, value in params.items():
            if keyword == "SIZE":
                # RFC 1870 §3: SIZE=1*20DIGIT.
                if value is None or not (value.isascii() and value.isdigit()):
                    self._reply(_BAD_SIZE)
                    return None
                digits = value.lstrip("0") or "0"
                if len(digits) > 18 or int(digits) > self.limits.max_message_size:
                    self._reply(_SIZE_EXCEEDED)
                    return Refused("MAIL", args, _SIZE_EXCEEDED)
                size = int(digits)
            elif keyword == "BODY":
                # RFC 6152 §2: BODY=7BIT / BODY=8BITMIME; BINARYMIME needs CHUNKING (RFC 3030).
                kind = (value or "").upper()
                if kind == "7BIT":
                    body = "7BIT"
                elif kind == "8BITMIME":
                    body = "8BITMIME"
                else:
                    self._reply(_unsupported(f"BODY={value or ''}"))
                    return None
            elif keyword == "SMTPUTF8":
                # RFC 6531 §3.4: SMTPUTF8 takes no value.
                if value is not None:
                    self._reply(_BAD_PARAMETER)
                    return None
                smtputf8 = True
            elif keyword == "AUTH" and self._auth_offered:
                # RFC 4954 §5: AUTH=<mailbox> or AUTH=<>, xtext-encoded; the policy decides
                # whether to trust it, so it stays in params as sent.
                if value is None or not _XTEXT.fullmatch(value):
                    self._reply(_BAD_AUTH_PARAMETER)
                    return None
            else:
                self._reply(_unsupported(keyword))
                return None
        event = MailFrom(sender, size, body, smtputf8, params)
        self._expect(event, _MAIL_OK, target)
        return event

    def _rcpt(self, args: str, target: State) -> Event | None:
        if self._recipients >= self.limits.max_recipients:
            self._reply(_TOO_MANY_RCPTS)
            return Refused("RCPT", args, _TOO_MANY_RCPTS)
        prefix = _RCPT_TO.match(args)
        if prefix is None:
            self._reply(_RCPT_SYNTAX)
            return None
        text = args[prefix.end() :]
        path = _split_path(text)
        if path is None:
            # RFC 5321 §4.1.1.3: "<Postmaster>" without a domain must be accepted.
            postmaster = _POSTMASTER.match(text)
            if postmaster is None or postmaster.group(2)[:1] not in ("", " ", "\t"):
                self._reply(_BAD_RECIPIENT)
                return None
            path = postmaster.group(1), postmaster.group(2)
        recipient, rest = path
        if not recipient:
            self._reply(_BAD_RECIPIENT)
            return None
        params = _parse_params(rest)
        if isinstance(params, Reply):
            self._reply(params)
            return None
        if params:
            # No RCPT parameter is implemented (DSN's NOTIFY and ORCPT may come later).
            self._reply(_unsupported(next(iter(params))))
            return None
        event = RcptTo(recipient, params)
        self._expect(event, _RCPT_OK, target)
        return event

    def _data(self, args: str, target: State) -> Event | None:
        if args:
            self._reply(_syntax("DATA"))
            return None
        event = DataStart()
        self._expect(event, _START_DATA, target)
        return event

    def _rset(self, args: str, target: State) -> Event | None:
        if args:
            self._reply(_syntax("RSET"))
            return None
        self._state = target
        self._reply(_OK)
        return Reset()

    def _starttls(self, args: str, target: State) -> Event | None:
        if args:
            self._reply(_syntax("STARTTLS"))
        elif not self._tls_available:
            self._reply(_NOT_IMPLEMENTED)
        elif self._tls_active:
            self._reply(_TLS_ACTIVE)
        else:
            self._queue(_READY_FOR_TLS)
            # RFC 3207 §4.2: drop whatever the client pipelined after STARTTLS, so that nothing
            # injected in the clear is taken as said under TLS (CVE-2011-0411).
            self._buffer.clear()
            self._awaiting_tls = True
            self._state = target
            return StartTLS()
        return None

    # -- XCLIENT (Postfix's XCLIENT_README) ------------------------------------------------------

    def _xclient_command(self, args: str, target: State) -> Event | None:
        if not self._xclient:
            self._reply(_XCLIENT_REFUSED)
            return None
        if self.authenticated:
            self._reply(_XCLIENT_AFTER_AUTH)
            return None
        words = _SPACES.split(args) if args else []
        if not words:
            self._reply(_syntax("XCLIENT attribute=value..."))
            return None
        address: str | None = None
        for word in words:
            name, equals, value = word.partition("=")
            if not equals or name.upper() != "ADDR":  # the one attribute offered
                self._reply(Reply(501, "5.5.4", f"Bad XCLIENT attribute name: {name[:64]}"))
                return None
            parsed = _xclient_address(value)
            if parsed is None:
                shown = value[:64] or "(empty)"
                self._reply(Reply(501, "5.5.4", f"Bad XCLIENT ADDR syntax: {shown}"))
                return None
            address = parsed or None
        # Postfix: the session starts afresh, as after connect, with the 220 greeting.
        self._state = target
        self._recipients = 0
        self.greeting()
        return XClient(address)

    # -- AUTH (RFC 4954) ---------------------------------------------------------------------------

    def _auth(self, args: str, target: State) -> Event | None:
        # RFC 4954 §4: once AUTH succeeded, any further AUTH gets 503.
        if self.authenticated:
            self._reply(_ALREADY_AUTHENTICATED)
            return None
        words = _SPACES.split(args) if args else []
        if not 1 <= len(words) <= 2:
            self._reply(_syntax("AUTH mechanism [initial-response]"))
            return None
        # RFC 4422 §3.1: mechanism names are upper case; clients are forgiven lower case.
        name = words[0].upper() if words[0].isascii() else ""
        if name not in self._auth_mechanisms:
            self._reply(_UNKNOWN_MECHANISM)
            return None
        if not self._auth_offered:
            # RFC 4954 §6: the mechanism may be used over an encrypted connection only.
            self._reply(_ENCRYPTION_REQUIRED)
            return None
        exchange = _Exchange("PLAIN" if name == "PLAIN" else "LOGIN")
        if len(words) == 1:
            self._exchange = exchange
            self._challenge("" if exchange.mechanism == "PLAIN" else _LOGIN_USERNAME)
            return None
        # RFC 4954 §4: an initial response of "=" is an empty one.
        initial = words[1].encode("utf-8", "surrogateescape")
        response = b"" if initial == b"=" else _b64decode(initial)
        if response is None:
            self._reply(_CANNOT_DECODE)
            return None
        return self._sasl_step(exchange, response, target)

    def _challenge(self, text: str) -> None:
        # RFC 4954 §4: continue-req = "334" SP [base64] CRLF.  The SP stays even when the
        # challenge is empty, which Reply would drop, so the line is written here.
        self._outgoing.append(f"334 {text}\r\n".encode("ascii"))

    def _read_sasl_response(self, exchange: _Exchange) -> Event | NeedData | None:
        """One SASL response line (RFC 4954 §4): read raw, never as a command."""
        line = self._take_line(max(_AUTH_LINE_LENGTH, self.limits.max_command_line_length))
        if isinstance(line, NeedData):
            return NEED_DATA
        self._exchange = None
        if isinstance(line, _TooLong):
            self._reply(_AUTH_LINE_TOO_LONG)
            return None
        if line == b"*":
            # RFC 4954 §4: "*" cancels the exchange, and the server answers 501.
            self._reply(_AUTH_CANCELLED)
            return None
        response = _b64decode(line)
        if response is None:
            self._reply(_CANNOT_DECODE)
            return None
        return self._sasl_step(exchange, response, State.GREETED)

    def _sasl_step(self, exchange: _Exchange, response: bytes, target: State) -> Event | None:
        """Take one decoded response: the next challenge (None), or the complete L{Auth}."""
        if exchange.mechanism == "PLAIN":
            # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
            parts = response.split(b"\0")
            if len(parts) != 3:
                self._reply(_CANNOT_DECODE)
                return None
            authzid, username, password = (_utf8(part) for part in parts)
        else:
            # LOGIN: the username, then the password, each a response of its own.
            text = _utf8(response)
            if text is not None and exchange.username is None:
                exchange.username = text
                self._exchange = exchange
                self._challenge(_LOGIN_PASSWORD)
                return None
            authzid, username, password = "", exchange.username, text
        if authzid is None or username is None or password is None:
            self._reply(_CANNOT_DECODE)
            return None
        event = Auth(exchange.mechanism, authzid, username, password)
        self._expect(event, _AUTH_OK, target)
        return event

    # -- message content --------------------------------------------------------------------------

    def _read_content(self) -> DataChunk | DataEnd | DataAborted | NeedData:
        """
        Read message content up to the end-of-data line.

        RFC 5321 §4.1.1.4: the data ends with CRLF "." CRLF, and only with that: a "." line that
        follows a bare LF, or ends in one, is content (SMTP smuggling, CVE-2023-51764 class).  A
        line ending in a bare LF is taken as ending in CRLF, as Postfix's
        ``smtpd_forbid_bare_newline = normalize`` does.  A bare CR is an ordinary byte.

        A content line may be of any length (RFC 5322 §2.1.1's 998 is for writers; real mail
        breaks it, and Postfix takes such lines).  An unfinished line waits for its LF while it
        is short; once more than L{ServerLimits.max_command_line_length} octets of it are
        buffered, they go on as a L{DataChunk} at once, but for a last CR, which the next octet
        decides (the CR of a CRLF, or an ordinary byte).  The rest of that line is then a
        continuation (C{_mid_line}): never a line start, so neither a lone "." nor one to unstuff.
        """
        buf = self._buffer
        pieces: list[bytes] = []
        start = 0  # start of the current line (or of the continuation of one)
        run = 0  # start of the bytes not yet copied that go through unchanged
        while (newline := buf.find(b"\n", start)) >= 0:
            after_crlf = self._after_crlf
            crlf = newline > start and buf[newline - 1] == 0x0D
            end = newline - 1 if crlf else newline  # end of the line's text
            next_start = newline + 1
            self._after_crlf = crlf
            continued = self._mid_line
            self._mid_line = False
            if not continued and end - start == 1 and buf[start] == 0x2E:  # a lone "."
                if crlf and after_crlf:  # the end of the data
                    if run < start:
                        pieces.append(_copy(buf, run, start))
                    if pieces:
                        # Hand over the content first; the "." line is read again next time
                        # (_after_crlf is already right: this line and the one before end in CRLF).
                        del buf[:start]
                        return DataChunk(b"".join(pieces))
                    del buf[:next_start]
                    return self._end_of_content()
                piece = b".\r\n"  # cannot end the data, so it is not a stuffed "." either
            elif not continued and end > start and buf[start] == 0x2E:
                # RFC 5321 §4.5.2: the first "." of a line that starts with one is transparency.
                piece = _copy(buf, start + 1, end) + b"\r\n"
            elif crlf:
                # The common case: the line goes through as it is, with its neighbours.
                if self._count(next_start - start):
                    start = next_start
                    continue
                piece = None
            else:
                piece = _copy(buf, start, end) + b"\r\n"  # bare LF becomes CRLF
            if run < start:
                pieces.append(_copy(buf, run, start))
            if piece is not None and self._count(len(piece)):
                pieces.append(piece)
            start = run = next_start
        # An unfinished line (no LF yet).  Hand it over once it is long: keep at most the limit
        # of it, and never fewer than 3 octets of a line start (".", CR: maybe a lone ".").
        if len(buf) - start > max(self.limits.max_command_line_length, 2):
            cut = len(buf) - 1 if buf[-1] == 0x0D else len(buf)  # a CR may be a CRLF's
            first = start
            if not self._mid_line and buf[start] == 0x2E:
                first += 1  # RFC 5321 §4.5.2, as above: this is the line's first octet
            self._mid_line = True
            if first == start and self._count(cut - start):
                start = cut  # goes through unchanged, with the lines before it
            else:
                if run < start:
                    pieces.append(_copy(buf, run, start))
                if self._count(cut - first):
                    pieces.append(_copy(buf, first, cut))
                start = run = cut
        if run < start:
            pieces.append(_copy(buf, run, start))
        del buf[:start]
        if pieces:
            return DataChunk(b"".join(pieces))
        return NEED_DATA

    def _count(self, size: int) -> bool:
        """Count content octets; False once the message is refused and content is dropped."""
        if self._refusal is not None:
            return False
        self._content_size += size
        if self._content_size > self.limits.max_message_size:
            # RFC 1870 §6.3: read on to the end of the data, then 552 (RFC 5321 §4.2.2).
            self._refuse(_MESSAGE_TOO_BIG)
            return False
        return True

    def _refuse(self, reply: Reply) -> None:
        if self._refusal is None:
            self._refusal = reply

    def _end_of_content(self) -> DataEnd | DataAborted:
        refusal = self._refusal
        self._refusal = None
        if refusal is not None:
            self._state = State.GREETED
            self._reply(refusal)
            return DataAborted(refusal)
        event = DataEnd()
        self._pending = _Pending(event, None, State.GREETED, State.GREETED)
        return event
