"""The protected-domain cache: first load, polling, and what it tells the rest of the server."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from strata_twisted.core.domains import DomainCache
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
