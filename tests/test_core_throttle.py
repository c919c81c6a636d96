"""
Failed-login throttling (core/throttle.py) on a task.Clock: the exact delays per user and
address, the sprayed and the spread guess, the places a user is known from, what a success
clears, how records decay and the bound on memory.  Nothing here is ever refused: the throttle
only says how long to wait, and never longer than ``max_delay``.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from strata_twisted.core import throttle as throttle_module
from strata_twisted.core.throttle import (
    FORGET_AFTER,
    KNOWN_FOR,
    SPRAY_USERS,
    SPREAD_SOURCES,
    LoginThrottle,
    delay,
    source_key,
)

ALICE = "alice@x.test"
BOB = "bob@x.test"
GUESSER = "198.51.100.3"
HOME = "198.51.100.2"


def make(max_delay: float = 15.0) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    clock.advance(1_800_000_000)
    return LoginThrottle(clock, max_delay=max_delay), clock


def fail(throttle: LoginThrottle, source: str, user: str, times: int = 1) -> None:
    for _ in range(times):
        throttle.failed(source, user)


def test_the_schedule_doubles_from_one_second_up_to_the_bound() -> None:
    assert [delay(n, 1, 15.0) for n in range(8)] == [0, 1, 2, 4, 8, 15, 15, 15]
    assert [delay(n, 5, 15.0) for n in range(4, 10)] == [0, 1, 2, 4, 8, 15]
    assert delay(10**9, 1, 15.0) == 15.0  # no overflow however many failures
    assert delay(3, 1, 0.5) == 0.5
    assert delay(3, 1, 0.0) == 0.0  # max_delay 0: no delays at all


def test_each_failure_doubles_the_pairs_wait_counted_from_the_last_failure() -> None:
    throttle, clock = make()
    assert throttle.wait(GUESSER, ALICE) == 0
    waits = []
    for _ in range(7):
        throttle.failed(GUESSER, ALICE)
        waits.append(throttle.wait(GUESSER, ALICE))
    assert waits == [1, 2, 4, 8, 15, 15, 15]
    clock.advance(10)
    assert throttle.wait(GUESSER, ALICE) == 5  # 15 s after the last failure
    clock.advance(5)
    assert throttle.wait(GUESSER, ALICE) == 0
    # The count stays until it is forgotten: the next failure costs the full bound again.
    throttle.failed(GUESSER, ALICE)
    assert throttle.wait(GUESSER, ALICE) == 15


def test_the_issue_scenario_200_guesses_cost_only_the_guessers_address() -> None:
    throttle, clock = make()
    fail(throttle, GUESSER, ALICE, 200)
    # The right password from another address: no wait at all.
    assert throttle.wait(HOME, ALICE) == 0
    assert throttle.wait("2001:db8::7", ALICE) == 0
    # From the guesser's own address: within the bound, and less as time passes.
    assert throttle.wait(GUESSER, ALICE) == 15
    clock.advance(6)
    assert throttle.wait(GUESSER, ALICE) == 9
    # Other users at the guesser's address are not slowed by failures for one user.
    assert throttle.wait(GUESSER, BOB) == 0


def test_a_sprayed_password_slows_the_address_for_every_user() -> None:
    throttle, clock = make()
    for n in range(SPRAY_USERS - 1):
        throttle.failed(GUESSER, f"u{n}@x.test")
    assert throttle.wait(GUESSER, BOB) == 0
    throttle.failed(GUESSER, f"u{SPRAY_USERS}@x.test")  # the 5th distinct user
    assert throttle.wait(GUESSER, BOB) == 1
    throttle.failed(GUESSER, "v@x.test")
    throttle.failed(GUESSER, "w@x.test")
    assert throttle.wait(GUESSER, BOB) == 4
    # Failing again for a user already counted adds no distinct user.
    throttle.failed(GUESSER, "w@x.test")
    assert throttle.wait(GUESSER, BOB) == 4
    assert throttle.wait(HOME, BOB) == 0  # another address is not slowed
    clock.advance(4)
    assert throttle.wait(GUESSER, BOB) == 0


def test_a_shared_host_is_never_slowed_as_an_address_only_user_by_user() -> None:
    # The webmail host that names nobody logs in for all its users.
    webmail = "10.1.0.5"
    throttle, _ = make()
    for n in range(50):
        throttle.failed(webmail, f"u{n}@x.test", shared=True)
    assert throttle.wait(webmail, BOB, shared=True) == 0
    for _ in range(3):
        throttle.failed(webmail, ALICE, shared=True)
    assert throttle.wait(webmail, ALICE, shared=True) == 4  # that user, through that host
    assert throttle.wait(webmail, BOB, shared=True) == 0


def test_a_guess_spread_over_addresses_slows_the_user_but_not_where_she_is_known() -> None:
    throttle, clock = make()
    throttle.succeeded(HOME, ALICE)  # alice logs in from home
    for n in range(SPREAD_SOURCES - 1):
        throttle.failed(f"203.0.113.{n}", ALICE)
    assert throttle.wait("192.0.2.99", ALICE) == 0
    throttle.failed(f"203.0.113.{SPREAD_SOURCES}", ALICE)  # the 5th distinct address
    assert throttle.wait("192.0.2.99", ALICE) == 1  # an address never seen with alice
    for n in range(10, 14):
        throttle.failed(f"203.0.113.{n}", ALICE)
    assert throttle.wait("192.0.2.99", ALICE) == 15
    # Others' failures never slow alice where she logged in lately...
    assert throttle.wait(HOME, ALICE) == 0
    # ...nor other users.
    assert throttle.wait("192.0.2.99", BOB) == 0
    # A place is known for KNOWN_FOR after the last success there.
    clock.advance(KNOWN_FOR - FORGET_AFTER)
    for n in range(20, 26):
        throttle.failed(f"203.0.113.{n}", ALICE)
    assert throttle.wait(HOME, ALICE) == 0
    clock.advance(FORGET_AFTER)
    for n in range(30, 36):  # six distinct addresses now (the older ones are forgotten)
        throttle.failed(f"203.0.113.{n}", ALICE)
    assert throttle.wait(HOME, ALICE) == 2  # no longer known: slowed like any address


def test_a_verified_success_clears_the_pair_a_cached_one_does_not() -> None:
    throttle, _ = make()
    fail(throttle, HOME, ALICE, 3)
    assert throttle.wait(HOME, ALICE) == 4
    # A login that hit the verification cache (the same pair: a guesser may share the NAT).
    throttle.succeeded(HOME, ALICE, verified=False)
    assert throttle.wait(HOME, ALICE) == 4
    throttle.succeeded(HOME, ALICE)
    assert throttle.wait(HOME, ALICE) == 0
    throttle.failed(HOME, ALICE)
    assert throttle.wait(HOME, ALICE) == 1  # counting starts again


def test_no_wait_ever_exceeds_the_bound_even_with_every_record_full() -> None:
    throttle, _ = make(max_delay=2.5)
    for n in range(20):
        throttle.failed(GUESSER, f"u{n}@x.test")
        throttle.failed(f"203.0.113.{n}", ALICE)
        throttle.failed(GUESSER, ALICE)
    assert throttle.wait(GUESSER, ALICE) == 2.5
    off, _ = make(max_delay=0)
    fail(off, GUESSER, ALICE, 50)
    assert off.wait(GUESSER, ALICE) == 0


def test_ipv6_addresses_count_by_their_64() -> None:
    assert source_key("2001:db8:1:2::7") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("unknown") == "unknown"
    throttle, _ = make()
    throttle.failed("2001:db8:1:2::7", ALICE)
    throttle.failed("2001:db8:1:2:ffff::1", ALICE)  # another address, the same /64
    assert throttle.wait("2001:db8:1:2::99", ALICE) == 2
    assert throttle.wait("2001:db8:1:3::1", ALICE) == 0


def test_records_are_forgotten_after_a_quiet_while() -> None:
    throttle, clock = make()
    fail(throttle, GUESSER, ALICE, 10)
    for n in range(10):
        throttle.failed(GUESSER, f"u{n}@x.test")
        throttle.failed(f"203.0.113.{n}", BOB)
    clock.advance(FORGET_AFTER - 1)
    assert throttle.wait(GUESSER, ALICE) == 0  # the 15 s have long passed...
    throttle.failed(GUESSER, ALICE)
    assert throttle.wait(GUESSER, ALICE) == 15  # ...but the count was not yet forgotten
    clock.advance(FORGET_AFTER)
    throttle.failed(GUESSER, ALICE)
    assert throttle.wait(GUESSER, ALICE) == 1  # forgotten: it starts again
    # Expired records are swept as new failures come in: only the fresh ones remain.
    assert throttle.tracked() == {"pairs": 1, "sources": 1, "users": 1, "known": 0}


def test_memory_stays_bounded_under_a_flood_of_addresses_and_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(throttle_module, "MAX_TRACKED", 100)
    throttle, clock = make()
    throttle.succeeded(HOME, ALICE)
    long = "x" * 900
    for n in range(5000):
        throttle.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"user{n}@x.test{long}")
        throttle.failed(f"2001:db8:{n:x}::1", ALICE)
        throttle.succeeded(f"192.0.{n // 256 % 256}.{n % 256}", f"v{n}@x.test")
        clock.advance(0.01)
    tracked = throttle.tracked()
    assert all(size <= 100 for size in tracked.values()), tracked
    assert tracked["pairs"] == 100
    # Per record, at most MAX_DISTINCT names are kept (alice failed from 5000 /64s).
    record = throttle._by_user.get(ALICE, clock.seconds())
    assert record is not None and len(record.names) == throttle_module.MAX_DISTINCT
    # Names are keyed on their first MAX_KEY_LENGTH characters.
    assert all(len(who) <= 320 for who, _ in throttle._pairs._records)
    # The newest records are the ones kept: the flood's last guess still waits.
    assert throttle.wait("10.0.19.135", f"user4999@x.test{long}") == pytest.approx(0.99)
    now = clock.seconds()
    assert throttle._pairs.get((f"user0@x.test{long}"[:320], "10.0.0.0"), now) is None
