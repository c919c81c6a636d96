"""
The control poller on a task.Clock with the memory store: requests from the CLI reach their
handler within one interval, once, in order; old ones are not replayed at start; failures of the
store or of a handler never stop it.  The last test tells the whole story on SQLite: the CLI
writes a request, the server's poller acts on it.
"""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from strata_twisted.cli import main
from strata_twisted.core.control import ControlPoller
from strata_twisted.errors import StorageError
from strata_twisted.executor import SyncExecutor
from strata_twisted.runlock import ServerLock
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.storage.sqlite import SQLiteStore
from strata_twisted.testing import result_of

INTERVAL = 0.5


class Control:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.store = MemoryStore(self.clock)
        self.calls: list[tuple[str, str | None]] = []
        self.poller = ControlPoller(
            self.clock,
            self.store,
            {
                "flush": lambda domain: self.calls.append(("flush", domain)),
                "other": lambda domain: self.calls.append(("other", domain)),
            },
            INTERVAL,
        )

    def request(self, action: str, domain: str | None = None) -> int:
        return result_of(self.store.request(action, domain, self.clock.seconds()))


def test_a_request_reaches_its_handler_within_one_interval() -> None:
    c = Control()
    c.poller.start()
    assert c.calls == []
    c.request("flush")
    c.request("flush", "example.test")
    c.clock.advance(INTERVAL - 0.01)
    assert c.calls == []
    c.clock.advance(0.01)
    assert c.calls == [("flush", None), ("flush", "example.test")]
    # Once only.
    c.clock.advance(INTERVAL * 10)
    assert c.calls == [("flush", None), ("flush", "example.test")]
    c.poller.stop()


def test_requests_from_before_the_start_are_not_replayed() -> None:
    c = Control()
    old = c.request("flush")
    c.poller.start()
    assert c.poller.last_id == old
    c.clock.advance(INTERVAL * 3)
    assert c.calls == []
    new = c.request("other", "example.test")
    c.clock.advance(INTERVAL)
    assert c.calls == [("other", "example.test")]
    assert c.poller.last_id == new
    c.poller.stop()


def test_a_restarted_poller_does_not_act_on_handled_requests() -> None:
    c = Control()
    c.poller.start()
    c.request("flush")
    c.clock.advance(INTERVAL)
    c.poller.stop()
    assert c.calls == [("flush", None)]
    again = ControlPoller(c.clock, c.store, {"flush": lambda d: c.calls.append(("again", d))}, 1.0)
    again.start()
    c.clock.advance(5.0)
    assert c.calls == [("flush", None)]
    again.stop()


def test_unknown_actions_are_logged_and_skipped() -> None:
    c = Control()
    c.poller.start()
    c.request("defragment")
    c.request("flush", "example.test")
    with capturedLogs() as logs:
        c.clock.advance(INTERVAL)
    assert c.calls == [("flush", "example.test")]
    assert any("unknown action 'defragment'" in (formatEvent(e) or "") for e in logs)
    c.poller.stop()


def test_a_failing_handler_does_not_stop_the_others_or_the_poller() -> None:
    c = Control()
    failed_later: Deferred[None] = Deferred()

    def boom(domain: str | None) -> None:
        raise RuntimeError("handler broke")

    poller = ControlPoller(
        c.clock,
        c.store,
        {
            "boom": boom,
            "later": lambda domain: failed_later,
            "flush": lambda domain: c.calls.append(("flush", domain)),
        },
        INTERVAL,
    )
    poller.start()
    c.request("boom")
    c.request("later")
    c.request("flush", "a.test")
    with capturedLogs() as logs:
        c.clock.advance(INTERVAL)
        failed_later.errback(RuntimeError("drain broke"))
    assert c.calls == [("flush", "a.test")]
    failures = [e["log_failure"].value for e in logs if "log_failure" in e]
    assert [str(f) for f in failures] == ["handler broke", "drain broke"]
    c.request("flush", "b.test")
    c.clock.advance(INTERVAL)
    assert c.calls == [("flush", "a.test"), ("flush", "b.test")]
    poller.stop()


def test_a_failing_store_is_retried_on_the_next_poll() -> None:
    c = Control()
    c.poller.start()
    c.request("flush")
    broken = c.store.requests_after
    c.store.requests_after = lambda last_id: fail(StorageError("disk on fire"))  # type: ignore[method-assign]
    with capturedLogs() as logs:
        c.clock.advance(INTERVAL)
    assert c.calls == []
    assert any("log_failure" in e for e in logs)
    c.store.requests_after = broken  # type: ignore[method-assign]
    c.clock.advance(INTERVAL)
    assert c.calls == [("flush", None)]
    c.poller.stop()


def test_polls_before_the_start_position_is_known_act_on_nothing() -> None:
    c = Control()
    c.request("flush")
    # poll() by hand, without start(): the first one only learns where to start.
    result_of(c.poller.poll())
    assert c.calls == []
    c.request("flush", "x.test")
    result_of(c.poller.poll())
    assert c.calls == [("flush", "x.test")]


def test_a_cli_flush_reaches_a_poller_on_the_same_data_dir(tmp_path, monkeypatch) -> None:
    # The story end to end, minus the reactor: the server polls the SQLite store, the CLI (another
    # process in real life) writes to the same data directory.
    monkeypatch.chdir(tmp_path)
    assert main(["domain", "add", "example.test", "--relay", "h"], out=io.StringIO()) == 0
    # Before the server starts: refused (nothing would act on it), and no request is left.
    assert main(["queue", "flush"], out=io.StringIO()) == 1
    lock = ServerLock(tmp_path / "strata-data")  # what service.build_service takes first
    lock.acquire()
    clock = Clock()
    server_store = SQLiteStore(tmp_path / "strata-data", clock, SyncExecutor())
    server_store.open(recover=True)
    calls: list[str | None] = []
    poller = ControlPoller(clock, server_store, {"flush": calls.append}, INTERVAL)
    poller.start()
    assert main(["queue", "flush", "--domain", "example.test"], out=io.StringIO()) == 0
    clock.advance(INTERVAL)
    assert calls == ["example.test"]
    assert [r.domain for r in result_of(server_store.requests_after(0))] == ["example.test"]
    poller.stop()
    result_of(server_store.close())
    lock.release()
