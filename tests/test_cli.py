"""The `strata` CLI against a real SQLite data dir (in-process, no reactor)."""

from __future__ import annotations

import io
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strata_twisted.cli import build_parser, main
from strata_twisted.clock import WallClock
from strata_twisted.core.credentials import PasswordHash, hash_password, verify
from strata_twisted.executor import SyncExecutor
from strata_twisted.model import (
    DEFERRED_OUTCOME,
    DELIVERED_OUTCOME,
    HELD_OUTCOME,
    AttemptResult,
    Delivery,
    DomainStatus,
    Envelope,
    IncomingMessage,
)
from strata_twisted.runlock import LOCK_NAME, ServerLock, ServerRunning
from strata_twisted.storage import open_store
from strata_twisted.testing import result_of


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        out = io.StringIO()
        err = io.StringIO()
        monkeypatch.setattr("sys.stderr", err)
        code = main(list(argv), out=out)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerLock]:
    """A server running on ./strata-data as far as the CLI can tell: its lock, held here, saying
    pid 4242."""
    lock = ServerLock(tmp_path / "strata-data")
    lock.acquire()
    lock.record(4242, WallClock().seconds() - 90)
    yield lock
    lock.release()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An existing, empty data dir, as the server's first start leaves it."""
    data_dir = tmp_path / "strata-data"
    _open(data_dir).close()
    return data_dir


def _queue_message(data_dir: Path, recipients: list[str], message_id: str = "<m@s.test>") -> str:
    store = open_store("sqlite", data_dir, WallClock(), SyncExecutor())
    store.open(recover=False)
    writer = store.begin("QID" + str(len(recipients)) + recipients[0][0].upper())
    result_of(
        writer.write(
            b"Received: x\r\nMessage-ID: "
            + message_id.encode()
            + b"\r\nSubject: hello\r\n\r\nbody\r\n"
        )
    )
    stored = result_of(
        writer.commit(
            IncomingMessage(
                Envelope("s@s.test", tuple(recipients), "127.0.0.1", "c.test"),
                received_at=WallClock().seconds(),
                deliveries=tuple(Delivery(r, r.split("@")[1]) for r in recipients),
                header_message_id=message_id,
            )
        )
    )
    store.close()
    return stored.id


def test_domain_lifecycle(cli) -> None:
    assert cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")[0] == 0
    code, out, _ = cli("domain", "add", "Bücher.Example", "--relay", "[::1]", "--mode", "both")
    assert code == 0 and "bücher.example" in out
    code, out, _ = cli("domain", "list", "--json")
    domains = json.loads(out)
    assert [(d["name"], d["relay"], d["mode"]) for d in domains] == [
        ("example.test", "127.0.0.1:2999", "relay"),
        ("xn--bcher-kva.example", "[::1]:25", "both"),
    ]
    code, out, _ = cli("domain", "show", "xn--bcher-kva.example")
    assert code == 0 and "mode:          both" in out
    assert cli("domain", "update", "example.test", "--mode", "both")[0] == 0
    assert json.loads(cli("domain", "show", "example.test", "--json")[1])["mode"] == "both"
    assert cli("domain", "remove", "example.test")[0] == 0
    assert [d["name"] for d in json.loads(cli("domain", "list", "--json")[1])] == [
        "xn--bcher-kva.example"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("domain", "show", "absent.test"), "absent.test is not a protected domain"),
        (("domain", "remove", "absent.test"), "absent.test is not a protected domain"),
        (("domain", "update", "absent.test", "--mode", "both"), "is not a protected domain"),
        (("queue", "show", "NOPE"), "no queue entry or message NOPE"),
    ],
)
def test_errors_are_clear_and_exit_1(cli, data, argv, message) -> None:
    code, out, err = cli(*argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("domain", "add", "not a domain", "--relay", "h"), "not a valid domain name"),
        (("domain", "add", "x.test", "--relay", "h:99999"), "--relay: invalid port"),
        (("domain", "show", "bad_name.test"), "not a valid domain name"),
        (("queue", "hold", "--domain", "not a domain"), "not a valid domain name"),
        (("queue", "flush", "--domain", "bad_name.test"), "not a valid domain name"),
        (("events", "--limit", "0"), "--limit: expected a whole number >= 1"),
        (("events", "--domain", "x"), "needs at least two labels"),
    ],
)
def test_bad_argument_values_are_usage_errors_exit_2(cli, data, argv, message) -> None:
    # Like a value argparse refuses (--limit x, --tls-policy sometimes): the command was not
    # run, it did not fail.  Scripts tell the two apart by the status.
    code, _, err = cli(*argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ("queue", "list"),
        ("queue", "show", "Q1"),
        ("queue", "hold", "Q1"),
        ("queue", "flush"),
        ("domain", "list"),
        ("domain", "show", "example.test"),
        ("events",),
        ("status",),
    ],
)
def test_a_missing_data_dir_is_an_error_not_an_empty_store(cli, tmp_path: Path, argv) -> None:
    # Run from the wrong directory, the CLI used to create ./strata-data and report an empty
    # queue: at 3 a.m. that reads as "nothing is waiting".
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert f"no Strata data in {tmp_path / 'strata-data'}" in err and "--config" in err
    assert not (tmp_path / "strata-data").exists()


def test_domain_add_may_start_a_new_data_dir_and_says_so(cli, tmp_path: Path) -> None:
    # Not for arguments it refuses: that would leave an empty store behind.
    assert cli("domain", "add", "example.test", "--relay", "h:0")[0] == 2
    assert cli("domain", "add", "example.test", "--relay", "h", "--up-after", "0")[0] == 2
    assert not (tmp_path / "strata-data").exists()
    code, out, _ = cli("domain", "add", "example.test", "--relay", "h")
    assert code == 0 and f"new data dir: {tmp_path / 'strata-data'}" in out
    code, out, _ = cli("domain", "add", "other.test", "--relay", "h")
    assert code == 0 and "new data dir" not in out
    assert cli("queue", "list")[0] == 0


def test_duplicate_domain_is_refused_in_any_spelling(cli) -> None:
    assert cli("domain", "add", "bücher.example", "--relay", "h")[0] == 0
    code, _, err = cli("domain", "add", "XN--BCHER-KVA.example.", "--relay", "h")
    assert code == 1 and "already protected" in err


