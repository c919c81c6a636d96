# -*- test-case-name: tests.test_proto_imap_server -*-
"""
The IMAP4rev1 server as a sans-IO engine: bytes in, events out; answers in, bytes out.

The adapter feeds what the client sent to L{IMAPServerEngine.receive_data}, takes events from
L{IMAPServerEngine.next_event} until it gets L{NEED_DATA}, answers the events that need an answer,
and writes L{IMAPServerEngine.data_to_send} to the client.  The engine answers by itself all that
needs no policy and no mailbox data: the greeting, CAPABILITY, NOOP (outside the selected state),
LOGOUT, ID, ENABLE, NAMESPACE, STARTTLS, the SASL exchanges of AUTHENTICATE, IDLE and every
syntax, state and limit error.  An ID from a trusted client before login may name the end user's
address (``x-originating-ip``, Dovecot's convention for webmail and proxies); the engine keeps it
and hands it over with the L{LoginRequest}.  Everything else goes to the adapter:

 - L{LoginRequest} (LOGIN, AUTHENTICATE PLAIN/LOGIN): answer with L{IMAPServerEngine.login_result}.
 - L{SelectMailbox} (SELECT, EXAMINE): answer with L{IMAPServerEngine.select_result}, or refuse it
   with L{IMAPServerEngine.complete} (NO).
 - L{BackendCommand} (LIST, FETCH, STORE, ... and the APPEND stream L{AppendStart},
   L{AppendData}, L{AppendEnd}): write untagged data with L{IMAPServerEngine.respond}, then end
   it with L{IMAPServerEngine.complete}.
 - L{StartTLS}: start TLS, then call L{IMAPServerEngine.tls_started}.
 - L{Close}: write what is pending and close the connection.

While an event waits for its answer the engine parses nothing further (commands are answered in
order) but keeps buffering input, up to a cap.  Untagged updates (EXISTS, EXPUNGE, FETCH FLAGS) can
be pushed at any time with L{IMAPServerEngine.respond}; RFC 3501 §7.4.1 forbids EXPUNGE during
FETCH, STORE and SEARCH, which is the adapter's business.

This module must never touch a socket, a reactor, a clock or a store, and it must never raise on
anything a client sends.  Timers are the adapter's: it reads L{IMAPServerEngine.idle_timeout} and
calls L{IMAPServerEngine.timeout} when it expires.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from strata_twisted.proto.imap_parser import (
    NEED_DATA,
    AppendData,
    AppendEnd,
    AppendStart,
    Authenticate,
    AuthenticateCancelled,
    AuthenticateResponse,
    Command,
    CommandError,
    ContinuationRequired,
    Enable,
    Fetch,
    Id,
    IdleDone,
    IMAPCommandParser,
    Login,
    NeedData,
    ParserLimits,
    Search,
    SearchKey,
    Select,
    Simple,
    Status,
    Store,
)
from strata_twisted.proto.imap_parser import Event as ParserEvent
from strata_twisted.proto.imap_response import (
    ResponseCode,
    StatusName,
    capability_response,
    continuation,
    continuation_challenge,
    enabled_response,
    exists_response,
    flags_response,
    id_response,
    recent_response,
    status_response,
)

__all__ = [
    "NEED_DATA",
    "AppendData",
    "AppendEnd",
    "AppendAborted",
    "AppendStart",
    "BackendCommand",
    "Close",
    "Event",
    "IMAPServerEngine",
    "IdleEnded",
    "IdleStarted",
    "LoginFailure",
    "LoginMethod",
    "LoginRequest",
    "NeedData",
    "SelectMailbox",
    "SelectedMailbox",
    "ServerLimits",
    "mentions_modseq",
    "StartTLS",
    "State",
]


@dataclass(frozen=True)
class ServerLimits:
    """What one connection may do before the engine refuses it or closes it."""

    max_line_length: int = 64 * 1024  # octets of one command outside its literals
    max_literal_size: int = 64 * 1024  # any literal but an APPEND message, after login
    max_append_size: int = 50 * 1024 * 1024  # the APPEND message (default: the intake size limit)
    preauth_literal_size: int = 8 * 1024  # any literal before login
    preauth_line_length: int = 8 * 1024  # a command line before login
    max_pending_input: int = 1024 * 1024  # input buffered while a command waits for its answer
    max_errors: int = 10  # BAD answers in a row, then BYE
    max_login_failures: int = 3  # failed logins on one connection, then BYE
    idle_timeout: int = 30 * 60  # seconds; RFC 3501 §5.4: at least 30 minutes once logged in
    preauth_timeout: int = 60  # seconds before login

    def __post_init__(self) -> None:
        for name in (
            "max_line_length",
            "preauth_line_length",
            "max_pending_input",
            "max_errors",
            "max_login_failures",
            "idle_timeout",
            "preauth_timeout",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_literal_size", "max_append_size", "preauth_literal_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.idle_timeout < 30 * 60:
            raise ValueError("RFC 3501 §5.4: the autologout timer is at least 30 minutes")


_DEFAULT_LIMITS: Final = ServerLimits()


class State(enum.Enum):
    """RFC 3501 §3: the connection's state."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"  # closed: nothing more is read or written


