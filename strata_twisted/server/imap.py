# -*- test-case-name: tests.test_server_imap -*-
"""
The IMAP server: Twisted transports wired to the sans-IO engine, the credential and mailbox stores.

A thin adapter (CONVENTIONS §1).  ``dataReceived`` feeds L{IMAPServerEngine}; each event that needs
policy or mailbox data is answered here, asynchronously, while reads are paused; the engine writes
every reply, so pipelined commands are answered strictly in order.  It also owns what only a
transport can do: the idle timeout on the injected clock, STARTTLS, and writing large body
sections from the store in bounded reads.

Login (issue 4, DESIGN "IMAP"): the L{Authenticator} decides (core/login.py): the address is
canonicalised; a guesser's attempts wait longer and longer before their password is checked (never
refused); an unknown user costs a hash check like a known one's and gets the same answer as a
wrong password; verification runs in a thread pool, never on the reactor thread, and a
L{VerificationCache} spares Roundcube's login-per-request a hash run.  Only after the password is
right does the client learn that the domain's portal is closed (C{NO [UNAVAILABLE]} with the
portal's sentence): a stranger learns nothing about outages.  The end user's address that a
trusted client (the webmail) names in ID before login goes with the login (issue 11).

This first version serves LOGIN/AUTHENTICATE, LIST/LSUB, SELECT/EXAMINE, [UID] FETCH, NOOP, CHECK,
CLOSE/UNSELECT and LOGOUT; every other mailbox command answers C{NO [CANNOT]}.
"""

from __future__ import annotations

import bisect
import io
import re
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, BinaryIO, Final, Generic, Literal, TypeVar, cast

from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorFromThreads,
    IReactorThreads,
    IReactorTime,
    ITLSTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from strata_twisted.core.credentials import VerificationCache
from strata_twisted.core.imap_fetch import (
    ByteRange,
    FetchPlan,
    body_ranges,
    build_fetch,
    flag_atoms,
    literal_safe,
    plan_fetch,
)
from strata_twisted.core.imap_search import Candidate, Content, Need, plan_sort, search, sort
from strata_twisted.core.imap_search import Mailbox as SearchMailbox
from strata_twisted.core.imap_search import plan as search_plan
from strata_twisted.core.intake import new_queue_id
from strata_twisted.core.login import Authenticator, PortalCheck, delay_note, networks, where
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.errors import StrataError
from strata_twisted.executor import Executor
from strata_twisted.interfaces import (
    ICredentialStore,
    IMailboxStore,
    IMessageStore,
    IMessageWriter,
)
from strata_twisted.model import (
    Envelope,
    FlagMode,
    IncomingMessage,
    MailboxError,
    MailboxInfo,
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
    list_response,
    search_response,
    sort_response,
    status_data_response,
    status_response,
)
from strata_twisted.proto.imap_server import (
    NEED_DATA,
    AppendAborted,
    AppendData,
    AppendEnd,
    AppendStart,
    BackendCommand,
    Close,
    IdleEnded,
    IdleStarted,
    IMAPServerEngine,
    LoginRequest,
    SelectedMailbox,
    SelectMailbox,
    ServerLimits,
    StartTLS,
    mentions_modseq,
)
from strata_twisted.proto.mime import (
    IndexFormatError,
    MessageIndex,
    index_from_json,
    index_message,
    index_to_json,
)
from strata_twisted.server._transport import ConnectionLimits, Deadline, Refuse, set_no_delay

__all__ = ["IMAPFactory", "IMAPProtocol", "PoolExecutor", "PortalCheck"]

T = TypeVar("T")


STREAM_CHUNK: Final = 256 * 1024
"""A streamed body section is read from the store and written in pieces of at most this size."""

SYSTEM_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SEEN: Final = "\\Seen"
DELIMITER: Final = "/"

_TEMPORARY: Final = "Temporary server failure, try again later"
_NOT_YET: Final = "not implemented yet"


def _host_of(address: IAddress | None) -> str:
    return str(getattr(address, "host", "") or "unknown")


class PoolExecutor:
    """
    An L{Executor} over a small L{ThreadPool} of its own: how the factory verifies passwords
    (CPU-heavy by design) without blocking the reactor thread.
    """

    def __init__(
        self, reactor: IReactorThreads, threads: int = 2, name: str = "strata-imap-auth"
    ) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=name)

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, f)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()


# -- LIST -----------------------------------------------------------------------------------------


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """
    RFC 3501 §6.3.8: the reference and the pattern together name the mailboxes; ``*`` matches
    anything, ``%`` anything but the delimiter.  INBOX matches case-insensitively.
    """
    full = reference + pattern if not pattern.startswith(DELIMITER) else pattern
    out = []
    for c in full:
        if c == "*":
            out.append(".*")
        elif c == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(c))
    regex = "".join(out)
    if full[:5].upper() == "INBOX":
        regex = "(?i:" + "".join(out[:5]) + ")" + "".join(out[5:])
    return re.compile(regex + r"\Z", re.DOTALL)


def _attributes(
    mailbox: MailboxInfo, names: set[str], *, subscribed: bool, special_use: bool = True
) -> list[str]:
    """RFC 5258 §3.5 child info, RFC 6154 special use, and \\Subscribed when asked for."""
    prefix = mailbox.name + DELIMITER
    children = any(name.startswith(prefix) for name in names)
    attributes = ["\\HasChildren" if children else "\\HasNoChildren"]
    if subscribed and mailbox.subscribed:
        attributes.append("\\Subscribed")
    if special_use and mailbox.special_use:
        attributes.append(mailbox.special_use)
    return attributes


# -- the selected mailbox -------------------------------------------------------------------------


@dataclass
class _Selected:
    """
    What the session has told its client about the selected mailbox: the UIDs by sequence number,
    each message's flags and modseq, and the HIGHESTMODSEQ it last caught up with.  Updates from
    other sessions are found by comparing this with the store (L{IMAPProtocol._sync}).
    """

    name: str
    uids: list[int]
    flags: dict[int, frozenset[str]]
    modseqs: dict[int, int]
    read_only: bool
    highest_modseq: int

    @classmethod
    def of(
        cls, name: str, messages: Sequence[MailMessage], read_only: bool, highest_modseq: int
    ) -> _Selected:
        return cls(
            name,
            [m.uid for m in messages],
            {m.uid: m.flags for m in messages},
            {m.uid: m.modseq for m in messages},
            read_only,
            highest_modseq,
        )

    def seq(self, uid: int) -> int:
        """The sequence number of a UID the session knows."""
        return bisect.bisect_left(self.uids, uid) + 1

    def remember(self, message: MailMessage) -> None:
        self.flags[message.uid] = message.flags
        self.modseqs[message.uid] = message.modseq

    def forget(self, uid: int) -> int:
        """Drop an expunged UID; returns the sequence number it had (for ``* n EXPUNGE``)."""
        n = self.seq(uid)
        del self.uids[n - 1]
        self.flags.pop(uid, None)
        self.modseqs.pop(uid, None)
        return n

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


