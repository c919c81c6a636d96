"""
The primary monitor on a task.Clock with the memory store and a scripted prober: thresholds,
outage events and alerts, recovery and drains, per-domain overrides, restarts, domains coming and
going, one probe at a time per domain, and intake hints.  No sockets, no sleeps.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, formatEvent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from strata_twisted.config import MonitorSettings
from strata_twisted.core.alerts import IAlertSender, LogAlertSender
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.monitor import Monitor, transition
from strata_twisted.model import Delivery, Domain, DomainStatus, Outage, RelayTarget
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

T0 = 1_800_000_000.0
NAME = "example.test"
OK = "ok"
HANG = "hang"


class ProbeError(Exception):
    pass


class ScriptedProber:
    """Answers each probe from a per-domain script: OK, HANG (never fires), or a failure reason."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.script: dict[str, list[str]] = {}
        self.default = OK
        self.calls: list[tuple[str, float, float]] = []  # (domain, timeout, when)
        self.hanging: list[Deferred[None]] = []
        self.cancelled = 0

    def then(self, domain: str, *outcomes: str) -> None:
        self.script.setdefault(domain, []).extend(outcomes)

    def probe(self, domain: Domain, timeout: float) -> Deferred[None]:
        self.calls.append((domain.name, timeout, self.clock.seconds()))
        queued = self.script.get(domain.name)
        outcome = queued.pop(0) if queued else self.default
        if outcome == OK:
            return succeed(None)
        if outcome == HANG:

            def cancelled(_: Deferred[None]) -> None:
                self.cancelled += 1

            d: Deferred[None] = Deferred(cancelled)
            self.hanging.append(d)
            return d
        return fail(ProbeError(outcome))

    def times(self, domain: str = NAME) -> list[float]:
        return [when - T0 for name, _, when in self.calls if name == domain]


@implementer(IAlertSender)
class RecordingAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Outage, int]] = []

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        self.sent.append(("started", domain.name, outage, queued))
        return succeed(None)

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        self.sent.append(("ended", domain.name, outage, queued))
        return succeed(None)


