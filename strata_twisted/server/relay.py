"""
The relay's SMTP client: Twisted connections to a primary, driven by the sans-IO client engine.

L{SMTPRelayConnector} is the L{strata_twisted.core.relay.RelayConnector} the service uses.  Each
connection is one SMTP session: the engine decides what to send (EHLO, STARTTLS per the domain's
policy, pipelined MAIL/RCPT/DATA, byte-exact dot-stuffing); this adapter moves bytes, streams
bodies from the message store in ranges (never a whole large body in memory), starts TLS when the
engine asks, and enforces the engine's RFC 5321 §4.5.3.2 timeouts on the injected clock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.internet import endpoints, ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from strata_twisted.core.relay import RecipientReply, RelayedMessage
from strata_twisted.interfaces import IMessageStore
from strata_twisted.model import Domain, RelayTarget
from strata_twisted.proto.smtp_client import (
    NEED_DATA,
    ClientConfig,
    Closed,
    DataReady,
    Ready,
    SessionFailed,
    SMTPClientEngine,
    StartTLSNeeded,
    State,
    TLSUnavailable,
    TransactionResult,
)
from strata_twisted.proto.smtp_reply import Reply
from strata_twisted.server._transport import Deadline, set_no_delay

if TYPE_CHECKING:
    # Public through optionsForClientTLS's signature, but defined only in the private module.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

BODY_CHUNK = 256 * 1024


class RelayConnectError(Exception):
    """No SMTP session could be had with the primary (refused, timed out, bad greeting, TLS)."""


class TLSFailed(RelayConnectError):
    """The session ended during the TLS handshake or the EHLO after it (or the certificate did
    not verify)."""


def _reply_text(reply: Reply) -> str:
    """The last line of a reply, as the relay records it ("250 2.0.0 Ok: queued as X")."""
    return reply.to_bytes().rstrip(b"\r\n").split(b"\r\n")[-1].decode("ascii", "replace")


def client_tls_options(
    domain: Domain, trust_root: IOpenSSLTrustRoot | None = None
) -> IOpenSSLClientConnectionCreator | ssl.CertificateOptions:
    """
    TLS towards a primary.  ``verify`` checks the certificate chain (to ``trust_root``, or the
    system's trust store) and that it names the relay host, a DNS name or an IP address
    (service-identity, via optionsForClientTLS); the other policies encrypt without
    authenticating, as Postfix's ``may``/``encrypt`` levels do.
    """
    if domain.tls_policy == "verify":
        return ssl.optionsForClientTLS(domain.relay.host, trust_root)
    return ssl.CertificateOptions()


@implementer(IPushProducer)
class _RelayClient(Protocol):
    """
    One SMTP session with a primary.  Implements ``RelayConnection``.

    It is also the producer of what it writes (a streaming producer registered with its
    transport): when the primary reads slower than we read the store, the transport pauses us
    and a large body waits in the store, not in memory.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        messages: IMessageStore,
        domain: Domain,
        helo_name: str,
        trust_root: IOpenSSLTrustRoot | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self._clock = clock
        self._trust_root = trust_root
        self._tls_requested = False
        # Bytes arrived after STARTTLS: the handshake worked, and a session that ends later
        # (an AUTH refused, say) did not fail on TLS.
        self._tls_working = False
        self._messages = messages
        self._domain = domain
        self.remote = str(domain.relay)
        self.engine = SMTPClientEngine(ClientConfig(helo_name, tls=domain.tls_policy, auth=auth))
        self.ready: Deferred[_RelayClient] = Deferred()
        self._first_ready = True
        self._sending: tuple[RelayedMessage, Deferred[list[RecipientReply]]] | None = None
        self._closed: Deferred[None] = Deferred()
        self._deadline = Deadline(clock, self._timed_out)
        self._failure_reason = ""
        self._gone = False
        self._send_when_ready = False
        # Set while the transport's buffer is full (pauseProducing); fires when it drains.
        self._writable: Deferred[None] | None = None
        # Fires when the message being sent may be completed (see RelayConnection.send).
        self._after: Deferred[bool] | None = None

    @property
    def alive(self) -> bool:
        return not self._gone and not self.engine.closed

    # -- RelayConnection -------------------------------------------------------------------------

    def send(
        self, message: RelayedMessage, after: Deferred[bool] | None = None
    ) -> Deferred[list[RecipientReply]]:
        if not self.alive:
            return succeed(self._lost(message, "connection closed"))
        d: Deferred[list[RecipientReply]] = Deferred()
        self._sending = (message, d)
        self._after = after
        if self.engine.state is not State.READY:
            # The engine is still finishing the last transaction (e.g. waiting for RSET's
            # reply): start this one on its next Ready event.
            self._send_when_ready = True
            return d
        self._start_transaction()
        return d

    def _start_transaction(self) -> None:
        assert self._sending is not None
        message, d = self._sending
        self._send_when_ready = False
        stored = message.message
        try:
            self.engine.send_message(
                stored.envelope.sender,
                [entry.recipient for entry in message.entries],
                message.size,
                body_8bit=stored.envelope.body_8bitmime,
                smtputf8=stored.envelope.smtputf8,
            )
        except ValueError as e:  # an address the engine refuses to put on the wire
            self._sending = None
            reply = f"550 5.1.3 Strata: cannot send this envelope: {e}"
            d.callback([RecipientReply(x.recipient, 550, reply) for x in message.entries])
            return
        self._pump()

    def close(self) -> Deferred[None]:
        if self._gone:
            return succeed(None)
        if not self.engine.closed:
            try:
                self.engine.quit()
            except RuntimeError:
                self.engine.abort("closing")
        self._pump()
        if not self._gone and self.transport is not None:
            # QUIT is on its way; don't wait more than a few seconds for the server's 221 (the
            # deadline aborts and hangs up; connectionLost cancels it).
            self._deadline.arm(5)
        d: Deferred[None] = Deferred()
        self._closed.addBoth(lambda _: d.callback(None))
        return d

    # -- Twisted ---------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]  # IConsumer
        self._arm_timer()

    # -- IPushProducer: the transport's flow control ------------------------------------------

    def pauseProducing(self) -> None:
        if self._writable is None:
            self._writable = Deferred()

    def resumeProducing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None:
            writable.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()  # the connection is going: a waiting stream sees it and stops

    def dataReceived(self, data: bytes) -> None:
        if self._tls_requested:
            self._tls_working = True
        self.engine.receive_data(data)
        self._pump()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        self._cancel_timer()
        self.engine.receive_data(b"")
        self._pump()
        if self._sending is not None:  # the engine had nothing to say: never leave a send hanging
            message, d = self._sending
            self._sending = None
            d.callback(self._lost(message, self._failure_reason or "connection lost"))
        if not self.ready.called:
            why = self._failure_reason or "connection lost"
            if self._tls_requested and not self._tls_working:
                # The handshake, or the EHLO after it, did not complete.
                if reason is not None and not reason.check(ConnectionDone, ConnectionLost):
                    why = reason.getErrorMessage()
                self.ready.errback(TLSFailed(f"TLS failed: {why}"))
            else:
                self.ready.errback(RelayConnectError(why))
        if not self._closed.called:
            self._closed.callback(None)

    # -- the engine ------------------------------------------------------------------------------

    def _pump(self) -> None:
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, Ready):
                if self._first_ready:
                    self._first_ready = False
                    self.ready.callback(self)
                elif self._send_when_ready and self._sending is not None:
                    self._start_transaction()
            elif isinstance(event, StartTLSNeeded):
                assert self.transport is not None
                self._write()
                self._tls_requested = True
                options = client_tls_options(self._domain, self._trust_root)
                self.transport.startTLS(options)  # type: ignore[attr-defined]
                # Twisted holds what we write until the handshake is done; a failed handshake
                # (or a certificate that does not verify) ends the connection.
                self.engine.tls_started()
            elif isinstance(event, DataReady):
                self._stream_body()
            elif isinstance(event, TransactionResult):
                self._finish(event)
            elif isinstance(event, TLSUnavailable):
                self._failure_reason = f"TLS required but unavailable: {_reply_text(event.reply)}"
            elif isinstance(event, SessionFailed):
                reply = _reply_text(event.reply) if event.reply is not None else ""
                self._failure_reason = f"{event.reason} {reply}".strip()
            elif isinstance(event, Closed):
                pass
        self._write()
        if self.engine.closed:
            self._hang_up()
        else:
            self._arm_timer()

    def _finish(self, result: TransactionResult) -> None:
        if self._sending is None:
            return
        message, d = self._sending
        self._sending = None
        by_recipient = {r.recipient: r for r in result.recipients}
        replies = []
        for entry in message.entries:
            r = by_recipient.get(entry.recipient)
            if r is None:
                replies.append(RecipientReply(entry.recipient, 451, "451 4.4.2 Strata: no reply"))
            else:
                replies.append(RecipientReply(entry.recipient, r.reply.code, _reply_text(r.reply)))
        d.callback(replies)

    def _stream_body(self) -> None:
        assert self._sending is not None
        relayed = self._sending[0]
        after, self._after = self._after, None
        d = Deferred.fromCoroutine(self._stream(relayed, after))
        d.addErrback(self._stream_failed)

    async def _stream(self, relayed: RelayedMessage, after: Deferred[bool] | None) -> None:
        message = relayed.message
        if relayed.prefix or relayed.head:
            self.engine.body_chunk(relayed.prefix + relayed.head)
            self._write()
        offset = len(relayed.head)
        while offset < message.size:
            if self._writable is not None:
                await self._writable  # the primary has not taken what we wrote yet
                if not self.alive:
                    return
            chunk = await self._messages.read_body_range(message.id, offset, BODY_CHUNK)
            if not self.alive:
                return
            if not chunk:
                raise OSError(f"the body of {message.id} ends at {offset} of {message.size} bytes")
            self.engine.body_chunk(chunk)
            self._write()
            self._arm_timer()
            offset += len(chunk)
        if after is not None:
            # The content is out, but the message is not complete without its final ".": that
            # waits for the previous message's results (usually recorded by now).  A server
            # discards a message whose connection ends before the "." (RFC 5321 §3.8).
            recorded = await after
            if not self.alive or self._sending is None or self._sending[0] is not relayed:
                return
            if not recorded:
                self.engine.abort("the results of the previous message could not be recorded")
                self._pump()
                return
        self.engine.end_body()
        self._pump()

    def _stream_failed(self, failure: Failure) -> None:
        self.log.failure("reading a body for the relay failed", failure)
        if self.alive:
            self.engine.abort(f"cannot read the message body: {failure.getErrorMessage()}")
            self._pump()

    # -- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _lost(message: RelayedMessage, why: str) -> list[RecipientReply]:
        reply = f"451 4.4.2 Strata: {why}"
        return [RecipientReply(entry.recipient, 451, reply) for entry in message.entries]

    def _write(self) -> None:
        out = self.engine.data_to_send()
        if out and not self._gone and self.transport is not None:
            self.transport.write(out)

    def _hang_up(self) -> None:
        self._cancel_timer()
        if not self._gone and self.transport is not None:
            self.transport.loseConnection()

    def _arm_timer(self) -> None:
        limit = self.engine.timeout_for_state()
        if limit > 0:
            self._deadline.arm(limit)

    def _cancel_timer(self) -> None:
        self._deadline.cancel()

    def _timed_out(self) -> None:
        self._failure_reason = f"timeout in state {self.engine.state.name}"
        self.engine.abort(self._failure_reason)
        self._pump()


