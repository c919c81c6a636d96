"""
Tests for the sans-IO ESMTP server engine (L{strata_twisted.proto.smtp_server}) and its L{Reply}.

No sockets: every test feeds bytes to an engine and reads back its events and reply bytes.  The
scripted driver answers every event that needs a response with the engine's default, except
DataEnd, which gets C{250 2.0.0 Ok: queued}.
"""

from __future__ import annotations

import base64
import tracemalloc
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strata_twisted.errors import InsufficientStorage, MailError, RelayDenied
from strata_twisted.proto.smtp_reply import Reply
from strata_twisted.proto.smtp_server import (
    NEED_DATA,
    Auth,
    DataAborted,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    Refused,
    Reset,
    ServerLimits,
    SMTPServerEngine,
    StartTLS,
    State,
    XClient,
)

HOST = "mx.strata.test"
QUEUED = Reply(250, "2.0.0", "Ok: queued")
DEFAULT_LIMITS = ServerLimits()
Answer = Callable[[Event], Reply | None]

GREET = b"EHLO client.test\r\n"
IN_MAIL = GREET + b"MAIL FROM:<alice@sender.test>\r\n"
IN_RCPT = IN_MAIL + b"RCPT TO:<bob@strata.test>\r\n"
IN_DATA = IN_RCPT + b"DATA\r\n"


def default_answer(event: Event) -> Reply | None:
    return QUEUED if isinstance(event, DataEnd) else None


def pump(engine: SMTPServerEngine, events: list[Event], answer: Answer = default_answer) -> None:
    """Take every event the engine has; answer those that need it, as an adapter would."""
    for _ in range(100_000):  # a bound, so that a livelock fails instead of hanging
        event = engine.next_event()
        if event is NEED_DATA:
            assert not engine.awaiting_response
            return
        events.append(event)
        if isinstance(event, Hello | MailFrom | RcptTo | DataStart | DataEnd | Auth):
            assert engine.awaiting_response
            assert engine.next_event() is NEED_DATA  # nothing is parsed until respond()
            engine.respond(answer(event))
        elif isinstance(event, StartTLS):
            engine.tls_started()
    raise AssertionError("the engine never asked for more data")


