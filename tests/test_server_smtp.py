"""
The SMTP intake adapter driven over StringTransport with a task.Clock (no sockets): the policy,
durability-before-250, pipelining order, timeouts, limits and STARTTLS, end to end through the
real engine and the memory store.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from strata_twisted.config import IntakeSettings
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import IntakePolicy
from strata_twisted.errors import InsufficientStorage, StorageError
from strata_twisted.model import HELD, POSTMASTER_HOLD, QUEUED, Domain, RelayTarget, UserCredential
from strata_twisted.server.smtp import SMTPIntakeFactory
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of

BODY = (
    b"From: a@sender.test\r\nTo: u@example.test\r\nMessage-ID: <m1@sender.test>\r\n"
    b"Subject: hi\r\n\r\nhello\r\n..dotted line\r\n"
)
SESSION = (
    b"EHLO client.test\r\nMAIL FROM:<a@sender.test> SIZE=120\r\nRCPT TO:<u@example.test>\r\n"
    b"DATA\r\n" + BODY + b".\r\nQUIT\r\n"
)


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):  # type: ignore[misc]
    """A StringTransport that records startTLS instead of doing it."""

    tls_started_with: object = None

    def startTLS(self, contextFactory, normal=True):  # noqa: ANN001, ANN201
        self.tls_started_with = contextFactory


class Harness:
    def __init__(
        self,
        store=None,
        settings: IntakeSettings | None = None,
        tls: object = None,
        domains=(("example.test", "relay"),),
        users: tuple[str, ...] | None = None,
        postmaster: str = "",
        loaded: bool = True,
    ) -> None:
        """``users``: example.test's synced user list (None: it has none).  ``loaded``: False
        leaves the protected domains unread, as just after startup."""
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = store or MemoryStore(self.clock)
        for name, mode in domains:
            result_of(self.store.add_domain(Domain(name, RelayTarget("127.0.0.1", 2999), mode)))
        if users is not None:
            result_of(self.store.replace_users(
                "example.test", [UserCredential(u, "{SSHA512}" + "a" * 88) for u in users]
            ))  # fmt: skip
        self.domains = DomainCache(self.clock, self.store, 1.0, users=self.store)
        if loaded:
            self.domains.start()
        self.policy = IntakePolicy(self.clock, self.domains, self.store, "mx.strata.test",
                                   postmaster=postmaster)  # fmt: skip
        self.factory = SMTPIntakeFactory(
            self.clock,
            self.policy,
            settings or IntakeSettings(),
            tls,  # type: ignore[arg-type]
        )

    def connect(self, host: str = "127.0.0.1", port: int = 40000):
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        return proto, transport

    def stop(self) -> None:
        self.domains.stop()


def replies(transport: StringTransport) -> list[bytes]:
    """The final lines of each reply (multi-line replies collapsed to their last line)."""
    lines = transport.value().split(b"\r\n")
    return [line for line in lines if line[3:4] == b" "]


def test_accepted_message_is_committed_before_250_with_received_header_prepended() -> None:
    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(SESSION)
    codes = [r[:3] for r in replies(transport)]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"]
    queued = replies(transport)[5]
    assert queued.startswith(b"250 2.0.0 Ok: queued as ")
    queue_id = queued.rsplit(b" ", 1)[1].decode()
    entries = result_of(h.store.list_entries())
    assert [
        (e.message_id, e.recipient, e.domain, e.sender, e.header_message_id) for e in entries
    ] == [(queue_id, "u@example.test", "example.test", "a@sender.test", "<m1@sender.test>")]
    body = result_of(h.store.read_body(queue_id))
    received, _, rest = body.partition(b"\r\n\tfor <u@example.test>; ")
    assert received.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.strata.test")
    assert b"with ESMTP id " + queue_id.encode() in received
    # The date line ends the header; then the content, dot-unstuffed, byte for byte.
    assert rest.split(b"\r\n", 1)[1] == BODY.replace(b"\r\n..dotted", b"\r\n.dotted")
    assert transport.disconnecting
    h.stop()


def test_unprotected_domain_is_refused_as_relay_attempt() -> None:
    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<u@other.test>\r\nDATA\r\n")
    assert replies(transport)[-2:] == [
        b"550 5.7.1 Relay access denied",
        b"554 5.5.1 Error: no valid recipients",
    ]
    assert result_of(h.store.list_entries()) == []
    h.stop()


def test_idn_recipient_domain_matches_its_ascii_form() -> None:
    h = Harness(domains=(("xn--bcher-kva.example", "relay"),))
    proto, transport = h.connect()
    proto.dataReceived(
        "EHLO c\r\nMAIL FROM:<a@s.test> SMTPUTF8\r\nRCPT TO:<kim@bücher.example>\r\n".encode()
    )
    assert replies(transport)[-1].startswith(b"250")
    h.stop()


def test_mode_both_stores_a_shadow_copy_per_recipient() -> None:
    h = Harness(domains=(("example.test", "both"), ("relay.test", "relay")))
    proto, transport = h.connect()
    proto.dataReceived(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.test>\r\nRCPT TO:<v@relay.test>\r\n"
        b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
    )
    assert replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as")
    copies = result_of(h.store.list_shadow_copies())
    assert [(c.recipient, c.mailbox) for c in copies] == [("u@example.test", "INBOX")]
    entries = result_of(h.store.list_entries())
    assert [(e.recipient, e.sender) for e in entries] == [
        ("u@example.test", ""),
        ("v@relay.test", ""),
    ]
    h.stop()


class FailingCommitStore(MemoryStore):
    """A memory store whose commits fail with the given error."""

    def __init__(self, clock, error: Exception) -> None:
        super().__init__(clock)
        self.error = error

    def begin(self, message_id):
        writer = super().begin(message_id)
        error = self.error

        def commit(incoming):
            return fail(Failure(error))

        writer.commit = commit  # type: ignore[method-assign]
        return writer


def test_storage_failure_answers_451_and_keeps_nothing() -> None:
    h = Harness(store=FailingCommitStore(Clock(), StorageError("database is locked")))
    proto, transport = h.connect()
    proto.dataReceived(SESSION)
    assert replies(transport)[5] == b"451 4.3.0 Error: queue file write error, try again later"
    assert result_of(h.store.list_entries()) == []
    assert result_of(h.store.message_count()) == 0
    h.stop()


def test_disk_full_answers_452() -> None:
    h = Harness(store=FailingCommitStore(Clock(), InsufficientStorage("ENOSPC")))
    proto, transport = h.connect()
    proto.dataReceived(SESSION)
    assert replies(transport)[5] == b"452 4.3.1 Insufficient system storage, try again later"
    h.stop()


def test_unexpected_exception_in_storage_is_still_a_4xx() -> None:
    h = Harness(store=FailingCommitStore(Clock(), RuntimeError("bug")))
    proto, transport = h.connect()
    proto.dataReceived(SESSION)
    assert replies(transport)[5].startswith(b"451 4.3.0")
    h.stop()


class SlowCommitStore(MemoryStore):
    """Commits wait until the test fires them, like a busy disk."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.pending: list[tuple[Deferred[Any], Any, Any]] = []

    def begin(self, message_id):
        writer = super().begin(message_id)
        real_commit = writer.commit

        def commit(incoming):
            d: Deferred[Any] = Deferred()
            self.pending.append((d, real_commit, incoming))
            return d

        writer.commit = commit  # type: ignore[method-assign]
        return writer

    def finish_all(self) -> None:
        while self.pending:
            d, real_commit, incoming = self.pending.pop(0)
            real_commit(incoming).chainDeferred(d)


