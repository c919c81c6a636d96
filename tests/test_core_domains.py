"""The protected-domain cache: first load, polling, and what it tells the rest of the server."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from strata_twisted.core.domains import DomainCache, load_send_as, load_user_lists
from strata_twisted.model import Domain, RelayTarget
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of


class SlowStore:
    """Domain reads that answer only when the test says (a busy storage thread)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.waiting: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def _later(self, d: Deferred[Any]) -> Deferred[Any]:
        out: Deferred[Any] = Deferred()
        self.waiting.append((d, out))
        return out

    def domains_version(self) -> Deferred[int]:
        return self._later(self.store.domains_version())

    def list_domains(self) -> Deferred[list[Domain]]:
        return self._later(self.store.list_domains())

    def answer_all(self) -> None:
        while self.waiting:
            d, out = self.waiting.pop(0)
            d.chainDeferred(out)


def test_start_fires_only_once_the_domains_are_loaded() -> None:
    # Regression: start() used to fire before the first load finished, so the relay's first
    # run found no protected domain and waited a whole relay.interval before draining.
    clock = Clock()
    store = MemoryStore(clock)
    result_of(store.add_domain(Domain("example.test", RelayTarget("10.0.0.1"))))
    slow = SlowStore(store)
    cache = DomainCache(clock, slow, 0.5)  # type: ignore[arg-type]
    started = cache.start()
    assert not started.called
    assert cache.get("example.test") is None
    slow.answer_all()
    slow.answer_all()
    assert started.called
    assert cache.loaded and cache.get("example.test") is not None
    cache.stop()


def test_changes_are_seen_on_the_next_poll() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    cache = DomainCache(clock, store, 0.5)
    result_of(cache.start())
    assert cache.all() == []
    result_of(store.add_domain(Domain("late.test", RelayTarget("10.0.0.1"))))
    clock.advance(0.5)
    assert [d.name for d in cache.all()] == ["late.test"]
    cache.stop()


# -- send-as aliases


ALICE = "alice@example.test"
HASH = "{SSHA512}c3NoYTUxMg=="


def _store_with_alice(clock: Clock) -> MemoryStore:
    store = MemoryStore(clock)
    result_of(store.add_domain(Domain("example.test", RelayTarget("10.0.0.1"))))
    result_of(store.set_user(ALICE, HASH))
    return store


def test_send_as_is_loaded_with_the_users_and_follows_their_version() -> None:
    clock = Clock()
    store = _store_with_alice(clock)
    result_of(store.add_alias("sales@example.test", ALICE))
    cache = DomainCache(clock, store, 0.5, users=store)
    result_of(cache.start())
    assert cache.send_as(ALICE) == {"sales@example.test"}
    assert cache.send_as("Alice@EXAMPLE.test") == {"sales@example.test"}
    assert cache.send_as("bob@example.test") == frozenset()
    assert cache.send_as("not an address") == frozenset()
    # The CLI adds one and removes one (another process): seen on the next poll, not before.
    result_of(store.add_alias("alice@example.net", ALICE))
    result_of(store.remove_alias("sales@example.test"))
    assert cache.send_as(ALICE) == {"sales@example.test"}
    clock.advance(0.5)
    assert cache.send_as(ALICE) == {"alice@example.net"}
    # The user goes, and their aliases with them.
    result_of(store.remove_user(ALICE))
    clock.advance(0.5)
    assert cache.send_as(ALICE) == frozenset()
    cache.stop()


def test_primed_send_as_serves_before_the_first_load() -> None:
    clock = Clock()
    store = _store_with_alice(clock)
    result_of(store.add_alias("sales@example.test", ALICE))
    cache = DomainCache(clock, store, 0.5, users=store)
    names = [d.name for d in result_of(store.list_domains())]
    cache.prime(
        result_of(store.list_domains()),
        result_of(store.domains_version()),
        result_of(Deferred.fromCoroutine(load_user_lists(store, names))),
        result_of(store.credentials_version()),
        result_of(Deferred.fromCoroutine(load_send_as(store))),
    )
    assert cache.send_as(ALICE) == {"sales@example.test"}


def test_send_as_not_primed_is_read_by_the_first_refresh() -> None:
    # A caller that primes the users only (as service.build_service did before aliases): the
    # users' version is current, yet the aliases must still be read, not wait for a change.
    clock = Clock()
    store = _store_with_alice(clock)
    result_of(store.add_alias("sales@example.test", ALICE))
    cache = DomainCache(clock, store, 0.5, users=store)
    cache.prime(
        result_of(store.list_domains()),
        result_of(store.domains_version()),
        {"example.test": frozenset({ALICE})},
        result_of(store.credentials_version()),
    )
    assert cache.send_as(ALICE) == frozenset()
    result_of(cache.start())
    assert cache.send_as(ALICE) == {"sales@example.test"}
    cache.stop()


def test_a_cache_without_a_credential_store_has_no_aliases() -> None:
    clock = Clock()
    store = _store_with_alice(clock)
    result_of(store.add_alias("sales@example.test", ALICE))
    cache = DomainCache(clock, store, 0.5)
    result_of(cache.start())
    assert cache.send_as(ALICE) == frozenset()
    cache.stop()
