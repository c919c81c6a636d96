"""
Fixtures for the end-to-end tests: a Roundcube factory, a headless browser, and evidence
(screenshot, page source, log locations) saved when a test fails.

A missing Roundcube, PHP, Chromium or chromedriver fails the test (never skips): a test that
cannot meet its peers has not passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.browser import Browser, chromium_missing
from tests.peers.roundcube import RoundcubeServer, roundcube_missing


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture
def evidence_dir(tmp_path: Path) -> Path:
    """Where a failing test's screenshots, page sources and log copies go (printed up front)."""
    directory = tmp_path / "evidence"
    print(f"evidence on failure: {directory}")
    return directory


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, tmp_path: Path, evidence_dir: Path
) -> Iterator[Browser]:
    """A started headless Chromium; on failure its screenshot and page source are saved."""
    missing = chromium_missing()
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    instance = Browser(tmp_path / "browser")
    try:
        instance.start()
        yield instance
        if _failed(request):
            saved = instance.save_evidence(evidence_dir, "failure")
            print(f"failure evidence: {[str(p) for p in saved]}")
    finally:
        instance.close()


@pytest.fixture(scope="module")
def roundcube_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Builds started `RoundcubeServer`s (module scope); stops every one at teardown."""
    missing = roundcube_missing()
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    started: list[RoundcubeServer] = []

    def make(**kwargs: Any) -> RoundcubeServer:
        server = RoundcubeServer(tmp_path_factory.mktemp("roundcube"), **kwargs)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        print(f"Roundcube logs (IMAP conversation in imap.log): {server.log_dir}")
        server.stop()
