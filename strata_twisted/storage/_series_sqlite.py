"""
The dashboard's time series (#14) on SQLite: L{ISeriesStore}.

A mixin of L{strata_twisted.storage.sqlite.SQLiteStore}, with its threading rule: the
callables handed to ``_run``/``_t_transaction`` run on the storage thread, and only there.  The
table is migration 15 (sqlite_schema.py): ``series``, keyed by ``(at, domain)`` without a rowid,
so a time range of every domain is one walk of the primary key and pruning is a range delete at
its start; ``series_domain_at`` serves a few domains over a long range.  A state is stored as
its rank in L{strata_twisted.model.DOMAIN_STATES}, so a bucket's worst state is ``max(state)``.

Writes commit without the WAL fsync (``sync=False``): a minute lost to a power failure is a gap
in a chart, and the sampler writes every minute.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from twisted.internet.defer import Deferred, fail

from strata_twisted.model import DOMAIN_STATES, DomainSample
from strata_twisted.storage._series_memory import check_step

T = TypeVar("T")


class SQLiteSeriesRole:
    """The series table."""

    if TYPE_CHECKING:  # provided by SQLiteStore

        def _run(self, doing: str, f: Callable[[], T]) -> Deferred[T]: ...

        def _t_conn(self) -> sqlite3.Connection: ...

        def _t_transaction(
            self, f: Callable[[sqlite3.Connection], T], *, sync: bool = True
        ) -> T: ...

    def record_samples(
        self, samples: Sequence[DomainSample], prune_before: float | None = None
    ) -> Deferred[int]:
        rows = [(s.at, s.domain, s.queued, s.held, DOMAIN_STATES.index(s.state)) for s in samples]

        def write(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "INSERT OR REPLACE INTO series (at, domain, queued, held, state)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            if prune_before is None:
                return 0
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
        if step == 60:  # points are minutes already
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
