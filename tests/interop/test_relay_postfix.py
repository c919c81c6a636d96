"""
The relay against a real primary: a private Postfix (loopback, delivering to a Maildir) is down
while Strata accepts mail for its domain, and the monitor opens an outage.  When Postfix starts,
the monitor sees it recover and starts a drain at once (nobody calls flush, the relay's own
schedule is minutes away): every message arrives in the order Strata accepted it (Postfix's
cleanup log shows the order it received them), each one the bytes Strata stored, DKIM intact, and
the outage closes.
"""

from __future__ import annotations

import base64
import json
import re
import smtplib
import time
from typing import Any

import dkim
import pytest

from tests.interop.test_durability import stored_bodies
from tests.peers.fixtures import PostfixFactory
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.test_dkim_intake import PRIVATE_PEM, dns

pytestmark = [pytest.mark.interop, pytest.mark.slow]

COUNT = 1000


def message(n: int) -> bytes:
    lines = [
        "From: Ana <ana@sender.test>",
        "To: u@example.test",
        f"Subject: relay {n}",
        f"Message-ID: <relay-{n}@sender.test>",
        "Date: Sun, 22 Nov 2026 20:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"message {n}: Grüße",
        ".leading dot",
        "..two leading dots",
    ]
    if n % 5 == 0:
        # A lone "." line right at the 16 KiB boundary where Twisted's stock client ends DATA.
        filler = "x" * 70
        body = "\r\n".join(lines) + "\r\n"
        while len(body) + len(filler) + 2 < 16384 - 3:
            body += filler + "\r\n"
        body += "y" * (16384 - 3 - len(body)) + "\r\n.\r\nafter the dot\r\n"
        raw = body.encode()
    else:
        # A long line (RFC 5321 allows 998 characters) and a binary attachment's base64, wrapped
        # at 76 as MIME does (a sending MTA would split longer lines, which changes the bytes).
        attachment = base64.encodebytes(bytes(range(256)) * 4).decode().splitlines()
        lines += ["w" * 980, *attachment, "end"]
        raw = ("\r\n".join(lines) + "\r\n").encode()
    canon = (b"relaxed", b"relaxed") if n % 2 else (b"simple", b"simple")
    signature = dkim.sign(raw, b"sel", b"sender.test", PRIVATE_PEM, canonicalize=canon,
                          include_headers=[b"from", b"to", b"subject", b"message-id"])  # fmt: skip
    return bytes(signature) + raw


def strata_with_a_down_primary(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> tuple[Any, PostfixInstance]:
    """
    A started Strata protecting example.test, whose primary is a private Postfix that is not
    running yet.  The relay's own schedule is far off (300 s): delivery must come from the
    monitor (probing every 0.5 s) seeing the primary recover and starting a drain at once.
    """
    primary = postfix_factory.primary(["example.test"], start=False)
    strata = strata_factory(
        extra_config="[relay]\ninterval = 300\n[monitor]\nprobe_interval = 0.5\n"
        "down_after = 2\nup_after = 2\n"
    )
    strata.cli("domain", "add", "example.test", "--relay", f"127.0.0.1:{primary.smtpd_port}")
    strata.start()
    return strata, primary


def outages(strata: Any) -> list[dict[str, Any]]:
    events = json.loads(strata.cli("events", "--json").stdout)
    return list(events["outages"])


def test_relay_drains_to_a_recovered_postfix_primary_in_order_byte_for_byte(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    # Nobody calls flush: the monitor's recovery starts the drain.
    strata, primary = strata_with_a_down_primary(strata_factory, postfix_factory)
    sent = [message(n) for n in range(COUNT)]
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        for body in sent:
            client.sendmail("ana@sender.test", ["u@example.test"], body,
                            mail_options=["BODY=8BITMIME"])  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not outages(strata):
        time.sleep(0.25)
    (outage,) = outages(strata)
    assert outage["ended_at"] is None  # the monitor saw the primary down
    assert {e["state"] for e in strata.queue()} == {"queued"}

    primary.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if {e["state"] for e in strata.queue()} == {"delivered"}:
            break
        time.sleep(0.5)
    entries = strata.queue()
    assert {e["state"] for e in entries} == {"delivered"}, entries[:3]
    (outage,) = outages(strata)
    assert outage["ended_at"] is not None and outage["duration"] > 0
    assert all(e["delivery_reply"].startswith("250 2.0.0 Ok: queued as ") for e in entries)

    # Order: the primary's cleanup logged each message as it received it.
    log = primary.maillog()
    received = re.findall(r"cleanup\[\d+\]: \w+: message-id=<(relay-\d+)@sender\.test>", log)
    assert received == [f"relay-{n}" for n in range(COUNT)]

    # Bytes: each Maildir file is Postfix's delivery headers + exactly what Strata stored
    # (Maildir keeps LF line ends), and every DKIM signature still verifies.
    _, bodies = stored_bodies(strata.data_dir)
    by_id = {e["message_id"]: bodies[e["queue_id"]] for e in entries}
    files = maildir_messages(primary.maildir)  # type: ignore[arg-type]
    assert len(files) == COUNT
    for path in files:
        delivered = path.read_bytes()
        message_id = re.search(rb"^Message-ID: (<relay-\d+@sender\.test>)", delivered, re.M)
        assert message_id is not None
        stored = by_id[message_id.group(1).decode()]
        assert delivered.endswith(stored.replace(b"\r\n", b"\n"))
        assert dkim.verify(delivered.replace(b"\n", b"\r\n"), dnsfunc=dns)


def test_sending_postfix_to_strata_to_primary_postfix_with_the_primary_down_then_up(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    strata, primary = strata_with_a_down_primary(strata_factory, postfix_factory)
    sender = postfix_factory.relay_to(["example.test"], nexthop=f"[127.0.0.1]:{strata.port}")
    count = 60
    sent = {f"<relay-{n}@sender.test>": message(n) for n in range(count)}
    with smtplib.SMTP("127.0.0.1", sender.smtpd_port, timeout=30) as client:
        for body in sent.values():
            client.sendmail("ana@sender.test", ["u@example.test"], body,
                            mail_options=["BODY=8BITMIME"])  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(strata.queue()) < count:
        time.sleep(0.25)
    accepted = [e["message_id"] for e in strata.queue()]  # Strata's arrival order
    assert sorted(accepted) == sorted(sent)
    assert sender.queue_is_empty()

    primary.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and {e["state"] for e in strata.queue()} != {"delivered"}:
        time.sleep(0.25)
    assert {e["state"] for e in strata.queue()} == {"delivered"}
    received = re.findall(r"cleanup\[\d+\]: \w+: message-id=(<relay-\d+@sender\.test>)",
                          primary.maillog())  # fmt: skip
    assert received == accepted
    for path in maildir_messages(primary.maildir):  # type: ignore[arg-type]
        delivered = path.read_bytes().replace(b"\n", b"\r\n")
        found = re.search(rb"^Message-ID: (<relay-\d+@sender\.test>)", delivered, re.M)
        assert found is not None
        # Three Received headers on top (sender Postfix, Strata, primary); the rest unchanged.
        assert delivered.endswith(sent[found.group(1).decode()])
        header = delivered[: len(delivered) - len(sent[found.group(1).decode()])]
        assert len(re.findall(rb"^Received: ", header, re.M)) == 3
        assert dkim.verify(delivered, dnsfunc=dns)
