"""
What an operator sees of a real ``twistd -n strata`` (issue #11, point 8): ``strata status`` knows
whether the server runs on its data dir (also after a ``kill -9``), a second server on the same
data dir is refused, a relay attempt against a closed primary port shows on the queue entry, and
the drain that follows once a real Postfix primary listens there is in ``strata events``.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
from typing import Any

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port
from tests.peers.strata import StrataProcess
from tests.peers.wait import eventually

pytestmark = pytest.mark.interop


def status(strata: StrataProcess) -> dict[str, Any]:
    server: dict[str, Any] = json.loads(strata.cli("status", "--json").stdout)["server"]
    return server


def events(strata: StrataProcess, *kinds: str) -> list[dict[str, Any]]:
    found = json.loads(strata.cli("events", "--json", "--limit", "1000").stdout)["events"]
    return [e for e in found if e["kind"] in kinds]


def test_status_the_lock_and_a_failed_relay_attempt_on_the_entry(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    closed = free_port()  # nothing listens here: the primary is down
    strata: StrataProcess = strata_factory()
    strata.cli("domain", "add", "example.test", "--relay", f"127.0.0.1:{closed}")
    assert status(strata) == {"running": False}
    assert "not running on this data dir" in strata.cli("status").stdout

    strata.start()
    server = eventually(lambda: status(strata).get("pid") and status(strata), what="the pid")
    assert server["running"] is True and server["pid"] == strata.pid
    assert f"server:       running, pid {strata.pid}, since " in strata.cli("status").stdout

    # A second server on the same data dir stops before it opens the store.
    second = subprocess.run(
        [*strata.twistd_cmd, "-n", "--pidfile=", "strata", "--config", str(strata.config)],
        cwd=strata.root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert f"another Strata server (pid {strata.pid}) is running on" in second.stderr

    # Mail for the domain, then a flush: the relay cannot connect, and the entry says so.
    message = b"From: a@sender.test\r\nTo: u@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.sendmail("a@sender.test", ["u@example.test"], message)
    flushed = strata.cli("queue", "flush")
    assert "a running Strata drains it within a second" in flushed.stdout

    def attempted() -> dict[str, Any] | None:
        (entry,) = strata.queue()
        return entry if entry["attempts"] >= 1 else None

    entry = eventually(attempted, what="the failed attempt on the entry")
    assert entry["state"] == "queued"
    assert entry["last_error"].startswith(f"cannot connect to 127.0.0.1:{closed}: ")
    assert entry["last_attempt_at"] is not None
    assert entry["next_attempt_at"] > entry["last_attempt_at"]
    (unreachable, *_) = events(strata, "relay.unreachable")
    assert unreachable["message"] == f"{entry['last_error']}; 1 kept queued"
    assert events(strata, "relay.drain_started", "relay.drain_finished") == []

    # The primary comes up on that port: one drain, in the events with its counts.
    postfix_factory.primary(["example.test"], smtpd_port=closed)
    strata.cli("queue", "flush")
    eventually(lambda: strata.queue()[0]["state"] == "delivered", what="the delivery")

    def drained() -> list[dict[str, Any]] | None:
        found = events(strata, "relay.drain_started", "relay.drain_finished")
        return found if len(found) == 2 else None

    started, finished = eventually(drained, what="the drain's events")
    assert (started["kind"], finished["kind"]) == ("relay.drain_started", "relay.drain_finished")
    assert finished["domain"] == "example.test"
    data = finished["data"]
    assert (data["delivered"], data["deferred"], data["failed"]) == (1, 0, 0)
    assert data["relay"] == f"127.0.0.1:{closed}" and data["duration"] >= 0

    # Stopped: not running.  Started again and killed with -9: not running either (the kernel
    # dropped the lock; the pid left in the file means nothing).
    strata.stop()
    assert status(strata) == {"running": False}
    strata.start()
    eventually(lambda: status(strata).get("pid") == strata.pid, what="the new pid")
    killed = strata.pid
    strata.kill()
    assert status(strata) == {"running": False}
    assert json.loads((strata.data_dir / "server.lock").read_text())["pid"] == killed
    assert "not running on this data dir" in strata.cli("status").stdout
    code = strata.cli("queue", "flush", check=False)
    assert code.returncode == 1 and "no Strata server is running on" in code.stderr
