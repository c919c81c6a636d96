"""
Tests for the sans-IO ESMTP client engine (L{strata_twisted.proto.smtp_client}).

No sockets.  Two kinds of peer:

- a scripted server: the test feeds reply bytes and reads the commands back;
- the real server engine (L{SMTPServerEngine}), with bytes pumped between the two engines by
  L{Conversation}.  What the server engine hands over as DataChunks must be exactly the content
  the client was given: the strongest check of dot-stuffing and line endings there is.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import cycle
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strata_twisted.proto import smtp_server as server_proto
from strata_twisted.proto.smtp_client import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    NEED_DATA,
    ClientConfig,
    Closed,
    DataReady,
    Event,
    Extensions,
    Greeted,
    Ready,
    RecipientResult,
    SessionFailed,
    SMTPClientEngine,
    StartTLSNeeded,
    State,
    TLSUnavailable,
    TransactionResult,
)
from strata_twisted.proto.smtp_reply import Reply
from strata_twisted.proto.smtp_server import (
    DataAborted,
    DataChunk,
    DataEnd,
    DataStart,
    Hello,
    MailFrom,
    RcptTo,
    Reset,
    ServerLimits,
    SMTPServerEngine,
    StartTLS,
)

HOST = "mx.customer.test"
HELO_NAME = "relay.strata.test"
CONFIG = ClientConfig(HELO_NAME)
QUEUED = Reply(250, "2.0.0", "Ok: queued as 4Xyz")
# Big enough that the real server never refuses what the property tests generate.
BIG = ServerLimits(max_message_size=10**9, max_recipients=1000)
ALL_KEYWORDS = ("PIPELINING", "SIZE 1000000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES")


# -- a scripted server -----------------------------------------------------------------------------


def drain(client: SMTPClientEngine) -> list[Event]:
    events: list[Event] = []
    for _ in range(10_000):
        event = client.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
    raise AssertionError("the engine never ran out of events")


def feed(client: SMTPClientEngine, data: bytes) -> list[Event]:
    client.receive_data(data)
    return drain(client)


def ehlo(*keywords: str) -> bytes:
    return Reply(250, None, (HOST, *keywords)).to_bytes()


def greeted(
    keywords: Sequence[str] = ALL_KEYWORDS, config: ClientConfig = CONFIG
) -> SMTPClientEngine:
    """A client that has been greeted and said EHLO, Ready; its sent bytes are cleared."""
    client = SMTPClientEngine(config)
    assert feed(client, b"220 " + HOST.encode() + b" ESMTP\r\n") == [
        Greeted(Reply(220, None, f"{HOST} ESMTP"))
    ]
    assert client.data_to_send() == f"EHLO {HELO_NAME}\r\n".encode()
    assert feed(client, ehlo(*keywords)) == [Ready()]
    client.data_to_send()
    return client


def commands(sent: bytes) -> list[str]:
    return sent.decode().split("\r\n")[:-1]


# -- the real server engine ------------------------------------------------------------------------

ServerAnswer = Callable[[server_proto.Event], Reply | None]
E = TypeVar("E")


@dataclass
class Message:
    recipients: tuple[str, ...] = ("bob@customer.test",)
    body: bytes = b"Subject: hi\r\n\r\nhello\r\n"
    sender: str = "alice@sender.test"
    body_8bit: bool = False
    smtputf8: bool = False
    size: int | None = None


def chunked(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` cut into pieces of the given sizes, cycling through them."""
    position = 0
    for size in cycle(sizes):
        if position >= len(data):
            return
        yield data[position : position + size]
        position += size


class Conversation:
    """
    The client engine against the real server engine, with an adapter that sends ``messages`` in
    order, then QUIT.  ``answer`` decides the server's replies (None: the server's default; the
    final "." gets QUEUED); ``keywords`` replaces what the server offers in reply to EHLO.
    """

    def __init__(
        self,
        messages: Sequence[Message] = (Message(),),
        *,
        config: ClientConfig = CONFIG,
        answer: ServerAnswer | None = None,
        keywords: Sequence[str] | None = None,
        tls_available: bool = False,
        body_chunks: Sequence[int] = (16384,),
        wire_chunks: Sequence[int] = (65536,),
    ) -> None:
        self.client = SMTPClientEngine(config)
        self.server = SMTPServerEngine(HOST, BIG, tls_available=tls_available)
        self.messages = deque(messages)
        self.answer = answer
        self.keywords = keywords
        self.body_chunks = body_chunks
        self.wire_chunks = wire_chunks
        self.events: list[Event] = []
        self.server_events: list[server_proto.Event] = []
        self.to_server = b""  # everything the client sent
        self._current: Message | None = None
        self.server.greeting()

    def run(self) -> Conversation:
        client_eof = server_eof = False
        for _ in range(10_000):
            moved = False
            while (event := self.client.next_event()) is not NEED_DATA:
                self.events.append(event)
                self._react(event)
            out = self.client.data_to_send()
            if out:
                self.to_server += out
                for piece in chunked(out, self.wire_chunks):
                    self.server.receive_data(piece)
                    self._pump_server()
                moved = True
            elif self.client.closed and not server_eof:
                self.server.receive_data(b"")  # the adapter closes the connection
                server_eof = moved = True
            self._pump_server()
            back = self.server.data_to_send()
            if back:
                self.client.receive_data(back)
                moved = True
            elif self.server.closed and not client_eof:
                self.client.receive_data(b"")  # the server closed the connection
                client_eof = moved = True
            if not moved:
                return self
        raise AssertionError("the conversation never settled")

    def _react(self, event: Event) -> None:
        client = self.client
        if isinstance(event, Ready):
            if self.messages:
                m = self._current = self.messages.popleft()
                size = len(m.body) if m.size is None else m.size
                client.send_message(m.sender, m.recipients, size, m.body_8bit, m.smtputf8)
            else:
                client.quit()
        elif isinstance(event, DataReady):
            assert self._current is not None
            for piece in chunked(self._current.body, self.body_chunks):
                client.body_chunk(piece)
            client.end_body()
        elif isinstance(event, StartTLSNeeded):
            client.tls_started()

    def _pump_server(self) -> None:
        server = self.server
        while (event := server.next_event()) is not server_proto.NEED_DATA:
            self.server_events.append(event)
            if isinstance(event, Hello | MailFrom | RcptTo | DataStart | DataEnd):
                server.respond(self._server_reply(event))
            elif isinstance(event, StartTLS):
                server.tls_started()

    def _server_reply(self, event: server_proto.Event) -> Reply | None:
        if self.answer is not None:
            reply = self.answer(event)
            if reply is not None:
                return reply
        if isinstance(event, Hello) and event.verb == "EHLO" and self.keywords is not None:
            keywords = [k for k in self.keywords if k != "STARTTLS" or not self.server.tls_active]
            return Reply(250, None, (HOST, *keywords))
        if isinstance(event, DataEnd):
            return QUEUED
        return None

    # -- what happened ----------------------------------------------------------------------------

    @property
    def results(self) -> list[TransactionResult]:
        return [e for e in self.events if isinstance(e, TransactionResult)]

    @property
    def received(self) -> list[bytes]:
        """The content of every message the server read to its final ".", in order."""
        bodies: list[bytes] = []
        current: list[bytes] = []
        for event in self.server_events:
            if isinstance(event, DataChunk):
                current.append(event.data)
            elif isinstance(event, DataEnd | DataAborted):
                bodies.append(b"".join(current))
                current = []
        return bodies

    def of_type(self, kind: type[E]) -> list[E]:
        """The server events of one kind."""
        return [e for e in self.server_events if isinstance(e, kind)]


def expected_content(content: bytes) -> bytes:
    """
    What the real server should hand over for ``content``: CRLF added at the end if missing
    (nothing for empty content), and every bare LF turned into CRLF, which is the server's intake
    normalization (a bare CR is an ordinary byte there).
    """
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    return re.sub(rb"(?<!\r)\n", b"\r\n", content)


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "two words", "tab\there", "crlf\r\n", "caf\u00e9.test"])
def test_config_refuses_unusable_helo_names(name: str) -> None:
    with pytest.raises(ValueError):
        ClientConfig(name)


def test_config_refuses_unknown_tls_policy() -> None:
    with pytest.raises(ValueError):
        ClientConfig(HELO_NAME, tls="sometimes")  # type: ignore[arg-type]