def test_pipelined_commands_wait_for_the_commit_and_are_answered_in_order() -> None:
    store = SlowCommitStore(Clock())
    h = Harness(store=store)
    proto, transport = h.connect()
    proto.dataReceived(SESSION.replace(b"QUIT\r\n", b"NOOP\r\nMAIL FROM:<b@s.test>\r\nQUIT\r\n"))
    # Nothing after the final dot is answered before the message is durable.
    assert [r[:3] for r in replies(transport)] == [b"220", b"250", b"250", b"250", b"354"]
    assert result_of(h.store.list_entries()) == []
    store.finish_all()
    assert [r[:3] for r in replies(transport)][5:] == [b"250", b"250", b"250", b"221"]
    assert replies(transport)[5].startswith(b"250 2.0.0 Ok: queued as")
    assert len(result_of(h.store.list_entries())) == 1
    h.stop()


def test_connection_lost_during_commit_still_commits() -> None:
    store = SlowCommitStore(Clock())
    h = Harness(store=store)
    proto, transport = h.connect()
    proto.dataReceived(SESSION)
    proto.connectionLost(Failure(ConnectionError("gone")))
    store.finish_all()
    assert len(result_of(h.store.list_entries())) == 1
    h.stop()


def test_connection_lost_mid_data_leaves_nothing() -> None:
    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(SESSION.split(b"hello")[0])
    proto.connectionLost(Failure(ConnectionError("gone")))
    assert result_of(h.store.message_count()) == 0
    assert result_of(h.store.list_entries()) == []
    h.stop()