def merge_chunks(events: Iterable[Event]) -> list[Event]:
    """Join adjacent DataChunks: where content is cut into chunks is not part of the contract."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, DataChunk) and merged and isinstance(merged[-1], DataChunk):
            merged[-1] = DataChunk(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def drive(
    pieces: Iterable[bytes],
    limits: ServerLimits = DEFAULT_LIMITS,
    answer: Answer = default_answer,
    *,
    tls_available: bool = False,
    tls_active: bool = False,
    auth_mechanisms: tuple[str, ...] = (),
    auth_plaintext: bool = False,
    auth_required: bool = False,
    xclient: bool = False,
) -> tuple[list[Event], bytes, SMTPServerEngine]:
    """Feed the pieces one by one, pumping events after each; the events, the bytes sent."""
    engine = SMTPServerEngine(
        HOST,
        limits,
        tls_available=tls_available,
        tls_active=tls_active,
        auth_mechanisms=auth_mechanisms,
        auth_plaintext=auth_plaintext,
        auth_required=auth_required,
        xclient=xclient,
    )
    events: list[Event] = []
    for piece in pieces:
        engine.receive_data(piece)
        pump(engine, events, answer)
    return merge_chunks(events), engine.data_to_send(), engine


def last_lines(sent: bytes) -> list[str]:
    """The last line of every reply (``code SP text``)."""
    return [line for line in sent.decode("ascii").split("\r\n") if line[3:4] == " "]


def talk(
    data: bytes,
    limits: ServerLimits = DEFAULT_LIMITS,
    answer: Answer = default_answer,
    *,
    tls_available: bool = False,
    tls_active: bool = False,
    auth_mechanisms: tuple[str, ...] = (),
    auth_plaintext: bool = False,
    auth_required: bool = False,
) -> tuple[list[Event], list[str], SMTPServerEngine]:
    """One read of ``data``: the events, the last line of each reply, the engine."""
    events, sent, engine = drive(
        [data],
        limits,
        answer,
        tls_available=tls_available,
        tls_active=tls_active,
        auth_mechanisms=auth_mechanisms,
        auth_plaintext=auth_plaintext,
        auth_required=auth_required,
    )
    return events, last_lines(sent), engine


def message_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataChunk))


# -- Reply -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        pytest.param(Reply(250, "2.1.0", "Ok"), b"250 2.1.0 Ok\r\n", id="single_line"),
        pytest.param(
            Reply(250, None, ("mx.test", "PIPELINING", "SIZE 10")),
            b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
            id="multi_line_without_enhanced",
        ),
        pytest.param(
            Reply(550, "5.7.1", ("first", "second")),
            b"550-5.7.1 first\r\n550 5.7.1 second\r\n",
            id="enhanced_code_on_every_line",
        ),
        pytest.param(
            Reply(250, "2.0.0", "a\r\n250 injected\r\nb"),
            b"250 2.0.0 a??250 injected??b\r\n",
            id="crlf_in_text_cannot_inject_a_reply",
        ),
        pytest.param(Reply(550, "5.1.1", "Bücher"), b"550 5.1.1 B?cher\r\n", id="non_ascii"),
        pytest.param(Reply(250, None, ""), b"250\r\n", id="empty_text"),
        pytest.param(Reply(250, "2.0.0", ()), b"250 2.0.0\r\n", id="no_lines"),
        pytest.param(Reply(354, None, "Go"), b"354 Go\r\n", id="intermediate"),
    ],
)
def test_reply_to_bytes(reply: Reply, wire: bytes) -> None:
    assert reply.to_bytes() == wire


def test_reply_line_is_at_most_512_octets() -> None:
    """RFC 5321 §4.5.3.1.5: a reply line, code and CRLF included, is at most 512 octets."""
    wire = Reply(550, "5.7.1", "x" * 1000).to_bytes()
    assert len(wire) == 512
    assert wire.endswith(b"x\r\n")


@pytest.mark.parametrize(
    ("code", "ok"), [(220, True), (250, True), (354, True), (421, False), (554, False)]
)
def test_reply_ok_is_2xx_or_3xx(code: int, ok: bool) -> None:
    assert Reply(code, None, "x").ok is ok


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(99, None), (600, None), (250, "2.0"), (250, "3.0.0"), (550, "4.1.1"), (250, "2.0.0x")],
)
def test_reply_rejects_malformed_codes(code: int, enhanced: str | None) -> None:
    with pytest.raises(ValueError):
        Reply(code, enhanced, "x")


def test_reply_from_error() -> None:
    assert Reply.from_error(RelayDenied("not ours")) == Reply(550, "5.7.1", "Relay access denied")
    assert Reply.from_error(InsufficientStorage()).to_bytes() == (
        b"452 4.3.1 Insufficient system storage, try again later\r\n"
    )


def test_reply_from_error_with_mismatched_class_takes_the_class_of_its_code() -> None:
    """MailError(code=550) keeps the class default 4.3.0; the reply must not raise on that."""
    assert Reply.from_error(MailError(code=550, public_text="No")) == Reply(550, "5.3.0", "No")
    assert Reply.from_error(MailError(code=554, enhanced="5.7")) == Reply(
        554, "5.0.0", "Error: internal error, try again later"
    )


# -- commands --------------------------------------------------------------------------------------

COMMAND_CASES = [
    # (id, bytes before the command, the command, the last reply line)
    ("ehlo_without_argument", b"", b"EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname"),
    ("helo_without_argument", b"", b"HELO   \r\n", "501 5.5.4 Syntax: HELO hostname"),
    ("helo_with_control_character", b"", b"HELO a\x01b\r\n", "501 5.5.4 Syntax: HELO hostname"),
    ("helo_with_invalid_utf8", b"", b"HELO a\xffb\r\n", "501 5.5.4 Syntax: HELO hostname"),
    ("helo", b"", b"HELO client.test\r\n", f"250 {HOST}"),
    ("lowercase_helo", b"", b"helo client.test\r\n", f"250 {HOST}"),
    ("bare_lf_command", b"", b"HELO client.test\n", f"250 {HOST}"),
    ("mail_before_helo", b"", b"MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: send HELO/EHLO first"),
    ("rcpt_before_helo", b"", b"RCPT TO:<a@b.test>\r\n", "503 5.5.1 Error: need MAIL command"),
    ("data_before_helo", b"", b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
    ("mail", GREET, b"MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok"),
    ("mail_lowercase", GREET, b"mail from:<a@b.test>\r\n", "250 2.1.0 Ok"),
    ("mail_space_after_colon", GREET, b"MAIL FROM: <a@b.test>\r\n", "250 2.1.0 Ok"),
    ("mail_trailing_space", GREET, b"MAIL FROM:<a@b.test> \r\n", "250 2.1.0 Ok"),
    ("mail_null_sender", GREET, b"MAIL FROM:<>\r\n", "250 2.1.0 Ok"),
    ("mail_address_literal", GREET, b"MAIL FROM:<a@[192.0.2.1]>\r\n", "250 2.1.0 Ok"),
    ("mail_without_from", GREET, b"MAIL <a@b.test>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (
        "mail_without_brackets",
        GREET,
        b"MAIL FROM:a@b.test\r\n",
        "501 5.1.7 Bad sender address syntax",
    ),
    (
        "mail_unclosed_bracket",
        GREET,
        b"MAIL FROM:<a@b.test\r\n",
        "501 5.1.7 Bad sender address syntax",
    ),
    ("mail_no_domain", GREET, b"MAIL FROM:<alice>\r\n", "501 5.1.7 Bad sender address syntax"),
    ("mail_empty_domain", GREET, b"MAIL FROM:<alice@>\r\n", "501 5.1.7 Bad sender address syntax"),
    ("mail_empty_local", GREET, b"MAIL FROM:<@b.test>\r\n", "501 5.1.7 Bad sender address syntax"),
    (
        "mail_space_in_local",
        GREET,
        b"MAIL FROM:<a b@c.test>\r\n",
        "501 5.1.7 Bad sender address syntax",
    ),
    (
        "mail_unclosed_quote",
        GREET,
        b'MAIL FROM:<"a@b.test>\r\n',
        "501 5.1.7 Bad sender address syntax",
    ),
    (
        "mail_invalid_utf8",
        GREET,
        b"MAIL FROM:<a\xff@b.test>\r\n",
        "501 5.1.7 Bad sender address syntax",
    ),
    (
        "mail_garbage_after_path",
        GREET,
        b"MAIL FROM:<a@b.test>x\r\n",
        "501 5.1.7 Bad sender address syntax",
    ),
    ("mail_route_only", GREET, b"MAIL FROM:<@a.test:>\r\n", "501 5.1.7 Bad sender address syntax"),
    ("nested_mail", IN_MAIL, b"MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: nested MAIL command"),
    (
        "nested_mail_after_rcpt",
        IN_RCPT,
        b"MAIL FROM:<a@b.test>\r\n",
        "503 5.5.1 Error: nested MAIL command",
    ),
    (
        "mail_size_too_big",
        GREET,
        b"MAIL FROM:<a@b.test> SIZE=52428801\r\n",
        "552 5.3.4 Message size exceeds fixed maximum message size",
    ),
    (
        "mail_size_huge_number",
        GREET,
        b"MAIL FROM:<a@b.test> SIZE=" + b"9" * 5000 + b"\r\n",
        "552 5.3.4 Message size exceeds fixed maximum message size",
    ),
    ("mail_size_at_maximum", GREET, b"MAIL FROM:<a@b.test> SIZE=52428800\r\n", "250 2.1.0 Ok"),
    (
        "mail_size_not_digits",
        GREET,
        b"MAIL FROM:<a@b.test> SIZE=12k\r\n",
        "501 5.5.4 Bad SIZE parameter",
    ),
    (
        "mail_size_unicode_digits",
        GREET,
        "MAIL FROM:<a@b.test> SIZE=١٢\r\n".encode(),
        "501 5.5.4 Bad SIZE parameter",
    ),
    (
        "mail_size_without_value",
        GREET,
        b"MAIL FROM:<a@b.test> SIZE\r\n",
        "501 5.5.4 Bad SIZE parameter",
    ),
    (
        "mail_body_binarymime",
        GREET,
        b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n",
        "555 5.5.4 Unsupported option: BODY=BINARYMIME",
    ),
    ("mail_body_7bit", GREET, b"MAIL FROM:<a@b.test> BODY=7BIT\r\n", "250 2.1.0 Ok"),
    (
        "mail_unknown_param",
        GREET,
        b"MAIL FROM:<a@b.test> RET=HDRS\r\n",
        "555 5.5.4 Unsupported option: RET",
    ),
    ("mail_param_syntax", GREET, b"MAIL FROM:<a@b.test> =x\r\n", "501 5.5.4 Bad parameter syntax"),
    (
        "mail_duplicate_param",
        GREET,
        b"MAIL FROM:<a@b.test> SMTPUTF8 SMTPUTF8\r\n",
        "501 5.5.4 Bad parameter syntax",
    ),
    (
        "mail_smtputf8_with_value",
        GREET,
        b"MAIL FROM:<a@b.test> SMTPUTF8=yes\r\n",
        "501 5.5.4 Bad parameter syntax",
    ),
    ("rcpt_without_mail", GREET, b"RCPT TO:<u@x.test>\r\n", "503 5.5.1 Error: need MAIL command"),
    ("rcpt", IN_MAIL, b"RCPT TO:<u@x.test>\r\n", "250 2.1.5 Ok"),
    ("rcpt_space_after_colon", IN_MAIL, b"rcpt to: <u@x.test>\r\n", "250 2.1.5 Ok"),
    ("rcpt_postmaster_without_domain", IN_MAIL, b"RCPT TO:<Postmaster>\r\n", "250 2.1.5 Ok"),
    ("rcpt_without_to", IN_MAIL, b"RCPT <u@x.test>\r\n", "501 5.5.4 Syntax: RCPT TO:<address>"),
    ("rcpt_null", IN_MAIL, b"RCPT TO:<>\r\n", "501 5.1.3 Bad recipient address syntax"),
    (
        "rcpt_malformed",
        IN_MAIL,
        b"RCPT TO:<u@@x.test>\r\n",
        "501 5.1.3 Bad recipient address syntax",
    ),
    ("rcpt_no_domain", IN_MAIL, b"RCPT TO:<bob>\r\n", "501 5.1.3 Bad recipient address syntax"),
    (
        "rcpt_param",
        IN_MAIL,
        b"RCPT TO:<u@x.test> NOTIFY=NEVER\r\n",
        "555 5.5.4 Unsupported option: NOTIFY",
    ),
    ("data_without_mail", GREET, b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
    ("data_without_recipient", IN_MAIL, b"DATA\r\n", "554 5.5.1 Error: no valid recipients"),
    ("data_with_argument", IN_RCPT, b"DATA now\r\n", "501 5.5.4 Syntax: DATA"),
    ("data", IN_RCPT, b"DATA\r\n", "354 End data with <CR><LF>.<CR><LF>"),
    ("noop", b"", b"NOOP\r\n", "250 2.0.0 Ok"),
    ("noop_with_argument", IN_RCPT, b"NOOP hello there\r\n", "250 2.0.0 Ok"),
    ("rset", IN_RCPT, b"RSET\r\n", "250 2.0.0 Ok"),
    ("rset_with_argument", IN_RCPT, b"RSET now\r\n", "501 5.5.4 Syntax: RSET"),
    (
        "vrfy",
        GREET,
        b"VRFY bob\r\n",
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
    ),
    ("vrfy_without_argument", GREET, b"VRFY\r\n", "501 5.5.4 Syntax: VRFY address"),
    ("help", GREET, b"HELP\r\n", "214 2.0.0 Strata ESMTP, see RFC 5321"),
    ("expn", GREET, b"EXPN staff\r\n", "502 5.5.1 Error: command not implemented"),
    ("auth", GREET, b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", "502 5.5.1 Error: command not implemented"),
    ("bdat", IN_RCPT, b"BDAT 10 LAST\r\n", "502 5.5.1 Error: command not implemented"),
    ("turn", GREET, b"TURN\r\n", "502 5.5.1 Error: command not implemented"),
    ("unknown_command", GREET, b"FOO bar\r\n", "500 5.5.2 Error: command not recognized"),
    (
        "non_ascii_verb",
        GREET,
        "MAİL FROM:<a@b.test>\r\n".encode(),
        "500 5.5.2 Error: command not recognized",
    ),
    ("http_request", b"", b"GET / HTTP/1.1\r\n", "500 5.5.2 Error: command not recognized"),
    ("empty_line", GREET, b"\r\n", "500 5.5.2 Error: bad syntax"),
    ("blank_line", GREET, b" \t \r\n", "500 5.5.2 Error: bad syntax"),
    ("starttls_not_available", GREET, b"STARTTLS\r\n", "502 5.5.1 Error: command not implemented"),
    ("starttls_with_argument", GREET, b"STARTTLS now\r\n", "501 5.5.4 Syntax: STARTTLS"),
    ("quit", IN_RCPT, b"QUIT\r\n", "221 2.0.0 Bye"),
    ("quit_before_helo", b"", b"QUIT\r\n", "221 2.0.0 Bye"),
]


@pytest.mark.parametrize(
    ("before", "command", "expected"), [pytest.param(*c[1:], id=c[0]) for c in COMMAND_CASES]
)
def test_command_reply(before: bytes, command: bytes, expected: str) -> None:
    _, replies, _ = talk(before + command)
    assert replies[-1] == expected


@pytest.mark.parametrize(
    ("command", "sender"),
    [
        pytest.param(b"MAIL FROM:<>", "", id="null_sender"),
        pytest.param(b"MAIL FROM:<a@b.test>", "a@b.test", id="plain"),
        pytest.param(b"MAIL FROM:<@relay.test,@hop.test:a@b.test>", "a@b.test", id="source_route"),
        pytest.param(b'MAIL FROM:<"john doe"@b.test>', '"john doe"@b.test', id="quoted_local_part"),
        pytest.param(b'MAIL FROM:<"a>b@c"@b.test>', '"a>b@c"@b.test', id="quoted_bracket_and_at"),
        pytest.param(b'MAIL FROM:<"a\\"b"@b.test>', '"a\\"b"@b.test', id="quoted_pair"),
        pytest.param("MAIL FROM:<jörg@bücher.test>".encode(), "jörg@bücher.test", id="utf8"),
        pytest.param(b"MAIL FROM:<a.b+tag@sub.b-c.test>", "a.b+tag@sub.b-c.test", id="atext"),
    ],
)
def test_mail_from_sender(command: bytes, sender: str) -> None:
    events, replies, _ = talk(GREET + command + b"\r\n")
    assert replies[-1] == "250 2.1.0 Ok"
    assert events[-1] == MailFrom(sender, params={})


def test_mail_from_parameters() -> None:
    events, replies, _ = talk(
        GREET + b"MAIL FROM:<a@b.test> size=1000  Body=8bitmime\tSMTPUTF8\r\n"
    )
    assert replies[-1] == "250 2.1.0 Ok"
    assert events[-1] == MailFrom(
        "a@b.test",
        size=1000,
        body="8BITMIME",
        smtputf8=True,
        params={"SIZE": "1000", "BODY": "8bitmime", "SMTPUTF8": None},
    )


def test_rcpt_to_event() -> None:
    events, _, _ = talk(IN_MAIL + b"RCPT TO:<@hop.test:Bob@Strata.test>\r\n")
    assert events[-1] == RcptTo("Bob@Strata.test", {})


def test_ehlo_advertises_extensions() -> None:
    limits = ServerLimits(max_message_size=1000)
    _, sent, _ = drive([GREET], limits)
    assert sent == (
        b"250-mx.strata.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
    )
    _, sent, _ = drive([GREET], limits, tls_available=True)
    assert sent.endswith(b"250-SMTPUTF8\r\n250 STARTTLS\r\n")
    _, sent, _ = drive([GREET], limits, tls_available=True, tls_active=True)
    assert b"STARTTLS" not in sent


@pytest.mark.parametrize(
    "field", ["max_recipients", "max_command_line_length", "max_errors", "max_message_size"]
)
def test_limits_must_be_usable(field: str) -> None:
    with pytest.raises(ValueError):
        ServerLimits(**{field: -1})


def test_greeting() -> None:
    engine = SMTPServerEngine(HOST)
    engine.greeting()
    assert engine.data_to_send() == b"220 mx.strata.test ESMTP Strata\r\n"
    assert engine.data_to_send() == b""


def test_hello_event_keeps_the_name() -> None:
    events, _, engine = talk(b"ehlo [192.0.2.7]\r\n")
    assert events == [Hello("EHLO", "[192.0.2.7]")]
    assert engine.state is State.GREETED


def test_second_ehlo_resets_the_transaction() -> None:
    _, replies, engine = talk(IN_RCPT + GREET + b"RCPT TO:<u@x.test>\r\n")
    assert replies[-1] == "503 5.5.1 Error: need MAIL command"
    assert engine.state is State.GREETED


def test_rejected_ehlo_leaves_the_transaction_open() -> None:
    def answer(event: Event) -> Reply | None:
        if isinstance(event, Hello) and event.name == "evil.test":
            return Reply(550, "5.7.1", "No")
        return None

    _, replies, engine = talk(IN_MAIL + b"EHLO evil.test\r\nRCPT TO:<u@x.test>\r\n", answer=answer)
    assert replies[-2:] == ["550 5.7.1 No", "250 2.1.5 Ok"]
    assert engine.state is State.RCPT


def test_rset_drops_the_transaction() -> None:
    events, replies, engine = talk(IN_RCPT + b"RSET\r\nDATA\r\n")
    assert Reset() in events
    assert replies[-2:] == ["250 2.0.0 Ok", "503 5.5.1 Error: need RCPT command"]
    assert engine.state is State.GREETED


def test_rset_before_helo_keeps_the_session_ungreeted() -> None:
    _, replies, engine = talk(b"RSET\r\nMAIL FROM:<a@b.test>\r\n")
    assert replies == ["250 2.0.0 Ok", "503 5.5.1 Error: send HELO/EHLO first"]
    assert engine.state is State.CONNECTED


def test_rejected_mail_leaves_the_session_greeted() -> None:
    def answer(event: Event) -> Reply | None:
        return Reply(550, "5.7.1", "Go away") if isinstance(event, MailFrom) else None

    _, replies, engine = talk(IN_MAIL + b"RCPT TO:<u@x.test>\r\n", answer=answer)
    assert replies[-2:] == ["550 5.7.1 Go away", "503 5.5.1 Error: need MAIL command"]
    assert engine.state is State.GREETED


def test_rejected_recipients_do_not_count_for_data() -> None:
    def answer(event: Event) -> Reply | None:
        return Reply(550, "5.7.1", "Relay access denied") if isinstance(event, RcptTo) else None

    _, replies, engine = talk(IN_RCPT + b"RCPT TO:<v@x.test>\r\nDATA\r\n", answer=answer)
    assert replies[-1] == "554 5.5.1 Error: no valid recipients"
    assert engine.state is State.MAIL


def test_too_many_recipients_counts_only_accepted_ones() -> None:
    """RFC 5321 §4.5.3.1.8: past the limit, 452 4.5.3; a rejected RCPT does not use a slot."""

    def answer(event: Event) -> Reply | None:
        if isinstance(event, RcptTo) and event.recipient.startswith("no"):
            return Reply(550, "5.1.1", "No such user")
        return None

    rcpts = b"".join(b"RCPT TO:<%s@x.test>\r\n" % n for n in (b"no1", b"a", b"no2", b"b", b"c"))
    events, replies, _ = talk(IN_MAIL + rcpts, limits=ServerLimits(max_recipients=2), answer=answer)
    assert replies[-5:] == [
        "550 5.1.1 No such user",
        "250 2.1.5 Ok",
        "550 5.1.1 No such user",
        "250 2.1.5 Ok",
        "452 4.5.3 Error: too many recipients",
    ]
    assert [e.recipient for e in events if isinstance(e, RcptTo)] == [
        "no1@x.test",
        "a@x.test",
        "no2@x.test",
        "b@x.test",
    ]


def test_limit_refusals_are_events_for_the_adapters_log() -> None:
    """Issue #11: the adapter logs what the engine refuses for its limits, so it must see them
    (a declared SIZE too big, a recipient too many), after their reply is queued."""
    data = (GREET + b"MAIL FROM:<a@b.test> SIZE=301\r\nMAIL FROM:<a@b.test> SIZE=300\r\n"
            b"RCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\nNOOP\r\n")  # fmt: skip
    events, replies, engine = talk(data, limits=ServerLimits(max_message_size=300,
                                                             max_recipients=1))  # fmt: skip
    size, too_many = (e for e in events if isinstance(e, Refused))
    assert size == Refused("MAIL", "FROM:<a@b.test> SIZE=301", Reply(
        552, "5.3.4", "Message size exceeds fixed maximum message size"))  # fmt: skip
    assert too_many == Refused("RCPT", "TO:<e@d.test>",
                               Reply(452, "4.5.3", "Error: too many recipients"))  # fmt: skip
    assert replies[1:] == ["552 5.3.4 Message size exceeds fixed maximum message size",
                           "250 2.1.0 Ok", "250 2.1.5 Ok", "452 4.5.3 Error: too many recipients",
                           "250 2.0.0 Ok"]  # fmt: skip
    assert not engine.awaiting_response  # no respond() for them


def test_new_transaction_gets_a_fresh_recipient_count() -> None:
    limits = ServerLimits(max_recipients=1)
    data = IN_DATA + b"hi\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
    _, replies, _ = talk(data, limits=limits)
    assert replies[-1] == "250 2.1.5 Ok"


def test_pipelined_commands_wait_for_the_response() -> None:
    """RFC 2920: answers go out in order even when the adapter answers later."""
    engine = SMTPServerEngine(HOST)
    engine.receive_data(IN_RCPT + b"NOOP\r\n")
    assert isinstance(engine.next_event(), Hello)
    assert engine.awaiting_response
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b""
    engine.respond()
    assert isinstance(engine.next_event(), MailFrom)
    engine.respond()
    assert isinstance(engine.next_event(), RcptTo)
    assert engine.data_to_send().endswith(b"250 2.1.0 Ok\r\n")
    engine.respond(Reply(451, "4.3.0", "Try later"))
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"451 4.3.0 Try later\r\n250 2.0.0 Ok\r\n"
    assert engine.state is State.MAIL


def test_respond_without_a_pending_event_is_an_error() -> None:
    engine = SMTPServerEngine(HOST)
    with pytest.raises(RuntimeError):
        engine.respond()


def test_data_end_needs_an_explicit_reply() -> None:
    engine = SMTPServerEngine(HOST)
    engine.receive_data(IN_DATA + b".\r\n")
    for _ in range(4):
        engine.next_event()
        engine.respond()
    assert engine.next_event() == DataEnd()
    with pytest.raises(ValueError):
        engine.respond()
    engine.respond(Reply(451, "4.3.0", "Error: queue file write error, try again later"))
    assert engine.state is State.GREETED


def test_command_line_too_long_keeps_the_session_in_sync() -> None:
    """A command line of 8193 octets gets 500 5.5.2; the pipelined NOOP is still answered."""
    long_line = b"NOOP " + b"x" * (8193 - 5) + b"\r\n"
    _, sent, engine = drive([GREET + long_line + b"NOOP\r\n"])
    assert last_lines(sent)[-2:] == ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]
    # The same over a byte-at-a-time connection: never more than a line's worth buffered.
    engine = SMTPServerEngine(HOST)
    data = GREET + long_line + b"NOOP\r\n"
    for i in range(len(data)):
        engine.receive_data(data[i : i + 1])
        pump(engine, [])
        assert len(engine._buffer) <= 8192 + 2
    assert last_lines(engine.data_to_send())[-2:] == last_lines(sent)[-2:]


def test_command_line_of_exactly_the_limit_is_accepted() -> None:
    line = b"NOOP " + b"x" * (8192 - 5) + b"\r\n"
    _, replies, _ = talk(line)
    assert replies == ["250 2.0.0 Ok"]


def test_too_many_errors_closes_with_421() -> None:
    _, sent, engine = drive([b"FOO\r\n" * 5 + b"NOOP\r\n"], ServerLimits(max_errors=3))
    assert last_lines(sent) == [
        "500 5.5.2 Error: command not recognized",
        "500 5.5.2 Error: command not recognized",
        "500 5.5.2 Error: command not recognized",
        f"421 4.7.0 {HOST} Error: too many errors",
    ]
    assert engine.closed
    assert engine.next_event() is NEED_DATA


def test_adapter_rejections_count_as_errors() -> None:
    def answer(event: Event) -> Reply | None:
        return Reply(550, "5.7.1", "Relay access denied") if isinstance(event, RcptTo) else None

    data = IN_MAIL + b"RCPT TO:<a@x.test>\r\n" * 3
    _, replies, engine = talk(data, limits=ServerLimits(max_errors=2), answer=answer)
    assert replies[-1] == f"421 4.7.0 {HOST} Error: too many errors"
    assert engine.closed


def test_a_421_reply_closes_the_session() -> None:
    def answer(event: Event) -> Reply | None:
        return Reply(421, "4.3.2", "Shutting down") if isinstance(event, MailFrom) else None

    _, replies, engine = talk(IN_MAIL + b"NOOP\r\n", answer=answer)
    assert replies[-1] == "421 4.3.2 Shutting down"
    assert engine.closed


def test_quit_closes_and_ignores_what_follows() -> None:
    events, replies, engine = talk(GREET + b"QUIT\r\nNOOP\r\n")
    assert events[-1] == Quit()
    assert replies[-1] == "221 2.0.0 Bye"
    assert engine.closed
    engine.receive_data(b"NOOP\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b""


def test_timeout_queues_421_and_closes() -> None:
    engine = SMTPServerEngine(HOST)
    engine.timeout()
    assert engine.data_to_send() == f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode()
    assert engine.closed
    engine.timeout()
    assert engine.data_to_send() == b""


def test_eof_closes_even_mid_message() -> None:
    events, _, engine = drive([IN_DATA + b"partial\r\n", b""])
    assert engine.closed
    assert not engine.in_data
    assert engine.next_event() is NEED_DATA
    assert not any(isinstance(e, DataEnd | DataAborted) for e in events)
    engine.respond()  # a late answer after the peer left is ignored


def test_eof_while_awaiting_a_response() -> None:
    engine = SMTPServerEngine(HOST)
    engine.receive_data(GREET)
    assert isinstance(engine.next_event(), Hello)
    engine.receive_data(b"")
    assert engine.closed
    assert not engine.awaiting_response
    engine.respond()
    assert engine.data_to_send() == b""


# -- STARTTLS --------------------------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext() -> None:
    """RFC 3207 §4.2, CVE-2011-0411: commands injected after STARTTLS must not run under TLS."""
    engine = SMTPServerEngine(HOST, tls_available=True)
    engine.receive_data(GREET + b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert isinstance(engine.next_event(), Hello)
    engine.respond()
    assert engine.next_event() == StartTLS()
    assert engine.data_to_send().endswith(b"250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n")
    engine.receive_data(b"RCPT TO:<also-evil@x.test>\r\n")  # still in the clear: dropped
    assert engine.next_event() is NEED_DATA
    engine.tls_started()
    assert engine.tls_active
    assert engine.state is State.CONNECTED
    engine.receive_data(b"MAIL FROM:<a@b.test>\r\nEHLO c.test\r\nSTARTTLS\r\n")
    assert engine.next_event() == Hello("EHLO", "c.test")
    engine.respond()
    assert engine.next_event() is NEED_DATA
    sent = engine.data_to_send()
    assert last_lines(sent) == [
        "503 5.5.1 Error: send HELO/EHLO first",
        "250 SMTPUTF8",
        "503 5.5.1 Error: TLS already active",
    ]
    assert b"STARTTLS" not in sent.split(b"250 SMTPUTF8")[0]


@pytest.mark.parametrize("before", [IN_MAIL, IN_RCPT], ids=["after_mail", "after_rcpt"])
def test_starttls_inside_a_transaction_ends_it(before: bytes) -> None:
    """
    RFC 3207 §4.2, as Postfix does (issue 11, point 9): STARTTLS after MAIL (or RCPT) gets 220,
    not 503; the transaction is gone and the client must greet again under TLS.
    """
    engine = SMTPServerEngine(HOST, tls_available=True)
    events: list[Event] = []
    engine.receive_data(before + b"STARTTLS\r\n")
    pump(engine, events)  # pump() calls tls_started() after the StartTLS event
    assert events[-1] == StartTLS()
    assert last_lines(engine.data_to_send())[-1] == "220 2.0.0 Ready to start TLS"
    assert engine.state is State.CONNECTED and engine.tls_active
    engine.receive_data(b"RCPT TO:<bob@strata.test>\r\nDATA\r\nEHLO client.test\r\n")
    engine.receive_data(b"RCPT TO:<bob@strata.test>\r\nDATA\r\n")
    pump(engine, events)
    assert last_lines(engine.data_to_send()) == [
        "503 5.5.1 Error: need MAIL command",
        "503 5.5.1 Error: need RCPT command",
        "250 SMTPUTF8",
        "503 5.5.1 Error: need MAIL command",  # the sender from before TLS is forgotten
        "503 5.5.1 Error: need RCPT command",
    ]


def test_starttls_when_tls_is_already_active() -> None:
    _, replies, _ = talk(GREET + b"STARTTLS\r\n", tls_available=True, tls_active=True)
    assert replies[-1] == "503 5.5.1 Error: TLS already active"


def test_tls_started_without_starttls_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        SMTPServerEngine(HOST, tls_available=True).tls_started()


# -- AUTH (RFC 4954) -------------------------------------------------------------------------------

BOTH = ("PLAIN", "LOGIN")
AUTH_OK = "235 2.7.0 Authentication successful"
CANNOT_DECODE = "501 5.5.2 Cannot decode response"
CANCELLED = "501 5.0.0 Authentication cancelled"
INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")


def b64(data: str | bytes) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def plain(authzid: str, username: str, password: str) -> bytes:
    """An RFC 4616 PLAIN message, base64-encoded."""
    return b64(f"{authzid}\0{username}\0{password}")


BOB_PLAIN = plain("", "bob@strata.test", "s3cret")
BOB = Auth("PLAIN", "", "bob@strata.test", "s3cret")
WRONG = "wrong"  # the password refuse_wrong() refuses


def refuse_wrong(event: Event) -> Reply | None:
    """The adapter's answer: the password "wrong" fails, everything else is accepted."""
    if isinstance(event, Auth) and event.password == WRONG:
        return INVALID
    return default_answer(event)