# -- events ---------------------------------------------------------------------------------------


LoginMethod: TypeAlias = Literal["LOGIN", "AUTHENTICATE PLAIN", "AUTHENTICATE LOGIN"]


@dataclass(frozen=True)
class LoginRequest:
    """
    LOGIN or AUTHENTICATE PLAIN/LOGIN with the credentials.  Needs
    L{IMAPServerEngine.login_result}.  ``user`` and ``password`` are UTF-8 with undecodable
    octets kept as surrogates.  ``origin``: the end user's address a trusted client named in
    ID before login (L{IMAPServerEngine.origin}), or None.
    """

    tag: str
    user: str
    password: str
    method: LoginMethod
    origin: str | None = None

    def __repr__(self) -> str:  # never put a password in a log line
        return (
            f"LoginRequest(tag={self.tag!r}, user={self.user!r}, method={self.method!r},"
            f" origin={self.origin!r})"
        )


@dataclass(frozen=True)
class SelectMailbox:
    """
    SELECT or EXAMINE (``read_only``).  Any mailbox selected before is already deselected
    (RFC 3501 §6.3.1).  Needs L{IMAPServerEngine.select_result} or a NO through
    L{IMAPServerEngine.complete}.
    """

    tag: str
    mailbox: str
    read_only: bool
    condstore: bool


@dataclass(frozen=True)
class BackendCommand:
    """
    A mailbox or message command, valid in the current state.  Needs L{IMAPServerEngine.complete}
    (after any untagged data through L{IMAPServerEngine.respond}).  CLOSE and UNSELECT have
    already left the selected state; CLOSE must still expunge a read-write mailbox silently.
    NOOP comes here in the selected state, so that pending updates can be reported.
    """

    command: Command


@dataclass(frozen=True)
class AppendAborted:
    """The APPEND message after L{AppendStart} was refused or cut off: drop what was stored."""

    tag: str


@dataclass(frozen=True)
class IdleStarted:
    """IDLE began (``+ idling`` is queued): push updates with L{IMAPServerEngine.respond}."""

    tag: str


@dataclass(frozen=True)
class IdleEnded:
    """IDLE ended (its tagged answer is queued)."""

    tag: str


@dataclass(frozen=True)
class StartTLS:
    """
    STARTTLS: the OK is queued and all input after the command discarded.  Write the pending
    bytes, start TLS, then call L{IMAPServerEngine.tls_started}.
    """


@dataclass(frozen=True)
class Close:
    """The engine ended the session (LOGOUT, BYE): write the pending bytes and close."""

    reason: str


Event: TypeAlias = (
    LoginRequest
    | SelectMailbox
    | BackendCommand
    | AppendStart
    | AppendData
    | AppendEnd
    | AppendAborted
    | IdleStarted
    | IdleEnded
    | StartTLS
    | Close
)

LoginFailure: TypeAlias = Literal["AUTHENTICATIONFAILED", "UNAVAILABLE", "PRIVACYREQUIRED"]


@dataclass(frozen=True)
class SelectedMailbox:
    """What the backend reports about a mailbox it opened for SELECT or EXAMINE."""

    flags: tuple[str, ...]
    exists: int
    uidvalidity: int
    uidnext: int
    permanent_flags: tuple[str, ...]
    first_unseen: int | None = None  # sequence number of the first message without \Seen
    highest_modseq: int | None = None  # None: the mailbox keeps no mod-sequences ([NOMODSEQ])
    read_only: bool = False  # the backend may open a SELECTed mailbox read-only
    recent: int = 0  # how many messages are \\Recent to this session (RFC 3501 §2.3.2)


# -- capabilities ---------------------------------------------------------------------------------

