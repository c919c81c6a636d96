"""
The relay's Twisted adapter over StringTransport with a task.Clock: a scripted primary refuses
every recipient of the first message (the engine must RSET), and the second message waits for the
engine to be ready instead of failing; a message's final "." waits for the previous results.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from strata_twisted.core.relay import PREFETCH, RelayedMessage
from strata_twisted.model import Delivery, Domain, RelayTarget
from strata_twisted.server.relay import _RelayClient
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message


class Session:
    """A relay client connected to a scripted primary (PIPELINING) over a StringTransport, with
    ``count`` stored messages of ``body``; ``message(n)`` is the n-th as the relay sends it."""

    def __init__(self, body: bytes, count: int) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.body = body
        self.stored = [
            result_of(store_message(self.store, f"Q{n}", body,
                                    [Delivery(f"u{n}@example.test", "example.test")]))
            for n in range(count)
        ]  # fmt: skip
        self.entries = {e.message_id: e for e in result_of(self.store.list_entries())}
        domain = Domain("example.test", RelayTarget("127.0.0.1", 2525), tls_policy="none")
        self.client = _RelayClient(self.clock, self.store, domain, "strata.test")
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.client.dataReceived(b"220 primary ESMTP\r\n")
        self.client.dataReceived(b"250-primary\r\n250 PIPELINING\r\n")
        assert self.client.ready.called

    def message(self, n: int) -> RelayedMessage:
        return RelayedMessage(self.stored[n], (self.entries[f"Q{n}"],), self.body[:PREFETCH])


def test_a_send_during_rset_waits_for_the_engine_to_be_ready() -> None:
    session = Session(b"Subject: x\r\n\r\nhello\r\n", 2)
    client, transport = session.client, session.transport

    first = client.send(session.message(0))
    assert b"MAIL FROM:<sender@example.org>" in transport.value()
    transport.clear()
    # Pipelined MAIL/RCPT/DATA: the only recipient is refused, so DATA fails and the engine
    # has to RSET before the next transaction.
    client.dataReceived(b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no recipients\r\n")
    replies = result_of(first)
    assert [(r.code, r.text) for r in replies] == [(550, "550 5.1.1 no such user")]
    assert transport.value() == b"RSET\r\n"
    transport.clear()

    second = client.send(session.message(1))
    assert transport.value() == b""  # nothing until RSET is answered
    client.dataReceived(b"250 2.0.0 reset\r\n")
    assert b"MAIL FROM:<sender@example.org>" in transport.value()
    client.dataReceived(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
    assert transport.value().endswith(b"hello\r\n.\r\n")
    client.dataReceived(b"250 2.0.0 Ok: queued as P1\r\n")
    assert [(r.code, r.text) for r in result_of(second)] == [(250, "250 2.0.0 Ok: queued as P1")]
    client.close()
    client.dataReceived(b"221 bye\r\n")
    client.connectionLost(None)


def test_the_final_dot_waits_for_the_previous_results_then_a_failed_record_ends_it() -> None:
    session = Session(b"Subject: x\r\n\r\nhello\r\n", 2)
    client, transport, clock = session.client, session.transport, session.clock

    recorded: Deferred[bool] = Deferred()
    first = client.send(session.message(0), recorded)
    assert transport.value().endswith(b"DATA\r\n")  # the envelope goes at once
    transport.clear()
    client.dataReceived(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
    # The content goes, but not the "." that completes the message: that waits for the
    # previous message's results.
    assert transport.value() == b"Subject: x\r\n\r\nhello\r\n"
    clock.advance(60)
    assert transport.value() == b"Subject: x\r\n\r\nhello\r\n"
    recorded.callback(True)
    assert transport.value() == b"Subject: x\r\n\r\nhello\r\n.\r\n"
    client.dataReceived(b"250 2.0.0 Ok: queued as P1\r\n")
    assert [r.code for r in result_of(first)] == [250]
    transport.clear()

    failed: Deferred[bool] = Deferred()
    second = client.send(session.message(1), failed)
    client.dataReceived(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
    transport.clear()
    failed.callback(False)  # the first message's results could not be recorded
    replies = result_of(second)
    assert [r.code for r in replies] == [451]
    assert "could not be recorded" in replies[0].text
    assert b"\r\n.\r\n" not in transport.value()  # never completed: the primary discards it
    assert transport.disconnecting
    assert not client.alive
    client.connectionLost(None)


def test_a_large_body_waits_while_the_transport_is_full() -> None:
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1000  # ~1 MB: several reads
    session = Session(body, 1)
    client, transport, clock = session.client, session.transport, session.clock
    assert transport.producer is client and transport.streaming
    sent = client.send(session.message(0))
    transport.clear()
    client.pauseProducing()  # the transport's buffer is full
    client.dataReceived(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
    # Only what was already read went out; the rest waits in the store.
    assert transport.value() == body[:PREFETCH]
    clock.advance(60)
    assert transport.value() == body[:PREFETCH]
    client.resumeProducing()  # drained: the rest goes
    assert transport.value() == body + b".\r\n"
    client.dataReceived(b"250 2.0.0 Ok: queued as P1\r\n")
    assert [r.code for r in result_of(sent)] == [250]
