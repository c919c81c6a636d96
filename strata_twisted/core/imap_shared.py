"""
What every IMAP session of one server shares (issue 12): bounded caches keyed by a mailbox's
identity, the bodies sessions are still reading, and who to wake when a mailbox changes.

Everything cached about a mailbox is keyed by (user, name, UIDVALIDITY): UIDVALIDITY is unique
across every mailbox the store ever made (the IMailboxStore contract), so a mailbox deleted and
created again under the same name never inherits what was cached about the old one.  Every
cache has a bound (issue 12, "bounded memory"): listings by the number of messages they hold,
parsed MIME indexes by count, header blocks by size.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Generic, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from strata_twisted.core.imap_search import Content
from strata_twisted.executor import Executor
from strata_twisted.interfaces import IMailboxStore, IMessageStore
from strata_twisted.model import MailboxListing, MailMessage, NoSuchMailbox
from strata_twisted.proto.mime import MessageIndex, index_message

__all__ = ["LRU", "BodyPins", "Listings", "MailboxKey", "SharedState", "Watcher"]

K = TypeVar("K")
V = TypeVar("V")

MailboxKey = tuple[str, str, int]
"""A mailbox's identity: (user, name, UIDVALIDITY)."""

STREAM_CHUNK: Final = 256 * 1024
"""A stored body is read in pieces of at most this size (indexing, streaming to a client)."""


