# -*- test-case-name: tests.test_server_imap -*-
"""
The IMAP server: Twisted transports wired to the sans-IO engine and the mailbox sessions.

A thin adapter (CONVENTIONS §1, issue 12).  ``dataReceived`` feeds L{IMAPServerEngine}; each
event that needs policy or mailbox data is answered asynchronously, while reads are paused, by
the core: login by the L{Authenticator} (core/login.py), every mailbox command by a
L{MailboxSession} (core/imap_session.py), which owns the selected mailbox and its semantics.
The engine writes every reply, so pipelined commands are answered strictly in order.  What stays
here is what only a transport can do: bytes in and out, flow control while a large body is
streamed, STARTTLS, the idle timeout and IDLE's poll on the injected clock, and connection
limits.

Login (issue 4, DESIGN "IMAP"): the address is canonicalised; a guesser's attempts wait longer
and longer before their password is checked (never refused); an unknown user costs a hash check
like a known one's and gets the same answer as a wrong password; verification runs in a thread
pool, never on the reactor thread.  Only after the password is right does the client learn that
the domain's portal is closed (C{NO [UNAVAILABLE]} with the portal's sentence).  The end user's
address that a trusted client (the webmail) names in ID before login goes with the login.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, TypeVar

from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorThreads,
    IReactorTime,
    ITLSTransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from strata_twisted.core.credentials import VerificationCache
from strata_twisted.core.imap_session import (
    Done,
    MailboxGone,
    MailboxSession,
    OutputBroken,
    Refused,
)
from strata_twisted.core.imap_shared import SharedState
from strata_twisted.core.login import Authenticator, PortalCheck, delay_note, networks, where
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.errors import StrataError
from strata_twisted.executor import Executor
from strata_twisted.interfaces import ICredentialStore, IMailboxStore, IMessageStore
from strata_twisted.model import MailboxError
from strata_twisted.proto.imap_response import ResponseCode
from strata_twisted.proto.imap_server import (
    NEED_DATA,
    AppendAborted,
    AppendData,
    AppendEnd,
    AppendStart,
    BackendCommand,
    Close,
    IdleEnded,
    IdleStarted,
    IMAPServerEngine,
    LoginRequest,
    SelectMailbox,
    ServerLimits,
    StartTLS,
)
from strata_twisted.server._transport import ConnectionLimits, CountingFactory, EngineProtocol

__all__ = ["IMAPFactory", "IMAPProtocol", "PoolExecutor", "PortalCheck"]

T = TypeVar("T")

_TEMPORARY: Final = "Temporary server failure, try again later"


class PoolExecutor:
    """
    An L{Executor} over a small L{ThreadPool} of its own: how the factory verifies passwords
    (CPU-heavy by design) and indexes messages without blocking the reactor thread.
    """

    def __init__(
        self, reactor: IReactorThreads, threads: int = 2, name: str = "strata-imap-auth"
    ) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=name)

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, f)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()


class _WriteGate:
    """
    The push producer a large body is streamed through: the transport pauses it when its write
    buffer is full and resumes it when drained; L{ready} waits for the latter.
    """

    def __init__(self) -> None:
        self._waiting: Deferred[None] | None = None
        self._paused = False

    def ready(self) -> Deferred[None]:
        if not self._paused:
            return succeed(None)
        if self._waiting is None:
            self._waiting = Deferred()
        return self._waiting

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()  # the connection is gone: let the writer see it and stop


class IMAPProtocol(EngineProtocol):
    """One IMAP session's connection; an L{Output} for its L{MailboxSession}."""

    log = Logger()

    def __init__(self, factory: IMAPFactory, *, tls_active: bool = False) -> None:
        super().__init__(factory.clock)
        self.factory = factory
        self.engine: IMAPServerEngine | None = None
        self.session: MailboxSession | None = None  # once logged in
        self.client = ""
        self._tls_active = tls_active
        self._idling = False
        self._woken = False  # woken while busy: look again as soon as the work in flight is done
        self._idle_poll: IDelayedCall | None = None
        self._busy = False  # an event is being answered asynchronously
        self._in_process = False
        self._paused = False
        self._gate = _WriteGate()

    @property
    def user(self) -> str | None:
        """The canonical address, once logged in."""
        return self.session.user if self.session is not None else None

    @property
    def selected(self) -> str | None:
        """The name of the selected mailbox, if any."""
        view = self.session.view if self.session is not None else None
        return view.name if view is not None else None

    # -- Output -----------------------------------------------------------------------------------

    @property
    def condstore(self) -> bool:
        return self.engine is not None and self.engine.condstore_enabled

    @property
    def gone(self) -> bool:
        return self._gone

    def untagged(self, lines: Iterable[bytes]) -> None:
        assert self.engine is not None
        self.engine.respond(lines)

    def write(self, data: bytes) -> None:
        """Write straight to the client, after whatever the engine has queued."""
        self._flush()
        if not self._gone:
            self._transport.write(data)

    def begin_stream(self) -> None:
        self._flush()
        # A new gate per body: a TLS transport wraps each registration anew and would never
        # resume a gate paused before.
        self._gate = _WriteGate()
        if not self._gone:
            self._transport.registerProducer(self._gate, True)

    def ready(self) -> Deferred[None]:
        return self._gate.ready()

    def end_stream(self) -> None:
        if not self._gone:
            self._transport.unregisterProducer()

    # -- Twisted --------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.client = self._peer()
        self.engine = IMAPServerEngine(
            self.factory.limits,
            tls_active=self._tls_active,
            tls_available=self.factory.tls is not None,
            trusted=self.factory.is_trusted(self.client),
        )
        self.engine.greeting()
        self._flush()
        self._arm_timer()

    def dataReceived(self, data: bytes) -> None:
        assert self.engine is not None
        self.engine.receive_data(data)
        self._arm_timer()
        self._process()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        self._deadline.cancel()
        self._stop_idle_poll()
        self._gate.stopProducing()
        if self.session is not None:
            self.session.ended()
        if self.engine is not None:
            self.engine.receive_data(b"")
        self.factory.connection_closed(self)

    # -- engine events ---------------------------------------------------------------------------

    def _process(self) -> None:
        engine = self.engine
        assert engine is not None
        if self._in_process:
            return
        self._in_process = True
        try:
            while not self._busy and not self._gone:
                event = engine.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Close):
                    self._flush()
                    self._close()
                    return
                self._dispatch(event)
        finally:
            self._in_process = False
        self._flush()
        if engine.closed and not self._busy:
            self._close()

    def _dispatch(self, event: object) -> None:
        session = self.session
        if isinstance(event, LoginRequest):
            self._start(self._login(event), event.tag, login=True)
        elif isinstance(event, StartTLS):
            self._start_tls()
        elif session is None:
            return  # the engine hands out mailbox events only after login
        elif isinstance(event, SelectMailbox):
            self._start(self._select(session, event), event.tag)
        elif isinstance(event, BackendCommand):
            self._start(self._command(session, event), event.command.tag)
        elif isinstance(event, AppendStart):
            date = event.internal_date
            session.append_begin(event.mailbox, event.flags,
                                 date.timestamp() if date is not None else None)  # fmt: skip
        elif isinstance(event, AppendData):
            d = session.append_data(event.data)
            if d is not None:
                self._busy = True
                self._pause()
                d.addBoth(self._done)
        elif isinstance(event, AppendEnd):
            self._start(self._append_end(session, event), event.tag)
        elif isinstance(event, AppendAborted):
            session.append_abort()
        elif isinstance(event, IdleStarted):
            self._idling = True
            self._idle_check()
        elif isinstance(event, IdleEnded):
            self._idling = False
            self._stop_idle_poll()

    def _start(self, work: Coroutine[Any, Any, None], tag: str, *, login: bool = False) -> None:
        """Answer an event asynchronously: pause reads until the engine has its answer."""
        self._busy = True
        self._pause()
        d = Deferred.fromCoroutine(work)
        d.addErrback(self._failed, tag, login)
        d.addBoth(self._done)

    def _failed(self, failure: Failure, tag: str, login: bool) -> None:
        engine = self.engine
        assert engine is not None
        if failure.check(Refused):
            refused = failure.value
            assert isinstance(refused, Refused)
            code = ResponseCode.simple(refused.code) if refused.code else None
            engine.complete(tag, refused.status, refused.text, code)
            return
        if failure.check(MailboxGone):
            # RFC 3501 §7.1.5: the server must close the connection; say why first.
            self.log.info("IMAP {client}: {why}", client=self.client, why=failure.value)
            engine.bye("Selected mailbox was deleted, have to disconnect")
            return
        if failure.check(OutputBroken):
            self.log.warn("IMAP {client}: {why}; closing", client=self.client, why=failure.value)
            self._close()
            return
        if failure.check(MailboxError):
            error = failure.value
            assert isinstance(error, MailboxError)
            if login:
                engine.login_result(False, "UNAVAILABLE", _TEMPORARY)
            else:
                engine.complete(tag, "NO", str(error), ResponseCode.simple(error.imap_code))
            return
        if failure.check(StrataError):
            self.log.warn("IMAP {tag} failed: {error}", tag=tag, error=failure.value)
        else:
            self.log.failure("IMAP command {tag} failed", failure, tag=tag)
        if login:
            engine.login_result(False, "UNAVAILABLE", _TEMPORARY)
        else:
            engine.complete(tag, "NO", _TEMPORARY, ResponseCode.simple("UNAVAILABLE"))

    def _done(self, result: object) -> None:
        if isinstance(result, Failure):  # answering the failure failed too: our bug
            self.log.failure("IMAP answer failed", result)
        self._busy = False
        self._resume()
        if self._gone:
            return
        self._arm_timer()
        self._process()
        if self._idling:
            if self._woken:
                self._woken = False
                self._idle_check()
            else:
                self._schedule_idle_poll()

    # -- LOGIN and AUTHENTICATE ------------------------------------------------------------------

    async def _login(self, event: LoginRequest) -> None:
        engine = self.engine
        assert engine is not None
        factory = self.factory
        # The engine took an ID x-originating-ip only from a trusted client, before login.
        result = await factory.authenticator.login(
            self.client, event.user, event.password, forwarded=event.origin
        )
        if result.refusal == "failed":
            # RFC 5530: one answer for an unknown user and a wrong password.
            engine.login_result(False, "AUTHENTICATIONFAILED", result.text)
            return
        if result.address is None:  # the portal is closed: the password was right
            engine.login_result(False, "UNAVAILABLE", result.text)
            return
        session = await MailboxSession.open(result.address, factory.shared, self.wake)
        if self._gone:
            session.ended()
            return
        self.session = session
        self.log.info(
            "IMAP login {user} from {where}{after}",
            user=result.address, client=self.client, origin=event.origin,
            where=where(self.client, event.origin), after=delay_note(result.waited),
        )  # fmt: skip
        engine.login_result(True)

    # -- mailbox work: the session's ---------------------------------------------------------------

    async def _select(self, session: MailboxSession, event: SelectMailbox) -> None:
        assert self.engine is not None
        selected = await session.select(event.mailbox, read_only=event.read_only)
        self.engine.select_result(selected)

    async def _command(self, session: MailboxSession, event: BackendCommand) -> None:
        assert self.engine is not None
        done = await session.command(event.command, self)
        self._complete(event.command.tag, done)

    async def _append_end(self, session: MailboxSession, event: AppendEnd) -> None:
        done = await session.append_end(self)
        self._complete(event.tag, done)

    def _complete(self, tag: str, done: Done) -> None:
        assert self.engine is not None
        self.engine.complete(tag, "OK", done.text, done.code)

    # -- IDLE ------------------------------------------------------------------------------------

    def _idle_check(self) -> None:
        """While idling, look for updates now (or as soon as the session is free)."""
        self._stop_idle_poll()
        if not self._idling or self._gone or self.selected is None:
            return
        if self._busy:
            return  # _done schedules the next look
        self._start(self._idle_sync(), "*")

    async def _idle_sync(self) -> None:
        session = self.session
        assert session is not None
        try:
            await session.sync(self)
        except MailboxGone:
            raise
        except StrataError as e:  # the store is unwell: nothing to tell; the next poll looks again
            self.log.warn("IMAP IDLE update for {client} failed: {error}", client=self.client,
                          error=e)  # fmt: skip

    def _schedule_idle_poll(self) -> None:
        if self._idle_poll is None and self.selected is not None and not self._gone:
            self._idle_poll = self.factory.clock.callLater(
                self.factory.idle_poll_interval, self._poll_idle
            )

    def _poll_idle(self) -> None:
        self._idle_poll = None
        self._idle_check()

    def _stop_idle_poll(self) -> None:
        if self._idle_poll is not None and self._idle_poll.active():
            self._idle_poll.cancel()
        self._idle_poll = None

    def wake(self) -> None:
        """Another session changed our selected mailbox: report it now if we are idling."""
        if self._idling:
            if self._busy:
                self._woken = True
            else:
                self._idle_check()

    # -- STARTTLS --------------------------------------------------------------------------------

    def _start_tls(self) -> None:
        assert self.engine is not None and self.factory.tls is not None
        self._flush()
        ITLSTransport(self._transport).startTLS(self.factory.tls)
        self.engine.tls_started()

    # -- plumbing --------------------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused and not self._gone:
            self._paused = True
            self._transport.pauseProducing()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if not self._gone:
                self._transport.resumeProducing()

    def _arm_timer(self) -> None:
        assert self.engine is not None
        self._deadline.arm(self.engine.idle_timeout)

    def _timed_out(self) -> None:
        if self.engine is None or self._gone:
            return
        if self._busy:  # our own work in flight: it answers, then the timer starts again
            return
        self.log.info("IMAP autologout of {client}", client=self.client)
        self.engine.timeout()
        self._flush()
        self._close()