# -- reading replies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        pytest.param(b"220 mx ESMTP\r\n", Reply(220, None, "mx ESMTP"), id="single_line"),
        pytest.param(b"220\r\n", Reply(220, None, ""), id="code_only"),
        pytest.param(b"220 mx ESMTP\n", Reply(220, None, "mx ESMTP"), id="bare_lf"),
        pytest.param(
            b"220-mx ESMTP\r\n220-second\n220 third\r\n",
            Reply(220, None, ("mx ESMTP", "second", "third")),
            id="multi_line_mixed_endings",
        ),
        pytest.param(
            b"220-mx\r\n220\r\n", Reply(220, None, ("mx", "")), id="multi_line_empty_last"
        ),
        pytest.param(
            b"220 2.0.0 Ready\r\n", Reply(220, "2.0.0", "Ready"), id="enhanced_code_taken_out"
        ),
        pytest.param(
            b"220 5.0.0 Ready\r\n", Reply(220, None, "5.0.0 Ready"), id="mismatched_class_is_text"
        ),
        pytest.param(
            b"220-2.0.0 one\r\n220-two\r\n220 2.0.0 three\r\n",
            Reply(220, "2.0.0", ("one", "two", "three")),
            id="enhanced_code_on_some_lines",
        ),
        pytest.param(
            b"220 caf\xc3\xa9 \xff\r\n", Reply(220, None, "caf\u00e9 \ufffd"), id="utf8_and_junk"
        ),
    ],
)
def test_greeting_reply_is_parsed(wire: bytes, reply: Reply) -> None:
    client = SMTPClientEngine(CONFIG)
    assert feed(client, wire) == [Greeted(reply)]
    assert client.state is State.EHLO


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"hello\r\n", id="no_code"),
        pytest.param(b"22 short\r\n", id="two_digits"),
        pytest.param(b"120 no 1yz in SMTP\r\n", id="1yz"),
        pytest.param(b"620 no 6yz\r\n", id="6yz"),
        pytest.param(b"220x\r\n", id="no_separator"),
        pytest.param(b"220\tmx\r\n", id="tab_separator"),
        pytest.param(b"220-mx\r\n250 other code\r\n", id="code_changes_mid_reply"),
        pytest.param(b"220 " + b"x" * MAX_REPLY_LINE + b"\r\n", id="line_too_long"),
        pytest.param(b"220 " + b"x" * (2 * MAX_REPLY_LINE), id="line_too_long_without_lf"),
        pytest.param(b"220-x\r\n" * MAX_REPLY_LINES + b"220 x\r\n", id="too_many_lines"),
    ],
)
def test_malformed_replies_fail_the_session(wire: bytes) -> None:
    client = SMTPClientEngine(CONFIG)
    events = feed(client, wire)
    assert len(events) == 1 and isinstance(events[0], SessionFailed)
    assert events[0].reply is None
    assert client.closed
    assert client.data_to_send() == b""


def test_longest_allowed_reply_line_and_reply_are_read() -> None:
    client = SMTPClientEngine(CONFIG)
    line = b"220 " + b"x" * (MAX_REPLY_LINE - 4) + b"\r\n"
    assert [type(e) for e in feed(client, line)] == [Greeted]
    lines = b"250-x\r\n" * (MAX_REPLY_LINES - 1) + b"250 x\r\n"
    assert feed(client, lines) == [Ready()]


def test_a_partial_reply_waits_for_the_rest() -> None:
    client = SMTPClientEngine(CONFIG)
    assert feed(client, b"220-mx\r\n220 ES") == []
    assert client.data_to_send() == b""
    assert feed(client, b"MTP\r\n") == [Greeted(Reply(220, None, ("mx", "ESMTP")))]


# -- greeting, EHLO and HELO -----------------------------------------------------------------------


def test_greeting_then_ehlo_then_ready() -> None:
    client = greeted()
    assert client.state is State.READY
    assert client.extensions == Extensions(
        pipelining=True,
        size=True,
        max_size=1000000,
        eight_bit_mime=True,
        smtputf8=True,
        enhanced_status_codes=True,
        keywords=frozenset({"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"}),
    )


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        pytest.param((), Extensions(), id="none"),
        pytest.param(
            ("size",), Extensions(size=True, keywords=frozenset({"SIZE"})), id="size_no_limit"
        ),
        pytest.param(
            ("SIZE 0",), Extensions(size=True, keywords=frozenset({"SIZE"})), id="size_zero"
        ),
        pytest.param(
            ("SIZE lots",), Extensions(size=True, keywords=frozenset({"SIZE"})), id="size_junk"
        ),
        pytest.param(
            ("SIZE 10240000",),
            Extensions(size=True, max_size=10240000, keywords=frozenset({"SIZE"})),
            id="size_limit",
        ),
        pytest.param(
            ("starttls", "AUTH=LOGIN PLAIN", "DSN", ""),
            Extensions(starttls=True, keywords=frozenset({"STARTTLS", "AUTH=LOGIN", "DSN"})),
            id="unknown_keywords_kept_for_the_log",
        ),
    ],
)
def test_ehlo_keywords(keywords: tuple[str, ...], expected: Extensions) -> None:
    client = greeted(keywords, ClientConfig(HELO_NAME, tls="none"))
    assert client.extensions == expected


def test_ehlo_keywords_from_the_real_server() -> None:
    conversation = Conversation([]).run()
    assert conversation.events[1:] == [Ready(), Closed(Reply(221, "2.0.0", "Bye"))]
    assert conversation.client.extensions.keywords == {
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    }
    assert conversation.client.extensions.max_size == BIG.max_message_size
    assert [e for e in conversation.server_events if isinstance(e, Hello)] == [
        Hello("EHLO", HELO_NAME)
    ]


def test_helo_fallback_when_ehlo_gets_5xx() -> None:
    client = SMTPClientEngine(CONFIG)
    feed(client, b"220 old.example ready\r\n")
    assert client.data_to_send() == b"EHLO relay.strata.test\r\n"
    assert feed(client, b"502 5.5.1 Command not implemented\r\n") == []
    assert client.data_to_send() == b"HELO relay.strata.test\r\n"
    assert client.state is State.HELO
    assert feed(client, b"250 old.example\r\n") == [Ready()]
    assert client.extensions == Extensions()


def test_helo_fallback_against_the_real_server() -> None:
    def answer(event: server_proto.Event) -> Reply | None:
        if isinstance(event, Hello) and event.verb == "EHLO":
            return Reply(500, "5.5.2", "Error: command not recognized")
        return None

    conversation = Conversation([Message()], answer=answer).run()
    assert [e for e in conversation.server_events if isinstance(e, Hello)] == [
        Hello("EHLO", HELO_NAME),
        Hello("HELO", HELO_NAME),
    ]
    mail = conversation.of_type(MailFrom)
    assert mail == [MailFrom("alice@sender.test")]  # no SIZE: HELO offers nothing
    assert conversation.results[0].recipients[0].delivered
    assert isinstance(conversation.events[-1], Closed)


@pytest.mark.parametrize(
    ("script", "reason", "quit_sent"),
    [
        pytest.param(b"554 5.7.1 go away\r\n", "the server refused the session", True, id="554"),
        pytest.param(b"421 4.3.2 busy\r\n", "(421)", False, id="421_greeting"),
        pytest.param(
            b"220 mx\r\n451 4.3.0 later\r\n", "the server refused EHLO", True, id="ehlo_4xx"
        ),
        pytest.param(
            b"220 mx\r\n500 what\r\n501 5.5.4 no\r\n",
            "the server refused EHLO and HELO",
            True,
            id="ehlo_and_helo_refused",
        ),
        pytest.param(b"220 mx\r\n421 4.3.2 bye\r\n", "(421)", False, id="421_to_ehlo"),
    ],
)
def test_session_refused(script: bytes, reason: str, quit_sent: bool) -> None:
    client = SMTPClientEngine(CONFIG)
    events = feed(client, script)
    failed = events[-1]
    assert isinstance(failed, SessionFailed)
    assert failed.reply is not None and failed.reply.code >= 400
    assert reason in failed.reason
    assert client.closed
    assert client.data_to_send().endswith(b"QUIT\r\n") is quit_sent
    assert client.timeout_for_state() == 0.0


# -- STARTTLS --------------------------------------------------------------------------------------

NOT_OFFERED = Reply(450, "4.7.4", "Strata: TLS is required, but was not offered by the server")
REFUSED_TLS = Reply(454, "4.7.0", "TLS not available due to temporary reason")


@pytest.mark.parametrize(
    ("policy", "offered", "starttls_reply", "expected"),
    [
        pytest.param("none", True, None, [Ready()], id="none_ignores_offer"),
        pytest.param("opportunistic", False, None, [Ready()], id="opportunistic_not_offered"),
        pytest.param(
            "opportunistic", True, b"220 2.0.0 go\r\n", [StartTLSNeeded()], id="opportunistic"
        ),
        pytest.param(
            "opportunistic",
            True,
            REFUSED_TLS.to_bytes(),
            [Ready()],
            id="opportunistic_refused_continues_plaintext",
        ),
        pytest.param("required", True, b"220 go\r\n", [StartTLSNeeded()], id="required"),
        pytest.param(
            "required", False, None, [TLSUnavailable(NOT_OFFERED)], id="required_not_offered"
        ),
        pytest.param(
            "required",
            True,
            REFUSED_TLS.to_bytes(),
            [TLSUnavailable(REFUSED_TLS)],
            id="required_refused",
        ),
        pytest.param("verify", True, b"220 go\r\n", [StartTLSNeeded()], id="verify"),
        pytest.param("verify", False, None, [TLSUnavailable(NOT_OFFERED)], id="verify_not_offered"),
        pytest.param(
            "verify",
            True,
            b"554 5.7.3 no TLS for you\r\n",
            [TLSUnavailable(Reply(554, "5.7.3", "no TLS for you"))],
            id="verify_refused_5xx",
        ),
    ],
)
def test_starttls_policy(
    policy: str, offered: bool, starttls_reply: bytes | None, expected: list[Event]
) -> None:
    client = SMTPClientEngine(ClientConfig(HELO_NAME, tls=policy))  # type: ignore[arg-type]
    feed(client, b"220 mx\r\n")
    client.data_to_send()
    events = feed(client, ehlo("PIPELINING", *(["STARTTLS"] if offered else [])))
    sent = client.data_to_send()
    if starttls_reply is not None:
        assert events == []
        assert sent == b"STARTTLS\r\n"
        assert client.state is State.STARTTLS
        events = feed(client, starttls_reply)
        sent = client.data_to_send()
    else:
        assert b"STARTTLS" not in sent
    assert events == expected
    if isinstance(expected[0], TLSUnavailable):
        assert sent == b"QUIT\r\n"
        assert client.closed
    elif isinstance(expected[0], Ready):
        assert not client.tls_active
        assert client.state is State.READY
    else:
        assert client.state is State.TLS


