# -*- test-case-name: tests.test_core_throttle -*-
"""
Failed-login throttling: a guesser is slowed down, never is a user locked out (DESIGN decision
12, issue 11).

Dovecot's auth penalty is the model: each failure from a source makes that source's next attempt
wait longer before its password is even checked, doubling up to a bound, and the right password
still logs in.  L{LoginThrottle} says how long an attempt must wait (L{LoginThrottle.wait}); the
caller awaits that on the injected clock, then checks the password, then reports the outcome
(L{LoginThrottle.failed}, L{LoginThrottle.succeeded}).  Nothing here ever refuses a login, and
no attempt ever waits more than ``max_delay``.

Three records are kept, each forgotten ``FORGET_AFTER`` seconds after its last failure:

- per user and source address: the failures of that pair.  Its attempts wait
  L{delay}(failures): 1 s after one failure, then 2, 4, 8 s... up to ``max_delay``, counted from
  the pair's last failure.  This is what slows a guesser at one account.
- per source address: the distinct users that failed from it.  From the ``SPRAY_USERS``-th on,
  every attempt from there waits (a password sprayed over many accounts).  A source shared by
  many users (an address of the trusted networks: the webmail host when it does not say whose
  browser it speaks for) is never slowed as a whole: its users are slowed one by one through
  the pair record.
- per user: the distinct source addresses that failed for it.  From the ``SPREAD_SOURCES``-th
  on, attempts for that user wait (a guess spread over many addresses), except from the sources
  that logged in as that user successfully within ``KNOWN_FOR``: others' failures never slow a
  user at the places she is known to log in from.

A wrong guess from one place therefore costs only that place: 200 failures for alice from one
address slow that address (for alice) and nobody else.  IPv6 addresses count by their /64, the
block one customer usually holds, so that a guesser cannot take a fresh address per attempt.

The tables are ordered by last use and capped at L{MAX_TRACKED} keys each (the oldest goes first),
and expired records are swept as new failures come in, so a flood of addresses or made-up user
names cannot grow memory without bound (about 85 MB with every table full, measured).

L{SlidingWindow}, events per key in a sliding window, serves submission's sending limit.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

MAX_TRACKED: Final = 100_000
"""At most this many keys per table (addresses, users, pairs); past it the oldest go first."""

FIRST_DELAY: Final = 1.0
"""Seconds the first counted failure costs; each further one doubles it, up to ``max_delay``."""

SPRAY_USERS: Final = 5
"""Distinct users failing from one address before every attempt from there waits."""

SPREAD_SOURCES: Final = 5
"""Distinct addresses failing for one user before attempts from unknown addresses wait."""

FORGET_AFTER: Final = 900.0
"""Seconds after its last failure that a record is forgotten (the delays start again at 1 s)."""

KNOWN_FOR: Final = 7 * 24 * 3600.0
"""How long a source that logged in successfully as a user is spared the others' failures."""

MAX_DISTINCT: Final = 32
"""Distinct users per address, addresses per user (and known sources per user) kept at most."""

MAX_KEY_LENGTH: Final = 320
"""A user name is keyed on its first 320 characters (RFC 5321's longest address, and some)."""


def delay(count: int, free: int, max_delay: float) -> float:
    """
    The wait after ``count`` counted failures when the first ``free - 1`` cost nothing:
    0 below ``free``, then L{FIRST_DELAY} doubling with each one more, never above
    ``max_delay``.
    """
    if count < free or max_delay <= 0:
        return 0.0
    # 2**60 s is far beyond any max_delay; the exponent is capped so the float never overflows.
    return min(max_delay, FIRST_DELAY * 2.0 ** min(count - free, 60))


