"""
``[log] format = "json"`` (strata_twisted/jsonlog.py): each event as one JSON object on one line,
with its fields, its formatted text and its level; and the choice of twistd's log file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.application.service import Application, IServiceCollection, MultiService
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from strata_twisted.config import ListenAddress
from strata_twisted.jsonlog import JSONLogService, json_observer, twistd_json_observer


def test_an_event_is_one_line_with_its_fields_text_and_level() -> None:
    out = io.StringIO()
    log = Logger(namespace="strata.test", observer=json_observer(out))
    log.warn("relay for {domain} via {address}: {reason}", domain="example.test",
             address=ListenAddress("127.0.0.1", 25), reason="refused\nby peer")  # fmt: skip
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("storing {id} failed", Failure(), id="Q1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the newline inside a value stays escaped
    first, second = (json.loads(line) for line in lines)
    assert first["text"] == "relay for example.test via 127.0.0.1:25: refused\nby peer"
    assert first["format"] == "relay for {domain} via {address}: {reason}"
    assert (first["domain"], first["address"]) == ("example.test", "127.0.0.1:25")
    assert (first["level"], first["namespace"], first["system"]) == ("warn", "strata.test", "-")
    assert isinstance(first["time"], float) and first["timestamp"].endswith("+00:00")
    assert not any(key.startswith("log_") for key in first)
    assert "failure" not in first
    assert second["level"] == LogLevel.critical.name and second["id"] == "Q1"
    assert "ZeroDivisionError" in second["failure"] and second["text"].startswith("storing Q1")


def test_the_file_is_the_one_twistd_would_have_used(tmp_path: Path) -> None:
    log = tmp_path / "strata.log"
    observer = twistd_json_observer({"logfile": str(log), "nodaemon": True})
    assert observer is not None
    Logger(namespace="t", observer=observer).info("hello {who}", who="ops")
    assert json.loads(log.read_text())["text"] == "hello ops"
    # twistd's own choices stand: an explicit observer, syslog, and no stdout for a daemon.
    assert twistd_json_observer({"logger": object()}) is None
    assert twistd_json_observer({"syslog": True}) is None
    assert twistd_json_observer({"logfile": "-", "nodaemon": False}) is None


def test_the_service_gives_twistd_its_observer_when_it_joins_the_application() -> None:
    out = io.StringIO()
    observer = json_observer(out)
    inner = MultiService()
    application = Application("strata")
    JSONLogService(inner, observer).setServiceParent(application)
    assert application.getComponent(ILogObserver) is observer
    assert inner.parent is not None
    assert inner.parent.parent is IServiceCollection(application)