def test_required_tls_after_helo_fallback_is_unavailable() -> None:
    client = SMTPClientEngine(ClientConfig(HELO_NAME, tls="required"))
    feed(client, b"220 mx\r\n500 no EHLO\r\n")
    assert feed(client, b"250 mx\r\n") == [TLSUnavailable(NOT_OFFERED)]


def test_implicit_tls_never_says_starttls() -> None:
    client = greeted(("STARTTLS",), ClientConfig(HELO_NAME, tls="required", tls_active=True))
    assert client.tls_active
    assert client.state is State.READY


def test_after_tls_the_client_says_ehlo_again_and_forgets_the_old_keywords() -> None:
    client = SMTPClientEngine(ClientConfig(HELO_NAME, tls="required"))
    feed(client, b"220 mx\r\n" + ehlo("STARTTLS", "SIZE 10", "PIPELINING"))
    assert client.data_to_send() == b"EHLO relay.strata.test\r\nSTARTTLS\r\n"
    # RFC 3207 §4.2: a reply injected in the clear after "220" is discarded, not read under TLS.
    assert feed(client, b"220 2.0.0 go ahead\r\n250 injected\r\n") == [StartTLSNeeded()]
    assert feed(client, b"250 injected too\r\n") == []
    client.tls_started()
    assert client.tls_active
    assert client.extensions == Extensions()
    assert client.data_to_send() == b"EHLO relay.strata.test\r\n"
    assert client.state is State.EHLO
    assert feed(client, ehlo("SIZE 2000", "STARTTLS")) == [Ready()]
    assert client.extensions.max_size == 2000
    assert not client.extensions.pipelining
    assert client.data_to_send() == b""  # no second STARTTLS


def test_starttls_against_the_real_server() -> None:
    conversation = Conversation(tls_available=True).run()
    assert [type(e) for e in conversation.events] == [
        Greeted,
        StartTLSNeeded,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        Closed,
    ]
    assert conversation.client.tls_active and conversation.server.tls_active
    hellos = [e for e in conversation.server_events if isinstance(e, Hello | StartTLS)]
    assert hellos == [Hello("EHLO", HELO_NAME), StartTLS(), Hello("EHLO", HELO_NAME)]
    assert "STARTTLS" not in conversation.client.extensions.keywords
    assert conversation.received == [Message().body]


def test_tls_started_without_starttls_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        greeted().tls_started()


def test_failed_handshake_is_reported_by_abort() -> None:
    client = SMTPClientEngine(ClientConfig(HELO_NAME, tls="opportunistic"))
    feed(client, b"220 mx\r\n" + ehlo("STARTTLS"))
    assert feed(client, b"220 go\r\n") == [StartTLSNeeded()]
    client.abort("TLS handshake failed: bad certificate")
    assert drain(client) == [SessionFailed(None, "TLS handshake failed: bad certificate")]
    assert client.closed


# -- MAIL parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keywords", "message", "expected"),
    [
        pytest.param(
            ALL_KEYWORDS,
            Message(),
            MailFrom("alice@sender.test", size=22, params={"SIZE": "22"}),
            id="size_when_offered",
        ),
        pytest.param(
            ("PIPELINING", "8BITMIME"),
            Message(),
            MailFrom("alice@sender.test"),
            id="no_size_when_not_offered",
        ),
        pytest.param(
            ALL_KEYWORDS,
            Message(body="Grüße\r\n".encode(), body_8bit=True),
            MailFrom(
                "alice@sender.test",
                size=9,
                body="8BITMIME",
                params={"SIZE": "9", "BODY": "8BITMIME"},
            ),
            id="8bit",
        ),
        pytest.param(
            ("PIPELINING",),
            Message(body="Grüße\r\n".encode(), body_8bit=True),
            MailFrom("alice@sender.test"),
            id="8bit_without_8bitmime_is_sent_as_it_is",
        ),
        pytest.param(
            ALL_KEYWORDS,
            Message(sender="jörg@sender.test", recipients=("ü@customer.test",), smtputf8=True),
            MailFrom(
                "jörg@sender.test",
                size=22,
                smtputf8=True,
                params={"SIZE": "22", "SMTPUTF8": None},
            ),
            id="smtputf8",
        ),
        pytest.param(
            ALL_KEYWORDS,
            Message(sender=""),
            MailFrom("", size=22, params={"SIZE": "22"}),
            id="null_sender",
        ),
    ],
)
def test_mail_parameters(keywords: tuple[str, ...], message: Message, expected: MailFrom) -> None:
    conversation = Conversation([message], keywords=keywords).run()
    assert conversation.of_type(MailFrom) == [expected]
    assert conversation.received == [message.body]
    assert [r.delivered for r in conversation.results[0].recipients] == [True]
    assert conversation.of_type(RcptTo) == [RcptTo(r) for r in message.recipients]


@pytest.mark.parametrize(
    ("keywords", "message", "code", "enhanced"),
    [
        pytest.param(
            ("SIZE 100",), Message(body=b"x" * 101), 552, "5.3.4", id="larger_than_size_limit"
        ),
        pytest.param(("8BITMIME",), Message(smtputf8=True), 553, "5.6.7", id="smtputf8_missing"),
    ],
)
def test_messages_the_server_cannot_take_are_not_sent(
    keywords: tuple[str, ...], message: Message, code: int, enhanced: str
) -> None:
    message = replace(message, recipients=("a@customer.test", "b@customer.test"))
    conversation = Conversation([message, Message()], keywords=keywords).run()
    refused = conversation.results[0]
    assert [(r.reply.code, r.reply.enhanced, r.local) for r in refused.recipients] == [
        (code, enhanced, True),
        (code, enhanced, True),
    ]
    assert all(r.permanent for r in refused.recipients)
    assert "not sent" in str(refused.recipients[0].reply.text)
    assert refused.data_reply is None
    # Nothing of the first message reached the server; the second went through.
    assert [m.sender for m in conversation.of_type(MailFrom)] == ["alice@sender.test"]
    assert conversation.received == [Message().body]
    assert [type(e) for e in conversation.events[1:]] == [
        Ready,
        TransactionResult,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        Closed,
    ]


def test_message_of_exactly_the_size_limit_is_sent() -> None:
    conversation = Conversation([Message(body=b"x" * 98 + b"\r\n")], keywords=("SIZE 100",)).run()
    assert conversation.results[0].recipients[0].delivered


@pytest.mark.parametrize(
    ("sender", "recipients"),
    [
        pytest.param("a@x.test\r\nRSET", ["b@x.test"], id="crlf_in_sender"),
        pytest.param("a@x.test", ["b@x.test\n"], id="lf_in_recipient"),
        pytest.param("a@x.test", [], id="no_recipient"),
        pytest.param("a@x.test", [""], id="empty_recipient"),
    ],
)
def test_send_message_refuses_bad_arguments(sender: str, recipients: list[str]) -> None:
    client = greeted()
    with pytest.raises(ValueError):
        client.send_message(sender, recipients, 10)
    assert client.state is State.READY
    assert client.data_to_send() == b""


def test_send_message_refuses_negative_size() -> None:
    with pytest.raises(ValueError):
        greeted().send_message("a@x.test", ["b@x.test"], -1)


def test_adapter_calls_out_of_turn_are_errors() -> None:
    client = SMTPClientEngine(CONFIG)
    with pytest.raises(RuntimeError):
        client.send_message("a@x.test", ["b@x.test"], 10)
    with pytest.raises(RuntimeError):
        client.quit()
    client = greeted()
    with pytest.raises(RuntimeError):
        client.body_chunk(b"x")
    with pytest.raises(RuntimeError):
        client.end_body()


# -- pipelining ------------------------------------------------------------------------------------


