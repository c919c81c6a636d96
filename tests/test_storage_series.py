"""The dashboard's storage conformance suites (tests/conformance/series.py), bound to the memory
and the SQLite store; plus SQLite's plans for the reads the dashboard polls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred

from strata_twisted.executor import SyncExecutor
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.storage.sqlite import SQLiteStore
from strata_twisted.testing import result_of
from tests.conformance.series import (
    DashboardReadsSuite,
    SeriesRunsSuite,
    SeriesStoreSuite,
    SeriesTotalsSuite,
)


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, clock: task.Clock, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        memory = MemoryStore(clock)
        memory.open()
        yield memory
        return
    sqlite = SQLiteStore(tmp_path / "data", clock, SyncExecutor())
    sqlite.open(recover=True)
    yield sqlite
    result_of(sqlite.close())


class TestSeriesStore(SeriesStoreSuite):
    pass


class TestSeriesTotals(SeriesTotalsSuite):
    pass


class TestSeriesRuns(SeriesRunsSuite):
    pass


class TestDashboardReads(DashboardReadsSuite):
    pass


def plan(store: SQLiteStore, statement: str, params: tuple[Any, ...]) -> str:
    rows: Deferred[list[str]] = store._with_connection(
        "explaining",
        lambda c: [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + statement, params)],
    )
    lines: list[str] = result_of(rows)
    return " | ".join(lines)


@pytest.fixture
def sqlite_store(clock: task.Clock, tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "data", clock, SyncExecutor())
    store.open(recover=True)
    yield store
    result_of(store.close())


def test_a_days_series_is_a_range_of_the_primary_key(sqlite_store: SQLiteStore) -> None:
    got = plan(
        sqlite_store,
        "SELECT at, domain, queued, held, state FROM series WHERE at >= ? AND at < ?",
        (0, 86400),
    )
    assert "SEARCH series USING PRIMARY KEY (at>? AND at<?)" in got


def test_a_scopes_day_is_a_range_of_its_key(sqlite_store: SQLiteStore) -> None:
    got = plan(
        sqlite_store,
        "SELECT at - at % ? AS bucket, max(queued), max(held) FROM series_totals"
        " WHERE scope = ? AND at >= ? AND at < ? GROUP BY bucket ORDER BY bucket",
        (120, "*", 0, 86400),
    )
    assert "SEARCH series_totals USING PRIMARY KEY (scope=? AND at>? AND at<?)" in got


def test_the_timeline_reads_the_runs_that_end_after_its_start(sqlite_store: SQLiteStore) -> None:
    got = plan(
        sqlite_store,
        "SELECT domain, start_at, end_at, state FROM series_runs INDEXED BY series_runs_end"
        " WHERE end_at > ? AND start_at < ? ORDER BY domain, start_at",
        (0, 86400),
    )
    assert "series_runs_end (end_at>?)" in got


def test_a_points_runs_are_found_from_its_domain_and_minute(sqlite_store: SQLiteStore) -> None:
    got = plan(
        sqlite_store,
        "SELECT start_at, end_at, state FROM series_runs WHERE domain = ? AND start_at <= ?"
        " ORDER BY start_at DESC LIMIT 3",
        ("a.test", 120),
    )
    assert "SEARCH series_runs USING PRIMARY KEY (domain=? AND start_at<?)" in got


def test_the_prune_walks_the_old_end_of_each_table(sqlite_store: SQLiteStore) -> None:
    assert "series_totals_at (at<?)" in plan(
        sqlite_store, "DELETE FROM series_totals WHERE at < ?", (0,)
    )
    assert "series_runs_end (end_at<?)" in plan(
        sqlite_store, "DELETE FROM series_runs WHERE end_at <= ?", (0,)
    )


def test_the_days_deliveries_walk_the_partial_index(sqlite_store: SQLiteStore) -> None:
    got = plan(
        sqlite_store,
        "SELECT domain, count(*), max(delivered_at) FROM queue INDEXED BY queue_delivered_at"
        " WHERE delivered_at >= ? GROUP BY domain",
        (0,),
    )
    assert "queue_delivered_at (delivered_at>?)" in got
