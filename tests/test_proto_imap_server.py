"""
Tests for the sans-IO IMAP server engine (L{strata_twisted.proto.imap_server}).

No sockets: every test feeds bytes to an engine and compares the bytes it writes.  The scripted
adapter accepts the password "secret" for anyone, opens every mailbox with L{INBOX}, answers every
backend command with one untagged line and OK, and starts TLS at once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strata_twisted.proto.imap_parser import Fetch, ListMailboxes, SearchKey, Simple, Thread
from strata_twisted.proto.imap_response import ResponseCode, exists_response
from strata_twisted.proto.imap_server import (
    NEED_DATA,
    AppendAborted,
    AppendData,
    AppendEnd,
    AppendStart,
    BackendCommand,
    Close,
    Event,
    IdleEnded,
    IdleStarted,
    IMAPServerEngine,
    LoginRequest,
    SelectedMailbox,
    SelectMailbox,
    ServerLimits,
    StartTLS,
    State,
)

INBOX = SelectedMailbox(
    flags=("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"),
    exists=3,
    uidvalidity=1700000000,
    uidnext=4,
    permanent_flags=("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\*"),
    first_unseen=2,
    highest_modseq=17,
)
DEFAULT_LIMITS = ServerLimits()
PRE_CAPS = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE"
POST_CAPS = (
    "IMAP4rev1 LITERAL+ IDLE NAMESPACE UIDPLUS MOVE UNSELECT ID ENABLE SPECIAL-USE "
    "LIST-EXTENDED LIST-STATUS CONDSTORE ESEARCH SORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES"
)
PASSWORD = "secret"  # noqa: S105 - the scripted adapter's test password
PORTAL_CLOSED = "Your primary mail server is working; please use your usual mail app."


class Adapter:
    """What a server adapter does with the engine's events, scripted."""

    def __init__(self, engine: IMAPServerEngine, portal_open: bool = True) -> None:
        self.engine = engine
        self.portal_open = portal_open
        self.events: list[Event] = []
        self.appended = bytearray()

    def pump(self) -> None:
        for _ in range(100_000):  # a bound, so that a livelock fails instead of hanging
            event = self.engine.next_event()
            if event is NEED_DATA:
                assert not self.engine.awaiting_response
                return
            self.events.append(event)
            if isinstance(event, LoginRequest | SelectMailbox | BackendCommand | AppendEnd):
                assert self.engine.next_event() is NEED_DATA  # nothing parsed until answered
            self.answer(event)
        raise AssertionError("the engine never asked for more data")

    def answer(self, event: Event) -> None:
        engine = self.engine
        if isinstance(event, LoginRequest):
            if not self.portal_open:
                engine.login_result(False, "UNAVAILABLE", PORTAL_CLOSED)
            else:
                engine.login_result(event.password == PASSWORD)
        elif isinstance(event, SelectMailbox):
            if event.mailbox == "Missing":
                engine.complete(event.tag, "NO", "Mailbox does not exist")
            else:
                engine.select_result(INBOX)
        elif isinstance(event, BackendCommand):
            engine.respond([b"* BACKEND " + event.command.name.encode() + b"\r\n"])
            engine.complete(event.command.tag, "OK", f"{event.command.name} completed")
        elif isinstance(event, AppendData):
            self.appended += event.data
        elif isinstance(event, AppendEnd):
            engine.complete(event.tag, "OK", "APPEND completed", ResponseCode.append_uid(7, 4))
        elif isinstance(event, StartTLS):
            engine.tls_started()


def session(
    pieces: Iterable[bytes],
    *,
    tls_active: bool = False,
    tls_available: bool = False,
    trusted: bool = True,
    limits: ServerLimits = DEFAULT_LIMITS,
    portal_open: bool = True,
    between: Callable[[IMAPServerEngine], None] | None = None,
) -> tuple[bytes, Adapter]:
    """The bytes the engine writes for the greeting and each piece, and the adapter."""
    engine = IMAPServerEngine(
        limits, tls_active=tls_active, tls_available=tls_available, trusted=trusted
    )
    adapter = Adapter(engine, portal_open)
    engine.greeting()
    for piece in pieces:
        engine.receive_data(piece)
        adapter.pump()
        if between is not None:
            between(engine)
    return engine.data_to_send(), adapter


def lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").split("\r\n")[:-1]


def replies(data: bytes, **kwargs: object) -> list[str]:
    """The lines written after the greeting for ``data`` sent in one piece."""
    sent, _ = session([data], **kwargs)  # type: ignore[arg-type]
    return lines(sent)[1:]


LOGIN = b"a LOGIN alice@example.test secret\r\n"


# -- greeting and CAPABILITY ----------------------------------------------------------------------


def test_greeting_carries_capabilities() -> None:
    sent, _ = session([], tls_available=True, trusted=False)
    assert sent == (
        b"* OK [CAPABILITY " + PRE_CAPS.encode() + b" STARTTLS LOGINDISABLED] "
        b"Strata IMAP4rev1 ready\r\n"
    )


@pytest.mark.parametrize(
    ("tls_active", "tls_available", "trusted", "expected"),
    [
        pytest.param(
            False, True, False, f"{PRE_CAPS} STARTTLS LOGINDISABLED", id="clear_untrusted"
        ),
        pytest.param(False, True, True, f"{PRE_CAPS} STARTTLS AUTH=PLAIN AUTH=LOGIN", id="trusted"),
        pytest.param(True, True, False, f"{PRE_CAPS} AUTH=PLAIN AUTH=LOGIN", id="implicit_tls"),
        pytest.param(False, False, False, f"{PRE_CAPS} LOGINDISABLED", id="no_tls_at_all"),
    ],
)
def test_capability_before_login(
    tls_active: bool, tls_available: bool, trusted: bool, expected: str
) -> None:
    assert replies(
        b"c1 CAPABILITY\r\n", tls_active=tls_active, tls_available=tls_available, trusted=trusted
    ) == [f"* CAPABILITY {expected}", "c1 OK CAPABILITY completed"]


def test_capability_after_starttls_drops_starttls_and_logindisabled() -> None:
    sent, adapter = session(
        [b"s STARTTLS\r\n", b"c CAPABILITY\r\n"], tls_available=True, trusted=False
    )
    assert lines(sent)[1:] == [
        "s OK Begin TLS negotiation now",
        f"* CAPABILITY {PRE_CAPS} AUTH=PLAIN AUTH=LOGIN",
        "c OK CAPABILITY completed",
    ]
    assert adapter.engine.tls_active
    assert StartTLS() in adapter.events


def test_capability_after_login_is_the_full_list() -> None:
    assert replies(LOGIN + b"c CAPABILITY\r\n") == [
        f"a OK [CAPABILITY {POST_CAPS}] Logged in",
        f"* CAPABILITY {POST_CAPS}",
        "c OK CAPABILITY completed",
    ]


# -- LOGIN ----------------------------------------------------------------------------------------


def test_login_success_enters_authenticated_state() -> None:
    sent, adapter = session([LOGIN])
    assert adapter.engine.state is State.AUTHENTICATED
    assert adapter.engine.user == "alice@example.test"
    assert adapter.events == [
        LoginRequest("a", "alice@example.test", "secret", "LOGIN"),
    ]
    assert "secret" not in repr(adapter.events[0])


def test_login_failure() -> None:
    out = replies(b"a LOGIN alice wrong\r\n")
    assert out == ["a NO [AUTHENTICATIONFAILED] Authentication failed"]


def test_login_with_portal_closed_is_unavailable_with_the_sentence() -> None:
    sent, adapter = session([LOGIN], portal_open=False)
    assert lines(sent)[1:] == [f"a NO [UNAVAILABLE] {PORTAL_CLOSED}"]
    assert adapter.engine.state is State.NOT_AUTHENTICATED


def test_login_refused_without_tls_from_untrusted_network_without_asking() -> None:
    sent, adapter = session([LOGIN], trusted=False, tls_available=True)
    assert lines(sent)[1:] == [
        "a NO [PRIVACYREQUIRED] Plaintext authentication is disallowed on this connection; use TLS"
    ]
    assert adapter.events == []


