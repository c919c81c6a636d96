"""
The submission service (issue 5) end to end without sockets: the real L{SMTPIntakeFactory} with
an L{Authenticator}, the sans-IO engine, L{SubmissionPolicy} and the memory store, driven over
StringTransport on a task.Clock.  Users log in with their synced passwords (AUTH PLAIN/LOGIN),
may send only as themselves, are counted against the hourly limit, and their mail is routed to
colleagues' shadow INBOXes, the primary's queue, or the outbound queue.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from zope.interface import implementer

from strata_twisted.config import IntakeSettings
from strata_twisted.core.credentials import hash_password
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.login import Authenticator, PortalCheck
from strata_twisted.core.portal import NOT_ENABLED_TEXT, Portal
from strata_twisted.core.submission import SubmissionPolicy
from strata_twisted.executor import Executor, SyncExecutor
from strata_twisted.model import (
    DeliveryMode,
    Domain,
    IncomingMessage,
    PortalPolicy,
    RelayTarget,
    StoredMessage,
)
from strata_twisted.server.smtp import SMTPIntakeFactory, SMTPIntakeProtocol
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import ManualExecutor, result_of

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse"  # noqa: S105 (a test user's)
OUTSIDE = "203.0.113.5"  # neither loopback nor a trusted network
CLOSED = "Your primary mail server is working; please use your usual mail app."
AUTH_FAILED = b"535 5.7.8 Authentication credentials invalid"


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):  # type: ignore[misc]
    """A StringTransport that records startTLS instead of doing it (the TLS layer is not under
    test here: the adapter's answer to it is)."""

    tls_started_with: object = None

    def startTLS(self, contextFactory: object, normal: bool = True) -> None:
        self.tls_started_with = contextFactory


class SlowCommitStore(MemoryStore):
    """Commits wait until the test fires them, like a disk busy in the store's thread."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.pending: list[tuple[Deferred[StoredMessage], Any, IncomingMessage]] = []

    def begin(self, message_id: str) -> Any:
        writer = super().begin(message_id)
        real_commit = writer.commit

        def commit(incoming: IncomingMessage) -> Deferred[StoredMessage]:
            d: Deferred[StoredMessage] = Deferred()
            self.pending.append((d, real_commit, incoming))
            return d

        writer.commit = commit  # type: ignore[method-assign]
        return writer

    def finish_next(self) -> None:
        d, real_commit, incoming = self.pending.pop(0)
        real_commit(incoming).chainDeferred(d)


class Harness:
    """
    A submission listener over a memory store protecting example.test (users ALICE and BOB, both
    with PASSWORD; ``mode`` and ``portal`` its delivery mode and portal policy), on a task.Clock.
    ``portal``: the Authenticator's portal check (default: always open).
    """

    def __init__(
        self,
        *,
        mode: DeliveryMode = "both",
        domain_portal: PortalPolicy = "outage",
        portal: PortalCheck | None = None,
        executor: Executor | None = None,
        max_per_hour: int = 200,
        tls: object = None,
        implicit_tls: bool = False,
        trusted_networks: tuple[str, ...] = (),
        store: MemoryStore | None = None,
        postmaster: str = "",
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = store if store is not None else MemoryStore(self.clock)
        domain = Domain("example.test", RelayTarget("127.0.0.1", 2999), mode, portal=domain_portal)
        result_of(self.store.add_domain(domain))
        for user in (ALICE, BOB):
            result_of(self.store.set_user(user, hash_password(PASSWORD, "SSHA512").text))
        self.domains = DomainCache(self.clock, self.store, 1.0, users=self.store)
        result_of(self.domains.start())
        self.policy = SubmissionPolicy(
            self.clock, self.domains, self.store, "smtp.strata.test", max_per_hour=max_per_hour,
            postmaster=postmaster,
        )  # fmt: skip
        self.executor = executor if executor is not None else SyncExecutor()
        self.authenticator = Authenticator(
            self.clock,
            self.store,
            self.executor,
            portal if portal is not None else (lambda domain: None),
        )
        self.factory = SMTPIntakeFactory(
            self.clock,
            self.policy,
            IntakeSettings(),
            tls,  # type: ignore[arg-type]
            authenticator=self.authenticator,
            implicit_tls=implicit_tls,
            trusted_networks=trusted_networks,
        )

    def connect(self, host: str = "127.0.0.1") -> tuple[SMTPIntakeProtocol, TLSStringTransport]:
        """A session from ``host``, its greeting read."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        assert isinstance(proto, SMTPIntakeProtocol)
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        proto.makeConnection(transport)
        assert transport.value().startswith(b"220 smtp.strata.test ")
        transport.clear()
        return proto, transport

    def login(
        self, user: str = ALICE, host: str = "127.0.0.1"
    ) -> tuple[SMTPIntakeProtocol, TLSStringTransport]:
        """A session from ``host``, greeted and logged in as ``user``."""
        proto, transport = self.connect(host)
        assert b"250 " in send(proto, transport, b"EHLO client.test\r\n")
        assert (
            send(proto, transport, auth_plain(user)) == b"235 2.7.0 Authentication successful\r\n"
        )
        return proto, transport

    def entries(self) -> list[tuple[str, str, bool]]:
        """The queue: (recipient, domain, outbound) per entry."""
        return [(e.recipient, e.domain, e.outbound) for e in result_of(self.store.list_entries())]

    def shadow(self) -> list[tuple[str, str]]:
        return [(c.recipient, c.mailbox) for c in result_of(self.store.list_shadow_copies())]

    def stop(self) -> None:
        self.domains.stop()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.stop()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth_plain(user: str = ALICE, password: str = PASSWORD, authzid: str = "") -> bytes:
    response = b64("\0".join((authzid, user, password)))
    return f"AUTH PLAIN {response}\r\n".encode()


def send(proto: SMTPIntakeProtocol, transport: StringTransport, data: bytes) -> bytes:
    """Feed ``data`` to the session; return exactly what it wrote in answer."""
    transport.clear()
    proto.dataReceived(data)
    return bytes(transport.value())


def last_lines(output: bytes) -> list[bytes]:
    """The final line of each reply in ``output`` (multi-line replies collapsed)."""
    return [line for line in output.split(b"\r\n") if line[3:4] == b" "]


def ehlo_keywords(output: bytes) -> list[bytes]:
    return [line[4:] for line in output.split(b"\r\n") if line[:3] == b"250"]


def message(sender: str = ALICE, *recipients: str, headers: bytes | None = None) -> bytes:
    """A whole transaction, MAIL to the final dot."""
    rcpts = recipients or ("friend@gmail.example",)
    head = headers if headers is not None else f"From: Alice <{sender}>\r\n".encode()
    return (
        f"MAIL FROM:<{sender}>\r\n".encode()
        + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
        + b"DATA\r\n"
        + head
        + b"To: "
        + ", ".join(rcpts).encode()
        + b"\r\nSubject: during the outage\r\nMessage-ID: <s1@example.test>\r\n\r\nhello\r\n.\r\n"
    )


def queued_id(reply_line: bytes) -> str:
    assert reply_line.startswith(b"250 2.0.0 Ok: queued as "), reply_line
    return reply_line.rsplit(b" ", 1)[1].decode()


# -- AUTH is offered only where a password may travel --------------------------------------------


def test_an_untrusted_client_before_tls_gets_no_auth_and_cannot_send() -> None:
    h = Harness(tls=object())
    proto, transport = h.connect(OUTSIDE)
    keywords = ehlo_keywords(send(proto, transport, b"EHLO client.test\r\n"))
    assert b"STARTTLS" in keywords
    assert not [k for k in keywords if k.startswith(b"AUTH")]
    assert send(proto, transport, auth_plain()) == (
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )
    assert send(proto, transport, b"AUTH LOGIN\r\n").startswith(b"538 5.7.11 ")
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()) == (
        b"530 5.7.0 Authentication required\r\n"
    )
    assert result_of(h.store.message_count()) == 0
    h.stop()


