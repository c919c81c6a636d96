"""
Fakes and helpers that Strata's own tests use, shipped so that integrations can use them too
(treq's ``testing`` module is the model).
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def result_of(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already fired; raise its failure's exception if it failed.
    Fails loudly (AssertionError) when the Deferred has not fired, which in a test means a store or
    protocol waited on something that never happened.
    """
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, f"{d!r} has not fired"
    return results[0]


def failure_of(d: Deferred[object]) -> Failure:
    """The failure of a Deferred that has already failed; AssertionError otherwise."""
    results: list[object] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    assert failures, f"{d!r} did not fail (result: {results!r})"
    return failures[0]