class LRU(Generic[K, V]):
    """
    The most recently used values, bounded by a total weight (``weigh``: 1 per value by
    default; a value heavier than a sixteenth of the budget is not kept).  For what never
    changes once stored: parsed MIME indexes and header blocks, by message id.
    """

    def __init__(self, budget: int, weigh: Callable[[V], int] = lambda value: 1) -> None:
        self._budget = budget
        self._weigh = weigh
        self._weight = 0
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def pop(self, key: K) -> None:
        value = self._entries.pop(key, None)
        if value is not None:
            self._weight -= self._weigh(value)

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        if key in self._entries or weight > max(1, self._budget // 16):
            return
        self._entries[key] = value
        self._weight += weight
        while self._weight > self._budget:
            _, dropped = self._entries.popitem(last=False)
            self._weight -= self._weigh(dropped)


@dataclass(frozen=True)
class _Listing:
    modseq: int
    messages: list[MailMessage]


class Listings:
    """
    The last listing of each mailbox, as of its HIGHESTMODSEQ.  Every change to a mailbox's
    messages gives it a new modseq (the IMailboxStore contract), so a listing read at the modseq
    the mailbox shows is exact: a user's other sessions (Roundcube opens one per page, a client
    several) reuse it instead of each reading the whole mailbox again.  When the modseq moved, only
    what changed since is read and merged, from a listing the store reads in one step with the
    mailbox's modseq and message count (L{IMailboxStore.mailbox_listing}): a merge keeps a
    message expunged since, which the count shows, and then the mailbox is read whole.

    Bounded by the number of messages held (``budget``) and of mailboxes (``size``).
    """

    def __init__(self, mailboxes: IMailboxStore, *, size: int = 256, budget: int = 200_000) -> None:
        self._mailboxes = mailboxes
        self._size = size
        self._budget = budget
        self._weight = 0
        self._entries: OrderedDict[MailboxKey, _Listing] = OrderedDict()
        # Listings being read, by mailbox: the modseq each started from, and who waits.
        self._reading: dict[MailboxKey, tuple[int, list[Deferred[MailboxListing]]]] = {}

    def _get(self, key: MailboxKey, modseq: int) -> list[MailMessage] | None:
        entry = self._entries.get(key)
        if entry is None or entry.modseq != modseq:
            return None
        self._entries.move_to_end(key)
        return entry.messages

    def _put(self, key: MailboxKey, modseq: int, messages: list[MailMessage]) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            if entry.modseq > modseq:
                return  # a newer listing came back first: keep it
            self._weight -= len(entry.messages) + 1
            del self._entries[key]
        if len(messages) + 1 > self._budget // 4:
            return  # one huge mailbox must not push every other one out
        self._entries[key] = _Listing(modseq, messages)
        self._weight += len(messages) + 1
        while len(self._entries) > self._size or self._weight > self._budget:
            _, dropped = self._entries.popitem(last=False)
            self._weight -= len(dropped.messages) + 1

    async def listing(self, user: str, name: str) -> MailboxListing:
        """
        The mailbox (its UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, first recent UID) and all its
        messages, as of one moment.  Listed afresh only when its HIGHESTMODSEQ moved.
        """
        info = await self._mailboxes.get_mailbox(user, name)
        if info is None:
            raise NoSuchMailbox(name)
        key = (user, info.name, info.uidvalidity)
        messages = self._get(key, info.highest_modseq)
        if messages is not None:
            return MailboxListing(info, messages, len(messages))
        reading = self._reading.get(key)
        if reading is not None and reading[0] >= info.highest_modseq:
            # Another session is reading it, as of our modseq or later: wait for its answer.
            waiter: Deferred[MailboxListing] = Deferred()
            reading[1].append(waiter)
            return await waiter
        waiters: list[Deferred[MailboxListing]] = []
        self._reading[key] = (info.highest_modseq, waiters)
        try:
            listing = await self._read(user, name, key)
        except BaseException:
            failure = Failure()
            for waiter in waiters:
                waiter.errback(failure)
            raise
        finally:
            if self._reading.get(key, (0, None))[1] is waiters:
                del self._reading[key]
        for waiter in waiters:
            waiter.callback(listing)
        return listing

    async def _read(self, user: str, name: str, key: MailboxKey) -> MailboxListing:
        older = self._entries.get(key)
        if older is not None:
            changed = await self._mailboxes.mailbox_listing(user, name, older.modseq)
            if changed.info.uidvalidity == key[2]:
                merged = {m.uid: m for m in older.messages}
                merged.update((m.uid, m) for m in changed.messages)
                if len(merged) == changed.count:
                    messages = sorted(merged.values(), key=lambda m: m.uid)
                    self._put(key, changed.info.highest_modseq, messages)
                    return MailboxListing(changed.info, messages, len(messages))
        listing = await self._mailboxes.mailbox_listing(user, name)
        messages = list(listing.messages)
        self._put((user, listing.info.name, listing.info.uidvalidity),
                  listing.info.highest_modseq, messages)  # fmt: skip
        return MailboxListing(listing.info, messages, len(messages))


class BodyPins:
    """
    Stored bodies a session is reading (a FETCH streaming a large body): a body that leaves its
    last mailbox meanwhile (another session expunged it) is deleted only once nobody reads it,
    so a literal already begun is never cut short (issue 12).
    """

    log = Logger()

    def __init__(self, messages: IMessageStore) -> None:
        self._messages = messages
        self._readers: dict[str, int] = {}
        self._waiting: set[str] = set()

    def pin(self, message_id: str) -> None:
        self._readers[message_id] = self._readers.get(message_id, 0) + 1

    def unpin(self, message_id: str) -> None:
        left = self._readers.get(message_id, 0) - 1
        if left > 0:
            self._readers[message_id] = left
            return
        self._readers.pop(message_id, None)
        if message_id in self._waiting:
            self._waiting.discard(message_id)
            self.release([message_id])

    @property
    def pinned(self) -> int:
        return len(self._readers)

    def release(self, message_ids: Iterable[str]) -> None:
        """
        Delete the bodies of messages that left a mailbox, if nobody needs them any more: no
        other mailbox holds them and the relay queue is done with them (the store checks both in
        the same transaction), and no session here is reading them.  In the background: the
        client's answer does not wait.
        """
        now = []
        for message_id in message_ids:
            if message_id in self._readers:
                self._waiting.add(message_id)
            else:
                now.append(message_id)
        if not now:
            return
        d = self._messages.delete_messages(now)
        d.addErrback(lambda f: self.log.failure("deleting expunged bodies failed", f))


class Watcher(Protocol):
    """A session that wants to hear when another session changes a mailbox of its user."""

    @property
    def user(self) -> str | None: ...

    @property
    def selected(self) -> MailboxKey | None: ...

    def wake(self) -> None: ...


class _RangeReader(io.RawIOBase):
    """A stored body as a file, read in ranges by ``read(offset, length)`` (a worker thread)."""

    def __init__(self, read: Callable[[int, int], bytes], size: int) -> None:
        self._read = read
        self._size = size
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), self._size - self._offset, STREAM_CHUNK)
        if length <= 0:
            return 0
        data = self._read(self._offset, length)
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)