def test_after_starttls_an_untrusted_client_logs_in_and_sends_with_esmtpsa() -> None:
    h = Harness(tls=object())
    proto, transport = h.connect(OUTSIDE)
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert transport.tls_started_with is h.factory.tls
    keywords = ehlo_keywords(send(proto, transport, b"EHLO client.test\r\n"))
    assert b"AUTH PLAIN LOGIN" in keywords
    assert b"STARTTLS" not in keywords
    assert send(proto, transport, auth_plain()) == b"235 2.7.0 Authentication successful\r\n"
    out = last_lines(send(proto, transport, message()))
    body = result_of(h.store.read_body(queued_id(out[-1])))
    assert b"\tby smtp.strata.test (Strata) with ESMTPSA id " in body
    assert body.startswith(f"Received: from client.test ([{OUTSIDE}])".encode())
    h.stop()


def test_starttls_forgets_a_login_made_in_the_clear() -> None:
    h = Harness(tls=object())
    proto, transport = h.connect()
    assert b"STARTTLS" in ehlo_keywords(send(proto, transport, b"EHLO client.test\r\n"))
    assert send(proto, transport, auth_plain()).startswith(b"235 ")
    send(proto, transport, b"STARTTLS\r\n")
    send(proto, transport, b"EHLO client.test\r\n")
    # RFC 3207 §4.2: nothing from before TLS counts, the login included.
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()).startswith(b"530 5.7.0")
    assert send(proto, transport, auth_plain()).startswith(b"235 ")
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()).startswith(b"250 ")
    h.stop()


