"""
Intake policy: which recipients we accept, and how a received message becomes durable.

This is the backup-MX half of Strata.  The rules it must never break (DESIGN decision 2):

- RCPT for a domain we do not protect is refused (``550 5.7.1``): no open relay.
- RFC 5321 §4.5.1: ``postmaster@`` every protected domain is accepted, whatever its user list
  says, and goes to its primary like any mail; ``<Postmaster>`` without a domain (this server's
  own, §4.1.1.3) goes to the operator's address (``[server] postmaster``), and until one is set
  it is kept HELD in the queue (L{POSTMASTER_HOLD}), never dropped, and routed at the next start
  with the key set (L{route_held_postmaster}).
- One recipient appears once per message (L{recipient_key}, Postfix's comparison): a repeated
  RCPT is answered 250 and adds nothing.
- The body streams to the message store while it arrives; no code path holds a whole message.
- One ``Received:`` header is prepended (it is written first, before the body), then body, message
  record, one queue entry per recipient and, in delivery mode ``both``, a shadow copy per recipient
  are committed in one durable step.  Only after that does the caller answer ``250``.
- Any failure of ours surfaces as a temporary L{MailError} (451/452), never 5xx, and leaves nothing
  visible: the store's two-phase writer is aborted.

It knows nothing of sockets: the SMTP server adapter in ``server/`` calls it.
"""

from __future__ import annotations

import email.parser
import email.policy
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from strata_twisted.clock import SecondsClock
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.metrics import NO_METRICS, MetricsRecorder
from strata_twisted.core.routes import route_domain
from strata_twisted.errors import MailError, RelayDenied, StorageError, UnknownUser
from strata_twisted.interfaces import IMessageStore, IMessageWriter, IQueueStore
from strata_twisted.model import (
    HELD,
    POSTMASTER_HOLD,
    QUEUED,
    Delivery,
    Envelope,
    IncomingMessage,
    InvalidUser,
    QueueEntry,
    StoredMessage,
    is_bare_postmaster,
    is_postmaster,
    normalize_user,
    recipient_domain,
    recipient_key,
    split_repeated,
    unique_recipients,
)

# Postfix's queue-id alphabet: digits and consonants, so ids never spell words.
_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"
_HEADER_SCAN_LIMIT = 64 * 1024


def new_queue_id(clock: SecondsClock) -> str:
    """
    A unique, time-ordered queue id: 9 characters of milliseconds since the epoch, then 7 random.
    Sorting ids sorts them by creation time (to the millisecond); the random part keeps them unique.
    """
    millis = int(clock.seconds() * 1000)
    base = len(_ID_ALPHABET)
    head = []
    for _ in range(9):
        millis, digit = divmod(millis, base)
        head.append(_ID_ALPHABET[digit])
    tail = "".join(secrets.choice(_ID_ALPHABET) for _ in range(7))
    return "".join(reversed(head)) + tail


def _clean(text: str, limit: int = 255) -> str:
    """Printable ASCII only, for text we copy from the client into a header."""
    return "".join(c if 32 < ord(c) < 127 else "?" for c in text)[:limit] or "unknown"


