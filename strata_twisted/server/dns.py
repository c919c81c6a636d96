"""
MX lookups with dnspython, run in a bounded thread pool (DESIGN: DNS never blocks the reactor).

L{DNSPythonResolver} is the L{strata_twisted.core.routes.MXResolver} the service uses.  Each
lookup is one blocking function (MX query, then the exchangers' A/AAAA records, all through the
same resolver) run by ``deferToThreadPool``; the rules for ordering and null MX live in
``core/routes.py``.  It returns addresses, not names, so the relay's connections never fall back
to a different resolver (the system's ``getaddrinfo``) for the exchangers.  The pool is started
and stopped by the service; a lookup after the stop fails at once (a stopped Twisted pool drops
work silently, which would leave the caller waiting forever).  Nothing here imports the global
reactor.
"""

from __future__ import annotations

from random import Random, SystemRandom

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from strata_twisted.core.routes import (
    MAX_ADDRESSES,
    MAX_EXCHANGES,
    NoRoute,
    RouteTemporaryFailure,
    address_literal,
    order_exchanges,
)
from strata_twisted.errors import InvalidDomainName
from strata_twisted.model import normalize_domain, parse_host_port


class DNSPythonResolver:
    """Resolves mail routes with a synchronous dnspython resolver in a pool of ``threads``."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        nameserver: str | None,
        mx_port: int,
        threads: int = 4,
        timeout: float = 10.0,
        rng: Random | None = None,
    ) -> None:
        """
        ``nameserver``: ``"host[:port]"`` to ask only that server (port 53 by default); None or
        "" for the system's configuration (``/etc/resolv.conf``).  ``timeout``: seconds one
        query may take in all, retries included.  ``rng`` shuffles exchangers of equal
        preference (RFC 5321 §5.1); tests pass a seeded one.
        """
        self._reactor = reactor
        self._mx_port = mx_port
        self._rng = rng if rng is not None else SystemRandom()
        self._stopped = False
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="strata-dns")
        self._resolver: dns.resolver.Resolver | None = None
        self._config_error = ""
        try:
            if nameserver:
                host, port = parse_host_port(nameserver, default_port=53)
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = [host]
                resolver.port = port
            else:
                resolver = dns.resolver.Resolver()
        except (ValueError, dns.exception.DNSException, OSError) as e:
            # No usable resolver configuration: every lookup fails temporarily (mail stays
            # queued and the relay reports it) rather than the server refusing to start.
            self._config_error = f"no DNS resolver: {e}"
            self.log.error("{error}", error=self._config_error)
        else:
            resolver.lifetime = timeout
            self._resolver = resolver

    def start(self) -> None:
        self._stopped = False
        self._pool.start()

    def stop(self) -> None:
        """Let lookups in progress finish, then stop the threads."""
        self._stopped = True
        self._pool.stop()

    def lookup(self, domain: str) -> Deferred[list[tuple[str, int]]]:
        literal = address_literal(domain)
        if literal is not None:
            return succeed([(literal, self._mx_port)])  # RFC 5321 §5.1: no DNS for a literal
        if self._stopped:
            # ThreadPool.callInThreadWithCallback drops work once the pool is stopped: the
            # Deferred would never fire and the relay's drain would wait forever.
            return fail(RouteTemporaryFailure(f"{domain}: the DNS resolver is stopped"))
        return deferToThreadPool(self._reactor, self._pool, self._lookup, domain)

    # -- in a pool thread ----------------------------------------------------------------------

    def _lookup(self, domain: str) -> list[tuple[str, int]]:
        resolver = self._resolver
        if resolver is None:
            raise RouteTemporaryFailure(self._config_error)
        try:
            # The ASCII form intake stores (IDNA 2008, UTS #46).  dnspython would encode a
            # U-label with IDNA 2003 ("faß" -> "fass"): another domain.  An address literal or
            # an empty domain has no MX to look up.
            name = normalize_domain(domain)
        except InvalidDomainName as e:
            raise NoRoute(f"no MX lookup for {domain!r}: {e}") from None
        try:
            answer = resolver.resolve(
                dns.name.from_text(name), dns.rdatatype.MX, search=False,
                raise_on_no_answer=False,
            )  # fmt: skip
        except dns.resolver.NXDOMAIN:
            raise NoRoute(f"{domain}: domain does not exist") from None
        except dns.exception.DNSException as e:
            # Not the implicit MX (RFC 5321 §5.1 falls back to A/AAAA only when there are no
            # MX records): the MX records may exist, we just could not read them.
            raise RouteTemporaryFailure(f"{domain}: MX lookup failed: {_describe(e)}") from None
        records = [
            (int(rr.preference), rr.exchange.to_text(omit_final_dot=True))
            for rr in (answer.rrset or [])
        ]
        hosts = order_exchanges(name, records, self._rng)[:MAX_EXCHANGES]
        addresses: list[str] = []
        temporary = ""
        for host in hosts:
            found, error = self._addresses(resolver, host)
            # A host may share an address with another: one connection attempt is enough.
            addresses += [address for address in found if address not in addresses]
            if error and not found:
                temporary = error
            if len(addresses) >= MAX_ADDRESSES:
                break
        if addresses:
            return [(address, self._mx_port) for address in addresses[:MAX_ADDRESSES]]
        if temporary:
            raise RouteTemporaryFailure(temporary)
        if not records:
            # RFC 5321 §5.1: no MX and no address records: there is no route.
            raise NoRoute(f"{domain} has no MX and no address records")
        raise NoRoute(f"{domain}: no MX host has an address ({', '.join(hosts)})")

    @staticmethod
    def _addresses(resolver: dns.resolver.Resolver, host: str) -> tuple[list[str], str]:
        """
        The IPv4 then IPv6 addresses of ``host``, and why a lookup failed temporarily ("" when
        none did).  A failed AAAA lookup does not discard the A records (nor the reverse): some
        name servers still answer one type and fail or time out on the other.  After a timeout
        the host's AAAA query is not asked: it would most likely wait as long again.
        """
        addresses: list[str] = []
        error = ""
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = resolver.resolve(
                    dns.name.from_text(host), rdtype, search=False, raise_on_no_answer=False
                )
            except dns.resolver.NXDOMAIN:
                break
            except dns.exception.DNSException as e:
                error = f"{host}: address lookup failed: {_describe(e)}"
                if isinstance(e, dns.exception.Timeout):
                    break
                continue
            addresses += [rr.address for rr in (answer.rrset or [])]
        return addresses, error


def _describe(error: dns.exception.DNSException) -> str:
    if isinstance(error, dns.exception.Timeout):
        return "timed out"
    if isinstance(error, dns.resolver.NoNameservers):
        return "no name server answered (SERVFAIL)"
    return str(error) or error.__class__.__name__
