"""
Small pieces both SMTP adapters (intake server, relay client) need from a TCP connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime


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
