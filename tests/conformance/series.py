"""
Conformance suites for the dashboard's reads (#14): L{ISeriesStore}, and the batch reads the
dashboard makes of the queue and monitor roles (``IQueueStore.relay_activity``,
``IMonitorStore.latest_outages``).  Bound to every backend in ``tests/test_storage_series.py``,
with the fixtures of L{tests.conformance.suites} (``clock``, ``store``).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from strata_twisted.interfaces import IMonitorStore, IQueueStore, ISeriesStore
from strata_twisted.model import (
    BOUNCED_OUTCOME,
    DEFERRED_OUTCOME,
    DELIVERED_OUTCOME,
    HELD_OUTCOME,
    AttemptResult,
    Delivery,
    DomainSample,
    RelayActivity,
    SeriesTotal,
    StateRun,
)
from strata_twisted.testing import failure_of, result_of
from tests.conformance.suites import deliver

DAY = 86400


def point(at: int, domain: str, queued: int = 0, held: int = 0, state: Any = "normal") -> Any:
    return DomainSample(at, domain, queued, held, state)


class SeriesStoreSuite:
    """L{ISeriesStore}."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(ISeriesStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.read_samples(0, 10 * DAY)) == []
        assert result_of(store.read_totals("*", 0, 10 * DAY)) == []
        assert result_of(store.read_runs(0, 10 * DAY)) == []

    def test_points_round_trip_sorted_by_time_then_domain(self, store: Any) -> None:
        points = [
            point(120, "b.test", 5, 1, "outage"),
            point(60, "b.test", 3, 0, "draining"),
            point(120, "a.test", 0, 2, "held"),
            point(60, "a.test", 7, 0, "normal"),
        ]
        assert result_of(store.record_samples(points)) == 0
        assert result_of(store.read_samples(0, 1000)) == sorted(
            points, key=lambda p: (p.at, p.domain)
        )

    def test_every_state_round_trips(self, store: Any) -> None:
        for i, state in enumerate(("normal", "held", "draining", "outage")):
            result_of(store.record_samples([point(60 * i, "a.test", i, i, state)]))
        got = result_of(store.read_samples(0, 1000))
        assert [p.state for p in got] == ["normal", "held", "draining", "outage"]

    def test_writing_a_point_again_replaces_it(self, store: Any) -> None:
        result_of(store.record_samples([point(60, "a.test", 1, 0, "outage")]))
        result_of(store.record_samples([point(60, "a.test", 9, 2, "draining")]))
        assert result_of(store.read_samples(0, 1000)) == [point(60, "a.test", 9, 2, "draining")]

    def test_range_is_half_open(self, store: Any) -> None:
        result_of(store.record_samples([point(t, "a.test", 1) for t in (60, 120, 180)]))
        got = result_of(store.read_samples(120, 180))
        assert [p.at for p in got] == [120]

    def test_domains_filter(self, store: Any) -> None:
        points = [point(60, d, 1) for d in ("a.test", "b.test", "c.test")]
        result_of(store.record_samples(points))
        got = result_of(store.read_samples(0, 1000, ["c.test", "a.test"]))
        assert [p.domain for p in got] == ["a.test", "c.test"]
        assert result_of(store.read_samples(0, 1000, [])) == []

    def test_downsampling_keeps_the_largest_depths_and_the_worst_state(self, store: Any) -> None:
        result_of(
            store.record_samples(
                [
                    point(3600, "a.test", 5, 0, "outage"),
                    point(3660, "a.test", 9, 1, "draining"),
                    point(3720, "a.test", 2, 4, "held"),
                    point(7200, "a.test", 1, 0, "draining"),
                    point(7260, "a.test", 3, 0, "normal"),
                    point(3660, "b.test", 1, 0, "held"),
                ]
            )
        )
        got = result_of(store.read_samples(0, 4 * 3600, step=3600))
        assert got == [
            point(3600, "a.test", 9, 4, "outage"),
            point(3600, "b.test", 1, 0, "held"),
            point(7200, "a.test", 3, 0, "draining"),
        ]

    def test_a_bucket_starts_at_a_multiple_of_the_step(self, store: Any) -> None:
        result_of(store.record_samples([point(3 * 300 + 120, "a.test", 1)]))
        (got,) = result_of(store.read_samples(0, 3600, step=300))
        assert got.at == 900

    @pytest.mark.parametrize("step", [0, -60, 90, 30])
    def test_a_step_that_is_not_whole_minutes_is_refused(self, store: Any, step: int) -> None:
        assert failure_of(store.read_samples(0, 1000, step=step)).check(ValueError)

    def test_prune_deletes_what_is_older_in_the_same_write(self, store: Any) -> None:
        old = [point(t, "a.test", 1) for t in (60, 120, 180)]
        result_of(store.record_samples(old))
        pruned = result_of(store.record_samples([point(240, "a.test", 2)], prune_before=180))
        assert pruned == 2
        assert [p.at for p in result_of(store.read_samples(0, 1000))] == [180, 240]

    def test_a_month_of_minutes_reads_downsampled(self, store: Any) -> None:
        """30 days of one domain, one point a minute: an hour's bucket holds 60 of them."""
        minutes = [point(60 * i, "a.test", i % 100) for i in range(30 * 24 * 60)]
        result_of(store.record_samples(minutes))
        got = result_of(store.read_samples(0, 30 * DAY, ["a.test"], step=3600))
        assert [p.at for p in got] == [3600 * h for h in range(30 * 24)]
        assert [p.queued for p in got] == [
            max(i % 100 for i in range(60 * h, 60 * h + 60)) for h in range(30 * 24)
        ]