def test_too_many_failed_logins_end_the_session() -> None:
    bad = b"".join(b"t%d LOGIN bob nope\r\n" % i for i in range(5))
    sent, adapter = session([bad], limits=ServerLimits(max_login_failures=3))
    assert lines(sent)[1:] == [
        "t0 NO [AUTHENTICATIONFAILED] Authentication failed",
        "t1 NO [AUTHENTICATIONFAILED] Authentication failed",
        "t2 NO [AUTHENTICATIONFAILED] Authentication failed",
        "* BYE Too many failed logins",
    ]
    assert adapter.events[-1] == Close("Too many failed logins")
    assert sum(isinstance(e, LoginRequest) for e in adapter.events) == 3
    assert adapter.engine.closed


def test_nothing_is_parsed_while_a_login_waits() -> None:
    engine = IMAPServerEngine(trusted=True)
    engine.receive_data(LOGIN + b"b SELECT INBOX\r\n")
    event = engine.next_event()
    assert isinstance(event, LoginRequest)
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b""
    engine.login_result(True)
    assert engine.next_event() == SelectMailbox("b", "INBOX", False, False)


def test_input_beyond_the_cap_while_waiting_ends_the_session() -> None:
    engine = IMAPServerEngine(trusted=True)
    engine.receive_data(LOGIN)
    assert isinstance(engine.next_event(), LoginRequest)
    engine.receive_data(b"x" * 100_000)
    assert engine.closed
    assert engine.data_to_send().endswith(
        b"* BYE Too much input while a command is in progress\r\n"
    )


# -- AUTHENTICATE ---------------------------------------------------------------------------------


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_authenticate_plain_with_sasl_ir() -> None:
    sent, adapter = session([b"a AUTHENTICATE PLAIN " + b64(b"\x00alice\x00secret") + b"\r\n"])
    assert adapter.events == [LoginRequest("a", "alice", "secret", "AUTHENTICATE PLAIN")]
    assert lines(sent)[1] == f"a OK [CAPABILITY {POST_CAPS}] Logged in"


def test_authenticate_plain_with_continuation() -> None:
    sent, adapter = session(
        [b"a AUTHENTICATE PLAIN\r\n", b64(b"alice\x00alice\x00secret") + b"\r\n"]
    )
    assert lines(sent)[1:] == ["+ ", f"a OK [CAPABILITY {POST_CAPS}] Logged in"]
    assert adapter.events == [LoginRequest("a", "alice", "secret", "AUTHENTICATE PLAIN")]


def test_authenticate_plain_for_another_user_is_refused() -> None:
    sent, adapter = session([b"a AUTHENTICATE PLAIN " + b64(b"bob\x00alice\x00secret") + b"\r\n"])
    assert lines(sent)[1:] == ["a NO [AUTHORIZATIONFAILED] Cannot act as another user"]
    assert adapter.events == []


def test_authenticate_login() -> None:
    sent, adapter = session(
        [b"a AUTHENTICATE LOGIN\r\n", b64(b"alice") + b"\r\n", b64(b"secret") + b"\r\n"]
    )
    assert lines(sent)[1:] == [
        "+ " + b64(b"Username:").decode(),
        "+ " + b64(b"Password:").decode(),
        f"a OK [CAPABILITY {POST_CAPS}] Logged in",
    ]
    assert adapter.events == [LoginRequest("a", "alice", "secret", "AUTHENTICATE LOGIN")]


def test_authenticate_cancelled_with_star() -> None:
    sent, adapter = session([b"a AUTHENTICATE PLAIN\r\n*\r\nb NOOP\r\n"])
    assert lines(sent)[1:] == ["+ ", "a BAD AUTHENTICATE cancelled", "b OK NOOP completed"]
    assert adapter.events == []
    assert adapter.engine.state is State.NOT_AUTHENTICATED


def test_authenticate_bad_base64_and_unknown_mechanism() -> None:
    assert replies(b"a AUTHENTICATE LOGIN\r\n!!!\r\nb AUTHENTICATE CRAM-MD5\r\n") == [
        "+ " + b64(b"Username:").decode(),
        "a BAD Invalid base64 in AUTHENTICATE response",
        "b NO Unsupported authentication mechanism CRAM-MD5",
    ]