# -- the factory ----------------------------------------------------------------------------------


class IMAPFactory(CountingFactory):
    """
    Builds IMAP sessions; owns the password-verification pool and the verification cache.

    ``trusted_networks``: CIDR networks (besides loopback) where plaintext login is allowed
    without TLS (a Roundcube container's network).  ``portal(domain)``: None when the domain's
    portal is open, else the sentence a closed portal shows.  ``executor``: where passwords are
    verified and messages indexed (default: a L{PoolExecutor} on ``clock``, which must then be a
    reactor); call L{start} and L{stop} around the listener's life.  ``implicit_tls``: the
    listener is TLS already (port 993).  ``share_with``: the other listener's factory, whose
    sessions' shared state (caches, who to wake) and connection limits this one uses too.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        mailboxes: IMailboxStore,
        credentials: ICredentialStore,
        messages: IMessageStore,
        tls: ssl.CertificateOptions | None,
        *,
        trusted_networks: Iterable[str] = (),
        portal: PortalCheck = lambda domain: None,
        limits: ServerLimits | None = None,
        executor: Executor | None = None,
        cache: VerificationCache | None = None,
        implicit_tls: bool = False,
        connections: ConnectionLimits | None = None,
        throttle: LoginThrottle | None = None,
        idle_poll_interval: float = 2.0,
        share_with: IMAPFactory | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        if connections is None:
            connections = (
                share_with.connections if share_with is not None else ConnectionLimits(1000, 50)
            )
        super().__init__(connections)
        if share_with is not None:
            self._protocols = share_with._protocols  # one count of open connections for both
        self.clock = clock
        self.mailboxes = mailboxes
        self.credentials = credentials
        self.tls = tls
        self.limits = limits if limits is not None else ServerLimits()
        if authenticator is None:
            if executor is None:
                if not IReactorThreads.providedBy(clock):
                    raise TypeError(
                        "without an executor, clock must be a reactor (IReactorThreads)"
                    )
                executor = PoolExecutor(clock)
            authenticator = Authenticator(
                clock, credentials, executor, portal, cache=cache, throttle=throttle,
                trusted_networks=networks(trusted_networks),
            )  # fmt: skip
        self.authenticator = authenticator
        self.executor: Executor = authenticator.executor
        self.implicit_tls = implicit_tls
        # IDLE looks for changes made elsewhere (intake, another process) this often; changes
        # made by these sessions wake idlers at once (L{SharedState.changed}).
        self.idle_poll_interval = idle_poll_interval
        self.shared: SharedState = (
            share_with.shared
            if share_with is not None
            else SharedState(clock, mailboxes, messages, self.executor)
        )

    def start(self) -> None:
        self.executor.start()

    def stop(self) -> None:
        self.executor.stop()

    def is_trusted(self, host: str) -> bool:
        return self.authenticator.is_trusted(host)

    @property
    def throttle(self) -> LoginThrottle:
        return self.authenticator.throttle

    @throttle.setter
    def throttle(self, throttle: LoginThrottle) -> None:
        self.authenticator.throttle = throttle

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        # RFC 3501 §7.1.5: BYE may be the greeting, when the server will not serve.
        return self.admit(
            addr,
            lambda: IMAPProtocol(self, tls_active=self.implicit_tls),
            lambda why: f"* BYE {why[0].upper()}{why[1:]}\r\n".encode(),
        )

    def mailbox_changed(self, user: str, mailbox: str) -> None:
        """Mail arrived in ``mailbox`` of ``user`` (intake): wake the sessions idling on it."""
        self.shared.changed(user, mailbox)
