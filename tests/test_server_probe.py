"""
The SMTP probe: the exchange driven over a StringTransport on a task.Clock (banner, EHLO, HELO
fallback, refusals, deadlines, cancellation), then a few probes of real servers on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from strata_twisted.model import Domain, RelayTarget
from strata_twisted.server.probe import ProbeFailed, ProbeSession, SMTPProber
from strata_twisted.testing import failure_of, result_of

reactor: Any = _reactor
# pytest-twisted runs these on the real reactor; its decorator is untyped.
on_reactor = cast(
    Callable[[Callable[..., Any]], Callable[..., Any]], pytest_twisted.inlineCallbacks
)
TARGET = "10.0.0.1:25"


def session(timeout: float = 10.0) -> tuple[ProbeSession, StringTransport, Clock]:
    clock = Clock()
    probe = ProbeSession(clock, "strata.test", TARGET, timeout)
    transport = StringTransport()
    probe.makeConnection(transport)
    return probe, transport, clock


def said(transport: StringTransport) -> bytes:
    out = bytes(transport.value())
    transport.clear()
    return out


def reason(d: Deferred[None]) -> str:
    failure = failure_of(d)
    assert failure.check(ProbeFailed)
    return str(failure.value)


def test_banner_ehlo_quit() -> None:
    probe, transport, clock = session()
    probe.dataReceived(b"220 mx.example.test ESMTP\r\n")
    assert said(transport) == b"EHLO strata.test\r\n"
    probe.dataReceived(b"250-mx.example.test\r\n250 PIPELINING\r\n")
    assert said(transport) == b"QUIT\r\n"
    assert not probe.done.called  # the result comes once the connection is closed
    probe.dataReceived(b"221 2.0.0 Bye\r\n")
    assert transport.disconnecting
    probe.connectionLost(None)
    assert result_of(probe.done) is None
    assert clock.getDelayedCalls() == []


def test_helo_when_ehlo_is_refused() -> None:
    probe, transport, _ = session()
    probe.dataReceived(b"220 old.example.test\r\n")
    probe.dataReceived(b"502 5.5.1 what?\r\n")
    assert said(transport) == b"EHLO strata.test\r\nHELO strata.test\r\n"
    probe.dataReceived(b"250 old.example.test\r\n")
    assert said(transport) == b"QUIT\r\n"
    probe.connectionLost(None)  # no 221: up all the same
    assert result_of(probe.done) is None


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        (
            [b"554 5.3.2 go away\r\n"],
            "10.0.0.1:25: the server refused the session: 554 5.3.2 go away",
        ),
        (
            [b"220 hi\r\n", b"500 no\r\n", b"500 no\r\n"],
            "10.0.0.1:25: the server refused EHLO and HELO: 500 no",
        ),
        ([b"220 hi\r\n", b"421 4.3.2 shutting down\r\n"], "(421): 421 4.3.2 shutting down"),
        ([b"hello there\r\n"], "malformed reply line"),
    ],
)
def test_a_primary_that_refuses_fails_with_its_reply(replies: list[bytes], expected: str) -> None:
    probe, transport, _ = session()
    for reply in replies:
        probe.dataReceived(reply)
    assert transport.disconnecting  # we hang up; the result follows the close
    probe.connectionLost(None)
    assert expected in reason(probe.done)


def test_a_connection_closed_before_ehlo_fails() -> None:
    probe, _, _ = session()
    probe.dataReceived(b"220 hi\r\n")
    probe.connectionLost(None)
    assert reason(probe.done) == "10.0.0.1:25: connection closed by the server"


@pytest.mark.parametrize(
    ("replies", "waiting"),
    [([], "no banner within 10 s"), ([b"220 hi\r\n"], "no reply to EHLO within 10 s")],
)
def test_the_deadline_covers_the_whole_exchange(replies: list[bytes], waiting: str) -> None:
    probe, transport, clock = session()
    for reply in replies:
        probe.dataReceived(reply)
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting  # aborted
    probe.connectionLost(None)
    assert reason(probe.done) == f"10.0.0.1:25: {waiting}"


def test_an_unanswered_quit_still_counts_as_up() -> None:
    probe, transport, clock = session()
    probe.dataReceived(b"220 hi\r\n250 hello\r\n")
    clock.advance(10)
    assert transport.disconnecting
    probe.connectionLost(None)
    assert result_of(probe.done) is None


def test_cancelling_a_probe_hangs_up() -> None:
    probe, transport, clock = session()
    probe.done.cancel()
    assert transport.disconnecting
    probe.connectionLost(None)
    failure_of(probe.done)  # CancelledError, fired once
    assert clock.getDelayedCalls() == []


def test_a_connection_that_never_completes_is_given_up_at_the_deadline() -> None:
    reactor = MemoryReactorClock()
    d = SMTPProber(reactor, "strata.test").probe(Domain("example.test", RelayTarget("10.0.0.1")), 3)
    [connector] = reactor.connectors
    reactor.advance(2.9)
    assert not d.called and not connector.stoppedConnecting
    reactor.advance(0.1)
    assert connector.stoppedConnecting  # the attempt is abandoned, not left to linger
    assert reason(d) == "cannot connect to 10.0.0.1:25 within 3 s"
    assert reactor.getDelayedCalls() == []


def test_an_unreachable_host_is_given_up_at_the_connect_deadline() -> None:
    reactor = MemoryReactorClock()
    domain = Domain("example.test", RelayTarget("10.0.0.1"))
    d = SMTPProber(reactor, "strata.test").probe(domain, 10, connect_timeout=4)
    [connector] = reactor.connectors
    reactor.advance(3.9)
    assert not d.called
    reactor.advance(0.1)
    assert connector.stoppedConnecting
    assert reason(d) == "cannot connect to 10.0.0.1:25 within 4 s"
    assert reactor.getDelayedCalls() == []


def test_a_late_greeting_within_the_whole_probe_time_counts_as_an_answer() -> None:
    # Connected after 2 s (within the 4 s for the connection), greeted at 8 s: postscreen's
    # 6 s greet wait on a new client.  The whole probe has 10 s, so the primary is up.
    clock = Clock()
    probe = ProbeSession(clock, "strata.test", TARGET, 10, connect_timeout=4)
    clock.advance(2)
    transport = StringTransport()
    probe.makeConnection(transport)
    clock.advance(6)
    assert not probe.done.called
    probe.dataReceived(b"220-mail.example.test ESMTP\r\n")
    clock.advance(1)
    probe.dataReceived(b"220 mail.example.test ESMTP\r\n")
    assert transport.value().startswith(b"EHLO strata.test\r\n")
    probe.dataReceived(b"250 mail.example.test\r\n")
    probe.dataReceived(b"221 2.0.0 Bye\r\n")
    probe.connectionLost(None)
    assert result_of(probe.done) is None
    assert clock.getDelayedCalls() == []


def test_a_connected_primary_that_never_greets_fails_at_the_whole_probe_deadline() -> None:
    clock = Clock()
    probe = ProbeSession(clock, "strata.test", TARGET, 10, connect_timeout=4)
    clock.advance(3)
    transport = StringTransport()
    probe.makeConnection(transport)
    clock.advance(6.9)
    assert not probe.done.called and not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    probe.connectionLost(None)
    assert reason(probe.done) == "10.0.0.1:25: no banner within 10 s"


def test_a_connection_completing_after_the_deadline_is_closed_at_once() -> None:
    clock = Clock()
    probe = ProbeSession(clock, "strata.test", TARGET, 3)
    clock.advance(3)
    assert reason(probe.done) == "cannot connect to 10.0.0.1:25 within 3 s"
    transport = StringTransport()
    probe.makeConnection(transport)  # late: no deadline is left to end it
    assert transport.disconnecting and transport.value() == b""
    probe.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_a_connected_primary_that_stays_silent_is_hung_up_on_at_the_deadline() -> None:
    reactor = MemoryReactorClock()
    d = SMTPProber(reactor, "strata.test").probe(Domain("example.test", RelayTarget("10.0.0.1")), 3)
    factory = reactor.tcpClients[0][2]
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 25))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    reactor.advance(3)
    assert transport.disconnecting
    protocol.connectionLost(Failure(Exception("aborted")))
    assert reason(d) == "10.0.0.1:25: no banner within 3 s"
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []


# -- real sockets on 127.0.0.1 --------------------------------------------------------------------


class Scripted(Protocol):
    """A tiny primary: a banner (unless silent), 250 to EHLO, 221 to QUIT."""

    def __init__(self, silent: bool, lost: list[Deferred[None]]) -> None:
        self.silent = silent
        self.lost: Deferred[None] = Deferred()
        lost.append(self.lost)
        self.buffer = b""

    def connectionMade(self) -> None:
        if not self.silent:
            self.transport.write(b"220 primary.test ESMTP\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line.upper().startswith(b"EHLO"):
                self.transport.write(b"250-primary.test\r\n250 8BITMIME\r\n")  # type: ignore[union-attr]
            elif line.upper() == b"QUIT":
                self.transport.write(b"221 2.0.0 Bye\r\n")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)


def listen(silent: bool = False) -> tuple[Any, list[Deferred[None]]]:
    lost: list[Deferred[None]] = []
    port = reactor.listenTCP(
        0, Factory.forProtocol(lambda: Scripted(silent, lost)), interface="127.0.0.1"
    )
    return port, lost


def domain_at(port: int) -> Domain:
    return Domain("example.test", RelayTarget("127.0.0.1", port))


@on_reactor
def test_probe_a_real_primary() -> Generator[Deferred[Any], Any, None]:
    port, lost = listen()
    try:
        result = yield SMTPProber(reactor, "strata.test").probe(domain_at(port.getHost().port), 2)
        assert result is None
        assert len(lost) == 1
        yield lost[0]  # the session ended
    finally:
        yield port.stopListening()


@on_reactor
def test_probe_a_closed_port() -> Generator[Deferred[Any], Any, None]:
    port, _ = listen()
    number = port.getHost().port
    yield port.stopListening()
    try:
        yield SMTPProber(reactor, "strata.test").probe(domain_at(number), 2)
    except ProbeFailed as e:
        assert str(e).startswith(f"cannot connect to 127.0.0.1:{number}: ")
        assert "refused" in str(e).lower()
    else:
        pytest.fail("a closed port answered the probe")


@on_reactor
def test_probe_a_primary_that_never_greets() -> Generator[Deferred[Any], Any, None]:
    port, lost = listen(silent=True)
    number = port.getHost().port
    try:
        yield SMTPProber(reactor, "strata.test").probe(domain_at(number), 0.2)
    except ProbeFailed as e:
        assert str(e) == f"127.0.0.1:{number}: no banner within 0.2 s"
    else:
        pytest.fail("a silent server answered the probe")
    try:
        yield lost[0]  # we closed the connection
    finally:
        yield port.stopListening()