def test_authenticate_refused_where_plaintext_is_not_allowed() -> None:
    out = replies(
        b"a AUTHENTICATE PLAIN " + b64(b"\x00alice\x00secret") + b"\r\n",
        trusted=False,
    )
    assert out == [
        "a NO [PRIVACYREQUIRED] Plaintext authentication is disallowed on this connection; use TLS"
    ]


# -- STARTTLS -------------------------------------------------------------------------------------


def test_login_pipelined_behind_starttls_is_never_executed() -> None:
    # CVE-2011-0411 class: the LOGIN arrives in the same clear-text packet as STARTTLS.
    sent, adapter = session(
        [b"s STARTTLS\r\n" + LOGIN + b"c CAPABILITY\r\n"],
        tls_available=True,
        trusted=True,
    )
    assert lines(sent)[1:] == ["s OK Begin TLS negotiation now"]
    assert not any(isinstance(e, LoginRequest) for e in adapter.events)
    assert adapter.engine.state is State.NOT_AUTHENTICATED


def test_bytes_received_before_tls_started_are_dropped() -> None:
    engine = IMAPServerEngine(tls_available=True, trusted=True)
    engine.receive_data(b"s STARTTLS\r\n")
    assert engine.next_event() == StartTLS()
    engine.receive_data(LOGIN)  # still in the clear: the handshake has not finished
    assert engine.next_event() is NEED_DATA
    engine.tls_started()
    assert engine.next_event() is NEED_DATA
    engine.receive_data(b"c NOOP\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"s OK Begin TLS negotiation now\r\nc OK NOOP completed\r\n"


def test_starttls_refused_when_active_or_unavailable_or_logged_in() -> None:
    assert replies(b"s STARTTLS\r\n", tls_active=True, tls_available=True) == [
        "s BAD TLS is already active"
    ]
    assert replies(b"s STARTTLS\r\n") == ["s BAD STARTTLS is not available"]
    assert replies(LOGIN + b"s STARTTLS\r\n", tls_available=True)[1:] == ["s BAD Already logged in"]


# -- state errors and parser errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"x SELECT INBOX\r\n", "x BAD Log in first", id="select_before_login"),
        pytest.param(b'x LIST "" *\r\n', "x BAD Log in first", id="list_before_login"),
        pytest.param(b"x NAMESPACE\r\n", "x BAD Log in first", id="namespace_before_login"),
        pytest.param(b"x FETCH 1 FLAGS\r\n", "x BAD Log in first", id="fetch_before_login"),
        pytest.param(LOGIN + b"x FETCH 1 FLAGS\r\n", "x BAD No mailbox selected", id="fetch"),
        pytest.param(
            LOGIN + b"x UID STORE 1 +FLAGS (\\Seen)\r\n",
            "x BAD No mailbox selected",
            id="uid_store",
        ),
        pytest.param(LOGIN + b"x CLOSE\r\n", "x BAD No mailbox selected", id="close"),
        pytest.param(LOGIN + b"x LOGIN a b\r\n", "x BAD Already logged in", id="login_twice"),
        pytest.param(
            LOGIN + b"s SELECT INBOX\r\nx ENABLE CONDSTORE\r\n",
            "x BAD ENABLE is not allowed in this state",
            id="enable_selected",
        ),
        pytest.param(b"x FROB\r\n", "x BAD unknown command FROB", id="unknown"),
        pytest.param(b"x LOGIN\r\n", None, id="syntax_error_keeps_tag"),
        pytest.param(b"{{{\r\n", None, id="no_tag_untagged_bad"),
    ],
)
def test_commands_refused(data: bytes, expected: str | None) -> None:
    out = replies(data)
    last = out[-1]
    if expected is not None:
        assert last == expected
    elif data.startswith(b"x"):
        assert last.startswith("x BAD ")
    else:
        assert last.startswith("* BAD ")


def test_thread_needs_a_selected_mailbox() -> None:
    assert replies(b"t THREAD REFERENCES UTF-8 ALL\r\n")[-1] == "t BAD Log in first"
    assert replies(LOGIN + b"t UID THREAD REFERENCES UTF-8 ALL\r\n")[-1] == (
        "t BAD No mailbox selected"
    )