class World:
    def __init__(self, store: MemoryStore | None = None, clock: Clock | None = None) -> None:
        if clock is None:
            clock = Clock()
            clock.advance(T0)
        self.clock = clock
        self.store = store or MemoryStore(self.clock)
        self.domains = DomainCache(self.clock, self.store, 1.0)
        self.prober = ScriptedProber(self.clock)
        self.alerts = RecordingAlerts()
        self.recovered: list[str] = []
        self.monitor = self.new_monitor()

    def new_monitor(self) -> Monitor:
        return Monitor(
            self.clock, self.domains, self.store, self.store, self.store, self.prober,
            self.alerts, MonitorSettings(probe_interval=60, probe_timeout=10, down_after=3,
                                         up_after=2),
            self.recovered.append,
        )  # fmt: skip

    def add(self, name: str = NAME, **options: Any) -> None:
        result_of(self.store.add_domain(Domain(name, RelayTarget("10.0.0.1"), **options)))
        result_of(self.domains.refresh())

    def start(self) -> None:
        result_of(self.domains.refresh())
        result_of(self.monitor.start())

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass in one-second steps, as the reactor would."""
        self.clock.pump([1.0] * int(seconds))

    def status(self, name: str = NAME) -> DomainStatus:
        status = self.monitor.status(name)
        assert status is not None
        assert result_of(self.store.get_status(name)) == status  # saved, not only in memory
        return status

    def outages(self, name: str = NAME) -> list[Outage]:
        return result_of(self.store.list_outages(name))

    def events(self, kind: str) -> list[Any]:
        return [e for e in result_of(self.store.list_events()) if e.kind == kind]


@pytest.fixture
def world() -> World:
    w = World()
    w.add()
    return w


def bring_up(w: World) -> None:
    """Start the monitor and let the primary answer twice: up, with no outage."""
    w.prober.then(NAME, OK, OK)
    w.start()
    w.advance(60)
    assert w.status().health == "up"


def test_alert_senders_provide_the_interface() -> None:
    assert verifyObject(IAlertSender, LogAlertSender())
    assert verifyObject(IAlertSender, RecordingAlerts())


def test_first_successes_make_an_unknown_primary_up_without_an_outage(world: World) -> None:
    world.start()
    assert world.prober.times() == [0.0]
    assert world.status().health == "unknown"
    assert world.status().consecutive_successes == 1
    world.advance(60)
    assert world.prober.times() == [0.0, 60.0]
    status = world.status()
    assert (status.health, status.since, status.last_probe_at) == ("up", T0 + 60, T0 + 60)
    assert world.outages() == [] and world.events("outage.started") == []
    assert world.alerts.sent == [] and world.recovered == []


def test_third_failure_in_a_row_opens_one_outage(world: World) -> None:
    bring_up(world)
    result_of(store_message(world.store, "Q1", b"x\r\n", [Delivery(f"u@{NAME}", NAME)]))
    world.prober.then(NAME, "connection refused", "connection refused", "no banner")
    world.advance(120)
    status = world.status()
    assert (status.health, status.consecutive_failures) == ("up", 2)
    assert status.last_probe_error == "connection refused"
    assert world.outages() == [] and world.alerts.sent == []

    world.advance(60)
    status = world.status()
    down_at = T0 + 240
    assert (status.health, status.since, status.consecutive_failures) == ("down", down_at, 3)
    [outage] = world.outages()
    assert (outage.started_at, outage.reason, outage.ended_at) == (down_at, "no banner", None)
    [event] = world.events("outage.started")
    assert event.domain == NAME and "no banner" in event.message
    assert event.data["outage_id"] == outage.id and event.data["queued"] == 1
    assert world.alerts.sent == [("started", NAME, outage, 1)]

    world.prober.default = "still refused"
    world.advance(180)
    assert world.status().consecutive_failures == 6
    assert len(world.outages()) == 1 and len(world.events("outage.started")) == 1
    assert len(world.alerts.sent) == 1


def test_an_unknown_primary_that_never_answers_goes_down(world: World) -> None:
    world.prober.default = "connection refused"
    world.start()
    world.advance(120)
    assert world.status().health == "down"
    assert [o.started_at for o in world.outages()] == [T0 + 120]
    assert [a[0] for a in world.alerts.sent] == ["started"]


def test_flapping_below_the_thresholds_opens_nothing(world: World) -> None:
    bring_up(world)
    world.prober.then(NAME, "refused", "refused", OK, "refused", "refused", OK, "refused")
    world.advance(7 * 60)
    status = world.status()
    assert (status.health, status.since, status.consecutive_failures) == ("up", T0 + 60, 1)
    assert (
        world.outages() == [] and world.alerts.sent == [] and world.events("outage.started") == []
    )


def test_two_successes_close_the_outage_and_start_a_drain(world: World) -> None:
    bring_up(world)
    world.prober.then(NAME, "refused", "refused", "refused", OK, "refused", OK, OK, OK)
    world.advance(180)  # down at +240
    world.advance(120)  # OK, then a failure resets the successes
    assert world.status().health == "down" and world.recovered == []
    world.advance(60)
    assert world.status().consecutive_successes == 1 and world.recovered == []
    world.advance(60)  # the second success in a row, at +480
    status = world.status()
    assert (status.health, status.since) == ("up", T0 + 480)
    [outage] = world.outages()
    assert (outage.started_at, outage.ended_at) == (T0 + 240, T0 + 480)
    assert outage.duration == (T0 + 480) - (T0 + 240) == 240
    [event] = world.events("outage.ended")
    assert event.data["duration"] == 240 and event.data["outage_id"] == outage.id
    assert world.alerts.sent[-1] == ("ended", NAME, outage, 0)
    assert world.recovered == [NAME]
    world.advance(120)
    assert world.recovered == [NAME] and len(world.alerts.sent) == 2


def test_per_domain_overrides() -> None:
    w = World()
    w.add("fast.test", probe_interval=10, down_after=1, up_after=1)
    w.add("slow.test")
    w.prober.default = "refused"
    w.start()
    w.advance(30)
    assert w.prober.times("fast.test") == [0, 10, 20, 30]
    assert w.prober.times("slow.test") == [0]
    assert [o.domain for o in w.outages(None)] == ["fast.test"]  # type: ignore[arg-type]
    assert w.status("fast.test").since == T0  # down at the first failure
    w.prober.default = OK
    w.advance(10)
    assert w.status("fast.test").health == "up" and w.recovered == ["fast.test"]
    assert all(timeout == 10 for _, timeout, _ in w.prober.calls)


def test_a_restart_during_an_outage_keeps_the_open_outage(world: World) -> None:
    world.prober.default = "refused"
    world.start()
    world.advance(120)
    [outage] = world.outages()
    result_of(world.monitor.stop())

    later = World(world.store, world.clock)  # a new process over the same store
    later.prober.default = "still refused"
    later.start()  # loads the saved status, then probes at once
    status = later.status()
    assert (status.health, status.since, status.consecutive_failures) == ("down", T0 + 120, 4)
    later.advance(120)
    assert later.outages() == [outage] and later.alerts.sent == []
    later.prober.default = OK
    later.advance(120)
    [closed] = later.outages()
    assert (closed.id, closed.started_at, closed.ended_at) == (outage.id, T0 + 120, T0 + 360)
    assert later.recovered == [NAME]
    assert [a[0] for a in later.alerts.sent] == ["ended"]


def test_domains_added_removed_and_unmonitored_while_running() -> None:
    w = World()
    w.start()
    assert w.prober.calls == []
    w.add()
    w.add("quiet.test", monitored=False)
    w.advance(1)
    assert w.prober.times() == [1.0]
    w.prober.then(NAME, HANG)
    w.advance(60)  # a probe is running when the domain goes away
    result_of(w.store.remove_domain(NAME))
    result_of(w.domains.refresh())
    w.prober.hanging[0].errback(ProbeError("refused"))
    assert w.status().consecutive_successes == 1  # the late result was ignored
    w.advance(300)
    assert w.prober.times() == [1.0, 61.0]
    assert w.prober.times("quiet.test") == []


def test_never_two_probes_of_one_domain_at_once() -> None:
    w = World()
    w.add(probe_interval=2)
    w.prober.then(NAME, HANG)
    w.start()
    w.advance(12)
    assert w.prober.times() == [0.0]
    w.prober.hanging[0].callback(None)
    w.advance(1)
    assert w.prober.times() == [0.0, 13.0]
    w.advance(4)
    assert w.prober.times() == [0.0, 13.0, 15.0, 17.0]


def test_a_probe_that_never_finishes_counts_as_a_failure() -> None:
    w = World()
    w.add(probe_interval=60)
    w.prober.then(NAME, HANG)
    w.start()
    w.advance(15)  # probe_timeout 10 + 5 s grace
    assert w.prober.cancelled == 1
    status = w.status()
    assert status.consecutive_failures == 1
    assert status.last_probe_error == "the probe did not finish within 15 s"


def test_stop_cancels_probes_in_flight_and_ignores_them(world: World) -> None:
    world.prober.then(NAME, HANG)
    world.start()
    stopped = world.monitor.stop()
    assert world.prober.cancelled == 1
    result_of(stopped)
    assert world.monitor.status(NAME) is None
    world.advance(120)
    assert len(world.prober.calls) == 1


def test_a_failing_alert_sender_does_not_stop_the_monitor(world: World) -> None:
    @implementer(IAlertSender)
    class Broken:
        def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
            return fail(RuntimeError("SMTP relay for alerts is down"))

        def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
            raise RuntimeError("bug")

    world.alerts = Broken()  # type: ignore[assignment]
    world.monitor = world.new_monitor()
    world.prober.then(NAME, "refused", "refused", "refused", OK, OK)
    world.start()
    world.advance(240)
    assert world.status().health == "up" and world.recovered == [NAME]
    assert len(world.events("outage.started")) == len(world.events("outage.ended")) == 1


def test_intake_hints_are_rate_limited_per_probe_interval(world: World) -> None:
    world.monitor.note_intake(NAME)  # never probed: nothing is believed
    bring_up(world)
    for _ in range(3):
        world.monitor.note_intake(NAME)
    world.monitor.note_intake("other.test")
    [hint] = world.events("intake.hint")
    assert hint.domain == NAME and "arrived while its primary seems up" in hint.message
    world.advance(59)
    world.monitor.note_intake(NAME)
    assert len(world.events("intake.hint")) == 1
    world.advance(1)
    world.monitor.note_intake(NAME)
    assert len(world.events("intake.hint")) == 2

    world.prober.default = "refused"
    world.advance(180)
    assert world.status().health == "down"
    world.monitor.note_intake(NAME)  # expected while it is down
    assert len(world.events("intake.hint")) == 2


@pytest.mark.parametrize(
    ("health", "failures", "successes", "error", "expected", "change"),
    [
        ("unknown", 0, 0, None, ("unknown", 0, 1), None),
        ("unknown", 0, 1, None, ("up", 0, 2), "first_up"),
        ("unknown", 2, 0, "x", ("down", 3, 0), "down"),
        ("up", 1, 0, "x", ("up", 2, 0), None),
        ("up", 2, 0, "x", ("down", 3, 0), "down"),
        ("up", 2, 0, None, ("up", 0, 1), None),
        ("down", 5, 0, None, ("down", 0, 1), None),
        ("down", 0, 1, None, ("up", 0, 2), "up"),
        ("down", 0, 1, "x", ("down", 1, 0), None),
    ],
)
def test_transition_table(
    health: Any, failures: int, successes: int, error: str | None, expected: Any, change: Any
) -> None:
    old = DomainStatus(NAME, health, 5.0, failures, successes)
    new, got = transition(old, error, 100.0, down_after=3, up_after=2)
    assert (new.health, new.consecutive_failures, new.consecutive_successes) == expected
    assert got == change
    assert new.since == (100.0 if change else 5.0)
    assert (new.last_probe_at, new.last_probe_error) == (100.0, error)


def test_log_alert_sender_writes_a_clear_line() -> None:
    logged: list[dict[str, Any]] = []
    sender = LogAlertSender()
    sender.log = Logger(observer=cast(ILogObserver, logged.append))
    domain = Domain(NAME, RelayTarget("mx.example.test"))
    outage = Outage(1, NAME, 1_800_000_000.0, "connection refused")
    result_of(sender.outage_started(domain, outage, 7))
    result_of(
        sender.outage_ended(domain, Outage(1, NAME, 1_800_000_000.0, "x", 1_800_003_725.0), 7)
    )
    lines = [formatEvent(e) for e in logged]
    assert lines == [
        "ALERT: primary of example.test (mx.example.test:25) is DOWN since 2027-01-15 08:00:00 UTC:"
        " connection refused (7 message(s) queued)",
        "ALERT: primary of example.test (mx.example.test:25) is UP again since 2027-01-15 09:02:05"
        " UTC after 1h 2m 5s down; delivering 7 queued message(s)",
    ]
