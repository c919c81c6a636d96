"""
Small pieces the adapters (SMTP intake, relay client, IMAP) need from a TCP connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol


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