def test_refused_commands_do_not_reach_the_backend() -> None:
    _, adapter = session([LOGIN + b"x FETCH 1 FLAGS\r\ny EXPUNGE\r\n"])
    assert not any(isinstance(e, BackendCommand) for e in adapter.events)


def test_too_many_errors_in_a_row_end_the_session() -> None:
    sent, adapter = session([b"x FROB\r\n" * 4 + b"n NOOP\r\n"], limits=ServerLimits(max_errors=3))
    assert lines(sent)[1:] == ["x BAD unknown command FROB"] * 3 + [
        "* BYE Too many invalid commands"
    ]
    assert adapter.events == [Close("Too many invalid commands")]


def test_errors_must_be_in_a_row() -> None:
    sent, adapter = session(
        [b"x FROB\r\nx FROB\r\nn NOOP\r\nx FROB\r\nx FROB\r\nn NOOP\r\n"],
        limits=ServerLimits(max_errors=3),
    )
    assert not adapter.engine.closed
    assert lines(sent)[-1] == "n OK NOOP completed"


def test_preauth_literal_cap_is_small() -> None:
    out = replies(b"a LOGIN {9000}\r\n", limits=ServerLimits(preauth_literal_size=8192))
    assert out == ["a BAD [TOOBIG] literal too large"]


def test_login_with_a_literal_password() -> None:
    sent, adapter = session([b"a LOGIN alice {6}\r\n", b"secret\r\n"])
    assert lines(sent)[1:] == [
        "+ Ready for literal data",
        f"a OK [CAPABILITY {POST_CAPS}] Logged in",
    ]


# -- ID, ENABLE, NAMESPACE, NOOP, LOGOUT ----------------------------------------------------------


def test_id_in_any_state() -> None:
    assert replies(b'i ID ("name" "imaplib")\r\n') == [
        '* ID ("name" "Strata")',
        "i OK ID completed",
    ]


def test_a_legal_id_of_30_long_pairs_before_login() -> None:
    # RFC 2971 §3.3: up to 30 pairs, fields of 30 octets, values of 1024 (imaptest's "id" test,
    # about 32 KiB on one line) is legal before login, where other lines stay short.
    pairs = b" ".join(
        b'"%s" "%s"' % ((b"f%02d" % n).ljust(30, b"x"), b"v" * 1024) for n in range(30)
    )
    data = b"i ID (" + pairs + b")\r\n"
    assert len(data) > DEFAULT_LIMITS.preauth_line_length
    assert replies(data + b"n NOOP\r\n") == [
        '* ID ("name" "Strata")',
        "i OK ID completed",
        "n OK NOOP completed",
    ]
    too_long = b"i ID (" + pairs + b' "f31" "v")\r\n'
    assert replies(too_long)[-1] == "i BAD ID has more than 30 field-value pairs (RFC 2971)"
    assert replies(b"a LOGIN " + b"u" * 9000 + b" p\r\n")[-1] == "a BAD command line too long"


def origins(adapter: Adapter) -> list[str | None]:
    return [e.origin for e in adapter.events if isinstance(e, LoginRequest)]


ROUNDCUBE_ID = b'i ID ("name" "Roundcube" "x-originating-ip" "203.0.113.9")\r\n'


def test_a_trusted_clients_id_names_the_end_user_for_the_login() -> None:
    # Roundcube's preauth_ident: ID before LOGIN (or AUTHENTICATE), Dovecot's convention.
    sent, adapter = session([ROUNDCUBE_ID + LOGIN])
    assert lines(sent)[1:3] == ['* ID ("name" "Strata")', "i OK ID completed"]
    assert origins(adapter) == ["203.0.113.9"]
    assert adapter.engine.origin == "203.0.113.9"
    plain = base64.b64encode(b"\0alice@example.test\0secret")
    _, adapter = session([ROUNDCUBE_ID + b"p AUTHENTICATE PLAIN " + plain + b"\r\n"])
    assert origins(adapter) == ["203.0.113.9"]


