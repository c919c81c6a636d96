"""
Issue #11, points 4 and 5, against a real ``twistd`` and a real Postfix primary that is down,
then recovers (the monitor sees it and starts a drain at once):

- RFC 5321 §4.5.1: with a synced user list that lacks postmaster, ``<Postmaster>`` (swaks) and
  ``postmaster@example.test`` (smtplib) are both accepted.  The second reaches the primary; the
  first stays visible in ``strata queue list``, held, until ``[server] postmaster`` is set, and
  then reaches the operator's mailbox at the primary after a restart.
- 100 identical RCPTs make one queue entry and one delivery; with ``relay.batch_size`` 7 a
  message for 20 recipients, each named several times, reaches each of them exactly once, in one
  transaction; and a queue written before intake kept one entry per recipient (100 entries for
  one recipient) is delivered once.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from strata_twisted.executor import SyncExecutor
from strata_twisted.model import Delivery
from strata_twisted.storage.sqlite import SQLiteStore
from strata_twisted.testing import result_of, store_message
from tests.peers.fixtures import PostfixFactory
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.peers.swaks import run_swaks

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MONITOR = "[monitor]\nprobe_interval = 0.5\ndown_after = 2\nup_after = 2\n"
HASH = "{SHA512-CRYPT}$6$saltsalt$" + "a" * 86  # a synced user's hash; nobody logs in here


def body(message_id: str, to: str = "u@example.test") -> bytes:
    return (f"From: Ana <ana@sender.test>\r\nTo: {to}\r\nSubject: {message_id}\r\n"
            f"Message-ID: <{message_id}@sender.test>\r\n\r\nhello\r\n").encode()  # fmt: skip


def wait_until(what: str, check: Any, strata: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen\n{strata.log_text()[-3000:]}")
        time.sleep(0.25)


def outage_open(strata: Any) -> bool:
    outages = json.loads(strata.cli("events", "--json").stdout)["outages"]
    return any(o["ended_at"] is None for o in outages)


def deliveries(primary: PostfixInstance) -> list[tuple[str, str]]:
    """(Delivered-To, Message-ID) of every file in the primary's Maildir: Postfix's virtual
    agent writes one file per recipient it delivered to."""
    out = []
    for path in maildir_messages(primary.maildir):  # type: ignore[arg-type]
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        out.append((str(parsed["Delivered-To"]), str(parsed["Message-ID"])))
    return sorted(out)


def transactions(primary: PostfixInstance, message_id: str) -> int:
    """How many times the primary received the message (its cleanup logs each one)."""
    pattern = rf"cleanup\[\d+\]: \w+: message-id=<{re.escape(message_id)}@sender\.test>"
    return len(re.findall(pattern, primary.maillog()))


def test_postmaster_is_accepted_then_delivered_and_held_until_an_operator_is_set(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    primary = postfix_factory.primary(["example.test"], start=False)
    strata = strata_factory(extra_config="[relay]\ninterval = 300\n" + MONITOR)
    strata.cli("domain", "add", "example.test", "--relay", f"127.0.0.1:{primary.smtpd_port}")
    passwd = strata.root / "example.test.passwd"
    passwd.write_text(f"ana@example.test:{HASH}\n")
    strata.cli("user", "import", "example.test", str(passwd))
    strata.start()

    bare = run_swaks(strata.port, "--from", "ana@sender.test", "--to", "Postmaster",
                     "--header", "Message-Id: <pm-bare@sender.test>")  # fmt: skip
    assert bare.returncode == 0, bare.explain()
    assert bare.has_reply("250 2.1.5 Ok", error=False), bare.explain()
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.ehlo("client.test")
        refused = client.sendmail("ana@sender.test", ["postmaster@example.test",
                                                      "carol@example.test"],
                                  body("pm-domain", "postmaster@example.test"))  # fmt: skip
    # The list is in force: carol is unknown; postmaster is accepted all the same.
    assert refused == {"carol@example.test": (550, b"5.1.1 Recipient address rejected: "
                                                   b"User unknown")}  # fmt: skip

    entries = {e["recipient"]: e for e in strata.queue()}
    assert set(entries) == {"Postmaster", "postmaster@example.test"}
    held = entries["Postmaster"]
    assert (held["state"], held["domain"]) == ("held", "(postmaster)")
    assert "set [server] postmaster" in held["last_error"]
    listing = strata.cli("queue", "list").stdout
    (row,) = [line for line in listing.splitlines() if line.endswith(" Postmaster")]
    assert " held " in row, listing

    wait_until("the outage", lambda: outage_open(strata), strata)
    primary.start()

    def states() -> dict[str, str]:
        return {e["recipient"]: e["state"] for e in strata.queue()}

    expected = {"Postmaster": "held", "postmaster@example.test": "delivered"}
    wait_until("delivery to postmaster@example.test", lambda: states() == expected, strata)
    assert deliveries(primary) == [("postmaster@example.test", "<pm-domain@sender.test>")]
    # Not lost, not expired: still there, still saying what to do.
    (held,) = [e for e in strata.queue() if e["recipient"] == "Postmaster"]
    assert held["state"] == "held" and "[server] postmaster" in held["last_error"]

    # The operator sets the address and restarts: the held mail goes there, at the primary.
    strata.stop()
    strata.config.write_text(
        strata.config.read_text() + '\n[server]\npostmaster = "ops@example.test"\n'
    )
    strata.start()
    wait_until("delivery to the operator",
               lambda: {e["state"] for e in strata.queue()} == {"delivered"}, strata)  # fmt: skip
    (routed,) = [e for e in strata.queue() if e["queue_id"] == held["queue_id"]]
    assert (routed["recipient"], routed["domain"], routed["id"]) == (
        "ops@example.test", "example.test", held["id"]
    )  # fmt: skip
    assert deliveries(primary) == [
        ("ops@example.test", "<pm-bare@sender.test>"),
        ("postmaster@example.test", "<pm-domain@sender.test>"),
    ]
    assert "routed to <ops@example.test>" in strata.log_text()


def test_repeated_recipients_reach_the_primary_once_each_whatever_the_batch_size(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    primary = postfix_factory.primary(["example.test"], start=False)
    strata = strata_factory(extra_config="[relay]\ninterval = 300\nbatch_size = 7\n" + MONITOR)
    strata.cli("domain", "add", "example.test", "--relay", f"127.0.0.1:{primary.smtpd_port}")
    legacy = legacy_queue(strata.data_dir)
    strata.start()

    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.ehlo("client.test")
        # 100 identical RCPTs (intake.max_recipients is 100): every one answered 250.
        assert client.sendmail("ana@sender.test", ["u@example.test"] * 100,
                               body("hundred")) == {}  # fmt: skip
        # 20 recipients, each named three times, once with the domain in upper case: 60 RCPTs,
        # more recipients than relay.batch_size.
        twenty = [f"r{n:02d}@example.test" for n in range(20)]
        named = twenty + twenty + [r.replace("example.test", "EXAMPLE.TEST") for r in twenty]
        assert client.sendmail("ana@sender.test", named, body("twenty")) == {}
    entries = strata.queue()
    by_message: dict[str, list[str]] = {}
    for entry in entries:
        by_message.setdefault(entry["message_id"], []).append(entry["recipient"])
    assert by_message["<hundred@sender.test>"] == ["u@example.test"]  # one queue entry
    assert by_message["<twenty@sender.test>"] == twenty
    assert len(by_message["<legacy@sender.test>"]) == 100  # written with one entry per RCPT

    wait_until("the outage", lambda: outage_open(strata), strata)
    primary.start()
    wait_until("the drain", lambda: {e["state"] for e in strata.queue()} == {"delivered"}, strata)

    got = deliveries(primary)
    assert got.count(("u@example.test", "<hundred@sender.test>")) == 1
    assert got.count(("v@example.test", "<legacy@sender.test>")) == 1
    assert sorted(to for to, mid in got if mid == "<twenty@sender.test>") == twenty
    assert len(got) == 22
    # Each message went in one transaction, though two have more entries than batch_size.
    assert [transactions(primary, m) for m in ("hundred", "twenty", "legacy")] == [1, 1, 1]
    # Every legacy entry has the one delivery's result.
    legacy_entries = [e for e in strata.queue() if e["queue_id"] == legacy]
    assert len({e["delivery_reply"] for e in legacy_entries}) == 1


def legacy_queue(data_dir: Path) -> str:
    """A queue as an older Strata left it: one message with 100 entries for one recipient."""
    clock = Clock()
    clock.rightNow = time.time()
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=False)
    try:
        result_of(store_message(store, "LEGACY0000000001", body("legacy", "v@example.test"),
                                [Delivery("v@example.test", "example.test")] * 100,
                                sender="ana@sender.test", received_at=clock.seconds(),
                                header_message_id="<legacy@sender.test>"))  # fmt: skip
    finally:
        result_of(store.close())
    return "LEGACY0000000001"