def test_implicit_tls_offers_auth_to_an_untrusted_client() -> None:
    h = Harness(tls=object(), implicit_tls=True)
    proto, transport = h.connect(OUTSIDE)
    keywords = ehlo_keywords(send(proto, transport, b"EHLO client.test\r\n"))
    assert b"AUTH PLAIN LOGIN" in keywords
    assert b"STARTTLS" not in keywords
    assert send(proto, transport, auth_plain()) == b"235 2.7.0 Authentication successful\r\n"
    out = last_lines(send(proto, transport, message()))
    body = result_of(h.store.read_body(queued_id(out[-1])))
    assert b" with ESMTPSA id " in body
    h.stop()


def test_a_trusted_network_may_log_in_without_tls_and_its_neighbours_may_not() -> None:
    h = Harness(tls=object(), trusted_networks=("10.1.0.0/16",))
    proto, transport = h.connect("10.1.2.3")
    assert b"AUTH PLAIN LOGIN" in ehlo_keywords(send(proto, transport, b"EHLO webmail\r\n"))
    assert send(proto, transport, auth_plain()).startswith(b"235 ")
    proto, transport = h.connect("10.2.0.1")
    assert b"AUTH PLAIN LOGIN" not in ehlo_keywords(send(proto, transport, b"EHLO c\r\n"))
    assert send(proto, transport, auth_plain()).startswith(b"538 ")
    h.stop()


# -- AUTH on loopback ------------------------------------------------------------------------------


def test_loopback_is_offered_auth_plain_without_tls(h: Harness) -> None:
    proto, transport = h.connect()
    keywords = ehlo_keywords(send(proto, transport, b"EHLO client.test\r\n"))
    assert b"AUTH PLAIN LOGIN" in keywords
    assert b"STARTTLS" not in keywords  # no certificate configured in this harness


def test_right_password_235_wrong_password_and_unknown_user_the_same_535(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    wrong = send(proto, transport, auth_plain(ALICE, "wrong"))
    unknown = send(proto, transport, auth_plain("nobody@example.test"))
    elsewhere = send(proto, transport, auth_plain("alice@other.test"))
    not_an_address = send(proto, transport, auth_plain("alice"))
    # RFC 5530 / RFC 4954: one answer, so a guesser cannot tell users from non-users.
    assert wrong == unknown == elsewhere == not_an_address == AUTH_FAILED + b"\r\n"
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()).startswith(b"530 5.7.0")
    # After one failure for alice from here, her next attempt waits 1 s (then logs in).
    assert send(proto, transport, auth_plain("Alice@Example.TEST")) == b""
    h.clock.advance(1)
    assert transport.value() == b"235 2.7.0 Authentication successful\r\n"
    # The session is the canonical user: MAIL FROM in lower case is their own.
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()) == b"250 2.1.0 Ok\r\n"
    assert send(proto, transport, b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    assert send(proto, transport, auth_plain()) == b"503 5.5.1 Error: already authenticated\r\n"


def test_a_guessers_auth_waits_its_delay_and_the_right_password_is_never_refused() -> None:
    executor = ManualExecutor()
    h = Harness(executor=executor)
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    for delay in (0, 1, 2):
        transport.clear()
        proto.dataReceived(auth_plain(ALICE, "guess"))
        h.clock.advance(delay)
        assert executor.run_all() == 1
        assert last_lines(bytes(transport.value())) == [AUTH_FAILED]
    checked = executor.submitted
    # The right password from the guesser's address: 4 s, unchecked meanwhile, then in.
    assert send(proto, transport, auth_plain()) == b""
    h.clock.advance(3.999)
    assert executor.submitted == checked
    h.clock.advance(0.001)
    executor.run_all()
    assert last_lines(bytes(transport.value())) == [b"235 2.7.0 Authentication successful"]
    h.stop()


def test_the_right_password_from_another_address_is_not_delayed() -> None:
    h = Harness(tls=object(), implicit_tls=True)
    for n in range(10):
        proto, transport = h.connect(OUTSIDE)
        send(proto, transport, b"EHLO client.test\r\n")
        send(proto, transport, auth_plain(f"u{n}@example.test", "x"))
        h.clock.advance(15)
    proto, transport = h.connect("198.51.100.2")
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain()) == b"235 2.7.0 Authentication successful\r\n"
    h.stop()