@pytest.mark.parametrize(
    ("parameters", "origin"),
    [
        (b'("X-Originating-IP" "2001:DB8::9")', "2001:db8::9"),  # RFC 2971: any case
        (b'("x-originating-ip" "[2001:db8::9]")', "2001:db8::9"),
        (b'("x-originating-ip" "203.0.113.9" "x-originating-port" "51234")', "203.0.113.9"),
        (b'("x-originating-ip" "not an address")', None),
        (b'("x-originating-ip" NIL)', None),
        (b'("name" "Roundcube")', None),
        (b"NIL", None),
    ],
)
def test_the_originating_ip_values(parameters: bytes, origin: str | None) -> None:
    _, adapter = session([b"i ID " + parameters + b"\r\n" + LOGIN])
    assert origins(adapter) == [origin]


def test_an_untrusted_clients_originating_ip_is_ignored() -> None:
    _, adapter = session([ROUNDCUBE_ID + LOGIN], trusted=False, tls_active=True)
    assert origins(adapter) == [None]
    assert adapter.engine.origin is None


def test_an_originating_ip_after_login_is_ignored() -> None:
    _, adapter = session([LOGIN + ROUNDCUBE_ID])
    assert adapter.engine.origin is None
    assert origins(adapter) == [None]


def test_a_later_id_without_an_address_keeps_the_first() -> None:
    _, adapter = session([ROUNDCUBE_ID + b'j ID ("name" "again")\r\n' + LOGIN])
    assert origins(adapter) == ["203.0.113.9"]


def test_enable_condstore_and_namespace() -> None:
    sent, adapter = session([LOGIN + b"e ENABLE CONDSTORE X-UNKNOWN\r\nn NAMESPACE\r\n"])
    assert lines(sent)[2:] == [
        "* ENABLED CONDSTORE",
        "e OK ENABLE completed",
        '* NAMESPACE (("" "/")) NIL NIL',
        "n OK NAMESPACE completed",
    ]
    assert adapter.engine.condstore_enabled


def test_logout() -> None:
    sent, adapter = session([b"l LOGOUT\r\nn NOOP\r\n"])
    assert lines(sent)[1:] == ["* BYE Strata logging out", "l OK LOGOUT completed"]
    assert adapter.events == [Close("logout")]
    assert adapter.engine.state is State.LOGOUT


def test_timeout_says_bye_and_timeouts_depend_on_state() -> None:
    engine = IMAPServerEngine(trusted=True)
    assert engine.idle_timeout == 60
    engine.receive_data(LOGIN)
    assert isinstance(engine.next_event(), LoginRequest)
    engine.login_result(True)
    assert engine.idle_timeout == 30 * 60
    engine.data_to_send()
    engine.timeout()
    assert engine.data_to_send() == b"* BYE Autologout; idle for too long\r\n"
    assert engine.next_event() == Close("Autologout; idle for too long")
    assert engine.next_event() is NEED_DATA


def test_idle_timeout_below_thirty_minutes_is_refused() -> None:
    with pytest.raises(ValueError, match="30 minutes"):
        ServerLimits(idle_timeout=600)


# -- SELECT, CLOSE, UNSELECT ----------------------------------------------------------------------


SELECT_LINES = [
    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    "* 3 EXISTS",
    "* 0 RECENT",
    "* OK [UNSEEN 2] Message 2 is first unseen",
]
SELECT_TAIL = [
    "* OK [UIDNEXT 4] Predicted next UID",
    "* OK [UIDVALIDITY 1700000000] UIDs valid",
    "* OK [HIGHESTMODSEQ 17] Highest",
]


def test_select_writes_the_mailbox_state() -> None:
    sent, adapter = session([LOGIN + b"s SELECT INBOX\r\n"])
    assert lines(sent)[2:] == SELECT_LINES + [
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
        *SELECT_TAIL,
        "s OK [READ-WRITE] SELECT completed",
    ]
    assert adapter.engine.state is State.SELECTED
    assert SelectMailbox("s", "INBOX", False, False) in adapter.events


def test_examine_is_read_only() -> None:
    sent, adapter = session([LOGIN + b"s EXAMINE INBOX (CONDSTORE)\r\n"])
    assert lines(sent)[2:] == SELECT_LINES + [
        "* OK [PERMANENTFLAGS ()] Flags permitted",
        *SELECT_TAIL,
        "s OK [READ-ONLY] EXAMINE completed",
    ]
    assert SelectMailbox("s", "INBOX", True, True) in adapter.events
    assert adapter.engine.read_only
    assert adapter.engine.condstore_enabled