def test_pipelined_transaction_sends_mail_rcpts_and_data_at_once() -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test", "c@y.test"], 5)
    assert commands(client.data_to_send()) == [
        "MAIL FROM:<a@x.test> SIZE=5",
        "RCPT TO:<b@y.test>",
        "RCPT TO:<c@y.test>",
        "DATA",
    ]
    assert feed(client, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n") == []
    assert feed(client, b"354 go\r\n") == [DataReady()]
    client.body_chunk(b"hello\r\n")
    client.end_body()
    assert client.data_to_send() == b"hello\r\n.\r\n"
    [result, ready] = feed(client, b"250 2.0.0 queued\r\n")
    assert isinstance(result, TransactionResult) and ready == Ready()
    assert all(r.delivered for r in result.recipients)


def test_without_pipelining_one_command_per_reply() -> None:
    client = greeted(("SIZE 1000",))
    client.send_message("a@x.test", ["b@y.test", "c@y.test"], 5)
    assert client.data_to_send() == b"MAIL FROM:<a@x.test> SIZE=5\r\n"
    feed(client, b"250 Ok\r\n")
    assert client.data_to_send() == b"RCPT TO:<b@y.test>\r\n"
    feed(client, b"550 no\r\n")
    assert client.data_to_send() == b"RCPT TO:<c@y.test>\r\n"
    feed(client, b"250 Ok\r\n")
    assert client.data_to_send() == b"DATA\r\n"
    assert feed(client, b"354 go\r\n") == [DataReady()]


def test_without_pipelining_no_data_when_every_rcpt_is_refused() -> None:
    client = greeted(())
    client.send_message("a@x.test", ["b@y.test"], 5)
    feed(client, b"250 Ok\r\n")
    client.data_to_send()
    [result] = feed(client, b"550 5.1.1 no\r\n")
    assert isinstance(result, TransactionResult)
    assert result.recipients == (RecipientResult("b@y.test", Reply(550, "5.1.1", "no")),)
    assert client.data_to_send() == b"RSET\r\n"  # MAIL was accepted: the server holds it
    assert client.state is State.RSET
    assert feed(client, b"250 2.0.0 Ok\r\n") == [Ready()]


def test_rset_refused_fails_the_session() -> None:
    client = greeted(())
    client.send_message("a@x.test", ["b@y.test"], 5)
    feed(client, b"250 Ok\r\n550 no\r\n")
    [failed] = feed(client, b"500 what\r\n")
    assert isinstance(failed, SessionFailed) and "RSET" in failed.reason


def test_data_accepted_with_no_valid_recipient_gets_an_empty_message() -> None:
    # RFC 2920 §3.1: a server that says 354 although every RCPT failed gets a lone ".".
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    client.data_to_send()
    assert feed(client, b"250 Ok\r\n550 5.1.1 no\r\n354 go\r\n") == []
    assert client.data_to_send() == b".\r\n"
    [result, ready] = feed(client, b"554 5.5.1 no valid recipients\r\n")
    assert isinstance(result, TransactionResult)
    assert result.recipients == (RecipientResult("b@y.test", Reply(550, "5.1.1", "no")),)
    assert result.data_reply == Reply(554, "5.5.1", "no valid recipients")
    assert ready == Ready()


# -- per-recipient results against the real server -------------------------------------------------

TEMP = Reply(450, "4.2.1", "Mailbox busy")
PERM = Reply(550, "5.1.1", "No such user")
CLOSING = Reply(421, "4.3.2", "Shutting down")
DATA_REFUSED = Reply(451, "4.3.0", "Error: try again later")
FINAL_4XX = Reply(451, "4.3.0", "Error: queue file write error")
FINAL_5XX = Reply(554, "5.7.1", "Message rejected as spam")
MAIL_REFUSED = Reply(550, "5.7.1", "Sender rejected")
NO_VALID = Reply(554, "5.5.1", "Error: no valid recipients")


def answer_by_name(
    *, mail: Reply | None = None, data: Reply | None = None, final: Reply | None = None
) -> ServerAnswer:
    """
    RCPT replies by the recipient's local part (ok, temp, perm, closing); MAIL, DATA and "." get
    the given replies the first time only, so that a follow-up message goes through.
    """
    once: dict[type[server_proto.Event], Reply | None] = {
        MailFrom: mail,
        DataStart: data,
        DataEnd: final,
    }

    def answer(event: server_proto.Event) -> Reply | None:
        if isinstance(event, RcptTo):
            return {"temp": TEMP, "perm": PERM, "closing": CLOSING}.get(
                event.recipient.split("@")[0]
            )
        return once.pop(type(event), None)

    return answer


def addresses(*names: str) -> tuple[str, ...]:
    return tuple(f"{name}@customer.test" for name in names)


RESULT_CASES = [
    # (id, recipients, answer, replies per recipient, data_reply, RSET expected)
    ("mixed", ("ok", "temp", "perm", "ok2"), {}, [QUEUED, TEMP, PERM, QUEUED], QUEUED, False),
    ("mail_refused", ("ok", "temp"), {"mail": MAIL_REFUSED}, [MAIL_REFUSED] * 2, None, None),
    (
        "data_refused",
        ("ok", "perm"),
        {"data": DATA_REFUSED},
        [DATA_REFUSED, PERM],
        DATA_REFUSED,
        True,
    ),
    ("final_4xx", ("ok", "perm"), {"final": FINAL_4XX}, [FINAL_4XX, PERM], FINAL_4XX, False),
    ("final_5xx", ("ok", "temp"), {"final": FINAL_5XX}, [FINAL_5XX, TEMP], FINAL_5XX, False),
    ("none_accepted", ("temp", "perm"), {}, [TEMP, PERM], None, True),
]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
@pytest.mark.parametrize(
    ("names", "answers", "replies", "data_reply", "rset"),
    [pytest.param(*case[1:], id=case[0]) for case in RESULT_CASES],
)
def test_per_recipient_results(
    pipelining: bool,
    names: tuple[str, ...],
    answers: dict[str, Reply],
    replies: list[Reply],
    data_reply: Reply | None,
    rset: bool | None,
) -> None:
    keywords = ("PIPELINING", "SIZE 100000") if pipelining else ("SIZE 100000",)
    if names == ("temp", "perm") and pipelining:
        data_reply = NO_VALID  # the server answers the pipelined DATA itself
    # A second message follows each case: the session must still be in step.
    follow_up = Message(body=b"second\r\n")
    conversation = Conversation(
        [Message(recipients=addresses(*names)), follow_up],
        answer=answer_by_name(**answers),
        keywords=keywords,
    ).run()
    [result, second] = conversation.results
    assert result.sender == "alice@sender.test"
    assert [r.recipient for r in result.recipients] == list(addresses(*names))
    assert [r.reply for r in result.recipients] == replies
    assert not any(r.local for r in result.recipients)
    assert result.data_reply == data_reply
    # RSET only where the server may still hold the transaction: MAIL refused mid-pipeline,
    # DATA refused or never reached.  None: RSET exactly when pipelined.
    expected_rset = pipelining if rset is None else rset
    assert bool(conversation.of_type(Reset)) is expected_rset
    assert second.recipients[0].delivered
    content_sent = any(r in (QUEUED, FINAL_4XX, FINAL_5XX) for r in replies)
    assert conversation.received[-1] == b"second\r\n"
    assert len(conversation.received) == (2 if content_sent else 1)
    assert isinstance(conversation.events[-1], Closed)


def test_421_mid_transaction_answers_every_open_recipient() -> None:
    names = ("ok", "perm", "closing", "later")
    conversation = Conversation(
        [Message(recipients=addresses(*names)), Message()], answer=answer_by_name()
    ).run()
    [result] = conversation.results
    assert [r.reply for r in result.recipients] == [CLOSING, PERM, CLOSING, CLOSING]
    assert result.data_reply is None
    assert conversation.events[-1] == SessionFailed(
        CLOSING, "the server is closing the connection (421)"
    )
    assert not conversation.to_server.endswith(b"QUIT\r\n")


def test_421_during_the_content() -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test", "c@y.test"], 5)
    feed(client, b"250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n354 go\r\n")
    client.body_chunk(b"half of it")
    client.data_to_send()
    [result, failed] = feed(client, b"421 4.4.2 timeout\r\n")
    closing = Reply(421, "4.4.2", "timeout")
    assert isinstance(result, TransactionResult)
    assert [r.reply for r in result.recipients] == [closing, Reply(550, "5.1.1", "no")]
    assert result.data_reply == closing
    assert failed == SessionFailed(closing, "the server is closing the connection (421)")
    client.body_chunk(b"the rest")  # an adapter still feeding is ignored
    client.end_body()
    assert client.data_to_send() == b""


def test_421_while_idle() -> None:
    client = greeted()
    [failed] = feed(client, b"421 4.3.2 shutting down\r\n")
    assert failed == SessionFailed(
        Reply(421, "4.3.2", "shutting down"), "the server is closing the connection (421)"
    )


def test_unexpected_reply_while_idle_fails_the_session() -> None:
    client = greeted()
    [failed] = feed(client, b"250 Ok\r\n")
    assert isinstance(failed, SessionFailed) and failed.reply == Reply(250, None, "Ok")


def test_early_refusal_during_content_answers_the_final_dot() -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    feed(client, b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    assert feed(client, b"552 5.3.4 too big\r\n") == []
    client.body_chunk(b"x\r\n")
    client.end_body()
    [result, ready] = drain(client)
    assert isinstance(result, TransactionResult)
    assert result.data_reply == Reply(552, "5.3.4", "too big")
    assert ready == Ready()


def test_early_success_during_content_is_not_a_delivery() -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    feed(client, b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    [result, failed] = feed(client, b"250 2.0.0 queued\r\n")
    assert isinstance(result, TransactionResult) and isinstance(failed, SessionFailed)
    [recipient] = result.recipients
    assert not recipient.delivered and not recipient.permanent and recipient.local


@pytest.mark.parametrize(
    ("replies", "state"),
    [
        pytest.param(b"", State.MAIL, id="before_mail_reply"),
        pytest.param(b"250 Ok\r\n250 Ok\r\n354 go\r\n", State.BODY, id="in_content"),
        pytest.param(b"250 Ok\r\n250 Ok\r\n354 go\r\n", State.DOT, id="after_final_dot"),
    ],
)
def test_abort_reports_the_transaction_with_a_local_4xx(replies: bytes, state: State) -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    if replies:
        feed(client, replies)
    if state is State.DOT:
        client.end_body()
    assert client.state is state
    client.abort("timeout after 600s")
    [result, failed] = drain(client)
    assert isinstance(result, TransactionResult)
    [recipient] = result.recipients
    assert recipient.local and recipient.reply == Reply(451, "4.4.2", "Strata: timeout after 600s")
    assert result.data_reply == (None if state is State.MAIL else recipient.reply)
    assert failed == SessionFailed(None, "timeout after 600s")
    assert client.closed


def test_connection_lost_is_eof() -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    client.receive_data(b"")
    [result, failed] = drain(client)
    assert isinstance(result, TransactionResult)
    assert failed == SessionFailed(None, "connection closed by the server")


def test_quit_then_closed() -> None:
    client = greeted()
    client.quit()
    assert client.data_to_send() == b"QUIT\r\n"
    assert client.timeout_for_state() == 300.0
    assert feed(client, b"221 2.0.0 Bye\r\n") == [Closed(Reply(221, "2.0.0", "Bye"))]
    assert client.closed
    client.quit()  # ignored once closed


def test_server_closing_after_quit_without_a_reply() -> None:
    client = greeted()
    client.quit()
    client.receive_data(b"")
    assert drain(client) == [Closed(None)]


# -- several messages per session ------------------------------------------------------------------


def test_several_messages_in_one_session() -> None:
    bodies = [b"one\r\n", b".two\r\n", b"three"]
    conversation = Conversation([Message(body=b) for b in bodies]).run()
    assert conversation.received == [b"one\r\n", b".two\r\n", b"three\r\n"]
    assert [type(e) for e in conversation.events] == [
        Greeted,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        Closed,
    ]
    assert conversation.of_type(Reset) == []  # MAIL follows a completed transaction directly
    assert conversation.to_server.count(b"MAIL FROM:") == 3
    assert conversation.to_server.endswith(b"QUIT\r\n")


# -- timeouts --------------------------------------------------------------------------------------


def test_timeout_for_each_state() -> None:
    # RFC 5321 §4.5.3.2.
    client = SMTPClientEngine(CONFIG)
    seen = [(client.state, client.timeout_for_state())]
    feed(client, b"220 mx\r\n")
    seen.append((client.state, client.timeout_for_state()))
    feed(client, ehlo())
    seen.append((client.state, client.timeout_for_state()))
    client.send_message("a@x.test", ["b@y.test"], 5)
    seen.append((client.state, client.timeout_for_state()))
    feed(client, b"250 Ok\r\n")
    seen.append((client.state, client.timeout_for_state()))
    feed(client, b"250 Ok\r\n")
    seen.append((client.state, client.timeout_for_state()))
    feed(client, b"354 go\r\n")
    seen.append((client.state, client.timeout_for_state()))
    client.end_body()
    seen.append((client.state, client.timeout_for_state()))
    assert seen == [
        (State.GREETING, 300.0),
        (State.EHLO, 300.0),
        (State.READY, 300.0),
        (State.MAIL, 300.0),
        (State.RCPT, 300.0),
        (State.DATA, 120.0),
        (State.BODY, 180.0),
        (State.DOT, 600.0),
    ]


def test_pipelined_timeout_follows_the_oldest_unanswered_command() -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    assert client.timeout_for_state() == 300.0
    feed(client, b"250 Ok\r\n250 Ok\r\n")
    assert client.state is State.DATA
    assert client.timeout_for_state() == 120.0


# -- message content -------------------------------------------------------------------------------

CONTENT_CASES = [
    # (id, chunks fed, bytes on the wire after the 354)
    ("plain", [b"a\r\nb\r\n"], b"a\r\nb\r\n.\r\n"),
    ("first_line_dot", [b".a\r\n"], b"..a\r\n.\r\n"),
    ("lone_dot_line", [b"a\r\n.\r\nb\r\n"], b"a\r\n..\r\nb\r\n.\r\n"),
    ("dot_at_chunk_start", [b"a\r\n", b".\r\n"], b"a\r\n..\r\n.\r\n"),
    ("dot_after_split_crlf", [b"a\r", b"\n.", b"b"], b"a\r\n..b\r\n.\r\n"),
    ("dot_after_lf_chunk", [b"a\r\n", b"", b".", b"."], b"a\r\n...\r\n.\r\n"),
    ("dot_mid_line_at_chunk_start", [b"a", b".b\r\n"], b"a.b\r\n.\r\n"),
    ("dot_after_bare_cr", [b"a\r.b\r\n"], b"a\r.b\r\n.\r\n"),
    ("dot_after_bare_lf", [b"a\n.\n"], b"a\n..\n\r\n.\r\n"),
    ("no_final_crlf", [b"a"], b"a\r\n.\r\n"),
    ("final_bare_cr", [b"a\r\n\r"], b"a\r\n\r\r\n.\r\n"),
    ("final_crlf_split", [b"x\r", b"\n"], b"x\r\n.\r\n"),
    ("final_crlf_one_byte_chunks", [b"x", b"\r", b"\n"], b"x\r\n.\r\n"),
    ("empty", [], b".\r\n"),
    ("empty_chunks", [b"", b""], b".\r\n"),
    ("just_crlf", [b"\r\n"], b"\r\n.\r\n"),
    ("crlf_never_doubled", [b"a\r\n\r\n"], b"a\r\n\r\n.\r\n"),
]


@pytest.mark.parametrize(
    ("chunks", "wire"), [pytest.param(*case[1:], id=case[0]) for case in CONTENT_CASES]
)
def test_content_on_the_wire(chunks: list[bytes], wire: bytes) -> None:
    client = greeted()
    client.send_message("a@x.test", ["b@y.test"], 5)
    assert feed(client, b"250 Ok\r\n250 Ok\r\n354 go\r\n") == [DataReady()]
    client.data_to_send()
    for chunk in chunks:
        client.body_chunk(chunk)
    client.end_body()
    assert client.data_to_send() == wire


def test_twisted_lone_dot_at_16k_chunk_boundary_does_not_end_the_data() -> None:
    # research/twisted-audit.md §2: Twisted's client stuffs each 16 KiB chunk on its own, so a
    # lone "." starting a chunk ended DATA early and the rest went out as commands.
    first = b"x" * 16382 + b"\r\n"
    body = first + b".\r\nRSET\r\n.hidden\r\n"
    assert len(first) == 16384
    conversation = Conversation([Message(body=body)], body_chunks=(16384,)).run()
    assert conversation.received == [body]
    assert conversation.of_type(Reset) == []
    assert conversation.results[0].recipients[0].delivered


def test_twisted_crlf_is_not_turned_into_cr_cr_lf() -> None:
    body = b"Subject: x\r\n\r\nline\r\n"
    conversation = Conversation([Message(body=body)], body_chunks=(3,)).run()
    assert b"\r\r\n" not in conversation.to_server
    assert conversation.received == [body]


CONTENT_PIECES = st.sampled_from(
    [b"", b".", b"..", b".x", b"x.", b"a", b"From x", b"\x00\xff", "é".encode(), b"\r"]
)
ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
LINES = st.lists(
    st.tuples(st.lists(CONTENT_PIECES, max_size=3).map(b"".join), ENDINGS), max_size=30
).map(lambda lines: b"".join(text + end for text, end in lines))
CONTENT = st.one_of(st.binary(max_size=400), LINES)
CHUNK_SIZES = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=CONTENT, body_chunks=CHUNK_SIZES, wire_chunks=CHUNK_SIZES)
def test_property_the_server_receives_the_content_exactly(
    content: bytes, body_chunks: list[int], wire_chunks: list[int]
) -> None:
    conversation = Conversation(
        [Message(body=content), Message(body=content)],
        body_chunks=body_chunks,
        wire_chunks=wire_chunks,
    ).run()
    expected = expected_content(content)
    assert conversation.received == [expected, expected]
    assert [r.recipients[0].delivered for r in conversation.results] == [True, True]
    assert isinstance(conversation.events[-1], Closed)
    if b"\n" not in content.replace(b"\r\n", b""):
        # Without bare LFs the server's normalization does nothing: the bytes are the same.
        assert conversation.received[0] in (content, content + b"\r\n")


@settings(max_examples=20, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b".", b"..", b".x", b"x"]), min_size=1, max_size=8),
    offset=st.integers(min_value=0, max_value=4),
)
def test_property_dot_lines_at_the_16k_boundary(lines: list[bytes], offset: int) -> None:
    head = b"y" * (16384 - 2 - offset) + b"\r\n"
    body = head + b"\r\n".join(lines) + b"\r\n"
    conversation = Conversation([Message(body=body)], body_chunks=(16384,)).run()
    assert conversation.received == [body]


