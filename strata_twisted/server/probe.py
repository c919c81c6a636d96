"""
The monitor's probe of a primary: connect, read the banner, EHLO (HELO if refused), QUIT.

L{SMTPProber} is the L{strata_twisted.core.monitor.Prober} the service uses.  The sans-IO client
engine does the SMTP (with ``tls="none"``: a probe asks whether the primary answers, not whether
its TLS works); this adapter moves bytes and keeps two deadlines, on the injected clock: one for
the TCP connection (a host that is down or unreachable answers no SYN, and is given up soon), and
one for the whole exchange, connection included (long enough for a greeting that comes late on
purpose, such as Postfix postscreen's 6 s greet wait or sendmail's greet_pause).  The primary
counts as up once the engine is ``Ready`` (the banner and EHLO or HELO were accepted).  Whatever
happens, the connection is closed, and the Deferred fires once: None, or L{ProbeFailed} whose
text says what went wrong.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from strata_twisted.model import Domain
from strata_twisted.proto.smtp_client import (
    NEED_DATA,
    ClientConfig,
    Ready,
    SessionFailed,
    SMTPClientEngine,
    State,
)

# What a probe was waiting for when it ran out of time, by engine state.
_WAITING_FOR = {
    State.GREETING: "banner",
    State.EHLO: "reply to EHLO",
    State.HELO: "reply to HELO",
}


class ProbeFailed(Exception):
    """The primary did not answer a probe; ``str()`` is the reason, for events and alerts."""


class ProbeSession(Protocol):
    """One probe: its connection, its deadline and its result (``done``)."""

    def __init__(
        self,
        clock: IReactorTime,
        helo_name: str,
        target: str,
        timeout: float,
        connect_timeout: float | None = None,
    ) -> None:
        """``timeout``: for the whole exchange; ``connect_timeout`` (at most that, by default
        all of it): for the TCP connection alone."""
        self.engine = SMTPClientEngine(ClientConfig(helo_name, tls="none"))
        self.done: Deferred[None] = Deferred(self._cancelled)
        self._clock = clock
        self._target = target
        self._timeout = timeout
        self._connect_timeout = (
            timeout if connect_timeout is None else min(connect_timeout, timeout)
        )
        self._started = clock.seconds()
        self._answered = False
        self._error: str | None = None
        self._connected = False
        self._gone = False
        self.connecting: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = clock.callLater(self._connect_timeout, self._timed_out)

    # -- Twisted ---------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        if self.done.called and self.transport is not None:
            # A connection that completes after the probe ended (timed out, cancelled) would
            # have no deadline left: hang up at once rather than hold it open for ever.
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        if self._timer is not None and self._connect_timeout < self._timeout:
            # Connected in time: the rest of the whole exchange's time is for the SMTP.
            self._timer.cancel()
            left = self._started + self._timeout - self._clock.seconds()
            self._timer = self._clock.callLater(max(left, 0.0), self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        self.engine.receive_data(data)
        self._pump()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        self.engine.receive_data(b"")  # the engine reports EOF before Ready as a failure
        self._pump()
        self._finish()

    def connect_failed(self, failure: Failure) -> None:
        """The TCP connection could not be made (refused, unreachable, no such host, timeout)."""
        if self._error is None:
            self._error = f"cannot connect to {self._target}: {failure.getErrorMessage()}"
        self._finish()

    # -- the engine ------------------------------------------------------------------------------

    def _pump(self) -> None:
        while (event := self.engine.next_event()) is not NEED_DATA:
            if isinstance(event, Ready) and not self._answered:
                self._answered = True
                self.engine.quit()
            elif isinstance(event, SessionFailed) and self._error is None:
                reply = event.reply.to_bytes().decode("utf-8", "replace") if event.reply else ""
                reply = reply.rstrip("\r\n").split("\r\n")[-1]
                self._error = f"{self._target}: {event.reason}" + (f": {reply}" if reply else "")
        out = self.engine.data_to_send()
        if out and not self._gone and self.transport is not None:
            self.transport.write(out)
        if self.engine.closed and not self._gone and self.transport is not None:
            self.transport.loseConnection()

    # -- endings ---------------------------------------------------------------------------------

    def _timed_out(self) -> None:
        self._timer = None
        if self._error is None and not self._answered:
            if self._connected:
                waiting = _WAITING_FOR.get(self.engine.state, "answer")
                self._error = f"{self._target}: no {waiting} within {self._timeout:g} s"
            else:
                self._error = f"cannot connect to {self._target} within {self._connect_timeout:g} s"
        self._abort()

    def _cancelled(self, _: Deferred[None]) -> None:
        if self._error is None:
            self._error = f"probe of {self._target} cancelled"
        self._abort()

    def _abort(self) -> None:
        if self._connected:
            if not self._gone and self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
            return  # connectionLost follows
        if self.connecting is not None:
            # Not ``if not connecting.called``: once the name is resolved, HostnameEndpoint's
            # Deferred counts as called while it waits for the attempts, and only cancel()
            # reaches them (a no-op once it has really fired).  connect_failed follows.
            self.connecting.cancel()
        self._finish()

    def _finish(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.done.called:
            return
        if self._answered:
            self.done.callback(None)
        else:
            why = self._error or f"{self._target} closed the connection before answering EHLO"
            self.done.errback(ProbeFailed(why))


class SMTPProber:
    """Probes primaries over TCP (implements ``strata_twisted.core.monitor.Prober``)."""

    def __init__(self, reactor: Any, helo_name: str) -> None:
        self._reactor = reactor
        self._helo_name = helo_name

    def probe(
        self, domain: Domain, timeout: float, connect_timeout: float | None = None
    ) -> Deferred[None]:
        session = ProbeSession(
            self._reactor, self._helo_name, str(domain.relay), timeout, connect_timeout
        )
        endpoint = endpoints.HostnameEndpoint(
            self._reactor,
            domain.relay.host,
            domain.relay.port,
            timeout=timeout if connect_timeout is None else min(connect_timeout, timeout),
        )
        session.connecting = endpoint.connect(Factory.forProtocol(lambda: session))
        session.connecting.addErrback(session.connect_failed)
        return session.done