def auth_talk(
    data: bytes,
    limits: ServerLimits = DEFAULT_LIMITS,
    answer: Answer = refuse_wrong,
    *,
    mechanisms: tuple[str, ...] = BOTH,
    auth_required: bool = False,
) -> tuple[list[Event], list[str], SMTPServerEngine]:
    """A session with AUTH allowed in the clear (as on loopback), everything else as talk()."""
    return talk(
        data,
        limits,
        answer,
        auth_mechanisms=mechanisms,
        auth_plaintext=True,
        auth_required=auth_required,
    )


@pytest.mark.parametrize(
    ("tls_active", "plaintext", "advertised"),
    [
        pytest.param(False, False, False, id="clear_text_not_allowed"),
        pytest.param(False, True, True, id="clear_text_allowed"),
        pytest.param(True, False, True, id="tls_active"),
        pytest.param(True, True, True, id="tls_active_and_clear_text_allowed"),
    ],
)
def test_ehlo_advertises_auth_when_allowed(
    tls_active: bool, plaintext: bool, advertised: bool
) -> None:
    _, sent, _ = drive(
        [GREET], tls_active=tls_active, auth_mechanisms=BOTH, auth_plaintext=plaintext
    )
    assert sent.endswith(b"250 AUTH PLAIN LOGIN\r\n") is advertised
    assert (b"AUTH" in sent) is advertised


