"""
Failed-login throttling (core/throttle.py) on a task.Clock: per user, per address, the sliding
window, the exempt (webmail) addresses, what a success clears, and the cap on tracked keys.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from strata_twisted.core import throttle as throttle_module
from strata_twisted.core.throttle import LoginThrottle

WEBMAIL = "10.1.0.5"


def make(
    clock: Clock, *, per_ip: int = 5, per_user: int = 3, window: float = 100.0
) -> LoginThrottle:
    return LoginThrottle(
        clock, per_ip=per_ip, per_user=per_user, window=window, exempt=lambda h: h == WEBMAIL
    )


def test_defaults() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for n in range(9):
        throttle.failed(f"192.0.2.{n}", "u@x.test")
    assert not throttle.refused("192.0.2.200", "u@x.test")
    throttle.failed("192.0.2.9", "u@x.test")  # the 10th failure for the user
    assert throttle.refused("192.0.2.200", "u@x.test")
    for n in range(19):
        throttle.failed("198.51.100.1", f"v{n}@x.test")
    assert not throttle.refused("198.51.100.1", "w@x.test")
    throttle.failed("198.51.100.1", "v19@x.test")  # the 20th failure from the address
    assert throttle.refused("198.51.100.1", "w@x.test")
    clock.advance(899)
    assert throttle.refused("198.51.100.1", "w@x.test")
    clock.advance(1)  # the window is 900 s
    assert not throttle.refused("198.51.100.1", "w@x.test")


def test_a_user_is_refused_after_its_failures_from_anywhere() -> None:
    clock = Clock()
    throttle = make(clock)
    throttle.failed("192.0.2.1", "alice@x.test")
    throttle.failed("192.0.2.2", "alice@x.test")
    assert not throttle.refused("192.0.2.3", "alice@x.test")
    throttle.failed("192.0.2.3", "alice@x.test")
    assert throttle.refused("192.0.2.4", "alice@x.test")  # from a fresh address too
    assert not throttle.refused("192.0.2.4", "bob@x.test")  # another user is not


def test_the_user_refusal_ends_when_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = make(clock)
    throttle.failed("192.0.2.1", "alice@x.test")  # t = 0
    clock.advance(30)
    throttle.failed("192.0.2.1", "alice@x.test")  # t = 30
    throttle.failed("192.0.2.1", "alice@x.test")  # t = 30
    assert throttle.refused("192.0.2.9", "alice@x.test")
    clock.advance(69.5)  # t = 99.5
    assert throttle.refused("192.0.2.9", "alice@x.test")
    clock.advance(0.5)  # t = 100: the first failure is out of the window
    assert not throttle.refused("192.0.2.9", "alice@x.test")
    throttle.failed("192.0.2.1", "alice@x.test")  # two in the window again, plus this one
    assert throttle.refused("192.0.2.9", "alice@x.test")
    clock.advance(30)  # t = 130: both of t = 30 are out
    assert not throttle.refused("192.0.2.9", "alice@x.test")


def test_an_address_is_refused_for_every_user_after_its_failures() -> None:
    clock = Clock()
    throttle = make(clock)
    for n in range(4):
        throttle.failed("192.0.2.1", f"u{n}@x.test")
    assert not throttle.refused("192.0.2.1", "new@x.test")
    throttle.failed("192.0.2.1", None)  # a name that is not even an address counts too
    assert throttle.refused("192.0.2.1", "new@x.test")
    assert throttle.refused("192.0.2.1", None)
    assert not throttle.refused("192.0.2.2", "new@x.test")  # another address is not
    clock.advance(100)
    assert not throttle.refused("192.0.2.1", "new@x.test")


def test_an_exempt_address_is_never_refused_as_an_address_but_its_users_are() -> None:
    clock = Clock()
    throttle = make(clock)
    for n in range(50):
        throttle.failed(WEBMAIL, f"u{n}@x.test")
    assert not throttle.refused(WEBMAIL, "new@x.test")
    for _ in range(3):
        throttle.failed(WEBMAIL, "alice@x.test")
    assert throttle.refused(WEBMAIL, "alice@x.test")
    assert throttle.refused("192.0.2.7", "alice@x.test")
    assert not throttle.refused(WEBMAIL, "bob@x.test")


def test_the_exemption_is_asked_both_when_failing_and_when_refusing() -> None:
    # The exempt set may change (the webmail's network configured later): failures made while an
    # address was exempt never count against it, and an address that became exempt is let in.
    clock = Clock()
    exempt: set[str] = set()
    throttle = LoginThrottle(clock, per_ip=2, per_user=100, exempt=lambda h: h in exempt)
    for n in range(2):
        throttle.failed("192.0.2.1", f"u{n}@x.test")
    assert throttle.refused("192.0.2.1", "v@x.test")
    exempt.add("192.0.2.1")
    assert not throttle.refused("192.0.2.1", "v@x.test")
    exempt.add("192.0.2.2")
    for n in range(5):
        throttle.failed("192.0.2.2", f"w{n}@x.test")
    exempt.discard("192.0.2.2")
    assert not throttle.refused("192.0.2.2", "v@x.test")


def test_a_success_clears_the_users_count_not_the_addresss() -> None:
    clock = Clock()
    throttle = make(clock)
    for _ in range(2):
        throttle.failed("192.0.2.1", "alice@x.test")
    for n in range(2):
        throttle.failed("192.0.2.1", f"other{n}@x.test")
    throttle.succeeded("alice@x.test")
    throttle.failed("192.0.2.2", "alice@x.test")
    throttle.failed("192.0.2.2", "alice@x.test")
    assert not throttle.refused("192.0.2.2", "alice@x.test")  # 2 since the success, not 4
    throttle.failed("192.0.2.1", "x@x.test")  # the address's 5th failure: not cleared
    assert throttle.refused("192.0.2.1", "bob@x.test")


def test_a_user_name_is_a_key_as_given() -> None:
    # The adapter passes the canonical address; the throttle itself does not fold case.
    clock = Clock()
    throttle = make(clock)
    for _ in range(3):
        throttle.failed("192.0.2.1", "alice@x.test")
    assert throttle.refused("192.0.2.1", "alice@x.test")
    assert not throttle.refused("192.0.2.2", "Alice@x.test")


def test_tracked_keys_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_module, "MAX_TRACKED", 2)
    clock = Clock()
    throttle = LoginThrottle(clock, per_ip=1, per_user=1, window=100)
    throttle.failed("192.0.2.1", "a@x.test")
    assert throttle.refused("192.0.2.9", "a@x.test")
    throttle.failed("192.0.2.2", "b@x.test")
    throttle.failed("192.0.2.2", "b@x.test")  # an existing key: nothing is dropped
    assert throttle.refused("192.0.2.9", "a@x.test")
    throttle.failed("192.0.2.3", "c@x.test")  # a third key: the oldest one (a) is dropped
    assert not throttle.refused("192.0.2.9", "a@x.test")
    assert throttle.refused("192.0.2.9", "b@x.test")
    assert throttle.refused("192.0.2.9", "c@x.test")
    assert not throttle.refused("192.0.2.1", None)  # the address table too
    assert throttle.refused("192.0.2.3", None)
