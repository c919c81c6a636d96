"""The `strata` CLI against a real SQLite data dir (in-process, no reactor)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from strata_twisted.cli import build_parser, main
from strata_twisted.clock import WallClock
from strata_twisted.executor import SyncExecutor
from strata_twisted.model import Delivery, Envelope, IncomingMessage
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
        (("domain", "add", "not a domain", "--relay", "h"), "not a valid domain name"),
        (("domain", "add", "x.test", "--relay", "h:99999"), "--relay: invalid port"),
        (("domain", "show", "absent.test"), "absent.test is not a protected domain"),
        (("domain", "remove", "absent.test"), "absent.test is not a protected domain"),
        (("domain", "update", "absent.test", "--mode", "both"), "is not a protected domain"),
        (("queue", "show", "NOPE"), "no queue entry or message NOPE"),
    ],
)
def test_errors_are_clear_and_exit_1(cli, argv, message) -> None:
    code, out, err = cli(*argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


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
    for command in [(), *commands]:
        with pytest.raises(SystemExit) as e:
            main([*command, "--help"])
        assert e.value.code == 0
        assert "usage: strata" in capsys.readouterr().out