# -- XCLIENT ADDR: the webmail names the user it sends for ----------------------------------------


def xclient_session(h: Harness, host: str, addr: str) -> tuple[Any, TLSStringTransport, bytes]:
    proto, transport = h.connect(host)
    keywords = ehlo_keywords(send(proto, transport, b"EHLO webmail\r\n"))
    return proto, transport, b"XCLIENT ADDR" if b"XCLIENT ADDR" in keywords else b""


def test_xclient_is_offered_to_trusted_clients_only_and_refused_elsewhere() -> None:
    h = Harness(tls=object(), implicit_tls=True, trusted_networks=("10.1.0.0/16",))
    for host in ("127.0.0.1", "10.1.2.3"):
        proto, transport, offered = xclient_session(h, host, "203.0.113.9")
        assert offered == b"XCLIENT ADDR"
        # Postfix's protocol: 220 greeting afresh, the session as after connect.
        assert send(proto, transport, b"XCLIENT ADDR=203.0.113.9\r\n") == (
            b"220 smtp.strata.test ESMTP Strata\r\n"
        )
        assert send(proto, transport, b"MAIL FROM:<a@example.test>\r\n") == (
            b"503 5.5.1 Error: send HELO/EHLO first\r\n"
        )
    proto, transport, offered = xclient_session(h, OUTSIDE, "203.0.113.9")
    assert offered == b""
    assert send(proto, transport, b"XCLIENT ADDR=203.0.113.9\r\n") == (
        b"550 5.7.0 Error: insufficient authorization\r\n"
    )
    h.stop()


def test_xclient_only_before_auth(h: Harness) -> None:
    proto, transport = h.login()
    assert send(proto, transport, b"XCLIENT ADDR=203.0.113.9\r\n") == (
        b"503 5.5.1 Error: XCLIENT not allowed after AUTH\r\n"
    )
    h.stop()


def test_xclient_addr_is_the_address_the_throttle_counts_and_logs(h: Harness) -> None:
    guesser, user = "203.0.113.9", "IPV6:2001:db8::7"
    for delay in (0, 1, 2, 4, 8):
        proto, transport, _ = xclient_session(h, "127.0.0.1", guesser)
        send(proto, transport, f"XCLIENT ADDR={guesser}\r\nEHLO webmail\r\n".encode())
        send(proto, transport, auth_plain(ALICE, "guess"))
        h.clock.advance(delay)
        assert last_lines(bytes(transport.value())) == [AUTH_FAILED]
    # Alice through the same webmail, from her own address: at once, and logged with it.
    proto, transport, _ = xclient_session(h, "127.0.0.1", user)
    send(proto, transport, f"XCLIENT ADDR={user}\r\nEHLO webmail\r\n".encode())
    with capturedLogs() as logs:
        assert send(proto, transport, auth_plain()) == b"235 2.7.0 Authentication successful\r\n"
    assert [formatEvent(e) for e in logs] == [
        "submission login alice@example.test from 2001:db8::7 via 127.0.0.1"
    ]
    # The guesser waits (15 s after its last failure), and the failure names its address.
    proto, transport, _ = xclient_session(h, "127.0.0.1", guesser)
    send(proto, transport, f"XCLIENT ADDR={guesser}\r\nEHLO webmail\r\n".encode())
    with capturedLogs() as logs:
        assert send(proto, transport, auth_plain(ALICE, "guess")) == b""
        h.clock.advance(15)
    assert last_lines(bytes(transport.value())) == [AUTH_FAILED]
    assert [formatEvent(e) for e in logs] == [
        "login failed for 'alice@example.test' from 203.0.113.9 via 127.0.0.1: wrong password"
        " (after a 15 s delay)"
    ]


