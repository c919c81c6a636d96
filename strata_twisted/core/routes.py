"""
Routes for mail to domains that are not protected: RFC 5321 §5.1 MX resolution rules.

The relay sends a protected domain's mail to its ``--relay`` host; anything else it queues (in
practice, DSNs to a sender's domain) goes to that domain's mail exchangers.  This module holds the
L{MXResolver} interface the relay loop depends on, the errors a lookup can end with, and the pure
rules that turn MX records into an ordered host list.  It never does DNS itself: the dnspython
resolver (``server/dns.py``) runs lookups in a thread pool, and tests use
L{strata_twisted.testing.FakeMXResolver}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from random import Random
from typing import Protocol

from twisted.internet.defer import Deferred

from strata_twisted.model import recipient_domain, split_address


class RouteError(Exception):
    """A lookup gave no host to deliver to; ``str(error)`` says why, for logs and events."""


class NullMX(RouteError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail at all.  Permanent."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"{domain} accepts no mail (null MX, RFC 7505)")


class NoRoute(RouteError):
    """The domain does not exist, or has neither MX nor address records."""


class RouteTemporaryFailure(RouteError):
    """DNS could not answer now (SERVFAIL, timeout): try again later."""


def address_literal(domain: str) -> str | None:
    """
    The IP address of an RFC 5321 §4.1.3 address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``),
    or None when ``domain`` is not one.  Mail to an address literal goes straight to that address,
    with no DNS (RFC 5321 §5.1).
    """
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    is_v6 = inner[:5].lower() == "ipv6:"
    if is_v6:
        inner = inner[5:]
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        return None
    if (address.version == 6) != is_v6:
        return None  # "[::1]" without the IPv6: tag, or "[IPv6:1.2.3.4]"
    return str(address)


def route_domain(address: str) -> str:
    """The queue domain for mail to ``address``: its canonical domain, or its address literal
    (``[192.0.2.1]``: delivered to that address, RFC 5321 §5.1); "" when it has neither."""
    domain = recipient_domain(address)
    if domain is not None:
        return domain
    _, literal = split_address(address)
    return literal if address_literal(literal) is not None else ""


class MXResolver(Protocol):
    def lookup(self, domain: str) -> Deferred[list[tuple[str, int]]]:
        """
        The hosts to try for ``domain``, in order, each as (host or address, port); at least one.
        An address literal (L{address_literal}) is its own route.  Fails with L{NullMX},
        L{NoRoute} or L{RouteTemporaryFailure}.
        """


# RFC 5321 §5.1 lets a client limit the addresses it tries ("there MAY also be a configurable limit
# on the number of alternate addresses"; it SHOULD try at least two).  Without a limit a domain
# with hundreds of MX hosts or addresses holds a DNS thread for one query per host and the relay
# for one connection timeout per address.  Postfix's smtp_mx_address_limit is 5.
MAX_EXCHANGES = 10
"""At most this many mail exchangers are looked up, best first."""
MAX_ADDRESSES = 10
"""At most this many (distinct) addresses are returned, best first."""


def order_exchanges(domain: str, records: Iterable[tuple[int, str]], rng: Random) -> list[str]:
    """
    The mail exchangers of ``domain`` from its MX records (preference, exchange), best first.

    RFC 5321 §5.1: lower preference first; among equal preferences the client "MUST randomize
    them to spread the load across multiple mail exchangers", here with ``rng``.  RFC 7505 §3: a
    single MX whose exchange is the root (".") with preference 0 means the domain accepts no mail
    (L{NullMX}).  A null MX mixed with real ones is a misconfiguration; the root entry is skipped
    and the others used.  No records at all means the implicit MX: the domain itself (its A/AAAA
    records), §5.1 again.
    """
    # One host may appear under several preferences; its best one counts.
    best: dict[str, int] = {}
    for preference, exchange in records:
        host = _host(exchange)
        best[host] = min(preference, best.get(host, preference))
    if not best:
        return [domain]
    ranked = sorted((preference, rng.random(), host) for host, preference in best.items() if host)
    if not ranked:
        raise NullMX(domain)
    return [host for _, _, host in ranked]


def _host(exchange: str) -> str:
    return exchange.rstrip(".").lower()
