"""
The harness the core IMAP session tests share (issue 12): L{MailboxSession}s over a memory store
on a task.Clock, driven with plain calls; what a session writes lands in a L{Recorder}.

``Mail`` holds the store and the shared state; ``Mail.session()`` gives a logged-in user's session
and its recorder; ``run(coroutine)`` runs a session call to its end (the memory store answers at
once, so nothing waits on the clock).
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from strata_twisted.core.imap_session import Done, MailboxSession
from strata_twisted.core.imap_shared import SharedState
from strata_twisted.model import Delivery, MailboxStatus, MailMessage
from strata_twisted.proto.imap_parser import Command, IMAPCommandParser, ParserLimits
from strata_twisted.proto.imap_response import status_response
from strata_twisted.proto.mime import index_bytes
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message
from tests.imap_harness import ALICE, CountingExecutor

__all__ = [
    "ALICE",
    "Mail",
    "Recorder",
    "Woken",
    "body",
    "flags",
    "messages",
    "ok",
    "parse",
    "run",
    "settle",
    "status",
    "uids",
    "watching",
]

T = TypeVar("T")


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a session call to its end and return its result (or raise its exception)."""
    return result_of(Deferred.fromCoroutine(work))


def parse(line: str) -> object:
    """The command a client's line parses to (as the engine would hand it to the session)."""
    parser = IMAPCommandParser(ParserLimits())
    parser.receive_data(line.encode() + b"\r\n")
    event = parser.next_event()
    assert isinstance(event, Command), (line, event)
    return event


def body(n: int, *, subject: str | None = None, extra: str = "") -> bytes:
    return (
        f"From: sender{n}@origin.test\r\nTo: alice@example.test\r\n"
        f"Subject: {subject if subject is not None else f'message {n}'}\r\n"
        f"Message-ID: <m{n}@origin.test>\r\n{extra}\r\nbody of message {n}\r\n"
    ).encode()


class Recorder:
    """An L{Output} that keeps every line and byte a session writes, in order."""

    def __init__(self, *, condstore: bool = False) -> None:
        self.condstore = condstore
        self.gone = False
        self.lines: list[bytes] = []
        self.streams = 0

    def untagged(self, lines: Iterable[bytes]) -> None:
        self.lines.extend(lines)

    def write(self, data: bytes) -> None:
        self.lines.append(data)

    def begin_stream(self) -> None:
        self.streams += 1

    def ready(self) -> Deferred[None]:
        return succeed(None)

    def end_stream(self) -> None:
        pass

    def take(self) -> bytes:
        """Everything written since the last take, as one byte string."""
        out, self.lines = b"".join(self.lines), []
        return out


class Mail:
    """A memory store with ALICE's mailboxes, and the state the sessions of one server share."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = MemoryStore(self.clock, indexer=index_bytes)
        self.shared = SharedState(self.clock, self.store, self.store, CountingExecutor())
        result_of(self.store.ensure_user(ALICE))
        self._next = 0

    def deliver(self, data: bytes, mailbox: str = "INBOX", flags: Iterable[str] = ()) -> int:
        """Put a message into ALICE's ``mailbox`` as intake or APPEND would; its UID."""
        self._next += 1
        message_id = f"q{self._next:04d}"
        if mailbox == "INBOX" and not flags:
            delivery = Delivery(ALICE, "example.test", shadow=True)
            result_of(store_message(self.store, message_id, data, [delivery], received_at=1e9))
            return result_of(self.store.list_messages(ALICE, "INBOX"))[-1].uid
        result_of(store_message(self.store, message_id, data, []))
        message = result_of(self.store.add_message(ALICE, mailbox, message_id, 1e9, flags))
        return message.uid

    def session(self, *, condstore: bool = False) -> tuple[MailboxSession, Recorder]:
        return MailboxSession(ALICE, self.shared), Recorder(condstore=condstore)

    def selected(
        self, mailbox: str = "INBOX", *, read_only: bool = False, condstore: bool = False
    ) -> tuple[MailboxSession, Recorder]:
        session, out = self.session(condstore=condstore)
        run(session.select(mailbox, read_only=read_only))
        return session, out

    def command(self, session: MailboxSession, out: Recorder, line: str) -> Done:
        return run(session.command(parse(line), out))


# -- what the per-command modules share (tests/test_core_imap_cmd_*.py) ---------------------------


def ok(tag: str, done: Done) -> bytes:
    """The tagged line the adapter writes for a L{Done}: ``tag OK [code] text``."""
    return status_response(tag, "OK", done.text, done.code)


def settle(mail: Mail, mailbox: str = "INBOX") -> None:
    """
    As if the user's phone had selected ``mailbox`` already: what is in it now is \\Recent to no
    session of the test (RFC 3501 §2.3.2), so answers about other things stay short.
    """
    result_of(mail.store.claim_recent(ALICE, mailbox))


def messages(mail: Mail, mailbox: str = "INBOX") -> list[MailMessage]:
    """What the store holds in ALICE's ``mailbox``, in UID order."""
    return result_of(mail.store.list_messages(ALICE, mailbox))


def uids(mail: Mail, mailbox: str = "INBOX") -> list[int]:
    return [m.uid for m in messages(mail, mailbox)]


def flags(mail: Mail, mailbox: str = "INBOX") -> dict[int, set[str]]:
    return {m.uid: set(m.flags) for m in messages(mail, mailbox)}


def status(mail: Mail, mailbox: str = "INBOX") -> MailboxStatus:
    return result_of(mail.store.mailbox_status(ALICE, mailbox))


class Woken:
    """A session's ``on_change``: counts the times another session woke it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def watching(mail: Mail, mailbox: str = "INBOX") -> tuple[MailboxSession, Recorder, Woken]:
    """A session selected on ``mailbox`` that counts its wake-ups (the adapter's IDLE hook)."""
    woken = Woken()
    session = MailboxSession(ALICE, mail.shared, woken)
    run(session.select(mailbox, read_only=False))
    return session, Recorder(), woken


def filled(count: int) -> Mail:
    """A L{Mail} with ``count`` messages in INBOX (UIDs 1..count), none \\Recent to the tests."""
    mail = Mail()
    for n in range(1, count + 1):
        mail.deliver(body(n))
    settle(mail)
    return mail