def test_xclient_addr_stays_across_starttls_as_roundcube_sends_it() -> None:
    # Roundcube (rcube_smtp.php): EHLO, XCLIENT, then STARTTLS when the host says tls://.
    h = Harness(tls=object())
    proto, transport = h.connect()
    send(proto, transport, b"EHLO webmail\r\n")
    assert send(proto, transport, b"XCLIENT ADDR=203.0.113.9\r\n").startswith(b"220 ")
    assert send(proto, transport, b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    send(proto, transport, b"EHLO webmail\r\n")
    with capturedLogs() as logs:
        assert send(proto, transport, auth_plain(ALICE, "guess")) == AUTH_FAILED + b"\r\n"
    assert [e["origin"] for e in logs] == ["203.0.113.9"]
    h.stop()


def test_xclient_addr_unavailable_leaves_the_webmail_as_the_source(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO webmail\r\n")
    send(proto, transport, b"XCLIENT ADDR=203.0.113.9\r\nEHLO webmail\r\n")
    send(proto, transport, b"XCLIENT ADDR=[UNAVAILABLE]\r\nEHLO webmail\r\n")
    with capturedLogs() as logs:
        assert send(proto, transport, auth_plain(ALICE, "guess")) == AUTH_FAILED + b"\r\n"
    assert [formatEvent(e) for e in logs] == [
        "login failed for 'alice@example.test' from 127.0.0.1: wrong password"
    ]


def test_auth_login_works(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"  # "Username:"
    assert send(proto, transport, f"{b64(ALICE)}\r\n".encode()) == b"334 UGFzc3dvcmQ6\r\n"
    assert send(proto, transport, f"{b64(PASSWORD)}\r\n".encode()) == (
        b"235 2.7.0 Authentication successful\r\n"
    )
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()) == b"250 2.1.0 Ok\r\n"


def test_auth_login_with_a_wrong_password_fails_like_plain(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    send(proto, transport, f"AUTH LOGIN {b64(ALICE)}\r\n".encode())
    assert send(proto, transport, f"{b64('nope')}\r\n".encode()) == AUTH_FAILED + b"\r\n"


def test_a_pipelined_mail_after_auth_waits_for_the_auth_answer() -> None:
    executor = ManualExecutor()
    h = Harness(executor=executor)
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    out = send(proto, transport, auth_plain() + f"MAIL FROM:<{ALICE}>\r\nNOOP\r\n".encode())
    # The password check is in the pool: nothing is answered, the MAIL is not taken as
    # unauthenticated, and reading stops (RFC 4954 §4: AUTH is not pipelined).
    assert out == b""
    assert transport.producerState == "paused"
    assert executor.run_all() == 1
    assert last_lines(bytes(transport.value())) == [
        b"235 2.7.0 Authentication successful",
        b"250 2.1.0 Ok",
        b"250 2.0.0 Ok",
    ]
    assert transport.producerState == "producing"
    h.stop()


def test_a_pipelined_mail_after_a_failed_auth_is_refused() -> None:
    executor = ManualExecutor()
    h = Harness(executor=executor)
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    send(proto, transport, auth_plain(ALICE, "wrong") + f"MAIL FROM:<{ALICE}>\r\n".encode())
    executor.run_all()
    assert last_lines(bytes(transport.value())) == [
        AUTH_FAILED,
        b"530 5.7.0 Authentication required",
    ]
    h.stop()


def test_auth_plain_with_an_authzid_the_user_may_not_act_as_fails(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain(ALICE, PASSWORD, authzid=BOB)).startswith(b"535 ")


def test_auth_plain_with_the_users_own_authzid_is_fine(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain(ALICE, PASSWORD, authzid=ALICE)).startswith(b"235 ")


# -- the portal policy -----------------------------------------------------------------------------


def test_a_portal_off_domain_refuses_the_right_password_with_its_sentence() -> None:
    h = Harness(domain_portal="off")
    h.authenticator.portal = Portal(h.clock, h.domains, h.store).closed_reason
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain()) == f"535 5.7.0 {NOT_ENABLED_TEXT}\r\n".encode()
    # A wrong password learns nothing about the portal.
    assert send(proto, transport, auth_plain(ALICE, "wrong")) == AUTH_FAILED + b"\r\n"
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()).startswith(b"530 ")
    h.stop()


def test_a_portal_open_for_an_outage_lets_the_user_in() -> None:
    h = Harness(domain_portal="outage")
    portal = Portal(h.clock, h.domains, h.store)
    h.authenticator.portal = portal.closed_reason
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain()).startswith(b"535 5.7.0 Your primary mail server")
    result_of(h.store.open_outage("example.test", h.clock.seconds(), "primary down"))
    h.clock.advance(2)  # past the portal's one-second cache
    assert send(proto, transport, auth_plain()) == b"235 2.7.0 Authentication successful\r\n"
    h.stop()


