"""
Long lines are mail, not errors (issue 11, point 3), against real peers: a real Postfix sending
MTA (the customer's spam filter, configured not to fold long lines) relays to a real ``twistd``
Strata while the primary, a real Postfix, is down.  Strata accepts a message with a 100 KiB line
and DKIM-signed messages with 16 KiB lines; when the primary comes back, each reaches its Maildir
byte-identical to what Strata stored, and every signature still verifies there.

The flow and its helpers are those of ``test_relay_postfix.py``.
"""

from __future__ import annotations

import re
import smtplib
import time
from typing import Any

import dkim
import pytest

from tests.interop.test_durability import stored_bodies
from tests.interop.test_relay_postfix import outages, strata_with_a_down_primary
from tests.peers.fixtures import PostfixFactory
from tests.peers.postfix import maildir_messages
from tests.test_dkim_intake import PRIVATE_PEM, dns

pytestmark = [pytest.mark.interop, pytest.mark.slow]

KIB = 1024


def long_line_message(name: str, line_length: int, canon: bytes | None = None) -> bytes:
    """A message whose body has lines of ``line_length`` octets and more (dots at their ends
    and starts, blank runs), DKIM-signed with ``canon`` (simple or relaxed) when given."""
    words = ("Grüße, long line  " * (line_length // 10))[:line_length].encode()
    header = (
        f"From: Ana <ana@sender.test>\r\nTo: u@example.test\r\nSubject: long lines {name}\r\n"
        f"Message-ID: <long-{name}@sender.test>\r\nDate: Sun, 22 Nov 2026 20:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    ).encode()
    if canon is None:  # and a header field of 10 KiB, well under Postfix's header_size_limit
        header += b"X-Long: " + b"h" * (10 * KIB) + b"\r\n"
    body = (
        b"short line\r\n" + words + b"\r\n" + b"." + words + b".\r\n" + b"." + b"\r\n"
        + words + b"  \t  \r\n" + b"x" * (3 * line_length) + b"\r\nend\r\n"
    )  # fmt: skip
    raw = header + b"\r\n" + body
    if canon is None:
        return raw
    signature = dkim.sign(raw, b"sel", b"sender.test", PRIVATE_PEM, canonicalize=(canon, canon),
                          include_headers=[b"from", b"to", b"subject", b"message-id"])  # fmt: skip
    return bytes(signature) + raw


def test_long_lines_through_a_real_sending_postfix_reach_the_recovered_primary_unchanged(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    strata, primary = strata_with_a_down_primary(strata_factory, postfix_factory)
    # Postfix's SMTP client folds lines longer than smtp_line_length_limit (998 by default),
    # which changes the bytes and breaks DKIM; a filter that keeps mail intact sets it to 0.
    sender = postfix_factory.relay_to(["example.test"], nexthop=f"[127.0.0.1]:{strata.port}",
                                      main_cf={"smtp_line_length_limit": "0"})  # fmt: skip
    assert sender.postconf("smtp_line_length_limit") == "0"
    sent = {
        "<long-100k@sender.test>": long_line_message("100k", 100 * KIB),
        "<long-simple@sender.test>": long_line_message("simple", 16 * KIB, b"simple"),
        "<long-relaxed@sender.test>": long_line_message("relaxed", 16 * KIB, b"relaxed"),
    }
    assert max(len(line) for line in sent["<long-100k@sender.test>"].split(b"\r\n")) > 100 * KIB
    with smtplib.SMTP("127.0.0.1", sender.smtpd_port, timeout=30) as client:
        for body in sent.values():
            client.sendmail("ana@sender.test", ["u@example.test"], body,
                            mail_options=["BODY=8BITMIME"])  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(strata.queue()) < len(sent):
        time.sleep(0.25)
    entries = strata.queue()
    assert sorted(e["message_id"] for e in entries) == sorted(sent), sender.maillog_tail()
    assert sender.queue_is_empty()  # accepted by Strata, nothing bounced or deferred
    assert "status=bounced" not in sender.maillog()
    # What Strata stored: its Received: field, the sending Postfix's, then the bytes sent.
    _, bodies = stored_bodies(strata.data_dir)
    stored = {e["message_id"]: bodies[e["queue_id"]] for e in entries}
    for message_id, body in sent.items():
        assert stored[message_id].endswith(b"\r\n" + body)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not outages(strata):
        time.sleep(0.25)
    assert outages(strata), "the monitor never saw the primary down"

    primary.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and {e["state"] for e in strata.queue()} != {"delivered"}:
        time.sleep(0.25)
    assert {e["state"] for e in strata.queue()} == {"delivered"}, strata.queue()
    files = maildir_messages(primary.maildir)  # type: ignore[arg-type]
    assert len(files) == len(sent)
    for path in files:
        delivered = path.read_bytes().replace(b"\n", b"\r\n")  # Maildir keeps LF line ends
        found = re.search(rb"^Message-ID: (<long-\w+@sender\.test>)", delivered, re.M)
        assert found is not None
        message_id = found.group(1).decode()
        # The primary's own Received: field on top; below it, exactly what Strata stored.
        assert delivered.endswith(stored[message_id]), message_id
        if message_id != "<long-100k@sender.test>":
            assert dkim.verify(delivered, dnsfunc=dns), message_id