def test_domain_added_while_running_is_accepted_within_a_second() -> None:
    h = Harness(domains=())
    proto, transport = h.connect()
    proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<u@late.test>\r\n")
    assert replies(transport)[-1].startswith(b"550 5.7.1")
    result_of(h.store.add_domain(Domain("late.test", RelayTarget("127.0.0.1"))))
    h.clock.advance(1.0)
    proto.dataReceived(b"RCPT TO:<u@late.test>\r\n")
    assert replies(transport)[-1].startswith(b"250")
    result_of(h.store.remove_domain("late.test"))
    h.clock.advance(1.0)
    proto.dataReceived(b"RCPT TO:<w@late.test>\r\n")
    assert replies(transport)[-1].startswith(b"550 5.7.1")
    h.stop()


def test_idle_timeout_closes_with_421() -> None:
    h = Harness(settings=IntakeSettings(idle_timeout=300, data_timeout=600))
    proto, transport = h.connect()
    proto.dataReceived(b"EHLO c\r\n")
    h.clock.advance(299)
    assert not transport.disconnecting
    proto.dataReceived(b"NOOP\r\n")  # activity resets the timer
    h.clock.advance(299)
    assert not transport.disconnecting
    h.clock.advance(1)
    assert replies(transport)[-1].startswith(b"421 4.4.2")
    assert transport.disconnecting
    h.stop()


def test_data_phase_uses_the_longer_data_timeout_and_discards_the_partial_message() -> None:
    h = Harness(settings=IntakeSettings(idle_timeout=300, data_timeout=600))
    proto, transport = h.connect()
    proto.dataReceived(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: slow\r\n"
    )
    h.clock.advance(301)
    assert not transport.disconnecting
    h.clock.advance(300)
    assert transport.disconnecting
    assert replies(transport)[-1].startswith(b"421 4.4.2")
    assert result_of(h.store.message_count()) == 0
    h.stop()


def test_connections_per_ip_are_limited() -> None:
    h = Harness(settings=IntakeSettings(max_connections_per_ip=2))
    first = h.connect("10.0.0.1")
    h.connect("10.0.0.1")
    _, refused = h.connect("10.0.0.1")
    assert refused.value().startswith(b"421 4.7.0")
    assert refused.disconnecting
    _, other = h.connect("10.0.0.2")
    assert other.value().startswith(b"220")
    first[0].connectionLost(Failure(ConnectionError()))
    _, again = h.connect("10.0.0.1")
    assert again.value().startswith(b"220")
    h.stop()


def test_message_over_the_size_limit_is_refused_and_not_stored() -> None:
    h = Harness(settings=IntakeSettings(max_message_size=1024))
    proto, transport = h.connect()
    proto.dataReceived(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
        + b"x" * 100
        + b"\r\n" * 20
        + (b"y" * 70 + b"\r\n") * 30
        + b".\r\n"
    )
    assert replies(transport)[-1].startswith(b"552 5.3.4")
    assert result_of(h.store.message_count()) == 0
    h.stop()


def test_starttls_discards_pipelined_plaintext_and_resets_the_session() -> None:
    h = Harness(tls=object())
    proto, transport = h.connect()
    proto.dataReceived(b"EHLO c\r\n")
    assert b"STARTTLS" in transport.value()
    transport.clear()
    proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@s.test>\r\n")
    assert transport.value() == b"220 2.0.0 Ready to start TLS\r\n"
    assert transport.tls_started_with is h.factory.tls
    # After TLS the client must greet again; the injected MAIL never ran.
    proto.dataReceived(b"MAIL FROM:<a@s.test>\r\n")
    assert replies(transport)[-1].startswith(b"503 5.5.1")
    proto.dataReceived(b"EHLO c\r\n")
    assert b"STARTTLS" not in transport.value().split(b"503")[-1]
    proto.dataReceived(SESSION.split(b"\r\n", 1)[1])
    body = result_of(h.store.read_body(result_of(h.store.list_entries())[0].message_id))
    assert b"with ESMTPS id" in body
    h.stop()