def test_ehlo_advertises_only_the_configured_mechanisms() -> None:
    _, sent, _ = drive([GREET], tls_active=True, auth_mechanisms=("LOGIN",))
    assert sent.endswith(b"250-SMTPUTF8\r\n250 AUTH LOGIN\r\n")


def test_ehlo_advertises_auth_after_starttls() -> None:
    engine = SMTPServerEngine(HOST, tls_available=True, auth_mechanisms=BOTH)
    events: list[Event] = []
    engine.receive_data(GREET + b"STARTTLS\r\n")
    pump(engine, events)
    before = engine.data_to_send()
    assert b"AUTH" not in before
    assert before.endswith(b"250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n")
    engine.receive_data(GREET)
    pump(engine, events)
    assert engine.data_to_send().endswith(b"250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n")


def test_auth_before_tls_gets_538() -> None:
    """RFC 4954 §6: a mechanism that needs encryption, used in the clear, gets 538 5.7.11."""
    events, replies, engine = talk(
        GREET + b"AUTH PLAIN " + BOB_PLAIN + b"\r\nAUTH LOGIN\r\n", auth_mechanisms=BOTH
    )
    expected = "538 5.7.11 Encryption required for requested authentication mechanism"
    assert replies[-2:] == [expected, expected]
    assert not any(isinstance(e, Auth) for e in events)
    assert not engine.authenticated


AUTH_CASES = [
    # (id, what follows EHLO, the reply lines after the EHLO's, the Auth event or None)
    ("plain_initial_response", b"AUTH PLAIN " + BOB_PLAIN + b"\r\n", [AUTH_OK], BOB),
    ("plain_continuation", b"AUTH PLAIN\r\n" + BOB_PLAIN + b"\r\n", ["334 ", AUTH_OK], BOB),
    ("plain_lowercase_mechanism", b"auth plain " + BOB_PLAIN + b"\r\n", [AUTH_OK], BOB),
    ("plain_bare_lf", b"AUTH PLAIN\n" + BOB_PLAIN + b"\n", ["334 ", AUTH_OK], BOB),
    (
        "plain_with_authzid",
        b"AUTH PLAIN " + plain("admin@strata.test", "bob", "pw") + b"\r\n",
        [AUTH_OK],
        Auth("PLAIN", "admin@strata.test", "bob", "pw"),
    ),
    (
        "plain_utf8",
        b"AUTH PLAIN " + plain("", "jörg@bücher.test", "pässwörd") + b"\r\n",
        [AUTH_OK],
        Auth("PLAIN", "", "jörg@bücher.test", "pässwörd"),
    ),
    ("plain_equals_is_an_empty_response", b"AUTH PLAIN =\r\n", [CANNOT_DECODE], None),
    ("plain_empty_continuation", b"AUTH PLAIN\r\n\r\n", ["334 ", CANNOT_DECODE], None),
    ("plain_bad_base64", b"AUTH PLAIN AGJvYgBzZWNyZXQ\r\n", [CANNOT_DECODE], None),
    ("plain_bad_base64_continuation", b"AUTH PLAIN\r\n!!!!\r\n", ["334 ", CANNOT_DECODE], None),
    ("plain_space_in_base64", b"AUTH PLAIN\r\nAGJv YgBz\r\n", ["334 ", CANNOT_DECODE], None),
    ("plain_one_nul", b"AUTH PLAIN " + b64("bob\0secret") + b"\r\n", [CANNOT_DECODE], None),
    ("plain_three_nuls", b"AUTH PLAIN " + b64("\0bob\0se\0cret") + b"\r\n", [CANNOT_DECODE], None),
    (
        "plain_invalid_utf8",
        b"AUTH PLAIN " + b64(b"\0b\xffb\0secret") + b"\r\n",
        [CANNOT_DECODE],
        None,
    ),
    ("plain_cancelled", b"AUTH PLAIN\r\n*\r\n", ["334 ", CANCELLED], None),
    (
        "login_two_steps",
        b"AUTH LOGIN\r\n" + b64("bob") + b"\r\n" + b64("s3cret") + b"\r\n",
        ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", AUTH_OK],
        Auth("LOGIN", "", "bob", "s3cret"),
    ),
    (
        "login_initial_response",
        b"AUTH LOGIN " + b64("bob") + b"\r\n" + b64("s3cret") + b"\r\n",
        ["334 UGFzc3dvcmQ6", AUTH_OK],
        Auth("LOGIN", "", "bob", "s3cret"),
    ),
    (
        "login_equals_is_an_empty_username",
        b"AUTH LOGIN =\r\n" + b64("s3cret") + b"\r\n",
        ["334 UGFzc3dvcmQ6", AUTH_OK],
        Auth("LOGIN", "", "", "s3cret"),
    ),
    (
        "login_cancelled_at_username",
        b"AUTH LOGIN\r\n*\r\n",
        ["334 VXNlcm5hbWU6", CANCELLED],
        None,
    ),
    (
        "login_cancelled_at_password",
        b"AUTH LOGIN " + b64("bob") + b"\r\n*\r\n",
        ["334 UGFzc3dvcmQ6", CANCELLED],
        None,
    ),
    ("login_bad_base64", b"AUTH LOGIN\r\nbob\r\n", ["334 VXNlcm5hbWU6", CANNOT_DECODE], None),
    (
        "login_invalid_utf8_password",
        b"AUTH LOGIN " + b64("bob") + b"\r\n" + b64(b"\xc3(") + b"\r\n",
        ["334 UGFzc3dvcmQ6", CANNOT_DECODE],
        None,
    ),
    (
        "login_invalid_utf8_username",
        b"AUTH LOGIN " + b64(b"\xff") + b"\r\n",
        [CANNOT_DECODE],
        None,
    ),
    (
        "commands_during_the_exchange_are_responses",
        b"AUTH PLAIN\r\nQUIT\r\nNOOP\r\n",
        ["334 ", CANNOT_DECODE, "250 2.0.0 Ok"],
        None,
    ),
    (
        "unknown_mechanism",
        b"AUTH CRAM-MD5\r\n",
        ["504 5.5.4 Unrecognized authentication type"],
        None,
    ),
    (
        "non_ascii_mechanism",
        "AUTH PLAİN\r\n".encode(),
        ["504 5.5.4 Unrecognized authentication type"],
        None,
    ),
    (
        "auth_without_mechanism",
        b"AUTH\r\n",
        ["501 5.5.4 Syntax: AUTH mechanism [initial-response]"],
        None,
    ),
    (
        "auth_with_too_many_arguments",
        b"AUTH PLAIN " + BOB_PLAIN + b" x\r\n",
        ["501 5.5.4 Syntax: AUTH mechanism [initial-response]"],
        None,
    ),
    (
        "auth_twice",
        b"AUTH PLAIN " + BOB_PLAIN + b"\r\nAUTH PLAIN " + BOB_PLAIN + b"\r\n",
        [AUTH_OK, "503 5.5.1 Error: already authenticated"],
        BOB,
    ),
    (
        "auth_again_after_a_failure",
        b"AUTH PLAIN " + plain("", "bob", "wrong") + b"\r\nAUTH PLAIN " + BOB_PLAIN + b"\r\n",
        ["535 5.7.8 Authentication credentials invalid", AUTH_OK],
        BOB,
    ),
    (
        "auth_in_a_transaction",
        b"MAIL FROM:<a@b.test>\r\nAUTH PLAIN " + BOB_PLAIN + b"\r\n",
        ["250 2.1.0 Ok", "503 5.5.1 Error: MAIL transaction in progress"],
        None,
    ),
    (
        "auth_after_rcpt",
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@x.test>\r\nAUTH LOGIN\r\n",
        ["250 2.1.0 Ok", "250 2.1.5 Ok", "503 5.5.1 Error: MAIL transaction in progress"],
        None,
    ),
    (
        "auth_after_helo",
        b"HELO client.test\r\nAUTH PLAIN " + BOB_PLAIN + b"\r\n",
        [f"250 {HOST}", AUTH_OK],
        BOB,
    ),
]