def source_key(host: str) -> str:
    """
    The address a throttle record is kept for: an IPv4 address as it is (IPv4-mapped IPv6 too),
    an IPv6 address as its /64, anything else (a name, "unknown") as given.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:MAX_KEY_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Pair:
    failures: int
    last: float


@dataclass(slots=True)
class _Distinct:
    """Distinct names (users, or addresses) that failed, each with its last failure, oldest
    first (a dict keeps insertion order)."""

    names: dict[str, float] = field(default_factory=dict)
    last: float = 0.0

    def add(self, name: str, now: float) -> None:
        names = self.names
        names.pop(name, None)
        names[name] = now
        while len(names) > MAX_DISTINCT:
            del names[next(iter(names))]
        self.last = now

    def count(self, now: float) -> int:
        """The names that failed within L{FORGET_AFTER} of ``now`` (older ones are dropped)."""
        names = self.names
        while names:
            name, when = next(iter(names.items()))
            if when > now - FORGET_AFTER:
                break
            del names[name]
        return len(names)


K = TypeVar("K")
V = TypeVar("V")


class _Table(Generic[K, V]):
    """Records by key, oldest use first; capped at L{MAX_TRACKED}, expired ones swept."""

    def __init__(self, stamp: Callable[[V], float], lifetime: float) -> None:
        self._records: dict[K, V] = {}
        self._stamp = stamp
        self._lifetime = lifetime

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: K, now: float) -> V | None:
        record = self._records.get(key)
        if record is not None and self._stamp(record) <= now - self._lifetime:
            del self._records[key]
            return None
        return record

    def put(self, key: K, record: V, now: float) -> None:
        """Store ``record`` as the most recently used; sweep the expired and the excess."""
        records = self._records
        records.pop(key, None)  # re-inserted: the most recent at the end
        records[key] = record
        while records:
            oldest_key, oldest = next(iter(records.items()))
            if self._stamp(oldest) > now - self._lifetime and len(records) <= MAX_TRACKED:
                break
            del records[oldest_key]

    def pop(self, key: K) -> None:
        self._records.pop(key, None)


class LoginThrottle:
    """
    How long a login attempt waits before its password is checked, from the failures seen.

    ``source`` is the client's address as the throttle should see it: the end user's, when the
    webmail forwarded it (IMAP ID, SMTP XCLIENT), else the connecting peer's.  ``shared``: the
    source logs in for many users (an address of the trusted networks, such as the webmail
    when it did not say for whom); it is never slowed as an address.  ``user`` is the canonical
    address (or, for a name that is not one, the name as given, lower-cased by the caller).

    ``max_delay``: the longest any attempt waits, in seconds; 0 turns the delays off.
    """

    def __init__(self, clock: IReactorTime, *, max_delay: float = 15.0) -> None:
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        self._clock = clock
        self.max_delay = max_delay
        self._pairs: _Table[tuple[str, str], _Pair] = _Table(lambda r: r.last, FORGET_AFTER)
        self._by_source: _Table[str, _Distinct] = _Table(lambda r: r.last, FORGET_AFTER)
        self._by_user: _Table[str, _Distinct] = _Table(lambda r: r.last, FORGET_AFTER)
        # user -> {source: last successful login}, oldest first
        self._known: _Table[str, dict[str, float]] = _Table(
            lambda r: next(reversed(r.values())), KNOWN_FOR
        )

    def tracked(self) -> dict[str, int]:
        """How many keys each table holds now (for tests and diagnostics)."""
        return {
            "pairs": len(self._pairs),
            "sources": len(self._by_source),
            "users": len(self._by_user),
            "known": len(self._known),
        }

    def wait(self, source: str, user: str, *, shared: bool = False) -> float:
        """Seconds the attempt from ``source`` as ``user`` must wait (0 to ``max_delay``)."""
        now = self._clock.seconds()
        where, who = source_key(source), user[:MAX_KEY_LENGTH]
        left = 0.0
        pair = self._pairs.get((who, where), now)
        if pair is not None:
            left = max(left, pair.last + self._delay(pair.failures, 1) - now)
        known = self._known.get(who, now)
        if known is not None and where in known and known[where] > now - KNOWN_FOR:
            return left  # others' failures never slow a user where she is known
        if not shared:
            sprayed = self._by_source.get(where, now)
            if sprayed is not None:
                count = sprayed.count(now)
                left = max(left, sprayed.last + self._delay(count, SPRAY_USERS) - now)
        spread = self._by_user.get(who, now)
        if spread is not None:
            count = spread.count(now)
            left = max(left, spread.last + self._delay(count, SPREAD_SOURCES) - now)
        return max(0.0, min(left, self.max_delay))

    def failed(self, source: str, user: str, *, shared: bool = False) -> None:
        """Count a failed attempt (wrong password, unknown user, a name that is no address)."""
        now = self._clock.seconds()
        where, who = source_key(source), user[:MAX_KEY_LENGTH]
        pair = self._pairs.get((who, where), now)
        failures = pair.failures + 1 if pair is not None else 1
        self._pairs.put((who, where), _Pair(failures, now), now)
        if not shared:
            sprayed = self._by_source.get(where, now) or _Distinct()
            sprayed.add(who, now)
            self._by_source.put(where, sprayed, now)
        spread = self._by_user.get(who, now) or _Distinct()
        spread.add(where, now)
        self._by_user.put(who, spread, now)

    def succeeded(self, source: str, user: str, *, verified: bool = True) -> None:
        """
        A login with the right password: the source becomes known for the user.  ``verified``:
        the password went through a full check (not a cache hit); only then are the pair's
        failures cleared, so that a guesser who shares the address (a NAT) gains nothing from
        the real user's cached logins.
        """
        now = self._clock.seconds()
        where, who = source_key(source), user[:MAX_KEY_LENGTH]
        if verified:
            self._pairs.pop((who, where))
        known = self._known.get(who, now) or {}
        known.pop(where, None)
        known[where] = now
        while len(known) > MAX_DISTINCT:
            del known[next(iter(known))]
        self._known.put(who, known, now)

    def _delay(self, count: int, free: int) -> float:
        return delay(count, free, self.max_delay)


class SlidingWindow:
    """Event times per key within a sliding window of ``window`` seconds (``limit`` at most)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def exceeded(self, key: str, now: float) -> bool:
        times = self._recent(key, now)
        return times is not None and len(times) >= self.limit

    def add(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        if times is None:
            if len(self._times) >= MAX_TRACKED:
                # dicts keep insertion order: drop the key tracked longest.
                del self._times[next(iter(self._times))]
            times = self._times[key] = deque(maxlen=self.limit)
        times.append(now)

    def clear(self, key: str) -> None:
        self._times.pop(key, None)