_SERVER_NAME: Final = "Strata"
_LOGGED_IN_CAPABILITIES: Final = (
    "IMAP4rev1",
    "LITERAL+",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "UNSELECT",
    "ID",
    "ENABLE",
    "SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CONDSTORE",
    "ESEARCH",
    "SORT",
    # RFC 5256 §3: the threading algorithms, each one a capability.
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
)
_ENABLEABLE: Final = frozenset({"CONDSTORE"})
# RFC 2342 §5: the personal namespace is "" with "/" as delimiter; no other users', no shared.
_NAMESPACE: Final = b'* NAMESPACE (("" "/")) NIL NIL\r\n'


# -- the command table ----------------------------------------------------------------------------
#
# Rules:
# 1. A command's row names what the engine does with it in each state where it is valid; in any
#    other state it is answered BAD with the row's refusal (RFC 3501 §6: BAD for a command not
#    valid in this state) and nothing changes.  Commands unknown to the parser never get here.
# 2. Transitions: LOGIN/AUTHENTICATE lead to AUTHENTICATED on a positive login_result; SELECT and
#    EXAMINE leave any selected mailbox at once and lead to SELECTED on select_result (a NO leaves
#    the connection AUTHENTICATED, RFC 3501 §6.3.1); CLOSE and UNSELECT lead to AUTHENTICATED
#    at once; STARTTLS stays NOT_AUTHENTICATED (and discards pipelined input); LOGOUT, timeout(),
#    too many errors or failed logins lead to LOGOUT.
# 3. Before login every refusal is "Log in first".  What the engine answers itself and what
#    becomes an event is decided in IMAPServerEngine._command.
_ANY: Final = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_NOT_AUTH: Final = frozenset({State.NOT_AUTHENTICATED})
_AUTH: Final = frozenset({State.AUTHENTICATED, State.SELECTED})
_ONLY_AUTH: Final = frozenset({State.AUTHENTICATED})
_SELECTED: Final = frozenset({State.SELECTED})


@dataclass(frozen=True)
class _Row:
    states: frozenset[State]
    refusal: str


_NEED_LOGIN: Final = "Log in first"
_NEED_MAILBOX: Final = "No mailbox selected"
_LOGGED_IN: Final = "Already logged in"

_TABLE: Final[dict[str, _Row]] = {
    "CAPABILITY": _Row(_ANY, ""),
    "NOOP": _Row(_ANY, ""),
    "LOGOUT": _Row(_ANY, ""),
    "ID": _Row(_ANY, ""),
    "STARTTLS": _Row(_NOT_AUTH, _LOGGED_IN),
    "LOGIN": _Row(_NOT_AUTH, _LOGGED_IN),
    "AUTHENTICATE": _Row(_NOT_AUTH, _LOGGED_IN),
    # RFC 5161 §3.1: ENABLE only in the authenticated state, before any SELECT.
    "ENABLE": _Row(_ONLY_AUTH, "ENABLE is not allowed in this state"),
    "NAMESPACE": _Row(_AUTH, _NEED_LOGIN),
    "IDLE": _Row(_AUTH, _NEED_LOGIN),
    "SELECT": _Row(_AUTH, _NEED_LOGIN),
    "EXAMINE": _Row(_AUTH, _NEED_LOGIN),
    **{
        name: _Row(_AUTH, _NEED_LOGIN)
        for name in ("CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB")
        + ("STATUS", "APPEND")
    },
    **{
        name: _Row(_SELECTED, _NEED_MAILBOX)
        for name in ("CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY")
        + ("MOVE", "SORT", "THREAD")
    },
}


@dataclass
class _Pending:
    kind: Literal["login", "select", "command"]
    tag: str
    user: str = ""
    read_only: bool = False
    command: str = ""


@dataclass
class _SASL:
    """An AUTHENTICATE exchange waiting for the client's next response."""

    tag: str
    mechanism: Literal["PLAIN", "LOGIN"]
    user: str | None = None  # LOGIN: the user name, once sent


def _originating_ip(parameters: Iterable[tuple[str, str | None]] | None) -> str | None:
    """
    The ``x-originating-ip`` of ID parameters (RFC 2971 §3.3: field names are compared without
    regard to case), as a normalised IP address; None when absent or not an address.  Dovecot's
    convention (login_trusted_networks): a webmail or proxy names the address of the user it
    logs in for.
    """
    for key, value in parameters or ():
        if key.lower() == "x-originating-ip" and value is not None:
            try:
                return str(ipaddress.ip_address(value.strip().strip("[]")))
            except ValueError:
                return None
    return None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def mentions_modseq(key: SearchKey) -> bool:
    """Whether a search key uses MODSEQ anywhere (RFC 7162 §3.1.5)."""
    return key.name == "MODSEQ" or any(mentions_modseq(k) for k in key.keys)