def total(at: int, scope: str, queued: int = 0, held: int = 0) -> SeriesTotal:
    return SeriesTotal(at, scope, queued, held)


def runs_of(points: list[DomainSample]) -> list[StateRun]:
    """The runs the points say, worked out the slow way: per domain, minutes in a row (no
    minute missing) of one state other than normal."""
    runs: list[StateRun] = []
    for p in sorted(points, key=lambda p: (p.domain, p.at)):
        if p.state == "normal":
            continue
        last = runs[-1] if runs else None
        if last and (last.domain, last.end, last.state) == (p.domain, p.at, p.state):
            runs[-1] = StateRun(p.domain, last.start, p.at + 60, p.state)
        else:
            runs.append(StateRun(p.domain, p.at, p.at + 60, p.state))
    return runs


class SeriesTotalsSuite:
    """L{ISeriesStore}'s totals per scope."""

    def test_totals_round_trip_per_scope_sorted_by_time(self, store: Any) -> None:
        written = [
            total(120, "*", 5, 1),
            total(60, "*", 3, 0),
            total(60, "reseller:r1", 2, 0),
            total(60, "customer:r1", 9, 9),  # a customer named like a reseller: apart
        ]
        assert result_of(store.record_samples([], totals=written)) == 0
        assert result_of(store.read_totals("*", 0, 1000)) == [written[1], written[0]]
        assert result_of(store.read_totals("reseller:r1", 0, 1000)) == [written[2]]
        assert result_of(store.read_totals("customer:r1", 0, 1000)) == [written[3]]
        assert result_of(store.read_totals("customer:c9", 0, 1000)) == []
        assert result_of(store.read_samples(0, 1000)) == []  # totals are not points

    def test_writing_a_total_again_replaces_it(self, store: Any) -> None:
        result_of(store.record_samples([], totals=[total(60, "*", 1, 1)]))
        result_of(store.record_samples([], totals=[total(60, "*", 7, 0)]))
        assert result_of(store.read_totals("*", 0, 1000)) == [total(60, "*", 7, 0)]

    def test_totals_range_is_half_open(self, store: Any) -> None:
        result_of(store.record_samples([], totals=[total(t, "*", 1) for t in (60, 120, 180)]))
        assert [t.at for t in result_of(store.read_totals("*", 120, 180))] == [120]

    def test_downsampled_totals_keep_each_largest_depth(self, store: Any) -> None:
        minutes = [
            total(3600, "*", 5, 0),
            total(3660, "*", 9, 1),
            total(3720, "*", 2, 4),
            total(7260, "*", 3, 0),
            total(3660, "reseller:r1", 100, 100),
        ]
        result_of(store.record_samples([], totals=minutes))
        got = result_of(store.read_totals("*", 0, 4 * 3600, step=3600))
        # The largest queued and the largest held, each from its own minute.
        assert got == [total(3600, "*", 9, 4), total(7200, "*", 3, 0)]

    @pytest.mark.parametrize("step", [0, -60, 90, 30])
    def test_a_totals_step_that_is_not_whole_minutes_is_refused(
        self, store: Any, step: int
    ) -> None:
        assert failure_of(store.read_totals("*", 0, 1000, step=step)).check(ValueError)

    def test_prune_deletes_older_totals_in_the_same_write(self, store: Any) -> None:
        result_of(store.record_samples([], totals=[total(t, "*", 1) for t in (60, 120, 180)]))
        result_of(store.record_samples([], prune_before=180, totals=[total(240, "*", 2)]))
        assert [t.at for t in result_of(store.read_totals("*", 0, 1000))] == [180, 240]

    def test_a_month_of_totals_reads_in_hours(self, store: Any) -> None:
        minutes = [total(60 * i, "*", i % 100, 1) for i in range(30 * 24 * 60)]
        result_of(store.record_samples([], totals=minutes))
        got = result_of(store.read_totals("*", 0, 30 * DAY, step=3600))
        assert [t.at for t in got] == [3600 * h for h in range(30 * 24)]
        assert [t.queued for t in got] == [
            max(i % 100 for i in range(60 * h, 60 * h + 60)) for h in range(30 * 24)
        ]