def test_a_portal_callable_closes_and_opens_per_domain() -> None:
    closed: set[str] = {"example.test"}

    def portal(domain: str) -> str | None:
        return CLOSED if domain in closed else None

    h = Harness(portal=portal)
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain()) == f"535 5.7.0 {CLOSED}\r\n".encode()
    closed.clear()
    assert send(proto, transport, auth_plain()) == b"235 2.7.0 Authentication successful\r\n"
    h.stop()


def test_an_asynchronous_portal_answer_is_awaited() -> None:
    answer: Deferred[str | None] = Deferred()
    asked: list[str] = []

    def portal(domain: str) -> Deferred[str | None]:
        asked.append(domain)
        return answer

    h = Harness(portal=portal)
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    assert send(proto, transport, auth_plain() + f"MAIL FROM:<{ALICE}>\r\n".encode()) == b""
    assert asked == ["example.test"]
    answer.callback(None)
    assert last_lines(bytes(transport.value())) == [
        b"235 2.7.0 Authentication successful",
        b"250 2.1.0 Ok",
    ]
    h.stop()


# -- MAIL FROM -------------------------------------------------------------------------------------


def test_mail_before_auth_is_refused_530(h: Harness) -> None:
    proto, transport = h.connect()
    send(proto, transport, b"EHLO client.test\r\n")
    out = send(proto, transport, f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode())
    assert last_lines(out) == [
        b"530 5.7.0 Authentication required",
        b"503 5.5.1 Error: need MAIL command",
        b"503 5.5.1 Error: need RCPT command",
    ]


def test_after_auth_a_foreign_mail_from_is_refused_553_and_the_own_accepted(h: Harness) -> None:
    proto, transport = h.login()
    for foreign in (BOB, "alice@other.test", "ceo@bank.example"):
        assert send(proto, transport, f"MAIL FROM:<{foreign}>\r\n".encode()) == (
            b"553 5.7.1 Sender address rejected: not owned by user\r\n"
        )
    assert send(proto, transport, b"MAIL FROM:<>\r\n").startswith(b"553 5.7.1 ")
    assert send(proto, transport, b"MAIL FROM:<Alice@EXAMPLE.test>\r\n") == b"250 2.1.0 Ok\r\n"


# -- the From: header and what is stored ----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        (f"From: Bob <{BOB}>\r\n".encode(), BOB),
        (f"From: {ALICE}, {BOB}\r\n".encode(), BOB),
        (f"From: {ALICE}\r\nSender: {BOB}\r\n".encode(), BOB),
        (b"From: Support <help@bank.example>\r\n", "help@bank.example"),
    ],
    ids=["colleague", "one-of-several", "sender-field", "stranger"],
)
def test_a_from_header_the_user_does_not_own_is_refused_after_the_dot_and_nothing_stored(
    h: Harness, headers: bytes, named: str
) -> None:
    proto, transport = h.login()
    out = last_lines(send(proto, transport, message(ALICE, BOB, "friend@gmail.example",
                                                    headers=headers)))  # fmt: skip
    assert out == [
        b"250 2.1.0 Ok",
        b"250 2.1.5 Ok",
        b"250 2.1.5 Ok",
        b"354 End data with <CR><LF>.<CR><LF>",
        f"553 5.7.1 From: address <{named}> not owned by user".encode(),
    ]
    assert result_of(h.store.message_count()) == 0
    assert h.entries() == []
    assert h.shadow() == []
    # The session goes on: the next, honest message is taken.
    out = last_lines(send(proto, transport, message(ALICE, BOB)))
    queued_id(out[-1])
    assert h.entries() == [(BOB, "example.test", False)]


