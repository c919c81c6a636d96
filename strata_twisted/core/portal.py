"""
The webmail portal: whether the users of a protected domain may log in to IMAP (and so to
Roundcube) right now, and if not, the sentence they are shown.

Each domain has a policy (L{strata_twisted.model.Domain.portal}):

- ``outage`` (the default): open while the domain has an open outage event (the monitor opened
  it, core/monitor.py), and for ``grace`` seconds after it ends, so users can finish what they
  were doing; closed otherwise, with "Your primary mail server is working; …".
- ``always``: always open (a customer who uses Strata's webmail as a standby every day).
- ``off``: never open.
- ``open``: forced open by an admin for a drill (``strata domain update NAME --portal open``),
  until ``--portal outage`` puts it back.

An unknown (unprotected) domain is closed, with the same sentence as ``off``: a closed portal says
nothing about which domains Strata protects.

The rules live in one pure function, L{portal_state}, which the CLI's ``domain show`` uses too.
L{Portal} feeds it on the reactor thread: the policy from the L{DomainCache}, the newest outage
from L{IMonitorStore}.  Roundcube logs in on every web request, so each domain's answer is kept
for at most L{CACHE_TTL} seconds of the injected clock.  This module never reads the wall clock
and never fails a login for its own trouble: a store that cannot answer closes the portal for
that one login with a "try again" sentence, and the next login asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from strata_twisted.core.domains import DomainCache
from strata_twisted.errors import InvalidDomainName
from strata_twisted.interfaces import IMonitorStore
from strata_twisted.model import Domain, Outage, normalize_domain

# How long an outage-policy portal stays open after the outage ends (config: imap.portal_grace).
DEFAULT_GRACE: Final = 24 * 3600.0
# Seconds an answer is kept per domain: Roundcube's login-per-request must not hit the store.
CACHE_TTL: Final = 1.0

PRIMARY_UP_TEXT: Final = "Your primary mail server is working; please use your usual mail app."
NOT_ENABLED_TEXT: Final = "Webmail is not enabled for this domain."
UNAVAILABLE_TEXT: Final = "Webmail is unavailable for a moment; please try again shortly."

# Why a portal is open (outage, grace, always, drill) or closed (the others).
PortalReason = Literal[
    "outage", "grace", "always", "drill", "primary_up", "off", "unprotected", "unavailable"
]

_CLOSED_TEXT: Final[dict[str, str]] = {
    "primary_up": PRIMARY_UP_TEXT,
    "off": NOT_ENABLED_TEXT,
    "unprotected": NOT_ENABLED_TEXT,
    "unavailable": UNAVAILABLE_TEXT,
}


@dataclass(frozen=True)
class PortalState:
    """
    Whether a domain's portal is open, and why.  ``since``: when the open outage began
    (reason ``outage``); ``until``: when the grace period ends (reason ``grace``).
    """

    open: bool
    reason: PortalReason
    since: float | None = None
    until: float | None = None

    @property
    def closed_text(self) -> str | None:
        """None when open; else the sentence the user sees (IMAP ``NO [UNAVAILABLE] …``)."""
        return None if self.open else _CLOSED_TEXT[self.reason]


def portal_state(
    domain: Domain | None, latest: Outage | None, now: float, grace: float
) -> PortalState:
    """
    The portal of ``domain`` (None: not protected) at ``now``, given its newest outage
    (``latest``, None when it never had one; only looked at under policy ``outage``).  The grace
    period is half-open: open while ``now < ended_at + grace``, closed from then on.
    """
    if domain is None:
        return PortalState(False, "unprotected")
    if domain.portal == "always":
        return PortalState(True, "always")
    if domain.portal == "open":
        return PortalState(True, "drill")
    if domain.portal == "off":
        return PortalState(False, "off")
    if latest is not None:
        if latest.ended_at is None:
            return PortalState(True, "outage", since=latest.started_at)
        until = latest.ended_at + grace
        if now < until:
            return PortalState(True, "grace", since=latest.started_at, until=until)
    return PortalState(False, "primary_up")


class Portal:
    """Answers "may this domain's users log in now?" for the IMAP server.  See the module doc."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        domains: DomainCache,
        monitor_store: IMonitorStore,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._clock = clock
        self._domains = domains
        self._store = monitor_store
        self._grace = grace
        self._cache: dict[str, tuple[float, PortalState]] = {}  # domain -> (when, answer)

    async def closed_reason(self, domain: str) -> str | None:
        """
        None when ``domain``'s portal is open; else the sentence a closed portal shows.
        ``domain`` in any form L{normalize_domain} takes; an invalid or unknown one is closed.
        """
        return (await self.state(domain)).closed_text

    async def state(self, domain: str) -> PortalState:
        """The portal of ``domain`` now, from the cache when it is fresh (L{CACHE_TTL})."""
        now = self._clock.seconds()
        try:
            name = normalize_domain(domain)
        except InvalidDomainName:
            return portal_state(None, None, now, self._grace)
        cached = self._cache.get(name)
        # A clock that went back (the wall clock behind a reactor can) refreshes too.
        if cached is not None and 0 <= now - cached[0] < CACHE_TTL:
            return cached[1]
        protected = self._domains.get(name)
        if protected is None:
            self._cache.pop(name, None)
            return portal_state(None, None, now, self._grace)
        latest: Outage | None = None
        if protected.portal == "outage":
            try:
                outages = await self._store.list_outages(name, limit=1)
            except Exception:
                self.log.failure(
                    "cannot read the outages of {domain}; its portal stays closed for now",
                    domain=name,
                )
                return PortalState(False, "unavailable")
            latest = outages[-1] if outages else None
        state = portal_state(protected, latest, now, self._grace)
        self._cache[name] = (now, state)
        return state