class SharedState:
    """
    What the IMAP sessions of one server share: the stores, the clock, the executor that indexes
    messages off the reactor thread, the caches, the bodies being read, and the sessions to wake.
    """

    def __init__(
        self,
        clock: IReactorTime,
        mailboxes: IMailboxStore,
        messages: IMessageStore,
        executor: Executor,
        *,
        listings: int = 100_000,
        header_budget: int = 16 * 1024 * 1024,
        indexes: int = 4096,
    ) -> None:
        self.clock = clock
        self.mailboxes = mailboxes
        self.messages = messages
        self.executor = executor
        self.listings = Listings(mailboxes, budget=listings)
        # Header blocks with what searches decoded from them (counting the decoded text as twice
        # the block) and parsed MIME indexes of stored messages.
        self.headers: LRU[str, Content] = LRU(
            header_budget, lambda content: 3 * len(content.header())
        )
        self.indexes: LRU[str, MessageIndex] = LRU(indexes)
        self.pins = BodyPins(messages)
        self._watchers: dict[str, set[Watcher]] = {}

    # -- who to wake ------------------------------------------------------------------------------

    def watch(self, watcher: Watcher, user: str) -> None:
        self._watchers.setdefault(user, set()).add(watcher)

    def unwatch(self, watcher: Watcher, user: str | None) -> None:
        if user is None:
            return
        watchers = self._watchers.get(user)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[user]

    def changed(
        self, user: str, name: str, by: Watcher | None = None, *, inferiors: bool = False
    ) -> None:
        """
        Wake the sessions of ``user`` that have mailbox ``name`` selected (but ``by``); with
        ``inferiors``, those in a mailbox under it too (a RENAME moves them all).
        """
        prefix = name + "/"
        for watcher in list(self._watchers.get(user, ())):
            selected = watcher.selected
            if watcher is by or selected is None:
                continue
            if selected[1] == name or (inferiors and selected[1].startswith(prefix)):
                watcher.wake()

    def release(self, message_ids: Sequence[str]) -> None:
        """Messages left a mailbox: forget them, and delete the bodies nobody needs any more."""
        self.forget(message_ids)
        self.pins.release(message_ids)

    def forget(self, message_ids: Iterable[str]) -> None:
        """
        Messages left a mailbox: drop what the caches keep of them.  They may still be in
        another (a MOVE), and are read again when asked for; dropping them keeps the caches to
        the messages in use, so memory stays flat while mail comes and goes (issue 12).
        """
        for message_id in message_ids:
            self.headers.pop(message_id)
            self.indexes.pop(message_id)

    # -- indexing ---------------------------------------------------------------------------------

    async def index_stored(self, message_id: str, size: int) -> MessageIndex:
        """
        Index a stored message that has no kept index (APPEND, or an index from an older
        version), in the worker pool.  With a real reactor the pool reads the body in bounded
        ranges, so even a 50 MiB message is never held whole; under a test clock it reads it
        at once.
        """
        messages = self.messages
        if IReactorFromThreads.providedBy(self.clock):
            reactor = self.clock

            def read(offset: int, length: int) -> bytes:
                data: bytes = blockingCallFromThread(
                    reactor,
                    messages.read_body_range,  # type: ignore[arg-type]
                    message_id,
                    offset,
                    length,
                )
                return data

            stream = cast(BinaryIO, _RangeReader(read, size))
            return await self.executor.run(lambda: index_message(stream, size))
        body = await messages.read_body(message_id)
        return await self.executor.run(lambda: index_message(io.BytesIO(body), len(body)))
