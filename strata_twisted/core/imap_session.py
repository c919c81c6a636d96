# -*- test-case-name: tests.test_core_imap_session -*-
"""
An IMAP mailbox session (issue 12): one logged-in user, the mailbox they selected and what this
session has told its client about it, and the semantics of every mailbox command.

DESIGN puts policy and state in ``core/``: the adapter (``server/imap.py``) moves bytes, streams
large bodies, runs TLS, deadlines and connection limits; it hands each command the engine parsed
to a L{MailboxSession} with an L{Output} to write to, and answers the tagged line with what comes
back (a L{Done}, or a L{Refused} raised).

Concurrency is the normal case (a phone, a laptop and the webmail share one INBOX), and the
session keeps to what Dovecot does (issue 12):

- Everything it knows about its mailbox is tied to the mailbox's identity (UIDVALIDITY), never
  to its name: a mailbox deleted by another session (and perhaps created again under its name)
  ends the session with BYE, as Dovecot does, and never shows the old messages as ghosts.
- Another session's expunge never fails a FETCH, STORE, COPY or SEARCH: what is gone is left
  out, and a FETCH says so with C{OK [EXPUNGEISSUED]} (RFC 9051 §7.1).  A body being streamed is
  pinned (L{BodyPins}), so it is not deleted under a literal already begun.
- The MODSEQ the client hears of a message never goes backwards: a state older than what the
  session reported is never reported (RFC 7162 §3.1.2 makes a modseq only grow).
- A keyword is announced with FLAGS and PERMANENTFLAGS before any FETCH shows it (RFC 3501
  §7.2.6).
- \\Recent is set on a message for exactly one session, the first that selects its mailbox
  read-write after it arrived (RFC 3501 §2.3.2), through L{IMailboxStore.claim_recent}.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Final, Literal, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from strata_twisted.core.imap_fetch import (
    ByteRange,
    FetchPlan,
    body_ranges,
    build_fetch,
    flag_atoms,
    literal_safe,
    plan_fetch,
)
from strata_twisted.core.imap_list import list_line, list_mailboxes, lsub
from strata_twisted.core.imap_search import (
    Candidate,
    Content,
    Need,
    matches,
    plan_sort,
    search,
    sort,
)
from strata_twisted.core.imap_search import Mailbox as SearchMailbox
from strata_twisted.core.imap_search import plan as search_plan
from strata_twisted.core.imap_shared import STREAM_CHUNK, MailboxKey, SharedState
from strata_twisted.core.imap_thread import plan_thread, thread
from strata_twisted.core.intake import new_queue_id
from strata_twisted.errors import NoSuchEntry, StrataError
from strata_twisted.interfaces import IMessageWriter
from strata_twisted.model import (
    Envelope,
    FlagMode,
    IncomingMessage,
    MailboxInfo,
    MailboxListing,
    MailMessage,
    NoSuchMailbox,
    normalize_flags,
    normalize_mailbox_name,
)
from strata_twisted.proto.imap_parser import (
    Copy,
    Expunge,
    Fetch,
    ListMailboxes,
    Lsub,
    MailboxCommand,
    Rename,
    Search,
    SearchKey,
    SequenceSet,
    Simple,
    Sort,
    Status,
    Store,
    Thread,
)
from strata_twisted.proto.imap_response import (
    ResponseCode,
    Streamed,
    Value,
    esearch_response,
    exists_response,
    expunge_response,
    fetch_response,
    fetch_response_parts,
    flags_response,
    recent_response,
    search_response,
    sort_response,
    status_data_response,
    status_response,
    thread_response,
)
from strata_twisted.proto.imap_server import SelectedMailbox, mentions_modseq
from strata_twisted.proto.mime import IndexFormatError, MessageIndex, index_from_json, index_to_json

__all__ = [
    "DELIMITER",
    "SYSTEM_FLAGS",
    "Done",
    "MailboxGone",
    "MailboxSession",
    "Output",
    "OutputBroken",
    "Refused",
    "View",
]

SYSTEM_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SEEN: Final = "\\Seen"
RECENT: Final = "\\Recent"
DELIMITER: Final = "/"

HEADER_BATCH: Final = 64 * 1024
"""Header blocks up to this long are read for many messages in one storage call."""

_MANY: Final = 32
"""From this many messages on, one pass over the mailbox beats a search per message."""


class Refused(Exception):
    """Answer the command with this status, response code (RFC 5530) and text."""

    def __init__(self, status: Literal["NO", "BAD"], text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


class MailboxGone(StrataError):
    """
    The selected mailbox was deleted or renamed by another session (its name no longer leads to
    the mailbox of this UIDVALIDITY): the session cannot go on in it, and ends with BYE, as
    Dovecot's does (RFC 3501 §7.1.5).
    """


class OutputBroken(StrataError):
    """A literal already begun cannot be finished (its body vanished): close the connection."""


@dataclass(frozen=True)
class Done:
    """A command completed: the tagged OK's text and response code."""

    text: str
    code: ResponseCode | None = None


class Output(Protocol):
    """Where a session writes: the adapter's protocol engine and transport."""

    @property
    def condstore(self) -> bool:
        """CONDSTORE is enabled (RFC 7162 §3.1): every FETCH carries UID and MODSEQ."""

    @property
    def gone(self) -> bool:
        """The client is gone: stop writing."""

    def untagged(self, lines: Iterable[bytes]) -> None:
        """Untagged responses, written in order before the tagged one."""

    def write(self, data: bytes) -> None:
        """Raw bytes after what is queued (a FETCH response written in pieces)."""

    def begin_stream(self) -> None:
        """A large literal follows, in pieces: take flow control (L{ready})."""

    def ready(self) -> Deferred[None]:
        """Fires when the client can take more (its connection's buffer drained)."""

    def end_stream(self) -> None:
        """The large literal is written."""


