"""
Alert senders that compose: the throttle (one alert per kind per domain per window, on a
task.Clock: flapping, the window passing, kinds and domains kept apart) and the fan-out (every
sender runs; the first failure is reported, after all ran).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from strata_twisted.core.alerts import (
    DEFAULT_ALERT_WINDOW,
    FanOutAlertSender,
    IAlertSender,
    QueueAgeWatch,
    RecordedAlertSender,
    ThrottledAlertSender,
)
from strata_twisted.core.domains import DomainCache
from strata_twisted.model import (
    DELIVERED_OUTCOME,
    AttemptResult,
    Delivery,
    Domain,
    Outage,
    RelayTarget,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import failure_of, result_of, store_message

T0 = 1_800_000_000.0
EXAMPLE = Domain("example.test", RelayTarget("mx.example.test"))
OTHER = Domain("other.test", RelayTarget("mx.other.test"))


def outage(domain: Domain = EXAMPLE, oid: int = 1) -> Outage:
    return Outage(oid, domain.name, T0, "connection refused")


@implementer(IAlertSender)
class Recording:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, str, int]] = []
        self.error = error

    def _answer(self) -> Deferred[None]:
        return succeed(None) if self.error is None else fail(self.error)

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        self.sent.append(("started", domain.name, outage.id))
        return self._answer()

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        self.sent.append(("ended", domain.name, outage.id))
        return self._answer()

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        self.sent.append(("stale", domain.name, queued))
        return self._answer()


@implementer(IAlertSender)
class Raising:
    """Breaks the rule (raises instead of failing its Deferred): the composites must cope."""

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        raise RuntimeError("raised, not failed")

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        raise RuntimeError("raised, not failed")

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        raise RuntimeError("raised, not failed")


def throttled(
    window: float = DEFAULT_ALERT_WINDOW,
) -> tuple[ThrottledAlertSender, Recording, Clock]:
    clock = Clock()
    clock.advance(T0)
    inner = Recording()
    return ThrottledAlertSender(inner, clock, window), inner, clock


def flap(sender: IAlertSender, domain: Domain, oid: int) -> None:
    assert result_of(sender.outage_started(domain, outage(domain, oid), 3)) is None
    assert result_of(sender.outage_ended(domain, outage(domain, oid), 0)) is None


@contextmanager
def captured_logs() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def test_interfaces() -> None:
    sender, _, _ = throttled()
    assert verifyObject(IAlertSender, sender)
    assert verifyObject(IAlertSender, FanOutAlertSender([]))
    assert DEFAULT_ALERT_WINDOW == 900.0  # issue #5: at most one per 15 minutes by default


def test_flapping_within_the_window_sends_one_of_each_kind() -> None:
    sender, inner, clock = throttled()
    with captured_logs() as events:
        for oid in range(1, 6):  # down and up again every minute
            flap(sender, EXAMPLE, oid)
            clock.advance(60)
    assert inner.sent == [("started", "example.test", 1), ("ended", "example.test", 1)]
    suppressed = [e for e in events if "alert suppressed" in e.get("log_format", "")]
    assert len(suppressed) == 8  # each suppressed alert is logged, not silently dropped
    assert {(e["kind"], e["outage"]) for e in suppressed} >= {("started", 2), ("ended", 5)}


def test_sends_again_once_the_window_has_passed() -> None:
    sender, inner, clock = throttled(window=900)
    flap(sender, EXAMPLE, 1)
    clock.advance(899)
    flap(sender, EXAMPLE, 2)
    assert [a[2] for a in inner.sent] == [1, 1]  # 899 s later: still inside the window
    clock.advance(1)
    flap(sender, EXAMPLE, 3)
    assert inner.sent[2:] == [("started", "example.test", 3), ("ended", "example.test", 3)]
    clock.advance(300)
    flap(sender, EXAMPLE, 4)  # the window restarted with outage 3
    assert len(inner.sent) == 4


def test_kinds_are_independent() -> None:
    sender, inner, clock = throttled()
    sender.outage_started(EXAMPLE, outage(oid=1), 1)
    clock.advance(600)
    sender.outage_started(EXAMPLE, outage(oid=2), 1)  # suppressed
    sender.outage_ended(EXAMPLE, outage(oid=2), 1)  # the first "ended": sent
    clock.advance(300)  # 900 s after the first "started", 300 s after the "ended"
    sender.outage_started(EXAMPLE, outage(oid=3), 1)
    sender.outage_ended(EXAMPLE, outage(oid=3), 1)  # suppressed
    assert inner.sent == [
        ("started", "example.test", 1),
        ("ended", "example.test", 2),
        ("started", "example.test", 3),
    ]


def test_domains_are_independent() -> None:
    sender, inner, clock = throttled()
    flap(sender, EXAMPLE, 1)
    clock.advance(10)
    flap(sender, OTHER, 2)
    flap(sender, EXAMPLE, 3)
    flap(sender, OTHER, 4)
    assert inner.sent == [
        ("started", "example.test", 1),
        ("ended", "example.test", 1),
        ("started", "other.test", 2),
        ("ended", "other.test", 2),
    ]


def test_a_failed_send_still_starts_the_window() -> None:
    clock = Clock()
    inner = Recording(RuntimeError("webhook down"))
    sender = ThrottledAlertSender(inner, clock)
    assert failure_of(sender.outage_started(EXAMPLE, outage(), 1)).check(RuntimeError)
    clock.advance(60)
    assert result_of(sender.outage_started(EXAMPLE, outage(oid=2), 1)) is None
    assert len(inner.sent) == 1  # a broken alert path does not turn flapping into retries


def test_throttle_turns_a_raise_into_a_failure() -> None:
    sender = ThrottledAlertSender(Raising(), Clock())
    assert failure_of(sender.outage_started(EXAMPLE, outage(), 1)).check(RuntimeError)


def test_fan_out_sends_to_every_sender() -> None:
    a, b = Recording(), Recording()
    fan = FanOutAlertSender([a, b])
    flap(fan, EXAMPLE, 7)
    assert a.sent == b.sent == [("started", "example.test", 7), ("ended", "example.test", 7)]


def test_fan_out_one_failure_does_not_stop_the_others() -> None:
    first = Recording(RuntimeError("email relay down"))
    raising = Raising()
    last = Recording()
    fan = FanOutAlertSender([first, raising, last])
    with captured_logs() as events:
        failure = failure_of(fan.outage_started(EXAMPLE, outage(), 2))
    assert last.sent == [("started", "example.test", 1)]  # ran although two before it failed
    assert str(failure.value) == "email relay down"  # the first error, in senders order
    logged = [e["log_failure"] for e in events if "log_failure" in e]
    assert [str(f.value) for f in logged] == ["raised, not failed"]  # the others are logged
    for f in logged:
        f.cleanFailure()


def test_fan_out_waits_for_every_sender() -> None:
    slow: Deferred[None] = Deferred()

    @implementer(IAlertSender)
    class Slow:
        def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
            return slow

        def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
            return slow

        def queue_stale(self, domain: Domain, oldest: float, queued: int) -> Deferred[None]:
            return slow

    broken = Recording(RuntimeError("sms gateway down"))
    done = FanOutAlertSender([Slow(), broken]).outage_ended(EXAMPLE, outage(), 0)
    assert not done.called  # the failure is not reported before the slow sender is done
    slow.callback(None)
    assert str(failure_of(done).value) == "sms gateway down"


def test_throttled_fan_out() -> None:
    clock = Clock()
    a, b = Recording(), Recording(RuntimeError("down"))
    sender = ThrottledAlertSender(FanOutAlertSender([a, b]), clock, window=900)
    failure_of(sender.outage_started(EXAMPLE, outage(), 1))
    clock.advance(100)
    assert result_of(sender.outage_started(EXAMPLE, outage(oid=2), 1)) is None
    assert a.sent == b.sent == [("started", "example.test", 1)]


def test_a_stale_queue_alert_is_its_own_kind_under_the_throttle() -> None:
    sender, inner, clock = throttled()
    result_of(sender.outage_started(EXAMPLE, outage(), 3))
    result_of(sender.queue_stale(EXAMPLE, T0 - 4000, 3))
    result_of(sender.queue_stale(EXAMPLE, T0 - 4000, 4))  # within the window: suppressed
    assert inner.sent == [("started", "example.test", 1), ("stale", "example.test", 3)]
    clock.advance(DEFAULT_ALERT_WINDOW)
    result_of(sender.queue_stale(EXAMPLE, T0 - 4000, 5))
    assert inner.sent[-1] == ("stale", "example.test", 5)


def test_fan_out_sends_stale_queue_alerts_to_every_sender() -> None:
    a, b = Recording(), Recording()
    result_of(FanOutAlertSender([a, b]).queue_stale(OTHER, T0, 2))
    assert a.sent == b.sent == [("stale", "other.test", 2)]


class _Watch:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore(self.clock)
        result_of(self.store.add_domain(EXAMPLE))
        self.domains = DomainCache(self.clock, self.store, 1.0)
        result_of(self.domains.refresh())
        self.alerts = Recording()
        self.watch = QueueAgeWatch(self.clock, self.store, self.domains, self.alerts, 3600.0)

    def queue(self, name: str) -> None:
        result_of(store_message(self.store, name, b"Subject: x\r\n\r\nx\r\n",
                                [Delivery("u@example.test", "example.test")],
                                received_at=self.clock.seconds()))  # fmt: skip

    def at(self, seconds: float) -> list[tuple[str, str, int]]:
        self.clock.advance(T0 + seconds - self.clock.seconds())
        result_of(self.watch.check())
        return self.alerts.sent


def test_queue_age_watch_alerts_once_per_crossing() -> None:
    w = _Watch()
    w.queue("M1")
    w.queue("M2")
    assert w.at(3599) == []
    assert w.at(3600) == [("stale", "example.test", 2)]
    assert w.at(7200) == [("stale", "example.test", 2)]  # still late: no second alert
    for entry in result_of(w.store.list_entries()):
        result_of(w.store.record_result(AttemptResult(entry.id, DELIVERED_OUTCOME, "250", T0)))
    assert w.at(7300) == [("stale", "example.test", 2)]  # caught up
    w.queue("M3")
    assert w.at(7300 + 3600) == [("stale", "example.test", 2), ("stale", "example.test", 1)]


def test_queue_age_watch_runs_on_its_interval_and_not_when_off() -> None:
    w = _Watch()
    w.queue("M1")
    w.watch.start()
    w.clock.advance(3600)
    assert w.alerts.sent == [("stale", "example.test", 1)]
    w.watch.stop()
    off = QueueAgeWatch(w.clock, w.store, w.domains, Recording(), 0.0)
    off.start()
    assert not w.clock.getDelayedCalls()


def test_recorded_alerts_leave_an_event_each_sent_or_failed() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    ok = RecordedAlertSender(Recording(), store, "webhook", lambda d: d.name == "example.test")
    result_of(ok.outage_started(EXAMPLE, outage(), 2))
    result_of(ok.queue_stale(EXAMPLE, T0, 2))
    result_of(ok.outage_ended(OTHER, outage(OTHER), 0))  # no webhook for it: nothing, no event
    broken = RecordedAlertSender(
        Recording(RuntimeError("webhook answered 500")), store, "webhook", lambda d: True
    )
    failure = failure_of(broken.outage_ended(EXAMPLE, outage(), 0))
    assert failure.check(RuntimeError)  # passed on to the fan-out, which logs it
    events = [(e.kind, e.domain, e.data.get("kind")) for e in result_of(store.list_events())]
    assert sorted(events) == sorted([
        ("alert.webhook", "example.test", "outage.started"),
        ("alert.webhook", "example.test", "queue.stale"),
        ("alert.failed", "example.test", "outage.ended"),
    ])  # fmt: skip
    [failed] = [e for e in result_of(store.list_events()) if e.kind == "alert.failed"]
    assert "webhook answered 500" in failed.message