def test_failed_select_leaves_the_selected_state() -> None:
    sent, adapter = session([LOGIN + b"s SELECT INBOX\r\nt SELECT Missing\r\nf FETCH 1 FLAGS\r\n"])
    assert lines(sent)[-2:] == ["t NO Mailbox does not exist", "f BAD No mailbox selected"]
    assert adapter.engine.state is State.AUTHENTICATED


@pytest.mark.parametrize("verb", [b"CLOSE", b"UNSELECT"])
def test_close_and_unselect_leave_the_selected_state(verb: bytes) -> None:
    sent, adapter = session([LOGIN + b"s SELECT INBOX\r\nc " + verb + b"\r\n"])
    assert lines(sent)[-2:] == [f"* BACKEND {verb.decode()}", f"c OK {verb.decode()} completed"]
    assert adapter.events[-1] == BackendCommand(Simple("c", verb.decode()))
    assert adapter.engine.state is State.AUTHENTICATED


# -- backend commands -----------------------------------------------------------------------------


def test_thread_passes_through_like_sort() -> None:
    # RFC 5256 §3: the engine hands THREAD over as parsed; an unknown algorithm is BAD at once.
    sent, adapter = session(
        [
            LOGIN
            + b"s SELECT INBOX\r\nt UID THREAD REFERENCES UTF-8 UNSEEN\r\nb THREAD X UTF-8 ALL\r\n"
        ]
    )
    commands = [e.command for e in adapter.events if isinstance(e, BackendCommand)]
    assert commands == [Thread("t", "REFERENCES", "UTF-8", SearchKey("UNSEEN"), uid=True)]
    assert lines(sent)[-3:] == [
        "* BACKEND THREAD",
        "t OK THREAD completed",
        "b BAD unknown threading algorithm X",
    ]


def test_backend_command_passes_through_and_is_completed() -> None:
    sent, adapter = session(
        [LOGIN + b's SELECT INBOX\r\nf UID FETCH 1:* (FLAGS)\r\nl LIST "" *\r\n']
    )
    commands = [e.command for e in adapter.events if isinstance(e, BackendCommand)]
    assert isinstance(commands[0], Fetch) and commands[0].uid
    assert isinstance(commands[1], ListMailboxes)
    assert lines(sent)[-4:] == [
        "* BACKEND FETCH",
        "f OK FETCH completed",
        "* BACKEND LIST",
        "l OK LIST completed",
    ]


def test_noop_goes_to_the_backend_only_when_selected() -> None:
    sent, adapter = session([LOGIN + b"n NOOP\r\ns SELECT INBOX\r\nm NOOP\r\n"])
    assert [e for e in adapter.events if isinstance(e, BackendCommand)] == [
        BackendCommand(Simple("m", "NOOP"))
    ]
    assert "n OK NOOP completed" in lines(sent)


def test_complete_checks_the_tag() -> None:
    engine = IMAPServerEngine(trusted=True)
    engine.receive_data(LOGIN + b'l LSUB "" *\r\n')
    assert isinstance(engine.next_event(), LoginRequest)
    engine.login_result(True)
    assert isinstance(engine.next_event(), BackendCommand)
    with pytest.raises(ValueError):
        engine.complete("zz", "OK", "done")
    with pytest.raises(RuntimeError):
        engine.login_result(True)
    engine.complete("l", "OK", "LSUB completed")
    with pytest.raises(RuntimeError):
        engine.complete("l", "OK", "again")


def test_append_streams_and_is_completed() -> None:
    message = b"Subject: hi\r\n\r\nbody\r\n"
    sent, adapter = session(
        [
            LOGIN + b"p APPEND Sent (\\Seen) {%d}\r\n" % len(message),
            message[:5],
            message[5:] + b"\r\n",
        ]
    )
    assert lines(sent)[2:] == ["+ Ready for literal data", "p OK [APPENDUID 7 4] APPEND completed"]
    assert bytes(adapter.appended) == message
    assert isinstance(adapter.events[1], AppendStart)
    assert isinstance(adapter.events[-1], AppendEnd)