def test_a_message_without_from_is_refused(h: Harness) -> None:
    proto, transport = h.login()
    out = last_lines(send(proto, transport, message(ALICE, BOB, headers=b"")))
    assert out[-1] == b"553 5.7.1 Message has no From: header"
    assert result_of(h.store.message_count()) == 0


def test_a_message_with_only_a_sender_field_is_refused(h: Harness) -> None:
    proto, transport = h.login()
    out = last_lines(
        send(proto, transport, message(ALICE, BOB, headers=f"Sender: {ALICE}\r\n".encode()))
    )
    assert out[-1] == b"553 5.7.1 Message has no From: header"


def test_an_own_message_is_stored_with_esmtpa_and_routed_per_recipient(h: Harness) -> None:
    proto, transport = h.login()
    out = last_lines(send(proto, transport, message(ALICE, BOB, "Friend@Gmail.example")))
    queue_id = queued_id(out[-1])
    body = result_of(h.store.read_body(queue_id))
    # RFC 3848: ESMTPA, authenticated without TLS (loopback).
    first, second = body.split(b"\r\n")[:2]
    assert first == b"Received: from client.test ([127.0.0.1])"
    assert second == f"\tby smtp.strata.test (Strata) with ESMTPA id {queue_id};".encode()
    assert b"\r\n\r\nhello\r\n" in body
    stored = result_of(h.store.get_message(queue_id))
    assert stored is not None
    assert stored.envelope.sender == ALICE
    assert stored.header_message_id == "<s1@example.test>"
    # The colleague: the primary's queue and, in mode both, the shadow INBOX now; the friend:
    # the outbound queue, for gmail.example's MX.
    assert sorted(h.entries()) == [
        ("Friend@Gmail.example", "gmail.example", True),
        (BOB, "example.test", False),
    ]
    assert h.shadow() == [(BOB, "INBOX")]


def test_a_message_with_a_100_kib_line_is_taken_and_stored_byte_for_byte(h: Harness) -> None:
    """Issue 11, point 3, for submission: a line of any length is mail, not a 500."""
    proto, transport = h.login()
    long_line = b"." + b"q" * (100 * 1024) + b"."
    content = (
        f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nSubject: long\r\n\r\n".encode()
        + long_line + b"\r\n" + long_line[1:] + b"\r\n"
    )  # fmt: skip
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    session = f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode() + stuffed + b".\r\n"
    transport.clear()
    for at in range(0, len(session), 65536):  # as Twisted reads it
        proto.dataReceived(session[at : at + 65536])
    queue_id = queued_id(last_lines(bytes(transport.value()))[-1])
    body = result_of(h.store.read_body(queue_id))
    assert body.endswith(b"\r\n" + content)  # below the Received: field, the bytes sent
    assert h.shadow() == [(BOB, "INBOX")]


def test_a_colleague_in_mode_relay_gets_no_shadow_copy() -> None:
    h = Harness(mode="relay")
    proto, transport = h.login()
    queued_id(last_lines(send(proto, transport, message(ALICE, BOB)))[-1])
    assert h.entries() == [(BOB, "example.test", False)]
    assert h.shadow() == []
    h.stop()


