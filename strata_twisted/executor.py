"""
Where blocking work runs.

SQLite and body-file I/O must never run on the reactor thread (DESIGN decision 6).  Storage backends
take an L{Executor}: L{ThreadExecutor} runs calls, in order, on one dedicated thread (so one SQLite
connection is only ever touched by that thread); L{SyncExecutor} runs them at once, for unit tests
and for the CLI, which has no reactor.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

T = TypeVar("T")


class Executor(Protocol):
    """Runs a blocking callable somewhere else and reports its result through a Deferred."""

    def run(self, f: Callable[[], T]) -> Deferred[T]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ThreadExecutor:
    """
    Runs calls one at a time, in submission order, on a single dedicated thread.

    A plain thread reading a queue rather than Twisted's ThreadPool: the relay waits for one
    storage round trip per message (its result must be durable before the next message goes),
    and the pool's coordinator and context plumbing cost about a tenth of a millisecond of that
    per call; this costs a queue put and one ``callFromThread``.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str = "strata-storage") -> None:
        self._reactor = reactor
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Deferred[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        """Queue ``f``; calls made before start() run once the thread starts."""
        d: Deferred[T] = Deferred()
        self._calls.put((f, d))
        return d

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the calls already submitted, then stop the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._calls.put(None)
            thread.join()

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            f, d = call
            try:
                result = f()
            except BaseException:
                self._reactor.callFromThread(d.errback, Failure())
            else:
                self._reactor.callFromThread(d.callback, result)


class SyncExecutor:
    """Runs calls immediately in the caller's thread (tests, CLI)."""

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        try:
            result = f()
        except BaseException:
            return fail()
        return succeed(result)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