def test_starttls_inside_a_transaction_is_answered_220_and_drops_the_transaction() -> None:
    """Issue 11, point 9: as Postfix does, STARTTLS after MAIL and RCPT gets 220 (not 503), and
    the sender and recipients given in the clear are forgotten (RFC 3207 §4.2)."""
    h = Harness(tls=object())
    proto, transport = h.connect()
    proto.dataReceived(b"EHLO c\r\nMAIL FROM:<plain@s.test>\r\nRCPT TO:<early@example.test>\r\n")
    transport.clear()
    proto.dataReceived(b"STARTTLS\r\n")
    assert transport.value() == b"220 2.0.0 Ready to start TLS\r\n"
    assert transport.tls_started_with is h.factory.tls
    proto.dataReceived(b"EHLO c\r\nRCPT TO:<late@example.test>\r\n")
    assert replies(transport)[-1] == b"503 5.5.1 Error: need MAIL command"
    proto.dataReceived(
        b"MAIL FROM:<tls@s.test>\r\nRCPT TO:<late@example.test>\r\nDATA\r\n" + BODY + b".\r\n"
    )
    assert replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as ")
    entries = result_of(h.store.list_entries())
    assert [(e.sender, e.recipient) for e in entries] == [("tls@s.test", "late@example.test")]
    h.stop()


def test_a_message_with_long_lines_is_accepted_and_stored_byte_for_byte() -> None:
    """Issue 11, point 3: a 100 KiB line used to get 500 5.5.2 after DATA, and the sending
    filter bounced the mail; a line of any length is now stored as it came, dots unstuffed."""
    h = Harness()
    proto, transport = h.connect()
    lines = [b"a" * (100 * 1024), b"." + b"b" * (16 * 1024) + b".", b"c" * 8193 + b"\r"]
    content = b"Subject: long\r\n\r\n" + b"".join(line + b"\r\n" for line in lines)
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    session = SESSION.split(b"DATA\r\n")[0].replace(b" SIZE=120", b"") + b"DATA\r\n"
    session += stuffed + b".\r\n"
    for at in range(0, len(session), 65536):
        proto.dataReceived(session[at : at + 65536])
    assert replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as ")
    (entry,) = result_of(h.store.list_entries())
    body = result_of(h.store.read_body(entry.message_id))
    assert body.endswith(b"\r\n" + content)
    assert body.startswith(b"Received: ")
    h.stop()


def test_received_header_names_smtp_for_helo_clients() -> None:
    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(SESSION.replace(b"EHLO", b"HELO").replace(b" SIZE=120", b""))
    body = result_of(h.store.read_body(result_of(h.store.list_entries())[0].message_id))
    assert b"with SMTP id" in body.split(b"\r\n")[1]
    h.stop()


def test_default_settings_match_the_issue() -> None:
    s = IntakeSettings()
    assert (s.max_message_size, s.max_recipients, s.max_command_line_length) == (
        50 * 1024 * 1024,
        100,
        8192,
    )
    assert (s.idle_timeout, s.data_timeout) == (300, 600)
    assert replace(s, max_recipients=5).max_recipients == 5


def test_reading_pauses_while_a_commit_is_in_flight() -> None:
    store = SlowCommitStore(Clock())
    h = Harness(store=store)
    proto, transport = h.connect()
    proto.dataReceived(SESSION)
    assert transport.producerState == "paused"
    store.finish_all()
    assert transport.producerState == "producing"
    h.stop()


# -- Postmaster and repeated recipients (issue #11) -----------------------------------------------


def transaction(*recipients: bytes, body: bytes = BODY) -> bytes:
    return (b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n"
            + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in recipients)
            + b"DATA\r\n" + body + b".\r\n")  # fmt: skip


def test_postmaster_is_accepted_with_a_user_list_that_lacks_it() -> None:
    h = Harness(users=("ana@example.test",))
    proto, transport = h.connect()
    proto.dataReceived(transaction(b"Postmaster", b"postmaster@example.test",
                                   b"carol@example.test"))  # fmt: skip
    assert replies(transport)[3:] == [
        b"250 2.1.5 Ok",
        b"250 2.1.5 Ok",
        b"550 5.1.1 Recipient address rejected: User unknown",
        b"354 End data with <CR><LF>.<CR><LF>",
        replies(transport)[-1],
    ]
    assert replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as ")
    held, primary = result_of(h.store.list_entries())
    # No operator address set: visible in the queue, held, saying what to do.
    assert (held.recipient, held.domain, held.state) == ("Postmaster", POSTMASTER_HOLD, HELD)
    assert "[server] postmaster" in (held.last_error or "")
    assert (primary.recipient, primary.domain, primary.state) == (
        "postmaster@example.test", "example.test", QUEUED
    )  # fmt: skip
    h.stop()


