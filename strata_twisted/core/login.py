# -*- test-case-name: tests.test_core_login -*-
"""
One login check for every protocol that takes a user's password: IMAP (#4) and submission (#5).

A login is, in this order:

1. the stored hash is read, and a password this user logged in with lately passes at once (the
   verification cache: Roundcube logs in on every web request), whatever anyone guessed;
2. otherwise the attempt waits, on the injected clock, as long as the failures seen from its
   source say (L{strata_twisted.core.throttle.LoginThrottle}: an increasing delay per user and
   address, bounded), and only then is the password checked, in the password pool.  A guesser
   waits and costs no hash run while waiting; nobody is ever refused for others' failures.  An
   unknown user costs a check against a hash typical of the domain, so that neither the answer
   nor its timing tells "no such user" from "wrong password";
3. only then, the domain's portal policy: a closed portal refuses a user whose password was
   right, with the portal's sentence (a stranger learns nothing about outages).

The source the throttle counts is the end user's address when a trusted host (the webmail)
forwarded it (IMAP ``ID x-originating-ip``, SMTP ``XCLIENT ADDR``), else the connecting peer's.
A source in the trusted networks (the webmail that forwarded nothing, or a reverse proxy in
front of it) logs in for many users: it is never slowed as an address, only user by user.
Failed logins and portal refusals are logged with the client's address, the forwarded one, and
the reason (issue 11, point 8).

The same throttle, cache and pool serve both protocols, so failures on one count on the other.
Trusted networks (loopback, and where the webmail runs) may use a plaintext password without
TLS and may forward their users' addresses (L{is_trusted}).
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from strata_twisted.core.credentials import (
    CredentialError,
    PasswordHash,
    VerificationCache,
    check_password,
)
from strata_twisted.core.metrics import NO_METRICS, MetricsRecorder
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.errors import StrataError
from strata_twisted.executor import Executor
from strata_twisted.interfaces import ICredentialStore
from strata_twisted.model import InvalidUser, normalize_user

PortalCheck = Callable[[str], "Awaitable[str | None] | str | None"]
"""
``portal(domain)``: None while the domain's webmail portal is open, else the sentence to show
(or an awaitable of either: L{strata_twisted.core.portal.Portal.closed_reason}).
"""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FAILED_TEXT: Final = "Authentication failed"


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR networks (``192.0.2.0/24``, a bare address); ValueError names a bad one."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def is_trusted(host: str, trusted: Sequence[Network]) -> bool:
    """
    Loopback and the configured networks may log in with a plaintext password (decision 10)
    and may forward the address of the user they log in for (the webmail).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in network for network in trusted)


def _same_user(authzid: str, address: str) -> bool:
    try:
        return normalize_user(authzid) == address
    except InvalidUser:
        return False


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


@dataclass(frozen=True)
class LoginResult:
    """
    How a login ended.  ``address``: the canonical user, set only when ``refusal`` is None.
    ``refusal``: "failed" (wrong password or unknown user: one answer for both, RFC 5530) or
    "portal" (right password, closed portal).  ``text``: what to tell the client.  ``waited``:
    the seconds the attempt waited before its password was checked.
    """

    address: str | None
    refusal: Literal["failed", "portal"] | None = None
    text: str = ""
    waited: float = 0.0

    @property
    def ok(self) -> bool:
        return self.refusal is None


def where(client: str, origin: str | None) -> str:
    """
    Where a login came from, for a log line: ``203.0.113.7 via 127.0.0.1`` when the webmail at
    127.0.0.1 forwarded the user's address, else the client's address.
    """
    return f"{origin} via {client}" if origin is not None else client


def delay_note(waited: float) -> str:
    """`` (after a 2 s delay)`` for a login that waited out its throttle delay, else ""."""
    return f" (after a {round(waited, 2):g} s delay)" if waited else ""


