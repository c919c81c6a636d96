"""
Small pieces the adapters (SMTP intake, relay client, IMAP) need from a TCP connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any
from typing import Protocol as Typing

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger


def host_of(address: IAddress | None) -> str:
    """The client's address as text (``unknown`` when the transport has none)."""
    return str(getattr(address, "host", "") or "unknown")


def set_no_delay(transport: Any) -> None:
    """
    Turn off Nagle's algorithm.  SMTP is request/response with small writes (a reply, or a body's
    last chunk then ".\\r\\n"); with Nagle each would wait for the peer's delayed ACK, about 40 ms.
    """
    set_it = getattr(transport, "setTcpNoDelay", None)
    if set_it is not None:
        set_it(True)


class Deadline:
    """A restartable timeout on the injected clock: ``arm(seconds)`` (re)starts it."""

    def __init__(self, clock: IReactorTime, expired: Callable[[], object]) -> None:
        self._clock = clock
        self._expired = expired
        self._call: IDelayedCall | None = None

    def arm(self, seconds: float) -> None:
        if self._call is not None and self._call.active():
            self._call.reset(seconds)
        else:
            self._call = self._clock.callLater(seconds, self._fire)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self._expired()


class ConnectionLimits:
    """
    How many connections a listener holds in all and per client address.  ``admit(host)``
    counts a new connection or says why it is refused; ``release(host)`` uncounts it.
    """

    def __init__(self, max_connections: int, max_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    @property
    def open(self) -> int:
        return self._total

    def admit(self, host: str) -> str | None:
        """None when the connection is counted in, else the reason it is refused."""
        if self._total >= self.max_connections:
            return "too many connections"
        if self._per_ip[host] >= self.max_per_ip:
            return f"too many connections from {host}"
        self._per_ip[host] += 1
        self._total += 1
        return None

    def release(self, host: str) -> None:
        if self._per_ip[host] <= 0:
            return
        self._total -= 1
        self._per_ip[host] -= 1
        if self._per_ip[host] <= 0:
            del self._per_ip[host]


class Refuse(Protocol):
    """Writes one line (SMTP 421, IMAP BYE) and hangs up: a connection over the limits."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)
        self.transport.loseConnection()


class _Engine(Typing):
    def data_to_send(self) -> bytes: ...


class EngineProtocol(Protocol):
    """
    What the SMTP and IMAP adapters share: a sans-IO engine whose output is flushed to the
    transport, a restartable deadline on the injected clock, and a clean close.
    """

    engine: _Engine | None = None
    _gone = False

    def __init__(self, clock: IReactorTime) -> None:
        self._deadline = Deadline(clock, self._timed_out)

    @property
    def _transport(self) -> Any:
        """The connected TCP (or TLS) transport: ITransport, IPushProducer and ITLSTransport."""
        assert self.transport is not None
        return self.transport

    def _peer(self) -> str:
        """Nagle off (request/response traffic), and the client's address."""
        set_no_delay(self.transport)
        return host_of(self._transport.getPeer())

    def _flush(self) -> None:
        if self.engine is not None and not self._gone:
            out = self.engine.data_to_send()
            if out:
                self._transport.write(out)

    def _close(self) -> None:
        self._deadline.cancel()
        if not self._gone:
            self._transport.loseConnection()

    def _timed_out(self) -> None:
        raise NotImplementedError


class CountingFactory(Factory):
    """
    Connection accounting both listeners share: every connection is counted against
    L{ConnectionLimits} (in all and per client address), or refused with one line.
    """

    log = Logger()

    def __init__(self, connections: ConnectionLimits) -> None:
        self.connections = connections
        self._protocols: dict[Protocol, str] = {}

    def admit(
        self, addr: IAddress | None, build: Callable[[], Protocol], refusal: Callable[[str], bytes]
    ) -> Protocol:
        host = host_of(addr)
        refused = self.connections.admit(host)
        if refused is not None:
            self.log.warn("refusing {host}: {why}", host=host, why=refused)
            return Refuse(refusal(refused))
        protocol = build()
        self._protocols[protocol] = host
        return protocol

    def connection_closed(self, protocol: Protocol) -> None:
        host = self._protocols.pop(protocol, None)
        if host is not None:
            self.connections.release(host)

    @property
    def open_connections(self) -> int:
        return len(self._protocols)
