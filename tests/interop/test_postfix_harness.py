"""The private Postfix harness works end to end: each preset relays, delivers or holds mail.

These tests check the harness itself, so that later interop tests can trust it: a message
submitted with smtplib reaches smtp-sink through `relay_to`, a Maildir through `primary`, and
stays deferred in the queue of `backup_mx`.
"""

from __future__ import annotations

import smtplib
import uuid
from typing import TypeVar

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port, wait_for_port
from tests.peers.postfix import maildir_messages
from tests.peers.wait import eventually

pytest_plugins = ["tests.peers.fixtures"]  # the postfix_factory fixture
pytestmark = pytest.mark.interop

T = TypeVar("T")


def _message(marker: str) -> bytes:
    return (
        b"From: sender@origin.test\r\n"
        b"To: user@example.test\r\n"
        b"Subject: harness " + marker.encode() + b"\r\n"
        b"Message-ID: <" + marker.encode() + b"@origin.test>\r\n"
        b"\r\n"
        b"marker " + marker.encode() + b"\r\n"
    )


def _submit(port: int, rcpt: str, marker: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        refused = client.sendmail("sender@origin.test", [rcpt], _message(marker))
    assert refused == {}


def test_relay_to_delivers_to_smtp_sink(postfix_factory: PostfixFactory) -> None:
    sink = postfix_factory.smtp_sink()
    relay = postfix_factory.relay_to(["example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
    marker = uuid.uuid4().hex

    _submit(relay.smtpd_port, "user@example.test", marker)

    # smtp-sink creates its dump file at MAIL FROM and fills it as DATA arrives: wait for it all.
    [dump] = eventually(lambda: [m for m in sink.messages() if marker.encode() in m])
    assert f"marker {marker}".encode() in dump
    assert b"user@example.test" in dump  # smtp-sink records the RCPT TO arguments
    eventually(relay.queue_is_empty)
    assert "status=sent" in relay.maillog()


def test_relay_to_retries_when_the_next_hop_comes_up(postfix_factory: PostfixFactory) -> None:
    sink_port = free_port()
    relay = postfix_factory.relay_to(["example.test"], nexthop=f"[127.0.0.1]:{sink_port}")
    marker = uuid.uuid4().hex

    _submit(relay.smtpd_port, "user@example.test", marker)
    eventually(lambda: "status=deferred" in relay.maillog())
    assert not relay.queue_is_empty()

    sink = postfix_factory.smtp_sink(port=sink_port)
    relay.flush()
    [dump] = eventually(lambda: [m for m in sink.messages() if marker.encode() in m])
    assert f"marker {marker}".encode() in dump


def test_primary_delivers_into_the_maildir(postfix_factory: PostfixFactory) -> None:
    primary = postfix_factory.primary(["example.test"])
    maildir = primary.maildir
    assert maildir is not None
    marker = uuid.uuid4().hex

    _submit(primary.smtpd_port, "user@example.test", marker)

    [path] = eventually(lambda: maildir_messages(maildir))
    delivered = path.read_bytes()
    assert f"marker {marker}".encode() in delivered
    assert b"Delivered-To: user@example.test" in delivered
    eventually(primary.queue_is_empty)


def test_backup_mx_keeps_mail_deferred(postfix_factory: PostfixFactory) -> None:
    backup = postfix_factory.backup_mx(["example.test"])
    marker = uuid.uuid4().hex

    _submit(backup.smtpd_port, "user@example.test", marker)

    def deferred() -> list[dict[str, object]]:
        return [m for m in backup.queue() if m["queue_name"] == "deferred"]

    [entry] = eventually(deferred)
    assert entry["sender"] == "sender@origin.test"
    assert backup.queue_count() == 1
    assert "Connection refused" in str(entry["recipients"])


def test_backup_mx_is_no_open_relay(postfix_factory: PostfixFactory) -> None:
    backup = postfix_factory.backup_mx(["example.test"])
    with smtplib.SMTP("127.0.0.1", backup.smtpd_port, timeout=30) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("sender@origin.test", ["user@elsewhere.test"], _message("x"))
    [(code, _text)] = refused.value.recipients.values()
    assert code == 554


def test_stop_ends_master_and_frees_the_port(postfix_factory: PostfixFactory) -> None:
    backup = postfix_factory.backup_mx(["example.test"])
    assert backup.is_running()

    backup.stop()

    assert not backup.is_running()
    assert not wait_for_port(backup.smtpd_port, timeout=0.5)
    backup.stop()  # idempotent
