"""Intake policy pieces: queue ids, the Received header, Message-ID extraction."""

from __future__ import annotations

from twisted.internet.task import Clock

from strata_twisted.core.intake import header_message_id, new_queue_id, received_header


def test_queue_ids_are_unique_and_sort_by_time() -> None:
    clock = Clock()
    ids = []
    for i in range(50):
        clock.rightNow = 1_700_000_000 + i / 100
        ids.append(new_queue_id(clock))
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    assert all(len(i) == 16 and i.isalnum() for i in ids)
    same_ms = {new_queue_id(clock) for _ in range(1000)}
    assert len(same_ms) == 1000


def test_received_header_is_rfc5321_trace_with_rfc3848_keyword() -> None:
    header = received_header(
        hostname="mx.strata.test",
        queue_id="ABC",
        helo="mail.sender.test",
        client_address="2001:db8::1",
        recipients=("u@example.test",),
        tls=True,
        smtputf8=False,
        esmtp=True,
        when=0,
    )
    assert header == (
        b"Received: from mail.sender.test ([IPv6:2001:db8::1])\r\n"
        b"\tby mx.strata.test (Strata) with ESMTPS id ABC\r\n"
        b"\tfor <u@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )


def test_received_header_hides_the_recipient_list_and_cleans_client_text() -> None:
    header = received_header(
        hostname="mx",
        queue_id="Q",
        helo="evil\r\nX-Injected: 1",
        client_address="192.0.2.1",
        recipients=("a@x.test", "b@x.test"),
        tls=False,
        smtputf8=True,
        esmtp=True,
        when=0,
    )
    assert b"X-Injected: 1\r\n" not in header
    assert b"a@x.test" not in header
    assert b"with UTF8SMTP id Q;\r\n" in header
    assert header.count(b"\r\n") == 3


def test_message_id_is_read_from_the_header_section() -> None:
    assert header_message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b.test>\r\n\r\n") == "<a@b.test>"
    assert header_message_id(b"Subject: no id\r\n\r\n") is None
    assert header_message_id(b"\xff\xfe garbage\r\n\r\n") is None