# Long lines (issue 11, point 3): the relay reads a stored message in ranges that cut lines of any
# length; they must go out unchanged, stuffed only where a line starts, and come in whole.


def stuffed(lines: Sequence[bytes]) -> bytes:
    """RFC 5321 §4.5.2: the lines as they must be on the wire, each ending in CRLF."""
    return b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)


def test_long_lines_are_stuffed_only_where_a_line_starts_at_chunk_boundaries() -> None:
    lines = [b"a" * 100_000, b"." + b"b" * 100_000 + b".", b".", b"c" * 20_000 + b"..d"]
    body = b"".join(line + b"\r\n" for line in lines)
    # Cut so that chunks start with: the "." of a line start, the "." ending a long line, the
    # lone "." line, and the ".." inside the last line.
    starts = [100_002, body.index(b".\r\n", 100_003), body.index(b"\r\n.\r\n") + 2]
    starts.append(body.index(b"..d"))
    sizes = [b - a for a, b in zip([0, *starts], [*starts, len(body)], strict=True)]
    conversation = Conversation([Message(body=body)], body_chunks=sizes).run()
    assert conversation.to_server.endswith(b"DATA\r\n" + stuffed(lines) + b".\r\nQUIT\r\n")
    assert conversation.received == [body]
    assert conversation.results[0].recipients[0].delivered


