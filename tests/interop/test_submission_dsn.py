"""
Issue 5's acceptance "a 5xx yields a DSN in the sender's INBOX, visible over IMAP; a null-MX
domain fails at once", with real processes only: ``twistd -n strata`` (submission and IMAP on free
ports, relay every second, MX lookups against the loopback DNS server of ``tests/peers/dns.py``),
and a real Postfix as the MX of ``elsewhere.test`` that refuses ``gone@elsewhere.test`` with 550.

alice@example.test (protected, mode ``both``, portal always open) sends over submission with
smtplib (STARTTLS, AUTH) one message to ``gone@elsewhere.test`` and one to ``someone@nomail.test``,
whose only MX is the null MX of RFC 7505 (``MX 0 .``).  Over IMAP she then finds two RFC 3464
DSNs from MAILER-DAEMON in her INBOX: 5.1.1 with Postfix as Remote-MTA, and 5.1.10, the latter
within seconds (a null MX is never retried: the first retry would be ``outbound.retry_min``,
five minutes, away).  The DSNs go nowhere else: each is queued only for alice's own primary
(which is down here, so they stay queued) besides her shadow INBOX.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import imaplib
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.peers.dns import LoopbackDNS, Zone
from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port, wait_for_port
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.peers.strata import StrataProcess
from tests.peers.strata_imap import passwd_line, password_for, unverified_context

pytestmark = [pytest.mark.interop]

DOMAIN = "example.test"
ALICE = f"alice@{DOMAIN}"
GONE = "gone@elsewhere.test"  # Postfix, elsewhere.test's MX, refuses it at RCPT with 550 5.1.1
NOMAIL = "someone@nomail.test"  # nomail.test publishes a null MX (RFC 7505)

ZONE: Zone = {
    "elsewhere.test": [("MX", 10, "mx.elsewhere.test")],
    "mx.elsewhere.test": [("A", "127.0.0.1")],
    "nomail.test": [("MX", 0, ".")],  # tests/peers/dns.py serves "." as the root name
}
# Postfix 3.7 inline: table; the inner braces keep the reply's spaces in one value.
REJECT_GONE = f"check_recipient_access inline:{{ {{ {GONE} = 550 5.1.1 no such user }} }}"

NULL_MX_WITHIN = 5.0  # seconds from the 250 for the message to its DSN being seen over IMAP
BOTH_WITHIN = 20.0


def message_to(recipient: str, tag: str) -> bytes:
    return (
        f"From: Alice <{ALICE}>\r\nTo: <{recipient}>\r\nSubject: dsn test {tag}\r\n"
        f"Message-ID: <{tag}@example.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Hello {recipient}.\r\n"
    ).encode()


def parts(message: email.message.Message) -> list[email.message.Message]:
    payload = message.get_payload()
    assert isinstance(payload, list), message.get_content_type()
    return [part for part in payload if isinstance(part, email.message.Message)]


@dataclass
class Report:
    """One DSN as alice's INBOX shows it: the message, its per-recipient block, when seen."""

    uid: int
    message: email.message.Message
    recipient: email.message.Message  # the first (here: only) per-recipient block
    seen_at: float

    @property
    def final_recipient(self) -> str:
        return str(self.recipient["Final-Recipient"])