# -- the selected mailbox -------------------------------------------------------------------------


@dataclass
class View:
    """
    What the session has told its client about the selected mailbox: the UIDs by sequence
    number, each message's flags and modseq as last reported, the keywords announced, which
    messages are \\Recent to this session, and the HIGHESTMODSEQ it last caught up with.
    Updates from other sessions are found by comparing this with the store
    (L{MailboxSession.sync}).
    """

    name: str
    uidvalidity: int
    uids: list[int]
    flags: dict[int, frozenset[str]]
    modseqs: dict[int, int]
    read_only: bool
    highest_modseq: int
    keywords: set[str] = field(default_factory=set)
    recent: set[int] = field(default_factory=set)
    claimed: int = 0  # UIDs below this were claimed for \Recent by some session, maybe this one
    claims: list[tuple[int, int]] = field(default_factory=list)  # the UID ranges this one claimed

    @classmethod
    def of(cls, info: MailboxInfo, messages: Sequence[MailMessage], read_only: bool) -> View:
        return cls(
            info.name,
            info.uidvalidity,
            [m.uid for m in messages],
            {m.uid: m.flags for m in messages},
            {m.uid: m.modseq for m in messages},
            read_only,
            info.highest_modseq,
            keywords={f for m in messages for f in m.flags if not f.startswith("\\")},
        )

    def seq(self, uid: int) -> int:
        """The sequence number of a UID the session knows."""
        return bisect.bisect_left(self.uids, uid) + 1

    def knows(self, uid: int) -> bool:
        return uid in self.modseqs

    def remember(self, message: MailMessage) -> bool:
        """
        Take a message's state if it is not older than what the client was told (RFC 7162
        §3.1.2: a modseq only grows); whether it was taken.
        """
        if message.modseq < self.modseqs.get(message.uid, 0):
            return False
        self.flags[message.uid] = message.flags
        self.modseqs[message.uid] = message.modseq
        return True

    def current(self, message: MailMessage) -> MailMessage:
        """The message as the client last heard of it, if the store's copy is older."""
        known = self.modseqs.get(message.uid)
        if known is None or message.modseq >= known:
            return message
        return replace(message, flags=self.flags[message.uid], modseq=known)

    def shown(self, message: MailMessage) -> MailMessage:
        """The message with \\Recent among its flags if it is recent to this session."""
        if message.uid in self.recent:
            return replace(message, flags=message.flags | {RECENT})
        return message

    def forget(self, uid: int) -> int:
        """Drop an expunged UID; returns the sequence number it had (for ``* n EXPUNGE``)."""
        n = self.seq(uid)
        del self.uids[n - 1]
        self.flags.pop(uid, None)
        self.modseqs.pop(uid, None)
        self.recent.discard(uid)
        return n

    def announce(self, flag_sets: Iterable[Iterable[str]]) -> list[bytes]:
        """
        RFC 3501 §7.2.6: FLAGS (and PERMANENTFLAGS, §7.1) name every keyword a FETCH may show,
        before it is shown.  The lines to send first, if some keyword is new to the client.
        """
        new = {f for flags in flag_sets for f in flags if not f.startswith("\\")}
        new -= self.keywords
        if not new:
            return []
        self.keywords |= new
        return self.flag_lines()

    def flag_lines(self) -> list[bytes]:
        flags = SYSTEM_FLAGS + tuple(sorted(self.keywords))
        lines = [flags_response(flags)]
        permanent = () if self.read_only else flags + ("\\*",)
        lines.append(status_response(None, "OK", "Flags permitted",
                                     ResponseCode.permanent_flags(permanent)))  # fmt: skip
        return lines

    def resolve(self, sequence_set: SequenceSet, *, uid: bool) -> list[int] | None:
        """The UIDs named, in UID order; None for a sequence number beyond the mailbox."""
        if uid:
            largest = self.uids[-1] if self.uids else 0
            ranges = sequence_set.resolve(largest)
            out: list[int] = []
            for low, high in ranges:
                first = bisect.bisect_left(self.uids, low)
                last = bisect.bisect_right(self.uids, high)
                out.extend(self.uids[first:last])
            return out
        count = len(self.uids)
        for lo, hi in sequence_set.ranges:
            # RFC 3501 §9: a sequence number above the number of messages is an error ("*" is not).
            if (lo is not None and lo > count) or (hi is not None and hi > count):
                return None
        return [
            self.uids[n - 1] for lo, hi in sequence_set.resolve(count) for n in range(lo, hi + 1)
        ]

    def numbering(self, count: int) -> Callable[[int], int]:
        """UID to sequence number, for ``count`` lookups."""
        if count > _MANY:
            return {uid: n for n, uid in enumerate(self.uids, 1)}.__getitem__
        return self.seq


@dataclass
class _Append:
    """An APPEND whose message is arriving: where it goes, and what went wrong, if anything."""

    mailbox: str
    flags: tuple[str, ...]
    internal_date: float
    message_id: str
    writer: IMessageWriter
    error: BaseException | None = None


def mailbox_name(name: str) -> str:
    """A mailbox name from a command; a trailing delimiter is dropped (RFC 3501 §6.3.3)."""
    if len(name) > 1 and name.endswith(DELIMITER):
        name = name.rstrip(DELIMITER) or name
    return normalize_mailbox_name(name)


def _status_items(status: dict[str, int], items: Iterable[str]) -> list[tuple[str, int]]:
    """RFC 3501 §6.3.10 STATUS items from a L{MailboxStatus}'s fields."""
    fields = {
        "MESSAGES": "messages",
        "RECENT": "recent",
        "UIDNEXT": "uidnext",
        "UIDVALIDITY": "uidvalidity",
        "UNSEEN": "unseen",
        "HIGHESTMODSEQ": "highest_modseq",
    }
    return [(item, status[fields[item]]) for item in items if item in fields]