LONG_LINES = st.lists(
    st.tuples(
        st.sampled_from([b"", b".", b".."]), st.integers(0, 40_000), st.sampled_from([b"", b"."])
    ).map(lambda t: t[0] + b"z" * t[1] + t[2]),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=LONG_LINES,
    body_chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=5),
    wire_chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=5),
)
def test_property_long_lines_go_out_unchanged_and_come_in_whole(
    lines: list[bytes], body_chunks: list[int], wire_chunks: list[int]
) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    conversation = Conversation(
        [Message(body=body)], body_chunks=body_chunks, wire_chunks=wire_chunks
    ).run()
    assert b"DATA\r\n" + stuffed(lines) + b".\r\n" in conversation.to_server
    assert conversation.received == [body]


# -- any split of the server's bytes ---------------------------------------------------------------

TRANSCRIPT = (
    b"220-mx.customer.test ESMTP\r\n220 second line\r\n"
    b"250-mx.customer.test\r\n250-PIPELINING\r\n250-SIZE 1000\n250 8BITMIME\r\n"
    b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n450 busy\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
    b"250 2.0.0 Ok: queued\r\n"
    b"250 2.1.0 Ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n"
    b"250 2.0.0 Ok\r\n"
    b"221 2.0.0 Bye\r\n"
)
# The same session behind STARTTLS, without pipelining (one command per reply).
TLS_TRANSCRIPT = (
    b"220 mx.customer.test ESMTP\r\n250-mx.customer.test\r\n250 STARTTLS\r\n220 2.0.0 go\r\n"
    b"250-mx.customer.test\r\n250 SIZE 1000\r\n"
    b"250 Ok\r\n250 Ok\r\n550 no\r\n450 busy\r\n354 go\r\n250 queued\r\n"
    b"250 Ok\r\n550 no\r\n250 Ok\r\n"
    b"221 Bye\r\n"
)


class ScriptedAdapter:
    """
    Drives a client as the relay's adapter would, against bytes the test supplies: two messages,
    then QUIT; the TLS handshake always succeeds.
    """

    def __init__(self, config: ClientConfig = CONFIG) -> None:
        self.client = SMTPClientEngine(config)
        self.messages = deque(
            [
                (("a@customer.test", "b@customer.test", "c@customer.test"), b".x\r\n"),
                (("d@customer.test",), b"y\r\n"),
            ]
        )
        self.body = b""
        self.events: list[Event] = []
        self.sent = b""

    def feed(self, data: bytes) -> None:
        self.client.receive_data(data)
        self.pump()

    def pump(self) -> None:
        client = self.client
        for _ in range(10_000):
            event = client.next_event()
            if event is NEED_DATA:
                self.sent += client.data_to_send()
                assert isinstance(client.timeout_for_state(), float)
                return
            self.events.append(event)
            if isinstance(event, Ready):
                if self.messages:
                    recipients, self.body = self.messages.popleft()
                    client.send_message("s@x.test", recipients, len(self.body))
                else:
                    client.quit()
            elif isinstance(event, DataReady):
                client.body_chunk(self.body)
                client.end_body()
            elif isinstance(event, StartTLSNeeded):
                client.tls_started()
            elif isinstance(event, SessionFailed | TLSUnavailable | Closed):
                assert client.closed
        raise AssertionError("the engine never ran out of events")


def scripted_session(pieces: Sequence[bytes]) -> tuple[list[Event], bytes]:
    """Feed the transcript in pieces; the events and the bytes sent."""
    adapter = ScriptedAdapter()
    for piece in pieces:
        adapter.feed(piece)
    return adapter.events, adapter.sent


def test_scripted_session_in_one_piece() -> None:
    events, sent = scripted_session([TRANSCRIPT])
    assert [type(e) for e in events] == [
        Greeted,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        TransactionResult,
        Ready,
        Closed,
    ]
    first = events[3]
    assert isinstance(first, TransactionResult)
    assert [r.reply for r in first.recipients] == [
        Reply(250, "2.0.0", "Ok: queued"),
        Reply(550, "5.1.1", ("no such", "user")),
        Reply(450, None, "busy"),
    ]
    second = events[5]
    assert isinstance(second, TransactionResult)
    assert second.data_reply == Reply(554, "5.5.1", "no valid recipients")
    assert commands(sent) == [
        "EHLO relay.strata.test",
        "MAIL FROM:<s@x.test> SIZE=4",
        "RCPT TO:<a@customer.test>",
        "RCPT TO:<b@customer.test>",
        "RCPT TO:<c@customer.test>",
        "DATA",
        "..x",
        ".",
        "MAIL FROM:<s@x.test> SIZE=3",
        "RCPT TO:<d@customer.test>",
        "DATA",
        "RSET",
        "QUIT",
    ]