@pytest.mark.parametrize(
    ("after_ehlo", "expected", "auth"), [pytest.param(*c[1:], id=c[0]) for c in AUTH_CASES]
)
def test_auth_exchange(after_ehlo: bytes, expected: list[str], auth: Auth | None) -> None:
    events, replies, engine = auth_talk(GREET + after_ehlo)
    assert replies[1:] == expected
    assert [e for e in events if isinstance(e, Auth) and e.password != WRONG] == (
        [auth] if auth else []
    )
    assert engine.authenticated is (auth is not None)
    assert engine.authenticated_as == (auth.username if auth else None)


def test_auth_before_ehlo() -> None:
    _, replies, _ = auth_talk(b"AUTH PLAIN " + BOB_PLAIN + b"\r\n")
    assert replies == ["503 5.5.1 Error: send HELO/EHLO first"]


def test_auth_mechanism_not_configured() -> None:
    _, replies, _ = auth_talk(GREET + b"AUTH LOGIN\r\n", mechanisms=("PLAIN",))
    assert replies[-1] == "504 5.5.4 Unrecognized authentication type"


@pytest.mark.parametrize("before", [b"", GREET, IN_MAIL])
def test_auth_without_mechanisms_is_not_implemented(before: bytes) -> None:
    """The intake's behaviour: AUTH is a command this server does not implement, in any state."""
    _, replies, _ = talk(before + b"AUTH PLAIN " + BOB_PLAIN + b"\r\n", tls_active=True)
    assert replies[-1] == "502 5.5.1 Error: command not implemented"


def test_auth_success_sets_authenticated() -> None:
    engine = SMTPServerEngine(HOST, auth_mechanisms=BOTH, auth_plaintext=True)
    engine.receive_data(GREET + b"AUTH PLAIN " + BOB_PLAIN + b"\r\nMAIL FROM:<a@b.test>\r\n")
    assert isinstance(engine.next_event(), Hello)
    engine.respond()
    assert engine.next_event() == BOB
    assert engine.awaiting_response
    assert not engine.authenticated
    # RFC 4954 §4: nothing pipelined behind AUTH is read until the exchange is answered.
    assert engine.next_event() is NEED_DATA
    engine.respond()
    assert engine.authenticated
    assert engine.authenticated_as == "bob@strata.test"
    assert isinstance(engine.next_event(), MailFrom)
    engine.respond()
    assert last_lines(engine.data_to_send())[-2:] == [AUTH_OK, "250 2.1.0 Ok"]


def test_respond_names_the_confirmed_user() -> None:
    engine = SMTPServerEngine(HOST, auth_mechanisms=BOTH, auth_plaintext=True)
    engine.receive_data(GREET + b"AUTH LOGIN " + b64("Bob") + b"\r\n" + b64("pw") + b"\r\n")
    engine.next_event()
    engine.respond()
    assert engine.next_event() == Auth("LOGIN", "", "Bob", "pw")
    engine.respond(user="bob@strata.test")
    assert engine.authenticated_as == "bob@strata.test"


@pytest.mark.parametrize(
    "reply",
    [
        INVALID,
        Reply(454, "4.7.0", "Temporary authentication failure"),
        Reply(535, "5.7.8", "Your primary mail server is working"),
    ],
)
def test_auth_failure_leaves_the_session_unauthenticated(reply: Reply) -> None:
    def answer(event: Event) -> Reply | None:
        return reply if isinstance(event, Auth) else None

    events, replies, engine = talk(
        GREET + b"AUTH PLAIN " + BOB_PLAIN + b"\r\nMAIL FROM:<a@b.test>\r\n",
        answer=answer,
        auth_mechanisms=BOTH,
        auth_plaintext=True,
        auth_required=True,
    )
    assert BOB in events
    assert replies[-2:] == [
        reply.to_bytes().decode().rstrip("\r\n"),
        "530 5.7.0 Authentication required",
    ]
    assert not engine.authenticated
    assert engine.authenticated_as is None
    assert engine.state is State.GREETED


def test_respond_user_only_for_auth() -> None:
    engine = SMTPServerEngine(HOST, auth_mechanisms=BOTH, auth_plaintext=True)
    engine.receive_data(GREET)
    engine.next_event()
    with pytest.raises(ValueError):
        engine.respond(user="bob")


def test_auth_takes_no_intermediate_reply() -> None:
    engine = SMTPServerEngine(HOST, auth_mechanisms=BOTH, auth_plaintext=True)
    engine.receive_data(GREET + b"AUTH PLAIN " + BOB_PLAIN + b"\r\n")
    engine.next_event()
    engine.respond()
    assert engine.next_event() == BOB
    with pytest.raises(ValueError):
        engine.respond(Reply(334, None, ""))
    assert engine.awaiting_response


def test_auth_event_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(BOB)
    assert "bob@strata.test" in repr(BOB)


@pytest.mark.parametrize(
    ("mechanisms", "required"),
    [
        pytest.param(("CRAM-MD5",), False, id="unknown_mechanism"),
        pytest.param(("plain",), False, id="lowercase_mechanism"),
        pytest.param(("PLAIN", "PLAIN"), False, id="duplicate_mechanism"),
        pytest.param((), True, id="required_without_mechanisms"),
    ],
)
def test_auth_options_must_be_usable(mechanisms: tuple[str, ...], required: bool) -> None:
    with pytest.raises(ValueError):
        SMTPServerEngine(HOST, auth_mechanisms=mechanisms, auth_required=required)


def test_mail_before_auth_gets_530() -> None:
    """RFC 4954 §6: 530 5.7.0 when the policy requires authentication."""
    data = GREET + b"MAIL FROM:<a@b.test>\r\nAUTH PLAIN " + BOB_PLAIN + b"\r\n"
    events, replies, engine = auth_talk(data + b"MAIL FROM:<a@b.test>\r\n", auth_required=True)
    assert replies[1:] == ["530 5.7.0 Authentication required", AUTH_OK, "250 2.1.0 Ok"]
    assert [e.sender for e in events if isinstance(e, MailFrom)] == ["a@b.test"]
    assert engine.state is State.MAIL


def test_mail_before_auth_when_auth_is_not_offered_yet() -> None:
    """Port 587 before STARTTLS: AUTH is not offered, and MAIL still needs it."""
    _, replies, _ = talk(
        GREET + b"MAIL FROM:<a@b.test>\r\n", auth_mechanisms=BOTH, auth_required=True
    )
    assert replies[-1] == "530 5.7.0 Authentication required"


def test_tls_started_forgets_authentication() -> None:
    engine = SMTPServerEngine(
        HOST, tls_available=True, auth_mechanisms=BOTH, auth_plaintext=True, auth_required=True
    )
    events: list[Event] = []
    engine.receive_data(GREET + b"AUTH PLAIN " + BOB_PLAIN + b"\r\nSTARTTLS\r\n")
    pump(engine, events)
    assert BOB in events
    assert not engine.authenticated  # pump() called tls_started()
    assert engine.authenticated_as is None
    engine.receive_data(GREET + b"MAIL FROM:<a@b.test>\r\nAUTH PLAIN " + BOB_PLAIN + b"\r\n")
    pump(engine, events)
    assert last_lines(engine.data_to_send())[-3:] == [
        "250 AUTH PLAIN LOGIN",
        "530 5.7.0 Authentication required",
        AUTH_OK,
    ]
    assert engine.authenticated


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        pytest.param(b"AUTH=<>", "250 2.1.0 Ok", id="null"),
        pytest.param(b"AUTH=bob@strata.test", "250 2.1.0 Ok", id="mailbox"),
        pytest.param(b"auth=bob+2Bx@strata.test", "250 2.1.0 Ok", id="xtext_hexchar"),
        pytest.param(b"AUTH=bob+2bx@strata.test", "501 5.5.4 Bad AUTH parameter", id="lower_hex"),
        pytest.param(b"AUTH=bob+x@strata.test", "501 5.5.4 Bad AUTH parameter", id="bad_hexchar"),
        pytest.param("AUTH=jörg@b.test".encode(), "501 5.5.4 Bad AUTH parameter", id="non_ascii"),
        pytest.param(b"AUTH", "501 5.5.4 Bad AUTH parameter", id="no_value"),
    ],
)
def test_mail_auth_parameter(param: bytes, expected: str) -> None:
    """RFC 4954 §5: MAIL FROM:<...> AUTH=<mailbox> or AUTH=<>, as xtext."""
    events, replies, _ = auth_talk(GREET + b"MAIL FROM:<a@b.test> " + param + b"\r\n")
    assert replies[-1] == expected
    if expected.startswith("250"):
        assert events[-1] == MailFrom("a@b.test", params={"AUTH": param.decode()[5:]})


@pytest.mark.parametrize(
    "mechanisms",
    [
        pytest.param((), id="no_mechanisms"),
        pytest.param(BOTH, id="auth_not_offered_in_the_clear"),
    ],
)
def test_mail_auth_parameter_without_auth(mechanisms: tuple[str, ...]) -> None:
    _, replies, _ = talk(GREET + b"MAIL FROM:<a@b.test> AUTH=<>\r\n", auth_mechanisms=mechanisms)
    assert replies[-1] == "555 5.5.4 Unsupported option: AUTH"


def test_failed_auths_count_as_errors() -> None:
    wrong = b"AUTH PLAIN " + plain("", "bob", "wrong") + b"\r\n"
    data = GREET + wrong + b"AUTH PLAIN !\r\n" + b"AUTH LOGIN\r\n*\r\n" + wrong + b"NOOP\r\n"
    _, replies, engine = auth_talk(data, limits=ServerLimits(max_errors=3))
    assert replies[1:] == [
        "535 5.7.8 Authentication credentials invalid",
        CANNOT_DECODE,
        "334 VXNlcm5hbWU6",
        CANCELLED,
        f"421 4.7.0 {HOST} Error: too many errors",
    ]
    assert engine.closed