def test_one_hundred_identical_recipients_make_one_queue_entry() -> None:
    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(transaction(*[b"u@example.test"] * 99, b"u@EXAMPLE.test"))
    assert replies(transport)[3:103] == [b"250 2.1.5 Ok"] * 100  # as Postfix answers
    assert replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as ")
    (entry,) = result_of(h.store.list_entries())
    assert entry.recipient == "u@example.test"
    message = result_of(h.store.get_message(entry.message_id))
    assert message.envelope.recipients == ("u@example.test",)
    # One recipient, so the Received: header names it (as for any single recipient).
    assert b"\tfor <u@example.test>; " in result_of(h.store.read_body(entry.message_id))
    h.stop()


def test_a_new_transaction_starts_with_no_recipients() -> None:
    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(transaction(b"u@example.test") + b"MAIL FROM:<b@sender.test>\r\n"
                       b"RCPT TO:<u@example.test>\r\nRSET\r\nMAIL FROM:<c@sender.test>\r\n"
                       b"RCPT TO:<v@example.test>\r\nDATA\r\n" + BODY + b".\r\n")  # fmt: skip
    first, second = result_of(h.store.list_entries())
    assert (first.recipient, second.recipient) == ("u@example.test", "v@example.test")
    h.stop()


# -- every refusal is logged with the client and the reason (issue #11) ---------------------------


def refusal_logs(h: Harness, data: bytes, host: str = "192.0.2.7") -> list[tuple[LogLevel, str]]:
    proto, _ = h.connect(host)
    with capturedLogs() as logs:
        proto.dataReceived(data)
    return [(e["log_level"], formatEvent(e)) for e in logs
            if e.get("log_format", "").startswith("refused ")]  # fmt: skip


def test_relay_denied_is_logged() -> None:
    h = Harness()
    assert refusal_logs(h, transaction(b"u@other.test")) == [
        (LogLevel.info, "refused RCPT from 192.0.2.7: 550 5.7.1 Relay access denied (not a "
         "protected domain: 'u@other.test'); from=<a@sender.test> to=<u@other.test>"),
    ]  # fmt: skip
    h.stop()


def test_unknown_user_is_logged() -> None:
    h = Harness(users=("ana@example.test",))
    assert refusal_logs(h, transaction(b"ana@example.test", b"carol@example.test")) == [
        (LogLevel.info, "refused RCPT from 192.0.2.7: 550 5.1.1 Recipient address rejected: "
         "User unknown (not a user of example.test: 'carol@example.test'); "
         "from=<a@sender.test> to=<carol@example.test>"),
    ]  # fmt: skip
    h.stop()


def test_too_big_is_logged_when_declared_and_when_sent() -> None:
    h = Harness(settings=IntakeSettings(max_message_size=1024))
    declared = b"EHLO c\r\nMAIL FROM:<a@sender.test> SIZE=2000\r\n"
    assert refusal_logs(h, declared) == [
        (LogLevel.info, "refused MAIL from 192.0.2.7: 552 5.3.4 Message size exceeds fixed "
         "maximum message size (MAIL FROM:<a@sender.test> SIZE=2000)"),
    ]  # fmt: skip
    sent = transaction(b"u@example.test", b"v@example.test", body=b"x" * 70 + b"\r\n" * 30
                       + (b"y" * 70 + b"\r\n") * 30)  # fmt: skip
    assert refusal_logs(h, sent) == [
        (LogLevel.info, "refused DATA from 192.0.2.7: 552 5.3.4 Error: message file too big; "
         "from=<a@sender.test> nrcpt=2"),
    ]  # fmt: skip
    h.stop()


def test_too_many_recipients_is_logged() -> None:
    h = Harness(settings=IntakeSettings(max_recipients=1))
    assert refusal_logs(h, transaction(b"u@example.test", b"v@example.test")) == [
        (LogLevel.warn, "refused RCPT from 192.0.2.7: 452 4.5.3 Error: too many recipients "
         "(RCPT TO:<v@example.test>); from=<a@sender.test>"),
    ]  # fmt: skip
    h.stop()


def test_refusals_of_our_own_making_are_logged_as_warnings() -> None:
    h = Harness(store=FailingCommitStore(Clock(), StorageError("database is locked")))
    assert refusal_logs(h, transaction(b"u@example.test")) == [
        (LogLevel.warn, "refused DATA from 192.0.2.7: 451 4.3.0 Error: queue file write error, "
         "try again later (database is locked); from=<a@sender.test> nrcpt=1"),
    ]  # fmt: skip
    h.stop()
    starting = Harness(loaded=False)
    assert refusal_logs(starting, transaction(b"u@example.test"))[0] == (
        LogLevel.warn, "refused RCPT from 192.0.2.7: 451 4.3.0 Error: server starting, try again "
        "later (domain list not loaded yet); from=<a@sender.test> to=<u@example.test>",
    )  # fmt: skip
