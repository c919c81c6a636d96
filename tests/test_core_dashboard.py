"""
The Dashboard (#14) as plain calls on a MemoryStore with a task.Clock: each domain's state as
core/series.py classifies it, the drain estimate, the relay's activity over 24 hours, what each
tenant sees, the sampler's points (sparse, once a minute, pruned at 30 days) and the charts read
back from them.

Tenants as in test_core_admin_ops: reseller r1 with customer c1 (c1.test), reseller r2 with
customer c2 (c2.test), and the operator's own op.test.
"""

from __future__ import annotations

import random
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from strata_twisted.config import Settings
from strata_twisted.core.admin import dashboard
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.series import DRAIN_WINDOW, KEEP, SeriesSampler, classify
from strata_twisted.errors import NotFound
from strata_twisted.model import (
    DEFERRED_OUTCOME,
    DELIVERED_OUTCOME,
    HELD,
    AttemptResult,
    Customer,
    Delivery,
    Domain,
    DomainSample,
    DomainState,
    DomainStatus,
    RelayTarget,
    Reseller,
    SeriesTotal,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

T = TypeVar("T")

OP = Caller("op", "operator")
R1 = Caller("r1-admin", "reseller", reseller="r1")
C1 = Caller("c1-admin", "customer", reseller="r1", customer="c1")
C2 = Caller("c2-admin", "customer", reseller="r2", customer="c2")

START = 1_700_000_060.0  # 20 s into a minute


def run(operation: Coroutine[Any, Any, T]) -> T:
    return result_of(Deferred.fromCoroutine(operation))


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = s = MemoryStore(self.clock)
        self.ctx = AdminContext(
            domains=s, queue=s, messages=s, events=s, monitor=s, control=s, credentials=s,
            tenants=s, admins=s, audit=s, series=s, clock=self.clock,
            settings=Settings(data_dir=tmp_path, hostname="strata.test"),
        )  # fmt: skip
        for reseller in ("r1", "r2"):
            result_of(s.add_reseller(Reseller(reseller)))
        result_of(s.add_customer(Customer("c1", "r1")))
        result_of(s.add_customer(Customer("c2", "r2")))
        for name, customer in (("c1.test", "c1"), ("c2.test", "c2"), ("op.test", "")):
            result_of(s.add_domain(Domain(name, RelayTarget("mx." + name), customer=customer)))
        self.count = 0

    def queue(self, domain: str, n: int = 1) -> list[str]:
        """``n`` messages for ``domain`` received now; their entry ids."""
        ids = []
        for _ in range(n):
            self.count += 1
            message_id = f"Q{self.count}"
            result_of(
                store_message(
                    self.store, message_id, b"Subject: hi\r\n\r\nbody\r\n",
                    [Delivery(f"u@{domain}", domain)], received_at=self.clock.seconds(),
                )
            )  # fmt: skip
            ids.append(f"{message_id}.1")
        return ids

    def result(self, entry_id: str, outcome: str) -> None:
        now = self.clock.seconds()
        result_of(self.store.record_result(AttemptResult(entry_id, outcome, "r", now, now + 300)))

    def outage(self, domain: str) -> None:
        now = self.clock.seconds()
        result_of(self.store.open_outage(domain, now, "connection refused"))
        result_of(self.store.save_status(DomainStatus(domain, "down", now)))

    def recover(self, domain: str) -> None:
        now = self.clock.seconds()
        result_of(self.store.close_outage(domain, now))
        result_of(self.store.save_status(DomainStatus(domain, "up", now)))

    def board(self, caller: Caller = OP) -> dashboard.Dashboard:
        return run(dashboard.dashboard(self.ctx, caller))

    def row(self, name: str, caller: Caller = OP) -> dict[str, Any]:
        rows = self.board(caller).as_json()["domains"]
        (found,) = [r for r in rows if r["name"] == name]
        assert isinstance(found, dict)
        return found


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# -- classify: the one table of states


@pytest.mark.parametrize(
    ("given", "state"),
    [
        ({}, "normal"),
        ({"queued": 3}, "normal"),  # queued while the primary is up: a working relay
        ({"outage_open": True}, "outage"),
        ({"primary_down": True, "held": 2}, "outage"),
        ({"queued": 5, "last_delivered_at": 1000 - 60}, "draining"),
        ({"queued": 5, "last_delivered_at": 1000 - DRAIN_WINDOW - 1}, "normal"),
        ({"queued": 5, "outage_ended_at": 1000 - 120}, "draining"),
        ({"queued": 0, "outage_ended_at": 1000 - 120}, "normal"),  # drained
        ({"queued": 5, "outage_open": True, "last_delivered_at": 990}, "outage"),
        ({"held": 1}, "held"),
        ({"held": 1, "queued": 2, "last_delivered_at": 999}, "draining"),
    ],
)
def test_classify(given: dict[str, Any], state: str) -> None:
    args: dict[str, Any] = {
        "outage_open": False,
        "primary_down": False,
        "queued": 0,
        "held": 0,
        "last_delivered_at": None,
        "outage_ended_at": None,
        "now": 1000.0,
    }
    assert classify(**{**args, **given}) == state


# -- the dashboard


def test_a_quiet_installation(world: World) -> None:
    data = world.board().as_json()
    assert [r["name"] for r in data["domains"]] == ["c1.test", "c2.test", "op.test"]
    assert {r["state"] for r in data["domains"]} == {"normal"}
    assert data["outages"] == []
    assert data["refresh_after"] == dashboard.REFRESH_QUIET
    assert data["totals"]["states"] == {"normal": 3, "held": 0, "draining": 0, "outage": 0}


def test_an_outage_shows_with_its_start_duration_queue_and_oldest_age(world: World) -> None:
    world.outage("c1.test")
    started = world.clock.seconds()
    world.queue("c1.test", 3)
    world.clock.advance(300)
    world.queue("c1.test", 2)
    world.clock.advance(120)
    data = world.board().as_json()
    (row,) = [r for r in data["domains"] if r["name"] == "c1.test"]
    assert row["state"] == "outage"
    assert row["health"] == "down"
    assert row["queued"] == 5
    assert row["oldest_age"] == 420
    assert row["outage"]["started_at"] == started
    assert row["outage"]["duration"] == 420
    assert row["drain_estimate"] is None
    assert [o["domain"] for o in data["outages"]] == ["c1.test"]
    assert data["refresh_after"] == dashboard.REFRESH_BUSY
    assert data["totals"]["outages"] == 1
    assert data["totals"]["queued"] == 5


def test_draining_after_recovery_with_an_estimate_from_the_delivery_rate(world: World) -> None:
    world.outage("c2.test")
    ids = world.queue("c2.test", 100)
    world.clock.advance(3600)
    world.recover("c2.test")
    assert world.row("c2.test")["state"] == "draining"  # before its first delivery
    assert world.row("c2.test")["drain_estimate"] is None  # no rate to go by yet
    # 40 delivered over the next two minutes: 20 a minute, 60 left -> 3 minutes.
    for entry_id in ids[:40]:
        world.result(entry_id, DELIVERED_OUTCOME)
    world.clock.advance(120)
    row = world.row("c2.test")
    assert row["state"] == "draining"
    assert row["queued"] == 60
    assert row["drain_estimate"] == pytest.approx(180)
    assert row["activity_24h"]["delivered"] == 40
    assert row["last_outage_ended_at"] == START + 3600
    # Once the window is longer than the time since recovery no longer shortens it: the
    # rate is over the last ten minutes, whatever came before.
    world.clock.advance(DRAIN_WINDOW)
    assert world.row("c2.test")["state"] == "draining"  # within the hour after the outage
    assert world.row("c2.test")["drain_estimate"] is None  # nothing delivered lately
    for entry_id in ids[40:]:
        world.result(entry_id, DELIVERED_OUTCOME)
    assert world.row("c2.test")["state"] == "normal"


def test_held_mail_waiting_for_an_admin(world: World) -> None:
    (entry_id,) = world.queue("op.test")
    now = world.clock.seconds()
    result_of(world.store.change_state(entry_id, ("queued",), HELD, now, "held by hand"))
    row = world.row("op.test")
    assert (row["state"], row["held"], row["queued"]) == ("held", 1, 0)


def test_relay_activity_over_the_last_day(world: World) -> None:
    old = world.queue("op.test", 2)
    world.result(old[0], DELIVERED_OUTCOME)
    world.clock.advance(86400 + 60)  # that delivery is now more than a day old
    ids = world.queue("op.test", 3)
    world.result(ids[0], DELIVERED_OUTCOME)
    world.result(ids[1], DEFERRED_OUTCOME)
    activity = world.row("op.test")["activity_24h"]
    assert (activity["delivered"], activity["deferred"], activity["bounced"]) == (1, 1, 0)
    assert world.board().as_json()["totals"]["activity_24h"]["delivered"] == 1


def test_each_tenant_sees_only_its_domains(world: World) -> None:
    world.outage("c2.test")
    world.queue("c2.test", 4)
    assert [r["name"] for r in world.board(C1).as_json()["domains"]] == ["c1.test"]
    assert [r["name"] for r in world.board(R1).as_json()["domains"]] == ["c1.test"]
    c1 = world.board(C1).as_json()
    assert c1["outages"] == [] and c1["totals"]["queued"] == 0
    c2 = world.board(C2).as_json()
    assert [o["domain"] for o in c2["outages"]] == ["c2.test"]
    assert c2["domains"][0]["customer"] == "c2" and c2["domains"][0]["reseller"] == "r2"


def test_the_dashboard_reads_the_store_a_fixed_number_of_times(world: World) -> None:
    """However many domains: no store call per domain."""

    def calls(extra: int) -> int:
        for i in range(extra):
            name = f"more{world.count}-{i}.test"
            result_of(world.store.add_domain(Domain(name, RelayTarget("mx." + name))))
            world.queue(name)
        counted = 0
        original = MemoryStore.__getattribute__

        def counting(self: object, attr: str) -> Any:
            nonlocal counted
            value = original(self, attr)
            if not attr.startswith("_") and callable(value):
                counted += 1
            return value

        MemoryStore.__getattribute__ = counting  # type: ignore[method-assign]
        try:
            world.board()
        finally:
            MemoryStore.__getattribute__ = original  # type: ignore[method-assign]
        return counted

    few = calls(1)
    assert few >= 5  # the count counts
    assert calls(50) == few


# -- the sampler and the charts


def sampler(world: World) -> SeriesSampler:
    s = world.store
    return SeriesSampler(world.clock, s, s, s, s, s)


def test_the_sampler_writes_one_sparse_point_a_minute(world: World) -> None:
    world.outage("c1.test")
    world.queue("c1.test", 2)
    sampling = sampler(world)
    sampling.start()
    try:
        world.clock.advance(60)
        world.clock.advance(60)
    finally:
        sampling.stop()
    points = result_of(world.store.read_samples(0, 1e12))
    minute = int(START // 60) * 60
    # c2.test and op.test are normal with nothing queued: no point.
    assert points == [DomainSample(minute + 60 * i, "c1.test", 2, 0, "outage") for i in range(3)]


def test_the_sampler_prunes_what_is_older_than_30_days(world: World) -> None:
    minute = int(START // 60) * 60
    old = [DomainSample(minute - KEEP - 60, "c1.test", 1, 0, "outage")]
    kept = [DomainSample(minute - KEEP + 60, "c1.test", 1, 0, "outage")]
    result_of(world.store.record_samples(old + kept))
    world.queue("op.test")
    assert result_of(sampler(world).sample()) == 1
    points = result_of(world.store.read_samples(0, 1e12))
    assert [p.at for p in points] == [kept[0].at, minute]


def test_the_sampler_totals_each_scope_with_each_domain_where_it_belongs(world: World) -> None:
    result_of(world.store.add_customer(Customer("c3", "r1")))
    result_of(world.store.add_customer(Customer("c4")))  # the operator's own customer
    for name, customer in (("c3.test", "c3"), ("c4.test", "c4")):
        result_of(
            world.store.add_domain(Domain(name, RelayTarget("mx." + name), customer=customer))
        )
    world.queue("c1.test", 3)
    world.queue("c2.test", 1)
    world.queue("c3.test", 5)
    world.queue("c4.test", 7)
    world.queue("op.test", 2)
    (held,) = world.queue("c1.test")
    now = world.clock.seconds()
    result_of(world.store.change_state(held, ("queued",), HELD, now, "held by hand"))
    assert result_of(sampler(world).sample()) == 5
    minute = int(START // 60) * 60

    def totals(scope: str) -> list[SeriesTotal]:
        return result_of(world.store.read_totals(scope, 0, 1e12))

    assert totals("*") == [SeriesTotal(minute, "*", 18, 1)]
    assert totals("reseller:r1") == [SeriesTotal(minute, "reseller:r1", 8, 1)]  # c1 and c3
    assert totals("reseller:r2") == [SeriesTotal(minute, "reseller:r2", 1, 0)]
    assert totals("customer:c1") == [SeriesTotal(minute, "customer:c1", 3, 1)]
    assert totals("customer:c4") == [SeriesTotal(minute, "customer:c4", 7, 0)]
    assert totals("reseller:") == []  # the operator's own are in "*" only


def test_a_quiet_minute_writes_no_total(world: World) -> None:
    assert result_of(sampler(world).sample()) == 0
    assert result_of(world.store.read_totals("*", 0, 1e12)) == []


def test_a_failing_store_costs_the_sampler_one_minute_not_its_loop(world: World) -> None:
    sampling = sampler(world)
    world.store.list_domains = lambda: Deferred.fromCoroutine(_raise())  # type: ignore[method-assign]
    assert result_of(sampling.sample()) == 0


async def _raise() -> Any:
    raise RuntimeError("disk on fire")


def test_series_sums_the_depth_per_bucket_and_gives_each_domains_spans(world: World) -> None:
    world.outage("c1.test")
    world.queue("c1.test", 3)
    world.queue("c2.test", 1)
    sampling = sampler(world)
    sampling.start()
    try:
        for _ in range(10):
            world.clock.advance(60)
        world.recover("c1.test")
        for _ in range(5):
            world.clock.advance(60)
    finally:
        sampling.stop()
    chart = run(dashboard.series(world.ctx, OP, hours=1))
    assert chart.step == 60
    assert len(chart.depth) == 60
    assert chart.depth[-1][1] == 4  # both domains' queues, this minute
    assert sum(1 for _, q, _ in chart.depth if q) == 16
    spans = {name: [(s.state, (s.end - s.start) // 60) for s in v] for name, v in
             chart.timeline.items()}  # fmt: skip
    assert spans == {"c1.test": [("outage", 11), ("draining", 5)]}
    # A customer admin sees its own domain only, and another's is not found.
    mine = run(dashboard.series(world.ctx, C2, hours=1))
    assert mine.depth[-1][1] == 1 and mine.timeline == {}
    with pytest.raises(NotFound):
        run(dashboard.series(world.ctx, C2, hours=1, domain="c1.test"))
    one = run(dashboard.series(world.ctx, OP, hours=1, domain="C1.test"))
    assert one.domain == "c1.test" and one.depth[-1][1] == 3


def test_each_tenants_depth_chart_sums_only_its_domains(world: World) -> None:
    result_of(world.store.add_customer(Customer("c3", "r1")))
    result_of(world.store.add_domain(Domain("c3.test", RelayTarget("mx.c3.test"), customer="c3")))
    world.queue("c1.test", 3)
    world.queue("c3.test", 5)
    world.queue("c2.test", 1)
    world.queue("op.test", 2)
    result_of(sampler(world).sample())

    def newest(caller: Caller) -> int:
        return run(dashboard.series(world.ctx, caller, hours=1)).depth[-1][1]

    assert newest(OP) == 11
    assert newest(R1) == 8  # c1 and c3: its customers' domains, not c2's or the operator's
    assert newest(C1) == 3
    assert newest(C2) == 1
    assert newest(Caller("r2-admin", "reseller", reseller="r2")) == 1


def test_a_moved_domain_leaves_its_past_depth_with_its_old_customer(world: World) -> None:
    world.queue("c1.test", 3)
    result_of(sampler(world).sample())
    world.clock.advance(60)
    c1 = result_of(world.store.get_domain("c1.test"))
    assert c1 is not None
    result_of(world.store.update_domain(replace(c1, customer="c2")))
    result_of(sampler(world).sample())
    c1_chart = run(dashboard.series(world.ctx, C1, hours=1)).depth
    c2_chart = run(dashboard.series(world.ctx, C2, hours=1)).depth
    assert [q for _, q, _ in c1_chart[-2:]] == [3, 0]
    assert [q for _, q, _ in c2_chart[-2:]] == [0, 3]


def _timeline_from_points(points: list[DomainSample], step: int) -> dict[str, list[Any]]:
    """The timeline the slow way (as series() built it before the runs): each domain's worst
    state per bucket from the downsampled points, buckets in a row of one state a span."""
    timeline: dict[str, list[Any]] = {}
    for p in points:  # sorted by bucket
        if p.state == "normal":
            continue
        spans = timeline.setdefault(p.domain, [])
        if spans and spans[-1].end == p.at and spans[-1].state == p.state:
            spans[-1] = dashboard.Span(spans[-1].start, p.at + step, p.state)
        else:
            spans.append(dashboard.Span(p.at, p.at + step, p.state))
    return timeline


@pytest.mark.parametrize("hours", [1, 24, 168])
def test_the_timeline_from_runs_is_the_points_worst_state_per_bucket(
    world: World, hours: int
) -> None:
    """Random states over two days, written out of order: whatever the bucket, the spans are
    what the downsampled points say."""
    rng = random.Random(hours)
    minute = int(START // 60) * 60
    states: tuple[DomainState, ...] = ("normal", "held", "draining", "outage")
    points = []
    for domain in ("c1.test", "c2.test", "op.test"):
        at = minute - 2 * 86400
        while at <= minute:
            state, length = rng.choice(states), rng.choice((1, 1, 2, 3, 7, 60, 200))
            points += [DomainSample(at + 60 * k, domain, 1, 0, state) for k in range(length)]
            at += 60 * (length + rng.choice((0, 0, 0, 1, 5)))
    rng.shuffle(points)
    result_of(world.store.record_samples([p for p in points if p.at <= minute]))
    chart = run(dashboard.series(world.ctx, OP, hours=hours))
    slow = result_of(world.store.read_samples(chart.since, chart.until, None, chart.step))
    assert chart.timeline == _timeline_from_points(slow, chart.step)
    assert chart.timeline  # the test tests something
    mine = run(dashboard.series(world.ctx, C1, hours=hours))
    assert mine.timeline == {k: v for k, v in chart.timeline.items() if k == "c1.test"}


def test_a_months_chart_is_in_hours(world: World) -> None:
    chart = run(dashboard.series(world.ctx, OP, hours=720))
    assert chart.step == 3600 and len(chart.depth) == 720
    assert run(dashboard.series(world.ctx, OP, hours=24)).step == 120


@pytest.mark.parametrize("hours", [0, 721, -1])
def test_series_refuses_hours_out_of_range(world: World, hours: int) -> None:
    with pytest.raises(InvalidInput):
        run(dashboard.series(world.ctx, OP, hours=hours))
