"""
The dashboard's time series (#14) on SQLite: L{ISeriesStore}.

A mixin of L{strata_twisted.storage.sqlite.SQLiteStore}, with its threading rule: the
callables handed to ``_run``/``_t_transaction`` run on the storage thread, and only there.  The
tables are migration 15 (sqlite_schema.py):

- ``series``, the points, keyed by ``(at, domain)`` without a rowid, so pruning is a range
  delete at its start; ``series_domain_at`` serves one domain's chart.
- ``series_totals``, each scope's depth a minute, keyed by ``(scope, at)``: a scope's day is
  one walk of 1,440 rows at most; ``series_totals_at`` serves the prune.
- ``series_runs``, each domain's runs of one state, keyed by ``(domain, start_at)``: the run
  that a point touches is found by walking that key backwards from the point (two or three
  rows); ``series_runs_end`` serves the timeline's read (the runs that end after ``since``)
  and the prune.

A state is stored as its rank in L{strata_twisted.model.DOMAIN_STATES}, so a bucket's worst
state is ``max(state)``.  Writes commit without the WAL fsync (``sync=False``): a minute lost
to a power failure is a gap in a chart, and the sampler writes every minute.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from twisted.internet.defer import Deferred, fail

from strata_twisted.model import DOMAIN_STATES, DomainSample, SeriesTotal, StateRun
from strata_twisted.storage._series_memory import MINUTE, check_step, rewrite_runs, touches

T = TypeVar("T")


def _t_keep_runs(conn: sqlite3.Connection, sample: DomainSample) -> None:
    """Bring ``sample``'s domain's runs in step with its new point (L{rewrite_runs})."""
    rows = conn.execute(
        "SELECT start_at, end_at, state FROM series_runs WHERE domain = ? AND start_at <= ?"
        " ORDER BY start_at DESC LIMIT 3",
        (sample.domain, sample.at + MINUTE),
    )
    touching = [
        run
        for run in (StateRun(sample.domain, r[0], r[1], DOMAIN_STATES[r[2]]) for r in rows)
        if touches(run, sample.at)
    ]
    if not touching and sample.state == "normal":
        return  # the common case of a quiet domain with mail queued: nothing to change
    new = rewrite_runs(touching, sample)
    if new == sorted(touching, key=lambda r: r.start):
        return
    conn.executemany(
        "DELETE FROM series_runs WHERE domain = ? AND start_at = ?",
        [(r.domain, r.start) for r in touching],
    )
    conn.executemany(
        "INSERT INTO series_runs (domain, start_at, end_at, state) VALUES (?, ?, ?, ?)",
        [(r.domain, r.start, r.end, DOMAIN_STATES.index(r.state)) for r in new],
    )


class SQLiteSeriesRole:
    """The series tables."""

    if TYPE_CHECKING:  # provided by SQLiteStore

        def _run(self, doing: str, f: Callable[[], T]) -> Deferred[T]: ...

        def _t_conn(self) -> sqlite3.Connection: ...

        def _t_transaction(
            self, f: Callable[[sqlite3.Connection], T], *, sync: bool = True
        ) -> T: ...

    def record_samples(
        self,
        samples: Sequence[DomainSample],
        prune_before: float | None = None,
        totals: Sequence[SeriesTotal] = (),
    ) -> Deferred[int]:
        rows = [(s.at, s.domain, s.queued, s.held, DOMAIN_STATES.index(s.state)) for s in samples]
        total_rows = [(t.scope, t.at, t.queued, t.held) for t in totals]
        samples = list(samples)

        def write(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "INSERT OR REPLACE INTO series (at, domain, queued, held, state)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            for sample in samples:
                _t_keep_runs(conn, sample)
            conn.executemany(
                "INSERT OR REPLACE INTO series_totals (scope, at, queued, held)"
                " VALUES (?, ?, ?, ?)",
                total_rows,
            )
            if prune_before is None:
                return 0
            conn.execute("DELETE FROM series_totals WHERE at < ?", (prune_before,))
            conn.execute("DELETE FROM series_runs WHERE end_at <= ?", (prune_before,))
            return conn.execute("DELETE FROM series WHERE at < ?", (prune_before,)).rowcount

        return self._run(
            "recording the dashboard's series", lambda: self._t_transaction(write, sync=False)
        )

    def read_samples(
        self, since: float, until: float, domains: Sequence[str] | None = None, step: int = 60
    ) -> Deferred[list[DomainSample]]:
        try:
            check_step(step)
        except ValueError as e:
            return fail(e)
        # Every value is a parameter; the statements differ only in these fixed fragments.
        where = "at >= ? AND at < ?"
        filters: tuple[object, ...] = (since, until)
        if domains is not None:
            where += " AND domain IN (SELECT value FROM json_each(?))"
            filters += (json.dumps(list(domains)),)
        if step == MINUTE:  # points are minutes already
            statement = f"SELECT at, domain, queued, held, state FROM series WHERE {where}"  # noqa: S608
            statement += " ORDER BY at, domain"
            params = filters
        else:
            statement = (
                "SELECT at - at % ? AS bucket, domain, max(queued), max(held), max(state)"  # noqa: S608
                f" FROM series WHERE {where} GROUP BY bucket, domain ORDER BY bucket, domain"
            )
            params = (step, *filters)

        def query() -> list[DomainSample]:
            rows = self._t_conn().execute(statement, params)
            return [
                DomainSample(int(r[0]), r[1], int(r[2]), int(r[3]), DOMAIN_STATES[int(r[4])])
                for r in rows
            ]

        return self._run("reading the dashboard's series", query)

    def read_totals(
        self, scope: str, since: float, until: float, step: int = 60
    ) -> Deferred[list[SeriesTotal]]:
        try:
            check_step(step)
        except ValueError as e:
            return fail(e)

        def query() -> list[SeriesTotal]:
            rows = self._t_conn().execute(
                "SELECT at - at % ? AS bucket, max(queued), max(held) FROM series_totals"
                " WHERE scope = ? AND at >= ? AND at < ? GROUP BY bucket ORDER BY bucket",
                (step, scope, since, until),
            )
            return [SeriesTotal(int(r[0]), scope, int(r[1]), int(r[2])) for r in rows]

        return self._run("reading the dashboard's totals", query)

    def read_runs(
        self, since: float, until: float, domains: Sequence[str] | None = None
    ) -> Deferred[list[StateRun]]:
        where = "end_at > ? AND start_at < ?"
        params: tuple[object, ...] = (since, until)
        if domains is not None:
            where += " AND domain IN (SELECT value FROM json_each(?))"
            params += (json.dumps(list(domains)),)
        statement = (
            # The index, not the key's order: the runs that end within the range are few, all
            # of a domain's runs over 30 days may be many (the planner guesses otherwise).
            "SELECT domain, start_at, end_at, state FROM series_runs"  # noqa: S608
            f" INDEXED BY series_runs_end WHERE {where} ORDER BY domain, start_at"
        )

        def query() -> list[StateRun]:
            rows = self._t_conn().execute(statement, params)
            return [StateRun(r[0], int(r[1]), int(r[2]), DOMAIN_STATES[int(r[3])]) for r in rows]

        return self._run("reading the dashboard's timeline", query)
