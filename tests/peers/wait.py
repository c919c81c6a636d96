"""Waiting for something a real peer does: one polling helper for the interop and e2e tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout: float = 30.0, what: str = "", interval: float = 0.1
) -> T:
    """
    Poll ``check`` until it returns something truthy and return that; after ``timeout`` seconds
    fail the test, saying what was awaited (``what``, or the check itself) and its last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or check}: {result!r}")
        time.sleep(interval)
