"""
Fakes and helpers that Strata's own tests use, shipped so that integrations can use them too
(treq's ``testing`` module is the model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from strata_twisted.core.relay import RecipientReply
from strata_twisted.core.routes import NoRoute, address_literal
from strata_twisted.fired import result_of as result_of  # re-exported for tests
from strata_twisted.interfaces import IMessageStore
from strata_twisted.model import Delivery, Envelope, IncomingMessage, StoredMessage

T = TypeVar("T")


def failure_of(d: Deferred[Any]) -> Failure:
    """The failure of a Deferred that has already failed; AssertionError otherwise."""
    results: list[object] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    assert failures, f"{d!r} did not fail (result: {results!r})"
    return failures[0]


# -- Storage helpers -------------------------------------------------------------------------


class ManualExecutor:
    """
    An L{strata_twisted.executor.Executor} that runs nothing until the test says so.

    Calls wait in submission order; L{run_next} and L{run_all} run them in the caller's thread and
    fire their Deferreds.  For testing what a store does while its thread is busy: back-pressure,
    group commit, requests that pile up.  ``submitted`` counts every call ever submitted.
    """

    def __init__(self) -> None:
        self.submitted = 0
        self._queue: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    @property
    def pending(self) -> int:
        """How many calls are waiting to run."""
        return len(self._queue)

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._queue.append((f, d))
        self.submitted += 1
        return d

    def run_next(self) -> None:
        """Run the oldest waiting call; AssertionError when none is waiting."""
        assert self._queue, "no executor call is waiting"
        f, d = self._queue.pop(0)
        try:
            result = f()
        except BaseException:
            d.errback()
        else:
            d.callback(result)

    def run_all(self) -> int:
        """Run waiting calls, including any they submit, until none is left; return how many."""
        count = 0
        while self._queue:
            self.run_next()
            count += 1
        return count

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def store_message(
    store: IMessageStore,
    message_id: str,
    body: bytes,
    deliveries: Sequence[Delivery],
    *,
    sender: str = "sender@example.org",
    received_at: float = 0.0,
    header_message_id: str | None = None,
    envelope: Envelope | None = None,
    chunk_size: int = 64 * 1024,
) -> Deferred[StoredMessage]:
    """
    Store a message the way intake does: ``begin``, ``write`` chunk by chunk (waiting on each
    write, i.e. honouring back-pressure), then ``commit``; ``abort`` when anything fails.  The
    envelope's recipients default to the deliveries' recipients.
    """
    if envelope is None:
        envelope = Envelope(sender, tuple(delivery.recipient for delivery in deliveries))
    incoming = IncomingMessage(envelope, received_at, tuple(deliveries), header_message_id)

    async def deliver() -> StoredMessage:
        writer = store.begin(message_id)
        try:
            for start in range(0, len(body), chunk_size):
                await writer.write(body[start : start + chunk_size])
            return await writer.commit(incoming)
        except BaseException:
            await writer.abort()
            raise

    return Deferred.fromCoroutine(deliver())


class ScriptedPrimary:
    """
    A fake primary mail server for the relay loop (a L{strata_twisted.core.relay.RelayConnector}).

    ``reply_for(recipient)`` decides each recipient's reply (250 by default); ``up = False``
    refuses connections; ``die_after = n`` ends every session after n messages (the rest get
    421, as when a connection is lost).  ``received`` lists (queue id, recipients) in delivery
    order; ``started`` lists the queue ids whose transaction began (its completion may wait for the
    previous message's results); ``sessions`` counts connections.
    """

    def __init__(self) -> None:
        self.up = True
        self.die_after: int | None = None
        self.received: list[tuple[str, tuple[str, ...]]] = []
        self.started: list[str] = []
        self.sessions = 0
        self.replies: dict[str, list[tuple[int, str]]] = {}

    def script(self, recipient: str, *replies: tuple[int, str]) -> None:
        """The replies ``recipient`` gets on its next attempts, in order (then 250)."""
        self.replies.setdefault(recipient, []).extend(replies)

    def reply_for(self, recipient: str) -> tuple[int, str]:
        queued = self.replies.get(recipient)
        if queued:
            return queued.pop(0)
        return 250, "250 2.0.0 Ok: queued"

    def connect(self, domain: Any) -> Deferred[Any]:
        if not self.up:
            return fail(ConnectionRefusedError(f"connection to {domain.relay} refused"))
        self.sessions += 1
        return succeed(_ScriptedConnection(self, str(domain.relay)))


class _ScriptedConnection:
    def __init__(self, primary: ScriptedPrimary, remote: str) -> None:
        self._primary = primary
        self.remote = remote
        self.alive = True
        self._sent = 0

    def send(self, message: Any, after: Deferred[bool] | None = None) -> Deferred[list[Any]]:
        self._primary.started.append(message.message.id)
        if after is None:
            return succeed(self._deliver(message))
        # The message is complete (delivered) once the previous results are recorded; if they
        # cannot be, the session ends as a real connection's would.
        return after.addCallback(
            lambda recorded: self._deliver(message) if recorded else self._end(message)
        )

    def _end(self, message: Any) -> list[Any]:
        self.alive = False
        return [
            RecipientReply(e.recipient, 451, "451 4.4.2 session ended") for e in message.entries
        ]

    def _deliver(self, message: Any) -> list[Any]:
        primary = self._primary
        if primary.die_after is not None and self._sent >= primary.die_after:
            self.alive = False
        if not self.alive or not primary.up:
            self.alive = False
            return [
                RecipientReply(e.recipient, 421, "421 4.4.2 connection lost")
                for e in message.entries
            ]
        self._sent += 1
        replies = []
        accepted = []
        for entry in message.entries:
            code, text = primary.reply_for(entry.recipient)
            replies.append(RecipientReply(entry.recipient, code, text))
            if 200 <= code < 300:
                accepted.append(entry.recipient)
        if accepted:
            primary.received.append((message.message.id, tuple(accepted)))
        return replies

    def close(self) -> Deferred[None]:
        self.alive = False
        return succeed(None)


class FakeMXResolver:
    """
    A fake L{strata_twisted.core.routes.MXResolver}: ``routes[domain]`` is the host list a lookup
    gives, or an exception it fails with (``NullMX("x.test")``, ``NoRoute("...")``); a domain
    not in ``routes`` fails with ``NoRoute``.  ``lookups`` lists the domains asked, in order.
    """

    def __init__(self, routes: dict[str, list[tuple[str, int]] | Exception] | None = None) -> None:
        self.routes: dict[str, list[tuple[str, int]] | Exception] = dict(routes or {})
        self.lookups: list[str] = []

    def lookup(self, domain: str) -> Deferred[list[tuple[str, int]]]:
        self.lookups.append(domain)
        literal = address_literal(domain)
        if literal is not None:  # as the real resolver: an address literal is its own route
            return succeed([(literal, 25)])
        route = self.routes.get(domain, NoRoute(f"{domain}: domain does not exist"))
        if isinstance(route, Exception):
            return fail(route)
        return succeed(list(route))