def test_sasl_response_may_be_12288_octets() -> None:
    """RFC 4954 §4: a response line may be 12288 octets, even where commands are shorter."""
    limits = ServerLimits(max_command_line_length=100)
    password = "x" * (12288 // 4 * 3 - len("\0bob\0"))
    response = plain("", "bob", password)
    assert len(response) == 12288
    events, replies, engine = auth_talk(
        GREET + b"AUTH PLAIN\r\n" + response + b"\r\nNOOP " + b"y" * 100 + b"\r\n", limits=limits
    )
    assert Auth("PLAIN", "", "bob", password) in events
    assert replies[1:] == ["334 ", AUTH_OK, "500 5.5.2 Error: line too long"]
    assert engine.authenticated


def test_sasl_response_over_12288_octets_is_refused_in_sync() -> None:
    too_long = b"A" * 12289
    data = GREET + b"AUTH PLAIN\r\n" + too_long + b"\r\nNOOP\r\n"
    expected = ["334 ", "500 5.5.6 Authentication Exchange line is too long", "250 2.0.0 Ok"]
    _, replies, engine = auth_talk(data)
    assert replies[1:] == expected
    assert not engine.authenticated
    # Byte by byte, the too-long line is dropped as it comes instead of buffered.
    engine = SMTPServerEngine(HOST, auth_mechanisms=BOTH, auth_plaintext=True)
    for i in range(len(data)):
        engine.receive_data(data[i : i + 1])
        pump(engine, [])
        assert len(engine._buffer) <= 12288 + 2
    assert last_lines(engine.data_to_send())[1:] == expected


def test_eof_during_the_exchange_closes() -> None:
    events, _, engine = drive(
        [GREET + b"AUTH LOGIN\r\n" + b64("bob") + b"\r\n", b""],
        auth_mechanisms=BOTH,
        auth_plaintext=True,
    )
    assert engine.closed
    assert not any(isinstance(e, Auth) for e in events)
    engine.receive_data(b64("s3cret") + b"\r\n")
    assert engine.next_event() is NEED_DATA


def test_timeout_during_the_exchange_closes() -> None:
    engine = SMTPServerEngine(HOST, auth_mechanisms=BOTH, auth_plaintext=True)
    engine.receive_data(GREET + b"AUTH PLAIN\r\n")
    pump(engine, [])
    engine.timeout()
    assert engine.data_to_send().endswith(f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode())
    assert engine.closed


# -- message content -------------------------------------------------------------------------------

CONTENT_CASES = [
    # (id, content sent after the 354, content received)
    ("simple", b"Subject: hi\r\n\r\nbody\r\n.\r\n", b"Subject: hi\r\n\r\nbody\r\n"),
    ("empty_message", b".\r\n", b""),
    ("dot_stuffed_line", b"..hidden\r\n...\r\n.\r\n", b".hidden\r\n..\r\n"),
    ("stuffed_lone_dot", b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n"),
    ("bare_lf_normalized", b"a\nb\r\nc\r\n.\r\n", b"a\r\nb\r\nc\r\n"),
    ("bare_cr_is_a_byte", b"a\rb\r\n\r\r\n.\r\n", b"a\rb\r\n\r\r\n"),
    ("dot_line_with_text", b".a\r\n.\r\n", b"a\r\n"),
    ("dot_with_trailing_space", b". \r\n.\r\n", b" \r\n"),
    # SMTP smuggling (CVE-2023-51764 class): none of these ends the data.
    ("smuggling_lf_dot_lf", b"a\n.\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
    ("smuggling_lf_dot_crlf", b"a\n.\r\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
    ("smuggling_crlf_dot_lf", b"a\r\n.\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
    ("smuggling_cr_dot_cr", b"a\r.\rMAIL\r\n.\r\n", b"a\r.\rMAIL\r\n"),
    ("smuggling_cr_dot_lf", b"a\r.\nMAIL\r\n.\r\n", b"a\r.\r\nMAIL\r\n"),
    ("first_line_dot_lf", b".\nMAIL\r\n.\r\n", b".\r\nMAIL\r\n"),
    ("dot_after_bare_lf_then_real_end", b"a\n.\r\n.\r\n", b"a\r\n.\r\n"),
    (
        "utf8_and_binary",
        "Grüße\r\n".encode() + b"\x00\xff\r\n.\r\n",
        "Grüße\r\n".encode() + b"\x00\xff\r\n",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CONTENT_CASES]
)
def test_message_content(content: bytes, expected: bytes) -> None:
    events, replies, engine = talk(IN_DATA + content)
    assert events[-1] == DataEnd()
    assert message_of(events) == expected
    assert replies[-1] == "250 2.0.0 Ok: queued"
    assert engine.state is State.GREETED


def test_smuggling_bare_lf_dot_does_not_end_data() -> None:
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@strata.test>\r\nDATA\r\n"
    events, _, engine = talk(IN_DATA + b"Subject: a\r\n\n.\n" + smuggled + b"evil\r\n")
    assert engine.in_data
    assert [e for e in events if isinstance(e, MailFrom)] == [MailFrom("alice@sender.test")]
    assert smuggled in message_of(events)


def test_in_data_is_true_only_while_reading_content() -> None:
    engine = SMTPServerEngine(HOST)
    engine.receive_data(IN_DATA)
    for _ in range(4):
        assert not engine.in_data
        engine.next_event()
        engine.respond()
    assert engine.in_data
    engine.receive_data(b"x\r\n.\r\n")
    assert isinstance(engine.next_event(), DataChunk)
    assert isinstance(engine.next_event(), DataEnd)
    assert not engine.in_data


def test_rejected_data_start_does_not_enter_data() -> None:
    def answer(event: Event) -> Reply | None:
        return Reply(451, "4.3.0", "Not now") if isinstance(event, DataStart) else None

    _, replies, engine = talk(IN_DATA + b"NOOP\r\n", answer=answer)
    assert replies[-2:] == ["451 4.3.0 Not now", "250 2.0.0 Ok"]
    assert engine.state is State.RCPT


def test_failed_data_end_still_ends_the_transaction() -> None:
    """RFC 5321 §4.1.1.4: whatever the reply to the final ".", the transaction is over."""

    def answer(event: Event) -> Reply | None:
        return Reply(451, "4.3.0", "Try later") if isinstance(event, DataEnd) else None

    _, replies, _ = talk(IN_DATA + b"x\r\n.\r\nRCPT TO:<u@x.test>\r\n", answer=answer)
    assert replies[-2:] == ["451 4.3.0 Try later", "503 5.5.1 Error: need MAIL command"]


# -- long lines (issue 11, point 3) ----------------------------------------------------------------
#
# Message lines have no length limit.  With max_command_line_length=32 (room for the commands of
# IN_DATA) the engine holds at most 32 octets of an unfinished line and hands the rest on at once.

HOLD = 32
SMALL_HOLD = ServerLimits(max_command_line_length=HOLD)
LONG = b"x" * 80  # longer than SMALL_HOLD holds

LONG_LINE_CASES = [
    # (id, content sent after the 354, content received)
    ("long_line", LONG + b"\r\n.\r\n", LONG + b"\r\n"),
    ("long_lines", LONG + b"\r\n" + LONG + b"y\r\n.\r\n", LONG + b"\r\n" + LONG + b"y\r\n"),
    ("first_octet_past_the_hold", b"x" * (HOLD + 1) + b"\r\n.\r\n", b"x" * (HOLD + 1) + b"\r\n"),
    ("megabyte_line", b"m" * 2**20 + b"\r\n.\r\n", b"m" * 2**20 + b"\r\n"),
    # The continuation of a long line is no line start: not a lone ".", not a "." to unstuff.
    ("long_line_ending_in_dot", b"x" * (HOLD + 1) + b".\r\n.\r\n", b"x" * (HOLD + 1) + b".\r\n"),
    ("long_line_ending_in_dots", LONG + b"..\r\n.\r\n", LONG + b"..\r\n"),
    ("dots_inside", LONG + b"." + LONG + b"..\r\n.\r\n", LONG + b"." + LONG + b"..\r\n"),
    ("stuffed_long_line", b".." + LONG + b"\r\n.\r\n", b"." + LONG + b"\r\n"),
    ("stuffed_dots_only", b"." * 81 + b"\r\n.\r\n", b"." * 80 + b"\r\n"),
    ("long_line_then_dot_line", LONG + b"\r\n..\r\n.\r\n", LONG + b"\r\n.\r\n"),
    # Line ends: a bare LF becomes CRLF; a CR is held until the next octet says what it is.
    ("bare_lf", LONG + b"\nz\r\n.\r\n", LONG + b"\r\nz\r\n"),
    ("cr_at_the_hold", b"x" * HOLD + b"\r\n.\r\n", b"x" * HOLD + b"\r\n"),
    ("cr_past_the_hold", b"x" * (HOLD + 1) + b"\r\n.\r\n", b"x" * (HOLD + 1) + b"\r\n"),
    ("bare_crs", LONG + b"\r" + LONG + b"\r\r\n.\r\n", LONG + b"\r" + LONG + b"\r\r\n"),
    ("bare_cr_then_dot", b"x" * HOLD + b"\r.\r\n.\r\n", b"x" * HOLD + b"\r.\r\n"),
    ("cr_run", b"\r" * 80 + b"\n.\r\n", b"\r" * 80 + b"\n"),
    # SMTP smuggling around long lines: none of these ends the data.
    ("smuggling_long_lf_dot_lf", LONG + b"\n.\nMAIL\r\n.\r\n", LONG + b"\r\n.\r\nMAIL\r\n"),
    ("smuggling_long_lf_dot_crlf", LONG + b"\n.\r\nMAIL\r\n.\r\n", LONG + b"\r\n.\r\nMAIL\r\n"),
    ("smuggling_long_crlf_dot_lf", LONG + b"\r\n.\nMAIL\r\n.\r\n", LONG + b"\r\n.\r\nMAIL\r\n"),
    ("smuggling_long_cr_dot_cr", LONG + b"\r.\rMAIL\r\n.\r\n", LONG + b"\r.\rMAIL\r\n"),
    ("smuggling_long_dot_lf", LONG + b".\nMAIL\r\n.\r\n", LONG + b".\r\nMAIL\r\n"),
]


@pytest.mark.parametrize(
    ("content", "expected", "feed"),
    [
        pytest.param(content, expected, feed, id=f"{name}-{feed}")
        for name, content, expected in LONG_LINE_CASES
        for feed in ("whole", "by_octet", "by_7")
        if feed != "by_octet" or len(content) < 10_000  # a megabyte octet by octet: slow
    ],
)
def test_long_message_lines_are_content(content: bytes, expected: bytes, feed: str) -> None:
    """A long line is mail like any other, whatever the read sizes (issue 11, point 3)."""
    session = IN_DATA + content + b"MAIL FROM:<next@b.test>\r\n"
    size = {"whole": len(session), "by_octet": 1, "by_7": 7}[feed]
    pieces = [session[i : i + size] for i in range(0, len(session), size)]
    events, sent, engine = drive(pieces, SMALL_HOLD)
    assert message_of(events) == expected
    assert sum(isinstance(e, DataEnd) for e in events) == 1
    assert last_lines(sent)[-2:] == ["250 2.0.0 Ok: queued", "250 2.1.0 Ok"]
    assert engine.state is State.MAIL


def test_long_message_line_of_the_default_limit_and_far_beyond() -> None:
    """With the default limits: 8 KiB, 8 KiB + 1 and 100 KiB lines, and a 500 KiB message."""
    lines = [b"a" * 8192, b"b" * 8193, b"c" * 100 * 1024, b"." + b"d" * 300 * 1024]
    content = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)
    events, replies, _ = talk(IN_DATA + stuffed + b".\r\n")
    assert message_of(events) == content
    assert replies[-1] == "250 2.0.0 Ok: queued"


def test_long_message_line_streams_before_its_end() -> None:
    """A line with no LF yet is handed over as it comes; the engine keeps at most the limit."""
    limits = ServerLimits(max_command_line_length=100)
    engine = SMTPServerEngine(HOST, limits)
    events: list[Event] = []
    engine.receive_data(IN_DATA)
    pump(engine, events)
    for _ in range(50):
        engine.receive_data(b"x" * 99)
        pump(engine, events)
        assert len(engine._buffer) <= 100
    assert message_of(events) == b"x" * (50 * 99)  # all of it: its last octet is no CR
    engine.receive_data(b"x" * 200 + b"\r")
    pump(engine, events)
    assert engine._buffer == b"\r"  # a CR waits for the next octet
    assert message_of(events) == b"x" * (50 * 99 + 200)
    engine.receive_data(b"\n.\r\n")
    pump(engine, events)
    assert events[-1] == DataEnd()
    assert message_of(events) == b"x" * (50 * 99 + 200) + b"\r\n"


def test_long_message_line_counts_for_the_size_limit() -> None:
    """RFC 1870: a streamed line counts like any other; nothing past the limit is handed over."""
    limits = ServerLimits(max_message_size=1000, max_command_line_length=100)
    for size, ok in ((998, True), (999, False)):
        session = IN_DATA + b"y" * size + b"\r\n.\r\n"
        pieces = [session[i : i + 64] for i in range(0, len(session), 64)]
        events, _, _ = drive(pieces, limits)
        if ok:
            assert events[-1] == DataEnd()
            assert message_of(events) == b"y" * size + b"\r\n"
        else:
            assert events[-1] == DataAborted(Reply(552, "5.3.4", "Error: message file too big"))
            assert len(message_of(events)) <= 1000


def stream_one_line(engine: SMTPServerEngine, length: int, block: bytes) -> tuple[int, int]:
    """Send one line of ``length`` octets in reads of ``block``, taking each event as it comes
    and keeping none; (the most octets the engine buffered after a read, octets handed over)."""
    handed = most = 0
    for offset in range(0, length, len(block)):
        engine.receive_data(block if length - offset >= len(block) else block[: length - offset])
        while (event := engine.next_event()) is not NEED_DATA:
            assert isinstance(event, DataChunk)
            handed += len(event.data)
        most = max(most, len(engine._buffer))
    return most, handed


@pytest.mark.parametrize("length", [100 * 1024, 10 * 1024 * 1024], ids=["100KiB", "10MiB"])
def test_long_message_line_memory_stays_bounded(length: int) -> None:
    """
    Memory stays bounded (issue 11, point 3): while a line of 100 KiB or 10 MiB streams in reads
    of 64 KiB (Twisted's read size), the engine's buffer never holds more than the limit after
    a read, and what the engine allocates at once (tracemalloc's peak: its buffer and the chunk
    it hands over, the read itself not counted) stays two reads' worth, however long the line.
    """
    engine = SMTPServerEngine(HOST)
    engine.receive_data(IN_DATA)
    pump(engine, [])
    read = 64 * 1024
    block = b"z" * read
    tracemalloc.start()
    try:
        most, handed = stream_one_line(engine, length, block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert most <= DEFAULT_LIMITS.max_command_line_length
    assert handed == length  # everything is handed over before the line ends
    assert peak < 3 * read, f"the engine held {peak} octets at once"
    print(f"\n{length} octet line: buffer at most {most} octets, peak allocation {peak} octets")
    engine.receive_data(b"\r\n.\r\n")
    events: list[Event] = []
    pump(engine, events)
    assert events == [DataChunk(b"\r\n"), DataEnd()]


def test_message_too_big_aborts_at_the_final_dot() -> None:
    limits = ServerLimits(max_message_size=10)
    events, replies, engine = talk(IN_DATA + b"12345678\r\n9\r\n.\r\n", limits=limits)
    assert events[-1] == DataAborted(Reply(552, "5.3.4", "Error: message file too big"))
    assert replies[-1] == "552 5.3.4 Error: message file too big"
    assert message_of(events) == b"12345678\r\n"  # nothing past the limit is handed over
    assert engine.state is State.GREETED


def test_message_of_exactly_the_maximum_size_is_accepted() -> None:
    limits = ServerLimits(max_message_size=10)
    events, _, _ = talk(IN_DATA + b"12345678\r\n.\r\n", limits=limits)
    assert events[-1] == DataEnd()


def test_message_content_arrives_in_few_chunks() -> None:
    """10 KiB of ordinary lines read at once give one DataChunk, not one event per line."""
    content = b"".join(
        b"Line %04d of an ordinary message body, nothing special\r\n" % i for i in range(200)
    )
    assert len(content) > 10 * 1024
    events, _, _ = talk(IN_DATA + content + b".\r\n")
    chunks = [e for e in events if isinstance(e, DataChunk)]
    assert chunks == [DataChunk(content)]


def test_mail_may_follow_a_message() -> None:
    data = (
        IN_DATA + b"one\r\n.\r\nMAIL FROM:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\ntwo\r\n.\r\n"
    )
    events, _, _ = talk(data)
    assert [e for e in events if isinstance(e, DataChunk | DataEnd)] == [
        DataChunk(b"one\r\n"),
        DataEnd(),
        DataChunk(b"two\r\n"),
        DataEnd(),
    ]


# -- properties ------------------------------------------------------------------------------------

PROPERTY_LIMITS = ServerLimits(
    max_message_size=300, max_recipients=3, max_command_line_length=40, max_errors=30
)

session_parts = st.one_of(
    st.sampled_from(
        [
            IN_DATA,  # so that many sessions reach message content
            b"EHLO client.test\r\n",
            b"HELO c\n",
            b"MAIL FROM:<a@b.test>\r\n",
            b"MAIL FROM:<> SIZE=100\r\n",
            b"MAIL FROM:<a@b.test> SIZE=1000\r\n",
            b"RCPT TO:<u@x.test>\r\n",
            b"RCPT TO:u@x.test\r\n",
            b"DATA\r\n",
            b"RSET\r\n",
            b"NOOP\r\n",
            b"VRFY u\r\n",
            b"STARTTLS\r\n",
            b"FOO\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b".\r\n",
            b"..x\r\n",
            b"\r\n.\r\n",
            b"\n.\n",
            b"\r.\r",
            b"x" * 45,
            b"." + b"z" * 90,  # a content line longer than the limit: it streams
            b"w" * 50 + b"\r",
            b"NOOP " + b"y" * 60 + b"\r\n",
            b"QUIT\r\n",
        ]
    ),
    st.binary(max_size=30),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(session_parts, max_size=40), st.data())
def test_property_any_split_gives_the_same_events_and_replies(parts, data) -> None:
    session = b"".join(parts)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(session)), max_size=12)))
    pieces = [session[i:j] for i, j in zip([0, *cuts], [*cuts, len(session)], strict=True)]
    pieces = [piece for piece in pieces if piece]  # b"" would mean EOF
    whole = settled(drive([session], PROPERTY_LIMITS))
    split = settled(drive(pieces, PROPERTY_LIMITS))
    assert split == whole
    one_by_one = drive([session[i : i + 1] for i in range(len(session))], PROPERTY_LIMITS)
    assert settled(one_by_one) == whole


def settled(
    driven: tuple[list[Event], bytes, SMTPServerEngine],
) -> tuple[list[Event], bytes]:
    """
    The events and replies of a run, less the content of a message still coming in at its end:
    how much of an unfinished long line has been handed over depends on where the input stops.
    """
    events, sent, engine = driven
    if engine.in_data and events and isinstance(events[-1], DataChunk):
        events = events[:-1]
    return events, sent


@settings(max_examples=300)
@given(st.sampled_from([b"", GREET, IN_MAIL, IN_RCPT, IN_DATA]), st.binary(max_size=500))
def test_property_parser_never_raises(prefix, garbage) -> None:
    for limits in (ServerLimits(), PROPERTY_LIMITS):
        _, _, engine = drive([piece for piece in (prefix, garbage) if piece], limits)
        engine.receive_data(b"")
        assert engine.next_event() is NEED_DATA


SMUGGLING_SEPARATORS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\n"]
SMUGGLED = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@strata.test>\r\nDATA\r\n"


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SMUGGLING_SEPARATORS),
            st.one_of(st.just(SMUGGLED), st.text("abcXYZ :<>@", min_size=1).map(str.encode)),
        ),
        min_size=1,
        max_size=10,
    ),
    st.data(),
)
def test_property_smuggling_sequences_never_yield_two_messages(parts, data) -> None:
    parts = [*parts, (data.draw(st.sampled_from(SMUGGLING_SEPARATORS)), SMUGGLED)]
    content = b"Subject: x" + b"".join(sep + text for sep, text in parts)
    session = IN_DATA + content + b"\r\n.\r\nMAIL FROM:<next@b.test>\r\n"
    events, _, _ = drive([session])
    assert sum(isinstance(e, DataEnd) for e in events) == 1
    assert [e.sender for e in events if isinstance(e, MailFrom)] == [
        "alice@sender.test",
        "next@b.test",
    ]
    assert SMUGGLED in message_of(events)
    assert not any(isinstance(e, RcptTo) and e.recipient == "victim@strata.test" for e in events)


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b), max_size=30),
    st.sets(st.integers(0, 2000), max_size=8),
)
def test_property_dot_stuffing_round_trip(lines, cuts) -> None:
    """RFC 5321 §4.5.2: stuffing lines and sending them gives back exactly the content."""
    content = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    session = IN_DATA + stuffed + b".\r\n"
    points = sorted(c for c in cuts if c <= len(session))
    pieces = [session[i:j] for i, j in zip([0, *points], [*points, len(session)], strict=True)]
    pieces = [piece for piece in pieces if piece]  # b"" would mean EOF
    events, _, _ = drive(pieces)
    assert events[-1] == DataEnd()
    assert message_of(events) == content


