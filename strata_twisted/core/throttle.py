# -*- test-case-name: tests.test_core_throttle -*-
"""
Failed-login throttling, per client address and per user (issue 4, "Limits and abuse").

A password guesser is slowed two ways: an address that failed too many logins within the window
is refused outright, and so is a user whose password failed too often from anywhere (a
distributed guess at one account).  A refused attempt is answered ``NO [UNAVAILABLE]`` without
checking the password, so it costs the server nothing and tells the guesser nothing.

Roundcube logs in on every web request from one address (DESIGN "IMAP"): the webmail host must
not be shut out because some of its users mistype.  So addresses the caller exempts (loopback and
the configured trusted networks, where the webmail runs) are never throttled as addresses; their
users still are, one by one.  A successful login clears the user's count, not the address's.

Failures are kept as timestamps on the injected clock, pruned as they leave the window; the tables
are capped so that a flood of distinct addresses cannot grow memory without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IReactorTime

MAX_TRACKED: Final = 100_000
"""At most this many addresses (and users) are tracked; past it the oldest entries are dropped."""


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


class LoginThrottle:
    """
    ``per_ip`` failures from one address, or ``per_user`` failures for one user, within
    ``window`` seconds, and further attempts are refused until the oldest failure leaves the
    window.  ``exempt(host)``: addresses never throttled as addresses (the webmail's).
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        per_ip: int = 20,
        per_user: int = 10,
        window: float = 900.0,
        exempt: Callable[[str], bool] = lambda host: False,
    ) -> None:
        self._clock = clock
        self._ip = SlidingWindow(per_ip, window)
        self._user = SlidingWindow(per_user, window)
        self._exempt = exempt

    def refused(self, host: str, user: str | None) -> bool:
        """Whether an attempt from ``host`` as ``user`` is refused before its password is read."""
        now = self._clock.seconds()
        if not self._exempt(host) and self._ip.exceeded(host, now):
            return True
        return user is not None and self._user.exceeded(user, now)

    def failed(self, host: str, user: str | None) -> None:
        now = self._clock.seconds()
        if not self._exempt(host):
            self._ip.add(host, now)
        if user is not None:
            self._user.add(user, now)

    def succeeded(self, user: str) -> None:
        self._user.clear(user)