def test_recipients_unknown_in_a_protected_domain_are_refused_others_taken(h: Harness) -> None:
    proto, transport = h.login()
    send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode())
    out = send(
        proto,
        transport,
        b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<user@[192.0.2.1]>\r\n"
        b"RCPT TO:<kim@outside.example>\r\n",
    )
    assert last_lines(out) == [
        b"550 5.1.1 Recipient address rejected: User unknown",
        b"250 2.1.5 Ok",
        b"250 2.1.5 Ok",
    ]
    out = send(proto, transport, b"DATA\r\nFrom: alice@example.test\r\n\r\nx\r\n.\r\n")
    queued_id(last_lines(out)[-1])
    assert sorted(h.entries()) == [
        ("kim@outside.example", "outside.example", True),
        ("user@[192.0.2.1]", "[192.0.2.1]", True),
    ]


def test_postmaster_is_taken_and_routed_as_at_intake() -> None:
    # Issue #11: <Postmaster> goes to the operator, postmaster@ a protected domain to its primary
    # though the domain's user list lacks it; each recipient once.
    h = Harness(postmaster="noc@msp.example")
    proto, transport = h.login()
    rcpts = ("Postmaster", "postmaster@example.test", "POSTMASTER", "kim@outside.example",
             "kim@OUTSIDE.example", BOB, BOB)  # fmt: skip
    out = last_lines(send(proto, transport, message(ALICE, *rcpts)))
    assert out[1:8] == [b"250 2.1.5 Ok"] * 7
    queued_id(out[-1])
    assert h.entries() == [
        ("noc@msp.example", "msp.example", True),
        ("postmaster@example.test", "example.test", False),
        ("kim@outside.example", "outside.example", True),
        (BOB, "example.test", False),
    ]
    assert h.shadow() == [(BOB, "INBOX")]  # no postmaster user here: no shadow copy for it
    h.stop()


def test_a_refused_sender_is_logged_with_the_client_and_the_reason(h: Harness) -> None:
    proto, transport = h.login()
    with capturedLogs() as logs:
        send(proto, transport, f"MAIL FROM:<{BOB}>\r\n".encode())
    assert [formatEvent(e) for e in logs] == [
        f"refused MAIL from 127.0.0.1: 553 5.7.1 Sender address rejected: not owned by user "
        f"({ALICE} may not send as <{BOB}>); from=<{BOB}>"
    ]
    assert logs[0]["log_level"] == LogLevel.info


# -- the hourly limit over the wire -------------------------------------------------------------


def test_the_third_mail_gets_450_with_max_per_hour_2_and_passes_after_the_hour() -> None:
    h = Harness(max_per_hour=2)
    proto, transport = h.login()
    for _ in range(2):
        queued_id(last_lines(send(proto, transport, message()))[-1])
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()) == (
        b"450 4.7.1 Error: too many messages sent in the last hour; try again later\r\n"
    )
    # A new session, even a new login, does not reset the count.
    proto, transport = h.login()
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()).startswith(b"450 4.7.1")
    # Bob has his own.
    proto_bob, transport_bob = h.login(BOB)
    assert send(proto_bob, transport_bob, f"MAIL FROM:<{BOB}>\r\n".encode()).startswith(b"250")
    h.clock.advance(3600)
    proto, transport = h.login()
    queued_id(last_lines(send(proto, transport, message()))[-1])
    assert len(h.entries()) == 3
    h.stop()


def test_refused_messages_do_not_count_against_the_limit() -> None:
    h = Harness(max_per_hour=1)
    proto, transport = h.login()
    spoofed = message(headers=f"From: {BOB}\r\n".encode())
    for _ in range(3):
        assert last_lines(send(proto, transport, spoofed))[-1].startswith(b"553 5.7.1")
    queued_id(last_lines(send(proto, transport, message()))[-1])
    assert send(proto, transport, f"MAIL FROM:<{ALICE}>\r\n".encode()).startswith(b"450 4.7.1")
    h.stop()


def test_the_limit_holds_for_a_pipelining_client_with_a_slow_disk() -> None:
    clock = Clock()
    h = Harness(max_per_hour=2, store=SlowCommitStore(clock))
    store = h.store
    assert isinstance(store, SlowCommitStore)
    proto, transport = h.login()
    transport.clear()
    proto.dataReceived(message() + message() + message())
    while store.pending:
        store.finish_next()
    out = last_lines(bytes(transport.value()))
    assert len([line for line in out if line.startswith(b"250 2.0.0 Ok: queued as")]) == 2
    assert b"450 4.7.1 Error: too many messages sent in the last hour; try again later" in out
    assert len(h.entries()) == 2
    h.stop()