def test_append_before_login_is_refused() -> None:
    out = replies(b"p APPEND INBOX {0+}\r\n\r\nn NOOP\r\n")
    assert out == ["p BAD Log in first", "n OK NOOP completed"]


def test_append_cut_off_is_aborted() -> None:
    _, adapter = session([LOGIN + b"p APPEND INBOX {3+}\r\nabcEXTRA\r\n"])
    assert adapter.events[-1] == AppendAborted("p")


# -- IDLE -----------------------------------------------------------------------------------------


def test_idle_with_pushed_updates_and_done() -> None:
    def push(engine: IMAPServerEngine) -> None:
        if engine.idling:
            engine.respond([exists_response(4), b"* 2 FETCH (FLAGS (\\Seen))\r\n"])

    sent, adapter = session(
        [LOGIN + b"s SELECT INBOX\r\n", b"i IDLE\r\n", b"DONE\r\n"], between=push
    )
    assert lines(sent)[-5:] == [
        "s OK [READ-WRITE] SELECT completed",
        "+ idling",
        "* 4 EXISTS",
        "* 2 FETCH (FLAGS (\\Seen))",
        "i OK IDLE terminated",
    ]
    assert adapter.events[-2:] == [IdleStarted("i"), IdleEnded("i")]


def test_idle_ended_by_something_else_is_bad() -> None:
    out = replies(LOGIN + b"i IDLE\r\nNOPE\r\n")
    assert out[-2:] == ["+ idling", "i BAD Expected DONE"]


def test_updates_can_be_pushed_between_commands() -> None:
    engine = IMAPServerEngine(trusted=True)
    engine.respond([exists_response(9)])
    assert engine.data_to_send() == b"* 9 EXISTS\r\n"


# -- properties -----------------------------------------------------------------------------------

VALID_SESSION = [
    b"c CAPABILITY\r\n",
    b'i ID ("name" "test")\r\n',
    b"a AUTHENTICATE PLAIN\r\n",
    b64(b"\x00alice\x00secret") + b"\r\n",
    b"e ENABLE CONDSTORE\r\n",
    b"n NAMESPACE\r\n",
    b'l LIST "" "*"\r\n',
    b"p APPEND Drafts {11+}\r\nhello world\r\n",
    b"q APPEND Drafts {5}\r\nhello\r\n",
    b"s SELECT INBOX\r\n",
    b"f UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])\r\n",
    b"x FETCH\r\n",
    b"i2 IDLE\r\nDONE\r\n",
    b"u UNSELECT\r\n",
    b"o LOGOUT\r\n",
]


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    edges = [0, *cuts, len(data)]
    # An empty piece would mean the client closed the connection.
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_of_a_session_gives_the_same_output(data: st.DataObject) -> None:
    stream = b"".join(VALID_SESSION)
    whole, first = session([stream])
    assert b"o OK LOGOUT completed" in whole
    assert first.events[-1] == Close("logout")
    pieces = data.draw(split(stream))
    sent, adapter = session(pieces)
    assert sent == whole
    assert adapter.events[-1] == Close("logout")


def test_byte_by_byte_session_gives_the_same_output() -> None:
    stream = b"".join(VALID_SESSION)
    assert session([bytes([b]) for b in stream])[0] == session([stream])[0]


GARBAGE = st.sampled_from(
    [b"{", b"}", b"{5}", b"{5+}", b"\r\n", b" ", b"*", b"a", b"\x00", b"\xff", b"DONE"]
    + [b"a LOGIN x secret\r\n", b"b SELECT INBOX\r\n", b"c IDLE\r\n", b"d AUTHENTICATE LOGIN\r\n"]
    + [b"e STARTTLS\r\n", b"f APPEND INBOX {3+}\r\n", b"g FETCH 1 FLAGS\r\n", b"h CLOSE\r\n"]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(GARBAGE | st.binary(max_size=30), max_size=40), st.booleans(), st.booleans())
def test_arbitrary_bytes_never_raise(parts: list[bytes], trusted: bool, tls: bool) -> None:
    sent, adapter = session(parts, trusted=trusted, tls_available=tls)  # no exception
    assert sent.endswith(b"\r\n")
