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

from collections.abc import Iterable
from typing import Protocol

from twisted.internet.defer import Deferred


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


class MXResolver(Protocol):
    def lookup(self, domain: str) -> Deferred[list[tuple[str, int]]]:
        """
        The hosts to try for ``domain``, in order, each as (host or address, port); at least one.
        Fails with L{NullMX}, L{NoRoute} or L{RouteTemporaryFailure}.
        """


def order_exchanges(domain: str, records: Iterable[tuple[int, str]]) -> list[str]:
    """
    The mail exchangers of ``domain`` from its MX records (preference, exchange), best first.

    RFC 5321 §5.1: lower preference first; equal preferences may go in any order (here: by name,
    so a retry meets the same host first).  RFC 7505 §3: a single MX whose exchange is the root
    (".") with preference 0 means the domain accepts no mail (L{NullMX}).  A null MX mixed with
    real ones is a misconfiguration; the root entry is skipped and the others used.  No records at
    all means the implicit MX: the domain itself (its A/AAAA records), §5.1 again.
    """
    found = sorted({(preference, _host(exchange)) for preference, exchange in records})
    if len(found) == 1 and found[0] == (0, ""):
        raise NullMX(domain)
    if not found:
        return [domain]
    hosts = [host for _, host in found if host]
    if not hosts:
        raise NullMX(domain)
    # One host may appear under several preferences; its best one counts.
    return list(dict.fromkeys(hosts))


def _host(exchange: str) -> str:
    return exchange.rstrip(".").lower()
