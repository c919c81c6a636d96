"""
A real sending MTA: a private Postfix relays a protected domain to Strata's intake.  Every message
submitted to Postfix ends up in Strata's queue exactly once, and the stored bytes are exactly what
Postfix sent: Strata's one Received header, then Postfix's, then the submitted message unchanged
(dot lines, 8-bit text, long lines and a binary attachment included).
"""

from __future__ import annotations

import base64
import os
import smtplib
import time
import uuid
from typing import Any

import pytest

from tests.interop.test_durability import stored_bodies
from tests.peers.fixtures import PostfixFactory

pytestmark = pytest.mark.interop


def messages(count: int) -> dict[str, bytes]:
    out = {}
    for n in range(count):
        message_id = f"<pf-{n}-{uuid.uuid4().hex[:8]}@origin.test>"
        body = [
            "From: Sender <sender@origin.test>",
            "To: user@example.test",
            f"Subject: postfix to strata {n}",
            f"Message-ID: {message_id}",
            # With Date and Message-ID present, Postfix adds no header of its own (it would for
            # loopback clients: local_header_rewrite_clients), so what it sends is comparable.
            "Date: Sun, 22 Nov 2026 21:00:00 +0000",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="b1"',
            "",
            "--b1",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            "",
            "Grüße aus Köln — 8-bit text, naïve café",
            ".a line starting with a dot",
            ".",
            "..two dots",
            "x" * 990,
            "--b1",
            "Content-Type: application/octet-stream",
            "Content-Transfer-Encoding: base64",
            "",
            *[line for line in base64.encodebytes(os.urandom(3000 + n)).decode().splitlines()],
            "--b1--",
            "",
        ]
        out[message_id] = "\r\n".join(body).encode("utf-8")
    return out


def test_postfix_relays_to_strata_byte_for_byte(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    strata = strata_factory()
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    strata.start()
    relay = postfix_factory.relay_to(["example.test"], nexthop=f"[127.0.0.1]:{strata.port}")
    sent = messages(25)
    with smtplib.SMTP("127.0.0.1", relay.smtpd_port, timeout=30) as client:
        for body in sent.values():
            assert (
                client.sendmail(
                    "sender@origin.test",
                    ["user@example.test"],
                    body,
                    mail_options=["BODY=8BITMIME"],
                )
                == {}
            )
    deadline = time.monotonic() + 60
    while not relay.queue_is_empty() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert relay.queue_is_empty(), relay.maillog_tail()
    assert relay.maillog().count("status=sent") == len(sent)
    strata.stop()

    entries, bodies = stored_bodies(strata.data_dir)
    assert sorted(e["message_id"] for e in entries) == sorted(sent)
    for entry in entries:
        stored = bodies[entry["queue_id"]]
        ours, _, rest = stored.partition(b"\r\nReceived: ")
        assert ours.startswith(b"Received: from ") and b"(Strata)" in ours
        assert b"\r\n\tby postfix" in rest.split(b"\r\n\r\n")[0] or b"(Postfix)" in rest
        # Postfix's own Received header (folded lines start with a tab), then the message as
        # submitted, byte for byte.
        lines = rest.split(b"\r\n")
        k = 1
        while lines[k].startswith((b"\t", b" ")):
            k += 1
        assert b"\r\n".join(lines[k:]) == sent[entry["message_id"]]
        assert entry["sender"] == "sender@origin.test"
        assert entry["recipient"] == "user@example.test"
