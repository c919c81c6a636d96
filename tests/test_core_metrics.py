"""
The Prometheus metrics (core/metrics.py) on a task.Clock with the memory store: the store's gauges
come from a snapshot refreshed on the clock, the counters move where intake, the relay and the
login check record their results, and each Metrics has its own registry.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs

from strata_twisted.config import RelaySettings
from strata_twisted.core.credentials import hash_password
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import IntakePolicy, SessionInfo
from strata_twisted.core.login import Authenticator
from strata_twisted.core.metrics import OTHER_DOMAIN, Metrics, StoreGauges
from strata_twisted.core.relay import RelayLoop
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.errors import MailError, RelayDenied, StorageError
from strata_twisted.model import (
    HELD_OUTCOME,
    AttemptResult,
    Delivery,
    Domain,
    DomainStatus,
    IncomingMessage,
    RelayTarget,
    StoredMessage,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import (
    FakeMXResolver,
    ScriptedPrimary,
    failure_of,
    result_of,
    store_message,
)
from tests.imap_harness import CountingExecutor

T0 = 1_800_000_000.0


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def protected_store() -> tuple[Clock, MemoryStore]:
    clock = Clock()
    clock.advance(T0)
    store = MemoryStore(clock)
    for name in ("a.test", "b.test", "c.test"):
        result_of(store.add_domain(Domain(name, RelayTarget("10.0.0.1"))))
    result_of(store.add_domain(Domain("quiet.test", RelayTarget("10.0.0.2"), monitored=False)))
    return clock, store


def queue(store: MemoryStore, queue_id: str, *recipients: str, at: float) -> None:
    deliveries = [Delivery(r, r.partition("@")[2]) for r in recipients]
    result_of(store_message(store, queue_id, b"Subject: x\r\n\r\nx\r\n", deliveries,
                            received_at=at))  # fmt: skip


def gauges_on(clock: Clock, store: MemoryStore) -> tuple[Metrics, StoreGauges]:
    metrics = Metrics(process=False)
    gauges = StoreGauges(clock, store, store, store, interval=5.0)
    metrics.watch(gauges)
    return metrics, gauges


def test_gauges_show_the_stores_queue_primaries_and_outages() -> None:
    clock, store = protected_store()
    queue(store, "Q1", "u@a.test", "v@a.test", at=T0 - 600)
    queue(store, "Q2", "u@a.test", at=T0 - 60)
    queue(store, "Q3", "u@b.test", at=T0 - 30)
    result_of(store.record_result(AttemptResult("Q3.1", HELD_OUTCOME, "550 no", T0)))
    # Mail for domains Strata does not protect shares one label, whatever the domain.
    queue(store, "Q4", "x@gmail.example", at=T0 - 900)
    queue(store, "Q5", "y@elsewhere.example", at=T0 - 10)
    result_of(store.save_status(DomainStatus("a.test", health="down", since=T0 - 500)))
    result_of(store.open_outage("a.test", T0 - 500, "connection refused"))
    result_of(store.save_status(DomainStatus("b.test", health="up", since=T0 - 9000)))
    metrics, gauges = gauges_on(clock, store)

    assert value(metrics, "strata_queue_messages", domain="a.test", state="queued") is None
    gauges.start()  # reads at once
    assert value(metrics, "strata_queue_messages", domain="a.test", state="queued") == 3
    assert value(metrics, "strata_queue_messages", domain="a.test", state="held") == 0
    assert value(metrics, "strata_queue_messages", domain="b.test", state="queued") == 0
    assert value(metrics, "strata_queue_messages", domain="b.test", state="held") == 1
    assert value(metrics, "strata_queue_messages", domain="c.test", state="queued") == 0
    assert value(metrics, "strata_queue_messages", domain=OTHER_DOMAIN, state="queued") == 2
    assert value(metrics, "strata_queue_messages", domain="gmail.example", state="queued") is None
    age = "strata_queue_oldest_message_age_seconds"
    assert value(metrics, age, domain="a.test") == 600
    assert value(metrics, age, domain="b.test") == 30
    assert value(metrics, age, domain="c.test") == 0  # an empty queue: the series is there
    assert value(metrics, age, domain=OTHER_DOMAIN) == 900
    assert value(metrics, "strata_primary_up", domain="a.test") == 0
    assert value(metrics, "strata_primary_up", domain="b.test") == 1
    assert value(metrics, "strata_primary_up", domain="c.test") is None  # never probed
    assert value(metrics, "strata_primary_up", domain="quiet.test") is None  # not monitored
    assert value(metrics, "strata_primary_up", domain=OTHER_DOMAIN) is None
    assert value(metrics, "strata_outage_active", domain="a.test") == 1
    assert value(metrics, "strata_outage_active", domain="b.test") == 0
    assert value(metrics, "strata_outage_active", domain="quiet.test") == 0

    # Between reads the age keeps growing from the clock; the counts are the snapshot's.
    queue(store, "Q6", "w@a.test", at=T0 + 1)
    clock.advance(4)
    assert value(metrics, age, domain="a.test") == 604
    assert value(metrics, "strata_queue_messages", domain="a.test", state="queued") == 3
    assert value(metrics, "strata_metrics_snapshot_age_seconds") == 4
    # The outage ends and the queue drains: seen at the next read.
    result_of(store.close_outage("a.test", T0 + 3))
    result_of(store.save_status(DomainStatus("a.test", health="up", since=T0 + 3)))
    for entry in result_of(store.list_entries("a.test")):
        result_of(store.record_result(AttemptResult(entry.id, "delivered", "250 ok", T0 + 4)))
    clock.advance(1)
    assert value(metrics, "strata_queue_messages", domain="a.test", state="queued") == 0
    assert value(metrics, age, domain="a.test") == 0
    assert value(metrics, "strata_primary_up", domain="a.test") == 1
    assert value(metrics, "strata_outage_active", domain="a.test") == 0
    assert value(metrics, "strata_metrics_snapshot_age_seconds") == 0
    gauges.stop()
    assert not clock.getDelayedCalls()


def test_a_failed_read_keeps_the_last_figures_and_says_so() -> None:
    clock, store = protected_store()
    queue(store, "Q1", "u@a.test", at=T0 - 100)
    metrics, gauges = gauges_on(clock, store)
    gauges.start()
    store.queue_stats = lambda: fail(StorageError("database is locked"))  # type: ignore[method-assign]
    with capturedLogs() as events:
        clock.advance(5)
    assert any("cannot read the store for the metrics" in str(e.get("log_format")) for e in events)
    assert value(metrics, "strata_queue_messages", domain="a.test", state="queued") == 1
    assert value(metrics, "strata_metrics_snapshot_age_seconds") == 5  # stale, and it shows
    clock.advance(5)  # the loop goes on after a failure
    assert gauges.snapshot is not None and gauges.snapshot.taken_at == T0
    gauges.stop()


def test_each_metrics_has_its_own_registry_with_process_figures() -> None:
    one, two = Metrics(), Metrics()
    one.intake_message("accepted")
    assert value(one, "strata_intake_messages_total", result="accepted") == 1
    assert value(two, "strata_intake_messages_total", result="accepted") == 0
    assert value(one, "process_start_time_seconds") is not None
    names = {metric.name for metric in one.registry.collect()}
    assert {"process_cpu_seconds", "python_info"} <= names  # the usual process figures


# -- intake ------------------------------------------------------------------------------------


class SlowWriter:
    """A writer whose commit takes ``delay`` seconds on the clock, or fails with ``error``."""

    def __init__(self, writer: Any, clock: Clock, delay: float, error: Exception | None) -> None:
        self._writer = writer
        self._clock = clock
        self._delay = delay
        self._error = error
        self.message_id = writer.message_id

    def write(self, data: bytes) -> Deferred[None]:
        result: Deferred[None] = self._writer.write(data)
        return result

    def commit(self, incoming: IncomingMessage) -> Deferred[StoredMessage]:
        if self._error is not None:
            return fail(self._error)
        return deferLater(self._clock, self._delay, lambda: None).addCallback(
            lambda _: self._writer.commit(incoming)
        )

    def abort(self) -> Deferred[None]:
        result: Deferred[None] = self._writer.abort()
        return result


class SlowStore(MemoryStore):
    delay = 0.0
    error: Exception | None = None

    def begin(self, message_id: str) -> Any:
        return SlowWriter(super().begin(message_id), self._clock, self.delay, self.error)  # type: ignore[arg-type]


class PickyPolicy(IntakePolicy):
    def header_check(self, session: SessionInfo) -> Any:
        def check(header: bytes) -> None:
            if b"Subject: spam" in header:
                raise RelayDenied("no spam", public_text="no spam")

        return check


def test_intake_counts_each_message_by_result_and_times_its_commit() -> None:
    clock = Clock()
    clock.advance(T0)
    store = SlowStore(clock)
    result_of(store.add_domain(Domain("a.test", RelayTarget("10.0.0.1"))))
    cache = DomainCache(clock, store, 1.0)
    result_of(cache.refresh())
    metrics = Metrics(process=False)
    policy = PickyPolicy(clock, cache, store, "strata.test", metrics=metrics)

    def receive(subject: str) -> Deferred[StoredMessage]:
        transaction = policy.begin(SessionInfo("192.0.2.1"), "s@x.test", ("u@a.test",),
                                   body_8bitmime=False, smtputf8=False)  # fmt: skip
        transaction.feed(f"Subject: {subject}\r\n\r\nhello\r\n".encode())
        return transaction.finish()

    store.delay = 0.3
    d = receive("hello")
    assert value(metrics, "strata_intake_messages_total", result="accepted") == 0
    clock.advance(0.3)
    assert result_of(d).envelope.recipients == ("u@a.test",)
    assert value(metrics, "strata_intake_messages_total", result="accepted") == 1
    assert value(metrics, "strata_commit_duration_seconds_count") == 1
    assert value(metrics, "strata_commit_duration_seconds_sum") == pytest.approx(0.3)
    assert value(metrics, "strata_commit_duration_seconds_bucket", le="0.25") == 0
    assert value(metrics, "strata_commit_duration_seconds_bucket", le="0.5") == 1

    assert isinstance(failure_of(receive("spam")).value, MailError)
    assert value(metrics, "strata_intake_messages_total", result="rejected") == 1

    store.error = OSError(28, "No space left on device")
    with capturedLogs():
        error = failure_of(receive("hello")).value
    assert isinstance(error, StorageError) and error.temporary
    assert value(metrics, "strata_intake_messages_total", result="failed") == 1
    assert value(metrics, "strata_intake_messages_total", result="accepted") == 1
    assert value(metrics, "strata_commit_duration_seconds_count") == 1  # only commits that held


# -- relay -------------------------------------------------------------------------------------


def test_the_relay_counts_each_recipients_result_per_protected_domain() -> None:
    clock, store = protected_store()
    domains = DomainCache(clock, store, 1.0)
    result_of(domains.refresh())
    primary = ScriptedPrimary()
    metrics = Metrics(process=False)
    # The DSN of a bounce goes to the sender, at a domain Strata does not protect.
    resolver = FakeMXResolver({"example.org": [("10.9.9.9", 25)]})
    loop = RelayLoop(clock, store, store, store, domains, primary,
                     RelaySettings(interval=300.0), "strata.test", resolver,
                     metrics=metrics)  # fmt: skip
    queue(store, "Q1", "ok@a.test", "later@a.test", "no@a.test", at=T0)
    queue(store, "Q2", "u@b.test", at=T0)
    primary.script("later@a.test", (451, "451 4.3.0 try later"))
    primary.script("no@a.test", (550, "550 5.1.1 no such user"))
    result_of(loop.run())
    relayed = "strata_relay_deliveries_total"
    assert value(metrics, relayed, domain="a.test", result="delivered") == 1
    assert value(metrics, relayed, domain="a.test", result="deferred") == 1
    assert value(metrics, relayed, domain="a.test", result="bounced") == 1
    assert value(metrics, relayed, domain="b.test", result="delivered") == 1
    result_of(loop.run())  # the DSN, counted under the one label of mail for other domains
    assert value(metrics, relayed, domain=OTHER_DOMAIN, result="delivered") == 1
    assert value(metrics, relayed, domain="example.org", result="delivered") is None
    primary.up = False
    clock.advance(300)
    result_of(loop.run())  # the retry finds the primary gone: deferred again, counted again
    assert value(metrics, relayed, domain="a.test", result="deferred") == 2
    assert value(metrics, relayed, domain="a.test", result="delivered") == 1


# -- logins ------------------------------------------------------------------------------------


def test_logins_are_counted_by_service_and_result() -> None:
    clock = Clock()
    clock.advance(T0)
    store = MemoryStore(clock)
    result_of(store.set_user("ana@a.test", hash_password("right", "SSHA512").text))
    metrics = Metrics(process=False)
    closed: set[str] = set()
    auth = Authenticator(
        clock, store, CountingExecutor(), lambda domain: "closed" if domain in closed else None,
        throttle=LoginThrottle(clock, max_delay=15.0), metrics=metrics,
    )  # fmt: skip

    def login(password: str, service: str) -> bool:
        d = Deferred.fromCoroutine(auth.login("192.0.2.9", "ana@a.test", password, service=service))
        while not d.called:
            clock.advance(min(c.getTime() for c in clock.getDelayedCalls()) - clock.seconds())
        return result_of(d).ok

    logins = "strata_logins_total"
    assert value(metrics, logins, service="imap", result="ok") == 0  # every series from the start
    assert login("right", "imap")
    assert not login("wrong", "submission")  # the first failure waits for nothing
    assert not login("wrong", "submission")  # the next waits out a delay first: throttled
    closed.add("a.test")
    assert not login("right", "imap")
    assert value(metrics, logins, service="imap", result="ok") == 1
    assert value(metrics, logins, service="submission", result="failed") == 1
    assert value(metrics, logins, service="submission", result="throttled") == 1
    assert value(metrics, logins, service="imap", result="portal") == 1
    assert value(metrics, logins, service="imap", result="failed") == 0
