"""
The webmail portal on a task.Clock with the memory store: each policy, the outage and its grace
period (just before and just after its end), unknown domains, the one-second cache, a store that
cannot answer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from strata_twisted.core.domains import DomainCache
from strata_twisted.core.portal import (
    CACHE_TTL,
    DEFAULT_GRACE,
    NOT_ENABLED_TEXT,
    PRIMARY_UP_TEXT,
    UNAVAILABLE_TEXT,
    Portal,
    PortalState,
    portal_state,
)
from strata_twisted.errors import StorageError
from strata_twisted.model import Domain, Outage, PortalPolicy, RelayTarget
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of

T0 = 1_800_000_000.0
NAME = "example.test"
HOUR = 3600.0


class CountingStore(MemoryStore):
    """The memory store, counting how often the portal asks for outages."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.outage_reads = 0
        self.broken = False

    def list_outages(self, domain: str | None = None, limit: int = 100) -> Deferred[list[Outage]]:
        self.outage_reads += 1
        if self.broken:
            return fail(StorageError("database is locked"))
        return super().list_outages(domain, limit)


class World:
    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = CountingStore(self.clock)
        self.domains = DomainCache(self.clock, self.store, 1.0)
        self.portal = Portal(self.clock, self.domains, self.store, grace=grace)

    def protect(self, name: str = NAME, **kwargs: Any) -> None:
        result_of(self.store.add_domain(Domain(name, RelayTarget("mx." + name), **kwargs)))
        result_of(self.domains.refresh())

    def set_policy(self, portal: PortalPolicy, name: str = NAME) -> None:
        domain = result_of(self.store.get_domain(name))
        assert domain is not None
        result_of(self.store.update_domain(replace(domain, portal=portal)))
        result_of(self.domains.refresh())

    def closed(self, name: str = NAME) -> str | None:
        return result_of(Deferred.fromCoroutine(self.portal.closed_reason(name)))

    def state(self, name: str = NAME) -> PortalState:
        return result_of(Deferred.fromCoroutine(self.portal.state(name)))

    def later(self, seconds: float) -> None:
        """Move on, past the cache: every answer after this one is fresh."""
        self.clock.advance(seconds)


@pytest.fixture
def world() -> World:
    return World()


# -- policy "outage" (the default)


def test_outage_policy_is_closed_while_the_primary_is_up(world: World) -> None:
    world.protect()
    assert world.closed() == PRIMARY_UP_TEXT
    assert world.state() == PortalState(False, "primary_up")


def test_outage_policy_is_open_during_an_outage(world: World) -> None:
    world.protect()
    result_of(world.store.open_outage(NAME, T0 - 600, "connection refused"))
    assert world.closed() is None
    assert world.state() == PortalState(True, "outage", since=T0 - 600)


def test_grace_period_boundary(world: World) -> None:
    world.protect()
    result_of(world.store.open_outage(NAME, T0, "connection refused"))
    world.later(2 * HOUR)
    ended = world.clock.seconds()
    result_of(world.store.close_outage(NAME, ended))
    world.later(CACHE_TTL)
    # Just after the end: the grace period, until ended + 24 h.
    assert world.state() == PortalState(True, "grace", since=T0, until=ended + DEFAULT_GRACE)
    # Just before the grace period ends: still open.
    world.clock.advance(ended + DEFAULT_GRACE - 0.001 - world.clock.seconds())
    assert world.closed() is None
    # At its end and just after: closed, with the sentence for a working primary.
    world.later(0.001 + CACHE_TTL)
    assert world.closed() == PRIMARY_UP_TEXT


def test_exactly_at_the_end_of_the_grace_period_it_is_closed() -> None:
    domain = Domain(NAME, RelayTarget("mx"))
    outage = Outage(1, NAME, 100.0, "down", ended_at=200.0)
    assert portal_state(domain, outage, 200.0 + 50 - 1e-6, 50).open
    assert not portal_state(domain, outage, 200.0 + 50, 50).open


def test_grace_is_a_constructor_argument() -> None:
    world = World(grace=HOUR)
    world.protect()
    result_of(world.store.open_outage(NAME, T0, "down"))
    result_of(world.store.close_outage(NAME, T0 + 10))
    world.clock.advance(HOUR + 9)
    assert world.closed() is None
    world.later(1 + CACHE_TTL)
    assert world.closed() == PRIMARY_UP_TEXT


def test_zero_grace_closes_when_the_outage_ends() -> None:
    world = World(grace=0)
    world.protect()
    result_of(world.store.open_outage(NAME, T0, "down"))
    result_of(world.store.close_outage(NAME, T0))
    assert world.closed() == PRIMARY_UP_TEXT