def test_scripted_tls_session_fed_reply_by_reply() -> None:
    adapter = ScriptedAdapter(ClientConfig(HELO_NAME, tls="required"))
    for line in TLS_TRANSCRIPT.splitlines(keepends=True):
        adapter.feed(line)
    assert [type(e) for e in adapter.events] == [
        Greeted,
        StartTLSNeeded,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        TransactionResult,
        Ready,
        Closed,
    ]
    assert adapter.client.tls_active
    assert "RSET" in commands(adapter.sent)  # MAIL accepted, every RCPT refused


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=40))
def test_property_any_split_of_the_server_bytes_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(TRANSCRIPT)]
    # (b"" would mean EOF: an adapter never passes an empty read otherwise.)
    pieces = [TRANSCRIPT[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    assert scripted_session(pieces) == scripted_session([TRANSCRIPT])


# -- the engine never raises on server bytes -------------------------------------------------------

REPLY_LINES = st.sampled_from(
    [
        b"220 mx\r\n",
        b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
        b"250-PIPELINING\r\n",
        b"250 Ok\r\n",
        b"250 2.0.0 Ok\n",
        b"354 go\r\n",
        b"421 4.4.2 bye\r\n",
        b"450 busy\r\n",
        b"550 5.1.1 no\r\n",
        b"221 bye\r\n",
        b"\r\n",
        b"999 odd\r\n",
        b"250-",
    ]
)
JUNK = st.lists(st.one_of(REPLY_LINES, st.binary(max_size=60)), max_size=20)


@settings(max_examples=500, deadline=None)
@given(
    transcript=st.sampled_from([TRANSCRIPT, TLS_TRANSCRIPT]),
    data=st.data(),
    junk=JUNK,
    policy=st.sampled_from(["none", "opportunistic", "required", "verify"]),
)
def test_property_the_engine_never_raises_on_server_bytes(
    transcript: bytes, data: st.DataObject, junk: list[bytes], policy: str
) -> None:
    # A good start cut anywhere, so that every state is reached, then anything at all.
    cut = data.draw(st.integers(min_value=0, max_value=len(transcript)))
    lines = transcript[:cut].splitlines(keepends=True)
    adapter = ScriptedAdapter(ClientConfig(HELO_NAME, tls=policy))  # type: ignore[arg-type]
    for piece in [*lines, *junk]:
        if piece:
            adapter.feed(piece)
    adapter.feed(b"")
    assert adapter.client.closed
    assert adapter.client.next_event() is NEED_DATA


# -- AUTH to a smarthost (RFC 4954) ----------------------------------------------------------------

USERNAME = "relay@strata.test"
PASSWORD = "s3cret-p\u00e4ss"  # noqa: S105 - a test password, not ASCII: sent as UTF-8
AUTH = (USERNAME, PASSWORD)
# Everything that would give the password away.  (The PLAIN response has it inside one base64 run
# with the username; that run is on the wire by design, and nowhere else.)
PLAIN_RESPONSE = base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode()
LOGIN_PASSWORD = base64.b64encode(PASSWORD.encode()).decode()
SECRETS = (PASSWORD, PLAIN_RESPONSE, LOGIN_PASSWORD)
# Implicit TLS (port 465): the simplest session in which AUTH may go ahead.
TLS_AUTH = ClientConfig(HELO_NAME, tls_active=True, auth=AUTH)
AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
BAD_CREDENTIALS = Reply(535, "5.7.8", "Authentication credentials invalid")
NO_MECHANISM = "smarthost offers no AUTH mechanism we support"
NO_TLS = "refusing to send credentials without TLS"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def ehlo_done(config: ClientConfig, *keywords: str) -> tuple[SMTPClientEngine, list[Event], bytes]:
    """A client greeted and answered EHLO with ``keywords``: its events and what it sent next."""
    client = SMTPClientEngine(config)
    feed(client, b"220 mx\r\n")
    client.data_to_send()
    events = feed(client, ehlo(*keywords))
    return client, events, client.data_to_send()


def test_config_repr_shows_the_username_but_never_the_password() -> None:
    text = repr(TLS_AUTH)
    assert USERNAME in text
    assert "auth_plaintext=False" in text
    assert_no_secret(text)
    assert_no_secret(str(TLS_AUTH))
    assert repr(CONFIG) == (
        "ClientConfig(helo_name='relay.strata.test', tls='opportunistic', tls_active=False, "
        "auth=None, auth_plaintext=False)"
    )


@pytest.mark.parametrize(
    "auth",
    [("", PASSWORD), ("a\0b", PASSWORD), (USERNAME, ""), (USERNAME, PASSWORD + "\0")],
    ids=["empty_user", "nul_user", "empty_password", "nul_password"],
)
def test_config_refuses_credentials_plain_cannot_carry(auth: tuple[str, str]) -> None:
    # RFC 4616 §2: authcid and passwd are 1*SAFE, SAFE excluding NUL.
    with pytest.raises(ValueError) as caught:
        ClientConfig(HELO_NAME, auth=auth)
    assert_no_secret(str(caught.value))


def test_without_auth_an_offered_auth_is_ignored() -> None:
    client, events, sent = ehlo_done(ClientConfig(HELO_NAME, tls_active=True), "AUTH PLAIN")
    assert events == [Ready()]
    assert sent == b""
    assert client.extensions.auth_mechanisms == {"PLAIN"}


def test_auth_mechanisms_are_read_from_the_standard_line_only() -> None:
    # Old Exchange/Postfix "AUTH=LOGIN" lines come with a standard "AUTH" line; alone, they are
    # only a keyword (test_ehlo_keywords pins that).
    client, _, _ = ehlo_done(CONFIG, "auth plain Login  CRAM-MD5", "AUTH=XOAUTH")
    assert client.extensions.auth_mechanisms == {"PLAIN", "LOGIN", "CRAM-MD5"}


@pytest.mark.parametrize("offer", ["AUTH PLAIN", "AUTH LOGIN PLAIN", "AUTH CRAM-MD5 LOGIN plain"])
def test_auth_plain_is_preferred_and_sent_with_its_initial_response(offer: str) -> None:
    client, events, sent = ehlo_done(TLS_AUTH, "PIPELINING", offer)
    assert events == []
    # RFC 4616 §2: [authzid] NUL authcid NUL passwd, UTF-8, in one base64 initial response.
    assert sent == f"AUTH PLAIN {PLAIN_RESPONSE}\r\n".encode()
    assert base64.b64decode(sent.split()[2]) == f"\0{USERNAME}\0{PASSWORD}".encode()
    assert client.state is State.AUTH
    assert client.timeout_for_state() == 300.0
    assert feed(client, AUTH_OK) == [Ready()]
    client.send_message("a@x.test", ["b@y.test"], 5)
    assert commands(client.data_to_send())[0] == "MAIL FROM:<a@x.test>"


def test_auth_login_when_plain_is_not_offered() -> None:
    client, events, sent = ehlo_done(TLS_AUTH, "AUTH CRAM-MD5 LOGIN")
    assert (events, sent) == ([], b"AUTH LOGIN\r\n")
    assert feed(client, f"334 {b64('Username:')}\r\n".encode()) == []
    assert client.data_to_send() == f"{b64(USERNAME)}\r\n".encode()
    assert feed(client, f"334 {b64('Password:')}\r\n".encode()) == []
    assert client.data_to_send() == f"{LOGIN_PASSWORD}\r\n".encode()
    assert client.state is State.AUTH
    assert feed(client, AUTH_OK) == [Ready()]
    assert client.data_to_send() == b""


def test_auth_comes_after_starttls_and_not_before() -> None:
    config = ClientConfig(HELO_NAME, tls="required", auth=AUTH)
    client, events, sent = ehlo_done(config, "STARTTLS", "AUTH PLAIN LOGIN")
    assert (events, sent) == ([], b"STARTTLS\r\n")
    assert feed(client, b"220 2.0.0 go ahead\r\n") == [StartTLSNeeded()]
    client.tls_started()
    assert client.data_to_send() == f"EHLO {HELO_NAME}\r\n".encode()
    # The mechanisms offered under TLS count, not those offered in the clear.
    assert feed(client, ehlo("AUTH LOGIN")) == []
    assert client.data_to_send() == b"AUTH LOGIN\r\n"


def test_auth_after_starttls_against_a_server_that_offers_auth_only_under_tls() -> None:
    # Postfix with smtpd_tls_auth_only: no AUTH in the clear.
    client, _, sent = ehlo_done(ClientConfig(HELO_NAME, auth=AUTH), "STARTTLS")
    assert sent == b"STARTTLS\r\n"
    feed(client, b"220 go\r\n")
    client.tls_started()
    client.data_to_send()
    assert feed(client, ehlo("AUTH PLAIN")) == []
    assert client.data_to_send() == f"AUTH PLAIN {PLAIN_RESPONSE}\r\n".encode()
    assert feed(client, AUTH_OK) == [Ready()]


def failed(events: list[Event]) -> SessionFailed:
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, SessionFailed)
    assert_no_secret(event.reason)
    assert_no_secret(repr(event))
    return event


@pytest.mark.parametrize(
    ("offer", "replies", "reply", "words", "after"),
    [
        pytest.param(
            "AUTH PLAIN",
            [BAD_CREDENTIALS.to_bytes()],
            BAD_CREDENTIALS,
            "permanently",
            b"QUIT\r\n",
            id="plain_535",
        ),
        pytest.param(
            "AUTH LOGIN",
            [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", BAD_CREDENTIALS.to_bytes()],
            BAD_CREDENTIALS,
            "permanently",
            b"QUIT\r\n",
            id="login_535_after_the_password",
        ),
        pytest.param(
            "AUTH PLAIN",
            [b"504 5.5.4 Unrecognized authentication type\r\n"],
            Reply(504, "5.5.4", "Unrecognized authentication type"),
            "permanently",
            b"QUIT\r\n",
            id="plain_504",
        ),
        pytest.param(
            "AUTH PLAIN",
            [b"454 4.7.0 Temporary authentication failure\r\n"],
            Reply(454, "4.7.0", "Temporary authentication failure"),
            "temporarily",
            b"QUIT\r\n",
            id="plain_454",
        ),
        pytest.param(
            "AUTH PLAIN",
            [b"334 \r\n"],
            Reply(334, None, ""),
            "unexpected challenge",
            b"*\r\nQUIT\r\n",  # RFC 4954 §4: "*" cancels the exchange
            id="plain_challenged_after_the_initial_response",
        ),
        pytest.param(
            "AUTH LOGIN",
            [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"334 bW9yZT8=\r\n"],
            Reply(334, None, "bW9yZT8="),
            "unexpected challenge",
            b"*\r\nQUIT\r\n",
            id="login_third_challenge",
        ),
    ],
)
def test_auth_refused_fails_the_session(
    offer: str, replies: list[bytes], reply: Reply, words: str, after: bytes
) -> None:
    client, _, _ = ehlo_done(TLS_AUTH, offer)
    for wire in replies[:-1]:
        assert feed(client, wire) == []
        client.data_to_send()
    event = failed(feed(client, replies[-1]))
    assert event.reply == reply
    assert "authentication failed" in event.reason
    assert words in event.reason
    assert client.data_to_send() == after
    assert client.closed


def test_421_during_auth_fails_the_session_without_quit() -> None:
    client, _, _ = ehlo_done(TLS_AUTH, "AUTH PLAIN")
    event = failed(feed(client, b"421 4.3.2 shutting down\r\n"))
    assert "(421)" in event.reason
    assert client.data_to_send() == b""


@pytest.mark.parametrize(
    "keywords",
    [(), ("PIPELINING", "SIZE 100"), ("AUTH CRAM-MD5 SCRAM-SHA-256",), ("AUTH",), ("AUTH=PLAIN",)],
    ids=["nothing", "no_auth", "unknown_mechanisms", "no_mechanism", "only_pre_standard_line"],
)
def test_no_mechanism_we_support_fails_before_sending_anything(keywords: tuple[str, ...]) -> None:
    client, events, sent = ehlo_done(TLS_AUTH, *keywords)
    assert failed(events) == SessionFailed(None, NO_MECHANISM)
    assert sent == b"QUIT\r\n"
    assert client.closed


def test_helo_fallback_offers_no_mechanism() -> None:
    client = SMTPClientEngine(TLS_AUTH)
    events = feed(client, b"220 mx\r\n500 no EHLO\r\n250 mx\r\n")
    assert events[1:] == [SessionFailed(None, NO_MECHANISM)]
    assert commands(client.data_to_send()) == [f"EHLO {HELO_NAME}", f"HELO {HELO_NAME}", "QUIT"]


@pytest.mark.parametrize(
    ("tls", "keywords", "starttls_reply"),
    [
        pytest.param("none", ("STARTTLS", "AUTH PLAIN"), None, id="policy_none"),
        pytest.param("opportunistic", ("AUTH PLAIN LOGIN",), None, id="starttls_not_offered"),
        pytest.param(
            "opportunistic", ("STARTTLS", "AUTH PLAIN"), REFUSED_TLS, id="starttls_refused"
        ),
        pytest.param("none", (), None, id="checked_before_the_mechanisms"),
    ],
)
def test_credentials_are_not_sent_without_tls(
    tls: str, keywords: tuple[str, ...], starttls_reply: Reply | None
) -> None:
    config = ClientConfig(HELO_NAME, tls=tls, auth=AUTH)  # type: ignore[arg-type]
    client, events, sent = ehlo_done(config, *keywords)
    if starttls_reply is not None:
        assert sent == b"STARTTLS\r\n"
        events = feed(client, starttls_reply.to_bytes())
        sent = client.data_to_send()
    assert failed(events) == SessionFailed(None, NO_TLS)
    assert sent == b"QUIT\r\n"
    assert client.closed


@pytest.mark.parametrize("tls", ["none", "opportunistic"])
def test_auth_plaintext_allows_auth_without_tls(tls: str) -> None:
    config = ClientConfig(HELO_NAME, tls=tls, auth=AUTH, auth_plaintext=True)  # type: ignore[arg-type]
    client, events, sent = ehlo_done(config, "AUTH LOGIN PLAIN")
    assert (events, sent) == ([], f"AUTH PLAIN {PLAIN_RESPONSE}\r\n".encode())
    assert not client.tls_active
    assert feed(client, AUTH_OK) == [Ready()]


def test_opportunistic_starttls_refused_then_plaintext_auth_when_allowed() -> None:
    config = ClientConfig(HELO_NAME, auth=AUTH, auth_plaintext=True)
    client, _, sent = ehlo_done(config, "STARTTLS", "AUTH LOGIN")
    assert sent == b"STARTTLS\r\n"
    assert feed(client, REFUSED_TLS.to_bytes()) == []
    assert client.data_to_send() == b"AUTH LOGIN\r\n"


# A smarthost session: STARTTLS, AUTH LOGIN, one message, QUIT; one command per reply.  The
# part in the clear ends with the reply to STARTTLS: the engine drops whatever came with it
# (RFC 3207 §4.2), so the rest arrives in reads of its own.
AUTH_CLEAR = (
    b"220-smarthost.test ESMTP\r\n220 hello\r\n"
    b"250-smarthost.test\r\n250-STARTTLS\r\n250 SIZE 1000\r\n"
    b"220 2.0.0 Ready to start TLS\r\n"
)
AUTH_UNDER_TLS = (
    b"250-smarthost.test\r\n250-AUTH LOGIN\r\n250 SIZE 1000\r\n"
    b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
    + AUTH_OK
    + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n250 2.0.0 queued\r\n221 2.0.0 Bye\r\n"
)
AUTH_TRANSCRIPT = AUTH_CLEAR + AUTH_UNDER_TLS
AUTH_SESSION = ClientConfig(HELO_NAME, tls="required", auth=AUTH)


class AuthAdapter:
    """Drives a client to a smarthost: one message, then QUIT; keeps what it sent in the clear."""

    def __init__(self, config: ClientConfig = AUTH_SESSION) -> None:
        self.client = SMTPClientEngine(config)
        self.events: list[Event] = []
        self.sent_in_clear = b""
        self.sent_under_tls = b""
        self.message_sent = False

    def _write(self) -> None:
        out = self.client.data_to_send()
        if self.client.tls_active:
            self.sent_under_tls += out
        else:
            self.sent_in_clear += out

    def feed(self, data: bytes) -> None:
        client = self.client
        client.receive_data(data)
        while (event := client.next_event()) is not NEED_DATA:
            self.events.append(event)
            if isinstance(event, Ready):
                if self.message_sent:
                    client.quit()
                else:
                    self.message_sent = True
                    client.send_message("s@customer.test", ["r@elsewhere.test"], 3)
            elif isinstance(event, DataReady):
                client.body_chunk(b"x\r\n")
                client.end_body()
            elif isinstance(event, StartTLSNeeded):
                self._write()  # the STARTTLS command went in the clear
                client.tls_started()
            elif isinstance(event, SessionFailed):
                assert_no_secret(event.reason)
        self._write()


def auth_session(pieces: Sequence[bytes]) -> AuthAdapter:
    adapter = AuthAdapter()
    for piece in pieces:
        adapter.feed(piece)
    return adapter


def test_smarthost_session_in_one_piece() -> None:
    adapter = auth_session([AUTH_CLEAR, AUTH_UNDER_TLS])
    assert [type(e) for e in adapter.events] == [
        Greeted,
        StartTLSNeeded,
        Ready,
        DataReady,
        TransactionResult,
        Ready,
        Closed,
    ]
    assert commands(adapter.sent_in_clear) == [f"EHLO {HELO_NAME}", "STARTTLS"]
    assert commands(adapter.sent_under_tls) == [
        f"EHLO {HELO_NAME}",
        "AUTH LOGIN",
        b64(USERNAME),
        LOGIN_PASSWORD,
        "MAIL FROM:<s@customer.test> SIZE=3",
        "RCPT TO:<r@elsewhere.test>",
        "DATA",
        "x",
        ".",
        "QUIT",
    ]


@settings(max_examples=300, deadline=None)
@given(
    clear_cuts=st.lists(st.integers(min_value=0, max_value=len(AUTH_CLEAR)), max_size=10),
    tls_cuts=st.lists(st.integers(min_value=0, max_value=len(AUTH_UNDER_TLS)), max_size=40),
)
def test_property_any_split_of_a_smarthost_session_gives_the_same_events(
    clear_cuts: list[int], tls_cuts: list[int]
) -> None:
    pieces: list[bytes] = []
    for part, cuts in ((AUTH_CLEAR, clear_cuts), (AUTH_UNDER_TLS, tls_cuts)):
        bounds = [0, *sorted(cuts), len(part)]
        pieces += [part[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    whole, split = auth_session([AUTH_CLEAR, AUTH_UNDER_TLS]), auth_session(pieces)
    assert split.events == whole.events
    assert (split.sent_in_clear, split.sent_under_tls) == (
        whole.sent_in_clear,
        whole.sent_under_tls,
    )


AUTH_REPLIES = st.sampled_from(
    [
        b"250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",
        b"250-mx\r\n250 AUTH LOGIN\r\n",
        b"220 go\r\n",
        b"334 VXNlcm5hbWU6\r\n",
        b"334 \r\n",
        AUTH_OK,
        BAD_CREDENTIALS.to_bytes(),
        b"454 4.7.0 later\r\n",
        b"250 Ok\r\n",
        b"354 go\r\n",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    data=st.data(),
    junk=st.lists(st.one_of(AUTH_REPLIES, REPLY_LINES, st.binary(max_size=60)), max_size=20),
    tls=st.sampled_from(["none", "opportunistic", "required"]),
)
def test_property_credentials_never_leave_in_the_clear(
    data: st.DataObject, junk: list[bytes], tls: str
) -> None:
    # Whatever the server says: no secret in a reason (AuthAdapter checks), the engine never
    # raises, and without auth_plaintext nothing secret is written before TLS is up.
    cut = data.draw(st.integers(min_value=0, max_value=len(AUTH_TRANSCRIPT)))
    adapter = AuthAdapter(ClientConfig(HELO_NAME, tls=tls, auth=AUTH))  # type: ignore[arg-type]
    for piece in [*AUTH_TRANSCRIPT[:cut].splitlines(keepends=True), *junk]:
        if piece:
            adapter.feed(piece)
    adapter.feed(b"")
    assert adapter.client.closed
    clear = adapter.sent_in_clear.decode("ascii")
    assert_no_secret(clear)
    assert b64(USERNAME) not in clear
    assert PASSWORD.encode() not in adapter.sent_under_tls
