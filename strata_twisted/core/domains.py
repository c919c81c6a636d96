"""
The protected-domain cache the SMTP paths consult.

RCPT decisions must be fast and must not touch the database per command, so the server keeps the
protected domains in memory, with the addresses of each domain's synced users and the send-as
aliases the admin allowed them (submission), and reloads them when the store's
``domains_version`` (or ``credentials_version``) changes.  The
``strata`` CLI writes to the same store from another process; polling the version every
``reload_interval`` seconds (default 1) is how "a running server sees domain changes within a
second" holds.  Time comes from the injected clock.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from strata_twisted.interfaces import ICredentialStore, IDomainStore
from strata_twisted.model import Domain, InvalidUser, normalize_user


class DomainCache:
    """An in-memory copy of the protected domains, refreshed from an L{IDomainStore}."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IDomainStore,
        reload_interval: float,
        users: ICredentialStore | None = None,
    ) -> None:
        """``users``: where the domains' synced users are; None: no user lists (all accepted)."""
        self._store = store
        self._users_store = users
        self._domains: dict[str, Domain] = {}
        self._users: dict[str, frozenset[str]] = {}
        self._users_version: int | None = None
        self._send_as: dict[str, frozenset[str]] = {}
        self._send_as_version: int | None = None
        self._version: int | None = None
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._interval = reload_interval
        self._refreshing = False

    @property
    def loaded(self) -> bool:
        """True once the domains have been read at least once."""
        return self._version is not None

    def prime(
        self,
        domains: list[Domain],
        version: int,
        users: dict[str, frozenset[str]] | None = None,
        users_version: int | None = None,
        send_as: dict[str, frozenset[str]] | None = None,
    ) -> None:
        """
        Start from domains (and users, and send-as aliases: L{load_send_as}) read before the
        reactor ran, so intake never waits.  Aliases not given here are read by the first
        L{refresh}.
        """
        self._domains = {d.name: d for d in domains}
        self._version = version
        if users is not None:
            self._users = users
            self._users_version = users_version
        if send_as is not None:
            self._send_as = send_as
            self._send_as_version = users_version

    def get(self, name: str) -> Domain | None:
        """The protected domain with this canonical name, or None."""
        return self._domains.get(name)

    def users(self, name: str) -> frozenset[str] | None:
        """The canonical addresses of ``name``'s synced users, or None when it has no list."""
        return self._users.get(name)

    def send_as(self, user: str) -> frozenset[str]:
        """The canonical addresses ``user`` may send as besides their own (empty: none)."""
        try:
            return self._send_as.get(normalize_user(user), frozenset())
        except InvalidUser:
            return frozenset()

    def all(self) -> list[Domain]:
        return sorted(self._domains.values(), key=lambda d: d.name)

    def start(self) -> Deferred[None]:
        """
        Load now, then poll every ``reload_interval`` seconds.  The Deferred fires once the first
        load has finished, so what starts after it (the relay, the monitor) sees the domains.
        """
        first = self.refresh()
        d = self._loop.start(self._interval, now=False)
        d.addErrback(lambda f: self.log.failure("domain reload loop stopped", f))
        return first

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def refresh(self) -> Deferred[None]:
        """Reload the domains if their version changed.  Errors are logged, never raised."""
        return Deferred.fromCoroutine(self._refresh())

    async def _refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        try:
            version = await self._store.domains_version()
            reloaded = version != self._version
            if reloaded:
                domains = await self._store.list_domains()
                self._domains = {d.name: d for d in domains}
                if self._version is not None:
                    self.log.info(
                        "protected domains reloaded: {names}",
                        names=", ".join(sorted(self._domains)) or "(none)",
                    )
                self._version = version
            if self._users_store is not None:
                users_version = await self._users_store.credentials_version()
                if reloaded or users_version != self._users_version:
                    self._users = await load_user_lists(self._users_store, list(self._domains))
                    self._users_version = users_version
                if users_version != self._send_as_version:
                    self._send_as = await load_send_as(self._users_store)
                    self._send_as_version = users_version
        except Exception:
            self.log.failure("could not reload the protected domains; keeping the last ones")
        finally:
            self._refreshing = False


async def load_user_lists(store: ICredentialStore, domains: list[str]) -> dict[str, frozenset[str]]:
    """The canonical addresses of each domain's synced users, for the domains that have a list."""
    lists: dict[str, frozenset[str]] = {}
    for name in domains:
        users = await store.list_users(name)
        if users:
            lists[name] = frozenset(user.address for user in users)
    return lists


async def load_send_as(store: ICredentialStore) -> dict[str, frozenset[str]]:
    """The send-as aliases of every user that has some: canonical user -> canonical aliases."""
    by_user: dict[str, set[str]] = {}
    for alias, user in await store.list_aliases():
        by_user.setdefault(user, set()).add(alias)
    return {user: frozenset(aliases) for user, aliases in by_user.items()}