@dataclass
class _Append:
    """An APPEND whose message is arriving: where it goes, and what went wrong, if anything."""

    tag: str
    mailbox: str
    flags: tuple[str, ...]
    internal_date: float
    message_id: str
    writer: IMessageWriter
    size: int
    error: BaseException | None = None


class _WriteGate:
    """
    The push producer a large body is streamed through: the transport pauses it when its write
    buffer is full and resumes it when drained; L{ready} waits for the latter.
    """

    def __init__(self) -> None:
        self._waiting: Deferred[None] | None = None
        self._paused = False

    def ready(self) -> Deferred[None]:
        if not self._paused:
            return succeed(None)
        if self._waiting is None:
            self._waiting = Deferred()
        return self._waiting

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()  # the connection is gone: let the writer see it and stop


def _mailbox_name(name: str) -> str:
    """A mailbox name from a command; a trailing delimiter is dropped (RFC 3501 §6.3.3)."""
    if len(name) > 1 and name.endswith(DELIMITER):
        name = name.rstrip(DELIMITER) or name
    return normalize_mailbox_name(name)


def _search_mailbox(selected: _Selected) -> SearchMailbox:
    return SearchMailbox(
        largest_seq=len(selected.uids), largest_uid=selected.uids[-1] if selected.uids else 0
    )


def _search_modseq(
    key: SearchKey, candidates: Sequence[Candidate], numbers: Sequence[int], *, uid: bool
) -> int | None:
    """RFC 7162 §3.1.5: a search with MODSEQ reports the highest modseq of what it found."""
    if not numbers or not mentions_modseq(key):
        return None
    found = set(numbers)
    return max(c.message.modseq for c in candidates if (c.message.uid if uid else c.seq) in found)


