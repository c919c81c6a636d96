"""
The SMTP listeners, intake (25) and submission (587, 465): Twisted transports wired to the
sans-IO engine and a policy.

This module is a thin adapter (CONVENTIONS §1).  ``dataReceived`` feeds the engine; each event the
engine yields goes to the policy (L{IntakePolicy}, or its submission rules
L{strata_twisted.core.submission.SubmissionPolicy}); replies go back through the engine, so
pipelined commands are answered strictly in order even while a commit or a password check is in
flight.  It also owns what only a transport can do: timeouts (idle, and a longer one while DATA
streams), back-pressure while the store is writing, STARTTLS, and connection limits per client
address.  With an L{Authenticator} (submission) the engine offers AUTH, over TLS only unless the
client is on loopback or a trusted network, and refuses MAIL before it.  Those trusted clients
(the webmail) are also offered XCLIENT ADDR: the end user's address goes with the login, so
that the throttle slows the guesser behind the webmail and not the webmail (issue 11).  It
stays for the connection, across STARTTLS (Roundcube sends XCLIENT before STARTTLS).

Every refusal of mail (a sender, a recipient or a message, by the policy or the engine's limits)
is logged as one line with the client's address, the reply and the reason: info for a permanent
refusal (relay denied, unknown user, too big), warn for a temporary one (our own trouble).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime, ITLSTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from strata_twisted.config import IntakeSettings
from strata_twisted.core.intake import IntakePolicy, IntakeTransaction, Recipients, SessionInfo
from strata_twisted.core.login import (
    Authenticator,
    LoginResult,
    delay_note,
    is_trusted,
    networks,
    where,
)
from strata_twisted.errors import MailError
from strata_twisted.model import StoredMessage
from strata_twisted.proto.smtp_reply import Reply
from strata_twisted.proto.smtp_server import (
    AUTH_MECHANISMS,
    NEED_DATA,
    Auth,
    DataAborted,
    DataChunk,
    DataEnd,
    DataStart,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    Refused,
    Reset,
    ServerLimits,
    SMTPServerEngine,
    StartTLS,
    XClient,
)
from strata_twisted.server._transport import ConnectionLimits, CountingFactory, EngineProtocol


class SMTPIntakeProtocol(EngineProtocol):
    """One SMTP intake session."""

    log = Logger()

    def __init__(self, factory: SMTPIntakeFactory) -> None:
        super().__init__(factory.clock)
        self.factory = factory
        self.engine: SMTPServerEngine | None = None
        self.session = SessionInfo(client_address="")
        self._sender = ""
        self._body_8bit = False
        self._smtputf8 = False
        self._recipients = Recipients()
        self._transaction: IntakeTransaction | None = None
        self._committing = False
        self._pause_reasons: set[str] = set()
        self._in_process = False
        self._authenticating = False
        self._forwarded: str | None = None  # XCLIENT ADDR from a trusted client

    # -- Twisted --------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        client = self._peer()
        self.session = SessionInfo(client_address=client, tls=factory.implicit_tls)
        authenticator = factory.authenticator
        trusted = is_trusted(client, factory.trusted_networks)
        self.engine = SMTPServerEngine(
            factory.hostname,
            factory.limits,
            tls_available=factory.tls is not None and not factory.implicit_tls,
            tls_active=factory.implicit_tls,
            auth_mechanisms=AUTH_MECHANISMS if authenticator is not None else (),
            auth_plaintext=trusted,
            auth_required=authenticator is not None,
            xclient=authenticator is not None and trusted,
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
        self._cancel_timer()
        if self._transaction is not None and not self._committing:
            self._transaction.abort()
            self._transaction = None
        self.factory.connection_closed(self)

    # -- engine events ---------------------------------------------------------------------------

    def _process(self) -> None:
        engine = self.engine
        assert engine is not None
        self._in_process = True
        try:
            self._dispatch(engine)
        finally:
            self._in_process = False
        self._flush()
        if engine.closed and not self._committing:
            self._close()

    def _dispatch(self, engine: SMTPServerEngine) -> None:
        while not self._committing and not self._authenticating and not self._gone:
            event = engine.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, DataChunk):
                self._feed(event.data)
            elif isinstance(event, Hello):
                self._drop_transaction()
                self.session.helo = event.name
                self.session.esmtp = event.verb.upper() == "EHLO"
                engine.respond()
            elif isinstance(event, Auth):
                self._auth(event)
            elif isinstance(event, MailFrom):
                self._drop_transaction()
                try:
                    self.factory.policy.check_sender(self.session, event.sender)
                except MailError as e:
                    self._refuse("MAIL", e, sender=event.sender)
                    continue
                self._sender = event.sender
                self._body_8bit = event.body == "8BITMIME"
                self._smtputf8 = event.smtputf8
                engine.respond()
            elif isinstance(event, RcptTo):
                self._rcpt(event.recipient)
            elif isinstance(event, DataStart):
                self._data_start()
            elif isinstance(event, DataEnd):
                self._data_end()
            elif isinstance(event, DataAborted):
                self._log_refusal("DATA", event.reply)
                self._drop_transaction()
            elif isinstance(event, Refused):
                sender = self._sender if event.command == "RCPT" else None
                self._log_refusal(event.command, event.reply,
                                  f"{event.command} {event.argument}", sender=sender)  # fmt: skip
            elif isinstance(event, Reset):
                self._drop_transaction()
            elif isinstance(event, StartTLS):
                self._start_tls()
            elif isinstance(event, Quit):
                self._drop_transaction()
            elif isinstance(event, XClient):
                self._drop_transaction()
                self.session.helo = ""
                self._forwarded = event.address

    def _auth(self, event: Auth) -> None:
        authenticator = self.factory.authenticator
        assert authenticator is not None  # the engine offers AUTH only with one
        self._authenticating = True
        # Nothing more is parsed until the answer (RFC 4954 §4: AUTH is not pipelined).
        self._pause("auth")
        d = Deferred.fromCoroutine(
            authenticator.login(
                self.session.client_address,
                event.username,
                event.password,
                event.authzid,
                forwarded=self._forwarded,
                service="submission",
            )
        )
        d.addCallbacks(self._auth_result, self._auth_failed)
        d.addErrback(lambda f: self.log.failure("answering AUTH failed", f))

    def _auth_result(self, result: LoginResult) -> None:
        if result.address is not None:
            reply = None
            self.session.user = result.address
            client = self.session.client_address
            self.log.info(
                "submission login {user} from {where}{after}",
                user=result.address, client=client, origin=self._forwarded,
                where=where(client, self._forwarded), after=delay_note(result.waited),
            )  # fmt: skip
        elif result.refusal == "failed":
            reply = Reply(535, "5.7.8", "Authentication credentials invalid")
        else:  # a closed portal: the password was right, but this is not the way to send now
            reply = Reply(535, "5.7.0", result.text)
        self._after_auth(reply, result.address)

    def _auth_failed(self, failure: Failure) -> None:
        self.log.failure("checking a password failed", failure)
        self._after_auth(Reply(454, "4.7.0", "Temporary authentication failure"), None)

    def _after_auth(self, reply: Reply | None, user: str | None) -> None:
        self._authenticating = False
        self._resume("auth")
        if self._gone:
            return
        assert self.engine is not None
        self.engine.respond(reply, user=user)
        self._arm_timer()
        if not self._in_process:
            self._process()

    def _rcpt(self, recipient: str) -> None:
        assert self.engine is not None
        try:
            self.factory.policy.add_recipient(self._recipients, recipient)
        except MailError as e:
            self._refuse("RCPT", e, sender=self._sender, recipient=recipient)
            return
        self.engine.respond()

    def _refuse(self, command: str, error: MailError, **envelope: str) -> None:
        """Answer the pending event with the policy's refusal, and log it (L{_log_refusal})."""
        assert self.engine is not None
        reply = Reply.from_error(error)
        self._log_refusal(command, reply, str(error), **envelope)
        self.engine.respond(reply)

    def _log_refusal(
        self, command: str, reply: Reply, reason: str = "", *,
        sender: str | None = None, recipient: str | None = None,
    ) -> None:  # fmt: skip
        """
        Log one refusal in one line: the client, the reply, ``reason`` (what the client is not
        told) and the envelope it is about.  A DATA refusal names the transaction's sender and
        how many recipients it had.  Info for a permanent refusal, warn for a temporary one.
        """
        envelope = []
        nrcpt = None
        if command == "DATA":
            sender, nrcpt = self._sender, len(self._recipients)
            envelope = [f"from=<{sender}>", f"nrcpt={nrcpt}"]
        else:
            if sender is not None:
                envelope.append(f"from=<{sender}>")
            if recipient is not None:
                envelope.append(f"to=<{recipient}>")
        log = self.log.info if reply.code >= 500 else self.log.warn
        log(
            "refused {command} from {client}: {reply}{reason}{envelope}",
            command=command,
            client=self.session.client_address,
            reply=reply.to_bytes().decode("ascii").splitlines()[-1],
            reason=f" ({reason})" if reason else "",
            envelope="; " + " ".join(envelope) if envelope else "",
            code=reply.code,
            sender=sender,
            recipient=recipient,
            nrcpt=nrcpt,
        )

    def _data_start(self) -> None:
        assert self.engine is not None
        try:
            self._transaction = self.factory.policy.begin(
                self.session,
                self._sender,
                self._recipients.addresses,
                body_8bitmime=self._body_8bit,
                smtputf8=self._smtputf8,
            )
        except MailError as e:
            self._refuse("DATA", e)
            return
        except Exception:
            # Our failure: temporary, never a dropped connection or a 5xx (non-negotiable 1).
            self.log.failure("cannot start receiving a message")
            self.engine.respond(Reply(451, "4.3.0", "Error: internal error, try again later"))
            return
        self.engine.respond()
        self._arm_timer()

    def _feed(self, data: bytes) -> None:
        if self._transaction is None:
            return
        d = self._transaction.feed(data)
        if not d.called and "write" not in self._pause_reasons:
            # The store is writing a full buffer to disk: stop reading until it has room.
            self._pause("write")
            d.addBoth(lambda result: self._resume("write", result))

    def _pause(self, reason: str) -> None:
        """Stop reading from the client (back-pressure) until every reason is gone."""
        if not self._pause_reasons and not self._gone:
            self._transport.pauseProducing()
        self._pause_reasons.add(reason)

    def _resume(self, reason: str, result: object = None) -> object:
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and not self._gone:
            self._transport.resumeProducing()
        return result

    def _data_end(self) -> None:
        transaction = self._transaction
        assert self.engine is not None and transaction is not None
        self._committing = True
        # Nothing more is parsed until the commit is answered; don't let the client pile up
        # pipelined bytes in the meantime.
        self._pause("commit")
        d = transaction.finish()
        d.addCallbacks(self._committed, self._commit_failed)
        d.addErrback(lambda f: self.log.failure("replying after commit failed", f))

    def _committed(self, message: StoredMessage) -> None:
        # Counted before the answer lets pipelined commands run: the next MAIL must see it.
        deliveries = self._transaction.deliveries if self._transaction is not None else None
        self.factory.policy.accepted(message, self.session, deliveries)
        self._after_commit(Reply(250, "2.0.0", f"Ok: queued as {message.id}"))
        self.log.info(
            "{id}: from=<{sender}> nrcpt={n} size={size} client={client}",
            id=message.id,
            sender=message.envelope.sender,
            n=len(message.envelope.recipients),
            size=message.size,
            client=self.session.client_address,
        )

    def _commit_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, MailError):
            # Temporary: our own failure (intake never answers 5xx for those).  Permanent: the
            # policy refused the message (submission's From: check).
            reply = Reply.from_error(error)
            self._log_refusal("DATA", reply, str(error) or type(error).__name__)
        else:
            self.log.failure("message not stored", failure)
            reply = Reply(451, "4.3.0", "Error: internal error, try again later")
        self._after_commit(reply)

    def _after_commit(self, reply: Reply) -> None:
        self._committing = False
        self._transaction = None
        self._recipients.clear()
        self._resume("commit")
        if self._gone:
            return
        assert self.engine is not None
        self.engine.respond(reply)
        self._arm_timer()
        if not self._in_process:  # a commit that finished at once is answered by the running loop
            self._process()

    def _drop_transaction(self) -> None:
        """End the transaction: abort a message being stored, forget sender and recipients."""
        if self._transaction is not None:
            self._transaction.abort()
            self._transaction = None
        self._sender = ""
        self._body_8bit = self._smtputf8 = False
        self._recipients.clear()

    def _start_tls(self) -> None:
        assert self.engine is not None and self.factory.tls is not None
        self._flush()
        transport = ITLSTransport(self._transport)
        transport.startTLS(self.factory.tls)
        self.session.tls = True
        # RFC 3207 §4.2: nothing from before TLS counts, an open transaction included (STARTTLS
        # after MAIL is answered 220, as Postfix does, and the client starts again with EHLO).
        self.session.user = None
        self._drop_transaction()
        self.engine.tls_started()

    # -- plumbing --------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        assert self.engine is not None
        limit = (
            self.factory.settings.data_timeout
            if self.engine.in_data
            else (self.factory.settings.idle_timeout)
        )
        self._deadline.arm(limit)

    def _cancel_timer(self) -> None:
        self._deadline.cancel()

    def _timed_out(self) -> None:
        if self._committing or self._authenticating or self.engine is None:
            # A commit or a login check in flight is ours to finish (a login may wait out its
            # throttle delay): it answers, then the timer starts again.
            return
        self.log.info("timeout for {client}", client=self.session.client_address)
        self._drop_transaction()
        self.engine.timeout()
        self._flush()
        self._close()