@dataclass
class Setup:
    strata: StrataProcess
    mx: PostfixInstance
    submission_port: int
    imap_port: int
    # Every `strata queue list --json` snapshot taken while waiting, for "never deferred".
    snapshots: list[list[dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def setup(strata_factory: Any, postfix_factory: PostfixFactory, tmp_path: Path) -> Iterator[Setup]:
    mx = postfix_factory.primary(
        ["elsewhere.test"], main_cf={"smtpd_recipient_restrictions": f"{REJECT_GONE}, permit"}
    )
    with LoopbackDNS(ZONE) as dns:
        submission_port, imap_port = free_port(), free_port()
        strata: StrataProcess = strata_factory(
            # StrataProcess ends its config inside [intake]: every key here is in a table of its
            # own.  No implicit-TLS listeners (their defaults are fixed ports).
            extra_config=f'[relay]\ninterval = 1\nresolver = "127.0.0.1:{dns.port}"\n'
            f"mx_port = {mx.smtpd_port}\n"
            f'[submission]\nlisten = ["127.0.0.1:{submission_port}"]\ntls_listen = []\n'
            f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\ntls_listen = []\n'
        )
        # alice's own primary is down (nothing listens on port 1): what is queued for it stays.
        strata.cli("domain", "add", DOMAIN, "--relay", "127.0.0.1:1", "--mode", "both",
                   "--no-monitor", "--portal", "always")  # fmt: skip
        passwd = tmp_path / "users.passwd"
        passwd.write_text(passwd_line(ALICE, password_for(ALICE)))
        strata.cli("user", "import", DOMAIN, str(passwd))
        strata.start()
        for port in (submission_port, imap_port):
            assert wait_for_port(port, 30), strata.log_text()[-3000:]
        try:
            yield Setup(strata, mx, submission_port, imap_port)
        finally:
            strata.stop()


def submit(setup: Setup, recipient: str, tag: str) -> float:
    """Send one message as alice over submission (STARTTLS, AUTH); when its 250 came."""
    with smtplib.SMTP("127.0.0.1", setup.submission_port, timeout=30) as client:
        client.ehlo("client.test")
        client.starttls(context=unverified_context())
        client.ehlo("client.test")
        client.login(ALICE, password_for(ALICE))
        refused = client.sendmail(ALICE, [recipient], message_to(recipient, tag))
        assert refused == {}, refused
        return time.monotonic()


def new_reports(client: imaplib.IMAP4, known: dict[int, Report]) -> None:
    """Add the INBOX messages not in ``known`` (by UID), parsed, stamped with the time now."""
    typ, data = client.noop()  # new mail reaches a session after its next command
    assert typ == "OK", data
    typ, data = client.uid("SEARCH", "ALL")
    assert typ == "OK", data
    uids = [int(u) for u in data[0].split()] if data and data[0] else []
    for uid in uids:
        if uid in known:
            continue
        typ, fetched = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
        assert typ == "OK", fetched
        raw = next(item[1] for item in fetched if isinstance(item, tuple))
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert message.get_content_type() == "multipart/report", raw[:2000]
        status = parts(message)[1]
        assert status.get_content_type() == "message/delivery-status", raw[:2000]
        blocks = parts(status)  # the per-message block, then one per recipient
        assert len(blocks) == 2, raw[:2000]
        known[uid] = Report(uid, message, blocks[1], time.monotonic())


def never_deferred(entry: dict[str, Any]) -> bool:
    """Queued with no attempt yet, or bounced on the first: never put off to a retry."""
    if entry["state"] == "queued":
        return bool(entry["attempts"] == 0 and entry["last_error"] is None)
    return bool(entry["state"] == "bounced" and entry["attempts"] == 1)


def test_a_5xx_and_a_null_mx_give_dsns_in_the_senders_inbox_over_imap(setup: Setup) -> None:
    strata = setup.strata
    imap = imaplib.IMAP4("127.0.0.1", setup.imap_port, timeout=30)
    try:
        typ, data = imap.login(ALICE, password_for(ALICE))  # plain LOGIN: loopback is trusted
        assert typ == "OK", data
        selected = imap.select("INBOX")
        assert selected == ("OK", [b"0"]), selected  # nothing there before she sends

        submit(setup, GONE, "gone")
        null_mx_sent = submit(setup, NOMAIL, "nomail")

        reports: dict[int, Report] = {}
        deadline = time.monotonic() + BOTH_WITHIN
        while len(reports) < 2 and time.monotonic() < deadline:
            new_reports(imap, reports)
            snapshot = strata.queue()
            setup.snapshots.append(snapshot)
            new_reports(imap, reports)
            time.sleep(0.2)
        log = strata.log_text()[-4000:]
        assert len(reports) == 2, (reports, setup.snapshots[-1:], log)

        # One more relay run or two: still exactly these two (no duplicate, no third report).
        time.sleep(2.5)
        new_reports(imap, reports)
        assert len(reports) == 2, reports
    finally:
        imap.logout()

    by_recipient = {report.final_recipient: report for report in reports.values()}
    assert set(by_recipient) == {f"rfc822; {GONE}", f"rfc822; {NOMAIL}"}, by_recipient
    gone, nomail = by_recipient[f"rfc822; {GONE}"], by_recipient[f"rfc822; {NOMAIL}"]

    for report, tag in ((gone, "gone"), (nomail, "nomail")):
        message = report.message
        assert message.get_param("report-type") == "delivery-status", message["Content-Type"]
        assert "MAILER-DAEMON@" in str(message["From"]), message["From"]
        assert str(message["To"]) == f"<{ALICE}>", message["To"]
        assert report.recipient["Action"] == "failed"
        # The third part gives the headers of the message it reports on.
        original = parts(message)[2]
        assert original.get_content_type() == "text/rfc822-headers"
        assert f"Subject: dsn test {tag}" in str(original.get_payload()), original

    # The 550 from the real Postfix, which answered as elsewhere.test's MX.
    assert gone.recipient["Status"] == "5.1.1", gone.recipient
    # RFC 3464 §2.3.5: the MTA that answered (Strata names the address it reached).
    remote_mta = str(gone.recipient["Remote-MTA"])
    assert remote_mta.startswith("dns; "), gone.recipient
    assert "127.0.0.1" in remote_mta or "mx.elsewhere.test" in remote_mta, remote_mta
    assert "550 5.1.1" in str(gone.recipient["Diagnostic-Code"]), gone.recipient
    assert "no such user" in str(gone.recipient["Diagnostic-Code"]), gone.recipient
    assert "reject: RCPT from" in setup.mx.maillog() and f"<{GONE}>" in setup.mx.maillog()

    # The null MX: RFC 7505 §4.2's status, at once; no MX host was asked, so none is named.
    assert nomail.recipient["Status"] == "5.1.10", nomail.recipient
    assert nomail.recipient["Remote-MTA"] is None, nomail.recipient
    assert "null MX" in str(nomail.recipient["Diagnostic-Code"]), nomail.recipient
    waited = nomail.seen_at - null_mx_sent
    assert waited < NULL_MX_WITHIN, f"the null-MX DSN took {waited:.1f} s"

    # No snapshot ever showed the null-MX entry put off to a retry.
    seen = [e for snap in setup.snapshots for e in snap if e["recipient"] == NOMAIL]
    assert seen, setup.snapshots
    assert all(never_deferred(e) for e in seen), [e for e in seen if not never_deferred(e)]

    # The queue at the end: both originals bounced, by their own MX route.
    entries = strata.queue()
    originals = {e["recipient"]: e for e in entries if e["sender"] == ALICE}
    assert set(originals) == {GONE, NOMAIL}, entries
    assert originals[GONE]["domain"] == "elsewhere.test" and originals[GONE]["outbound"]
    assert originals[GONE]["state"] == "bounced", originals[GONE]
    assert "550 5.1.1" in str(originals[GONE]["last_error"]), originals[GONE]
    assert originals[NOMAIL]["domain"] == "nomail.test" and originals[NOMAIL]["outbound"]
    assert never_deferred(originals[NOMAIL]) and originals[NOMAIL]["state"] == "bounced"

    # The DSNs (from <>) go to alice only: her shadow INBOX (above) and her own primary's queue
    # (down, so still queued); not to any MX, not outbound.
    dsns = [e for e in entries if e["sender"] == ""]
    assert len(dsns) == 2, entries
    assert {(e["domain"], e["recipient"], e["outbound"], e["state"]) for e in dsns} == {
        (DOMAIN, ALICE, False, "queued")
    }, dsns
    assert len(entries) == 4, entries
    # Nothing reached elsewhere.test's mailbox: the refused message, and no DSN either.
    assert setup.mx.maildir is not None
    assert maildir_messages(setup.mx.maildir) == []