class _Snapshots:
    """
    The last listing of each mailbox, keyed by its HIGHESTMODSEQ.  Every change to a mailbox's
    messages gives it a new modseq (the IMailboxStore contract), so a listing taken at the
    modseq the status shows is exact: the user's other sessions (Roundcube opens one per page,
    a client several) reuse it instead of each reading the whole mailbox again.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], tuple[int, list[MailMessage]]] = OrderedDict()

    def get(self, user: str, mailbox: str, modseq: int) -> list[MailMessage] | None:
        entry = self._entries.get((user, mailbox))
        if entry is None or entry[0] != modseq:
            return None
        self._entries.move_to_end((user, mailbox))
        return entry[1]

    def latest(self, user: str, mailbox: str) -> tuple[int, list[MailMessage]] | None:
        """The listing kept for this mailbox, whatever its modseq."""
        return self._entries.get((user, mailbox))

    def put(self, user: str, mailbox: str, modseq: int, messages: list[MailMessage]) -> None:
        entry = self._entries.get((user, mailbox))
        if entry is not None and entry[0] > modseq:
            return  # a newer listing came back first: keep it
        self._entries[(user, mailbox)] = (modseq, messages)
        self._entries.move_to_end((user, mailbox))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
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

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        if key in self._entries or weight > max(1, self._budget // 16):
            return
        self._entries[key] = value
        self._weight += weight
        while self._weight > self._budget:
            _, dropped = self._entries.popitem(last=False)
            self._weight -= self._weigh(dropped)


HEADER_BATCH: Final = 64 * 1024
"""Header blocks up to this long are read for many messages in one storage call."""


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


class _Refused(Exception):
    """Answer the waiting command with this status, response code and text."""

    def __init__(self, status: Literal["NO", "BAD"], text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


# -- the protocol ---------------------------------------------------------------------------------


class IMAPProtocol(Protocol):
    """One IMAP session."""

    log = Logger()

    def __init__(self, factory: IMAPFactory, *, tls_active: bool = False) -> None:
        self.factory = factory
        self.engine: IMAPServerEngine | None = None
        self.user: str | None = None  # the canonical address, once logged in
        self.client = ""
        self._tls_active = tls_active
        self._selected: _Selected | None = None
        self._append: _Append | None = None
        self._idling = False
        self._woken = False  # woken while busy: look again as soon as the work in flight is done
        self._idle_poll: IDelayedCall | None = None
        self._busy = False  # an event is being answered asynchronously
        self._in_process = False
        self._gone = False
        self._paused = False
        self._gate = _WriteGate()
        self._deadline = Deadline(factory.clock, self._timed_out)

    @property
    def _transport(self) -> Any:
        """The connected TCP (or TLS) transport: ITransport, IPushProducer and ITLSTransport."""
        assert self.transport is not None
        return self.transport

    @property
    def selected(self) -> str | None:
        """The name of the selected mailbox, if any."""
        return self._selected.name if self._selected is not None else None

    # -- Twisted --------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self.client = _host_of(self._transport.getPeer())
        self.engine = IMAPServerEngine(
            self.factory.limits,
            tls_active=self._tls_active,
            tls_available=self.factory.tls is not None,
            trusted=self.factory.is_trusted(self.client),
        )
        self.engine.greeting()
        self._flush()
        self._arm_timer()

    def dataReceived(self, data: bytes) -> None:
        assert self.engine is not None
        self.engine.receive_data(data)
        self._arm_timer()
        self._process()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        self._deadline.cancel()
        self._stop_idle_poll()
        self._gate.stopProducing()
        append, self._append = self._append, None
        if append is not None:
            append.writer.abort().addErrback(lambda f: None)
        if self.engine is not None:
            self.engine.receive_data(b"")
        self.factory.connection_closed(self)

    # -- engine events ---------------------------------------------------------------------------

    def _process(self) -> None:
        engine = self.engine
        assert engine is not None
        if self._in_process:
            return
        self._in_process = True
        try:
            while not self._busy and not self._gone:
                event = engine.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Close):
                    self._flush()
                    self._close()
                    return
                if isinstance(event, LoginRequest):
                    self._start(self._login(event), event.tag, login=True)
                elif isinstance(event, SelectMailbox):
                    self._selected = None
                    self._start(self._select(event), event.tag)
                elif isinstance(event, BackendCommand):
                    self._start(self._command(event), event.command.tag)
                elif isinstance(event, AppendStart):
                    self._append_start(event)
                elif isinstance(event, AppendData):
                    self._append_data(event)
                elif isinstance(event, AppendEnd):
                    self._start(self._append_end(event), event.tag)
                elif isinstance(event, AppendAborted):
                    self._append_aborted()
                elif isinstance(event, IdleStarted):
                    self._idling = True
                    self._idle_check()
                elif isinstance(event, IdleEnded):
                    self._idling = False
                    self._stop_idle_poll()
                elif isinstance(event, StartTLS):
                    self._start_tls()
        finally:
            self._in_process = False
        self._flush()
        if engine.closed and not self._busy:
            self._close()

    def _start(self, work: Coroutine[Any, Any, None], tag: str, *, login: bool = False) -> None:
        """Answer an event asynchronously: pause reads until the engine has its answer."""
        self._busy = True
        self._pause()
        d = Deferred.fromCoroutine(work)
        d.addErrback(self._failed, tag, login)
        d.addBoth(self._done)

    def _failed(self, failure: Failure, tag: str, login: bool) -> None:
        engine = self.engine
        assert engine is not None
        if failure.check(_Refused):
            refused = failure.value
            assert isinstance(refused, _Refused)
            code = ResponseCode.simple(refused.code) if refused.code else None
            engine.complete(tag, refused.status, refused.text, code)
            return
        if failure.check(MailboxError):
            error = failure.value
            assert isinstance(error, MailboxError)
            if login:
                engine.login_result(False, "UNAVAILABLE", _TEMPORARY)
            else:
                engine.complete(tag, "NO", str(error), ResponseCode.simple(error.imap_code))
            return
        if failure.check(StrataError):
            self.log.warn("IMAP {tag} failed: {error}", tag=tag, error=failure.value)
        else:
            self.log.failure("IMAP command {tag} failed", failure, tag=tag)
        if login:
            engine.login_result(False, "UNAVAILABLE", _TEMPORARY)
        else:
            engine.complete(tag, "NO", _TEMPORARY, ResponseCode.simple("UNAVAILABLE"))

    def _done(self, result: object) -> None:
        if isinstance(result, Failure):  # answering the failure failed too: our bug
            self.log.failure("IMAP answer failed", result)
        self._busy = False
        self._resume()
        if self._gone:
            return
        self._arm_timer()
        self._process()
        if self._idling:
            if self._woken:
                self._woken = False
                self._idle_check()
            else:
                self._schedule_idle_poll()

    # -- LOGIN and AUTHENTICATE ------------------------------------------------------------------

    async def _login(self, event: LoginRequest) -> None:
        engine = self.engine
        assert engine is not None
        factory = self.factory
        # The engine took an ID x-originating-ip only from a trusted client, before login.
        result = await factory.authenticator.login(
            self.client, event.user, event.password, forwarded=event.origin
        )
        if result.refusal == "failed":
            # RFC 5530: one answer for an unknown user and a wrong password.
            engine.login_result(False, "AUTHENTICATIONFAILED", result.text)
            return
        if result.address is None:  # the portal is closed: the password was right
            engine.login_result(False, "UNAVAILABLE", result.text)
            return
        await factory.mailboxes.ensure_user(result.address)
        self.user = result.address
        self.log.info(
            "IMAP login {user} from {where}{after}",
            user=result.address, client=self.client, origin=event.origin,
            where=where(self.client, event.origin), after=delay_note(result.waited),
        )  # fmt: skip
        engine.login_result(True)

    # -- SELECT and EXAMINE ----------------------------------------------------------------------

    async def _select(self, event: SelectMailbox) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        name = normalize_mailbox_name(event.mailbox)
        info, messages = await self.factory.snapshot(self.user, name)
        keywords = sorted({f for m in messages for f in m.flags if not f.startswith("\\")})
        first_unseen = next((n for n, m in enumerate(messages, 1) if SEEN not in m.flags), None)
        self._selected = _Selected.of(name, messages, event.read_only, info.highest_modseq)
        engine.select_result(
            SelectedMailbox(
                flags=SYSTEM_FLAGS + tuple(keywords),
                exists=len(messages),
                uidvalidity=info.uidvalidity,
                uidnext=info.uidnext,
                permanent_flags=SYSTEM_FLAGS + tuple(keywords) + ("\\*",),
                first_unseen=first_unseen,
                highest_modseq=info.highest_modseq,
            )
        )

    # -- updates from other sessions (RFC 3501 §7: unilateral EXISTS, EXPUNGE, FETCH FLAGS) ------

    async def _sync(self, *, expunges: bool = True) -> None:
        """
        Tell the client what changed in its selected mailbox since it last heard: messages
        expunged (only where RFC 3501 §7.4.1 allows EXPUNGE: not during FETCH, STORE or SEARCH
        by sequence number), flags changed and new messages.  Skipped at the cost of reading one
        row when the mailbox's HIGHESTMODSEQ says nothing changed.
        """
        selected, engine = self._selected, self.engine
        if selected is None or self.user is None or engine is None:
            return
        try:
            # Every change (flags, new mail, expunge) moves HIGHESTMODSEQ: one row tells.
            info = await self.factory.mailbox(self.user, selected.name)
            if info.highest_modseq == selected.highest_modseq:
                return
            info, messages = await self.factory.snapshot(self.user, selected.name)
        except MailboxError:  # deleted or renamed by another session: nothing more to say
            return
        if self._selected is not selected or self._gone:
            return
        current = {m.uid: m for m in messages}
        lines: list[bytes] = []
        complete = True
        gone = [uid for uid in selected.uids if uid not in current]
        if gone and expunges:
            for uid in reversed(gone):  # from the highest, so no number shifts under the next
                lines.append(expunge_response(selected.forget(uid)))
        elif gone:
            complete = False
        for n, uid in enumerate(selected.uids, 1):
            message = current.get(uid)
            if message is not None and message.flags != selected.flags[uid]:
                selected.remember(message)
                lines.append(self._flags_line(n, message, with_uid=True))
        known = selected.uids[-1] if selected.uids else 0
        new = [m for m in messages if m.uid > known]
        if new:
            for message in new:
                selected.uids.append(message.uid)
                selected.remember(message)
            lines.append(exists_response(len(selected.uids)))
        if complete:
            selected.highest_modseq = info.highest_modseq
        engine.respond(lines)

    def _flags_line(self, number: int, message: MailMessage, *, with_uid: bool) -> bytes:
        """``* n FETCH (UID u FLAGS (...) MODSEQ (m))``: a flag change the client must hear of."""
        assert self.engine is not None
        items: list[tuple[str, Value]] = []
        if with_uid:
            items.append(("UID", message.uid))
        items.append(("FLAGS", flag_atoms(message.flags)))
        if self.engine.condstore_enabled:
            items.append(("MODSEQ", [message.modseq]))
        return fetch_response(number, items)

    def _notify(self, mailbox: str) -> None:
        """Our change to ``mailbox``: wake the user's other sessions idling on it."""
        if self.user is not None:
            self.factory.mailbox_changed(self.user, mailbox, self)

    # -- IDLE ------------------------------------------------------------------------------------

    def _idle_check(self) -> None:
        """While idling, look for updates now (or as soon as the session is free)."""
        self._stop_idle_poll()
        if not self._idling or self._gone or self._selected is None:
            return
        if self._busy:
            return  # _done schedules the next look
        self._start(self._idle_sync(), "*")

    async def _idle_sync(self) -> None:
        try:
            await self._sync()
        except StrataError as e:  # the store is unwell: nothing to tell; the next poll looks again
            self.log.warn("IMAP IDLE update for {client} failed: {error}", client=self.client,
                          error=e)  # fmt: skip

    def _schedule_idle_poll(self) -> None:
        if self._idle_poll is None and self._selected is not None and not self._gone:
            self._idle_poll = self.factory.clock.callLater(
                self.factory.idle_poll_interval, self._poll_idle
            )

    def _poll_idle(self) -> None:
        self._idle_poll = None
        self._idle_check()

    def _stop_idle_poll(self) -> None:
        if self._idle_poll is not None and self._idle_poll.active():
            self._idle_poll.cancel()
        self._idle_poll = None

    def wake(self) -> None:
        """Another session changed our selected mailbox: report it now if we are idling."""
        if self._idling:
            if self._busy:
                self._woken = True
            else:
                self._idle_check()

    # -- the other commands ----------------------------------------------------------------------

    def _require_selected(self, *, writable: bool = False) -> _Selected:
        selected = self._selected
        if selected is None:
            raise _Refused("BAD", "No mailbox selected")
        if writable and selected.read_only:
            raise _Refused("NO", "Mailbox is read-only (EXAMINE)", "READ-ONLY")
        return selected

    async def _command(self, event: BackendCommand) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        command = event.command
        tag, name = command.tag, command.name
        uid = bool(getattr(command, "uid", False))
        if isinstance(command, Expunge):
            uid = command.uid_set is not None
        code: ResponseCode | None = None
        # Updates from other sessions follow every command in the selected state but FETCH,
        # SEARCH and SORT by sequence number (cheap to skip, and RFC 3501 §7.4.1 forbids their
        # EXPUNGEs); after STORE and COPY by sequence number, without EXPUNGEs.
        sync: bool | None = True
        if isinstance(command, ListMailboxes):
            await self._list(command)
        elif isinstance(command, Lsub):
            await self._lsub(command)
        elif isinstance(command, Fetch):
            await self._fetch(command)
            sync = True if uid else None
        elif isinstance(command, Store):
            code = await self._store(command)
            sync = uid
        elif isinstance(command, Copy):
            code = await self._copy(command)
            sync = uid or command.name == "MOVE"
        elif isinstance(command, Search):
            await self._search(command)
            sync = True if uid else None
        elif isinstance(command, Sort):
            await self._sort(command)
            sync = True if uid else None
        elif isinstance(command, Expunge):
            await self._expunge(command)
        elif isinstance(command, Status):
            await self._status(command)
        elif isinstance(command, MailboxCommand):
            await self._mailbox_command(command)
        elif isinstance(command, Rename):
            old, new = _mailbox_name(command.mailbox), _mailbox_name(command.new_name)
            await self.factory.mailboxes.rename_mailbox(self.user, old, new)
            selected = self._selected
            # The selected mailbox (or one of its superiors) moved: follow it.  INBOX stays.
            if selected is not None and old != "INBOX":
                if selected.name == old:
                    selected.name = new
                elif selected.name.startswith(old + DELIMITER):
                    selected.name = new + selected.name[len(old) :]
        elif isinstance(command, Simple) and name in ("NOOP", "CHECK"):
            pass
        elif isinstance(command, Simple) and name == "UNSELECT":
            self._selected = None
        elif isinstance(command, Simple) and name == "CLOSE":
            selected, self._selected = self._selected, None
            # RFC 3501 §6.4.2: CLOSE expunges \Deleted messages silently, unless read-only.
            if selected is not None and not selected.read_only:
                removed = await self.factory.mailboxes.expunge(self.user, selected.name)
                if removed:
                    self._notify(selected.name)
                    self._release([m.message_id for m in removed])
        else:
            raise _Refused("NO", f"{name} is not supported", "CANNOT")
        if sync is not None and self._selected is not None:
            await self._sync(expunges=sync)
        engine.complete(tag, "OK", f"{'UID ' if uid else ''}{name} completed", code)

    async def _list(self, command: ListMailboxes) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        if command.patterns == ("",):
            # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
            engine.respond([list_response(["\\Noselect"], DELIMITER, "")])
            return
        mailboxes = await self.factory.mailboxes.list_mailboxes(self.user)
        names = {m.name for m in mailboxes}
        patterns = [_pattern(command.reference, p) for p in command.patterns]
        only_subscribed = "SUBSCRIBED" in command.selection
        only_special = "SPECIAL-USE" in command.selection
        show_subscribed = only_subscribed or "SUBSCRIBED" in command.return_options
        # RFC 6154 §5.1: with LIST-EXTENDED, RETURN (SPECIAL-USE) asks for the attributes; a basic
        # LIST gets them anyway (Roundcube reads them from a plain LIST).
        lines: list[bytes] = []
        for mailbox in mailboxes:
            if not any(p.match(mailbox.name) for p in patterns):
                continue
            if only_subscribed and not mailbox.subscribed:
                continue
            if only_special and not mailbox.special_use:
                continue
            attributes = _attributes(mailbox, names, subscribed=show_subscribed)
            lines.append(list_response(attributes, DELIMITER, mailbox.name))
            if command.status_items is not None:
                status = await self.factory.mailboxes.mailbox_status(self.user, mailbox.name)
                items = _status_items(asdict(status), command.status_items)
                lines.append(status_data_response(mailbox.name, items))
        engine.respond(lines)

    async def _lsub(self, command: Lsub) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        mailboxes = await self.factory.mailboxes.list_mailboxes(self.user)
        names = {m.name for m in mailboxes}
        pattern = _pattern(command.reference, command.pattern)
        engine.respond(
            list_response(
                _attributes(m, names, subscribed=False), DELIMITER, m.name, command="LSUB"
            )
            for m in mailboxes
            if m.subscribed and pattern.match(m.name)
        )

    # -- STATUS, CREATE, DELETE, SUBSCRIBE -------------------------------------------------------

    async def _status(self, command: Status) -> None:
        assert self.engine is not None and self.user is not None
        name = _mailbox_name(command.mailbox)
        status = await self.factory.mailboxes.mailbox_status(self.user, name)
        items = _status_items(asdict(status), command.items)
        self.engine.respond([status_data_response(name, items)])

    async def _mailbox_command(self, command: MailboxCommand) -> None:
        assert self.user is not None
        mailboxes = self.factory.mailboxes
        name = _mailbox_name(command.mailbox)
        if command.name == "CREATE":
            await mailboxes.create_mailbox(self.user, name)
        elif command.name == "DELETE":
            if self._selected is not None and self._selected.name == name:
                # The session would be left in a mailbox that is gone.
                raise _Refused("NO", "Cannot delete the selected mailbox", "INUSE")
            self._release(await mailboxes.delete_mailbox(self.user, name))
        elif command.name == "SUBSCRIBE":
            await mailboxes.subscribe(self.user, name)
        elif command.name == "UNSUBSCRIBE":
            await mailboxes.unsubscribe(self.user, name)
        else:
            raise _Refused("NO", f"{command.name} is not supported", "CANNOT")

    # -- STORE -----------------------------------------------------------------------------------

    async def _store(self, command: Store) -> ResponseCode | None:
        """RFC 3501 §6.4.6, RFC 7162 §3.1.3 (UNCHANGEDSINCE)."""
        engine = self.engine
        assert engine is not None and self.user is not None
        selected = self._require_selected(writable=True)
        uids = selected.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise _Refused("BAD", "Invalid message sequence number")
        if any(f.lower() == "\\recent" for f in command.flags):
            raise _Refused("BAD", "\\Recent cannot be stored")
        modes: dict[str, FlagMode] = {"+": "add", "-": "remove", "": "set"}
        mode = modes[command.mode]
        if not uids:
            return None
        update = await self.factory.mailboxes.store_flags(
            self.user, selected.name, uids, mode, command.flags, command.unchanged_since
        )
        changed = set(update.changed)
        lines = []
        for message in update.messages:
            if message.uid not in selected.flags:
                continue  # a message this session has not been told of yet
            selected.remember(message)
            # RFC 3501: FETCH FLAGS for each message unless .SILENT; RFC 7162 §3.1.3: with
            # CONDSTORE, the MODSEQ of every changed message even when .SILENT.
            if not command.silent or (engine.condstore_enabled and message.uid in changed):
                with_uid = command.uid or engine.condstore_enabled  # RFC 7162 §3.1
                lines.append(
                    self._flags_line(selected.seq(message.uid), message, with_uid=with_uid)
                )
        engine.respond(lines)
        if changed:
            self._notify(selected.name)
        if update.failed:
            failed = update.failed if command.uid else [selected.seq(u) for u in update.failed]
            return ResponseCode.modified(failed)
        return None

    # -- COPY and MOVE ---------------------------------------------------------------------------

    async def _copy(self, command: Copy) -> ResponseCode | None:
        """RFC 3501 §6.4.7, RFC 6851 (MOVE), RFC 4315 (COPYUID)."""
        engine = self.engine
        assert engine is not None and self.user is not None
        move = command.name == "MOVE"
        selected = self._require_selected(writable=move)
        uids = selected.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise _Refused("BAD", "Invalid message sequence number")
        target = _mailbox_name(command.mailbox)
        mailboxes = self.factory.mailboxes
        try:
            if move:
                result = await mailboxes.move_messages(self.user, selected.name, uids, target)
            else:
                result = await mailboxes.copy_messages(self.user, selected.name, uids, target)
        except NoSuchMailbox as e:
            if e.name != target:
                raise
            # RFC 3501 §6.4.7: the client may CREATE the target and try again.
            raise _Refused("NO", f"Mailbox does not exist: {target}", "TRYCREATE") from None
        if result.pairs:
            self._notify(target)
        code = None
        if result.pairs:
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
            if uid in selected.flags:
                lines.append(expunge_response(selected.forget(uid)))
        engine.respond(lines)
        if result.pairs:
            self._notify(selected.name)
        return None

    # -- EXPUNGE ---------------------------------------------------------------------------------

    async def _expunge(self, command: Expunge) -> None:
        """RFC 3501 §6.4.3; UID EXPUNGE, RFC 4315 §2.1."""
        engine = self.engine
        assert engine is not None and self.user is not None
        selected = self._require_selected(writable=True)
        uids: list[int] | None = None
        if command.uid_set is not None:
            uids = selected.resolve(command.uid_set, uid=True)
            if not uids:
                return
        # else RFC 3501 §6.4.3: every message flagged \Deleted, as CLOSE; EXPUNGE responses
        # (below) for those this session was told of.
        removed = await self.factory.mailboxes.expunge(self.user, selected.name, uids)
        lines = []
        for message in sorted(removed, key=lambda m: m.uid, reverse=True):
            if message.uid in selected.flags:
                lines.append(expunge_response(selected.forget(message.uid)))
        engine.respond(lines)
        if removed:
            self._notify(selected.name)
            self._release([m.message_id for m in removed])

    def _release(self, message_ids: Sequence[str]) -> None:
        """
        Delete the bodies of messages that left a mailbox, if nobody needs them any more: no
        other mailbox holds them and the relay queue is done with them (the store checks both
        in the same transaction).  In the background: the client's answer does not wait.
        """
        if not message_ids:
            return
        d = self.factory.messages.delete_messages(message_ids)
        d.addErrback(lambda f: self.log.failure("deleting expunged bodies failed", f))

    # -- SEARCH and SORT -------------------------------------------------------------------------

    async def _candidates(self, selected: _Selected, need: Need) -> list[Candidate]:
        """The session's messages, each with what the search needs loaded (decision 9)."""
        assert self.user is not None
        store = self.factory.messages
        _, messages = await self.factory.snapshot(self.user, selected.name)
        current = {m.uid: m for m in messages}
        # (sequence number, message) for what the session knows and the store still has.
        known = [(n, current[uid]) for n, uid in enumerate(selected.uids, 1) if uid in current]
        headers: dict[int, Content] = {}
        if need is Need.HEADER and known:
            headers = await self._headers(selected, [message for _, message in known])
        out = []
        for seq, message in known:
            if need is Need.BODY:
                body = await store.read_body(message.message_id)
                out.append(Candidate(seq, message, Content(raw=body)))
            elif need is Need.HEADER:
                out.append(Candidate(seq, message, headers[message.uid]))
            else:
                out.append(Candidate(seq, message))
        return out

    async def _headers(
        self, selected: _Selected, messages: list[MailMessage]
    ) -> dict[int, Content]:
        """
        The header blocks of these messages, as search L{Content}: from the factory's cache
        (which also keeps what searches decoded from them), else read in one storage call for
        all those whose header is short (the index says how long), one each otherwise.
        """
        assert self.user is not None
        cache, store = self.factory.headers, self.factory.messages
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
        indexes = await self._indexes(selected, missing)
        lengths = {m.uid: indexes[m.uid].root.header_length for m in missing}
        blocks: dict[int, bytes] = {}
        short = [m for m in missing if lengths[m.uid] <= HEADER_BATCH]
        if short:
            longest = max(lengths[m.uid] for m in short)
            heads = await store.read_heads([m.message_id for m in short], longest)
            by_id = {head.message.id: head.head for head in heads}
            for message in short:
                blocks[message.uid] = by_id.get(message.message_id, b"")[: lengths[message.uid]]
        for message in missing:
            if message.uid not in blocks:
                length = lengths[message.uid]
                blocks[message.uid] = await store.read_body_range(message.message_id, 0, length)
        for message in missing:
            content = Content(header=blocks[message.uid])
            cache.put(message.message_id, content)
            out[message.uid] = content
        return out

    async def _search(self, command: Search) -> None:
        """RFC 3501 §6.4.4, ESEARCH (RFC 4731), CONDSTORE's MODSEQ (RFC 7162 §3.1.5)."""
        engine = self.engine
        assert engine is not None
        selected = self._require_selected()
        candidates = await self._candidates(selected, search_plan(command.key))
        mailbox = _search_mailbox(selected)
        numbers = search(command.key, candidates, mailbox, uid=command.uid)
        modseq = _search_modseq(command.key, candidates, numbers, uid=command.uid)
        if command.return_options is None:
            engine.respond([search_response(numbers, modseq)])
            return
        wanted = {o.upper() for o in command.return_options} or {"ALL"}
        engine.respond(
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

    async def _sort(self, command: Sort) -> None:
        """RFC 5256 SORT."""
        engine = self.engine
        assert engine is not None
        selected = self._require_selected()
        need = max(search_plan(command.key), plan_sort(command.criteria))
        candidates = await self._candidates(selected, need)
        numbers = sort(command.criteria, command.key, candidates, _search_mailbox(selected),
                       uid=command.uid)  # fmt: skip
        engine.respond([sort_response(numbers)])

    # -- APPEND ----------------------------------------------------------------------------------

    def _append_start(self, event: AppendStart) -> None:
        """The message is coming: write it to the store as it arrives (never whole in memory)."""
        assert self.user is not None
        now = self.factory.clock.seconds()
        date = event.internal_date.timestamp() if event.internal_date is not None else now
        message_id = new_queue_id(self.factory.clock)
        writer = self.factory.messages.begin(message_id)
        self._append = _Append(event.tag, event.mailbox, event.flags, date, message_id, writer,
                               event.size)  # fmt: skip

    def _append_data(self, event: AppendData) -> None:
        append = self._append
        if append is None or append.error is not None:
            return
        self._busy = True
        self._pause()
        d = append.writer.write(event.data)

        def failed(failure: Failure) -> None:
            append.error = failure.value

        d.addErrback(failed)
        d.addBoth(self._done)

    def _append_aborted(self) -> None:
        append, self._append = self._append, None
        if append is not None:
            append.writer.abort().addErrback(lambda f: None)

    async def _append_end(self, event: AppendEnd) -> None:
        """RFC 3501 §6.3.11, APPENDUID (RFC 4315 §3)."""
        engine = self.engine
        append, self._append = self._append, None
        assert engine is not None and self.user is not None and append is not None
        mailboxes = self.factory.mailboxes
        try:
            name = _mailbox_name(append.mailbox)
            if append.error is not None:
                raise append.error
            if any(f.lower() == "\\recent" for f in append.flags):
                raise _Refused("BAD", "\\Recent cannot be stored")
            normalize_flags(append.flags)  # InvalidFlag (NO [CANNOT]) before anything is committed
            if await mailboxes.get_mailbox(self.user, name) is None:
                raise _Refused("NO", f"Mailbox does not exist: {name}", "TRYCREATE")
        except BaseException:
            await append.writer.abort()
            raise
        incoming = IncomingMessage(
            Envelope("", (self.user,)), self.factory.clock.seconds(), deliveries=()
        )
        stored = await append.writer.commit(incoming)
        index = await self.factory.index_stored(stored.id, stored.size)
        message = await mailboxes.add_message(self.user, name, stored.id, append.internal_date,
                                              append.flags, index_to_json(index))  # fmt: skip
        status = await mailboxes.mailbox_status(self.user, name)
        self._notify(name)
        if self._selected is not None:
            await self._sync()
        engine.complete(event.tag, "OK", "APPEND completed",
                        ResponseCode.append_uid(status.uidvalidity, message.uid))  # fmt: skip

    # -- FETCH -----------------------------------------------------------------------------------

    async def _fetch(self, command: Fetch) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        selected = self._require_selected()
        uids = selected.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise _Refused("BAD", "Invalid message sequence number")
        # RFC 7162 §3.1: once CONDSTORE is enabled, every untagged FETCH carries UID and MODSEQ.
        condstore = engine.condstore_enabled
        plan = plan_fetch(command.attributes, uid=command.uid or condstore, condstore=condstore)
        if selected.read_only:
            plan = replace(plan, sets_seen=False)  # RFC 3501 §6.3.2: EXAMINE changes nothing
        mailboxes = self.factory.mailboxes
        wanted = set(uids)
        if command.changed_since is None and len(uids) * 4 >= len(selected.uids):
            _, listed = await self.factory.snapshot(self.user, selected.name)
        else:
            # A few messages (a client opening one), or CHANGEDSINCE (RFC 7162 §3.1.4.1: only
            # messages with a greater modseq): only those are read.
            listed = await mailboxes.list_messages(
                self.user, selected.name, command.changed_since, uids=uids
            )
        messages = {m.uid: m for m in listed if m.uid in wanted}
        changed: set[int] = set()
        if plan.sets_seen:
            unseen = [uid for uid in uids if uid in messages and SEEN not in messages[uid].flags]
            if unseen:
                update = await mailboxes.store_flags(self.user, selected.name, unseen, "add",
                                                     [SEEN])  # fmt: skip
                for message in update.messages:
                    messages[message.uid] = message
                    if message.uid in selected.flags:
                        selected.remember(message)
                changed.update(update.changed)
                if update.changed:
                    self._notify(selected.name)
        indexes: dict[int, MessageIndex] = {}
        if plan.needs_index and messages:
            indexes = await self._indexes(selected, list(messages.values()))
        sequence: Callable[[int], int] = selected.seq
        if len(uids) > 32:  # one pass over the mailbox beats a search per message
            sequence = {uid: n for n, uid in enumerate(selected.uids, 1)}.__getitem__
        for uid in uids:
            message = messages.get(uid)
            if message is None:  # expunged by another session since SELECT
                continue
            index = indexes[uid] if plan.needs_index else None
            await self._fetch_one(plan, sequence(uid), message, index, uid in changed)
            if self._gone:
                return

    async def _indexes(
        self, selected: _Selected, messages: list[MailMessage]
    ) -> dict[int, MessageIndex]:
        """These messages' MIME indexes by UID: from the factory's cache, else from the store."""
        assert self.user is not None
        cache = self.factory.indexes
        out: dict[int, MessageIndex] = {}
        missing = []
        for message in messages:
            index = cache.get(message.message_id)
            if index is None:
                missing.append(message)
            else:
                out[message.uid] = index
        if missing:
            kept = await self.factory.mailboxes.mime_indexes(
                self.user, selected.name, [m.uid for m in missing]
            )
            for message in missing:
                index = await self._index(message, kept.get(message.uid))
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
        index: MessageIndex = await self.factory.index_stored(message.message_id, message.size)
        return index

    async def _fetch_one(
        self,
        plan: FetchPlan,
        number: int,
        message: MailMessage,
        index: MessageIndex | None,
        flags_changed: bool,
    ) -> None:
        store = self.factory.messages
        chunks: dict[tuple[int, int], bytes] = {}
        if plan.needs_body:
            for part in body_ranges(plan, message, index):
                if not part.streamed and (part.offset, part.length) not in chunks:
                    chunks[(part.offset, part.length)] = await store.read_body_range(
                        message.message_id, part.offset, part.length
                    )
        result = build_fetch(
            plan, message, index, lambda offset, length: chunks[(offset, length)],
            flags_changed=flags_changed,
        )  # fmt: skip
        for piece in fetch_response_parts(number, result.items):
            if isinstance(piece, bytes):
                self._write(piece)
            else:
                await self._stream(message.message_id, piece)
            if self._gone:
                return

    async def _stream(self, message_id: str, piece: Streamed) -> None:
        """Copy a large body section from the store to the client, one bounded read at a time."""
        source = piece.source
        assert isinstance(source, ByteRange)
        offset, left = source.offset, source.length
        self._flush()
        # The transport pauses the gate when its buffer is full: a slow client never makes us
        # hold more than a chunk or two of a large body in memory.  A new gate per body: a TLS
        # transport wraps each registration anew and would never resume a gate paused before.
        self._gate = _WriteGate()
        self._transport.registerProducer(self._gate, True)
        try:
            while left > 0 and not self._gone:
                await self._gate.ready()
                if self._gone:
                    break
                data = await self.factory.messages.read_body_range(
                    message_id, offset, min(left, STREAM_CHUNK)
                )
                if not data:
                    raise StrataError(f"message {message_id} ended {left} octets early")
                self._write(literal_safe(data))
                offset += len(data)
                left -= len(data)
        finally:
            if not self._gone:
                self._transport.unregisterProducer()

    # -- STARTTLS --------------------------------------------------------------------------------

    def _start_tls(self) -> None:
        assert self.engine is not None and self.factory.tls is not None
        self._flush()
        ITLSTransport(self._transport).startTLS(self.factory.tls)
        self.engine.tls_started()

    # -- plumbing --------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Write straight to the client, after whatever the engine has queued."""
        self._flush()
        if not self._gone:
            self._transport.write(data)

    def _flush(self) -> None:
        if self.engine is not None and not self._gone:
            out = self.engine.data_to_send()
            if out:
                self._transport.write(out)

    def _pause(self) -> None:
        if not self._paused and not self._gone:
            self._paused = True
            self._transport.pauseProducing()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if not self._gone:
                self._transport.resumeProducing()

    def _close(self) -> None:
        self._deadline.cancel()
        if not self._gone:
            self._transport.loseConnection()

    def _arm_timer(self) -> None:
        assert self.engine is not None
        self._deadline.arm(self.engine.idle_timeout)

    def _timed_out(self) -> None:
        if self.engine is None or self._gone:
            return
        if self._busy:  # our own work in flight: it answers, then the timer starts again
            return
        self.log.info("IMAP autologout of {client}", client=self.client)
        self.engine.timeout()
        self._flush()
        self._close()


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


# -- the factory ----------------------------------------------------------------------------------


class IMAPFactory(Factory):
    """
    Builds IMAP sessions; owns the password-verification pool and the verification cache.

    ``trusted_networks``: CIDR networks (besides loopback) where plaintext login is allowed
    without TLS (a Roundcube container's network).  ``portal(domain)``: None when the domain's
    portal is open, else the sentence a closed portal shows.  ``executor``: where passwords are
    verified (default: a L{PoolExecutor} on ``clock``, which must then be a reactor); call
    L{start} and L{stop} around the listener's life.  ``implicit_tls``: the listener is TLS
    already (port 993).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        mailboxes: IMailboxStore,
        credentials: ICredentialStore,
        messages: IMessageStore,
        tls: ssl.CertificateOptions | None,
        *,
        trusted_networks: Iterable[str] = (),
        portal: PortalCheck = lambda domain: None,
        limits: ServerLimits | None = None,
        executor: Executor | None = None,
        cache: VerificationCache | None = None,
        implicit_tls: bool = False,
        connections: ConnectionLimits | None = None,
        throttle: LoginThrottle | None = None,
        idle_poll_interval: float = 2.0,
        share_with: IMAPFactory | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.clock = clock
        self.mailboxes = mailboxes
        self.credentials = credentials
        self.messages = messages
        self.tls = tls
        self.limits = limits if limits is not None else ServerLimits()
        if authenticator is None:
            if executor is None:
                if not IReactorThreads.providedBy(clock):
                    raise TypeError(
                        "without an executor, clock must be a reactor (IReactorThreads)"
                    )
                executor = PoolExecutor(clock)
            authenticator = Authenticator(
                clock, credentials, executor, portal, cache=cache, throttle=throttle,
                trusted_networks=networks(trusted_networks),
            )  # fmt: skip
        self.authenticator = authenticator
        self.executor: Executor = authenticator.executor
        self.implicit_tls = implicit_tls
        self.connections = connections if connections is not None else ConnectionLimits(1000, 50)
        # IDLE looks for changes made elsewhere (intake, another process) this often; changes
        # made by this factory's sessions wake idlers at once (L{mailbox_changed}).
        self.idle_poll_interval = idle_poll_interval
        # Shared with the other listener's factory (share_with), so that a change made over
        # port 993 wakes an idler on port 143 and both use one set of caches.
        # Listings in flight, by (user, mailbox): the modseq each started from, and who waits.
        self._listing: dict[tuple[str, str], tuple[int, list[Deferred[list[MailMessage]]]]] = (
            share_with._listing if share_with is not None else {}
        )
        self._snapshots: _Snapshots = (
            share_with._snapshots if share_with is not None else _Snapshots()
        )
        # Header blocks with what searches decoded from them (32 MiB at most, counting the
        # decoded text as twice the block) and parsed MIME indexes (8,192) of stored messages.
        self.headers: _LRU[str, Content] = (
            share_with.headers
            if share_with is not None
            else _LRU(32 * 1024 * 1024, lambda content: 3 * len(content.header()))
        )
        self.indexes: _LRU[str, MessageIndex] = (
            share_with.indexes if share_with is not None else _LRU(8192)
        )
        self._protocols: dict[IMAPProtocol, str] = (
            share_with._protocols if share_with is not None else {}
        )

    def start(self) -> None:
        self.executor.start()

    def stop(self) -> None:
        self.executor.stop()

    def is_trusted(self, host: str) -> bool:
        return self.authenticator.is_trusted(host)

    @property
    def throttle(self) -> LoginThrottle:
        return self.authenticator.throttle

    @throttle.setter
    def throttle(self, throttle: LoginThrottle) -> None:
        self.authenticator.throttle = throttle

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        host = _host_of(addr)
        refused = self.connections.admit(host)
        if refused is not None:
            self.log.warn("refusing IMAP from {host}: {why}", host=host, why=refused)
            # RFC 3501 §7.1.5: BYE may be the greeting, when the server will not serve.
            return Refuse(f"* BYE {refused[0].upper()}{refused[1:]}\r\n".encode())
        protocol = IMAPProtocol(self, tls_active=self.implicit_tls)
        self._protocols[protocol] = host
        return protocol

    async def snapshot(self, user: str, mailbox: str) -> tuple[MailboxInfo, list[MailMessage]]:
        """
        A mailbox (its UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ) and its messages.  Listed afresh
        only when its HIGHESTMODSEQ moved, and then, when an older listing is at hand, only the
        messages changed since (flags) or added: merged into the old listing they give the new
        one, unless something was expunged, which the message count shows (a merge never drops
        a message, so it comes out too long).
        """
        info = await self.mailbox(user, mailbox)
        messages = self._snapshots.get(user, mailbox, info.highest_modseq)
        if messages is not None:
            return info, messages
        key = (user, mailbox)
        listing = self._listing.get(key)
        if listing is not None and listing[0] >= info.highest_modseq:
            # Another session is listing it, as of our modseq or later: wait for its answer.
            waiter: Deferred[list[MailMessage]] = Deferred()
            listing[1].append(waiter)
            return info, await waiter
        waiters: list[Deferred[list[MailMessage]]] = []
        self._listing[key] = (info.highest_modseq, waiters)
        try:
            messages = await self._list(user, mailbox)
        except BaseException:
            failure = Failure()
            for waiter in waiters:
                waiter.errback(failure)
            raise
        finally:
            if self._listing.get(key, (0, None))[1] is waiters:
                del self._listing[key]
        for waiter in waiters:
            waiter.callback(messages)
        return info, messages

    async def _list(self, user: str, mailbox: str) -> list[MailMessage]:
        # The count and the modseq together; what is listed after may only be newer, which a
        # reader of this modseq may see (and a later merge starts from this modseq anyway).
        status = await self.mailboxes.mailbox_status(user, mailbox)
        older = self._snapshots.latest(user, mailbox)
        if older is not None and older[0] >= status.highest_modseq:
            return older[1]  # another session listed it while we waited
        messages: list[MailMessage] | None = None
        if older is not None:
            changed = await self.mailboxes.list_messages(user, mailbox, older[0])
            merged = {m.uid: m for m in older[1]}
            merged.update((m.uid, m) for m in changed)
            if len(merged) == status.messages:
                messages = sorted(merged.values(), key=lambda m: m.uid)
        if messages is None:
            messages = await self.mailboxes.list_messages(user, mailbox)
        self._snapshots.put(user, mailbox, status.highest_modseq, messages)
        return messages

    async def mailbox(self, user: str, mailbox: str) -> MailboxInfo:
        """One row: the cheap way to learn whether a mailbox changed (its HIGHESTMODSEQ)."""
        info = await self.mailboxes.get_mailbox(user, mailbox)
        if info is None:
            raise NoSuchMailbox(mailbox)
        return info

    def mailbox_changed(self, user: str, mailbox: str, by: IMAPProtocol | None = None) -> None:
        """Wake the sessions of ``user`` that have ``mailbox`` selected (but ``by``)."""
        for protocol in list(self._protocols):
            if protocol is not by and protocol.user == user and protocol.selected == mailbox:
                protocol.wake()

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

    def connection_closed(self, protocol: IMAPProtocol) -> None:
        host = self._protocols.pop(protocol, None)
        if host is not None:
            self.connections.release(host)

    @property
    def open_connections(self) -> int:
        return len(self._protocols)