def _search_modseq(
    key: SearchKey, candidates: Sequence[Candidate], numbers: Sequence[int], *, uid: bool
) -> int | None:
    """RFC 7162 §3.1.5: a search with MODSEQ reports the highest modseq of what it found."""
    if not numbers or not mentions_modseq(key):
        return None
    found = set(numbers)
    return max(c.message.modseq for c in candidates if (c.message.uid if uid else c.seq) in found)


# -- the session ----------------------------------------------------------------------------------


class MailboxSession:
    """
    One logged-in user's IMAP session: the selected mailbox (L{View}) and every mailbox
    command.  ``on_change`` is called when another session changed the selected mailbox (the
    adapter wakes an IDLE).
    """

    log = Logger()

    def __init__(
        self, user: str, shared: SharedState, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.user = user
        self.shared = shared
        self.view: View | None = None
        self._on_change = on_change
        self._append: _Append | None = None
        shared.watch(self, user)

    @classmethod
    async def open(
        cls, user: str, shared: SharedState, on_change: Callable[[], None] = lambda: None
    ) -> MailboxSession:
        """A logged-in user's session, their default mailboxes made if missing (first login)."""
        await shared.mailboxes.ensure_user(user)
        return cls(user, shared, on_change)

    # -- Watcher ----------------------------------------------------------------------------------

    @property
    def selected(self) -> MailboxKey | None:
        view = self.view
        return (self.user, view.name, view.uidvalidity) if view is not None else None

    def wake(self) -> None:
        self._on_change()

    def ended(self) -> None:
        """The connection is gone: stop hearing of changes, drop a half-received APPEND."""
        self.shared.unwatch(self, self.user)
        self.view = None
        self.append_abort()

    def _notify(self, name: str) -> None:
        """Our change to mailbox ``name``: wake the user's other sessions idling on it."""
        self.shared.changed(self.user, name, self)

    # -- SELECT, EXAMINE, UNSELECT, CLOSE ------------------------------------------------------

    async def select(self, name: str, *, read_only: bool) -> SelectedMailbox:
        """RFC 3501 §6.3.1/§6.3.2; RFC 7162 §3.1.2.1 (HIGHESTMODSEQ)."""
        self.view = None
        name = normalize_mailbox_name(name)
        listing = await self.shared.listings.listing(self.user, name)
        info, messages = listing.info, listing.messages
        view = View.of(info, messages, read_only)
        if read_only:
            # EXAMINE shows what is recent without taking it from the session that will select.
            view.recent = {m.uid for m in messages if m.uid >= info.first_recent}
            view.claimed = info.first_recent
        else:
            await self._claim(view, messages, info)
        first_unseen = next((n for n, m in enumerate(messages, 1) if SEEN not in m.flags), None)
        self.view = view
        flags = SYSTEM_FLAGS + tuple(sorted(view.keywords))
        return SelectedMailbox(
            flags=flags,
            exists=len(messages),
            uidvalidity=info.uidvalidity,
            uidnext=info.uidnext,
            permanent_flags=flags + ("\\*",),
            first_unseen=first_unseen,
            highest_modseq=info.highest_modseq,
            recent=len(view.recent),
        )

    async def _claim(self, view: View, messages: Sequence[MailMessage], known: MailboxInfo) -> None:
        """
        RFC 3501 §2.3.2: the messages that arrived since any session last selected the mailbox
        read-write are recent to this one only; the store hands each out once.
        """
        if known.first_recent >= known.uidnext:
            # Nothing was left to claim when the listing was read: no write.  What arrives later
            # has a UID from known.uidnext on, and the next sync claims it.
            view.claimed = max(view.claimed, known.uidnext)
            return
        before = await self.shared.mailboxes.claim_recent(self.user, view.name)
        if before.uidvalidity != view.uidvalidity:
            raise MailboxGone(f"mailbox {view.name} was deleted")
        low, high = max(before.first_recent, view.claimed), before.uidnext
        view.recent.update(m.uid for m in messages if low <= m.uid < high)
        view.claimed = max(view.claimed, high)
        if low < high:
            if view.claims and view.claims[-1][1] >= low:  # adjoining: one range, not a list
                view.claims[-1] = (view.claims[-1][0], high)
            else:
                view.claims.append((low, high))

    def unselect(self) -> None:
        self.view = None

    async def close(self) -> None:
        """RFC 3501 §6.4.2: CLOSE expunges \\Deleted messages silently, unless read-only."""
        view, self.view = self.view, None
        if view is None or view.read_only:
            return
        try:
            removed = await self.shared.mailboxes.expunge(
                self.user, view.name, uidvalidity=view.uidvalidity
            )
        except NoSuchMailbox:
            return  # deleted (and perhaps created again) by another session: nothing to do
        if removed:
            self._notify(view.name)
            self.shared.release([m.message_id for m in removed])

    def _require_selected(self, *, writable: bool = False) -> View:
        view = self.view
        if view is None:
            raise Refused("BAD", "No mailbox selected")
        if writable and view.read_only:
            raise Refused("NO", "Mailbox is read-only (EXAMINE)", "READ-ONLY")
        return view

    async def _same_mailbox(self, view: View) -> MailboxInfo:
        """The selected mailbox, if its name still leads to it (else L{MailboxGone})."""
        info = await self.shared.mailboxes.get_mailbox(self.user, view.name)
        if info is None or info.uidvalidity != view.uidvalidity:
            raise MailboxGone(f"mailbox {view.name} was deleted")
        return info

    @staticmethod
    @contextmanager
    def _gone_if_missing(view: View) -> Iterator[None]:
        """A store call on the selected mailbox: its absence (or a new one) ends the session."""
        try:
            yield
        except NoSuchMailbox as e:
            if e.name != view.name:
                raise
            raise MailboxGone(f"mailbox {view.name} was deleted") from None

    def _check(self, view: View, listing: MailboxListing) -> None:
        if listing.info.uidvalidity != view.uidvalidity:
            raise MailboxGone(f"mailbox {view.name} was deleted")

    async def _listing(self, view: View) -> MailboxListing:
        try:
            listing = await self.shared.listings.listing(self.user, view.name)
        except NoSuchMailbox:
            raise MailboxGone(f"mailbox {view.name} was deleted") from None
        self._check(view, listing)
        return listing

    # -- updates from other sessions (RFC 3501 §7: unilateral EXISTS, EXPUNGE, FETCH FLAGS) -------

    async def sync(self, out: Output, *, expunges: bool = True) -> None:
        """
        Tell the client what changed in its selected mailbox since it last heard: messages
        expunged (only where RFC 3501 §7.4.1 allows EXPUNGE: not during FETCH, STORE or SEARCH
        by sequence number), flags changed and new messages.  Skipped at the cost of reading one
        row when the mailbox's HIGHESTMODSEQ says nothing changed.
        """
        view = self.view
        if view is None:
            return
        info = await self._same_mailbox(view)
        if info.highest_modseq == view.highest_modseq:
            return
        listing = await self._listing(view)
        if self.view is not view or out.gone:
            return
        messages = listing.messages
        current = {m.uid: m for m in messages}
        lines: list[bytes] = []
        complete = True
        gone = [uid for uid in view.uids if uid not in current]
        if gone and expunges:
            for uid in reversed(gone):  # from the highest, so no number shifts under the next
                lines.append(expunge_response(view.forget(uid)))
        elif gone:
            complete = False
        known = view.uids[-1] if view.uids else 0
        new = [m for m in messages if m.uid > known]
        changed = [
            current[uid]
            for uid in view.uids
            if uid in current and current[uid].modseq > view.modseqs[uid]
        ]
        lines.extend(view.announce(m.flags for m in (*changed, *new)))
        numbering = view.numbering(len(changed))
        for message in changed:
            view.remember(message)
            lines.append(self._flags_line(out, numbering(message.uid), message, with_uid=True))
        if new:
            recent = len(view.recent)
            for message in new:
                view.uids.append(message.uid)
                view.remember(message)
            if view.read_only:
                view.recent.update(m.uid for m in new if m.uid >= listing.info.first_recent)
            else:
                if new[-1].uid >= view.claimed:
                    await self._claim(view, new, listing.info)
                view.recent.update(
                    m.uid for m in new if any(lo <= m.uid < hi for lo, hi in view.claims)
                )
            lines.append(exists_response(len(view.uids)))
            if len(view.recent) != recent:
                lines.append(recent_response(len(view.recent)))
        if complete:
            view.highest_modseq = max(view.highest_modseq, listing.info.highest_modseq)
        out.untagged(lines)

    def _flags_line(
        self, out: Output, number: int, message: MailMessage, *, with_uid: bool
    ) -> bytes:
        """``* n FETCH (UID u FLAGS (...) MODSEQ (m))``: a flag change the client must hear of."""
        view = self.view
        shown = view.shown(message) if view is not None else message
        items: list[tuple[str, Value]] = []
        if with_uid:
            items.append(("UID", message.uid))
        items.append(("FLAGS", flag_atoms(shown.flags)))
        if out.condstore:
            items.append(("MODSEQ", [message.modseq]))
        return fetch_response(number, items)

    # -- commands ---------------------------------------------------------------------------------

    async def command(self, command: object, out: Output) -> Done:
        """
        Carry out a mailbox command the engine parsed; its untagged answers go to ``out``.
        Updates from other sessions follow every command in the selected state but FETCH,
        SEARCH and SORT by sequence number (cheap to skip, and RFC 3501 §7.4.1 forbids their
        EXPUNGEs); after STORE and COPY by sequence number, without EXPUNGEs.
        """
        name = str(getattr(command, "name", ""))
        uid = bool(getattr(command, "uid", False))
        if isinstance(command, Expunge):
            uid = command.uid_set is not None
        code: ResponseCode | None = None
        text = f"{'UID ' if uid else ''}{name} completed"
        sync: bool | None = True
        if isinstance(command, ListMailboxes):
            await self.list_mailboxes(command, out)
        elif isinstance(command, Lsub):
            await self.lsub(command, out)
        elif isinstance(command, Fetch):
            code = await self.fetch(command, out)
            sync = True if uid else None
        elif isinstance(command, Store):
            code = await self.store(command, out)
            sync = uid
        elif isinstance(command, Copy):
            code = await self.copy(command, out)
            sync = uid or command.name == "MOVE"
        elif isinstance(command, Search):
            await self.search(command, out)
            sync = True if uid else None
        elif isinstance(command, Sort):
            await self.sort(command, out)
            sync = True if uid else None
        elif isinstance(command, Thread):
            await self.thread(command, out)
            sync = True if uid else None
        elif isinstance(command, Expunge):
            await self.expunge(command, out)
        elif isinstance(command, Status):
            await self.status(command, out)
        elif isinstance(command, MailboxCommand):
            await self.mailbox_command(command)
        elif isinstance(command, Rename):
            await self.rename(command)
        elif isinstance(command, Simple) and name in ("NOOP", "CHECK"):
            pass
        elif isinstance(command, Simple) and name == "UNSELECT":
            self.unselect()
        elif isinstance(command, Simple) and name == "CLOSE":
            await self.close()
        else:
            raise Refused("NO", f"{name} is not supported", "CANNOT")
        if sync is not None and self.view is not None:
            await self.sync(out, expunges=sync)
        if code is not None and code.name == "EXPUNGEISSUED":
            text = "Some messages were also expunged"
        return Done(text, code)

    # -- LIST, LSUB, STATUS ---------------------------------------------------------------------

    async def list_mailboxes(self, command: ListMailboxes, out: Output) -> None:
        """RFC 3501 §6.3.8, LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), RFC 6154."""
        mailboxes = self.shared.mailboxes
        boxes = await mailboxes.list_mailboxes(self.user)
        subscriptions = await mailboxes.list_subscriptions(self.user)
        lines: list[bytes] = []
        for listed in list_mailboxes(command, boxes, subscriptions):
            lines.append(list_line(listed))
            # RFC 5819 §2: STATUS for each selectable mailbox the selection itself matched.
            if command.status_items is not None and listed.wants_status:
                status = await mailboxes.mailbox_status(self.user, listed.name)
                items = _status_items(asdict(status), command.status_items)
                lines.append(status_data_response(listed.name, items))
        out.untagged(lines)

    async def lsub(self, command: Lsub, out: Output) -> None:
        """RFC 3501 §6.3.9."""
        mailboxes = self.shared.mailboxes
        boxes = await mailboxes.list_mailboxes(self.user)
        subscriptions = await mailboxes.list_subscriptions(self.user)
        out.untagged(
            list_line(listed, command="LSUB") for listed in lsub(command, boxes, subscriptions)
        )

    async def status(self, command: Status, out: Output) -> None:
        """RFC 3501 §6.3.10."""
        name = mailbox_name(command.mailbox)
        status = await self.shared.mailboxes.mailbox_status(self.user, name)
        items = _status_items(asdict(status), command.items)
        out.untagged([status_data_response(name, items)])

    # -- CREATE, DELETE, RENAME, SUBSCRIBE ------------------------------------------------------

    async def mailbox_command(self, command: MailboxCommand) -> None:
        mailboxes = self.shared.mailboxes
        name = mailbox_name(command.mailbox)
        if command.name == "CREATE":
            await mailboxes.create_mailbox(self.user, name)
        elif command.name == "DELETE":
            view = self.view
            if view is not None and view.name == name:
                # The session would be left in a mailbox that is gone.
                raise Refused("NO", "Cannot delete the selected mailbox", "INUSE")
            self.shared.release(await mailboxes.delete_mailbox(self.user, name))
            # The sessions that have it selected must learn it is gone (BYE), at once.
            self._notify(name)
        elif command.name == "SUBSCRIBE":
            await mailboxes.subscribe(self.user, name)
        elif command.name == "UNSUBSCRIBE":
            await mailboxes.unsubscribe(self.user, name)
        else:
            raise Refused("NO", f"{command.name} is not supported", "CANNOT")

    async def rename(self, command: Rename) -> None:
        """RFC 3501 §6.3.5."""
        old, new = mailbox_name(command.mailbox), mailbox_name(command.new_name)
        await self.shared.mailboxes.rename_mailbox(self.user, old, new)
        view = self.view
        # The selected mailbox (or one of its superiors) moved: follow it.  INBOX stays.
        if view is not None and old != "INBOX":
            if view.name == old:
                view.name = new
            elif view.name.startswith(old + DELIMITER):
                view.name = new + view.name[len(old) :]
        # Sessions in the old names (the mailbox or one under it) learn at once it is gone.
        self.shared.changed(self.user, old, self, inferiors=True)

    # -- STORE ----------------------------------------------------------------------------------

    async def store(self, command: Store, out: Output) -> ResponseCode | None:
        """RFC 3501 §6.4.6, RFC 7162 §3.1.3 (UNCHANGEDSINCE)."""
        view = self._require_selected(writable=True)
        uids = view.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise Refused("BAD", "Invalid message sequence number")
        if any(f.lower() == RECENT.lower() for f in command.flags):
            raise Refused("BAD", "\\Recent cannot be stored")
        modes: dict[str, FlagMode] = {"+": "add", "-": "remove", "": "set"}
        if not uids:
            return None
        with self._gone_if_missing(view):
            update = await self.shared.mailboxes.store_flags(
                self.user, view.name, uids, modes[command.mode], command.flags,
                command.unchanged_since, uidvalidity=view.uidvalidity,
            )  # fmt: skip
        changed = set(update.changed)
        condstore = out.condstore
        shown = [
            m
            for m in update.messages
            if view.knows(m.uid)  # not a message this session has not been told of yet
            # RFC 3501: FETCH FLAGS for each message unless .SILENT; RFC 7162 §3.1.3: with
            # CONDSTORE, the MODSEQ of every changed message even when .SILENT.
            and (not command.silent or (condstore and m.uid in changed))
        ]
        lines = view.announce(m.flags for m in shown)
        numbering = view.numbering(len(shown))
        for message in update.messages:
            if view.knows(message.uid):
                view.remember(message)
        with_uid = command.uid or condstore  # RFC 7162 §3.1
        for message in shown:
            latest = view.current(message)
            lines.append(self._flags_line(out, numbering(latest.uid), latest, with_uid=with_uid))
        out.untagged(lines)
        if changed:
            self._notify(view.name)
        if update.failed:
            failed = update.failed if command.uid else [view.seq(u) for u in update.failed]
            return ResponseCode.modified(failed)
        return None

    # -- COPY and MOVE --------------------------------------------------------------------------

    async def copy(self, command: Copy, out: Output) -> ResponseCode | None:
        """RFC 3501 §6.4.7, RFC 6851 (MOVE), RFC 4315 (COPYUID)."""
        move = command.name == "MOVE"
        view = self._require_selected(writable=move)
        uids = view.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise Refused("BAD", "Invalid message sequence number")
        target = mailbox_name(command.mailbox)
        mailboxes = self.shared.mailboxes
        try:
            if move:
                result = await mailboxes.move_messages(
                    self.user, view.name, uids, target, uidvalidity=view.uidvalidity
                )
            else:
                result = await mailboxes.copy_messages(
                    self.user, view.name, uids, target, uidvalidity=view.uidvalidity
                )
        except NoSuchMailbox as e:
            if e.name == view.name:
                raise MailboxGone(f"mailbox {view.name} was deleted") from None
            if e.name != target:
                raise
            # RFC 3501 §6.4.7: the client may CREATE the target and try again.
            raise Refused("NO", f"Mailbox does not exist: {target}", "TRYCREATE") from None
        code = None
        if result.pairs:
            self._notify(target)
            sources = [pair[0] for pair in result.pairs]
            code = ResponseCode.copy_uid(
                result.uidvalidity, sources, [pair[1] for pair in result.pairs]
            )
        if not move:
            return code
        # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs.
        lines = []
        if code is not None:
            lines.append(status_response(None, "OK", "Moved UIDs", code))
        for uid in sorted((pair[0] for pair in result.pairs), reverse=True):
            if view.knows(uid):
                lines.append(expunge_response(view.forget(uid)))
        out.untagged(lines)
        if result.pairs:
            self._notify(view.name)
        return None

    # -- EXPUNGE --------------------------------------------------------------------------------

    async def expunge(self, command: Expunge, out: Output) -> None:
        """RFC 3501 §6.4.3; UID EXPUNGE, RFC 4315 §2.1."""
        view = self._require_selected(writable=True)
        uids: list[int] | None = None
        if command.uid_set is not None:
            uids = view.resolve(command.uid_set, uid=True)
            if not uids:
                return
        # else RFC 3501 §6.4.3: every message flagged \Deleted, as CLOSE; EXPUNGE responses
        # (below) for those this session was told of.
        with self._gone_if_missing(view):
            removed = await self.shared.mailboxes.expunge(
                self.user, view.name, uids, uidvalidity=view.uidvalidity
            )
        lines = []
        for message in sorted(removed, key=lambda m: m.uid, reverse=True):
            if view.knows(message.uid):
                lines.append(expunge_response(view.forget(message.uid)))
        out.untagged(lines)
        if removed:
            self._notify(view.name)
            self.shared.release([m.message_id for m in removed])

    # -- SEARCH and SORT ------------------------------------------------------------------------

    async def _candidates(self, view: View, need: Need) -> list[Candidate]:
        """The session's messages, each with what the search needs loaded (decision 9)."""
        listing = await self._listing(view)
        current = {m.uid: m for m in listing.messages}
        # (sequence number, message) for what the session knows and the store still has.
        known: list[tuple[int, MailMessage]] = []
        modseqs, recent = view.modseqs, view.recent
        for n, uid in enumerate(view.uids, 1):
            message = current.get(uid)
            if message is None:
                continue
            if uid in recent or message.modseq < modseqs[uid]:  # the rare cases, one lookup each
                message = view.shown(view.current(message))
            known.append((n, message))
        headers: dict[int, Content] = {}
        if need is Need.HEADER and known:
            headers = await self._headers(view, [message for _, message in known])
        out = []
        for seq, message in known:
            if need is Need.BODY:
                try:
                    body = await self.shared.messages.read_body(message.message_id)
                except NoSuchEntry:
                    continue  # expunged by another session meanwhile: not found
                out.append(Candidate(seq, message, Content(raw=body)))
            elif need is Need.HEADER:
                content = headers.get(message.uid)
                if content is not None:
                    out.append(Candidate(seq, message, content))
            else:
                out.append(Candidate(seq, message))
        return out

    async def _headers(self, view: View, messages: list[MailMessage]) -> dict[int, Content]:
        """
        The header blocks of these messages, as search L{Content}: from the shared cache (which
        also keeps what searches decoded from them), else read in one storage call for all
        those whose header is short (the index says how long), one each otherwise.  A message
        whose body vanished (expunged meanwhile) is left out.
        """
        cache, store = self.shared.headers, self.shared.messages
        out: dict[int, Content] = {}
        missing: list[MailMessage] = []
        for message in messages:
            content = cache.get(message.message_id)
            if content is None:
                missing.append(message)
            else:
                out[message.uid] = content
        if not missing:
            return out
        indexes = await self._indexes(view, missing)
        missing = [m for m in missing if m.uid in indexes]
        lengths = {m.uid: indexes[m.uid].root.header_length for m in missing}
        blocks: dict[int, bytes] = {}
        short = [m for m in missing if lengths[m.uid] <= HEADER_BATCH]
        if short:
            longest = max(lengths[m.uid] for m in short)
            heads = await store.read_heads([m.message_id for m in short], longest)
            by_id = {head.message.id: head.head for head in heads}
            for message in short:
                head = by_id.get(message.message_id)
                if head is not None:
                    blocks[message.uid] = head[: lengths[message.uid]]
        for message in missing:
            if message.uid not in blocks and lengths[message.uid] > HEADER_BATCH:
                try:
                    blocks[message.uid] = await store.read_body_range(
                        message.message_id, 0, lengths[message.uid]
                    )
                except NoSuchEntry:
                    continue
        for message in missing:
            block = blocks.get(message.uid)
            if block is None:
                continue
            content = Content(header=block)
            cache.put(message.message_id, content)
            out[message.uid] = content
        return out

    async def search(self, command: Search, out: Output) -> None:
        """RFC 3501 §6.4.4, ESEARCH (RFC 4731), CONDSTORE's MODSEQ (RFC 7162 §3.1.5)."""
        view = self._require_selected()
        candidates = await self._candidates(view, search_plan(command.key))
        mailbox = self._search_mailbox(view)
        numbers = search(command.key, candidates, mailbox, uid=command.uid)
        modseq = _search_modseq(command.key, candidates, numbers, uid=command.uid)
        if command.return_options is None:
            out.untagged([search_response(numbers, modseq)])
            return
        wanted = {o.upper() for o in command.return_options} or {"ALL"}
        out.untagged(
            [
                esearch_response(
                    command.tag,
                    uid=command.uid,
                    minimum=min(numbers) if numbers and "MIN" in wanted else None,
                    maximum=max(numbers) if numbers and "MAX" in wanted else None,
                    count=len(numbers) if "COUNT" in wanted else None,
                    all_numbers=numbers if "ALL" in wanted else None,
                    modseq=modseq,
                )
            ]
        )

    async def sort(self, command: Sort, out: Output) -> None:
        """RFC 5256 SORT."""
        view = self._require_selected()
        need = max(search_plan(command.key), plan_sort(command.criteria))
        candidates = await self._candidates(view, need)
        numbers = sort(command.criteria, command.key, candidates, self._search_mailbox(view),
                       uid=command.uid)  # fmt: skip
        out.untagged([sort_response(numbers)])

    async def thread(self, command: Thread, out: Output) -> None:
        """
        RFC 5256 THREAD (ORDEREDSUBJECT, REFERENCES): from the header blocks the search cache
        keeps (Message-ID, In-Reply-To, References, Subject, Date), never the bodies.
        """
        view = self._require_selected()
        candidates = await self._candidates(view, plan_thread(command.key))
        mailbox = self._search_mailbox(view)
        found = [c for c in candidates if matches(command.key, c, mailbox)]
        out.untagged([thread_response(thread(command.algorithm, found, uid=command.uid))])

    @staticmethod
    def _search_mailbox(view: View) -> SearchMailbox:
        return SearchMailbox(
            largest_seq=len(view.uids), largest_uid=view.uids[-1] if view.uids else 0
        )

    # -- APPEND ---------------------------------------------------------------------------------

    def append_begin(self, mailbox: str, flags: Sequence[str], internal_date: float | None) -> None:
        """The message is coming: write it to the store as it arrives (never whole in memory)."""
        clock = self.shared.clock
        date = internal_date if internal_date is not None else clock.seconds()
        message_id = new_queue_id(clock)
        writer = self.shared.messages.begin(message_id)
        self._append = _Append(mailbox, tuple(flags), date, message_id, writer)

    def append_data(self, data: bytes) -> Deferred[None] | None:
        """Write a piece of the message; a failure is kept and reported at the end."""
        append = self._append
        if append is None or append.error is not None:
            return None
        d = append.writer.write(data)

        def failed(failure: object) -> None:
            append.error = getattr(failure, "value", None) or StrataError("write failed")

        d.addErrback(failed)
        return d

    def append_abort(self) -> None:
        append, self._append = self._append, None
        if append is not None:
            append.writer.abort().addErrback(lambda f: None)

    async def append_end(self, out: Output) -> Done:
        """RFC 3501 §6.3.11, APPENDUID (RFC 4315 §3)."""
        append, self._append = self._append, None
        if append is None:
            raise Refused("NO", "No APPEND in progress")
        mailboxes = self.shared.mailboxes
        try:
            name = mailbox_name(append.mailbox)
            if append.error is not None:
                raise append.error
            if any(f.lower() == RECENT.lower() for f in append.flags):
                raise Refused("BAD", "\\Recent cannot be stored")
            normalize_flags(append.flags)  # InvalidFlag (NO [CANNOT]) before anything is committed
            if await mailboxes.get_mailbox(self.user, name) is None:
                raise Refused("NO", f"Mailbox does not exist: {name}", "TRYCREATE")
        except BaseException:
            await append.writer.abort()
            raise
        clock = self.shared.clock
        incoming = IncomingMessage(Envelope("", (self.user,)), clock.seconds(), deliveries=())
        stored = await append.writer.commit(incoming)
        index = await self.shared.index_stored(stored.id, stored.size)
        message = await mailboxes.add_message(self.user, name, stored.id, append.internal_date,
                                              append.flags, index_to_json(index))  # fmt: skip
        info = await mailboxes.get_mailbox(self.user, name)
        uidvalidity = info.uidvalidity if info is not None else 0
        self._notify(name)
        if self.view is not None:
            await self.sync(out)
        return Done("APPEND completed", ResponseCode.append_uid(uidvalidity, message.uid))

    # -- FETCH ----------------------------------------------------------------------------------

    async def fetch(self, command: Fetch, out: Output) -> ResponseCode | None:
        """
        RFC 3501 §6.4.5, CONDSTORE (RFC 7162 §3.1.4).  A message expunged by another session
        since this one last heard is left out, and the command completes with EXPUNGEISSUED
        (RFC 9051 §7.1), as Dovecot's does: the client learns of the expunge at its next
        command that may carry one.
        """
        view = self._require_selected()
        uids = view.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise Refused("BAD", "Invalid message sequence number")
        # RFC 7162 §3.1: once CONDSTORE is enabled, every untagged FETCH carries UID and MODSEQ.
        condstore = out.condstore
        plan = plan_fetch(command.attributes, uid=command.uid or condstore, condstore=condstore)
        if view.read_only:
            plan = replace(plan, sets_seen=False)  # RFC 3501 §6.3.2: EXAMINE changes nothing
        if not uids:
            return None
        wanted = set(uids)
        if command.changed_since is None and len(uids) * 4 >= len(view.uids):
            listing = await self._listing(view)
        else:
            # A few messages (a client opening one), or CHANGEDSINCE (RFC 7162 §3.1.4.1: only
            # messages with a greater modseq): only those are read.
            try:
                listing = await self.shared.mailboxes.mailbox_listing(
                    self.user, view.name, command.changed_since, uids=uids
                )
            except NoSuchMailbox:
                raise MailboxGone(f"mailbox {view.name} was deleted") from None
            self._check(view, listing)
        modseqs = view.modseqs
        messages = {
            m.uid: m if m.modseq >= modseqs.get(m.uid, 0) else view.current(m)
            for m in listing.messages
            if m.uid in wanted
        }
        issued = command.changed_since is None and len(messages) < len(uids)
        changed: set[int] = set()
        if plan.sets_seen:
            unseen = [uid for uid in uids if uid in messages and SEEN not in messages[uid].flags]
            if unseen:
                with self._gone_if_missing(view):
                    update = await self.shared.mailboxes.store_flags(
                        self.user, view.name, unseen, "add", [SEEN], uidvalidity=view.uidvalidity
                    )
                for message in update.messages:
                    if message.uid in messages:
                        messages[message.uid] = message
                    if view.knows(message.uid):
                        view.remember(message)
                changed.update(update.changed)
                if update.changed:
                    self._notify(view.name)
        indexes: dict[int, MessageIndex] = {}
        if plan.needs_index and messages:
            indexes = await self._indexes(view, list(messages.values()))
            if len(indexes) < len(messages):
                issued = True
        if any(a.name == "FLAGS" for a in plan.attributes) or changed:
            out.untagged(view.announce(m.flags for m in messages.values()))
        numbering = view.numbering(len(uids))
        for uid in uids:
            found = messages.get(uid)
            if found is None or (plan.needs_index and uid not in indexes):
                continue  # expunged by another session
            index = indexes.get(uid)
            shown = view.shown(found) if uid in view.recent else found
            sent = await self._fetch_one(plan, numbering(uid), shown, index, uid in changed, out)
            issued = issued or not sent
            if out.gone:
                return None
        return ResponseCode.simple("EXPUNGEISSUED") if issued else None

    async def _indexes(self, view: View, messages: list[MailMessage]) -> dict[int, MessageIndex]:
        """
        These messages' MIME indexes by UID: from the shared cache, else from the store (one
        whose body is gone, expunged meanwhile, is left out).
        """
        cache = self.shared.indexes
        out: dict[int, MessageIndex] = {}
        missing = []
        for message in messages:
            index = cache.get(message.message_id)
            if index is None:
                missing.append(message)
            else:
                out[message.uid] = index
        if missing:
            kept = await self.shared.mailboxes.mime_indexes(
                self.user, view.name, [m.uid for m in missing]
            )
            for message in missing:
                try:
                    index = await self._index(message, kept.get(message.uid))
                except NoSuchEntry:
                    continue
                cache.put(message.message_id, index)
                out[message.uid] = index
        return out

    async def _index(self, message: MailMessage, data: bytes | None) -> MessageIndex:
        """The message's MIME index: the one kept at delivery, else made now from its body."""
        if data is not None:
            try:
                return index_from_json(data)
            except IndexFormatError:
                self.log.warn("re-indexing {id}: kept index unusable", id=message.message_id)
        return await self.shared.index_stored(message.message_id, message.size)

    async def _fetch_one(
        self,
        plan: FetchPlan,
        number: int,
        message: MailMessage,
        index: MessageIndex | None,
        flags_changed: bool,
        out: Output,
    ) -> bool:
        """One message's FETCH response; False if its body vanished before anything was sent."""
        chunks: dict[tuple[int, int], bytes] = {}
        if not plan.needs_body:  # flags, envelope, structure: nothing read, nothing streamed
            for _ in self._write_parts(plan, number, message, index, flags_changed, chunks, out):
                pass  # no body: nothing to stream
            return True
        pins = self.shared.pins
        pins.pin(message.message_id)  # a body being streamed is not deleted under the literal
        try:
            for part in body_ranges(plan, message, index):
                if not part.streamed and (part.offset, part.length) not in chunks:
                    try:
                        chunks[
                            (part.offset, part.length)
                        ] = await self.shared.messages.read_body_range(
                            message.message_id, part.offset, part.length
                        )
                    except NoSuchEntry:
                        return False  # expunged meanwhile: nothing of it was written
            for piece in self._write_parts(plan, number, message, index, flags_changed, chunks,
                                           out):  # fmt: skip
                await self._stream(message.message_id, piece, out)
                if out.gone:
                    break
            return True
        finally:
            pins.unpin(message.message_id)

    @staticmethod
    def _write_parts(
        plan: FetchPlan,
        number: int,
        message: MailMessage,
        index: MessageIndex | None,
        flags_changed: bool,
        chunks: dict[tuple[int, int], bytes],
        out: Output,
    ) -> Iterator[Streamed]:
        """
        Write the FETCH response's bytes as they come; yield each large section, to be streamed
        before the writing goes on.
        """
        result = build_fetch(
            plan, message, index, lambda offset, length: chunks[(offset, length)],
            flags_changed=flags_changed,
        )  # fmt: skip
        for piece in fetch_response_parts(number, result.items):
            if isinstance(piece, bytes):
                out.write(piece)
            else:
                yield piece

    async def _stream(self, message_id: str, piece: Streamed, out: Output) -> None:
        """Copy a large body section from the store to the client, one bounded read at a time."""
        source = piece.source
        assert isinstance(source, ByteRange)
        offset, left = source.offset, source.length
        # The transport holds us back when its buffer is full: a slow client never makes us
        # hold more than a chunk or two of a large body in memory.
        out.begin_stream()
        try:
            while left > 0 and not out.gone:
                await out.ready()
                if out.gone:
                    break
                try:
                    data = await self.shared.messages.read_body_range(
                        message_id, offset, min(left, STREAM_CHUNK)
                    )
                except NoSuchEntry:
                    data = b""
                if not data:
                    raise OutputBroken(f"message {message_id} ended {left} octets early")
                out.write(literal_safe(data))
                offset += len(data)
                left -= len(data)
        finally:
            out.end_stream()