class SeriesRunsSuite:
    """L{ISeriesStore}'s state runs, kept in step with the points."""

    def test_minutes_in_a_row_of_one_state_are_one_run(self, store: Any) -> None:
        result_of(store.record_samples([point(60 * i, "a.test", 1, 0, "outage") for i in range(5)]))
        assert result_of(store.read_runs(0, 1000)) == [StateRun("a.test", 0, 300, "outage")]

    def test_normal_points_make_no_run(self, store: Any) -> None:
        result_of(store.record_samples([point(60 * i, "a.test", 3) for i in range(5)]))
        assert result_of(store.read_runs(0, 1000)) == []

    def test_a_change_of_state_or_a_missing_minute_starts_a_new_run(self, store: Any) -> None:
        states = ["outage", "outage", "draining", "draining", None, "draining", "normal", "held"]
        result_of(
            store.record_samples(
                [point(60 * i, "a.test", 1, 0, s) for i, s in enumerate(states) if s is not None]
            )
        )
        assert result_of(store.read_runs(0, 1000)) == [
            StateRun("a.test", 0, 120, "outage"),
            StateRun("a.test", 120, 240, "draining"),
            StateRun("a.test", 300, 360, "draining"),
            StateRun("a.test", 420, 480, "held"),
        ]

    def test_minutes_written_backwards_make_the_same_runs(self, store: Any) -> None:
        result_of(
            store.record_samples(
                [point(60 * i, "a.test", 1, 0, "outage") for i in range(9, -1, -1)]
            )
        )
        assert result_of(store.read_runs(0, 1000)) == [StateRun("a.test", 0, 600, "outage")]

    def test_rewriting_a_minute_splits_or_joins_its_runs(self, store: Any) -> None:
        result_of(store.record_samples([point(60 * i, "a.test", 1, 0, "outage") for i in range(5)]))
        result_of(store.record_samples([point(120, "a.test", 1, 0, "draining")]))
        assert result_of(store.read_runs(0, 1000)) == [
            StateRun("a.test", 0, 120, "outage"),
            StateRun("a.test", 120, 180, "draining"),
            StateRun("a.test", 180, 300, "outage"),
        ]
        result_of(store.record_samples([point(120, "a.test", 1, 0, "normal")]))
        assert result_of(store.read_runs(0, 1000)) == [
            StateRun("a.test", 0, 120, "outage"),
            StateRun("a.test", 180, 300, "outage"),
        ]
        result_of(store.record_samples([point(120, "a.test", 1, 0, "outage")]))
        assert result_of(store.read_runs(0, 1000)) == [StateRun("a.test", 0, 300, "outage")]

    def test_runs_overlapping_the_range_unclipped_by_domain(self, store: Any) -> None:
        result_of(
            store.record_samples(
                [point(60 * i, d, 1, 0, "held") for i in range(10) for d in ("b.test", "a.test")]
                + [point(3600, "c.test", 1, 0, "outage")]
            )
        )
        assert result_of(store.read_runs(300, 400)) == [
            StateRun("a.test", 0, 600, "held"),
            StateRun("b.test", 0, 600, "held"),
        ]
        assert result_of(store.read_runs(600, 3600)) == []  # half-open on both ends
        assert result_of(store.read_runs(0, 1e9, ["c.test", "b.test"])) == [
            StateRun("b.test", 0, 600, "held"),
            StateRun("c.test", 3600, 3660, "outage"),
        ]
        assert result_of(store.read_runs(0, 1e9, [])) == []

    def test_prune_deletes_runs_that_ended_and_keeps_one_that_straddles(self, store: Any) -> None:
        result_of(
            store.record_samples(
                [point(60 * i, "a.test", 1, 0, "outage") for i in range(3)]
                + [point(60 * i, "b.test", 1, 0, "held") for i in range(2, 6)]
            )
        )
        result_of(store.record_samples([], prune_before=180))
        assert result_of(store.read_runs(0, 1000)) == [StateRun("b.test", 120, 360, "held")]

    def test_runs_always_say_what_the_points_say(self, store: Any) -> None:
        """Any writes, in any order, rewrites included: the runs are the points' runs."""
        rng = random.Random(14)
        states = ("normal", "normal", "held", "draining", "outage", "outage")
        for _ in range(40):
            batch = [
                point(60 * rng.randrange(30), rng.choice(("a.test", "b.test")), 1, 0,
                      rng.choice(states))
                for _ in range(rng.randrange(1, 8))
            ]  # fmt: skip
            result_of(store.record_samples(batch))
            points = result_of(store.read_samples(0, 1e9))
            assert result_of(store.read_runs(0, 1e9)) == runs_of(points)