def reference_content(data: bytes) -> bytes | None:
    """
    What the content reader must make of ``data``, read whole and with no limit on lines: the
    content before the end-of-data line, or None when there is none.  RFC 5321 §4.1.1.4 and
    §4.5.2 as the engine's docstring states them, one line at a time: only CRLF "." CRLF ends
    the data, a bare LF ends a line as CRLF, a "." starting any other line is dropped.
    """
    out: list[bytes] = []
    after_crlf = True
    start = 0
    while (newline := data.find(b"\n", start)) >= 0:
        line = data[start:newline]
        crlf = line.endswith(b"\r")
        text = line[:-1] if crlf else line
        if text == b"." and crlf and after_crlf:
            return b"".join(out)
        out.append((text if text == b"." or text[:1] != b"." else text[1:]) + b"\r\n")
        after_crlf = crlf
        start = newline + 1
    return None


content_parts = st.one_of(
    st.sampled_from([b".", b"..", b".\r\n", b"\r", b"\n", b"\r\n", b"\n.\n", b"\r\n.\n"]),
    st.integers(1, 3 * HOLD).map(lambda n: b"x" * n),  # runs that make lines longer than HOLD
    # A line of exactly HOLD + 1 octets so far: read octet by octet it is handed over just then,
    # and what follows (".", CR...) starts the continuation.
    st.sampled_from([b"\r\n" + b"x" * (HOLD + 1), b"\n." + b"x" * HOLD]),
    st.binary(max_size=20),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(content_parts, max_size=40), st.data())