class Authenticator:
    """
    Checks logins.  Its parts are public attributes so that every listener can share one, and
    tests can swap the throttle.  ``executor`` runs the password checks (a thread pool).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        credentials: ICredentialStore,
        executor: Executor,
        portal: PortalCheck,
        *,
        cache: VerificationCache | None = None,
        throttle: LoginThrottle | None = None,
        trusted_networks: Sequence[Network] = (),
        metrics: MetricsRecorder = NO_METRICS,
    ) -> None:
        """``metrics``: told each login's service and result."""
        self.clock = clock
        self.metrics = metrics
        self.credentials = credentials
        self.executor = executor
        self.portal = portal
        self.trusted_networks = tuple(trusted_networks)
        # (an empty cache is falsy: test for None)
        self.cache = cache if cache is not None else VerificationCache()
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self._typical: dict[str, PasswordHash | None] = {}

    def is_trusted(self, host: str) -> bool:
        return is_trusted(host, self.trusted_networks)

    async def login(
        self,
        client: str,
        user: str,
        password: str | bytes,
        authzid: str = "",
        *,
        forwarded: str | None = None,
        service: str = "imap",
    ) -> LoginResult:
        """
        Check ``user``'s ``password`` from ``client`` (an IP address), then the portal.  A SASL
        ``authzid`` (RFC 4616 §2) must name the same user: nobody may act as somebody else.
        ``forwarded``: the end user's address as a trusted ``client`` (the webmail) gave it;
        ignored from any other client.  ``service``: the metrics' label (imap, submission).
        """
        result = await self._login(client, user, password, authzid, forwarded)
        if result.ok:
            outcome = "ok"
        elif result.refusal == "portal":
            outcome = "portal"
        else:
            # A refusal after a throttle delay is the guesser's pattern, not a typo.
            outcome = "throttled" if result.waited > 0 else "failed"
        self.metrics.login(service, outcome)
        return result

    async def _login(
        self, client: str, user: str, password: str | bytes, authzid: str, forwarded: str | None
    ) -> LoginResult:
        origin = forwarded if forwarded and self.is_trusted(client) else None
        source = origin if origin is not None else client
        # An address of our own networks (the webmail naming nobody, or a proxy in front of
        # it) logs in for many users: never slowed as an address, only user by user.
        shared = self.is_trusted(source)
        try:
            address: str | None = normalize_user(user)
        except InvalidUser:
            address = None
        who = address if address is not None else user.lower()
        stored: PasswordHash | None = None
        known = False
        if address is not None:
            text = await self.credentials.get_user(address)
            if text is not None:
                known = True
                try:
                    stored = PasswordHash.parse(text)
                except CredentialError:
                    self.log.warn("unusable stored hash for {address}", address=address)
        # A password this user logged in with lately: no wait, no hash run (and no guess can
        # hit it without being the right password).
        cached = (
            address is not None
            and stored is not None
            and self.cache.check(address, stored, password, self.clock.seconds())
        )
        waited = 0.0
        ok = cached
        if not cached:
            waited = self.throttle.wait(source, who, shared=shared)
            if waited > 0:
                await deferLater(self.clock, waited)
            like = None
            if stored is None and address is not None:
                like = await self.typical_hash(domain_of(address))
            ok = await self.executor.run(lambda: check_password(stored, password, like=like))
            if ok and address is not None and stored is not None:
                self.cache.remember(address, stored, password, self.clock.seconds())
        if not ok or address is None:
            if address is None:
                reason = "not a valid address"
            elif not known:
                reason = "unknown user"
            elif stored is None:
                reason = "unusable stored hash"
            else:
                reason = "wrong password"
            self._refused(user, client, origin, reason, waited)
            self.throttle.failed(source, who, shared=shared)
            return LoginResult(None, "failed", FAILED_TEXT, waited)
        self.throttle.succeeded(source, address, verified=not cached)
        if authzid and not _same_user(authzid, address):
            self._refused(user, client, origin, f"may not act as {authzid!r}", waited)
            return LoginResult(None, "failed", FAILED_TEXT, waited)
        closed = self.portal(domain_of(address))
        if inspect.isawaitable(closed):
            closed = await closed
        if closed is not None:
            self.log.info(
                "login refused for {user} from {where}: portal closed ({sentence})",
                user=address, client=client, origin=origin, where=where(client, origin),
                sentence=closed, reason="portal closed",
            )  # fmt: skip
            return LoginResult(None, "portal", closed, waited)
        return LoginResult(address, waited=waited)

    def _refused(
        self, user: str, client: str, origin: str | None, reason: str, waited: float
    ) -> None:
        self.log.info(
            "login failed for {user!r} from {where}: {reason}{after}",
            user=user[:320], client=client, origin=origin, where=where(client, origin),
            reason=reason, waited=waited, after=delay_note(waited),
        )  # fmt: skip

    async def typical_hash(self, domain: str) -> PasswordHash | None:
        """
        A hash of one of ``domain``'s users, so that an unknown user's dummy check costs what a
        real one would; remembered per domain (it only shapes timing, so staleness is harmless).
        """
        if domain in self._typical:
            return self._typical[domain]
        like: PasswordHash | None = None
        try:
            users = await self.credentials.list_users(domain)
        except StrataError:
            users = []
        for user in users[:1]:
            try:
                like = PasswordHash.parse(user.password_hash)
            except CredentialError:
                pass
        if len(self._typical) > 1000:
            self._typical.clear()
        self._typical[domain] = like
        return like