class IMAPServerEngine:
    """
    One IMAP server connection, without I/O.

    ``tls_active``: the connection is TLS already (port 993).  ``tls_available``: STARTTLS can be
    offered.  ``trusted``: the client is on loopback or a configured trusted network, where
    plaintext login is allowed without TLS (DESIGN decision 10).
    """

    def __init__(
        self,
        limits: ServerLimits = _DEFAULT_LIMITS,
        *,
        tls_active: bool = False,
        tls_available: bool = False,
        trusted: bool = False,
    ) -> None:
        self.limits = limits
        self._tls_active = tls_active
        self._tls_available = tls_available
        self._trusted = trusted
        self._state = State.NOT_AUTHENTICATED
        self._parser = IMAPCommandParser(self._preauth_limits())
        self._outgoing: list[bytes] = []
        self._pending: _Pending | None = None
        self._sasl: _SASL | None = None
        self._append: str | None = None  # tag of the APPEND being streamed
        self._idle: str | None = None  # tag of IDLE
        self._awaiting_tls = False
        self._close_reason: str | None = None  # a Close event not yet handed out
        self._errors = 0
        self._login_failures = 0
        self._condstore = False
        self._user: str | None = None
        self._read_only = False
        self._origin: str | None = None

    # -- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.LOGOUT

    @property
    def user(self) -> str | None:
        """The user the adapter accepted, once logged in."""
        return self._user

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def origin(self) -> str | None:
        """
        The end user's address a trusted client gave in ID before login (``x-originating-ip``),
        normalised; None when there was none, or the client is not trusted.
        """
        return self._origin

    @property
    def plaintext_login_allowed(self) -> bool:
        """RFC 3501 §6.2.3: plaintext passwords only over TLS or from a trusted network."""
        return self._tls_active or self._trusted

    @property
    def condstore_enabled(self) -> bool:
        """RFC 7162 §3.1: once on, FETCH responses carry MODSEQ and so on."""
        return self._condstore

    @property
    def read_only(self) -> bool:
        """Whether the selected mailbox was opened read-only."""
        return self._read_only

    @property
    def awaiting_response(self) -> bool:
        return self._pending is not None

    @property
    def idling(self) -> bool:
        return self._idle is not None

    @property
    def idle_timeout(self) -> int:
        """Seconds of silence after which the adapter calls L{timeout}."""
        if self._state is State.NOT_AUTHENTICATED:
            return self.limits.preauth_timeout
        return self.limits.idle_timeout

    def capabilities(self) -> tuple[str, ...]:
        """What CAPABILITY lists now (RFC 3501 §6.1.1)."""
        if self._state is not State.NOT_AUTHENTICATED:
            return _LOGGED_IN_CAPABILITIES
        # ENABLE and IDLE too, as Dovecot does: some clients (imaplib) keep the pre-login list.
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self._tls_available and not self._tls_active:
            caps.append("STARTTLS")
        if self.plaintext_login_allowed:
            caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
        else:
            caps.append("LOGINDISABLED")
        return tuple(caps)

    def _pending_cap(self) -> int:
        """Input held while a command waits; small before login, where nobody pipelines much."""
        if self._state is State.NOT_AUTHENTICATED:
            limits = self.limits
            return min(
                limits.max_pending_input,
                2 * (limits.preauth_line_length + limits.preauth_literal_size),
            )
        return self.limits.max_pending_input

    def _preauth_limits(self) -> ParserLimits:
        return ParserLimits(
            max_line_length=self.limits.preauth_line_length,
            max_literal_size=self.limits.preauth_literal_size,
            max_append_size=0,
        )

    def _auth_limits(self) -> ParserLimits:
        return ParserLimits(
            max_line_length=self.limits.max_line_length,
            max_literal_size=self.limits.max_literal_size,
            max_append_size=self.limits.max_append_size,
        )

    # -- input and output -------------------------------------------------------------------------

    def greeting(self) -> None:
        """Queue ``* OK [CAPABILITY ...] Strata ready`` (RFC 3501 §7.1.1)."""
        self._status(None, "OK", f"{_SERVER_NAME} IMAP4rev1 ready", self._capability_code())

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client; C{b""} means it closed the connection."""
        if self.closed:
            return
        if not data:
            self._shut()
            return
        if self._awaiting_tls:
            return  # RFC 3501 §6.2.1: nothing sent in the clear after STARTTLS may count
        self._parser.receive_data(data)
        if self._pending is not None and self._parser.buffered_size > self._pending_cap():
            self._bye("Too much input while a command is in progress")

    def data_to_send(self) -> bytes:
        """The bytes queued for the client since the last call."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def next_event(self) -> Event | NeedData:
        """The next event, or L{NEED_DATA} (more bytes needed, an answer pending, or closed)."""
        while True:
            if self._close_reason is not None:
                reason, self._close_reason = self._close_reason, None
                return Close(reason)
            if self.closed or self._pending is not None or self._awaiting_tls:
                return NEED_DATA
            parsed = self._parser.next_event()
            if parsed is NEED_DATA:
                return NEED_DATA
            event = self._handle(parsed)
            if event is not None:
                return event

    def respond(self, lines: Iterable[bytes]) -> None:
        """
        Queue untagged responses in wire form (``* 3 EXISTS\\r\\n``), from the encoder; allowed
        at any time, during a command or between commands.
        """
        if self.closed:
            return
        for line in lines:
            self._outgoing.append(line)

    def complete(
        self,
        tag: str,
        status: Literal["OK", "NO", "BAD"],
        text: str,
        code: ResponseCode | None = None,
    ) -> None:
        """End the L{BackendCommand}, APPEND or (with NO/BAD) L{SelectMailbox} that waits."""
        pending = self._expect_pending(tag)
        if pending is None:
            return
        if pending.kind == "login":
            raise RuntimeError("a LoginRequest is answered with login_result()")
        if pending.kind == "select" and status == "OK":
            raise RuntimeError("a SelectMailbox is accepted with select_result()")
        self._pending = None
        self._count(status)
        self._status(tag, status, text, code)

    def login_result(
        self, ok: bool, code: LoginFailure = "AUTHENTICATIONFAILED", text: str | None = None
    ) -> None:
        """
        Answer the L{LoginRequest}: OK [CAPABILITY ...], or NO with ``code``; ``text`` is what
        the user sees (a closed portal's sentence with UNAVAILABLE).  Only AUTHENTICATIONFAILED
        counts towards the connection's failed logins.
        """
        pending = self._pending
        if pending is None or pending.kind != "login":
            if self.closed:
                return
            raise RuntimeError("no LoginRequest is waiting for an answer")
        self._pending = None
        if ok:
            self._state = State.AUTHENTICATED
            self._user = pending.user
            self._parser.limits = self._auth_limits()
            self._status(pending.tag, "OK", text or "Logged in", self._capability_code())
            return
        self._status(pending.tag, "NO", text or "Authentication failed", ResponseCode.simple(code))
        if code == "AUTHENTICATIONFAILED":
            self._login_failures += 1
            if self._login_failures >= self.limits.max_login_failures:
                self._bye("Too many failed logins")

    def select_result(self, mailbox: SelectedMailbox) -> None:
        """The mailbox of the L{SelectMailbox} is open: write its state and enter SELECTED."""
        pending = self._pending
        if pending is None or pending.kind != "select":
            if self.closed:
                return
            raise RuntimeError("no SelectMailbox is waiting for an answer")
        self._pending = None
        read_only = pending.read_only or mailbox.read_only
        out = self._outgoing
        # RFC 3501 §6.3.1: FLAGS, EXISTS, RECENT, then OK with UNSEEN, PERMANENTFLAGS, UIDNEXT,
        # UIDVALIDITY; RFC 7162 §3.1.2.1: HIGHESTMODSEQ (or NOMODSEQ) on every SELECT.
        out.append(flags_response(mailbox.flags))
        out.append(exists_response(mailbox.exists))
        out.append(recent_response(mailbox.recent))
        if mailbox.first_unseen is not None:
            code = ResponseCode.number("UNSEEN", mailbox.first_unseen)
            self._status(None, "OK", f"Message {mailbox.first_unseen} is first unseen", code)
        permanent = () if read_only else mailbox.permanent_flags
        self._status(None, "OK", "Flags permitted", ResponseCode.permanent_flags(permanent))
        self._status(
            None, "OK", "Predicted next UID", ResponseCode.number("UIDNEXT", mailbox.uidnext)
        )
        self._status(
            None, "OK", "UIDs valid", ResponseCode.number("UIDVALIDITY", mailbox.uidvalidity)
        )
        if mailbox.highest_modseq is None:
            self._status(None, "OK", "No permanent modsequences", ResponseCode.simple("NOMODSEQ"))
        else:
            code = ResponseCode.number("HIGHESTMODSEQ", mailbox.highest_modseq)
            self._status(None, "OK", "Highest", code)
        self._state = State.SELECTED
        self._read_only = read_only
        self._errors = 0
        access = ResponseCode.simple("READ-ONLY" if read_only else "READ-WRITE")
        self._status(pending.tag, "OK", f"{pending.command} completed", access)

    def tls_started(self) -> None:
        """TLS is up after L{StartTLS}: forget everything said in the clear (RFC 3501 §6.2.1)."""
        if self.closed:
            return
        if not self._awaiting_tls:
            raise RuntimeError("tls_started() without a StartTLS event")
        self._awaiting_tls = False
        self._tls_active = True
        self._state = State.NOT_AUTHENTICATED
        self._parser.discard_buffered()

    def timeout(self) -> None:
        """The client was silent for L{idle_timeout} seconds: BYE (RFC 3501 §5.4)."""
        self._bye("Autologout; idle for too long")

    def bye(self, text: str) -> None:
        """
        The server cannot go on (the selected mailbox was deleted by another session): BYE
        instead of the answer the command waits for, then close (RFC 3501 §7.1.5).
        """
        self._bye(text)

    # -- output helpers ---------------------------------------------------------------------------

    def _capability_code(self) -> ResponseCode:
        return ResponseCode.capability(self.capabilities())

    def _status(
        self, tag: str | None, status: StatusName, text: str, code: ResponseCode | None = None
    ) -> None:
        try:
            line = status_response(tag, status, text, code)
        except ValueError:  # a tag the encoder will not write: answer untagged
            line = status_response(None, status, text, code)
        self._outgoing.append(line)

    def _count(self, status: str) -> None:
        """BAD answers in a row are counted; too many end the session."""
        if status != "BAD":
            self._errors = 0
            return
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            self._bye("Too many invalid commands")

    def _bad(self, tag: str | None, text: str, code: ResponseCode | None = None) -> None:
        self._status(tag, "BAD", text, code)
        self._count("BAD")

    def _ok(self, tag: str, text: str, code: ResponseCode | None = None) -> None:
        self._status(tag, "OK", text, code)
        self._count("OK")

    def _bye(self, text: str) -> None:
        if self.closed:
            return
        self._status(None, "BYE", text)
        self._close_reason = text
        self._shut()

    def _shut(self) -> None:
        self._state = State.LOGOUT
        self._pending = None
        self._sasl = None
        self._idle = None
        self._awaiting_tls = False
        self._parser.discard_buffered()

    def _expect_pending(self, tag: str) -> _Pending | None:
        pending = self._pending
        if pending is None:
            if self.closed:
                return None
            raise RuntimeError("no command is waiting for an answer")
        if pending.tag != tag:
            raise ValueError(f"the command waiting is {pending.tag!r}, not {tag!r}")
        return pending

    # -- dispatch ---------------------------------------------------------------------------------

    def _handle(self, parsed: ParserEvent) -> Event | None:
        if isinstance(parsed, ContinuationRequired):
            # RFC 3501 §7.5: a synchronizing literal within the caps is welcome.
            self._outgoing.append(continuation("Ready for literal data"))
            self._parser.accept_literal()
            return None
        if isinstance(parsed, CommandError):
            return self._command_error(parsed)
        if isinstance(parsed, AuthenticateResponse | AuthenticateCancelled):
            return self._sasl_response(parsed)
        if isinstance(parsed, IdleDone):
            return self._idle_done(parsed)
        if isinstance(parsed, AppendStart):
            return self._append_start(parsed)
        if isinstance(parsed, AppendData):
            return parsed
        if isinstance(parsed, AppendEnd):
            self._append = None
            self._pending = _Pending("command", parsed.tag, command="APPEND")
            return parsed
        return self._command(parsed)

    def _command_error(self, error: CommandError) -> Event | None:
        aborted: Event | None = None
        if self._append is not None and error.tag == self._append:
            aborted = AppendAborted(self._append)
            self._append = None
        code: ResponseCode | None = None
        if error.code == "BADCHARSET":
            code = ResponseCode.bad_charset(("US-ASCII", "UTF-8"))
        elif error.code is not None:
            code = ResponseCode.simple(error.code)
        if error.status == "NO":
            self._status(error.tag, "NO", error.text, code)
            self._count("NO")
        else:
            self._bad(error.tag, error.text, code)
        return aborted

    def _refused(self, tag: str, name: str) -> str | None:
        """BAD when ``name`` is not valid in this state (and the refusal is sent)."""
        row = _TABLE.get(name)
        if row is None:
            self._bad(tag, f"Unknown command {name}")
            return "unknown"
        if self._state not in row.states:
            refusal = _NEED_LOGIN if self._state is State.NOT_AUTHENTICATED else row.refusal
            self._bad(tag, refusal)
            return refusal
        return None

    def _append_start(self, event: AppendStart) -> Event | None:
        if self._refused(event.tag, "APPEND") is not None:
            self._parser.reject_literal()
            return None
        if event.needs_continuation:
            self._outgoing.append(continuation("Ready for literal data"))
            self._parser.accept_literal()
        self._append = event.tag
        self._errors = 0
        return event

    def _command(self, command: Command) -> Event | None:
        tag, name = command.tag, command.name
        if self._refused(tag, name) is not None:
            return None
        self._errors = 0
        state = self._state
        if isinstance(command, Simple):
            if name == "CAPABILITY":
                self._outgoing.append(capability_response(self.capabilities()))
                self._ok(tag, "CAPABILITY completed")
                return None
            if name == "NOOP" and state is not State.SELECTED:
                self._ok(tag, "NOOP completed")
                return None
            if name == "LOGOUT":
                self._status(None, "BYE", f"{_SERVER_NAME} logging out")
                self._status(tag, "OK", "LOGOUT completed")
                self._close_reason = "logout"
                self._shut()
                return None
            if name == "STARTTLS":
                return self._starttls(tag)
            if name == "NAMESPACE":
                self._outgoing.append(_NAMESPACE)
                self._ok(tag, "NAMESPACE completed")
                return None
            if name == "IDLE":
                # RFC 2177 §3: "+ idling", then updates, until DONE.
                self._outgoing.append(continuation("idling"))
                self._parser.start_idle()
                self._idle = tag
                return IdleStarted(tag)
            if name in ("CLOSE", "UNSELECT"):
                self._state = State.AUTHENTICATED
                self._read_only = False
        if isinstance(command, Login):
            return self._login(command)
        if isinstance(command, Authenticate):
            return self._authenticate(command)
        if isinstance(command, Id):
            if self._state is State.NOT_AUTHENTICATED and self._trusted:
                self._origin = _originating_ip(command.parameters) or self._origin
            self._outgoing.append(id_response((("name", _SERVER_NAME),)))
            self._ok(tag, "ID completed")
            return None
        if isinstance(command, Enable):
            enabled = [c for c in command.capabilities if c in _ENABLEABLE]
            if enabled:
                self._condstore = True
            self._outgoing.append(enabled_response(enabled))
            self._ok(tag, "ENABLE completed")
            return None
        if isinstance(command, Select):
            self._state = State.AUTHENTICATED  # RFC 3501 §6.3.1: the old mailbox is left first
            self._read_only = False
            if command.condstore:
                self._condstore = True
            read_only = command.name == "EXAMINE"
            self._pending = _Pending("select", tag, read_only=read_only, command=command.name)
            return SelectMailbox(tag, command.mailbox, read_only, command.condstore)
        # RFC 7162 §3.1, the CONDSTORE enabling commands: FETCH with CHANGEDSINCE or the MODSEQ
        # item, SEARCH with MODSEQ, STATUS (HIGHESTMODSEQ), STORE with UNCHANGEDSINCE.
        if isinstance(command, Fetch) and (
            command.changed_since is not None or any(a.name == "MODSEQ" for a in command.attributes)
        ):
            self._condstore = True
        if isinstance(command, Search) and mentions_modseq(command.key):
            self._condstore = True
        if isinstance(command, Status) and "HIGHESTMODSEQ" in command.items:
            self._condstore = True
        if isinstance(command, Store) and command.unchanged_since is not None:
            self._condstore = True
        self._pending = _Pending("command", tag, command=name)
        return BackendCommand(command)

    # -- STARTTLS ---------------------------------------------------------------------------------

    def _starttls(self, tag: str) -> Event | None:
        if self._tls_active:
            self._bad(tag, "TLS is already active")
            return None
        if not self._tls_available:
            self._bad(tag, "STARTTLS is not available")
            return None
        self._ok(tag, "Begin TLS negotiation now")
        # RFC 3501 §6.2.1, RFC 2595 §3.1: nothing pipelined in the clear behind STARTTLS counts.
        self._parser.discard_buffered()
        self._awaiting_tls = True
        return StartTLS()

    # -- LOGIN and AUTHENTICATE -------------------------------------------------------------------

    def _privacy_required(self, tag: str) -> bool:
        if self.plaintext_login_allowed:
            return False
        # RFC 3501 §6.2.3 (LOGINDISABLED), RFC 5530 §3: PRIVACYREQUIRED.
        self._status(
            tag,
            "NO",
            "Plaintext authentication is disallowed on this connection; use TLS",
            ResponseCode.simple("PRIVACYREQUIRED"),
        )
        self._count("NO")
        return True

    def _ask_login(self, tag: str, user: str, password: str, method: LoginMethod) -> LoginRequest:
        self._pending = _Pending("login", tag, user=user)
        return LoginRequest(tag, user, password, method, self._origin)

    def _login(self, command: Login) -> Event | None:
        if self._privacy_required(command.tag):
            return None
        return self._ask_login(command.tag, command.user, command.password, "LOGIN")

    def _authenticate(self, command: Authenticate) -> Event | None:
        tag = command.tag
        mechanism = command.mechanism
        if mechanism not in ("PLAIN", "LOGIN"):
            self._status(tag, "NO", f"Unsupported authentication mechanism {mechanism}")
            self._count("NO")
            return None
        if self._privacy_required(tag):
            return None
        initial = command.initial_response
        if mechanism == "PLAIN":
            if initial is not None:  # RFC 4959: SASL-IR
                return self._plain(tag, initial)
            self._sasl = _SASL(tag, "PLAIN")
            self._outgoing.append(continuation_challenge(b""))
        else:
            self._sasl = _SASL(tag, "LOGIN")
            if initial is not None:
                self._sasl.user = _text(initial)
                self._outgoing.append(continuation_challenge(b"Password:"))
            else:
                self._outgoing.append(continuation_challenge(b"Username:"))
        self._parser.expect_authenticate_response()
        return None

    def _plain(self, tag: str, message: bytes) -> Event | None:
        # RFC 4616 §2: [authzid] NUL authcid NUL passwd.
        parts = message.split(b"\x00")
        if len(parts) != 3 or not parts[1]:
            self._bad(tag, "Malformed PLAIN response")
            return None
        authzid, authcid, password = (_text(p) for p in parts)
        if authzid and authzid != authcid:
            self._status(
                tag, "NO", "Cannot act as another user", ResponseCode.simple("AUTHORIZATIONFAILED")
            )
            self._count("NO")
            return None
        return self._ask_login(tag, authcid, password, "AUTHENTICATE PLAIN")

    def _sasl_response(
        self, response: AuthenticateResponse | AuthenticateCancelled
    ) -> Event | None:
        sasl = self._sasl
        if sasl is None:  # the parser only yields these after expect_authenticate_response()
            return None
        self._sasl = None
        if isinstance(response, AuthenticateCancelled):
            # RFC 3501 §6.2.2: "*" cancels, and the server answers BAD.
            self._bad(sasl.tag, "AUTHENTICATE cancelled")
            return None
        if response.data is None:
            self._bad(sasl.tag, "Invalid base64 in AUTHENTICATE response")
            return None
        if sasl.mechanism == "PLAIN":
            return self._plain(sasl.tag, response.data)
        if sasl.user is None:
            sasl.user = _text(response.data)
            self._sasl = sasl
            self._outgoing.append(continuation_challenge(b"Password:"))
            self._parser.expect_authenticate_response()
            return None
        return self._ask_login(sasl.tag, sasl.user, _text(response.data), "AUTHENTICATE LOGIN")

    # -- IDLE -------------------------------------------------------------------------------------

    def _idle_done(self, done: IdleDone) -> Event | None:
        tag = self._idle
        if tag is None:
            return None
        self._idle = None
        if done.valid:
            self._ok(tag, "IDLE terminated")
        else:
            self._bad(tag, "Expected DONE")
        return IdleEnded(tag)
