"""Shared fixtures: real Strata processes (and, via tests.peers.fixtures, real Postfix)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.strata import StrataProcess

pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture
def strata_factory(tmp_path: Path) -> Iterator[Any]:
    """Builds StrataProcess instances under tmp_path; stops every one at teardown."""
    started: list[StrataProcess] = []

    def make(name: str = "strata", **kwargs: Any) -> StrataProcess:
        process = StrataProcess(tmp_path / name, **kwargs)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
