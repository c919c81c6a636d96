"""
Where blocking work runs.

SQLite and body-file I/O must never run on the reactor thread (DESIGN decision 6).  Storage backends
take an L{Executor}: L{ThreadExecutor} runs calls, in order, on one dedicated thread (so one SQLite
connection is only ever touched by that thread); L{SyncExecutor} runs them at once, for unit tests
and for the CLI, which has no reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Executor(Protocol):
    """Runs a blocking callable somewhere else and reports its result through a Deferred."""

    def run(self, f: Callable[[], T]) -> Deferred[T]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ThreadExecutor:
    """Runs calls one at a time, in submission order, on a single dedicated thread."""

    def __init__(self, reactor: IReactorFromThreads, name: str = "strata-storage") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, f)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        """Finish the calls already submitted, then stop the thread."""
        self._pool.stop()


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
