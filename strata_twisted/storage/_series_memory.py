"""
The dashboard's time series (#14) in memory: L{ISeriesStore}, and the downsampling rule every
backend follows (L{downsample}).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.model import DOMAIN_STATES, DomainSample


def check_step(step: int) -> int:
    """``step`` if it is a positive whole number of minutes, else ValueError."""
    if isinstance(step, bool) or not isinstance(step, int) or step <= 0 or step % 60:
        raise ValueError(f"step must be a positive multiple of 60 seconds, got {step!r}")
    return step


def downsample(samples: Iterable[DomainSample], step: int) -> list[DomainSample]:
    """
    One point per domain and bucket of ``step`` seconds: the bucket's start, its largest depths
    and its worst state; sorted by bucket, then domain.  (SQLite does the same in SQL.)
    """
    buckets: dict[tuple[int, str], DomainSample] = {}
    rank = DOMAIN_STATES.index
    for s in samples:
        key = (s.at - s.at % step, s.domain)
        was = buckets.get(key)
        if was is None:
            buckets[key] = DomainSample(key[0], s.domain, s.queued, s.held, s.state)
        else:
            worst = s.state if rank(s.state) > rank(was.state) else was.state
            buckets[key] = DomainSample(
                key[0], s.domain, max(was.queued, s.queued), max(was.held, s.held), worst
            )
    return [buckets[key] for key in sorted(buckets)]


class MemorySeriesRole:
    """The points in a dict keyed by ``(at, domain)``."""

    def _init_series_role(self) -> None:
        self._samples: dict[tuple[int, str], DomainSample] = {}

    def record_samples(
        self, samples: Sequence[DomainSample], prune_before: float | None = None
    ) -> Deferred[int]:
        for sample in samples:
            self._samples[(sample.at, sample.domain)] = sample
        if prune_before is None:
            return succeed(0)
        old = [key for key in self._samples if key[0] < prune_before]
        for key in old:
            del self._samples[key]
        return succeed(len(old))

    def read_samples(
        self, since: float, until: float, domains: Sequence[str] | None = None, step: int = 60
    ) -> Deferred[list[DomainSample]]:
        try:
            check_step(step)
        except ValueError as e:
            return fail(e)
        wanted = None if domains is None else set(domains)
        found = [
            s
            for key, s in sorted(self._samples.items())
            if since <= key[0] < until and (wanted is None or key[1] in wanted)
        ]
        return succeed(downsample(found, step))
