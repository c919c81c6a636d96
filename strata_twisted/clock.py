"""
Clocks for the places with no reactor.

Inside ``twistd`` every component gets the reactor (an ``IReactorTime``) from the composition root.
The ``strata`` CLI has no reactor; it passes a L{WallClock}, which offers only ``seconds()``, the
one
thing the stores ask of a clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class SecondsClock(Protocol):
    """Anything that tells the time: ``IReactorTime``, ``task.Clock`` or L{WallClock}."""

    def seconds(self) -> float: ...


class WallClock:
    """The system clock, for the CLI."""

    def seconds(self) -> float:
        return time.time()