def test_only_the_newest_outage_counts(world: World) -> None:
    world.protect()
    world.protect("other.test")
    result_of(world.store.open_outage(NAME, T0 - 10 * DEFAULT_GRACE, "down"))
    result_of(world.store.close_outage(NAME, T0 - 9 * DEFAULT_GRACE))
    result_of(world.store.open_outage("other.test", T0 - 60, "down"))  # another domain's
    assert world.closed() == PRIMARY_UP_TEXT
    result_of(world.store.open_outage(NAME, T0, "down again"))
    world.later(CACHE_TTL)
    assert world.state() == PortalState(True, "outage", since=T0)


def test_an_unmonitored_domain_with_policy_outage_stays_closed(world: World) -> None:
    world.protect(monitored=False)
    assert world.closed() == PRIMARY_UP_TEXT


# -- the other policies


def test_always_is_open_without_asking_the_store(world: World) -> None:
    world.protect(portal="always")
    assert world.closed() is None
    assert world.state() == PortalState(True, "always")
    assert world.store.outage_reads == 0


def test_off_is_closed_even_during_an_outage(world: World) -> None:
    world.protect(portal="off")
    result_of(world.store.open_outage(NAME, T0, "down"))
    assert world.closed() == NOT_ENABLED_TEXT
    assert world.store.outage_reads == 0


def test_a_drill_forces_it_open_and_outage_puts_it_back(world: World) -> None:
    world.protect()
    assert world.closed() == PRIMARY_UP_TEXT
    world.set_policy("open")
    world.later(CACHE_TTL)
    assert world.state() == PortalState(True, "drill")
    world.set_policy("outage")
    world.later(CACHE_TTL)
    assert world.closed() == PRIMARY_UP_TEXT


# -- unknown domains


@pytest.mark.parametrize("name", ["unknown.test", "not a domain", "", "[127.0.0.1]"])
def test_an_unknown_domain_is_closed_like_off(world: World, name: str) -> None:
    world.protect()
    result_of(world.store.open_outage(NAME, T0, "down"))
    assert world.closed(name) == NOT_ENABLED_TEXT
    assert world.state(name) == PortalState(False, "unprotected")
    assert world.store.outage_reads == 0


def test_domains_are_canonicalised(world: World) -> None:
    world.protect("xn--bcher-kva.example")
    result_of(world.store.open_outage("xn--bcher-kva.example", T0, "down"))
    assert world.closed("Bücher.Example") is None
    assert world.closed("XN--BCHER-KVA.EXAMPLE.") is None


def test_a_removed_domain_closes(world: World) -> None:
    world.protect(portal="always")
    assert world.closed() is None
    result_of(world.store.remove_domain(NAME))
    result_of(world.domains.refresh())
    world.later(CACHE_TTL)
    assert world.closed() == NOT_ENABLED_TEXT


# -- the cache


def test_answers_are_cached_for_one_second_per_domain(world: World) -> None:
    world.protect()
    world.protect("other.test")
    assert world.closed() == PRIMARY_UP_TEXT
    assert world.store.outage_reads == 1
    # Roundcube logs in again and again within the second: no store round trip.
    result_of(world.store.open_outage(NAME, T0, "down"))
    for _ in range(30):
        world.clock.advance(CACHE_TTL / 40)
        assert world.closed() == PRIMARY_UP_TEXT
    assert world.store.outage_reads == 1
    # Another domain has its own entry.
    assert world.closed("other.test") == PRIMARY_UP_TEXT
    assert world.store.outage_reads == 2
    # A second after the first answer, the store is asked again and sees the outage.
    world.clock.advance(CACHE_TTL - 30 * CACHE_TTL / 40)
    assert world.closed() is None
    assert world.store.outage_reads == 3
    assert world.closed() is None
    assert world.store.outage_reads == 3


def test_a_store_failure_closes_for_a_moment_and_is_not_cached(world: World) -> None:
    world.protect()
    result_of(world.store.open_outage(NAME, T0, "down"))
    world.store.broken = True
    assert world.closed() == UNAVAILABLE_TEXT
    world.store.broken = False
    assert world.closed() is None  # asked again at once
    assert world.store.outage_reads == 2


def test_time_comes_only_from_the_injected_clock(world: World) -> None:
    # The outage ended at T0, in 2027: by the wall clock its grace period has not even begun,
    # so a portal that read the wall clock would say open.  The injected clock says 48 h later.
    world.protect()
    result_of(world.store.open_outage(NAME, T0 - HOUR, "down"))
    result_of(world.store.close_outage(NAME, T0))
    world.clock.advance(2 * DEFAULT_GRACE)
    assert world.closed() == PRIMARY_UP_TEXT
