"""
The dashboard's time series (#14) in memory: L{ISeriesStore}, and the rules every backend
follows: downsampling (L{downsample}, L{downsample_totals}) and keeping the state runs in step
with the points (L{rewrite_runs}).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.model import DOMAIN_STATES, DomainSample, SeriesTotal, StateRun

MINUTE = 60


def check_step(step: int) -> int:
    """``step`` if it is a positive whole number of minutes, else ValueError."""
    if isinstance(step, bool) or not isinstance(step, int) or step <= 0 or step % MINUTE:
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


def downsample_totals(totals: Iterable[SeriesTotal], step: int) -> list[SeriesTotal]:
    """One total per bucket of ``step`` seconds (of one scope): the bucket's start and its
    largest ``queued`` and ``held``; sorted by bucket.  (SQLite does the same in SQL.)"""
    buckets: dict[int, SeriesTotal] = {}
    for t in totals:
        at = t.at - t.at % step
        was = buckets.get(at)
        if was is None:
            buckets[at] = SeriesTotal(at, t.scope, t.queued, t.held)
        else:
            buckets[at] = SeriesTotal(at, t.scope, max(was.queued, t.queued), max(was.held, t.held))
    return [buckets[at] for at in sorted(buckets)]


def rewrite_runs(touching: Sequence[StateRun], sample: DomainSample) -> list[StateRun]:
    """
    The runs that replace ``touching`` once ``sample`` is its domain's point for the minute
    ``[at, at + 60)``; ``touching`` is every run of the domain that overlaps that minute or
    ends or starts at its edges (at most three).  The minute is cut out of whatever run held it;
    then, unless the new state is ``normal``, it becomes a run of its own, joined with a run of
    the same state that ends where it starts or starts where it ends.  Sorted by start.
    """
    at, end = sample.at, sample.at + MINUTE
    pieces = []
    for run in touching:
        if run.start < at:
            pieces.append(StateRun(run.domain, run.start, min(run.end, at), run.state))
        if run.end > end:
            pieces.append(StateRun(run.domain, max(run.start, end), run.end, run.state))
    if sample.state != "normal":
        start, stop = at, end
        kept = []
        for piece in pieces:
            if piece.state == sample.state and piece.end == at:
                start = piece.start
            elif piece.state == sample.state and piece.start == end:
                stop = piece.end
            else:
                kept.append(piece)
        pieces = [*kept, StateRun(sample.domain, start, stop, sample.state)]
    return sorted(pieces, key=lambda r: r.start)


def touches(run: StateRun, at: int) -> bool:
    """Whether ``run`` overlaps the minute ``[at, at + 60)`` or ends or starts at its edges."""
    return run.start <= at + MINUTE and run.end >= at


class MemorySeriesRole:
    """The points in a dict keyed by ``(at, domain)``, the totals by ``(at, scope)``, each
    domain's runs in a list sorted by start."""

    def _init_series_role(self) -> None:
        self._samples: dict[tuple[int, str], DomainSample] = {}
        self._totals: dict[tuple[int, str], SeriesTotal] = {}
        self._runs: dict[str, list[StateRun]] = {}

    def record_samples(
        self,
        samples: Sequence[DomainSample],
        prune_before: float | None = None,
        totals: Sequence[SeriesTotal] = (),
    ) -> Deferred[int]:
        for sample in samples:
            self._samples[(sample.at, sample.domain)] = sample
            runs = self._runs.get(sample.domain, [])
            touching = [r for r in runs if touches(r, sample.at)]
            if touching or sample.state != "normal":
                rest = [r for r in runs if not touches(r, sample.at)]
                new = rest + rewrite_runs(touching, sample)
                self._runs[sample.domain] = sorted(new, key=lambda r: r.start)
        for total in totals:
            self._totals[(total.at, total.scope)] = total
        if prune_before is None:
            return succeed(0)
        for key in [key for key in self._totals if key[0] < prune_before]:
            del self._totals[key]
        for domain, runs in list(self._runs.items()):
            self._runs[domain] = [r for r in runs if r.end > prune_before]
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

    def read_totals(
        self, scope: str, since: float, until: float, step: int = 60
    ) -> Deferred[list[SeriesTotal]]:
        try:
            check_step(step)
        except ValueError as e:
            return fail(e)
        found = [t for (at, s), t in self._totals.items() if s == scope and since <= at < until]
        return succeed(downsample_totals(found, step))

    def read_runs(
        self, since: float, until: float, domains: Sequence[str] | None = None
    ) -> Deferred[list[StateRun]]:
        wanted = None if domains is None else set(domains)
        return succeed(
            [
                r
                for domain in sorted(self._runs)
                if wanted is None or domain in wanted
                for r in self._runs[domain]
                if r.end > since and r.start < until
            ]
        )
