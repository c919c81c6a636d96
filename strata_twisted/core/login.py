# -*- test-case-name: tests.test_core_login -*-
"""
One login check for every protocol that takes a user's password: IMAP (#4) and submission (#5).

A login is, in this order:

1. refused outright when the client's address or the user failed too often
   (L{strata_twisted.core.throttle.LoginThrottle}): the password is not even checked, so a
   guesser learns nothing and costs nothing;
2. the password checked against the synced hash, from the verification cache when this exact
   password was verified lately (Roundcube logs in on every web request), else in the
   password pool.  An unknown user costs a check against a hash typical of the domain, so
   that neither the answer nor its timing tells "no such user" from "wrong password";
3. only then, the domain's portal policy: a closed portal refuses a user whose password was
   right, with the portal's sentence (a stranger learns nothing about outages).

The same throttle, cache and pool serve both protocols, so failures on one count on the other.
Trusted networks (loopback, and where the webmail runs) may use a plaintext password without
TLS and are never throttled as addresses (L{is_trusted}).
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from strata_twisted.core.credentials import (
    CredentialError,
    PasswordHash,
    VerificationCache,
    check_password,
)
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

THROTTLED_TEXT: Final = "Too many failed logins; try again later"
FAILED_TEXT: Final = "Authentication failed"


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR networks (``192.0.2.0/24``, a bare address); ValueError names a bad one."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def is_trusted(host: str, trusted: Sequence[Network]) -> bool:
    """Loopback and the configured networks may log in with a plaintext password (decision 10)."""
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
    ``refusal``: "throttled" (too many failures, password not checked), "failed" (wrong password
    or unknown user: one answer for both, RFC 5530) or "portal" (right password, closed portal).
    ``text``: what to tell the client.
    """

    address: str | None
    refusal: Literal["throttled", "failed", "portal"] | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.refusal is None


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
    ) -> None:
        self.clock = clock
        self.credentials = credentials
        self.executor = executor
        self.portal = portal
        self.trusted_networks = tuple(trusted_networks)
        # (an empty cache is falsy: test for None)
        self.cache = cache if cache is not None else VerificationCache()
        self.throttle = (
            throttle if throttle is not None else LoginThrottle(clock, exempt=self.is_trusted)
        )
        self._typical: dict[str, PasswordHash | None] = {}

    def is_trusted(self, host: str) -> bool:
        return is_trusted(host, self.trusted_networks)

    async def login(
        self, client: str, user: str, password: str | bytes, authzid: str = ""
    ) -> LoginResult:
        """
        Check ``user``'s ``password`` from ``client`` (an IP address), then the portal.  A SASL
        ``authzid`` (RFC 4616 §2) must name the same user: nobody may act as somebody else.
        """
        try:
            address: str | None = normalize_user(user)
        except InvalidUser:
            address = None
        who = address if address is not None else user.lower()
        if self.throttle.refused(client, who):
            self.log.info("login throttled for {user!r} from {client}", user=user, client=client)
            return LoginResult(None, "throttled", THROTTLED_TEXT)
        stored: PasswordHash | None = None
        if address is not None:
            text = await self.credentials.get_user(address)
            if text is not None:
                try:
                    stored = PasswordHash.parse(text)
                except CredentialError:
                    self.log.warn("unusable stored hash for {address}", address=address)
        ok = False
        if address is not None and stored is not None:
            ok = self.cache.check(address, stored, password, self.clock.seconds())
        if not ok:
            like = None
            if stored is None and address is not None:
                like = await self.typical_hash(domain_of(address))
            ok = await self.executor.run(lambda: check_password(stored, password, like=like))
            if ok and address is not None and stored is not None:
                self.cache.remember(address, stored, password, self.clock.seconds())
        if not ok or address is None:
            self.log.info("login failed for {user!r} from {client}", user=user, client=client)
            self.throttle.failed(client, who)
            return LoginResult(None, "failed", FAILED_TEXT)
        self.throttle.succeeded(address)
        if authzid and not _same_user(authzid, address):
            self.log.info("{user} may not act as {authzid!r}", user=address, authzid=authzid)
            return LoginResult(None, "failed", FAILED_TEXT)
        closed = self.portal(domain_of(address))
        if inspect.isawaitable(closed):
            closed = await closed
        if closed is not None:
            return LoginResult(None, "portal", closed)
        return LoginResult(address)

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
