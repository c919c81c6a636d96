"""
Reading Deferreds that have already fired.

The CLI and the composition root (before the reactor runs) use stores on a synchronous executor,
whose Deferreds fire at once; L{result_of} takes their result without a reactor.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def result_of(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already fired; raise its failure's exception if it failed.
    Raises RuntimeError when the Deferred has not fired: something waited on work that a
    synchronous executor should have done at once.
    """
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not results:
        raise RuntimeError(f"{d!r} has not fired")
    return results[0]