class SMTPIntakeFactory(CountingFactory):
    """Builds intake sessions and enforces the connection limits."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        policy: IntakePolicy,
        settings: IntakeSettings,
        tls: ssl.CertificateOptions | None,
        *,
        authenticator: Authenticator | None = None,
        implicit_tls: bool = False,
        connections: ConnectionLimits | None = None,
        trusted_networks: Iterable[str] = (),
    ) -> None:
        """
        ``authenticator``: sessions must log in (AUTH) before MAIL: the submission service.
        ``implicit_tls``: the listener is TLS already (465).  ``connections``: limits shared
        with another listener (587 and 465 count together).  ``trusted_networks``: where AUTH
        is offered without TLS, besides loopback (the webmail's network).
        """
        super().__init__(
            connections
            if connections is not None
            else ConnectionLimits(settings.max_connections, settings.max_connections_per_ip)
        )
        self.clock = clock
        self.trusted_networks = networks(trusted_networks)
        self.authenticator = authenticator
        self.implicit_tls = implicit_tls
        self.policy = policy
        self.settings = settings
        self.tls = tls
        self.hostname = policy.hostname
        self.limits = ServerLimits(
            max_message_size=settings.max_message_size,
            max_recipients=settings.max_recipients,
            max_command_line_length=settings.max_command_line_length,
        )

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        # RFC 5321 §3.8: a server may refuse with 421 at connect.
        return self.admit(
            addr,
            lambda: SMTPIntakeProtocol(self),
            lambda why: Reply(421, "4.7.0", f"{self.hostname} Error: {why}").to_bytes(),
        )