ALPHA = Delivery("u@alpha.test", "alpha.test")
BETA = Delivery("u@beta.test", "beta.test")


def attempt(store: Any, entry_id: str, outcome: str, at: float) -> None:
    result_of(store.record_result(AttemptResult(entry_id, outcome, "reply", at, at + 300)))


class DashboardReadsSuite:
    """The batch reads of the queue and monitor roles the dashboard makes."""

    def test_provides_interfaces(self, store: Any) -> None:
        assert verifyObject(IQueueStore, store)
        assert verifyObject(IMonitorStore, store)

    def test_relay_activity_counts_by_domain_since_a_moment(self, store: Any) -> None:
        for n in range(1, 8):
            deliver(store, f"A{n}", (ALPHA,))
        deliver(store, "B1", (BETA,))
        deliver(store, "B2", (BETA,))
        attempt(store, "A1.1", DELIVERED_OUTCOME, 100)  # before the window
        attempt(store, "A2.1", DELIVERED_OUTCOME, 1000)
        attempt(store, "A3.1", DELIVERED_OUTCOME, 1500)
        attempt(store, "A4.1", DEFERRED_OUTCOME, 1200)
        attempt(store, "A5.1", BOUNCED_OUTCOME, 1300)
        attempt(store, "A6.1", HELD_OUTCOME, 1400)
        attempt(store, "A7.1", DEFERRED_OUTCOME, 500)  # deferred before the window
        attempt(store, "B1.1", DELIVERED_OUTCOME, 2000)
        # B2 never attempted: waiting is not activity.
        got = result_of(store.relay_activity(1000))
        assert got == [
            RelayActivity("alpha.test", delivered=2, deferred=1, held=1, bounced=1,
                          last_delivered_at=1500),
            RelayActivity("beta.test", delivered=1, last_delivered_at=2000),
        ]  # fmt: skip
        assert result_of(store.relay_activity(1000, ["beta.test"])) == [got[1]]
        assert result_of(store.relay_activity(1000, [])) == []
        assert result_of(store.relay_activity(3000)) == []

    def test_a_deferred_entry_counts_once_however_often_it_was_tried(self, store: Any) -> None:
        deliver(store, "A1", (ALPHA,))
        for at in (1000, 1300, 1600):
            attempt(store, "A1.1", DEFERRED_OUTCOME, at)
        assert result_of(store.relay_activity(0)) == [RelayActivity("alpha.test", deferred=1)]

    def test_latest_outages_gives_each_domains_newest(self, store: Any, clock: task.Clock) -> None:
        assert result_of(store.latest_outages()) == []
        result_of(store.open_outage("beta.test", 10, "down"))
        result_of(store.close_outage("beta.test", 20))
        result_of(store.open_outage("alpha.test", 30, "down"))
        result_of(store.close_outage("alpha.test", 40))
        result_of(store.open_outage("beta.test", 50, "down again"))
        got = result_of(store.latest_outages())
        assert [(o.domain, o.started_at, o.ended_at) for o in got] == [
            ("alpha.test", 30, 40),
            ("beta.test", 50, None),
        ]