def test_queue_list_json_has_the_documented_fields(cli, tmp_path: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    queue_id = _queue_message(tmp_path / "strata-data", ["u@example.test", "v@other.test"])
    code, out, _ = cli("queue", "list", "--json")
    entries = json.loads(out)
    assert code == 0 and len(entries) == 2
    for key in (
        "id",
        "domain",
        "recipient",
        "sender",
        "message_id",
        "size",
        "received_at",
        "state",
        "attempts",
        "last_error",
    ):
        assert key in entries[0]
    assert entries[0]["id"] == f"{queue_id}.1"
    assert entries[0]["message_id"] == "<m@s.test>"
    assert entries[0]["state"] == "queued"
    only = json.loads(cli("queue", "list", "--domain", "other.test", "--json")[1])
    assert [e["recipient"] for e in only] == ["v@other.test"]
    code, out, _ = cli("queue", "show", f"{queue_id}.2")
    assert code == 0 and "<v@other.test>" in out and "Subject: hello" in out
    assert "<u@example.test> queued" not in out
    code, out, _ = cli("queue", "show", queue_id, "--json")
    assert [e["recipient"] for e in json.loads(out)["entries"]] == [
        "u@example.test",
        "v@other.test",
    ]
    status = json.loads(cli("status", "--json")[1])
    assert (status["messages"], status["queued"], status["domains"]) == (1, 2, 1)


def test_bad_config_exits_2_naming_the_key(cli, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[intake]\nmax_recipients = -3\n")
    code, _, err = cli("--config", str(tmp_path / "c.toml"), "status")
    assert code == 2 and "intake.max_recipients" in err
    code, _, err = cli("status", "--config", str(tmp_path / "c.toml"))
    assert code == 2 and "intake.max_recipients" in err


def _commands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help(cli, capsys) -> None:
    commands = list(_commands(build_parser()))
    assert ("queue", "show") in commands and ("status",) in commands
    for new in ("flush", "hold", "release", "delete", "bounce"):
        assert ("queue", new) in commands
    for new in ("import", "add", "passwd", "remove", "list"):
        assert ("user", new) in commands
    assert ("events",) in commands
    for command in [(), *commands]:
        with pytest.raises(SystemExit) as e:
            main([*command, "--help"])
        assert e.value.code == 0
        assert "usage: strata" in capsys.readouterr().out


# -- queue administration, events, domain status (issue #3) --------------------------------------


def _open(data_dir: Path):
    store = open_store("sqlite", data_dir, WallClock(), SyncExecutor())
    store.open(recover=False)
    return store


def _queue(data_dir: Path, queue_id: str, recipients: list[str], sender: str = "s@s.test") -> str:
    store = _open(data_dir)
    try:
        writer = store.begin(queue_id)
        result_of(
            writer.write(b"Received: x\r\nSubject: " + queue_id.encode() + b"\r\n\r\nbody\r\n")
        )
        result_of(
            writer.commit(
                IncomingMessage(
                    Envelope(sender, tuple(recipients), "127.0.0.1", "c.test"),
                    received_at=WallClock().seconds() - 7200,
                    deliveries=tuple(Delivery(r, r.split("@")[1]) for r in recipients),
                )
            )
        )
    finally:
        store.close()
    return queue_id


def _states(data_dir: Path) -> dict[str, str]:
    store = _open(data_dir)
    try:
        return {e.id: e.state for e in result_of(store.list_entries())}
    finally:
        store.close()


def _events(cli, *kinds: str) -> list[dict[str, Any]]:
    events = json.loads(cli("events", "--json", "--limit", "1000")[1])["events"]
    return [e for e in events if not kinds or e["kind"] in kinds]


def test_hold_release_and_delete_entries_messages_and_domains(cli, server, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    _queue(data, "Q1", ["a@example.test", "b@example.test"])
    _queue(data, "Q2", ["c@example.test", "d@other.test"])

    code, out, _ = cli("queue", "hold", "Q1.1")
    assert code == 0 and "Q1.1 <a@example.test>: held" in out
    # A queue id means every entry of the message; the one already held is reported, skipped.
    code, out, _ = cli("queue", "hold", "Q1")
    assert code == 0
    assert "Q1.1 <a@example.test>: skipped, it is held" in out
    assert "Q1.2 <b@example.test>: held" in out and "1 held, 1 skipped" in out
    code, out, err = cli("queue", "hold", "Q1")
    assert code == 1 and "nothing to hold" in err and "skipped, it is held" in out
    # --domain: every queued entry of that domain, and only those.
    code, out, _ = cli("queue", "hold", "--domain", "example.test")
    assert code == 0 and "Q2.1 <c@example.test>: held" in out and "Q1" not in out
    assert _states(data) == {"Q1.1": "held", "Q1.2": "held", "Q2.1": "held", "Q2.2": "queued"}

    code, out, _ = cli("queue", "release", "Q2.1")
    assert code == 0 and "Q2.1 <c@example.test>: released" in out and "within a second" in out
    code, out, _ = cli("queue", "release", "--domain", "EXAMPLE.test")
    assert code == 0 and "Q1.1" in out and "Q1.2" in out and "Q2.1" not in out
    assert set(_states(data).values()) == {"queued"}
    # Released entries are due now, and the running server is asked to send them at once.
    store = _open(data)
    try:
        requests = result_of(store.requests_after(0))
        released = [e for e in result_of(store.list_entries()) if e.id == "Q1.1"][0]
    finally:
        store.close()
    assert [(r.action, r.domain) for r in requests] == [
        ("flush", "example.test"),
        ("flush", "example.test"),
    ]
    assert released.next_attempt_at <= WallClock().seconds()

    code, out, _ = cli("queue", "delete", "Q2")
    assert code == 0 and "Q2.1 <c@example.test>: deleted" in out and "Q2.2" in out
    code, _, err = cli("queue", "release", "Q2.2")
    assert code == 1 and "nothing to release" in err
    assert _states(data)["Q2.2"] == "deleted"

    kinds = [e["kind"] for e in _events(cli)]
    assert kinds.count("queue.held") == 3  # Q1.1, Q1.2, Q2.1 (the repeat changed nothing)
    assert kinds.count("queue.released") == 3 and kinds.count("queue.deleted") == 2
    held = _events(cli, "queue.held")[0]
    assert held["domain"] == "example.test" and held["data"]["entry"] == "Q1.1"


def test_bounce_queues_one_dsn_per_message_to_the_sender(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    _queue(data, "Q1", ["a@example.test", "b@example.test", "c@other.test"], sender="s@s.test")
    cli("queue", "hold", "Q1.2")
    code, out, _ = cli("queue", "bounce", "Q1")
    assert code == 0
    assert "Q1.1 <a@example.test>: bounced" in out and "Q1.2 <b@example.test>: bounced" in out
    assert "Q1: DSN " in out and "queued to <s@s.test>" in out

    store = _open(data)
    try:
        entries = result_of(store.list_entries())
        dsn_entries = [e for e in entries if e.sender == ""]
        body = result_of(store.read_body(dsn_entries[0].message_id)).decode()
    finally:
        store.close()
    bounced = {e.id: e for e in entries if e.message_id == "Q1"}
    assert {e.state for e in bounced.values()} == {"bounced"}
    assert bounced["Q1.1"].last_error == "bounced by the administrator"
    # Exactly one DSN, from <> to the sender, naming all three recipients.
    assert [(e.recipient, e.domain, e.state) for e in dsn_entries] == [
        ("s@s.test", "s.test", "queued")
    ]
    assert "multipart/report" in body and "Status: 5.0.0" in body
    for rcpt in ("a@example.test", "b@example.test", "c@other.test"):
        assert f"Final-Recipient: rfc822; {rcpt}" in body
    assert "bounced by the administrator" in body and "Subject: Q1" in body
    [event] = _events(cli, "queue.bounced")
    assert event["data"]["dsn"] == dsn_entries[0].message_id

    code, _, err = cli("queue", "bounce", "Q1.1")
    assert code == 1 and "nothing to bounce" in err


def test_bounce_never_sends_a_dsn_to_the_null_sender(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    _queue(data, "Q1", ["a@example.test"], sender="")
    code, out, _ = cli("queue", "bounce", "Q1.1")
    assert code == 0 and "Q1: no DSN (the sender is <>)" in out
    assert _states(data) == {"Q1.1": "bounced"}  # no DSN entry was queued
    [event] = _events(cli, "queue.bounced")
    assert "no DSN" in event["message"]


def test_flush_leaves_a_request_for_the_running_server(cli, server, tmp_path: Path) -> None:
    cli("domain", "add", "bücher.example", "--relay", "h")
    code, out, _ = cli("queue", "flush")
    assert code == 0 and "a running Strata drains it within a second" in out
    code, out, _ = cli("queue", "flush", "--domain", "Bücher.example")
    assert code == 0 and "bücher.example" in out
    store = _open(tmp_path / "strata-data")
    try:
        requests = result_of(store.requests_after(0))
    finally:
        store.close()
    assert [(r.action, r.domain) for r in requests] == [
        ("flush", None),
        ("flush", "xn--bcher-kva.example"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("queue", "hold", "NOPE"), "no queue entry or message NOPE"),
        (("queue", "release", "NOPE.1"), "no queue entry or message NOPE.1"),
        (("queue", "delete", "NOPE"), "no queue entry or message NOPE"),
        (("queue", "bounce", "NOPE"), "no queue entry or message NOPE"),
        (("queue", "hold", "--domain", "empty.test"), "nothing to hold: empty.test has no queued"),
        (("queue", "release", "--domain", "empty.test"), "empty.test has no held entries"),
        (("queue", "release", "--domain", "BÜCHER.example"), "bücher.example has no held"),
    ],
)
def test_queue_admin_errors_are_clear_and_exit_1(cli, data, argv, message) -> None:
    code, _, err = cli(*argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ("queue", "hold"),  # neither ID nor --domain
        ("queue", "release", "Q1.1", "--domain", "example.test"),  # both
        ("queue", "delete", "--domain", "example.test"),  # delete and bounce take an ID only
        ("domain", "add", "x.test", "--relay", "h", "--tls-policy", "sometimes"),
    ],
)
def test_bad_usage_exits_2(cli, argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli(*argv)
    assert e.value.code == 2


def test_events_list_the_log_and_outages_newest_last(cli, tmp_path: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    cli("domain", "add", "other.test", "--relay", "127.0.0.1:2998")
    store = _open(tmp_path / "strata-data")
    try:
        now = WallClock().seconds()
        result_of(store.open_outage("example.test", now + 10, "connection refused"))
        result_of(store.close_outage("example.test", now + 310))
        result_of(store.open_outage("other.test", now + 20, "timed out"))
        result_of(store.record_event("relay.bounced", "Q9 bounced", "example.test"))
    finally:
        store.close()

    code, out, _ = cli("events")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "EVENT", "DOMAIN", "MESSAGE"]
    kinds = [line.split()[3] for line in lines[1:]]  # date, time, UTC offset, kind
    # The log by time, the outages placed where they started and ended.
    assert kinds == [
        "domain.added",
        "domain.added",
        "relay.bounced",
        "outage.started",
        "outage.started",
        "outage.ended",
    ]
    assert "connection refused" in lines[4] and "timed out (ongoing)" in lines[5]
    assert "primary back after 5m" in lines[6]

    code, out, _ = cli("events", "--domain", "example.test", "--limit", "2")
    assert code == 0
    assert [line.split()[3] for line in out.splitlines()[1:]] == ["outage.started", "outage.ended"]

    data = json.loads(cli("events", "--domain", "other.test", "--json")[1])
    assert [e["kind"] for e in data["events"]] == ["domain.added"]
    assert [(o["domain"], o["reason"], o["ended_at"]) for o in data["outages"]] == [
        ("other.test", "timed out", None)
    ]
    code, out, _ = cli("events", "--domain", "quiet.test")
    assert code == 0 and "no events for quiet.test" in out


def test_domain_show_has_health_queue_and_last_delivery(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    # Never probed, nothing queued, nothing delivered.
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["health"], shown["health_since"], shown["last_delivery_at"]) == (
        "unknown",
        None,
        None,
    )
    assert (shown["queued"], shown["held"], shown["oldest_received_at"]) == (0, 0, None)
    code, out, _ = cli("domain", "show", "example.test")
    assert "health:        unknown (never probed)" in out and "last delivery: -" in out

    _queue(data, "Q1", ["a@example.test", "b@example.test", "c@example.test"])
    cli("queue", "hold", "Q1.2")
    store = _open(data)
    try:
        now = WallClock().seconds()
        result_of(store.record_result(AttemptResult("Q1.3", DELIVERED_OUTCOME, "250 ok", now - 60)))
        result_of(store.save_status(DomainStatus("example.test", "down", since=now - 600)))
    finally:
        store.close()
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["health"], shown["health_since"]) == ("down", now - 600)
    assert (shown["queued"], shown["held"]) == (1, 1)
    assert shown["last_delivery_at"] == now - 60
    assert now - 7300 < shown["oldest_received_at"] < now - 7100
    code, out, _ = cli("domain", "show", "example.test")
    assert code == 0
    assert "health:        down since " in out and "(10m ago)" in out
    assert "queued:        1 (held 1, oldest 2h)" in out
    assert "(60s ago)" in out or "(59s ago)" in out or "(61s ago)" in out


def test_domain_relay_settings_are_validated_and_shown(cli) -> None:
    code, _, err = cli(
        "domain", "add", "example.test", "--relay", "h", "--tls-policy", "verify",
        "--hold-rejected", "--queue-lifetime", "5d", "--no-monitor", "--probe-interval", "90",
        "--down-after", "3", "--up-after", "2",
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert {
        k: shown[k]
        for k in (
            "tls_policy",
            "hold_rejected",
            "queue_lifetime",
            "monitored",
            "probe_interval",
            "down_after",
            "up_after",
        )
    } == {  # fmt: skip
        "tls_policy": "verify",
        "hold_rejected": True,
        "queue_lifetime": 5 * 86400.0,
        "monitored": False,
        "probe_interval": 90.0,
        "down_after": 3,
        "up_after": 2,
    }
    out = cli("domain", "show", "example.test")[1]
    assert "tls policy:    verify" in out and "on 5xx:        hold for review" in out
    assert "queue life:    5d" in out and "probe every:   90s" in out
    assert "monitored:     no" in out and "health:        unknown (not monitored)" in out

    # update changes only what is given; "default" goes back to the global setting.
    code, _, err = cli(
        "domain", "update", "example.test", "--queue-lifetime", "default", "--no-hold-rejected",
        "--probe-interval", "1.5m", "--monitor",
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["queue_lifetime"], shown["hold_rejected"], shown["probe_interval"]) == (
        None,
        False,
        90.0,
    )
    assert (shown["tls_policy"], shown["down_after"], shown["monitored"]) == ("verify", 3, True)
    assert shown["relay"] == "h:25"
    assert "queue life:    global default" in cli("domain", "show", "example.test")[1]
    # A new domain gets the documented defaults.
    cli("domain", "add", "plain.test", "--relay", "h")
    plain = json.loads(cli("domain", "show", "plain.test", "--json")[1])
    assert (plain["tls_policy"], plain["hold_rejected"], plain["monitored"]) == (
        "opportunistic",
        False,
        True,
    )
    assert plain["queue_lifetime"] is None and plain["down_after"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--queue-lifetime", "0"), "--queue-lifetime: expected a positive duration"),
        (("--queue-lifetime", "5x"), "--queue-lifetime: expected a positive duration"),
        (("--probe-interval", "-1"), "--probe-interval: expected a positive duration"),
        (("--down-after", "0"), "--down-after: expected a whole number >= 1"),
        (("--up-after", "two"), "--up-after: expected a whole number >= 1"),
    ],
)
def test_bad_relay_settings_are_refused(cli, argv, message) -> None:
    code, _, err = cli("domain", "add", "example.test", "--relay", "h", *argv)
    assert code == 2 and message in err
    assert cli("domain", "add", "example.test", "--relay", "h")[0] == 0
    code, _, err = cli("domain", "update", "example.test", *argv)
    assert code == 2 and message in err


def test_update_without_changes_is_refused(cli) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    code, _, err = cli("domain", "update", "example.test")
    assert code == 2 and "nothing to change" in err


# -- review fixes -------------------------------------------------------------------------------


def test_events_show_each_outage_once_when_the_monitor_logged_it(cli, tmp_path: Path) -> None:
    # The monitor records outage.started / outage.ended events naming the outage (data
    # "outage_id", see core/monitor.py) besides the outage rows: one line each, not two.
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    cli("domain", "add", "other.test", "--relay", "127.0.0.1:2998")
    store = _open(tmp_path / "strata-data")
    try:
        now = WallClock().seconds()
        over = result_of(store.open_outage("example.test", now + 10, "connection refused"))
        result_of(store.record_event("outage.started", "primary of example.test is down",
                                     "example.test", {"outage_id": over.id}))  # fmt: skip
        result_of(store.close_outage("example.test", now + 310))
        result_of(store.record_event("outage.ended", "primary of example.test is up again",
                                     "example.test", {"outage_id": over.id}))  # fmt: skip
        open_ = result_of(store.open_outage("other.test", now + 20, "timed out"))
        result_of(store.record_event("outage.started", "primary of other.test is down",
                                     "other.test", {"outage_id": open_.id}))  # fmt: skip
    finally:
        store.close()
    code, out, _ = cli("events")
    assert code == 0
    outage_lines = [line for line in out.splitlines() if " outage." in line]
    assert len(outage_lines) == 3, out
    assert outage_lines[0].endswith("primary of example.test is down")  # over: not ongoing
    assert outage_lines[1].endswith("primary of example.test is up again")
    assert outage_lines[2].endswith("primary of other.test is down (ongoing)")


def test_times_carry_their_utc_offset(cli, tmp_path: Path) -> None:
    _queue(tmp_path / "strata-data", "Q1", ["a@example.test"])
    out = cli("queue", "list")[1]
    line = out.splitlines()[1]
    offset = time.strftime("%z", time.localtime(WallClock().seconds() - 7200))
    assert line.split()[3] == offset and re.fullmatch(r"[+-]\d{4}", offset)


def test_domain_show_after_a_few_failed_probes_is_not_never_probed(cli, tmp_path: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    store = _open(tmp_path / "strata-data")
    try:
        now = WallClock().seconds()
        status = DomainStatus("example.test", "unknown", None, 2, 0, now - 30, "connection refused")
        result_of(store.save_status(status))
    finally:
        store.close()
    out = cli("domain", "show", "example.test")[1]
    assert "never probed" not in out
    assert "health:        unknown (not yet 3 failed or 2 good probes in a row)" in out
    assert "last probe:    " in out and "failed (2 in a row): connection refused" in out
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["probe_failures_in_a_row"], shown["last_probe_error"]) == (
        2,
        "connection refused",
    )
    # No longer monitored: what the monitor last knew may be stale, and says so.
    store = _open(tmp_path / "strata-data")
    try:
        result_of(store.save_status(DomainStatus("example.test", "down", since=now - 600)))
    finally:
        store.close()
    cli("domain", "update", "example.test", "--no-monitor")
    out = cli("domain", "show", "example.test")[1]
    assert "down since" in out and "no longer monitored, so this may be out of date" in out


def test_status_shows_each_domains_health(cli, tmp_path: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    cli("domain", "add", "bücher.example", "--relay", "127.0.0.1:2998", "--no-monitor")
    store = _open(tmp_path / "strata-data")
    try:
        now = WallClock().seconds()
        result_of(store.save_status(DomainStatus("example.test", "down", since=now - 600)))
    finally:
        store.close()
    code, out, _ = cli("status")
    assert code == 0
    assert "  example.test: down since " in out and "(10m ago)" in out
    assert "  bücher.example: unknown (not monitored)" in out
    health = json.loads(cli("status", "--json")[1])["health"]
    assert health == [
        {"domain": "example.test", "health": "down", "since": now - 600, "monitored": True},
        {"domain": "xn--bcher-kva.example", "health": "unknown", "since": None,
         "monitored": False},
    ]  # fmt: skip


def test_text_output_escapes_control_characters(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    store = _open(data)
    try:
        writer = store.begin("QESC")
        result_of(writer.write(b"Subject: evil \x1b]0;pwned\x07\x1b[2J x\r\n\r\nbody\r\n"))
        result_of(
            writer.commit(
                IncomingMessage(
                    Envelope("s@s.test", ("a@example.test",), "127.0.0.1", "c\x1b[31m.test"),
                    received_at=WallClock().seconds(),
                    deliveries=(Delivery("a@example.test", "example.test"),),
                )
            )
        )
        result_of(
            store.record_result(
                AttemptResult("QESC.1", DEFERRED_OUTCOME, "451 \x1b[2J\u202egnp.exe", 1.0, 2.0)
            )
        )
    finally:
        store.close()
    code, out, _ = cli("queue", "show", "QESC")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "Subject: evil \\x1b]0;pwned\\x07\\x1b[2J x" in out
    assert "from c\\x1b[31m.test" in out and "451 \\x1b[2J\\u202egnp.exe" in out
    assert "\r" not in out and "\n\nSubject:" in out  # line ends still work
    # --json stays exact: JSON escapes them itself.
    shown = json.loads(cli("queue", "show", "QESC", "--json")[1])
    assert shown["headers"].startswith("Subject: evil \x1b]0;pwned\x07")


class _ClosedAfter(io.StringIO):
    """stdout piped into `head -1`: the reader goes away after the first line."""

    def write(self, text: str) -> int:
        if self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_pipe_does_not_stop_a_queue_operation_half_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "strata-data"
    _queue(data, "Q1", ["a@example.test", "b@example.test", "c@example.test"])
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    out = _ClosedAfter()
    code = main(["queue", "hold", "--domain", "example.test"], out=out)
    assert code == 0 and err.getvalue() == ""
    assert out.getvalue() == "Q1.1 <a@example.test>: held\n"
    assert set(_states(data).values()) == {"held"}
    # Every move has its event, though nobody read the output.
    store = _open(data)
    try:
        held = [e for e in result_of(store.list_events(None, 100)) if e.kind == "queue.held"]
    finally:
        store.close()
    assert [e.data["entry"] for e in held] == ["Q1.1", "Q1.2", "Q1.3"]
    assert main(["queue", "list", "--json"], out=_ClosedAfter()) == 0


def test_bouncing_an_entry_held_after_a_5xx_tells_the_sender_why(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    _queue(data, "Q1", ["a@example.test", "b@example.test"])
    refusal = "550 5.1.1 <a@example.test>: Recipient address rejected: User unknown"
    store = _open(data)
    try:
        # hold_rejected: the relay holds a refused entry for review, its reply as last_error.
        result_of(store.record_result(AttemptResult("Q1.1", HELD_OUTCOME, refusal, 1.0)))
    finally:
        store.close()
    code, out, _ = cli("queue", "bounce", "Q1")
    assert code == 0 and "Q1: DSN " in out
    store = _open(data)
    try:
        entries = {e.id: e for e in result_of(store.list_entries())}
        [dsn] = [e for e in entries.values() if e.sender == ""]
        body = result_of(store.read_body(dsn.message_id)).decode()
    finally:
        store.close()
    assert refusal in entries["Q1.1"].last_error
    assert entries["Q1.2"].last_error == "bounced by the administrator"
    blocks = body.split("Final-Recipient: ")
    [a] = [b for b in blocks if b.startswith("rfc822; a@example.test")]
    [b] = [b for b in blocks if b.startswith("rfc822; b@example.test")]
    assert "Status: 5.1.1" in a and "User unknown" in a
    assert "Status: 5.0.0" in b and "bounced by the administrator" in b


def test_flush_of_an_unknown_domain_is_refused_and_counts_are_shown(
    cli, server, tmp_path: Path
) -> None:
    data = tmp_path / "strata-data"
    cli("domain", "add", "example.test", "--relay", "h")
    code, _, err = cli("queue", "flush", "--domain", "exmaple.test")  # a typo
    assert code == 1 and "exmaple.test is not a protected domain and has nothing queued" in err
    _queue(data, "Q1", ["a@example.test", "b@example.test"])
    cli("queue", "hold", "Q1.2")
    code, out, _ = cli("queue", "flush", "--domain", "example.test")
    assert code == 0 and "1 queued" in out and "1 held entries stay held" in out
    # A domain we do not protect but still hold mail for (a DSN's) can be flushed.
    _queue(data, "Q2", ["s@dsn.test"])
    assert cli("queue", "flush", "--domain", "dsn.test")[0] == 0
    store = _open(data)
    try:
        requests = [(r.action, r.domain) for r in result_of(store.requests_after(0))]
    finally:
        store.close()
    assert requests == [("flush", "example.test"), ("flush", "dsn.test")]


# -- is a server running on this data dir? (issue #11, point 8) --------------------------------


def _requests(data_dir: Path) -> list[tuple[str, str | None]]:
    store = _open(data_dir)
    try:
        return [(r.action, r.domain) for r in result_of(store.requests_after(0))]
    finally:
        store.close()


def test_status_says_whether_a_server_runs_on_this_data_dir(cli, data: Path) -> None:
    code, out, _ = cli("status")
    assert code == 0
    assert "server:       not running on this data dir" in out
    assert json.loads(cli("status", "--json")[1])["server"] == {"running": False}
    lock = ServerLock(data)
    lock.acquire()
    started = WallClock().seconds() - 600
    lock.record(4242, started)
    try:
        code, out, _ = cli("status")
        assert code == 0
        (line,) = [line for line in out.splitlines() if line.startswith("server:")]
        assert line.startswith("server:       running, pid 4242, since ")
        assert line.endswith("(10m ago)")
        assert json.loads(cli("status", "--json")[1])["server"] == {
            "running": True, "pid": 4242, "started_at": started,
        }  # fmt: skip
    finally:
        lock.release()
    assert "server:       not running" in cli("status")[1]
    # What a killed server left in the file means nothing: only the lock counts.
    (data / LOCK_NAME).write_text(json.dumps({"pid": 4242, "started_at": started}))
    assert "server:       not running" in cli("status")[1]


def test_a_second_server_on_the_same_data_dir_is_refused(server, tmp_path: Path) -> None:
    with pytest.raises(ServerRunning) as refused:
        ServerLock(tmp_path / "strata-data").acquire()
    assert "another Strata server (pid 4242) is running on" in str(refused.value)


def test_flush_without_a_server_says_nothing_will_act_and_exits_1(cli, data: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    _queue(data, "Q1", ["a@example.test"])
    for argv in (("queue", "flush"), ("queue", "flush", "--domain", "example.test")):
        code, out, err = cli(*argv)
        assert code == 1 and out == ""
        assert f"strata: no Strata server is running on {data}, so nothing can flush" in err
        assert "(1 queued): start one (twistd -n strata)" in err
    # No request is left behind: a server started later would skip it anyway.
    assert _requests(data) == []


def test_release_without_a_server_releases_and_says_when_they_go(cli, data: Path) -> None:
    _queue(data, "Q1", ["a@example.test"])
    cli("queue", "hold", "Q1.1")
    code, out, _ = cli("queue", "release", "Q1.1")
    assert code == 0 and "Q1.1 <a@example.test>: released" in out
    assert f"no Strata server is running on {data}: they go when one starts" in out
    assert _states(data) == {"Q1.1": "queued"}
    assert _requests(data) == []


def test_alert_test_email_without_a_server_queues_nothing_and_says_why(cli, data: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "h", "--alert-email", "noc@example.net")
    code, out, err = cli("alert", "test", "example.test")
    assert code == 1
    assert "email to noc@example.net: no Strata server is running on" in err
    assert "nothing queued; start one and test again" in err
    assert json.loads(cli("queue", "list", "--json")[1]) == []
    assert _requests(data) == []


def test_queue_list_of_a_domain_that_is_not_protected_says_so(cli, data: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    _queue(data, "Q1", ["a@example.test"])
    _queue(data, "Q2", ["s@outside.test"])  # a DSN, say, for a domain we do not protect
    code, out, err = cli("queue", "list", "--domain", "outside.test")
    assert code == 0
    assert out.startswith(
        "note: outside.test is not a protected domain (see: strata domain list); listing what "
        "is queued for it all the same\n"
    )
    assert "Q2.1" in out and "Q1.1" not in out and err == ""
    code, out, err = cli("queue", "list", "--domain", "exmaple.test")  # a typo
    assert code == 0
    assert out == (
        "note: exmaple.test is not a protected domain (see: strata domain list)\n"
        "the queue is empty for exmaple.test\n"
    )
    # --json: the note goes to stderr, the document stays valid.
    code, out, err = cli("queue", "list", "--domain", "outside.test", "--json")
    assert [e["id"] for e in json.loads(out)] == ["Q2.1"]
    assert (
        err == "strata: note: outside.test is not a protected domain (see: strata domain "
        "list); listing what is queued for it all the same\n"
    )
    # A protected domain: no note.
    code, out, err = cli("queue", "list", "--domain", "example.test")
    assert "note:" not in out + err and "Q1.1" in out


def test_removing_a_domain_says_where_its_queued_mail_goes(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    _queue(data, "Q1", ["a@example.test", "b@example.test", "c@example.test"])
    cli("queue", "hold", "Q1.3")
    code, out, _ = cli("domain", "remove", "example.test")
    assert code == 0
    assert "2 queued entries for example.test stay in the queue" in out
    assert "not relayed until example.test is protected again" in out
    assert "1 held entries for example.test stay held" in out


def test_queue_show_says_when_an_entry_goes_next_or_went(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    _queue(data, "Q1", ["a@example.test", "b@example.test"])
    now = WallClock().seconds()
    store = _open(data)
    try:
        result_of(store.record_result(
            AttemptResult("Q1.1", DELIVERED_OUTCOME, "250 2.0.0 Ok: queued as X", now - 60)
        ))  # fmt: skip
        result_of(store.record_result(
            AttemptResult("Q1.2", DEFERRED_OUTCOME, "451 4.3.0 try later", now, now + 300)
        ))  # fmt: skip
    finally:
        store.close()
    out = cli("queue", "show", "Q1")[1]
    [a, b] = [line for line in out.splitlines() if line.startswith("entry:")]
    assert "delivered, 1 attempt, delivered " in a and ": 250 2.0.0 Ok: queued as X" in a
    assert "queued, 1 attempt, next attempt " in b
    assert "(in 4m)" in b or "(in 5m)" in b
    assert "last error: 451 4.3.0 try later" in b


# -- synced users (issue #4) ---------------------------------------------------------------------


def _stored_hash(data_dir: Path, address: str) -> PasswordHash | None:
    store = _open(data_dir)
    try:
        text = result_of(store.get_user(address))
    finally:
        store.close()
    return PasswordHash.parse(text) if text is not None else None


def _passwd_file(tmp_path: Path, text: str, name: str = "users.passwd") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def users_domain(cli, tmp_path: Path) -> Path:
    assert cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")[0] == 0
    return tmp_path / "strata-data"


@pytest.fixture
def typed(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be at a terminal where the admin types the given answers to getpass."""

    def answers(*typed_answers: str) -> list[str]:
        prompts: list[str] = []
        pending = list(typed_answers)

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        def fake_getpass(prompt: str = "Password: ") -> str:
            prompts.append(prompt)
            return pending.pop(0)

        monkeypatch.setattr("sys.stdin", Terminal())
        monkeypatch.setattr("getpass.getpass", fake_getpass)
        return prompts

    return answers


def test_user_import_replaces_the_list_and_merge_keeps_the_others(
    cli, users_domain: Path, tmp_path: Path
) -> None:
    sha = hash_password("sha secret")
    blf = hash_password("blf secret", "BLF-CRYPT")
    first = _passwd_file(
        tmp_path,
        "# synced from the primary\n"
        f"alice@example.test:{sha.text}:1000:1000::/home/alice::\n"
        f"bob:{blf.value}\n"
        f"carol@EXAMPLE.test:{sha.text}\n",
    )
    code, out, err = cli("user", "import", "example.test", str(first))
    assert (code, err) == (0, "")
    assert "3 added, 0 updated, 0 removed, 0 unchanged" in out
    alice, bob = (
        _stored_hash(users_domain, "alice@example.test"),
        _stored_hash(users_domain, "Bob@example.test"),
    )
    assert alice is not None and verify(alice, "sha secret")
    assert bob is not None and bob.scheme == "BLF-CRYPT" and verify(bob, "blf secret")

    # The default replaces: carol is gone, bob changed, alice stays as she was.
    new_blf = hash_password("new bob", "BLF-CRYPT")
    second = _passwd_file(
        tmp_path, f"alice@example.test:{sha.text}\nbob@example.test:{new_blf.text}\n", "2"
    )
    code, out, _ = cli("user", "import", "example.test", str(second))
    assert code == 0 and "0 added, 1 updated, 1 removed, 1 unchanged" in out
    assert _stored_hash(users_domain, "carol@example.test") is None

    # --merge adds and updates, and keeps alice and bob.
    third = _passwd_file(tmp_path, f"dave@example.test:{sha.text}\n", "3")
    code, out, _ = cli("user", "import", "example.test", str(third), "--merge")
    assert code == 0 and "1 added, 0 updated, 0 removed, 0 unchanged" in out
    listed = json.loads(cli("user", "list", "example.test", "--json")[1])
    assert listed == [
        {"address": "alice@example.test", "scheme": "SHA512-CRYPT"},
        {"address": "bob@example.test", "scheme": "BLF-CRYPT"},
        {"address": "dave@example.test", "scheme": "SHA512-CRYPT"},
    ]
    imports = _events(cli, "users.imported")
    assert [(e["data"]["mode"], e["data"]["removed"]) for e in imports] == [
        ("replaced", 0),
        ("replaced", 1),
        ("merged", 0),
    ]
    # No hash reaches the output or the event log.
    everything = out + cli("events", "--json", "--limit", "1000")[1]
    everything += cli("user", "list", "example.test")[1]
    for secret in (sha.value, blf.value, new_blf.value):
        assert secret not in everything


def test_a_bad_passwd_file_names_every_bad_line_and_imports_nothing(
    cli, users_domain: Path, tmp_path: Path
) -> None:
    sha = hash_password("secret")
    good = _passwd_file(tmp_path, f"alice@example.test:{sha.text}\n", "good")
    assert cli("user", "import", "example.test", str(good))[0] == 0
    bad = _passwd_file(
        tmp_path,
        f"bob@example.test:{sha.text}\n"
        "carol@example.test:{PLAIN}hunter2\n"
        f"dave@elsewhere.test:{sha.text}\n"
        f"bob@example.test:{sha.text}\n"
        "erin@example.test:{SHA512-CRYPT}not-a-crypt-string\n",
    )
    code, out, err = cli("user", "import", "example.test", str(bad))
    assert code == 1 and out == ""
    assert "4 bad line(s)" in err and "nothing imported" in err
    for number in (2, 3, 4, 5):
        assert f"line {number}:" in err
    assert "line 1:" not in err
    assert "hunter2" not in err and "not-a-crypt-string" not in err
    # Nothing imported: the old list stands, bob was not added.
    assert [u["address"] for u in json.loads(cli("user", "list", "example.test", "--json")[1])] == [
        "alice@example.test"
    ]
    assert len(_events(cli, "users.imported")) == 1


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (("user", "import", "absent.test", "FILE"), "absent.test is not a protected domain", 1),
        (("user", "import", "example.test", "missing.passwd"), "cannot read missing.passwd", 1),
        (("user", "import", "example.test", "empty.passwd"), "lists no users", 1),
        (("user", "import", "bad domain", "FILE"), "not a valid domain name", 2),
        (("user", "list", "absent.test"), "absent.test is not a protected domain", 1),
        (("user", "remove", "nobody@example.test"), "nobody@example.test is not a synced user", 1),
        (("user", "remove", "no-at-sign"), "is not an address", 2),
        (("user", "passwd", "nobody@example.test", "--password-stdin"), "not a synced user", 1),
        (("user", "add", "x@absent.test", "--password-stdin"), "is not a protected domain", 1),
    ],
)
def test_user_errors_are_clear(cli, users_domain, tmp_path: Path, argv, message, status) -> None:
    _passwd_file(tmp_path, "# nobody yet\n\n", "empty.passwd")
    code, out, err = cli(*argv)
    assert (code, out) == (status, "")
    assert message in err and "Traceback" not in err


def test_user_add_passwd_and_remove_at_a_terminal(
    cli, users_domain: Path, typed, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = typed("first pass", "first pass")
    code, out, err = cli("user", "add", "Alice@Example.test")
    assert (code, err) == (0, "")
    assert out == "added alice@example.test (SHA512-CRYPT)\n"
    assert prompts == ["New password for alice@example.test: ", "Again: "]
    stored = _stored_hash(users_domain, "alice@example.test")
    assert stored is not None and verify(stored, "first pass")

    typed("x", "x")
    code, _, err = cli("user", "add", "alice@example.test")
    assert code == 1 and "already exists" in err

    typed("second pass", "second pass")
    code, out, _ = cli("user", "passwd", "alice@example.test", "--scheme", "ARGON2ID")
    assert code == 0 and "ARGON2ID" in out
    stored = _stored_hash(users_domain, "alice@example.test")
    assert stored is not None and stored.scheme == "ARGON2ID"
    assert verify(stored, "second pass") and not verify(stored, "first pass")

    typed("third pass", "typo")
    code, _, err = cli("user", "passwd", "alice@example.test")
    assert code == 1 and "do not match" in err
    assert verify(_stored_hash(users_domain, "alice@example.test"), "second pass")  # type: ignore[arg-type]

    code, out, _ = cli("user", "remove", "ALICE@example.test")
    assert code == 0 and "removed alice@example.test" in out
    assert "accepts every address" in out  # the last user went
    assert _stored_hash(users_domain, "alice@example.test") is None
    kinds = [e["kind"] for e in _events(cli, "user.added", "user.password_changed", "user.removed")]
    assert kinds == ["user.added", "user.password_changed", "user.removed"]
    logged = cli("events", "--json", "--limit", "1000")[1]
    assert "pass" not in logged.replace("password", "")
    assert "first pass" not in capsys.readouterr().out


def test_user_passwords_from_stdin_for_scripts(
    cli, users_domain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret from a script\nignored\n"))
    code, out, _ = cli(
        "user", "add", "bob@example.test", "--password-stdin", "--scheme", "BLF-CRYPT"
    )
    assert code == 0 and "(BLF-CRYPT)" in out
    stored = _stored_hash(users_domain, "bob@example.test")
    assert stored is not None and stored.scheme == "BLF-CRYPT"
    assert verify(stored, "s3cret from a script")

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = cli("user", "passwd", "bob@example.test", "--password-stdin")
    assert code == 1 and "no password on standard input" in err

    # Without --password-stdin and without a terminal: refused, not read from a pipe.
    monkeypatch.setattr("sys.stdin", io.StringIO("would be read\n"))
    code, _, err = cli("user", "passwd", "bob@example.test")
    assert code == 2 and "--password-stdin" in err
    assert verify(_stored_hash(users_domain, "bob@example.test"), "s3cret from a script")  # type: ignore[arg-type]


def test_user_list_text_shows_addresses_and_schemes(
    cli, users_domain: Path, tmp_path: Path
) -> None:
    code, out, _ = cli("user", "list", "example.test")
    assert code == 0 and "no synced users for example.test" in out
    sha, ssha = hash_password("a"), hash_password("b", "SSHA512")
    path = _passwd_file(tmp_path, f"bob@example.test:{ssha.text}\nalice:{sha.text}\n")
    assert cli("user", "import", "example.test", str(path))[0] == 0
    code, out, _ = cli("user", "list", "example.test")
    assert out.splitlines() == [
        "ADDRESS             SCHEME",
        "alice@example.test  SHA512-CRYPT",
        "bob@example.test    SSHA512",
    ]


# -- send-as aliases (issue #5) ------------------------------------------------------------------


@pytest.fixture
def alias_users(cli, users_domain: Path, tmp_path: Path) -> Path:
    """example.test protected, with synced users alice and bob."""
    sha = hash_password("x", "SSHA512")
    path = _passwd_file(tmp_path, f"alice@example.test:{sha.text}\nbob@example.test:{sha.text}\n")
    assert cli("user", "import", "example.test", str(path))[0] == 0
    return users_domain


def _aliases(data_dir: Path) -> list[tuple[str, str]]:
    store = _open(data_dir)
    try:
        pairs: list[tuple[str, str]] = result_of(store.list_aliases())
    finally:
        store.close()
    return pairs


def test_user_alias_add_list_and_remove(cli, alias_users: Path) -> None:
    code, out, err = cli("user", "alias", "add", "Sales@Example.TEST", "ALICE@example.test")
    assert (code, err) == (0, "")
    assert out == "alice@example.test may now send as sales@example.test\n"
    # Any domain the admin names, Unicode or not.
    code, out, _ = cli("user", "alias", "add", "alice@bücher.example", "alice@example.test")
    assert code == 0 and "alice@xn--bcher-kva.example" in out
    assert cli("user", "alias", "add", "help@example.test", "bob@example.test")[0] == 0
    assert _aliases(alias_users) == [
        ("alice@xn--bcher-kva.example", "alice@example.test"),
        ("help@example.test", "bob@example.test"),
        ("sales@example.test", "alice@example.test"),
    ]

    code, out, _ = cli("user", "alias", "list")
    assert code == 0
    assert out.splitlines() == [
        "ALIAS                        USER",
        "alice@xn--bcher-kva.example  alice@example.test",
        "help@example.test            bob@example.test",
        "sales@example.test           alice@example.test",
    ]
    code, out, _ = cli("user", "alias", "list", "Bob@example.test", "--json")
    assert code == 0
    assert json.loads(out) == [{"alias": "help@example.test", "user": "bob@example.test"}]

    # Adding it again changes nothing; for another user, it moves.
    code, out, _ = cli("user", "alias", "add", "sales@example.test", "alice@example.test")
    assert code == 0 and "may already send as" in out
    code, out, _ = cli("user", "alias", "add", "sales@example.test", "bob@example.test")
    assert code == 0
    assert out == (
        "bob@example.test may now send as sales@example.test (it was alice@example.test's)\n"
    )
    assert [a for a, u in _aliases(alias_users) if u == "bob@example.test"] == [
        "help@example.test",
        "sales@example.test",
    ]

    code, out, _ = cli("user", "alias", "remove", "SALES@example.test")
    assert code == 0 and out == "bob@example.test may no longer send as sales@example.test\n"
    code, out, err = cli("user", "alias", "remove", "sales@example.test")
    assert (code, out) == (1, "") and "sales@example.test is not a send-as alias" in err

    events = _events(cli, "user.alias_added", "user.alias_removed")
    assert [(e["kind"], e["domain"], e["data"]["alias"], e["data"]["user"]) for e in events] == [
        ("user.alias_added", "example.test", "sales@example.test", "alice@example.test"),
        ("user.alias_added", "example.test", "alice@xn--bcher-kva.example", "alice@example.test"),
        ("user.alias_added", "example.test", "help@example.test", "bob@example.test"),
        ("user.alias_added", "example.test", "sales@example.test", "bob@example.test"),
        ("user.alias_removed", "example.test", "sales@example.test", "bob@example.test"),
    ]
    assert events[3]["data"]["previous_user"] == "alice@example.test"


def test_user_alias_list_when_there_are_none(cli, alias_users: Path) -> None:
    code, out, _ = cli("user", "alias", "list")
    assert code == 0 and out.startswith("no send-as aliases (add one: strata user alias add")
    code, out, _ = cli("user", "alias", "list", "alice@example.test")
    assert code == 0 and out.startswith("no send-as aliases for alice@example.test")
    assert json.loads(cli("user", "alias", "list", "--json")[1]) == []


def test_removing_a_user_removes_their_aliases(cli, alias_users: Path) -> None:
    assert cli("user", "alias", "add", "sales@example.test", "alice@example.test")[0] == 0
    assert cli("user", "alias", "add", "help@example.test", "bob@example.test")[0] == 0
    assert cli("user", "remove", "alice@example.test")[0] == 0
    assert _aliases(alias_users) == [("help@example.test", "bob@example.test")]


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (
            ("user", "alias", "add", "sales@example.test", "nobody@example.test"),
            "nobody@example.test is not a synced user",
            1,
        ),
        (
            ("user", "alias", "add", "sales@example.test", "x@absent.test"),
            "x@absent.test is not a synced user",
            1,
        ),
        (("user", "alias", "add", "sales", "alice@example.test"), "'sales' is not an address", 2),
        (
            ("user", "alias", "add", "sales@-bad-.test", "alice@example.test"),
            "sales@-bad-.test",
            2,
        ),
        (("user", "alias", "add", "sales@example.test", "alice"), "'alice' is not an address", 2),
        (
            ("user", "alias", "add", "Alice@example.test", "alice@example.test"),
            "alice@example.test is the user's own address",
            2,
        ),
        (("user", "alias", "remove", "nothing@example.test"), "is not a send-as alias", 1),
        (("user", "alias", "remove", "no-at-sign"), "is not an address", 2),
        (
            ("user", "alias", "list", "nobody@example.test"),
            "nobody@example.test is not a synced user",
            1,
        ),
        (("user", "alias", "list", "no-at-sign"), "is not an address", 2),
    ],
)
def test_user_alias_errors_are_clear(cli, alias_users: Path, argv, message, status) -> None:
    code, out, err = cli(*argv)
    assert (code, out) == (status, "")
    assert message in err and "Traceback" not in err
    assert _aliases(alias_users) == []


def test_accept_unknown_is_set_shown_and_cleared(cli) -> None:
    assert cli("domain", "add", "example.test", "--relay", "h", "--accept-unknown")[0] == 0
    assert json.loads(cli("domain", "show", "example.test", "--json")[1])["accept_unknown"]
    assert "unknown users: accepted" in cli("domain", "show", "example.test")[1]
    assert cli("domain", "update", "example.test", "--no-accept-unknown")[0] == 0
    out = cli("domain", "show", "example.test")[1]
    assert "unknown users: refused (550 5.1.1) once users are imported" in out
    assert not json.loads(cli("domain", "show", "example.test", "--json")[1])["accept_unknown"]


# -- the webmail portal and retention (issue #4) -------------------------------------------------


def _outage(data_dir: Path, started: float, ended: float | None = None) -> None:
    store = _open(data_dir)
    try:
        result_of(store.open_outage("example.test", started, "connection refused"))
        if ended is not None:
            result_of(store.close_outage("example.test", ended))
    finally:
        store.close()


def _portal(cli) -> dict[str, Any]:
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    return {k: shown[k] for k in ("portal", "portal_open", "portal_reason")}


def test_portal_policy_defaults_to_outage_and_shows_why_it_is_open(cli, tmp_path: Path) -> None:
    data = tmp_path / "strata-data"
    assert cli("domain", "add", "example.test", "--relay", "h")[0] == 0
    assert _portal(cli) == {"portal": "outage", "portal_open": False, "portal_reason": "primary_up"}
    out = cli("domain", "show", "example.test")[1]
    assert "portal:        outage (open while the primary is down, and for 1d after)" in out
    assert "portal now:    closed: primary up" in out

    now = WallClock().seconds()
    _outage(data, now - 600)
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["portal_open"], shown["portal_reason"]) == (True, "outage")
    assert shown["portal_since"] == now - 600 and shown["portal_until"] is None
    out = cli("domain", "show", "example.test")[1]
    assert re.search(r"portal now:    open: outage since \S+ \S+ [+-]\d{4} \(10m ago\)", out)

    # Ended an hour ago: the grace period runs another 23 hours.
    store = _open(data)
    try:
        result_of(store.close_outage("example.test", now - 3600))
    finally:
        store.close()
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["portal_open"], shown["portal_reason"]) == (True, "grace")
    assert shown["portal_until"] == now - 3600 + 86400
    out = cli("domain", "show", "example.test")[1]
    assert re.search(r"portal now:    open: grace until .* \(in (22|23)h\)", out)


def test_grace_follows_the_config(cli, tmp_path: Path) -> None:
    (tmp_path / "strata.toml").write_text("[imap]\nportal_grace = 1800\nretention_days = 9\n")
    cli("domain", "add", "example.test", "--relay", "h")
    now = WallClock().seconds()
    _outage(tmp_path / "strata-data", now - 7200, now - 3600)
    assert _portal(cli)["portal_reason"] == "primary_up"
    out = cli("domain", "show", "example.test")[1]
    assert "and for 30m after" in out
    assert "retention:     9 days (global default)" in out


def test_portal_always_off_and_a_drill(cli, tmp_path: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "h", "--portal", "always")
    assert _portal(cli) == {"portal": "always", "portal_open": True, "portal_reason": "always"}
    assert "portal now:    open: always" in cli("domain", "show", "example.test")[1]

    _outage(tmp_path / "strata-data", WallClock().seconds() - 60)
    assert cli("domain", "update", "example.test", "--portal", "off")[0] == 0
    assert _portal(cli) == {"portal": "off", "portal_open": False, "portal_reason": "off"}
    out = cli("domain", "show", "example.test")[1]
    assert "portal:        off (never open)" in out and "portal now:    closed: off" in out

    # A drill: forced open, said loudly everywhere, and undone with --portal outage.
    code, out, _ = cli("domain", "update", "example.test", "--portal", "open")
    assert code == 0
    assert "forced OPEN for a drill" in out
    assert "strata domain update example.test --portal outage" in out
    assert _portal(cli) == {"portal": "open", "portal_open": True, "portal_reason": "drill"}
    out = cli("domain", "show", "example.test")[1]
    assert "portal:        OPEN for a drill" in out
    assert "portal now:    open: drill (forced open)" in out
    listing = cli("domain", "list")[1]
    assert re.search(r"example\.test\s+h:25\s+relay\s+0\s+OPEN \(drill\)", listing)
    assert json.loads(cli("domain", "list", "--json")[1])[0]["portal"] == "open"
    code, out, _ = cli("domain", "update", "example.test", "--portal", "outage")
    assert code == 0 and "drill" not in out
    # The outage is still open: back to normal means open because of it.
    assert _portal(cli) == {"portal": "outage", "portal_open": True, "portal_reason": "outage"}
    assert "PORTAL" in cli("domain", "list")[1] and "OPEN" not in cli("domain", "list")[1]
    # Every change is in the event log, with the new policy.
    updates = _events(cli, "domain.updated")
    assert [e["data"]["portal"] for e in updates] == ["off", "open", "outage"]


def test_a_domain_added_for_a_drill_says_so(cli) -> None:
    code, out, _ = cli("domain", "add", "example.test", "--relay", "h", "--portal", "open")
    assert code == 0 and "forced OPEN for a drill" in out


def test_an_unmonitored_domain_says_why_its_portal_stays_closed(cli) -> None:
    cli("domain", "add", "example.test", "--relay", "h", "--no-monitor")
    out = cli("domain", "show", "example.test")[1]
    assert "portal now:    closed: primary up (not monitored, so no outage opens it)" in out


def test_retention_days_are_set_shown_and_reset(cli) -> None:
    cli("domain", "add", "example.test", "--relay", "h", "--retention-days", "7")
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["retention_days"], shown["retention_days_in_effect"]) == (7, 7)
    assert "retention:     7 days (this domain's own)" in cli("domain", "show", "example.test")[1]
    assert cli("domain", "update", "example.test", "--retention-days", "default")[0] == 0
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["retention_days"], shown["retention_days_in_effect"]) == (None, 30)
    out = cli("domain", "show", "example.test")[1]
    assert "retention:     30 days (global default)" in out
    # Only what is given changes.
    cli("domain", "update", "example.test", "--portal", "always")
    cli("domain", "update", "example.test", "--retention-days", "365")
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["portal"], shown["retention_days"]) == ("always", 365)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--retention-days", "0"), "--retention-days: expected a whole number of days from 1"),
        (("--retention-days", "-3"), "--retention-days: expected a whole number of days from 1"),
        (("--retention-days", "7d"), "--retention-days: expected a whole number of days from 1"),
        (("--retention-days", "36501"), "from 1 to 36500"),
        (("--portal", "sometimes"), "argument --portal: invalid choice: 'sometimes'"),
        (("--portal", "OPEN"), "argument --portal: invalid choice: 'OPEN'"),
    ],
)
def test_bad_portal_and_retention_values_exit_2(cli, tmp_path: Path, argv, message) -> None:
    def refused(*args: str) -> tuple[int | str | None, str]:
        # argparse refuses a bad choice itself (SystemExit); the CLI refuses the rest.
        try:
            code, _, err = cli(*args)
        except SystemExit as e:
            assert isinstance(sys.stderr, io.StringIO)  # the cli fixture's
            return e.code, sys.stderr.getvalue()
        return code, err

    code, err = refused("domain", "add", "example.test", "--relay", "h", *argv)
    assert code == 2 and message in err, err
    assert not (tmp_path / "strata-data").exists()  # refused before a data dir was made
    assert cli("domain", "add", "example.test", "--relay", "h")[0] == 0
    code, err = refused("domain", "update", "example.test", *argv)
    assert code == 2 and message in err, err
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert (shown["portal"], shown["retention_days"]) == ("outage", None)


# -- DKIM keys (issue #5 point 4) ----------------------------------------------------------------


def _zone_txt(out: str) -> str:
    """The TXT value of the zone line ``strata dkim`` printed, as a resolver would return it."""
    line = next(line for line in out.splitlines() if " IN TXT " in line)
    return "".join(line.split(" IN TXT ", 1)[1].strip('"').split('" "'))


def test_dkim_generate_prints_a_record_that_verifies_what_the_key_signs(
    cli, tmp_path: Path
) -> None:
    import dkim

    from strata_twisted.core.dkim import DkimKeyring, sign

    assert cli("domain", "add", "bücher.example", "--relay", "h")[0] == 0
    code, out, err = cli("dkim", "generate", "Bücher.Example", "--selector", "Mail1")
    assert (code, err) == (0, "")
    assert "rsa key mail1" in out and "PRIVATE" not in out
    assert 'mail1._domainkey.xn--bcher-kva.example. IN TXT "v=DKIM1; k=rsa; p=' in out
    txt = _zone_txt(out)
    assert f"value: {txt}" in out
    key = DkimKeyring(tmp_path / "strata-data").active("bücher.example")
    assert key is not None and key.selector == "mail1"
    message = b"From: a@xn--bcher-kva.example\r\nTo: b@x.test\r\nSubject: s\r\n\r\nbody\r\n"
    signed = sign(message, key, "bücher.example", now=time.time()) + message

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return txt.encode() if name == b"mail1._domainkey.xn--bcher-kva.example." else None

    assert dkim.verify(signed, dnsfunc=dnsfunc)
    events = _events(cli, "dkim.key_generated")
    assert len(events) == 1 and events[0]["data"]["selector"] == "mail1"
    assert "PRIVATE" not in json.dumps(events)


def test_dkim_generate_defaults_to_a_dated_rsa_selector_and_show_prints_it(cli) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    code, out, _ = cli("dkim", "show", "example.test")
    assert code == 0 and "example.test has no DKIM key" in out
    assert json.loads(cli("dkim", "show", "example.test", "--json")[1])["selector"] is None
    code, out, _ = cli("dkim", "generate", "example.test")
    selector = time.strftime("s%Y-%m")
    assert code == 0 and f"rsa key {selector}" in out
    code, shown, _ = cli("dkim", "show", "example.test")
    assert code == 0 and f"active selector: {selector} (rsa)" in shown
    assert _zone_txt(shown) == _zone_txt(out)
    assert (
        cli("dkim", "generate", "example.test", "--selector", "ed", "--algorithm", "ed25519")[0]
        == 0
    )
    data = json.loads(cli("dkim", "show", "example.test", "--json")[1])
    assert (data["domain"], data["selector"], data["algorithm"]) == (
        "example.test",
        "ed",
        "ed25519",
    )
    assert data["name"] == "ed._domainkey.example.test."
    assert data["record"].startswith("v=DKIM1; k=ed25519; p=")


def test_dkim_generate_refuses_to_overwrite_a_selector_unless_replace(cli, tmp_path: Path) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    assert (
        cli("dkim", "generate", "example.test", "--selector", "s1", "--algorithm", "ed25519")[0]
        == 0
    )
    path = tmp_path / "strata-data" / "dkim" / "example.test" / "s1.key"
    before = path.read_bytes()
    code, out, err = cli("dkim", "generate", "example.test", "--selector", "S1")
    assert code == 1 and out == ""
    assert "already has a DKIM key with selector s1; nothing changed" in err and "--replace" in err
    assert path.read_bytes() == before
    code, out, _ = cli("dkim", "generate", "example.test", "--selector", "s1", "--replace")
    assert code == 0 and "replaced rsa key s1" in out
    assert path.read_bytes() != before
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (("dkim", "generate", "absent.test"), "absent.test is not a protected domain", 1),
        (("dkim", "show", "absent.test"), "absent.test is not a protected domain", 1),
        (("dkim", "generate", "bad_name.test"), "not a valid domain name", 2),
        (("dkim", "show", "x"), "needs at least two labels", 2),
        (
            ("dkim", "generate", "example.test", "--selector", "../x"),
            "not a valid DKIM selector",
            2,
        ),
        (("dkim", "generate", "example.test", "--selector", "a_b"), "not a valid DKIM selector", 2),
    ],
)
def test_dkim_errors_are_clear(cli, argv, message, status) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    code, out, err = cli(*argv)
    assert (code, out) == (status, "")
    assert message in err and "Traceback" not in err


def test_dkim_bad_usage_and_a_missing_data_dir_exit_2(cli, tmp_path: Path, capsys) -> None:
    for argv in (
        ("dkim",),
        ("dkim", "generate"),
        ("dkim", "generate", "example.test", "--algorithm", "dsa"),
    ):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        assert e.value.code == 2
    capsys.readouterr()
    code, out, err = cli("dkim", "generate", "example.test")
    assert code == 2 and out == "" and "no Strata data" in err
    assert not (tmp_path / "strata-data").exists()
    commands = list(_commands(build_parser()))
    assert ("dkim", "generate") in commands and ("dkim", "show") in commands


# -- alerts (#5): per-domain targets and 'strata alert test'


class _Hook:
    """A webhook on loopback, in a thread: records each POST, answers ``status``."""

    def __init__(self, status: int = 204) -> None:
        import http.server
        import threading

        self.status = status
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.requests.append((self.path, dict(self.headers.items()), body))
                answer = b"gateway says no" if hook.status >= 300 else b""
                self.send_response(hook.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hook():
    running = _Hook()
    yield running
    running.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_webhook_secret_can_come_from_standard_input(cli, monkeypatch) -> None:
    assert cli("domain", "add", "example.test", "--relay", "h")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("Bearer fr0m-stdin\n"))
    code, out, err = cli("domain", "update", "example.test", "--alert-webhook-auth", "-")
    assert code == 0, err
    assert "fr0m-stdin" not in out + err
    shown = json.loads(cli("domain", "show", "example.test", "--json")[1])
    assert shown["alert_webhook_auth_set"] is True
    store = open_store("sqlite", Path("strata-data"), WallClock(), SyncExecutor())
    store.open()
    try:
        domain = result_of(store.get_domain("example.test"))
    finally:
        result_of(store.close())
    assert domain is not None and domain.alert_webhook_auth == "Bearer fr0m-stdin"


def test_alert_settings_are_set_shown_and_cleared(cli) -> None:
    code, _, err = cli(
        "domain", "add", "bücher.example", "--relay", "h",
        "--alert-email", "Noc@Bücher.example",
        "--alert-webhook", "https://sms.example.net/send?key=k3y",
        "--alert-webhook-auth", "Bearer t0ken",
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(cli("domain", "show", "bücher.example", "--json")[1])
    assert (shown["alert_email"], shown["alert_webhook"], shown["alert_webhook_auth_set"]) == (
        "Noc@xn--bcher-kva.example",
        "https://sms.example.net/send?key=k3y",
        True,
    )
    assert "alert_webhook_auth" not in shown
    out = cli("domain", "show", "bücher.example")[1]
    assert "alert email:   Noc@xn--bcher-kva.example" in out
    assert "alert webhook: https://sms.example.net/send (query or user info hidden" in out
    assert "authorization set" in out
    # The secrets never reach the text output or the event log.
    events = cli("events", "--json")[1]
    for secret in ("t0ken", "k3y"):
        assert secret not in out and secret not in events

    # update changes only what is given; "" removes a setting.
    code, _, err = cli("domain", "update", "bücher.example", "--alert-webhook-auth", "")
    assert code == 0, err
    shown = json.loads(cli("domain", "show", "bücher.example", "--json")[1])
    assert shown["alert_webhook"] == "https://sms.example.net/send?key=k3y"
    assert shown["alert_webhook_auth_set"] is False
    assert "authorization not set" in cli("domain", "show", "bücher.example")[1]
    code, _, err = cli(
        "domain", "update", "bücher.example", "--alert-email", "", "--alert-webhook", ""
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(cli("domain", "show", "bücher.example", "--json")[1])
    assert (shown["alert_email"], shown["alert_webhook"]) == (None, None)
    out = cli("domain", "show", "bücher.example")[1]
    assert "alert email:   -" in out and "alert webhook: -" in out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--alert-email", "noc", "--alert-email: expected an address"),
        ("--alert-email", "two words@example.net", "--alert-email: expected an address"),
        ("--alert-email", "<noc@example.net>", "--alert-email: expected an address"),
        ("--alert-email", "noc@localhost", "--alert-email: "),
        ("--alert-email", "a" * 65 + "@example.net", "--alert-email: expected an address"),
        ("--alert-webhook", "ftp://sms.example/x", "only http:// and https://"),
        ("--alert-webhook", "sms.example.net/hook", "only http:// and https://"),
        ("--alert-webhook", "https:///path", "the URL has no host"),
        ("--alert-webhook", "http://h:99999/", "--alert-webhook: not a usable URL"),
        ("--alert-webhook", "http://h/a b", "must be %-encoded"),
        ("--alert-webhook-auth", "Bearer x\r\nX-Evil: 1", "--alert-webhook-auth: expected"),
        ("--alert-webhook-auth", " Bearer x", "--alert-webhook-auth: expected"),
    ],
)
def test_bad_alert_settings_are_refused_without_echoing_secrets(
    cli, option: str, value: str, message: str
) -> None:
    assert cli("domain", "add", "example.test", "--relay", "h")[0] == 0
    code, _, err = cli("domain", "update", "example.test", option, value)
    assert code == 2
    assert message in err
    if option != "--alert-email":
        assert value not in err
    # domain add refuses them before it makes anything.
    code, _, err = cli("domain", "add", "other.test", "--relay", "h", option, value)
    assert code == 2 and message in err
    assert cli("domain", "show", "other.test")[0] == 1


def test_alert_test_posts_to_the_webhook_and_records_an_event(cli, hook: _Hook) -> None:
    cli(
        "domain", "add", "example.test", "--relay", "mx.example.test:2999",
        "--alert-webhook", hook.url + "/sms?key=k3y", "--alert-webhook-auth", "Bearer t0ken",
    )  # fmt: skip
    code, out, err = cli("alert", "test", "example.test")
    assert code == 0, err
    assert f"test alert for example.test delivered to webhook {hook.url}/sms" in out
    assert "k3y" not in out
    ((path, headers, body),) = hook.requests
    assert path == "/sms?key=k3y"
    assert headers["Authorization"] == "Bearer t0ken"
    sent = json.loads(body)
    assert (sent["domain"], sent["relay"], sent["queued"]) == (
        "example.test",
        "mx.example.test:2999",
        0,
    )
    assert "strata alert test" in sent["reason"]
    # A test, said plainly: nobody who gets the SMS should think the mail server is down.
    assert sent["event"] == "alert.test"
    assert (
        sent["text"] == "Strata: test alert for example.test. Alerts reach you; nothing is wrong."
    )
    (event,) = [
        e for e in json.loads(cli("events", "--json")[1])["events"] if e["kind"] == "alert.test"
    ]
    assert event["domain"] == "example.test"
    assert event["data"] == {"webhook": hook.url + "/sms", "ok": True, "error": None}
    # Again at once: the admin's test is never throttled.
    assert cli("alert", "test", "example.test")[0] == 0
    assert len(hook.requests) == 2


def test_alert_test_fails_with_the_reason_when_the_webhook_refuses(cli, hook: _Hook) -> None:
    hook.status = 401
    cli("domain", "add", "example.test", "--relay", "h", "--alert-webhook", hook.url + "/sms")
    code, out, err = cli("alert", "test", "example.test")
    assert code == 1, out
    assert "strata: test alert for example.test failed: webhook" in err
    assert "401" in err and "gateway says no" in err
    assert len(hook.requests) == 1
    (event,) = [
        e for e in json.loads(cli("events", "--json")[1])["events"] if e["kind"] == "alert.test"
    ]
    assert event["data"]["ok"] is False and "401" in event["data"]["error"]


def test_alert_test_fails_when_nothing_listens(cli) -> None:
    url = f"http://127.0.0.1:{_free_port()}/sms"
    cli("domain", "add", "example.test", "--relay", "h", "--alert-webhook", url)
    code, _, err = cli("alert", "test", "example.test")
    assert code == 1
    assert f"failed: webhook {url}: ConnectionRefusedError" in err


def test_alert_test_without_a_target_says_what_is_missing(cli) -> None:
    cli("domain", "add", "example.test", "--relay", "h")
    code, _, err = cli("alert", "test", "example.test")
    assert code == 1
    assert "example.test has no alert webhook and no alert email: nothing to test" in err
    assert cli("alert", "test", "absent.test")[0] == 1


def test_alert_test_queues_an_email_and_asks_the_server_to_deliver_it(cli, server) -> None:
    cli("domain", "add", "example.test", "--relay", "h", "--alert-email", "noc@example.net")
    code, out, err = cli("alert", "test", "example.test")
    assert code == 0, err
    assert "test alert email for example.test queued to noc@example.net" in out
    [entry] = json.loads(cli("queue", "list", "--json")[1])
    assert (entry["recipient"], entry["domain"], entry["outbound"]) == (
        "noc@example.net", "example.net", True,
    )  # fmt: skip
    shown = cli("queue", "show", entry["queue_id"])[1]
    assert "Subject: [Strata] example.test: test alert (nothing is wrong)" in shown
    store = open_store("sqlite", Path("strata-data"), WallClock(), SyncExecutor())
    store.open()
    try:
        request = result_of(store.requests_after(0))
    finally:
        result_of(store.close())
    assert [(r.action, r.domain) for r in request] == [("flush", "example.net")]


# -- tenants (#13): strata reseller / customer, domain add --customer ----------------------------


def test_tenant_commands_refuse_what_does_not_exist_and_change_nothing(cli, data: Path) -> None:
    commands = list(_commands(build_parser()))
    for command in ("add", "list", "remove"):
        assert ("reseller", command) in commands and ("customer", command) in commands
    code, out, _ = cli("reseller", "add", "msp1", "--product-name", "Mailsafe")
    assert (code, out) == (0, "added reseller msp1\n")
    code, _, err = cli("customer", "remove", "nobody")
    assert code == 1 and "no customer 'nobody'" in err
    code, _, err = cli("customer", "add", "Bad Name")
    assert code == 2 and "a-z, 0-9" in err
    code, _, err = cli("domain", "add", "x.test", "--relay", "h", "--customer", "nobody")
    assert code == 1 and "no customer 'nobody'" in err
    assert json.loads(cli("domain", "list", "--json")[1]) == []


def test_resellers_customers_and_their_domains(cli, data: Path) -> None:
    assert cli("reseller", "add", "msp1")[0] == 0
    code, out, _ = cli("customer", "add", "acme", "--reseller", "msp1")
    assert code == 0 and "under reseller msp1" in out
    assert cli("customer", "add", "solo")[0] == 0
    listed = json.loads(cli("customer", "list", "--json")[1])
    assert [(c["name"], c["reseller"]) for c in listed] == [("acme", "msp1"), ("solo", None)]
    assert cli("domain", "add", "acme.test", "--relay", "h", "--customer", "acme")[0] == 0
    shown = json.loads(cli("domain", "show", "acme.test", "--json")[1])
    assert (shown["customer"], shown["reseller"]) == ("acme", "msp1")
    code, _, err = cli("customer", "remove", "acme")
    assert code == 1 and "still has 1 domain(s) (acme.test)" in err
    code, _, err = cli("reseller", "remove", "msp1")
    assert code == 1 and "still has 1 customer(s) (acme)" in err
    assert cli("domain", "remove", "acme.test")[0] == 0
    assert cli("customer", "remove", "acme")[0] == 0
    assert cli("reseller", "remove", "msp1")[0] == 0
    assert json.loads(cli("reseller", "list", "--json")[1]) == []
