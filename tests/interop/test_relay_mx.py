"""
A DSN goes to the sender's domain MX: a private Postfix primary refuses one recipient (5xx), so
Strata bounces the message and queues a DSN to ``sender@sender.test``.  sender.test is not
protected, so the relay asks DNS (a loopback twisted.names server: sender.test MX mx.sender.test,
mx.sender.test A 127.0.0.1) and delivers the DSN to the ``smtp-sink`` listening on the configured
``mx_port``.
"""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.wait import eventually
from tests.test_core_relay import parts

pytestmark = [pytest.mark.interop]

ROOT = Path(__file__).resolve().parent.parent.parent
T = TypeVar("T")

ZONE = {
    "sender.test": [["MX", 10, "mx.sender.test"]],
    "mx.sender.test": [["A", "127.0.0.1"]],
}
# Postfix 3.7 inline: table; the inner braces keep the reply's spaces in one value.
REJECT_GONE = "check_recipient_access inline:{ { gone@example.test = 550 5.1.1 no such user } }"


@pytest.fixture
def dns_port() -> Iterator[int]:
    """The loopback DNS server of tests/peers/dns.py, in a subprocess of its own."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import json, sys\nfrom tests.peers.dns import serve\n"
         "serve(json.loads(sys.argv[1]))", json.dumps(ZONE)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip().isdigit(), f"the DNS server did not start (exit {process.poll()})"
        yield int(line)
    finally:
        process.terminate()
        process.wait(10)


def test_a_dsn_is_delivered_to_the_senders_mx(
    strata_factory: Any, postfix_factory: PostfixFactory, dns_port: int
) -> None:
    sink = postfix_factory.smtp_sink()
    primary = postfix_factory.primary(
        ["example.test"], main_cf={"smtpd_recipient_restrictions": f"{REJECT_GONE}, permit"}
    )
    strata = strata_factory(
        extra_config=f'[relay]\ninterval = 1\nresolver = "127.0.0.1:{dns_port}"\n'
        f"mx_port = {sink.port}\n"
    )
    strata.cli("domain", "add", "example.test", "--relay", f"127.0.0.1:{primary.smtpd_port}")
    strata.start()
    message = (b"From: sender@sender.test\r\nTo: gone@example.test\r\nSubject: hello\r\n"
               b"Message-ID: <mx-1@sender.test>\r\n\r\nhello\r\n")  # fmt: skip

    def submitted() -> bool:
        with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
            try:
                client.sendmail("sender@sender.test", ["gone@example.test"], message)
            except smtplib.SMTPRecipientsRefused:  # 451 until the domains are loaded
                return False
        return True

    assert eventually(submitted, timeout=10)

    # smtp-sink creates its dump file at MAIL FROM and fills it as DATA arrives: read it once
    # Strata has recorded the sink's 250 for the DSN (from <>), i.e. once the dump is whole.
    def dsn_delivered() -> bool:
        return any(e["sender"] == "" and e["state"] == "delivered" for e in strata.queue())

    assert eventually(dsn_delivered), strata.log_text()[-3000:]
    messages = sink.messages()
    assert len(messages) == 1, strata.log_text()[-3000:]
    dump = messages[0]
    dsn = email.message_from_bytes(dump, policy=email.policy.compat32)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert b"<sender@sender.test>" in dump  # smtp-sink records RCPT TO
    status = parts(dsn)[1]
    assert status.get_content_type() == "message/delivery-status"
    per_recipient = parts(status)[1]
    assert per_recipient["Final-Recipient"] == "rfc822; gone@example.test"
    assert per_recipient["Status"] == "5.1.1"
    assert "no such user" in per_recipient["Diagnostic-Code"]

    def settled() -> dict[str, str]:
        states = {e["domain"]: e["state"] for e in strata.queue()}
        return states if states.get("sender.test") == "delivered" else {}

    assert eventually(settled) == {"example.test": "bounced", "sender.test": "delivered"}
    events = json.loads(strata.cli("events", "--json").stdout)
    assert "relay.no_route" not in json.dumps(events)


REJECT_AND_DEFER = (
    "check_recipient_access inline:{ { gone@example.test = 550 5.1.1 no such user },"
    " { busy@example.test = 450 4.2.1 mailbox busy } }"
)


def test_per_recipient_results_against_a_real_primary(
    strata_factory: Any, postfix_factory: PostfixFactory, dns_port: int
) -> None:
    """One message to a refused, a deferred and an accepted recipient, plus one from <>."""
    sink = postfix_factory.smtp_sink()
    primary = postfix_factory.primary(
        ["example.test"], main_cf={"smtpd_recipient_restrictions": f"{REJECT_AND_DEFER}, permit"}
    )
    strata = strata_factory(
        extra_config=f'[relay]\ninterval = 1\nresolver = "127.0.0.1:{dns_port}"\n'
        f"mx_port = {sink.port}\n"
    )
    strata.cli("domain", "add", "example.test", "--relay", f"127.0.0.1:{primary.smtpd_port}")
    strata.start()
    body = (b"From: sender@sender.test\r\nTo: several@example.test\r\nSubject: results\r\n"
            b"Message-ID: <mx-2@sender.test>\r\n\r\nhello\r\n")  # fmt: skip
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.sendmail(
            "sender@sender.test",
            ["gone@example.test", "busy@example.test", "ok@example.test"],
            body,
        )
        client.sendmail("", ["gone@example.test"], body.replace(b"mx-2", b"mx-3"))  # fmt: skip

    def settled() -> dict[tuple[str, str], dict[str, Any]]:
        entries = {(e["message_id"], e["recipient"]): e for e in strata.queue()}
        busy = entries.get(("<mx-2@sender.test>", "busy@example.test"), {})
        done = [e for e in entries.values() if e["state"] in ("bounced", "delivered")]
        return entries if busy.get("attempts", 0) >= 2 and len(done) >= 4 else {}

    entries = eventually(settled, timeout=30)
    assert entries, strata.queue()
    states = {key: e["state"] for key, e in entries.items()}
    assert states[("<mx-2@sender.test>", "gone@example.test")] == "bounced"
    assert states[("<mx-2@sender.test>", "ok@example.test")] == "delivered"
    assert states[("<mx-3@sender.test>", "gone@example.test")] == "bounced"
    busy = entries[("<mx-2@sender.test>", "busy@example.test")]
    # The 4xx one stays queued and is retried on each run, without blocking the others.
    assert busy["state"] == "queued" and "450 4.2.1" in busy["last_error"]
    # Exactly one DSN: for the refused recipient of the real sender, none for <>.
    time.sleep(1.5)
    dsns = sink.messages()
    assert len(dsns) == 1
    report = email.message_from_bytes(dsns[0], policy=email.policy.compat32)
    recipients = [p["Final-Recipient"] for p in parts(parts(report)[1])[1:]]
    assert recipients == ["rfc822; gone@example.test"]
