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
from tests.conformance.series import DashboardReadsSuite, SeriesStoreSuite


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


def test_the_days_deliveries_walk_the_partial_index(sqlite_store: SQLiteStore) -> None:
    got = plan(
        sqlite_store,
        "SELECT domain, count(*), max(delivered_at) FROM queue INDEXED BY queue_delivered_at"
        " WHERE delivered_at >= ? GROUP BY domain",
        (0,),
    )
    assert "queue_delivered_at (delivered_at>?)" in got
