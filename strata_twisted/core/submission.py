# -*- test-case-name: tests.test_core_submission -*-
"""
Submission policy (issue 5): mail that users send during an outage, from Roundcube or their
own client, on ports 587/465.

It is intake with other rules (L{IntakePolicy} does the durable part, the same for both):

- Only an authenticated user sends (the adapter refuses MAIL before AUTH with ``530 5.7.0``).
- MAIL FROM must be the user's own address, or a send-as alias the admin allowed them
  (``strata user alias add``; L{DomainCache.send_as}), and so must every address in the
  ``From:`` and ``Sender:`` header fields, else ``553 5.7.1`` (no spoofing a colleague, no
  spoofing anybody).  Aliases are read from the cache at each check, so a removed alias is
  refused from the cache's next reload on.
- At most ``max_per_hour`` messages per user per hour, then ``450 4.7.1`` until the oldest leaves
  the window: a stolen password cannot spray spam.  Counted in memory, per process.
- Any recipient with a valid domain or address literal is taken (the sender is known).  A
  recipient in a protected domain is routed like intake mail: the primary's queue, and in
  delivery mode ``both`` the colleague's shadow INBOX at once.  A recipient elsewhere goes to
  the outbound queue (``Delivery.outbound``), which the relay delivers to its domain's MX.
  ``<Postmaster>`` goes to the operator, as at intake; a repeated recipient adds nothing.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from collections.abc import Callable

from strata_twisted.clock import SecondsClock
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import IntakePolicy, SessionInfo
from strata_twisted.core.routes import route_domain
from strata_twisted.core.throttle import SlidingWindow
from strata_twisted.errors import MailError
from strata_twisted.interfaces import IMessageStore
from strata_twisted.model import (
    Delivery,
    InvalidUser,
    StoredMessage,
    is_bare_postmaster,
    normalize_user,
    recipient_domain,
)

DEFAULT_MAX_PER_HOUR = 200

# RFC 5322 §4.5.3 (obs-optional): WSP between a field name and its colon, which the stdlib's
# parser does not take as a field.
_OBSOLETE_COLON = re.compile(r"^(From|Sender)[ \t]+:", re.IGNORECASE | re.MULTILINE)


class AuthenticationRequired(MailError):
    """MAIL before AUTH on the submission port (RFC 4954 §6)."""

    code = 530
    enhanced = "5.7.0"
    public_text = "Authentication required"


class SenderNotOwned(MailError):
    """MAIL FROM, From: or Sender: names an address the user does not own (Postfix's wording)."""

    code = 553
    enhanced = "5.7.1"
    public_text = "Sender address rejected: not owned by user"


class SendingRateExceeded(MailError):
    """The user sent ``max_per_hour`` messages within the last hour."""

    code = 450
    enhanced = "4.7.1"
    public_text = "Error: too many messages sent in the last hour; try again later"


class BadRecipient(MailError):
    code = 501
    enhanced = "5.1.3"
    public_text = "Bad recipient address syntax"


def _owned(address: str, user: str, aliases: frozenset[str]) -> bool:
    """Whether ``address`` is ``user``'s own (canonical) address or one of its ``aliases``."""
    try:
        canonical = normalize_user(address)
    except InvalidUser:
        return False
    return canonical == user or canonical in aliases


def header_addresses(header: bytes) -> dict[str, list[str]]:
    """
    The addresses of the ``From:`` and ``Sender:`` fields of a header section (RFC 5322
    §3.6.2), by lower-case field name, parsed with the stdlib ``email`` package (groups,
    comments, encoded words).  Raw UTF-8 is read as such (RFC 6532), and the obsolete
    ``From :`` form with space before the colon counts too (RFC 5322 §4.5.3).
    """
    text = _OBSOLETE_COLON.sub(r"\1:", header.decode("utf-8", "replace"))
    parsed = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
    out: dict[str, list[str]] = {"from": [], "sender": []}
    for name, value in parsed.items():
        key = name.strip().lower()
        if key in out:
            out[key] += [address for _, address in email.utils.getaddresses([str(value)])]
    return out


def header_senders(header: bytes) -> list[str]:
    """Every address of the ``From:`` and ``Sender:`` fields (L{header_addresses})."""
    fields = header_addresses(header)
    return fields["from"] + fields["sender"]


class SubmissionPolicy(IntakePolicy):
    """The rules of the submission service; makes transactions like intake."""

    def __init__(
        self,
        clock: SecondsClock,
        domains: DomainCache,
        store: IMessageStore,
        hostname: str,
        *,
        max_per_hour: int = DEFAULT_MAX_PER_HOUR,
        deliver_now: Callable[[str], object] | None = None,
        postmaster: str = "",
    ) -> None:
        """``deliver_now(domain)``: asks the relay to deliver outbound mail for ``domain`` at
        once (a user who sends expects the mail to leave now, not at the next relay run).
        ``postmaster``: the operator's address, as for intake."""
        super().__init__(clock, domains, store, hostname, postmaster=postmaster)
        self._sent = SlidingWindow(max(1, max_per_hour), 3600.0)
        self._deliver_now = deliver_now

    def check_sender(self, session: SessionInfo, sender: str) -> None:
        user = session.user
        if user is None:
            raise AuthenticationRequired("MAIL before AUTH")
        if not _owned(sender, user, self._domains.send_as(user)):
            raise SenderNotOwned(f"{user} may not send as <{sender}>")
        if self._sent.exceeded(user, self._clock.seconds()):
            self.log.warn("{user} reached the sending limit", user=user)
            raise SendingRateExceeded(f"{user} reached the sending limit")

    def check_recipient(self, recipient: str) -> None:
        self.require_loaded()  # who is a colleague decides the route
        domain = recipient_domain(recipient)
        if is_bare_postmaster(recipient) or (
            domain is not None and self._domains.get(domain) is not None
        ):
            # A colleague, or the postmaster: the same rules as intake (unknown users of a
            # synced list refused; <Postmaster> goes to the operator).
            super().check_recipient(recipient)
        elif not route_domain(recipient):
            raise BadRecipient(f"no domain to deliver to: {recipient!r}")

    def delivery(self, recipient: str) -> Delivery:
        domain = recipient_domain(recipient)
        if is_bare_postmaster(recipient) or (
            domain is not None and self._domains.get(domain) is not None
        ):
            return super().delivery(recipient)
        return Delivery(recipient, route_domain(recipient), outbound=True)

    def header_check(self, session: SessionInfo) -> Callable[[bytes], None] | None:
        user = session.user

        def check(header: bytes) -> None:
            if user is None:
                raise AuthenticationRequired("DATA before AUTH")
            fields = header_addresses(header)
            if not fields["from"]:
                raise SenderNotOwned("no From: header", public_text="Message has no From: header")
            aliases = self._domains.send_as(user)
            for address in fields["from"] + fields["sender"]:
                if not _owned(address, user, aliases):
                    raise SenderNotOwned(
                        f"{user} may not send as {address!r} (From:/Sender:)",
                        public_text=f"From: address <{address}> not owned by user",
                    )

        return check

    def accepted(
        self,
        message: StoredMessage,
        session: SessionInfo | None = None,
        deliveries: tuple[Delivery, ...] | None = None,
    ) -> None:
        """A message was committed: it counts against the user's hourly limit, colleagues who
        got it in their INBOX hear of it, and its outbound recipients' domains are delivered
        to now."""
        routes = self._routes(message, deliveries)
        self.shadowed(routes)
        if session is not None and session.user is not None:
            self._sent.add(session.user, self._clock.seconds())
        if self._deliver_now is None:
            return
        for domain in sorted({d.domain for d in routes if d.outbound}):
            try:
                self._deliver_now(domain)
            except Exception:
                self.log.failure("cannot start delivering to {domain}", domain=domain)