def test_property_any_split_of_long_lines_reads_as_the_whole(parts, data) -> None:
    """
    Issue 11, point 3: whatever the lines' lengths and however the input is cut, the first message
    is what the reference reading of the whole input gives, and after every read the engine holds
    no more than the limit of a line.
    """
    content = b"".join(parts) + b"\r\n.\r\n"
    session = IN_DATA + content
    cuts = sorted(data.draw(st.sets(st.integers(1, len(session) - 1), max_size=15)))
    pieces = [session[i:j] for i, j in zip([0, *cuts], [*cuts, len(session)], strict=True)]
    expected = reference_content(content)
    for reads in (pieces, [session[i : i + 1] for i in range(len(session))]):
        engine = SMTPServerEngine(HOST, SMALL_HOLD)
        events: list[Event] = []
        for piece in reads:
            engine.receive_data(piece)
            pump(engine, events)
            if engine.in_data:
                assert len(engine._buffer) <= HOLD
        first = events.index(DataEnd())
        assert message_of(events[:first]) == expected


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=60).filter(lambda b: b"\n" not in b),
            st.tuples(st.integers(HOLD, 5000), st.sampled_from([b"x", b".", b"\r", b" "])).map(
                lambda t: t[1] + b"y" * t[0] + t[1]
            ),
        ),
        max_size=20,
    ),
    st.sets(st.integers(1, 40_000), max_size=10),
)
def test_property_long_lines_round_trip(lines, cuts) -> None:
    """Long lines of random length, stuffed (RFC 5321 §4.5.2) and cut anywhere, come back whole."""
    content = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    session = IN_DATA + stuffed + b".\r\n"
    points = sorted(c for c in cuts if c < len(session))
    pieces = [session[i:j] for i, j in zip([0, *points], [*points, len(session)], strict=True)]
    events, _, _ = drive(pieces, SMALL_HOLD)
    assert events[-1] == DataEnd()
    assert message_of(events) == content


AUTH_LIMITS = ServerLimits(max_command_line_length=60, max_errors=50)

auth_parts = st.one_of(
    st.sampled_from(
        [
            GREET,
            b"AUTH PLAIN " + BOB_PLAIN + b"\r\n",
            b"AUTH PLAIN " + plain("", "bob", "wrong") + b"\r\n",
            b"AUTH PLAIN\r\n",
            b"AUTH PLAIN =\r\n",
            b"AUTH LOGIN\r\n",
            b"AUTH LOGIN " + b64("bob") + b"\r\n",
            b"AUTH CRAM-MD5\r\n",
            BOB_PLAIN + b"\r\n",
            plain("", "bob", "wrong") + b"\r\n",
            b64("bob") + b"\r\n",
            b64("s3cret") + b"\r\n",
            b64("wrong") + b"\r\n",
            b64(b"\xff") + b"\r\n",
            b"*\r\n",
            b"!!\r\n",
            b"\r\n",
            b"\n",
            b"MAIL FROM:<a@b.test> AUTH=<>\r\n",
            b"XCLIENT ADDR=203.0.113.9\r\n",
            b"XCLIENT ADDR=[UNAVAILABLE]\r\n",
            b"XCLIENT NAME=x\r\n",
            b"RSET\r\n",
            b"NOOP\r\n",
            b"A" * 70,
            b"QUIT\r\n",
        ]
    ),
    st.binary(max_size=20),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(auth_parts, max_size=30), st.booleans(), st.data())
def test_property_any_split_of_an_auth_exchange_gives_the_same_events_and_replies(
    parts, required, data
) -> None:
    session = b"".join(parts)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(session)), max_size=12)))
    pieces = [session[i:j] for i, j in zip([0, *cuts], [*cuts, len(session)], strict=True)]
    pieces = [piece for piece in pieces if piece]  # b"" would mean EOF
    options = {
        "auth_mechanisms": BOTH,
        "auth_plaintext": True,
        "auth_required": required,
        "xclient": required,  # the webmail's session, or a user's without XCLIENT
    }
    whole = drive([session], AUTH_LIMITS, refuse_wrong, **options)
    split = drive(pieces, AUTH_LIMITS, refuse_wrong, **options)
    assert split[:2] == whole[:2]
    one_by_one = [session[i : i + 1] for i in range(len(session))]
    assert drive(one_by_one, AUTH_LIMITS, refuse_wrong, **options)[:2] == whole[:2]


# -- XCLIENT ADDR (Postfix's XCLIENT_README), for the trusted webmail ------------------------------


def xclient(
    data: bytes, *, allowed: bool = True
) -> tuple[list[Event], list[str], SMTPServerEngine]:
    """One read of ``data`` by a submission engine that may (or may not) take XCLIENT."""
    engine = SMTPServerEngine(
        HOST, auth_mechanisms=BOTH, auth_plaintext=True, auth_required=True, xclient=allowed
    )
    engine.greeting()
    engine.receive_data(data)
    events: list[Event] = []
    pump(engine, events)
    return events, last_lines(engine.data_to_send()), engine


def test_xclient_is_offered_in_ehlo_only_when_allowed() -> None:
    _, sent, _ = drive([GREET], xclient=True)
    assert b"250-XCLIENT ADDR\r\n" in sent or b"250 XCLIENT ADDR\r\n" in sent
    _, sent, _ = drive([GREET])
    assert b"XCLIENT" not in sent


def test_xclient_greets_afresh_and_starts_the_session_over() -> None:
    events, replies, engine = xclient(
        GREET
        + b"XCLIENT ADDR=203.0.113.9\r\nMAIL FROM:<a@b.test>\r\nEHLO webmail\r\n"
        + b"AUTH PLAIN "
        + BOB_PLAIN
        + b"\r\n"
    )
    assert [e for e in events if isinstance(e, XClient)] == [XClient("203.0.113.9")]
    assert replies == [
        f"220 {HOST} ESMTP Strata",  # the greeting at connect
        "250 XCLIENT ADDR",  # the last line of EHLO's reply
        f"220 {HOST} ESMTP Strata",  # XCLIENT: greeted afresh
        "503 5.5.1 Error: send HELO/EHLO first",  # as after connect: EHLO first
        "250 XCLIENT ADDR",
        AUTH_OK,
    ]
    assert engine.authenticated_as == "bob@strata.test"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("IPV6:2001:db8::7", "2001:db8::7"),
        ("ipv6:2001:DB8::7", "2001:db8::7"),
        ("IPV6+3A2001+3Adb8+3A+3A1", "2001:db8::1"),  # xtext: "+3A" is ":"
        ("[UNAVAILABLE]", None),
        ("[TEMPUNAVAIL]", None),
    ],
)
def test_xclient_addr_values(value: str, address: str | None) -> None:
    events, replies, _ = xclient(GREET + f"XCLIENT ADDR={value}\r\n".encode())
    assert events[-1] == XClient(address)
    assert replies[-1] == f"220 {HOST} ESMTP Strata"


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"XCLIENT", "501 5.5.4 Syntax: XCLIENT attribute=value..."),
        (b"XCLIENT ADDR=999.1.1.1", "501 5.5.4 Bad XCLIENT ADDR syntax: 999.1.1.1"),
        (b"XCLIENT ADDR=", "501 5.5.4 Bad XCLIENT ADDR syntax: (empty)"),
        (b"XCLIENT ADDR=a=b", "501 5.5.4 Bad XCLIENT ADDR syntax: a=b"),
        (b"XCLIENT NAME=webmail.test", "501 5.5.4 Bad XCLIENT attribute name: NAME"),
        (b"XCLIENT ADDR", "501 5.5.4 Bad XCLIENT attribute name: ADDR"),
    ],
)
def test_xclient_syntax_errors_change_nothing(command: bytes, reply: str) -> None:
    events, replies, engine = xclient(GREET + command + b"\r\n")
    assert not [e for e in events if isinstance(e, XClient)]
    assert replies[-1] == reply
    assert engine.state is State.GREETED


def test_xclient_is_refused_to_a_client_not_allowed_it() -> None:
    events, replies, engine = xclient(GREET + b"XCLIENT ADDR=203.0.113.9\r\n", allowed=False)
    assert replies[-1] == "550 5.7.0 Error: insufficient authorization"
    assert not [e for e in events if isinstance(e, XClient)]
    assert engine.state is State.GREETED


def test_xclient_is_refused_inside_a_transaction_and_after_auth() -> None:
    _, replies, engine = xclient(
        GREET
        + b"AUTH PLAIN "
        + BOB_PLAIN
        + b"\r\nMAIL FROM:<a@b.test>\r\n"
        + b"XCLIENT ADDR=203.0.113.9\r\nRSET\r\nXCLIENT ADDR=203.0.113.9\r\n"
    )
    assert replies[-3:] == [
        "503 5.5.1 Error: MAIL transaction in progress",
        "250 2.0.0 Ok",
        "503 5.5.1 Error: XCLIENT not allowed after AUTH",
    ]
    assert engine.authenticated
