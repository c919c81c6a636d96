# -*- test-case-name: tests.test_core_alert_email -*-
"""
Outage alerts by email (issue 5, point 5), sent through Strata's own outbound path.

An alert is a short plain-text message to the domain's ``alert_email``: which domain, since
when, why, and how much mail is queued (at the end: how long the outage lasted, how much was
received during it and how much of that is delivered).  It is written like a DSN, as a message
Strata originates (L{store_generated}): committed durably, routed like submission (an address in
a protected domain goes to its primary's queue and, in mode ``both``, its shadow INBOX; any other
to the outbound queue), then the relay is asked to deliver it at once.  From is
``[alerts] sender`` (the MSP's own address, white-label) or ``Strata <postmaster@HOSTNAME>``.

A domain whose customer is a reseller's gets the reseller's brand (#14): the subject and the
text name its product instead of Strata, the message ends with a signature naming the product
and its support contact, and with a support email set, the message comes from
``"<product>" <support email>``, which is the envelope sender too, so that bounces reach the
reseller.  Without a brand the alert is as it always was.

Each alert sent is recorded in the event log (``alert.email``).  Throttling (one per kind per
domain per window) is the wrapper's job (L{strata_twisted.core.alerts.ThrottledAlertSender}).
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from strata_twisted.clock import SecondsClock
from strata_twisted.core.alerts import IAlertSender, format_duration, format_time
from strata_twisted.core.branding import reseller_of_customer
from strata_twisted.core.intake import new_queue_id, store_generated
from strata_twisted.core.routes import route_domain
from strata_twisted.interfaces import IEventStore, IMessageStore, IQueueStore, ITenantStore
from strata_twisted.model import (
    Branding,
    Delivery,
    Domain,
    Outage,
    display_domain,
    recipient_domain,
)

# Where the product's name goes in an alert's subject and text; replaced when it is sent, once
# the domain's brand is known.  (Not str.format: an outage's reason is free text.)
_PRODUCT = "\x00product\x00"


class DomainLookup(Protocol):
    """The protected domains by name (the service's domain cache, or a dict in the CLI)."""

    def get(self, name: str, /) -> Domain | None: ...


def alert_routes(domains: DomainLookup, recipient: str) -> tuple[Delivery, ...]:
    """Where a message Strata writes to ``recipient`` goes (the submission routing rules)."""
    domain = recipient_domain(recipient)
    protected = None if domain is None else domains.get(domain)
    if protected is not None and domain is not None:
        return (Delivery(recipient, domain, shadow=protected.mode == "both"),)
    return (Delivery(recipient, route_domain(recipient), outbound=True),)


@implementer(IAlertSender)
class EmailAlertSender:
    """Queues an alert email to each domain's ``alert_email``; domains without one get none."""

    log = Logger()

    def __init__(
        self,
        clock: SecondsClock,
        messages: IMessageStore,
        queue: IQueueStore,
        events: IEventStore,
        domains: DomainLookup,
        hostname: str,
        sender: str = "",
        deliver_now: Callable[[str], object] | None = None,
        tenants: ITenantStore | None = None,
    ) -> None:
        """``sender``: the From: field; ``deliver_now(domain)`` asks the relay to deliver;
        ``tenants``: where a domain's reseller and its brand are found (None: never branded)."""
        self._clock = clock
        self._messages = messages
        self._queue = queue
        self._events = events
        self._domains = domains
        self._hostname = hostname
        self._sender = sender or f"Strata <postmaster@{hostname}>"
        self._deliver_now = deliver_now
        self._tenants = tenants

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        name = display_domain(domain.name)
        since = format_time(outage.started_at)
        subject = f"[{_PRODUCT}] {name}: primary mail server DOWN since {since}"
        text = (
            f"The primary mail server of {name} ({domain.relay}) stopped answering.\n\n"
            f"Down since:      {since}\n"
            f"Reason:          {outage.reason}\n"
            f"Queued for it:   {queued} message(s)\n\n"
            f"{_PRODUCT} is accepting the domain's mail and keeps it until the primary is back; "
            "users can read and send mail in the webmail meanwhile.  Nothing is lost.\n"
        )
        return self._alert(domain, "outage.started", subject, text)

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ended(domain, outage, queued))

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        name = display_domain(domain.name)
        since = format_time(oldest_received_at)
        age = format_duration(self._clock.seconds() - oldest_received_at)
        subject = f"[{_PRODUCT}] {name}: mail queued since {since} is not delivered yet"
        text = (
            f"Mail for {name} has been waiting in {_PRODUCT}'s queue for {age}.\n\n"
            f"Oldest message:  {since}\n"
            f"Queued:          {queued} message(s)\n"
            f"Primary:         {domain.relay}\n\n"
            "The mail is safe and is retried; check that the primary mail server accepts it "
            "(`strata queue list`, `strata events`).\n"
        )
        return self._alert(domain, "queue.stale", subject, text)

    def _alert(self, domain: Domain, kind: str, subject: str, text: str) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._send(domain, kind, subject, text))
        return d.addCallback(lambda _: None)

    async def _ended(self, domain: Domain, outage: Outage, queued: int) -> None:
        name = display_domain(domain.name)
        ended = outage.ended_at if outage.ended_at is not None else self._clock.seconds()
        try:
            received, delivered = await self._queue.received_since(domain.name, outage.started_at)
        except Exception:
            self.log.failure("cannot count the outage's mail for {domain}", domain=domain.name)
            received = delivered = -1
        counts = (
            f"Received during the outage: {received} message(s), {delivered} delivered so far\n"
            if received >= 0
            else ""
        )
        subject = f"[{_PRODUCT}] {name}: primary mail server UP again at {format_time(ended)}"
        text = (
            f"The primary mail server of {name} ({domain.relay}) answers again.\n\n"
            f"Down since:      {format_time(outage.started_at)}\n"
            f"Up again at:     {format_time(ended)}\n"
            f"Outage lasted:   {format_duration(outage.duration or ended - outage.started_at)}\n"
            f"{counts}"
            f"Being delivered: {queued} queued message(s)\n\n"
            f"{_PRODUCT} is delivering the queued mail to the primary now, in the order it "
            "arrived.\n"
        )
        await self._send(domain, "outage.ended", subject, text)

    def test_alert(self, domain: Domain) -> Deferred[str | None]:
        """A test email (``strata alert test``) that says plainly that nothing is wrong; fires
        with the queue domain it was queued for (None when the domain has no alert address)."""
        name = display_domain(domain.name)
        subject = f"[{_PRODUCT}] {name}: test alert (nothing is wrong)"
        text = (
            f"This is a test of the outage alerts of {name}, sent with 'strata alert test'.\n"
            "Alerts reach you; nothing is wrong.\n"
        )
        return Deferred.fromCoroutine(self._send(domain, "alert.test", subject, text))

    async def _send(self, domain: Domain, kind: str, subject: str, text: str) -> str | None:
        """Queue one alert; the queue domain of its recipient, or None when there is none."""
        recipients = domain.alert_emails
        if not recipients:
            return None
        recipient = ", ".join(recipients)
        brand = await self._brand(domain)
        product = brand.product_name if brand is not None and brand.product_name else "Strata"
        subject = subject.replace(_PRODUCT, product)
        text = text.replace(_PRODUCT, product) + _signature(brand, product)
        sender = self._sender
        if brand is not None and brand.support_email:
            sender = formataddr((product, brand.support_email))
        now = self._clock.seconds()
        queue_id = new_queue_id(self._clock)
        message = EmailMessage()
        message["From"] = sender
        message["To"] = recipient
        message["Subject"] = subject
        message["Date"] = formatdate(now)
        message["Message-ID"] = f"<{queue_id}@{self._hostname}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
        message["X-Strata-Alert"] = f"{kind}; domain={domain.name}"
        message.set_content(text)
        # Lines up to 200 octets: the subject stays on one line (RFC 5322 allows 998).
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n", max_line_length=200))
        deliveries = tuple(d for r in recipients for d in alert_routes(self._domains, r))
        await store_generated(
            messages=self._messages, clock=self._clock, hostname=self._hostname,
            queue_id=queue_id, data=data, sender=_envelope_sender(sender, self._hostname),
            deliveries=deliveries,
        )  # fmt: skip
        await self._events.record_event(
            "alert.email",
            f"{kind} alert for {display_domain(domain.name)} queued to "
            f"{', '.join(f'<{r}>' for r in recipients)} as {queue_id}",
            domain.name,
            {"kind": kind, "to": recipient, "queue_id": queue_id},
        )
        if self._deliver_now is not None:
            for delivery in deliveries:
                try:
                    self._deliver_now(delivery.domain)
                except Exception:
                    self.log.failure("cannot start delivering an alert")
        return deliveries[0].domain

    async def _brand(self, domain: Domain) -> Branding | None:
        """The brand of ``domain``'s reseller when it has a product name or a support email;
        None otherwise, and when it cannot be read (an alert goes out unbranded rather than
        not at all)."""
        if self._tenants is None or not domain.customer:
            return None
        try:
            reseller = await reseller_of_customer(self._tenants, domain.customer)
        except Exception:
            self.log.failure("cannot read the brand for {domain}'s alert", domain=domain.name)
            return None
        if reseller is None:
            return None
        brand = reseller.branding
        return brand if brand.product_name or brand.support_email else None


def _signature(brand: Branding | None, product: str) -> str:
    """The branded alert's signature (RFC 3676 §4.3's "-- " separator): the product and where
    its support is; nothing without a brand."""
    if brand is None:
        return ""
    lines = ["", "-- ", product]
    if brand.support_email:
        lines.append(f"Support: {brand.support_email}")
    if brand.support_url:
        lines.append(brand.support_url)
    return "\n".join(lines) + "\n"


def _envelope_sender(sender: str, hostname: str) -> str:
    """The envelope sender for alerts: the From: address, so a bounce reaches its owner."""
    _, address = parseaddr(sender)
    return address if "@" in address else f"postmaster@{hostname}"
