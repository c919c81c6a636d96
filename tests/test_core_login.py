"""
The login check (core/login.py) on a task.Clock: a guesser's attempts wait out their delay on the
injected clock before any password is checked, the right password is never refused (issue 11's
scenario: 200 wrong passwords for alice from 127.0.0.3), the webmail's forwarded address is
honoured only from a trusted host, and failed logins and portal refusals are logged with the
client's address, the forwarded one and the reason (issue 11, point 8).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent

from strata_twisted.core.credentials import VerificationCache, hash_password
from strata_twisted.core.login import Authenticator, LoginResult, networks
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of
from tests.imap_harness import CountingExecutor

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse"  # noqa: S105 (a test user's)
OUTSIDE = "192.0.2.44"  # no trusted network
WEBMAIL = "10.1.0.5"  # in the trusted network
CLOSED = "Your primary mail server is working; please use your usual mail app."


class Login:
    """An Authenticator over a memory store with ALICE and BOB, on a Clock."""

    def __init__(self, *, max_delay: float = 15.0) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = MemoryStore(self.clock)
        for user in (ALICE, BOB):
            result_of(self.store.set_user(user, hash_password(PASSWORD, "SSHA512").text))
        self.executor = CountingExecutor()
        self.closed: set[str] = set()
        self.auth = Authenticator(
            self.clock,
            self.store,
            self.executor,
            lambda domain: CLOSED if domain in self.closed else None,
            cache=VerificationCache(ttl=300),
            throttle=LoginThrottle(self.clock, max_delay=max_delay),
            trusted_networks=networks(["10.1.0.0/16"]),
        )

    def start(
        self, client: str, user: str, password: str = PASSWORD, forwarded: str | None = None
    ) -> Deferred[LoginResult]:
        return Deferred.fromCoroutine(self.auth.login(client, user, password, forwarded=forwarded))

    def attempt(
        self, client: str, user: str, password: str = PASSWORD, forwarded: str | None = None
    ) -> LoginResult:
        """One login, the clock advanced exactly as far as its delay asks."""
        d = self.start(client, user, password, forwarded)
        while not d.called:
            calls = self.clock.getDelayedCalls()
            assert calls, "the login waits for nothing"
            self.clock.advance(min(c.getTime() for c in calls) - self.clock.seconds())
        return result_of(d)


@pytest.fixture
def h() -> Iterator[Login]:
    yield Login()


def messages(logs: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(e) or "" for e in logs]


def test_a_guessers_attempt_waits_on_the_clock_before_its_password_is_checked(h: Login) -> None:
    assert h.attempt(OUTSIDE, ALICE, "guess").refusal == "failed"
    checks = h.executor.calls
    d = h.start(OUTSIDE, ALICE, "guess 2")
    h.clock.advance(0.999)
    assert not d.called and h.executor.calls == checks  # waiting: no hash run yet
    h.clock.advance(0.001)
    result = result_of(d)
    assert (result.refusal, result.waited) == ("failed", 1.0)
    assert h.executor.calls == checks + 1
    # The right password from the guesser's address: it waits too (2 s now), then logs in.
    d = h.start(OUTSIDE, ALICE)
    h.clock.advance(1.999)
    assert not d.called
    h.clock.advance(0.001)
    assert result_of(d) == LoginResult(ALICE, waited=2.0)


def guess_200_times(h: Login, guesser: str) -> list[float]:
    start = h.clock.seconds()
    waits = [h.attempt(guesser, ALICE, f"guess{n}").waited for n in range(200)]
    assert h.clock.seconds() - start == sum(waits)
    return waits


def test_the_issue_scenario_200_wrong_passwords_never_lock_alice_out(h: Login) -> None:
    guesser = "127.0.0.3"  # loopback: trusted, so never slowed as an address, only for alice
    assert guess_200_times(h, guesser) == [0, 1, 2, 4, 8] + [15] * 195
    # The right password from another address: at once, and checked in full (no cache yet).
    checks = h.executor.calls
    assert result_of(h.start("127.0.0.2", ALICE)) == LoginResult(ALICE)
    assert h.executor.calls == checks + 1
    # Submission shares the Authenticator: the same holds for AUTH (one check for both).
    assert result_of(h.start("127.0.0.2", BOB)) == LoginResult(BOB)
    # Now that alice's password verified, it passes at once from anywhere for the cache's
    # lifetime, the guesser's address included: only the right password can hit the cache.
    assert result_of(h.start(guesser, ALICE)) == LoginResult(ALICE)


def test_the_right_password_from_the_guessers_own_address_waits_at_most_the_bound(
    h: Login,
) -> None:
    guess_200_times(h, "127.0.0.3")
    assert h.attempt("127.0.0.3", ALICE) == LoginResult(ALICE, waited=15.0)
    # A verified login clears that address's count for alice: the next mistype costs 1 s.
    assert h.attempt("127.0.0.3", ALICE, "typo").waited == 0
    assert h.attempt("127.0.0.3", ALICE, "typo").waited == 1


def test_a_password_that_logged_in_lately_never_waits(h: Login) -> None:
    home = "198.51.100.20"  # a NAT that alice shares with a guesser
    assert h.attempt(home, ALICE) == LoginResult(ALICE)
    for n in range(6):
        h.attempt(home, ALICE, f"guess{n}")
    checks = h.executor.calls
    # Roundcube logs in on every request: the cached right password passes at once, unchecked.
    for _ in range(3):
        assert result_of(h.start(home, ALICE)) == LoginResult(ALICE)
    assert h.executor.calls == checks
    # ...and does not clear the pair's failures for the guesser.
    assert h.attempt(home, ALICE, "guess again").waited == 15


def test_the_webmails_forwarded_address_is_what_the_throttle_counts(h: Login) -> None:
    guesser, user = "203.0.113.9", "198.51.100.7"
    for n in range(5):
        h.attempt(WEBMAIL, ALICE, f"guess{n}", forwarded=guesser)
    assert h.attempt(WEBMAIL, ALICE, "guess", forwarded=guesser).waited == 15
    # Alice in her own browser, through the same webmail host: at once.
    assert result_of(h.start(WEBMAIL, ALICE, forwarded=user)) == LoginResult(ALICE)
    # The forwarded address is an address like any: spraying from it slows it for every user
    # (six distinct users failed from it now: 2 s).
    for n in range(5):
        h.attempt(WEBMAIL, f"u{n}@example.test", "guess", forwarded=guesser)
    assert h.attempt(WEBMAIL, BOB, forwarded=guesser) == LoginResult(BOB, waited=2.0)


def test_the_webmail_naming_nobody_slows_user_by_user_never_everyone(h: Login) -> None:
    for n in range(30):
        h.attempt(WEBMAIL, f"u{n}@example.test", "guess")
    for n in range(3):
        h.attempt(WEBMAIL, ALICE, f"guess{n}")
    assert result_of(h.start(WEBMAIL, BOB)) == LoginResult(BOB)  # others: at once
    assert h.attempt(WEBMAIL, ALICE) == LoginResult(ALICE, waited=4.0)  # that user: delayed


def test_a_forwarded_address_of_our_own_networks_is_slowed_user_by_user_only(h: Login) -> None:
    # A reverse proxy in front of the webmail that the webmail was not told about: every
    # browser looks like the proxy.  One guesser behind it must not slow everyone.
    proxy = "10.1.0.77"
    for n in range(30):
        h.attempt(WEBMAIL, f"u{n}@example.test", "guess", forwarded=proxy)
    assert result_of(h.start(WEBMAIL, BOB, forwarded=proxy)) == LoginResult(BOB)


def test_a_forwarded_address_from_an_untrusted_client_is_ignored(h: Login) -> None:
    for n in range(3):
        h.attempt(OUTSIDE, ALICE, f"guess{n}", forwarded=f"203.0.113.{n}")
    # Counted against the peer itself, whatever it claimed.
    assert h.attempt(OUTSIDE, ALICE, forwarded="203.0.113.77") == LoginResult(ALICE, waited=4.0)


def test_a_spread_guess_slows_alice_at_new_addresses_never_where_she_is_known(
    h: Login,
) -> None:
    home = "198.51.100.2"
    assert h.attempt(home, ALICE) == LoginResult(ALICE)
    h.clock.advance(301)  # past the verification cache: the logins below are checked in full
    for n in range(12):
        h.attempt(f"203.0.113.{n}", ALICE, "guess")
    checks = h.executor.calls
    assert result_of(h.start(home, ALICE)) == LoginResult(ALICE)  # at home: no wait
    assert h.executor.calls == checks + 1
    h.clock.advance(301)
    for n in range(12, 20):
        h.attempt(f"203.0.113.{n}", ALICE, "guess")
    # A new place waits, within the bound, and gets in.
    assert h.attempt("192.0.2.200", ALICE) == LoginResult(ALICE, waited=15.0)


# -- what operators see (issue 11, point 8) -------------------------------------------------------


def test_failed_logins_are_logged_with_the_address_and_the_reason(h: Login) -> None:
    with capturedLogs() as logs:
        h.attempt(OUTSIDE, ALICE, "guess")
        h.attempt(OUTSIDE, ALICE, "guess")
        h.attempt(OUTSIDE, "nobody@example.test", "guess")
        h.attempt(OUTSIDE, "not an address", "guess")
    assert messages(logs) == [
        "login failed for 'alice@example.test' from 192.0.2.44: wrong password",
        "login failed for 'alice@example.test' from 192.0.2.44: wrong password (after a 1 s delay)",
        "login failed for 'nobody@example.test' from 192.0.2.44: unknown user",
        "login failed for 'not an address' from 192.0.2.44: not a valid address",
    ]
    assert [(e["client"], e["origin"], e["reason"]) for e in logs][0] == (
        OUTSIDE,
        None,
        "wrong password",
    )


def test_a_forwarded_address_is_logged_beside_the_webmails(h: Login) -> None:
    with capturedLogs() as logs:
        h.attempt(WEBMAIL, BOB, "guess", forwarded="2001:db8::5")
        # From an untrusted client the claim is not honoured, so not logged as the origin.
        h.attempt(OUTSIDE, BOB, "guess", forwarded="2001:db8::5")
    assert messages(logs) == [
        "login failed for 'bob@example.test' from 2001:db8::5 via 10.1.0.5: wrong password",
        "login failed for 'bob@example.test' from 192.0.2.44: wrong password",
    ]
    assert (logs[0]["client"], logs[0]["origin"]) == (WEBMAIL, "2001:db8::5")


def test_portal_refusals_are_logged_with_the_address_and_the_reason(h: Login) -> None:
    h.closed.add("example.test")
    with capturedLogs() as logs:
        result = h.attempt(WEBMAIL, ALICE, forwarded="198.51.100.7")
    assert (result.refusal, result.text) == ("portal", CLOSED)
    assert messages(logs) == [
        f"login refused for alice@example.test from 198.51.100.7 via 10.1.0.5: portal closed"
        f" ({CLOSED})"
    ]
    assert logs[0]["reason"] == "portal closed"


def test_an_authzid_for_someone_else_is_logged(h: Login) -> None:
    with capturedLogs() as logs:
        d = Deferred.fromCoroutine(h.auth.login(OUTSIDE, ALICE, PASSWORD, BOB))
    assert result_of(d).refusal == "failed"
    assert messages(logs) == [
        "login failed for 'alice@example.test' from 192.0.2.44: may not act as 'bob@example.test'"
    ]