def received_header(
    *,
    hostname: str,
    queue_id: str,
    helo: str,
    client_address: str,
    recipients: tuple[str, ...],
    tls: bool,
    smtputf8: bool,
    esmtp: bool,
    when: float,
    authenticated: bool = False,
) -> bytes:
    """
    The ``Received:`` trace header (RFC 5321 §4.4) we prepend at intake, CRLF-terminated.

    The protocol keyword follows RFC 3848 (ESMTP, ESMTPS, UTF8SMTPS, ...).  A single recipient is
    named in a ``for`` clause, as Postfix does; more would leak the recipient list.
    """
    protocol = ("UTF8SMTP" if smtputf8 else "ESMTP" if esmtp else "SMTP") + ("S" if tls else "")
    if authenticated and protocol != "SMTP":
        protocol += "A"  # RFC 3848: ESMTPA, ESMTPSA, UTF8SMTPSA
    date = format_datetime(datetime.fromtimestamp(when, tz=UTC))
    address = f"IPv6:{client_address}" if ":" in client_address else client_address
    lines = [
        f"Received: from {_clean(helo)} ([{address}])",
        f"\tby {_clean(hostname)} (Strata) with {protocol} id {queue_id}",
    ]
    if len(recipients) == 1:
        lines.append(f"\tfor <{_clean(recipients[0], 320)}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def header_message_id(header_bytes: bytes) -> str | None:
    """The Message-ID of a header section, parsed with the stdlib ``email`` package."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    value = parser.parsebytes(header_bytes).get("Message-ID")
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


async def store_generated(
    *,
    messages: IMessageStore,
    clock: SecondsClock,
    hostname: str,
    queue_id: str,
    data: bytes,
    sender: str,
    deliveries: tuple[Delivery, ...],
) -> None:
    """
    Store and queue a message Strata wrote itself (a DSN, an alert) in one durable step, as
    intake does, each recipient once (the first of ``deliveries`` naming it); on failure the
    half-written message is aborted and the store's error raised.
    """
    deliveries = tuple(split_repeated(deliveries, lambda d: d.recipient)[0])
    writer = messages.begin(queue_id)
    try:
        await writer.write(data)
        await writer.commit(
            IncomingMessage(
                envelope=Envelope(
                    sender=sender,
                    recipients=tuple(d.recipient for d in deliveries),
                    client_address="127.0.0.1",
                    client_helo=hostname,
                ),
                received_at=clock.seconds(),
                deliveries=deliveries,
                header_message_id=f"<{queue_id}@{hostname}>",
            )
        )
    except BaseException:
        await writer.abort()
        raise


# What a <Postmaster> entry says while it waits for the operator's address.
POSTMASTER_UNSET = (
    "no operator address for <Postmaster>: set [server] postmaster in the config and restart "
    "Strata, which then delivers this message there"
)


class Recipients:
    """
    The recipients accepted so far in one SMTP transaction, each once (L{recipient_key}): the
    first spelling of each, in the order given.  L{IntakePolicy.add_recipient} fills it.
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._addresses: list[str] = []

    def add(self, recipient: str) -> bool:
        """Add ``recipient``; False when the transaction has it already (nothing added)."""
        key = recipient_key(recipient)
        if key in self._keys:
            return False
        self._keys.add(key)
        self._addresses.append(recipient)
        return True

    def clear(self) -> None:
        self._keys.clear()
        self._addresses.clear()

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(self._addresses)

    def __len__(self) -> int:
        return len(self._addresses)


@dataclass
class SessionInfo:
    """What the intake policy knows about the SMTP session a message arrives on."""

    client_address: str
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    user: str | None = None  # the authenticated user (submission)


class IntakePolicy:
    """The rules for accepting mail for protected domains; makes intake transactions."""

    log = Logger()

    def __init__(
        self,
        clock: SecondsClock,
        domains: DomainCache,
        store: IMessageStore,
        hostname: str,
        on_accepted: Callable[[str], object] | None = None,
        *,
        postmaster: str = "",
        metrics: MetricsRecorder = NO_METRICS,
    ) -> None:
        """``postmaster``: the operator's address, where ``<Postmaster>`` mail goes (a valid
        address, L{canonical_address}); "" holds such mail until one is set.  ``metrics``:
        told each message's result and commit time."""
        self._clock = clock
        self._metrics = metrics
        self._domains = domains
        self._store = store
        self.hostname = hostname
        self._on_accepted = on_accepted
        self.postmaster = postmaster or None
        # Told each user who just got a shadow copy in INBOX (the IMAP server wakes their IDLE
        # sessions at once instead of at their next poll); set by the service.
        self.on_shadow: Callable[[str], object] | None = None

    def accepted(
        self,
        message: StoredMessage,
        session: SessionInfo | None = None,
        deliveries: tuple[Delivery, ...] | None = None,
    ) -> None:
        """
        A message was committed: tell the monitor, once per recipient domain (mail for a domain
        whose primary seems up is a hint that the filter failed over, or that the probe is
        wrong), and L{on_shadow} each user whose INBOX got a copy.  ``deliveries``: the ones
        the message was committed with (its transaction's), so they are not worked out again.
        """
        self.shadowed(self._routes(message, deliveries))
        if self._on_accepted is None:
            return
        for domain in sorted({d for r in message.envelope.recipients
                              if (d := recipient_domain(r)) is not None}):  # fmt: skip
            try:
                self._on_accepted(domain)
            except Exception:
                self.log.failure("intake hint for {domain} failed", domain=domain)

    def _routes(
        self, message: StoredMessage, deliveries: tuple[Delivery, ...] | None
    ) -> tuple[Delivery, ...]:
        if deliveries is not None:
            return deliveries
        return self.deliveries(message.envelope.recipients)

    def shadowed(self, deliveries: tuple[Delivery, ...]) -> None:
        """Tell L{on_shadow} about each user whose shadow INBOX got a copy."""
        if self.on_shadow is None:
            return
        for delivery in deliveries:
            if not delivery.shadow:
                continue
            try:
                self.on_shadow(normalize_user(delivery.recipient))
            except Exception:
                self.log.failure("telling {user}'s sessions of new mail failed",
                                 user=delivery.recipient)  # fmt: skip

    def add_recipient(self, recipients: Recipients, recipient: str) -> None:
        """
        RCPT: raise a L{MailError} unless we accept ``recipient`` (L{check_recipient}), then add
        it to the transaction's ``recipients``, once: a recipient named again is accepted
        (``250``, as Postfix answers) and adds nothing.
        """
        self.check_recipient(recipient)
        recipients.add(recipient)

    def check_recipient(self, recipient: str) -> None:
        """
        Raise a L{MailError} unless we accept mail for ``recipient``: its domain must be protected
        (else 550 5.7.1), and when the domain has a synced user list, the address must be on it
        unless the domain accepts unknown users (else 550 5.1.1).  RFC 5321 §4.5.1: a postmaster,
        ``<Postmaster>`` or ``postmaster@`` a protected domain, is always accepted.
        """
        self.require_loaded()
        if is_bare_postmaster(recipient):
            return
        domain = recipient_domain(recipient)
        protected = None if domain is None else self._domains.get(domain)
        if domain is None or protected is None:
            raise RelayDenied(f"not a protected domain: {recipient!r}")
        if is_postmaster(recipient):
            return
        if not self._known(recipient, domain) and not protected.accept_unknown:
            raise UnknownUser(f"not a user of {domain}: {recipient!r}")

    def _known(self, recipient: str, domain: str) -> bool:
        """Whether ``recipient`` may be a user of ``domain``: on its synced user list, or any
        address when the domain has none."""
        users = self._domains.users(domain)
        if users is None:
            return True
        try:
            return normalize_user(recipient) in users
        except InvalidUser:
            return False

    def require_loaded(self) -> None:
        """451 until the protected domains are known: routing cannot be decided before."""
        if not self._domains.loaded:
            raise MailError(
                "domain list not loaded yet",
                code=451,
                enhanced="4.3.0",
                public_text="Error: server starting, try again later",
            )

    def check_sender(self, session: SessionInfo, sender: str) -> None:
        """Raise a L{MailError} unless ``sender`` may send in this session.  Intake takes any."""

    def deliveries(self, recipients: tuple[str, ...]) -> tuple[Delivery, ...]:
        """Where each accepted recipient's copy goes, one per recipient (L{recipient_key})."""
        return tuple(self.delivery(r) for r in unique_recipients(recipients))

    def delivery(self, recipient: str) -> Delivery:
        """
        Where ``recipient``'s copy goes: the primary's queue, and in delivery mode ``both`` the
        shadow mailbox too.  ``postmaster@`` a domain with a synced user list that lacks it gets
        no shadow copy: nobody can log in as a user that does not exist to read it, and the
        primary has the mail.  ``<Postmaster>``: L{postmaster_delivery}.
        """
        if is_bare_postmaster(recipient):
            return self.postmaster_delivery(recipient)
        domain_name = recipient_domain(recipient) or ""
        domain = self._domains.get(domain_name)
        shadow = domain is not None and domain.mode == "both"
        if shadow and is_postmaster(recipient):
            shadow = self._known(recipient, domain_name)
        return Delivery(recipient, domain_name, shadow=shadow)

    def postmaster_delivery(self, recipient: str = "Postmaster") -> Delivery:
        """
        Where mail for ``<Postmaster>`` goes: to the operator's address (``[server]
        postmaster``), routed like any recipient when it is in a protected domain, else to its
        MX (outbound, as submission sends); with no address set, HELD under L{POSTMASTER_HOLD}
        with a last error that says what to do.
        """
        if self.postmaster is None:
            return Delivery(recipient, POSTMASTER_HOLD, held=POSTMASTER_UNSET)
        operator = self.postmaster
        domain = recipient_domain(operator)
        if domain is not None and self._domains.get(domain) is not None:
            return self.delivery(operator)
        return Delivery(operator, route_domain(operator), outbound=True)

    def header_check(self, session: SessionInfo) -> Callable[[bytes], None] | None:
        """A check of the message's header section, run before the commit (it raises a
        L{MailError} to refuse the message); None: intake takes any header."""
        return None

    def begin(
        self,
        session: SessionInfo,
        sender: str,
        recipients: tuple[str, ...],
        *,
        body_8bitmime: bool,
        smtputf8: bool,
    ) -> IntakeTransaction:
        """Start receiving one message for already-accepted recipients (each once)."""
        recipients = unique_recipients(recipients)
        queue_id = new_queue_id(self._clock)
        envelope = Envelope(
            sender=sender,
            recipients=recipients,
            client_address=session.client_address,
            client_helo=session.helo,
            body_8bitmime=body_8bitmime,
            smtputf8=smtputf8,
        )
        now = self._clock.seconds()
        writer = self._store.begin(queue_id)
        transaction = IntakeTransaction(
            writer, envelope, now, self.deliveries(recipients), self.header_check(session),
            clock=self._clock, metrics=self._metrics,
        )  # fmt: skip
        transaction.feed(
            received_header(
                hostname=self.hostname,
                queue_id=queue_id,
                helo=session.helo,
                client_address=session.client_address,
                recipients=recipients,
                tls=session.tls,
                smtputf8=smtputf8,
                esmtp=session.esmtp,
                when=now,
                authenticated=session.user is not None,
            ),
            header=False,
        )
        return transaction


@dataclass
class IntakeTransaction:
    """
    One message on its way into the store.  ``feed`` the content as it arrives, then ``finish``
    (commit) or ``abort``.
    """

    writer: IMessageWriter
    envelope: Envelope
    received_at: float
    deliveries: tuple[Delivery, ...]
    # Run on the header section before the commit; a MailError it raises refuses the message.
    check_header: Callable[[bytes], None] | None = None
    # Where the commit's duration is read, and told with the message's result.
    clock: SecondsClock | None = None
    metrics: MetricsRecorder = NO_METRICS
    _header: bytearray = field(default_factory=bytearray)
    _header_done: bool = False
    _failure: Failure | None = None
    _finished: bool = False

    log = Logger()

    @property
    def queue_id(self) -> str:
        return str(self.writer.message_id)

    def feed(self, data: bytes, *, header: bool = True) -> Deferred[None]:
        """
        Append content.  The Deferred fires when the store can take more (back-pressure); a
        write failure is remembered and reported by L{finish}.
        """
        if header and not self._header_done:
            self._scan_header(data)
        if self._failure is not None:
            return succeed(None)
        d = self.writer.write(data)
        d.addErrback(self._write_failed)
        return d

    def _scan_header(self, data: bytes) -> None:
        room = _HEADER_SCAN_LIMIT - len(self._header)
        self._header += data[:room]
        end = self._header.find(b"\r\n\r\n")
        if self._header.startswith(b"\r\n"):
            end = 0
        if end >= 0:
            del self._header[end + 4 :]
            self._header_done = True
        elif len(self._header) >= _HEADER_SCAN_LIMIT:
            self._header_done = True

    def _write_failed(self, failure: Failure) -> None:
        if self._failure is None:
            self._failure = failure

    def finish(self) -> Deferred[StoredMessage]:
        """
        Commit the message in one durable step.  Fires with the stored message, or fails with a
        L{MailError} (always temporary for our own failures) after aborting the writer.
        """
        self._finished = True
        if self._failure is not None:
            failure = self._failure
            return self._abort_then(failure)
        if self.check_header is not None:
            try:
                self.check_header(bytes(self._header))
            except MailError as e:
                return self._refuse(e)
        incoming = IncomingMessage(
            envelope=self.envelope,
            received_at=self.received_at,
            deliveries=self.deliveries,
            header_message_id=self._message_id(),
        )
        started = self.clock.seconds() if self.clock is not None else None
        d = self.writer.commit(incoming)
        d.addCallback(self._committed, started)
        d.addErrback(self._abort_then)
        return d

    def _committed(self, message: StoredMessage, started: float | None) -> StoredMessage:
        if self.clock is not None and started is not None:
            self.metrics.commit_finished(self.clock.seconds() - started)
        self.metrics.intake_message("accepted")
        return message

    def _message_id(self) -> str | None:
        try:
            return header_message_id(bytes(self._header))
        except Exception:  # a header we cannot parse is still mail we keep
            self.log.failure("could not parse the header of {id}", id=self.queue_id)
            return None

    def _refuse(self, error: MailError) -> Deferred[StoredMessage]:
        """The policy refuses the message (its header check): abort, then fail with ``error``
        as it is, permanent or not."""
        self.metrics.intake_message("rejected")
        result: Deferred[StoredMessage] = Deferred()
        self.abort().addBoth(lambda _: result.errback(Failure(error)))
        return result

    def _abort_then(self, failure: Failure) -> Deferred[StoredMessage]:
        self.metrics.intake_message("failed")
        error = failure.value
        if not isinstance(error, MailError):
            self.log.failure("storing {id} failed", failure, id=self.queue_id)
            error = StorageError(str(error))
        elif not error.temporary:
            # Our own storage never rejects permanently (non-negotiable 1).
            error = StorageError(str(error))
        result: Deferred[StoredMessage] = Deferred()

        def report(_: object) -> None:
            result.errback(Failure(error))

        self.abort().addBoth(report)
        return result

    def abort(self) -> Deferred[None]:
        """Throw the message away.  Never fails."""
        self._finished = True
        d = self.writer.abort()
        d.addErrback(lambda f: self.log.failure("abort of {id} failed", f, id=self.queue_id))
        return d


_log = Logger()


async def route_held_postmaster(
    queue: IQueueStore, policy: IntakePolicy, at: float
) -> list[QueueEntry]:
    """
    Send the ``<Postmaster>`` mail that waits under L{POSTMASTER_HOLD} (held, or released by an
    admin) to the operator's address now that ``policy`` has one (L{IntakePolicy.postmaster_
    delivery}); return the entries as routed, due at ``at``.  With no address set, nothing
    moves and a warning says how many wait.  The service runs it at startup, once the
    protected domains are known.
    """
    waiting = [e for e in await queue.list_entries(POSTMASTER_HOLD) if e.state in (QUEUED, HELD)]
    if not waiting:
        return []
    if policy.postmaster is None:
        _log.warn("{n} message(s) for <Postmaster> held in the queue: set [server] postmaster "
                  "and restart to have them delivered", n=len(waiting))  # fmt: skip
        return []
    routed = []
    for entry in waiting:
        delivery = policy.postmaster_delivery(entry.recipient)
        note = f"<{entry.recipient}> routed to the operator <{delivery.recipient}>"
        routed.append(await queue.reroute(entry.id, delivery.recipient, delivery.domain,
                                          delivery.outbound, at, note))  # fmt: skip
    _log.info("{n} message(s) for <Postmaster> routed to <{operator}>",
              n=len(routed), operator=policy.postmaster)  # fmt: skip
    return routed