class SMTPRelayConnector:
    """Opens SMTP sessions with primaries (implements ``RelayConnector``)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        messages: IMessageStore,
        helo_name: str,
        connect_timeout: float,
        trust_root: IOpenSSLTrustRoot | None = None,
        smarthost: RelayTarget | None = None,
        smarthost_auth: tuple[str, str] | None = None,
    ) -> None:
        """
        ``trust_root``: the CAs the ``verify`` policy trusts (None: the system's).
        ``smarthost_auth``: the (user, password) sessions with ``smarthost`` log in with
        (AUTH, only once TLS is up).
        """
        self._reactor = reactor
        self._messages = messages
        self._helo_name = helo_name
        self._connect_timeout = connect_timeout
        self._trust_root = trust_root
        self._smarthost = smarthost
        self._smarthost_auth = smarthost_auth

    def connect(self, domain: Domain) -> Deferred[Any]:
        """
        A session with ``domain``'s relay host.  Under the ``opportunistic`` policy a TLS
        handshake that fails (or a session that ends right after it) is not the end: the
        connection is made again without STARTTLS, as opportunistic TLS means "encrypt when
        you can" (KumoMTA's opportunistic_tls_reconnect_on_failed_handshake; Postfix would
        defer the message and leave the queue stuck on a broken TLS stack).
        """
        d = self._connect(domain)
        if domain.tls_policy == "opportunistic":
            d.addErrback(self._without_tls, domain)
        return d

    def _without_tls(self, failure: Failure, domain: Domain) -> Deferred[Any]:
        failure.trap(TLSFailed)
        self.log.warn("{relay}: {why}; opportunistic TLS, so connecting again without it",
                      relay=str(domain.relay), why=failure.getErrorMessage())  # fmt: skip
        return self._connect(replace(domain, tls_policy="none"))

    def _connect(self, domain: Domain) -> Deferred[Any]:
        auth = self._smarthost_auth if domain.relay == self._smarthost else None
        client = _RelayClient(
            self._reactor, self._messages, domain, self._helo_name, self._trust_root, auth
        )
        endpoint = endpoints.HostnameEndpoint(
            self._reactor, domain.relay.host, domain.relay.port, timeout=self._connect_timeout
        )
        connecting = endpoint.connect(Factory.forProtocol(lambda: client))

        def connected(_: object) -> Deferred[_RelayClient]:
            return client.ready

        def failed(failure: Failure) -> Failure:
            if failure.check(RelayConnectError):
                return failure
            return Failure(RelayConnectError(failure.getErrorMessage()))

        d = connecting.addCallback(connected)
        d.addErrback(failed)
        return d
