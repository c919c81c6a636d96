"""
The harness the IMAP adapter's server tests share: an L{IMAPFactory} over the memory store, on a
task.Clock, with password checks run synchronously by a counting executor, and sessions driven
over StringTransport (no sockets, no reactor).

``send(proto, transport, line)`` feeds one chunk and returns exactly what the server wrote in
answer; ``Harness.login()`` and ``Harness.select()`` give a session ready for mailbox commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from strata_twisted.core.credentials import VerificationCache, hash_password
from strata_twisted.model import Delivery
from strata_twisted.proto.mime import index_bytes
from strata_twisted.server.imap import IMAPFactory, IMAPProtocol
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

__all__ = [
    "ALICE",
    "BOB",
    "BODY1",
    "BODY2",
    "CLOSED",
    "PASSWORD",
    "CountingExecutor",
    "Harness",
    "Spy",
    "send",
]

T = TypeVar("T")

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse"  # noqa: S105 (a test user's)
CLOSED = "Your primary mail server is working; please use your usual mail app."

BODY1 = (
    b"From: Sender <sender@origin.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@origin.test>\r\n"
    b"\r\n"
    b"first body\r\n"
)
BODY2 = (
    b"From: other@origin.test\r\nTo: alice@example.test\r\nSubject: second\r\n\r\nsecond body\r\n"
)


class CountingExecutor:
    """Runs calls at once in the caller's thread and counts them (password checks)."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        self.calls += 1
        try:
            return succeed(f())
        except BaseException:
            return fail()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Spy:
    """
    Wraps one method of an object and records the arguments of every call, then calls through:
    ``Spy(h.store, "read_body").calls``.  ``restore()`` puts the real method back.
    """

    def __init__(self, target: object, name: str) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._target = target
        self._name = name
        self._real = getattr(target, name)

        def spy(*args: Any) -> Any:
            self.calls.append(args)
            return self._real(*args)

        setattr(target, name, spy)

    def restore(self) -> None:
        setattr(self._target, self._name, self._real)


class Harness:
    """
    One IMAP factory over a memory store holding ALICE and BOB (both with PASSWORD), on a
    task.Clock set to a realistic time.  ``closed``: the domains whose portal is closed.
    ``factory_options``: passed to L{IMAPFactory} (``throttle``, ``connections``, ``limits``…).
    """

    def __init__(self, closed: set[str] | None = None, **factory_options: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = MemoryStore(self.clock, indexer=index_bytes)
        self.closed = closed if closed is not None else set()
        self.executor = CountingExecutor()
        for user in (ALICE, BOB):
            stored = hash_password(PASSWORD, "SSHA512")
            result_of(self.store.set_user(user, stored.text))
        options: dict[str, Any] = {
            "trusted_networks": ["10.1.0.0/16"],
            "portal": lambda domain: CLOSED if domain in self.closed else None,
            "executor": self.executor,
            "cache": VerificationCache(ttl=60),
        }
        options.update(factory_options)
        self.factory = IMAPFactory(self.clock, self.store, self.store, self.store, None, **options)
        self.factory.start()

    def deliver(
        self, message_id: str, body: bytes, recipient: str = ALICE, *, recent: bool = False
    ) -> None:
        """
        Store a message the way intake does in mode ``both`` (into the recipient's INBOX).  As if
        another session (the user's phone) had seen it already, it is not \\Recent to the
        sessions of the test, unless ``recent`` (RFC 3501 §2.3.2).
        """
        delivery = Delivery(recipient, "example.test", shadow=True)
        result_of(store_message(self.store, message_id, body, [delivery], received_at=1e9))
        if not recent:
            result_of(self.store.claim_recent(recipient, "INBOX"))

    def connect(
        self, host: str = "127.0.0.1", port: int = 40000
    ) -> tuple[IMAPProtocol, StringTransport]:
        """A new session from ``host``, its greeting already read."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, port))
        assert isinstance(proto, IMAPProtocol)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        transport.clear()  # the greeting
        return proto, transport

    def login(
        self, user: str = ALICE, host: str = "127.0.0.1"
    ) -> tuple[IMAPProtocol, StringTransport]:
        proto, transport = self.connect(host)
        assert send(proto, transport, f'a LOGIN {user} "{PASSWORD}"\r\n').startswith(b"a OK ")
        return proto, transport

    def select(
        self, user: str = ALICE, mailbox: str = "INBOX", *, command: str = "SELECT"
    ) -> tuple[IMAPProtocol, StringTransport]:
        """A session of ``user`` with ``mailbox`` selected (or examined)."""
        proto, transport = self.login(user)
        reply = send(proto, transport, f"s {command} {mailbox}\r\n")
        assert reply.splitlines()[-1].startswith(b"s OK "), reply
        transport.clear()
        return proto, transport


def send(proto: IMAPProtocol, transport: StringTransport, line: str | bytes) -> bytes:
    """Feed ``line`` to the session; return exactly what it wrote in answer."""
    transport.clear()
    proto.dataReceived(line.encode() if isinstance(line, str) else line)
    return bytes(transport.value())
