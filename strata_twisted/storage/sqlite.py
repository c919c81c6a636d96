"""
The embedded storage backend: SQLite for records, one file per message body.

Layout under ``data_dir`` (mode 0700)::

    strata.db                     records, WAL mode (schema and migrations: sqlite_schema.py),
                                  and the bodies of small messages (table ``bodies``)
    messages/<YYYYMMDD>/<id>      each larger body exactly as received (mode 0600)

A body that never outgrew the writer's in-memory buffer (L{INLINE_LIMIT}, 256 KiB: nearly all mail)
is committed inside the same transaction as its message, so a whole batch of them costs one WAL
fsync.  Creating and fsyncing one file per message serialises on the filesystem journal and was
the intake bottleneck; larger bodies still stream to their own file while they arrive.

Threading (DESIGN decision 6).  Everything that touches the database or a body file runs inside an
``executor.run(...)`` callable: in the server that is one dedicated thread, which also opens the
one sqlite3 connection, lazily, in its first call.  Methods named ``_t_…`` run there, and only
there; every other method runs on the caller's (reactor) thread and must never touch the
connection or a file.  L{SQLiteStore.open} is the one exception: it is synchronous, runs before
the reactor does, and uses its own short-lived connection.

Durability (DESIGN decision 2; Postfix ``mail_stream.c``: write, fsync, then mark ready).  A
commit writes the rest of a file body, fsyncs it, fsyncs every directory that gained an entry, then
inserts the message, its queue entries and its shadow copies in one transaction
(``synchronous=FULL``); for a shadow copy (mode ``both``) that same transaction also creates the
recipient's default mailboxes if missing, adds the message to their INBOX and stores its MIME index
(computed once, before the transaction, from the inline bytes or the body file; a failure to index
stores none and never fails the commit).  A crash before that transaction leaves only an orphan
body file, which the next L{SQLiteStore.open} sweeps away; a crash after it loses nothing.

Group commit.  While one batch runs on the storage thread, new requests wait; when it finishes,
every waiting request goes into the next batch: one executor call, one transaction (so one WAL
fsync) for all of them.  Requests are message commits and the relay's delivery results
(L{SQLiteStore.record_result}), kept in two lists; a batch writes the messages first, then the
results, in request order.  A result that is refused (unknown entry, already delivered) fails
alone and writes nothing; a transaction that fails fails the whole batch.

Delivery results.  A batch of results alone (no message in it) is committed like any other, so no
crash of the process can undo it; with ``sync_each_result=False`` it is committed with
``synchronous=NORMAL``, which leaves the WAL fsync to the next message commit, the next checkpoint
or L{SQLiteStore.sync_results}, whichever comes first.  The relay waits for each result before the
next message's content goes, and an fsync there halves the drain rate; it calls sync_results after
each batch instead, so a power failure mid-drain can at worst send one batch again (a duplicate,
never a loss; Postfix, which unlinks a delivered queue file without an fsync, does the same).
Message commits are always fsync'd.

Mailboxes (IMailboxStore).  Each operation is one transaction (``synchronous=FULL``, so durable
when its Deferred fires); users, names and flags are checked on the calling thread first, so a
refusal costs no storage round trip.  A mailbox message is a row pointing at the shared
``messages`` row: COPY and MOVE insert rows, never bodies.  Lists of UIDs or ids reach SQLite as
one JSON parameter (``json_each``), never spliced into a statement.

Retention (L{SQLiteStore.delete_messages}).  One transaction re-checks which of the given messages
nobody needs (no mailbox row, no QUEUED or HELD entry) and deletes their rows; the body files are
unlinked only after it commits, so a crash in between leaves orphan files for the recovery sweep,
never a record without its body.

Administration (#13).  Resellers, customers, admin accounts, API keys and the audit log are a
mixin, L{strata_twisted.storage._admin_sqlite.SQLiteAdminRoles}, under the same threading rule.
The admin listings (L{SQLiteStore.query_entries}, L{SQLiteStore.query_events}) read one page:
index walks merged on lazy cursors, never the whole queue (see L{_t_merged_walks}).

Errors.  No OSError or sqlite3.Error escapes: ENOSPC/EDQUOT and SQLITE_FULL become
L{InsufficientStorage}, anything else L{StorageError}, with the detail in the message.  A failed
transaction is rolled back, so the store works again as soon as the disk has room, without being
reopened.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import io
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, NoReturn, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from strata_twisted.clock import SecondsClock
from strata_twisted.errors import (
    DomainExists,
    InsufficientStorage,
    NoSuchDomain,
    NoSuchEntry,
    QueueStateError,
    StorageError,
    StrataError,
)
from strata_twisted.executor import Executor
from strata_twisted.interfaces import (
    IAdminStore,
    IAuditStore,
    IControlStore,
    ICredentialStore,
    IDomainStore,
    IEventStore,
    IMailboxStore,
    IMessageStore,
    IMessageWriter,
    IMonitorStore,
    IQueueStore,
    ISeriesStore,
    IShadowStore,
    ITenantStore,
)
from strata_twisted.model import (
    BOUNCED,
    DEFAULT_MAILBOXES,
    DELETED_FLAG,
    DELIVERED,
    HELD,
    INBOX,
    MAILBOX_DELIMITER,
    QUEUED,
    SEEN,
    AttemptResult,
    ControlRequest,
    CopyResult,
    DeliveryMode,
    Domain,
    DomainHealth,
    DomainStatus,
    Envelope,
    Event,
    EventFilter,
    FlagMode,
    FlagUpdate,
    IncomingMessage,
    MailboxExists,
    MailboxHasChildren,
    MailboxInfo,
    MailboxListing,
    MailboxRefused,
    MailboxStatus,
    MailMessage,
    MessageHead,
    NewEvent,
    NoSuchMailbox,
    NoSuchUser,
    Outage,
    PortalPolicy,
    PurgedMessage,
    QueueEntry,
    QueueFilter,
    QueueStats,
    RelayActivity,
    RelayTarget,
    ShadowCopy,
    StoredMessage,
    TLSPolicy,
    UserCredential,
    UserListChange,
    alias_pair,
    apply_flags,
    check_password_hash_text,
    credential_key,
    is_inferior,
    mailbox_parents,
    next_uidvalidity,
    normalize_domain,
    normalize_flags,
    normalize_mailbox_name,
    normalize_special_use,
    normalize_user,
    normalize_user_list,
    split_address,
)
from strata_twisted.storage._admin_sqlite import SQLiteAdminRoles
from strata_twisted.storage._bodies import check_body_range, check_message_id, header_section
from strata_twisted.storage._mailboxes import Indexer, shadow_owners
from strata_twisted.storage._queue import (
    apply_change,
    apply_changes,
    apply_reroute,
    apply_result,
    apply_results,
    check_change_target,
    check_result,
)
from strata_twisted.storage._series_sqlite import SQLiteSeriesRole
from strata_twisted.storage.sqlite_schema import immediate_transaction, migrate

T = TypeVar("T")

DB_NAME: Final = "strata.db"
MESSAGES_DIR: Final = "messages"

# A writer keeps at most this much of a body in memory; beyond it, the buffer goes to the file.
BUFFER_LIMIT: Final = 256 * 1024
# Bodies up to this size that never left the buffer are stored inline, in the `bodies` table.
INLINE_LIMIT: Final = BUFFER_LIMIT

# Without ``open(recover=True)`` another process (the running server) may be writing bodies that
# are not committed yet; only orphans untouched for this long are old enough to be crash debris.
ORPHAN_AGE: Final = 3600.0

# Queue ids name body files, so they must be safe file names (no "/", no "..").

_DISK_FULL_ERRNOS: Final = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)

_log = Logger()


def translate_error(error: BaseException, doing: str) -> StrataError:
    """
    The Strata error for a failure while ``doing`` something: disk full (ENOSPC, EDQUOT,
    SQLITE_FULL) is L{InsufficientStorage}, any other I/O or database error L{StorageError}.
    Strata's own errors pass through unchanged.
    """
    if isinstance(error, StrataError):
        return error
    detail = f"{doing}: {error}"
    if isinstance(error, OSError):
        if error.errno in _DISK_FULL_ERRNOS:
            return InsufficientStorage(detail)
        return StorageError(detail)
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == sqlite3.SQLITE_FULL or "database or disk is full" in str(error):
            return InsufficientStorage(detail)
        return StorageError(detail)
    return StorageError(f"{doing}: unexpected {type(error).__name__}: {error}")


def _exception(failure: Failure) -> BaseException:
    return failure.value if failure.value is not None else RuntimeError(str(failure))


def _raise_translated(failure: Failure, doing: str) -> NoReturn:
    raise translate_error(_exception(failure), doing)


def _raise(error: StrataError, cause: BaseException) -> NoReturn:
    if error is cause:
        raise error
    raise error from cause


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN/COMMIT ourselves) with our pragmas."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
    try:
        conn.row_factory = sqlite3.Row
        # The admin listings' substring filters fold case as Python does (str.casefold, as the
        # memory backend): SQLite's own lower() folds ASCII only, and addresses may be UTF-8.
        conn.create_function("strata_casefold", 1, _casefold, deterministic=True)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{path}: cannot use WAL journal mode (got {mode!r})")
    except BaseException:
        conn.close()
        raise
    return conn


def _casefold(value: str | None) -> str | None:
    """SQL ``strata_casefold(x)``: ``x.casefold()`` (NULL stays NULL)."""
    return None if value is None else str(value).casefold()


def _optional_float(value: object) -> float | None:
    return None if value is None else float(cast(float, value))


def _optional_int(value: object) -> int | None:
    return None if value is None else int(cast(int, value))


def _domain(row: sqlite3.Row) -> Domain:
    return Domain(
        name=row["name"],
        relay=RelayTarget(row["relay_host"], int(row["relay_port"])),
        mode=cast(DeliveryMode, row["mode"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        tls_policy=cast(TLSPolicy, row["tls_policy"]),
        hold_rejected=bool(row["hold_rejected"]),
        queue_lifetime=_optional_float(row["queue_lifetime"]),
        probe_interval=_optional_float(row["probe_interval"]),
        down_after=_optional_int(row["down_after"]),
        up_after=_optional_int(row["up_after"]),
        monitored=bool(row["monitored"]),
        accept_unknown=bool(row["accept_unknown"]),
        portal=cast(PortalPolicy, row["portal"]),
        retention_days=_optional_int(row["retention_days"]),
        alert_email=row["alert_email"],
        alert_webhook=row["alert_webhook"],
        alert_webhook_auth=row["alert_webhook_auth"],
        customer=row["customer"],
    )


def _domain_settings(domain: Domain) -> tuple[object, ...]:
    """A domain's settings (every field but the name and the times), as the SQL below lists them."""
    return (
        domain.relay.host,
        domain.relay.port,
        domain.mode,
        domain.tls_policy,
        int(domain.hold_rejected),
        domain.queue_lifetime,
        domain.probe_interval,
        domain.down_after,
        domain.up_after,
        int(domain.monitored),
        int(domain.accept_unknown),
        domain.portal,
        domain.retention_days,
        domain.alert_email,
        domain.alert_webhook,
        domain.alert_webhook_auth,
        domain.customer,
    )


_INSERT_DOMAIN: Final = (
    "INSERT INTO domains (name, created_at, updated_at, relay_host, relay_port, mode, tls_policy,"
    " hold_rejected, queue_lifetime, probe_interval, down_after, up_after, monitored,"
    " accept_unknown, portal, retention_days, alert_email, alert_webhook, alert_webhook_auth,"
    " customer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_DOMAIN: Final = (
    "UPDATE domains SET relay_host = ?, relay_port = ?, mode = ?, tls_policy = ?,"
    " hold_rejected = ?, queue_lifetime = ?, probe_interval = ?, down_after = ?, up_after = ?,"
    " monitored = ?, accept_unknown = ?, portal = ?, retention_days = ?, alert_email = ?,"
    " alert_webhook = ?, alert_webhook_auth = ?, customer = ?, updated_at = ?"
    " WHERE name = ?"
)


def _stored_message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        envelope=Envelope(
            sender=row["sender"],
            recipients=tuple(json.loads(row["recipients"])),
            client_address=row["client_address"],
            client_helo=row["client_helo"],
            body_8bitmime=bool(row["body_8bitmime"]),
            smtputf8=bool(row["smtputf8"]),
        ),
        received_at=float(row["received_at"]),
        size=int(row["size"]),
        header_message_id=row["header_message_id"],
    )


def _entry(row: sqlite3.Row) -> QueueEntry:
    return QueueEntry(
        id=row["id"],
        seq=int(row["seq"]),
        message_id=row["message_id"],
        domain=row["domain"],
        recipient=row["recipient"],
        sender=row["sender"],
        header_message_id=row["header_message_id"],
        size=int(row["size"]),
        received_at=float(row["received_at"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
        next_attempt_at=float(row["next_attempt_at"]),
        last_attempt_at=_optional_float(row["last_attempt_at"]),
        delivered_at=_optional_float(row["delivered_at"]),
        delivery_reply=row["delivery_reply"],
        outbound=bool(row["outbound"]),
        delay_notified_at=_optional_float(row["delay_notified_at"]),
    )


# A queue entry with the fields it shares with its message.
_ENTRY_SELECT: Final = (
    "SELECT q.*, m.sender, m.header_message_id, m.size, m.received_at"
    " FROM queue AS q JOIN messages AS m ON m.id = q.message_id"
)


def _t_read_entry(conn: sqlite3.Connection, entry_id: str) -> QueueEntry | None:
    row = conn.execute(_ENTRY_SELECT + " WHERE q.id = ?", (entry_id,)).fetchone()
    return _entry(row) if row is not None else None


# The paged admin listings (#13).  A page is the first ``limit`` rows, in key order, of one or more
# index walks, merged: one walk per wanted domain (queue (domain, seq), events (domain, id)), per
# wanted state (queue (state, seq)), or per pair of both (queue (state, domain, seq)); a single
# walk down the primary key when nothing narrows it.  Each walk is a lazy cursor, so the merge
# steps through about ``limit`` + (number of walks) rows, however long the queue.  ``CROSS JOIN``
# keeps the queue as the outer loop (SQLite never reorders it), so the walk is the queue index.
_ENTRY_WALK: Final = (
    "SELECT q.*, m.sender, m.header_message_id, m.size, m.received_at"
    " FROM queue AS q CROSS JOIN messages AS m ON m.id = q.message_id"
)

_COUNT_ENTRIES: Final = "SELECT count(*) FROM queue AS q"
_EVENT_WALK: Final = "SELECT * FROM events"
# These statements are built from the fixed fragments below and nothing else: every value the
# caller gave is a parameter.


def _substring(column: str) -> str:
    """The condition "``column`` contains the parameter", which arrives casefolded."""
    return f"instr(strata_casefold({column}), ?) > 0"


def _entry_conditions(query: QueueFilter) -> tuple[list[str], list[object]]:
    """The conditions of ``query`` other than domains and states (model: entry_matches)."""
    conditions: list[str] = []
    params: list[object] = []
    if query.sender is not None:
        conditions.append(_substring("m.sender"))
        params.append(query.sender.casefold())
    if query.recipient is not None:
        conditions.append(_substring("q.recipient"))
        params.append(query.recipient.casefold())
    if query.received_before is not None:
        conditions.append("m.received_at < ?")
        params.append(query.received_before)
    return conditions, params


def _event_conditions(query: EventFilter) -> tuple[list[str], list[object]]:
    """The conditions of ``query`` other than domains (model: event_matches).  A kind ending in
    "." is a prefix, compared with ``substr`` (LIKE would read ``_`` and ``%`` as wildcards)."""
    conditions: list[str] = []
    params: list[object] = []
    if query.kinds is not None:
        alternatives: list[str] = []
        for kind in dict.fromkeys(query.kinds):
            if kind.endswith("."):
                alternatives.append("substr(kind, 1, ?) = ?")
                params += [len(kind), kind]
            else:
                alternatives.append("kind = ?")
                params.append(kind)
        conditions.append("(" + " OR ".join(alternatives) + ")")
    if query.since is not None:
        conditions.append("at >= ?")
        params.append(query.since)
    return conditions, params


def _t_merged_walks(
    conn: sqlite3.Connection,
    statement: str,
    walks: Iterable[tuple[object, ...]],
    params: Sequence[object],
    order: str,
    limit: int,
    *,
    descending: bool = False,
) -> list[sqlite3.Row]:
    """
    The first ``limit`` rows of ``statement`` run once per walk (its leading parameters, then
    ``params``), merged by the column ``order``; every walk must be sorted by it.
    """
    cursors = [conn.execute(statement, (*walk, *params)) for walk in walks]
    try:
        merged = heapq.merge(*cursors, key=lambda row: row[order], reverse=descending)
        return list(itertools.islice(merged, limit))
    finally:
        for cursor in cursors:
            cursor.close()


# Writes back the fields of an entry that delivery attempts and admins change.
_UPDATE_ENTRY: Final = (
    "UPDATE queue SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?,"
    " last_attempt_at = ?, delivered_at = ?, delivery_reply = ? WHERE id = ?"
)


def _changed_fields(entry: QueueEntry) -> tuple[object, ...]:
    """The parameters of L{_UPDATE_ENTRY} for ``entry``."""
    return (
        entry.state,
        entry.attempts,
        entry.last_error,
        entry.next_attempt_at,
        entry.last_attempt_at,
        entry.delivered_at,
        entry.delivery_reply,
        entry.id,
    )


def _t_write_entry(conn: sqlite3.Connection, entry: QueueEntry) -> None:
    """Write back the fields of ``entry`` that delivery attempts and admins change."""
    conn.execute(_UPDATE_ENTRY, _changed_fields(entry))


def _status(row: sqlite3.Row) -> DomainStatus:
    return DomainStatus(
        domain=row["domain"],
        health=cast(DomainHealth, row["health"]),
        since=_optional_float(row["since"]),
        consecutive_failures=int(row["consecutive_failures"]),
        consecutive_successes=int(row["consecutive_successes"]),
        last_probe_at=_optional_float(row["last_probe_at"]),
        last_probe_error=row["last_probe_error"],
        last_delivery_at=_optional_float(row["last_delivery_at"]),
        failing_since=_optional_float(row["failing_since"]),
    )


def _outage(row: sqlite3.Row) -> Outage:
    return Outage(
        id=int(row["id"]),
        domain=row["domain"],
        started_at=float(row["started_at"]),
        reason=row["reason"],
        ended_at=_optional_float(row["ended_at"]),
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=int(row["id"]),
        at=float(row["at"]),
        kind=row["kind"],
        message=row["message"],
        domain=row["domain"],
        data=json.loads(row["data"]),
    )


def _bump_domains_version(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'domains_version'")


def _bump_credentials_version(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'credentials_version'")


@dataclass
class _PendingCommit:
    """One commit request, waiting for (or in) a batch."""

    writer: _BodyWriter
    incoming: IncomingMessage
    tail: bytes
    size: int
    created_at: float
    inline: bool  # the whole body is `tail`: stored in the `bodies` table, no file
    deferred: Deferred[StoredMessage] = field(default_factory=Deferred)
    # Storage thread: the MIME index, computed before the transaction when a delivery is a shadow.
    t_mime_index: bytes | None = None

    def stored(self) -> StoredMessage:
        return StoredMessage(
            id=self.writer.message_id,
            envelope=self.incoming.envelope,
            received_at=self.incoming.received_at,
            size=self.size,
            header_message_id=self.incoming.header_message_id,
        )


@dataclass
class _PendingResult:
    """One delivery result to record, waiting for (or in) a batch."""

    result: AttemptResult
    deferred: Deferred[QueueEntry] = field(default_factory=Deferred)


@dataclass
class _BatchOutcome:
    """What a batch did: one item per commit and per result, in request order."""

    messages: list[StoredMessage | StrataError]
    results: list[QueueEntry | StrataError]


# Writer states (reactor side).  The legal moves:
#
#   open --write--> open        open --commit--> committing --batch--> committed | failed
#   open --abort--> aborted     committing --abort--> (waits for the batch; cannot undo it)
#
# Anything else is refused: write/commit fail with StorageError, abort does nothing.
_OPEN, _COMMITTING, _COMMITTED, _FAILED, _ABORTED = (
    "open",
    "committing",
    "committed",
    "failed",
    "aborted",
)


@implementer(IMessageWriter)
class _BodyWriter:
    """
    One message being received into ``messages/<day>/<id>``.

    The reactor side keeps a buffer of at most L{BUFFER_LIMIT} bytes and hands full buffers to the
    storage thread, which creates the file on the first of them (``O_EXCL``, mode 0600).  The two
    sides keep separate state: ``_t_…`` attributes and methods belong to the storage thread.
    """

    def __init__(self, store: SQLiteStore, message_id: str, day: str) -> None:
        self.message_id = message_id
        self.size = 0
        self.rel_path = f"{MESSAGES_DIR}/{day}/{message_id}"
        self.day_dir = store.data_dir / MESSAGES_DIR / day
        self.path = self.day_dir / message_id
        self._store = store
        # Reactor side.
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._state = _OPEN
        self._error: StrataError | None = None
        self._flushed = False
        self._settle_waiters: list[Deferred[None]] = []
        # Storage-thread side.
        self._t_fd: int | None = None
        self._t_created = False
        self._t_error: StrataError | None = None

    # -- reactor side

    def write(self, data: bytes) -> Deferred[None]:
        if self._error is not None:
            return fail(self._error)
        if self._state != _OPEN:
            return fail(StorageError(f"message {self.message_id} is already {self._state}"))
        if not data:
            return succeed(None)
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered <= BUFFER_LIMIT:
            return succeed(None)
        chunk = b"".join(self._buffer)
        self._buffer = []
        self._buffered = 0
        self._flushed = True
        d = self._store._run(f"writing message {self.message_id}", lambda: self._t_append(chunk))
        d.addErrback(self._write_failed)
        return d

    def _write_failed(self, failure: Failure) -> Failure:
        if self._error is None:
            self._error = translate_error(_exception(failure), f"writing message {self.message_id}")
        return failure

    def commit(self, incoming: IncomingMessage) -> Deferred[StoredMessage]:
        if self._state != _OPEN:
            return fail(StorageError(f"message {self.message_id} is already {self._state}"))
        if self._error is not None:
            # The failed flush has already deleted the file.
            self._state = _FAILED
            return fail(self._error)
        self._state = _COMMITTING
        tail = b"".join(self._buffer)
        self._buffer = []
        self._buffered = 0
        pending = _PendingCommit(
            writer=self,
            incoming=incoming,
            tail=tail,
            size=self.size,
            created_at=self._store.clock.seconds(),
            inline=not self._flushed and self.size <= self._store.inline_limit,
        )
        d = self._store._request_commit(pending)
        d.addBoth(self._settled)
        return d

    def _settled(self, result: StoredMessage | Failure) -> StoredMessage | Failure:
        self._state = _FAILED if isinstance(result, Failure) else _COMMITTED
        waiters, self._settle_waiters = self._settle_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        return result

    def abort(self) -> Deferred[None]:
        if self._state == _COMMITTING:
            # Too late to take it back: wait until the commit has settled, one way or the other
            # (a failed commit has already deleted the file).
            waiter: Deferred[None] = Deferred()
            self._settle_waiters.append(waiter)
            return waiter
        if self._state != _OPEN:
            return succeed(None)
        self._state = _ABORTED
        self._buffer = []
        self._buffered = 0
        if not self._flushed:
            return succeed(None)
        return self._store._run(f"discarding message {self.message_id}", self._t_discard)

    # -- storage-thread side

    def _t_write(self, data: bytes) -> None:
        if self._t_fd is None:
            if not self._store._opened:
                raise StorageError(f"the store at {self._store.data_dir} is not open")
            self._store._t_make_dir(self.day_dir)
            self._t_fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            self._t_created = True
        view = memoryview(data)
        while view:
            written = os.write(self._t_fd, view)
            view = view[written:]

    def _t_fail(self, error: BaseException) -> NoReturn:
        """Remember the failure, delete the file, and raise the Strata error."""
        translated = translate_error(error, f"writing message {self.message_id}")
        self._t_error = translated
        self._t_discard_quietly()
        _raise(translated, error)

    def _t_append(self, data: bytes) -> None:
        if self._t_error is not None:
            raise self._t_error
        try:
            self._t_write(data)
        except Exception as e:
            self._t_fail(e)

    def _t_finish(self, tail: bytes) -> None:
        """Write the last bytes, fsync and close the file (created now if nothing was flushed)."""
        if self._t_error is not None:
            raise self._t_error
        try:
            self._t_write(tail)
            assert self._t_fd is not None
            os.fsync(self._t_fd)
            fd, self._t_fd = self._t_fd, None
            os.close(fd)
        except Exception as e:
            self._t_fail(e)

    def _t_discard(self) -> None:
        if self._t_fd is not None:
            fd, self._t_fd = self._t_fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._t_created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._t_created = False

    def _t_discard_quietly(self) -> None:
        # A file we cannot delete now is an orphan; the next open() sweeps it.
        with contextlib.suppress(OSError):
            self._t_discard()


@implementer(
    IDomainStore,
    IMessageStore,
    IQueueStore,
    ISeriesStore,
    IShadowStore,
    IEventStore,
    IMonitorStore,
    IControlStore,
    IMailboxStore,
    ICredentialStore,
    ITenantStore,
    IAdminStore,
    IAuditStore,
    ISeriesStore,
)
class SQLiteStore(SQLiteAdminRoles, SQLiteSeriesRole):
    """
    Every storage role on SQLite plus body files under ``data_dir``.  Call L{open} once before
    use (synchronous); after that, all I/O runs through ``executor``.
    """

    def __init__(
        self,
        data_dir: Path,
        clock: SecondsClock,
        executor: Executor,
        *,
        inline_limit: int = INLINE_LIMIT,
        sync_each_result: bool = True,
        indexer: Indexer | None = None,
    ) -> None:
        """``sync_each_result=False``: see "Delivery results" in the module docstring."""
        self.data_dir = Path(data_dir)
        self.inline_limit = inline_limit
        self.sync_each_result = sync_each_result
        self._indexer = indexer
        self.clock = clock
        self._executor = executor
        self._db_path = self.data_dir / DB_NAME
        self._messages_dir = self.data_dir / MESSAGES_DIR
        self._opened = False
        # Group commit (reactor side).
        self._pending: list[_PendingCommit] = []
        self._pending_results: list[_PendingResult] = []
        self._batch_running = False
        # Storage-thread side.
        self._t_db: sqlite3.Connection | None = None
        self._t_wal_synced = False
        self._t_unsynced_dirs: set[Path] = set()

    # -- lifecycle

    def open(self, *, recover: bool = False) -> None:
        """
        Create the data directory, apply migrations and sweep orphan body files (bodies that no
        committed message references: a crash hit before their commit).

        Synchronous: call it before the reactor runs (server) or from the CLI.  ``recover=True``
        says no other process uses this directory, so every orphan goes; otherwise only orphans
        untouched for L{ORPHAN_AGE} seconds do, so the CLI never deletes a body the running
        server is still receiving.  Raises L{StorageError} (or L{InsufficientStorage}).
        """
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._messages_dir.is_dir():
                self._messages_dir.mkdir(mode=0o700)
                _fsync_dir(self.data_dir)
            new_db = not self._db_path.exists()
            conn = _connect(self._db_path)
            try:
                if new_db:
                    os.chmod(self._db_path, 0o600)
                migrate(conn)
                removed = self._sweep(conn, recover)
            finally:
                conn.close()
            if new_db:
                _fsync_dir(self.data_dir)
        except (OSError, sqlite3.Error) as e:
            _raise(translate_error(e, f"opening {self.data_dir}"), e)
        if removed:
            _log.info(
                "Removed {count} uncommitted message body file(s) under {dir}",
                count=removed,
                dir=str(self._messages_dir),
            )
        self._opened = True

    def _sweep(self, conn: sqlite3.Connection, recover: bool) -> int:
        cutoff = time.time() - ORPHAN_AGE  # file times are wall-clock times
        removed = 0
        for day_dir in sorted(self._messages_dir.iterdir()):
            if not day_dir.is_dir() or day_dir.is_symlink():
                continue
            for body in day_dir.iterdir():
                rel_path = f"{MESSAGES_DIR}/{day_dir.name}/{body.name}"
                row = conn.execute(
                    "SELECT 1 FROM messages WHERE id = ? AND body_path = ?",
                    (body.name, rel_path),
                ).fetchone()
                if row is not None:
                    continue
                try:
                    # Stat again right before deleting: a body still being written is fresh.
                    st = body.lstat()
                    if not body.is_file() or (not recover and st.st_mtime >= cutoff):
                        continue
                    body.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
        return removed

    def close(self) -> Deferred[None]:
        """Close the connection (on the storage thread, after the calls already submitted)."""
        return self._run("closing the database", self._t_close)

    def _t_close(self) -> None:
        self._opened = False
        if self._t_db is not None:
            db, self._t_db = self._t_db, None
            db.close()

    # -- plumbing

    def _run(self, doing: str, f: Callable[[], T]) -> Deferred[T]:
        """Run ``f`` through the executor; any failure arrives as a L{StrataError}."""

        def guarded() -> T:
            try:
                return f()
            except StrataError:
                raise
            except Exception as e:
                _raise(translate_error(e, doing), e)

        try:
            d = self._executor.run(guarded)
        except Exception as e:
            return fail(translate_error(e, doing))
        d.addErrback(_raise_translated, doing)
        return d

    def _with_connection(self, doing: str, f: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run ``f(connection)`` on the storage thread (for tests and maintenance)."""
        return self._run(doing, lambda: f(self._t_conn()))

    def _t_conn(self) -> sqlite3.Connection:
        if not self._opened:
            raise StorageError(f"the store at {self.data_dir} is not open")
        if self._t_db is None:
            self._t_db = _connect(self._db_path)
            self._t_wal_synced = False
        return self._t_db

    def _t_transaction(self, f: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T:
        """``f(connection)`` in one transaction; ``sync=False`` commits without the WAL fsync."""
        conn = self._t_conn()
        if conn.in_transaction:  # left over from a failure we could not roll back
            conn.execute("ROLLBACK")
        if sync:
            with immediate_transaction(conn):
                return f(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with immediate_transaction(conn):
                return f(conn)
        finally:
            conn.execute("PRAGMA synchronous = FULL")

    def _t_sync_wal(self) -> None:
        """fsync the WAL: every transaction committed so far is then on disk."""
        try:
            fd = os.open(self._db_path.with_name(self._db_path.name + "-wal"), os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL (nothing written yet, or all checkpointed and removed)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _t_make_dir(self, day_dir: Path) -> None:
        """Create a day directory on demand; its parent must be fsync'd before the next commit."""
        try:
            os.mkdir(day_dir, 0o700)
        except FileExistsError:
            return
        except FileNotFoundError:
            os.makedirs(day_dir.parent, 0o700, exist_ok=True)
            self._t_unsynced_dirs.add(day_dir.parent.parent)
            os.mkdir(day_dir, 0o700)
        self._t_unsynced_dirs.add(day_dir.parent)

    # -- IDomainStore

    def list_domains(self) -> Deferred[list[Domain]]:
        def query() -> list[Domain]:
            rows = self._t_conn().execute("SELECT * FROM domains ORDER BY name")
            return [_domain(row) for row in rows]

        return self._run("listing domains", query)

    def get_domain(self, name: str) -> Deferred[Domain | None]:
        def query() -> Domain | None:
            row = self._t_conn().execute("SELECT * FROM domains WHERE name = ?", (name,)).fetchone()
            return _domain(row) if row is not None else None

        return self._run(f"reading domain {name}", query)

    def add_domain(self, domain: Domain) -> Deferred[Domain]:
        now = self.clock.seconds()
        added = replace(
            domain,
            created_at=domain.created_at or now,
            updated_at=domain.updated_at or now,
        )

        def insert(conn: sqlite3.Connection) -> Domain:
            if conn.execute("SELECT 1 FROM domains WHERE name = ?", (added.name,)).fetchone():
                raise DomainExists(f"{added.name} is already protected")
            conn.execute(
                _INSERT_DOMAIN,
                (added.name, added.created_at, added.updated_at, *_domain_settings(added)),
            )
            _bump_domains_version(conn)
            return added

        return self._run(f"adding domain {added.name}", lambda: self._t_transaction(insert))

    def update_domain(self, domain: Domain) -> Deferred[Domain]:
        now = self.clock.seconds()

        def update(conn: sqlite3.Connection) -> Domain:
            row = conn.execute(
                "SELECT created_at FROM domains WHERE name = ?", (domain.name,)
            ).fetchone()
            if row is None:
                raise NoSuchDomain(f"{domain.name} is not protected")
            conn.execute(_UPDATE_DOMAIN, (*_domain_settings(domain), now, domain.name))
            _bump_domains_version(conn)
            return replace(domain, created_at=float(row["created_at"]), updated_at=now)

        return self._run(f"updating domain {domain.name}", lambda: self._t_transaction(update))

    def remove_domain(self, name: str) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM domains WHERE name = ?", (name,)).rowcount == 0:
                raise NoSuchDomain(f"{name} is not protected")
            _bump_domains_version(conn)

        return self._run(f"removing domain {name}", lambda: self._t_transaction(delete))

    def domains_version(self) -> Deferred[int]:
        def query() -> int:
            row = (
                self._t_conn()
                .execute("SELECT value FROM meta WHERE key = 'domains_version'")
                .fetchone()
            )
            return int(row[0])

        return self._run("reading the domains version", query)

    # -- IMessageStore

    def begin(self, message_id: str) -> IMessageWriter:
        """
        Start receiving a message.  Its body goes to ``messages/<day>/<message_id>``, ``day`` being
        the UTC date at which reception began (the ``body_path`` column is authoritative).  Raises
        ValueError when ``message_id`` is not ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128).
        """
        check_message_id(message_id)
        day = datetime.fromtimestamp(self.clock.seconds(), tz=UTC).strftime("%Y%m%d")
        return _BodyWriter(self, message_id, day)

    def _request_commit(self, pending: _PendingCommit) -> Deferred[StoredMessage]:
        self._pending.append(pending)
        if not self._batch_running:
            self._start_batch()
        return pending.deferred

    def _start_batch(self) -> None:
        commits, self._pending = self._pending, []
        results, self._pending_results = self._pending_results, []
        self._batch_running = True
        try:
            d = self._executor.run(lambda: self._t_commit_batch(commits, results))
        except Exception as e:
            self._batch_done(e, commits, results)
            return
        d.addBoth(self._batch_done, commits, results)

    def _batch_done(
        self,
        outcome: _BatchOutcome | Failure | Exception,
        commits: list[_PendingCommit],
        results: list[_PendingResult],
    ) -> None:
        self._batch_running = False
        if not isinstance(outcome, _BatchOutcome):
            error = outcome if isinstance(outcome, Exception) else _exception(outcome)
            outcome = _BatchOutcome(
                [translate_error(error, "committing messages")] * len(commits),
                [translate_error(error, "recording delivery results")] * len(results),
            )
        if self._pending or self._pending_results:
            self._start_batch()
        for pending, stored in zip(commits, outcome.messages, strict=True):
            if isinstance(stored, StoredMessage):
                pending.deferred.callback(stored)
            else:
                pending.deferred.errback(stored)
        for pending_result, entry in zip(results, outcome.results, strict=True):
            if isinstance(entry, QueueEntry):
                pending_result.deferred.callback(entry)
            else:
                pending_result.deferred.errback(entry)

    def _t_commit_batch(
        self, batch: list[_PendingCommit], results: list[_PendingResult]
    ) -> _BatchOutcome:
        """
        Make a batch durable: every body written, fsync'd and closed, every new directory entry
        fsync'd, then one transaction for all the records and delivery results.  A body that
        fails fails alone, and so does a refused result; a failed transaction fails the whole
        batch.  Every failed message's file is deleted.
        """
        try:
            self._t_conn()
        except Exception as e:
            for pending in batch:
                pending.writer._t_discard_quietly()
            return _BatchOutcome(
                [translate_error(e, "committing messages")] * len(batch),
                [translate_error(e, "recording delivery results")] * len(results),
            )
        stored: dict[int, StoredMessage | StrataError] = {}
        written: list[int] = []
        for i, pending in enumerate(batch):
            if pending.inline:
                written.append(i)
                continue
            try:
                pending.writer._t_finish(pending.tail)
            except StrataError as e:
                stored[i] = e
            else:
                written.append(i)
        for i in written:
            # Parsed once, here, outside the transaction (DESIGN decision 9); only shadow copies
            # need it, so a message without one costs nothing.
            if any(delivery.shadow for delivery in batch[i].incoming.deliveries):
                batch[i].t_mime_index = self._t_index(batch[i])
        recorded: list[QueueEntry | StrataError] = []
        if written or results:

            def write_all(conn: sqlite3.Connection) -> None:
                for i in written:
                    self._t_insert(conn, batch[i])
                for pending_result in results:
                    recorded.append(self._t_record(conn, pending_result.result))

            try:
                if written:
                    self._t_sync_dirs(
                        {batch[i].writer.day_dir for i in written if not batch[i].inline}
                    )
                if written or self.sync_each_result:
                    self._t_transaction(write_all)
                else:
                    self._t_transaction(write_all, sync=False)
                if not self._t_wal_synced:
                    # A new connection's first write may have created the -wal file; make its
                    # directory entry durable before anyone is told the commit happened.
                    _fsync_dir(self.data_dir)
                    self._t_wal_synced = True
            except Exception as e:
                doing = []
                if written:
                    doing.append(
                        "committing " + ", ".join(batch[i].writer.message_id for i in written)
                    )
                if results:
                    doing.append(f"recording {len(results)} delivery result(s)")
                error = translate_error(e, " and ".join(doing))
                for i in written:
                    batch[i].writer._t_discard_quietly()
                    stored[i] = error
                recorded = [error] * len(results)
            else:
                for i in written:
                    stored[i] = batch[i].stored()
        return _BatchOutcome([stored[i] for i in range(len(batch))], recorded)

    def _t_index(self, pending: _PendingCommit) -> bytes | None:
        """
        The MIME index of a just-written body (the indexer reads it in bounded chunks), or None
        without an indexer or when anything goes wrong: the IMAP layer indexes it again later,
        and intake never fails because of MIME.
        """
        if self._indexer is None:
            return None
        try:
            if pending.inline:
                return self._indexer(io.BytesIO(pending.tail), pending.size)
            with pending.writer.path.open("rb") as body:
                return self._indexer(body, pending.size)
        except Exception:
            _log.failure(
                "Could not index the MIME structure of {message_id}; storing it without",
                message_id=pending.writer.message_id,
            )
            return None

    def _t_record(
        self, conn: sqlite3.Connection, result: AttemptResult
    ) -> QueueEntry | StrataError:
        """Apply one delivery result inside the batch's transaction; a refusal writes nothing."""
        entry = _t_read_entry(conn, result.entry_id)
        if entry is None:
            return NoSuchEntry(f"no queue entry {result.entry_id}")
        try:
            changed = apply_result(entry, result)
        except QueueStateError as e:
            return e
        _t_write_entry(conn, changed)
        return changed

    def _t_sync_dirs(self, day_dirs: set[Path]) -> None:
        for path in sorted(day_dirs | self._t_unsynced_dirs):
            _fsync_dir(path)
        self._t_unsynced_dirs.clear()

    def _t_insert(self, conn: sqlite3.Connection, pending: _PendingCommit) -> None:
        incoming = pending.incoming
        envelope = incoming.envelope
        message_id = pending.writer.message_id
        conn.execute(
            "INSERT INTO messages (id, sender, recipients, client_address, client_helo,"
            " body_8bitmime, smtputf8, received_at, size, header_message_id, body_path)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message_id,
                envelope.sender,
                json.dumps(list(envelope.recipients)),
                envelope.client_address,
                envelope.client_helo,
                int(envelope.body_8bitmime),
                int(envelope.smtputf8),
                incoming.received_at,
                pending.size,
                incoming.header_message_id,
                None if pending.inline else pending.writer.rel_path,
            ),
        )
        if pending.inline:
            conn.execute(
                "INSERT INTO bodies (message_id, data) VALUES (?, ?)", (message_id, pending.tail)
            )
        conn.executemany(
            "INSERT INTO queue (id, message_id, domain, recipient, state, attempts, last_error,"
            " next_attempt_at, created_at, outbound) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            [
                (
                    f"{message_id}.{n}",
                    message_id,
                    delivery.domain,
                    delivery.recipient,
                    QUEUED if delivery.held is None else HELD,
                    delivery.held,
                    incoming.received_at,
                    pending.created_at,
                    int(delivery.outbound),
                )
                for n, delivery in enumerate(incoming.deliveries, start=1)
            ],
        )
        conn.executemany(
            "INSERT INTO shadow_copies (message_id, recipient, mailbox, created_at)"
            " VALUES (?, ?, 'INBOX', ?)",
            [
                (message_id, delivery.recipient, pending.created_at)
                for delivery in incoming.deliveries
                if delivery.shadow
            ],
        )
        # Mode "both": each shadow recipient's INBOX gets the message, in this same transaction.
        mime_index = pending.t_mime_index
        for owner in shadow_owners(incoming):
            _t_ensure_defaults(conn, owner, pending.created_at)
            _t_add_message(
                conn, owner, INBOX, message_id, incoming.received_at, frozenset(), mime_index
            )
            mime_index = None  # kept once per message, shared by every mailbox copy

    def get_message(self, message_id: str) -> Deferred[StoredMessage | None]:
        return self._run(f"reading message {message_id}", lambda: self._t_get_message(message_id))

    def _t_get_message(self, message_id: str) -> StoredMessage | None:
        row = (
            self._t_conn()
            .execute(
                "SELECT id, sender, recipients, client_address, client_helo, body_8bitmime,"
                " smtputf8, received_at, size, header_message_id FROM messages WHERE id = ?",
                (message_id,),
            )
            .fetchone()
        )
        return _stored_message(row) if row is not None else None

    def _t_open_body(self, message_id: str) -> BinaryIO:
        """The stored body, as a file: its own file, or the inline copy from `bodies`."""
        row = (
            self._t_conn()
            .execute(
                "SELECT m.body_path, b.data FROM messages m"
                " LEFT JOIN bodies b ON b.message_id = m.id WHERE m.id = ?",
                (message_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NoSuchEntry(f"no message {message_id}")
        if row["body_path"] is None:
            return io.BytesIO(row["data"])
        return (self.data_dir / str(row["body_path"])).open("rb")

    def read_body(self, message_id: str) -> Deferred[bytes]:
        def read() -> bytes:
            with self._t_open_body(message_id) as body:
                return body.read()

        return self._run(f"reading the body of {message_id}", read)

    def read_headers(self, message_id: str) -> Deferred[bytes]:
        def read() -> bytes:
            with self._t_open_body(message_id) as body:
                return header_section(body)

        return self._run(f"reading the headers of {message_id}", read)

    def message_count(self) -> Deferred[int]:
        return self._run(
            "counting messages",
            lambda: int(self._t_conn().execute("SELECT count(*) FROM messages").fetchone()[0]),
        )

    def read_body_range(self, message_id: str, offset: int, length: int) -> Deferred[bytes]:
        try:
            check_body_range(offset, length)
        except ValueError as e:
            return fail(e)
        return self._run(
            f"reading the body of {message_id}",
            lambda: self._t_read_range(message_id, offset, length),
        )

    def read_heads(self, message_ids: Sequence[str], length: int) -> Deferred[list[MessageHead]]:
        try:
            check_body_range(0, length)
        except ValueError as e:
            return fail(e)
        ids = list(message_ids)

        def read() -> list[MessageHead]:
            heads = []
            for message_id in ids:
                message = self._t_get_message(message_id)
                if message is not None:
                    heads.append(MessageHead(message, self._t_read_range(message_id, 0, length)))
            return heads

        return self._run(f"reading {len(ids)} message(s) ahead", read)

    def _t_read_range(self, message_id: str, offset: int, length: int) -> bytes:
        # An inline body is sliced by SQLite (substr counts bytes of a BLOB, from 1), so only the
        # range leaves the database; a file body is read from ``offset``.
        row = (
            self._t_conn()
            .execute(
                "SELECT m.body_path, substr(b.data, ?, ?) AS data FROM messages m"
                " LEFT JOIN bodies b ON b.message_id = m.id WHERE m.id = ?",
                (offset + 1, length, message_id),
            )
            .fetchone()
        )
        if row is None:
            raise NoSuchEntry(f"no message {message_id}")
        if row["body_path"] is None:
            return bytes(row["data"] or b"")
        with (self.data_dir / str(row["body_path"])).open("rb") as body:
            # Never ask for more than is there: read(n) allocates n bytes up front.
            available = os.fstat(body.fileno()).st_size - offset
            if available <= 0:
                return b""
            body.seek(offset)
            return body.read(min(length, available))

    def delete_messages(self, message_ids: Iterable[str]) -> Deferred[int]:
        ids = json.dumps(sorted(set(message_ids)))

        def delete() -> int:
            paths = self._t_transaction(lambda conn: _t_delete_unreferenced(conn, ids))
            # Only once the records are gone (a crash before this leaves an orphan file, which
            # the recovery sweep removes; unlinking first could lose a body whose delete rolls
            # back).
            for rel_path in paths:
                if rel_path is None:
                    continue
                try:
                    (self.data_dir / rel_path).unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    _log.warn(
                        "Could not delete the body file {path} ({error}); the next recovery "
                        "sweep removes it",
                        path=rel_path,
                        error=str(e),
                    )
            return len(paths)

        return self._run("deleting messages", delete)

    # -- IQueueStore

    def list_entries(self, domain: str | None = None) -> Deferred[list[QueueEntry]]:
        def query() -> list[QueueEntry]:
            conn = self._t_conn()
            if domain is None:
                rows = conn.execute(_ENTRY_SELECT + " ORDER BY q.seq")
            else:
                rows = conn.execute(_ENTRY_SELECT + " WHERE q.domain = ? ORDER BY q.seq", (domain,))
            return [_entry(row) for row in rows]

        return self._run("listing queue entries", query)

    def get_entry(self, entry_id: str) -> Deferred[QueueEntry | None]:
        return self._run(
            f"reading queue entry {entry_id}", lambda: _t_read_entry(self._t_conn(), entry_id)
        )

    def query_entries(
        self, query: QueueFilter, after_seq: int = 0, limit: int = 100
    ) -> Deferred[list[QueueEntry]]:
        if limit <= 0 or query.domains == () or query.states == ():
            return succeed([])
        keys: list[str] = []
        walks: list[tuple[object, ...]] = [()]
        if query.states is not None:
            keys.append("q.state = ?")
            walks = [(state,) for state in dict.fromkeys(query.states)]
        if query.domains is not None:
            keys.append("q.domain = ?")
            walks = [(*walk, domain) for walk in walks for domain in dict.fromkeys(query.domains)]
        conditions, params = _entry_conditions(query)
        statement = (
            _ENTRY_WALK
            + " WHERE "
            + " AND ".join([*keys, "q.seq > ?", *conditions])
            + " ORDER BY q.seq LIMIT ?"
        )

        def page() -> list[QueueEntry]:
            rows = _t_merged_walks(
                self._t_conn(), statement, walks, (after_seq, *params, limit), "seq", limit
            )
            return [_entry(row) for row in rows]

        return self._run("listing queue entries", page)

    def count_entries(self, query: QueueFilter) -> Deferred[int]:
        if query.domains == () or query.states == ():
            return succeed(0)
        conditions, params = _entry_conditions(query)
        keys: list[str] = []
        keys_params: list[object] = []
        if query.states is not None:
            keys.append("q.state IN (SELECT value FROM json_each(?))")
            keys_params.append(json.dumps(list(dict.fromkeys(query.states))))
        if query.domains is not None:
            keys.append("q.domain IN (SELECT value FROM json_each(?))")
            keys_params.append(json.dumps(list(dict.fromkeys(query.domains))))
        # The message's columns are needed only for a sender or age condition.
        joined = query.sender is not None or query.received_before is not None
        statement = _COUNT_ENTRIES + (
            " JOIN messages AS m ON m.id = q.message_id" if joined else ""
        )
        if keys or conditions:
            statement += " WHERE " + " AND ".join([*keys, *conditions])

        def count() -> int:
            row = self._t_conn().execute(statement, (*keys_params, *params)).fetchone()
            return int(row[0])

        return self._run("counting queue entries", count)

    def entries_for_message(self, message_id: str) -> Deferred[list[QueueEntry]]:
        def query() -> list[QueueEntry]:
            rows = self._t_conn().execute(
                _ENTRY_SELECT + " WHERE q.message_id = ? ORDER BY q.seq", (message_id,)
            )
            return [_entry(row) for row in rows]

        return self._run(f"reading the queue entries of {message_id}", query)

    def queue_stats(self) -> Deferred[list[QueueStats]]:
        def query() -> list[QueueStats]:
            rows = self._t_conn().execute(
                "SELECT q.domain AS domain, sum(q.state = ?) AS queued, sum(q.state = ?) AS held,"
                " min(m.received_at) AS oldest"
                " FROM queue AS q JOIN messages AS m ON m.id = q.message_id"
                " WHERE q.state IN (?, ?) GROUP BY q.domain ORDER BY q.domain",
                (QUEUED, HELD, QUEUED, HELD),
            )
            return [
                QueueStats(
                    domain=row["domain"],
                    queued=int(row["queued"]),
                    held=int(row["held"]),
                    oldest_received_at=float(row["oldest"]),
                )
                for row in rows
            ]

        return self._run("reading queue statistics", query)

    def due_domains(self, now: float) -> Deferred[list[str]]:
        def query() -> list[str]:
            # A loose index scan on queue_state_domain_due: walk the distinct domains that have
            # QUEUED entries (one index seek each, the recursive CTE), and keep those whose
            # earliest next attempt is due (one more seek).  Its cost grows with the number of
            # domains, not with the depth of their queues.
            rows = self._t_conn().execute(
                """
                WITH RECURSIVE queued (domain) AS (
                    SELECT min(domain) FROM queue WHERE state = :queued
                    UNION ALL
                    SELECT (
                        SELECT min(domain) FROM queue
                        WHERE state = :queued AND domain > queued.domain
                    )
                    FROM queued WHERE queued.domain IS NOT NULL
                )
                SELECT domain FROM queued
                WHERE domain IS NOT NULL AND (
                    SELECT min(next_attempt_at) FROM queue
                    WHERE state = :queued AND domain = queued.domain
                ) <= :now
                ORDER BY domain
                """,
                {"queued": QUEUED, "now": now},
            )
            return [row["domain"] for row in rows]

        return self._run("finding domains with mail due", query)

    def due_entries(self, domain: str, now: float, limit: int) -> Deferred[list[QueueEntry]]:
        if limit <= 0:
            return succeed([])

        def query() -> list[QueueEntry]:
            # The inner query picks the `limit` first due entries from queue_state_domain_due
            # alone (the index holds seq, the rowid); only those rows are then read and joined.
            conn = self._t_conn()
            rows = conn.execute(
                "SELECT q.*, m.sender, m.header_message_id, m.size, m.received_at"
                " FROM queue AS q JOIN messages AS m ON m.id = q.message_id"
                " WHERE q.seq IN ("
                "  SELECT seq FROM queue WHERE state = ? AND domain = ? AND next_attempt_at <= ?"
                "  ORDER BY seq LIMIT ?"
                " ) ORDER BY q.seq",
                (QUEUED, domain, now, limit),
            )
            entries = [_entry(row) for row in rows]
            if len(entries) == limit:
                # The rest of the last message, which the limit must not cut in two (a few
                # rows, found by queue_message_id).
                last = entries[-1]
                rows = conn.execute(
                    _ENTRY_SELECT + " WHERE q.message_id = ? AND q.seq > ? AND q.state = ?"
                    " AND q.domain = ? AND q.next_attempt_at <= ? ORDER BY q.seq",
                    (last.message_id, last.seq, QUEUED, domain, now),
                )
                entries += [_entry(row) for row in rows]
            return entries

        return self._run(f"reading the entries due for {domain}", query)

    def record_result(self, result: AttemptResult) -> Deferred[QueueEntry]:
        """
        Record a delivery attempt through group commit: it shares the next batch (one executor
        call, one transaction) with every message commit and result requested meanwhile, and its
        Deferred fires once that transaction is durable.
        """
        try:
            check_result(result)
        except QueueStateError as e:
            return fail(e)
        pending = _PendingResult(result)
        self._pending_results.append(pending)
        if not self._batch_running:
            self._start_batch()
        return pending.deferred

    def record_results(self, results: Sequence[AttemptResult]) -> Deferred[list[QueueEntry]]:
        """
        One transaction, durable when it fires (like an admin's move): the entries are read in
        one statement (the unique index on id, one JSON parameter), changed by the same rules as
        record_result, and written back with one prepared statement.
        """
        results = list(results)
        try:
            for result in results:
                check_result(result)
        except QueueStateError as e:
            return fail(e)
        if not results:
            return succeed([])
        ids = json.dumps(sorted({result.entry_id for result in results}))

        def record(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(
                _ENTRY_SELECT + " JOIN json_each(?) AS wanted ON wanted.value = q.id", (ids,)
            )
            entries = {row["id"]: _entry(row) for row in rows}
            changed = apply_results(entries, results)
            final = {entry.id: entry for entry in changed}  # an id named twice: written once
            conn.executemany(_UPDATE_ENTRY, [_changed_fields(e) for e in final.values()])
            return changed

        return self._run(
            f"recording {len(results)} delivery result(s)",
            lambda: self._t_transaction(record),
        )

    def defer_due(
        self, domain: str, due: float, reason: str, at: float, next_attempt_at: float
    ) -> Deferred[int]:
        """One UPDATE over the (state, domain, next_attempt_at) index, durable when it fires;
        the same change as L{apply_result} makes for a deferral of a QUEUED entry."""

        def defer(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE queue SET attempts = attempts + 1, last_error = ?, last_attempt_at = ?,"
                " next_attempt_at = ? WHERE state = ? AND domain = ? AND next_attempt_at <= ?"
                " AND outbound = 0",
                (reason, at, next_attempt_at, QUEUED, domain, due),
            )
            return cursor.rowcount

        return self._run(
            f"deferring the entries due for {domain}", lambda: self._t_transaction(defer)
        )

    def sync_results(self) -> Deferred[None]:
        # The storage thread runs calls in order: every result whose Deferred has fired was
        # committed before this fsync.
        return self._run("syncing delivery results to disk", self._t_sync_wal)

    def change_state(
        self, entry_id: str, from_states: tuple[str, ...], to_state: str, at: float, note: str
    ) -> Deferred[QueueEntry]:
        def change(conn: sqlite3.Connection) -> QueueEntry:
            entry = _t_read_entry(conn, entry_id)
            if entry is None:
                raise NoSuchEntry(f"no queue entry {entry_id}")
            changed = apply_change(entry, from_states, to_state, at, note)
            _t_write_entry(conn, changed)
            return changed

        return self._run(
            f"moving queue entry {entry_id} to {to_state}", lambda: self._t_transaction(change)
        )

    def change_states(
        self,
        entry_ids: Sequence[str],
        from_states: tuple[str, ...],
        to_state: str,
        at: float,
        note: str,
    ) -> Deferred[list[QueueEntry]]:
        """One transaction, durable when it fires: the entries read in one statement (as in
        L{record_results}), moved by the rules of L{change_state}, written back with one
        prepared statement."""
        ids = list(entry_ids)
        try:
            check_change_target(to_state)
        except QueueStateError as e:
            return fail(e)
        if not ids:
            return succeed([])
        wanted = json.dumps(sorted(set(ids)))

        def change(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(
                _ENTRY_SELECT + " JOIN json_each(?) AS wanted ON wanted.value = q.id", (wanted,)
            )
            entries = {row["id"]: _entry(row) for row in rows}
            changed = apply_changes(entries, ids, from_states, to_state, at, note)
            conn.executemany(_UPDATE_ENTRY, [_changed_fields(e) for e in changed])
            return changed

        return self._run(
            f"moving {len(ids)} queue entries to {to_state}", lambda: self._t_transaction(change)
        )

    def reroute(
        self, entry_id: str, recipient: str, domain: str, outbound: bool, at: float, note: str
    ) -> Deferred[QueueEntry]:
        def change(conn: sqlite3.Connection) -> QueueEntry:
            entry = _t_read_entry(conn, entry_id)
            if entry is None:
                raise NoSuchEntry(f"no queue entry {entry_id}")
            changed = apply_reroute(entry, recipient, domain, outbound, at, note)
            conn.execute(
                "UPDATE queue SET recipient = ?, domain = ?, outbound = ? WHERE id = ?",
                (changed.recipient, changed.domain, int(changed.outbound), changed.id),
            )
            _t_write_entry(conn, changed)
            return changed

        return self._run(
            f"routing queue entry {entry_id} to {recipient}", lambda: self._t_transaction(change)
        )

    def last_delivered_at(self, domain: str) -> Deferred[float | None]:
        def query() -> float | None:
            row = (
                self._t_conn()
                .execute(
                    "SELECT max(delivered_at) FROM queue WHERE domain = ? AND state = ?",
                    (domain, DELIVERED),
                )
                .fetchone()
            )
            return _optional_float(row[0])

        return self._run(f"reading the last delivery for {domain}", query)

    def mark_delay_notified(self, entry_ids: Sequence[str], at: float) -> Deferred[None]:
        ids = json.dumps(list(entry_ids))

        def mark(conn: sqlite3.Connection) -> None:
            # One lookup in the unique index on id per id; an unknown id matches nothing.
            conn.execute(
                "UPDATE queue SET delay_notified_at = ?"
                " WHERE id IN (SELECT value FROM json_each(?)) AND delay_notified_at IS NULL",
                (at, ids),
            )

        # Durable before it fires, like an admin's move: a notice must not be sent twice.
        return self._run("recording delay notices", lambda: self._t_transaction(mark))

    def received_since(self, domain: str, since: float) -> Deferred[tuple[int, int]]:
        def query() -> tuple[int, int]:
            # The domain's entries through queue_domain_seq; received_at lives on the message.
            row = (
                self._t_conn()
                .execute(
                    "SELECT count(*), coalesce(sum(q.state = ?), 0)"
                    " FROM queue AS q JOIN messages AS m ON m.id = q.message_id"
                    " WHERE q.domain = ? AND m.received_at >= ?",
                    (DELIVERED, domain, since),
                )
                .fetchone()
            )
            return int(row[0]), int(row[1])

        return self._run(f"counting what {domain} received since {since}", query)

    def relay_activity(
        self, since: float, domains: Sequence[str] | None = None
    ) -> Deferred[list[RelayActivity]]:
        # Deliveries through the partial index on delivered_at (migration 15): a walk of the
        # window, however many were delivered before it.  Only a DELIVERED entry has one.  The
        # index is named: without statistics the planner would rather walk a domain index in
        # GROUP BY order, which reads the whole queue.  The rest by state, through (state,
        # domain, seq): the waiting entries (the queue's depth) and the bounced ones.
        only = ""
        filters: tuple[object, ...] = ()
        if domains is not None:
            only = " AND domain IN (SELECT value FROM json_each(?))"
            filters = (json.dumps(list(domains)),)
        # ``only`` is one of two fixed fragments; every value is a parameter.
        delivered = (
            "SELECT domain, count(*), max(delivered_at)"  # noqa: S608
            " FROM queue INDEXED BY queue_delivered_at"
            f" WHERE delivered_at >= ?{only} GROUP BY domain"
        )
        others = (
            "SELECT domain, state, count(*) FROM queue"  # noqa: S608
            f" WHERE state IN (?, ?, ?) AND last_attempt_at >= ?{only}"
            " AND (state != ? OR attempts > 0) GROUP BY domain, state"
        )

        def query() -> list[RelayActivity]:
            conn = self._t_conn()
            found: dict[str, RelayActivity] = {}
            for domain, n, last in conn.execute(delivered, (since, *filters)):
                found[domain] = RelayActivity(
                    domain, delivered=int(n), last_delivered_at=_optional_float(last)
                )
            params = (QUEUED, HELD, BOUNCED, since, *filters, QUEUED)
            for domain, state, n in conn.execute(others, params):
                was = found.get(domain) or RelayActivity(domain)
                if state == QUEUED:
                    found[domain] = replace(was, deferred=int(n))
                elif state == HELD:
                    found[domain] = replace(was, held=int(n))
                else:
                    found[domain] = replace(was, bounced=int(n))
            return [found[name] for name in sorted(found)]

        return self._run("reading the relay's activity", query)

    # -- IShadowStore

    def list_shadow_copies(self, recipient: str | None = None) -> Deferred[list[ShadowCopy]]:
        def query() -> list[ShadowCopy]:
            conn = self._t_conn()
            if recipient is None:
                rows = conn.execute(
                    "SELECT message_id, recipient, mailbox, created_at FROM shadow_copies"
                    " ORDER BY id"
                )
            else:
                rows = conn.execute(
                    "SELECT message_id, recipient, mailbox, created_at FROM shadow_copies"
                    " WHERE recipient = ? ORDER BY id",
                    (recipient,),
                )
            return [
                ShadowCopy(
                    message_id=row["message_id"],
                    recipient=row["recipient"],
                    mailbox=row["mailbox"],
                    created_at=float(row["created_at"]),
                )
                for row in rows
            ]

        return self._run("listing shadow copies", query)

    # -- IEventStore

    def record_event(
        self,
        kind: str,
        message: str,
        domain: str | None = None,
        data: dict[str, object] | None = None,
    ) -> Deferred[Event]:
        at = self.clock.seconds()
        try:
            payload = json.dumps(data or {})
        except (TypeError, ValueError) as e:
            return fail(StorageError(f"event data is not JSON: {e}"))

        def insert(conn: sqlite3.Connection) -> Event:
            cursor = conn.execute(
                "INSERT INTO events (at, kind, domain, message, data) VALUES (?, ?, ?, ?, ?)",
                (at, kind, domain, message, payload),
            )
            assert cursor.lastrowid is not None
            return Event(cursor.lastrowid, at, kind, message, domain, json.loads(payload))

        return self._run(f"recording a {kind} event", lambda: self._t_transaction(insert))

    def record_events(self, events: Sequence[NewEvent]) -> Deferred[list[Event]]:
        at = self.clock.seconds()
        events = tuple(events)
        try:
            payloads = [json.dumps(e.data) for e in events]
        except (TypeError, ValueError) as e:
            return fail(StorageError(f"event data is not JSON: {e}"))
        if not payloads:
            return succeed([])

        def insert(conn: sqlite3.Connection) -> list[Event]:
            recorded = []
            for new, payload in zip(events, payloads, strict=True):
                cursor = conn.execute(
                    "INSERT INTO events (at, kind, domain, message, data) VALUES (?, ?, ?, ?, ?)",
                    (at, new.kind, new.domain, new.message, payload),
                )
                assert cursor.lastrowid is not None
                data = json.loads(payload)
                recorded.append(
                    Event(cursor.lastrowid, at, new.kind, new.message, new.domain, data)
                )
            return recorded

        return self._run(f"recording {len(payloads)} events", lambda: self._t_transaction(insert))

    def list_events(self, domain: str | None = None, limit: int = 100) -> Deferred[list[Event]]:
        if limit <= 0:
            return succeed([])

        def query() -> list[Event]:
            conn = self._t_conn()
            if domain is None:
                rows = conn.execute(
                    "SELECT * FROM events ORDER BY id DESC LIMIT ?",
                    (limit,),
                )
            else:
                rows = conn.execute(
                    "SELECT * FROM events WHERE domain = ? ORDER BY id DESC LIMIT ?",
                    (domain, limit),
                )
            return [_event(row) for row in rows][::-1]

        return self._run("listing events", query)

    def query_events(
        self, query: EventFilter, before_id: int | None = None, limit: int = 100
    ) -> Deferred[list[Event]]:
        if limit <= 0 or query.domains == () or query.kinds == ():
            return succeed([])
        keys: list[str] = []
        walks: list[tuple[object, ...]] = [()]
        if query.domains is not None:
            keys.append("domain = ?")
            walks = [(domain,) for domain in dict.fromkeys(query.domains)]
        conditions, params = _event_conditions(query)
        if before_id is not None:
            conditions.insert(0, "id < ?")
            params.insert(0, before_id)
        where = " AND ".join([*keys, *conditions])
        statement = _EVENT_WALK + (" WHERE " + where if where else "") + " ORDER BY id DESC LIMIT ?"

        def page() -> list[Event]:
            rows = _t_merged_walks(
                self._t_conn(), statement, walks, (*params, limit), "id", limit, descending=True
            )
            return [_event(row) for row in rows]

        return self._run("listing events", page)

    # -- IMonitorStore

    def get_status(self, domain: str) -> Deferred[DomainStatus | None]:
        def query() -> DomainStatus | None:
            row = (
                self._t_conn()
                .execute("SELECT * FROM domain_status WHERE domain = ?", (domain,))
                .fetchone()
            )
            return _status(row) if row is not None else None

        return self._run(f"reading the status of {domain}", query)

    def list_statuses(self) -> Deferred[list[DomainStatus]]:
        def query() -> list[DomainStatus]:
            rows = self._t_conn().execute("SELECT * FROM domain_status ORDER BY domain")
            return [_status(row) for row in rows]

        return self._run("listing domain statuses", query)

    def save_status(self, status: DomainStatus) -> Deferred[DomainStatus]:
        def upsert(conn: sqlite3.Connection) -> DomainStatus:
            conn.execute(
                "INSERT OR REPLACE INTO domain_status (domain, health, since, consecutive_failures,"
                " consecutive_successes, last_probe_at, last_probe_error, last_delivery_at,"
                " failing_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    status.domain,
                    status.health,
                    status.since,
                    status.consecutive_failures,
                    status.consecutive_successes,
                    status.last_probe_at,
                    status.last_probe_error,
                    status.last_delivery_at,
                    status.failing_since,
                ),
            )
            return status

        return self._run(
            f"saving the status of {status.domain}", lambda: self._t_transaction(upsert)
        )

    def open_outage(self, domain: str, started_at: float, reason: str) -> Deferred[Outage]:
        def insert(conn: sqlite3.Connection) -> Outage:
            row = _t_open_outage(conn, domain)
            if row is not None:
                return _outage(row)
            cursor = conn.execute(
                "INSERT INTO outages (domain, started_at, ended_at, reason) VALUES (?, ?, NULL, ?)",
                (domain, started_at, reason),
            )
            assert cursor.lastrowid is not None
            return Outage(cursor.lastrowid, domain, started_at, reason)

        return self._run(f"opening an outage of {domain}", lambda: self._t_transaction(insert))

    def close_outage(self, domain: str, ended_at: float) -> Deferred[Outage | None]:
        def close(conn: sqlite3.Connection) -> Outage | None:
            row = _t_open_outage(conn, domain)
            if row is None:
                return None
            conn.execute("UPDATE outages SET ended_at = ? WHERE id = ?", (ended_at, row["id"]))
            return replace(_outage(row), ended_at=ended_at)

        return self._run(f"closing the outage of {domain}", lambda: self._t_transaction(close))

    def list_outages(self, domain: str | None = None, limit: int = 100) -> Deferred[list[Outage]]:
        if limit <= 0:
            return succeed([])

        def query() -> list[Outage]:
            conn = self._t_conn()
            if domain is None:
                rows = conn.execute("SELECT * FROM outages ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = conn.execute(
                    "SELECT * FROM outages WHERE domain = ? ORDER BY id DESC LIMIT ?",
                    (domain, limit),
                )
            return [_outage(row) for row in rows][::-1]

        return self._run("listing outages", query)

    def latest_outages(self) -> Deferred[list[Outage]]:
        def query() -> list[Outage]:
            # One seek per domain in outages_domain_id for its newest id.
            rows = self._t_conn().execute(
                "SELECT * FROM outages WHERE id IN (SELECT max(id) FROM outages GROUP BY domain)"
                " ORDER BY domain"
            )
            return [_outage(row) for row in rows]

        return self._run("listing the latest outages", query)

    # -- IControlStore

    def request(self, action: str, domain: str | None, at: float) -> Deferred[int]:
        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO control_requests (action, domain, at) VALUES (?, ?, ?)",
                (action, domain, at),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return self._run(f"requesting a {action}", lambda: self._t_transaction(insert))

    def requests_after(self, last_id: int) -> Deferred[list[ControlRequest]]:
        def query() -> list[ControlRequest]:
            rows = self._t_conn().execute(
                "SELECT * FROM control_requests WHERE id > ? ORDER BY id", (last_id,)
            )
            return [
                ControlRequest(int(row["id"]), row["action"], row["domain"], float(row["at"]))
                for row in rows
            ]

        return self._run("reading control requests", query)

    def last_request_id(self) -> Deferred[int]:
        def query() -> int:
            row = self._t_conn().execute("SELECT max(id) FROM control_requests").fetchone()
            return int(row[0] or 0)

        return self._run("reading the last control request", query)

    # -- IMailboxStore
    #
    # Names, users and flags are checked and canonicalised on the calling thread (a refusal
    # fails the Deferred at once, without a storage round trip); every change is one
    # transaction on the storage thread.  The clock is read on the calling thread too.

    def _mailbox_call(
        self, doing: str, prepare: Callable[[], Callable[[sqlite3.Connection], T]]
    ) -> Deferred[T]:
        """``prepare()`` checks the arguments; its result runs in one transaction."""
        try:
            change = prepare()
        except StrataError as e:
            return fail(e)
        return self._run(doing, lambda: self._t_transaction(change))

    def _mailbox_query(
        self, doing: str, prepare: Callable[[], Callable[[sqlite3.Connection], T]]
    ) -> Deferred[T]:
        """Like L{_mailbox_call}, for reads: no write transaction."""
        try:
            query = prepare()
        except StrataError as e:
            return fail(e)
        return self._run(doing, lambda: query(self._t_conn()))

    def ensure_user(self, user: str) -> Deferred[list[MailboxInfo]]:
        now = self.clock.seconds()

        def prepare() -> Callable[[sqlite3.Connection], list[MailboxInfo]]:
            owner = normalize_user(user)

            def ensure(conn: sqlite3.Connection) -> list[MailboxInfo]:
                _t_ensure_defaults(conn, owner, now)
                return _t_mailboxes(conn, owner)

            return ensure

        return self._mailbox_call(f"creating the mailboxes of {user}", prepare)

    def list_mailboxes(self, user: str) -> Deferred[list[MailboxInfo]]:
        def prepare() -> Callable[[sqlite3.Connection], list[MailboxInfo]]:
            owner = normalize_user(user)
            return lambda conn: _t_mailboxes(conn, owner)

        return self._mailbox_query(f"listing the mailboxes of {user}", prepare)

    def get_mailbox(self, user: str, name: str) -> Deferred[MailboxInfo | None]:
        def prepare() -> Callable[[sqlite3.Connection], MailboxInfo | None]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)

            def get(conn: sqlite3.Connection) -> MailboxInfo | None:
                row = _t_find_mailbox(conn, owner, canonical)
                return _mailbox_info(row) if row is not None else None

            return get

        return self._mailbox_query(f"reading mailbox {name} of {user}", prepare)

    def create_mailbox(
        self, user: str, name: str, special_use: str | None = None
    ) -> Deferred[MailboxInfo]:
        now = self.clock.seconds()

        def prepare() -> Callable[[sqlite3.Connection], MailboxInfo]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)
            use = normalize_special_use(special_use)

            def create(conn: sqlite3.Connection) -> MailboxInfo:
                if _t_find_mailbox(conn, owner, canonical) is not None:
                    raise MailboxExists(f"mailbox {canonical!r} exists")
                _t_make_parents(conn, owner, canonical, now)
                return _mailbox_info(_t_new_mailbox(conn, owner, canonical, use, False, now))

            return create

        return self._mailbox_call(f"creating mailbox {name} of {user}", prepare)

    def delete_mailbox(self, user: str, name: str) -> Deferred[list[str]]:
        def prepare() -> Callable[[sqlite3.Connection], list[str]]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)
            if canonical == INBOX:
                raise MailboxRefused("INBOX cannot be deleted")

            def delete(conn: sqlite3.Connection) -> list[str]:
                row = _t_mailbox(conn, owner, canonical)
                if _t_inferiors(conn, owner, canonical):
                    raise MailboxHasChildren(
                        f"mailbox {canonical!r} has inferiors; delete them first"
                    )
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT message_id FROM mailbox_messages WHERE mailbox_id = ?"
                        " ORDER BY message_id",
                        (row["id"],),
                    )
                ]
                conn.execute("DELETE FROM mailbox_messages WHERE mailbox_id = ?", (row["id"],))
                # RFC 3501 §6.3.4: the subscription stays (§6.3.6: the server MUST NOT remove
                # a name from the subscription list because its mailbox no longer exists).
                conn.execute("DELETE FROM mailboxes WHERE id = ?", (row["id"],))
                return ids

            return delete

        return self._mailbox_call(f"deleting mailbox {name} of {user}", prepare)

    def rename_mailbox(self, user: str, old: str, new: str) -> Deferred[MailboxInfo]:
        now = self.clock.seconds()

        def prepare() -> Callable[[sqlite3.Connection], MailboxInfo]:
            owner = normalize_user(user)
            old_name, new_name = normalize_mailbox_name(old), normalize_mailbox_name(new)

            def rename(conn: sqlite3.Connection) -> MailboxInfo:
                row = _t_mailbox(conn, owner, old_name)
                if _t_find_mailbox(conn, owner, new_name) is not None:
                    raise MailboxExists(f"mailbox {new_name!r} exists")
                if is_inferior(new_name, old_name):
                    raise MailboxRefused(f"cannot rename {old_name!r} under itself")
                if old_name == INBOX:
                    # RFC 3501 §6.3.5: INBOX's messages move to the new mailbox; INBOX stays.
                    _t_make_parents(conn, owner, new_name, now)
                    target = _t_new_mailbox(conn, owner, new_name, None, False, now)
                    uids = [
                        r[0]
                        for r in conn.execute(
                            "SELECT uid FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid",
                            (row["id"],),
                        )
                    ]
                    _t_copy(conn, row, uids, target, move=True)
                    return _mailbox_info(_t_mailbox(conn, owner, new_name))
                moving = [(row["id"], old_name)] + [
                    (r["id"], r["name"]) for r in _t_inferiors(conn, owner, old_name)
                ]
                for mailbox_id, name in moving:
                    renamed = new_name + name[len(old_name) :]
                    conn.execute(
                        "UPDATE mailboxes SET name = ? WHERE id = ?", (renamed, mailbox_id)
                    )
                    _t_move_subscription(conn, owner, name, renamed)
                _t_make_parents(conn, owner, new_name, now)
                return _mailbox_info(_t_mailbox(conn, owner, new_name))

            return rename

        return self._mailbox_call(f"renaming mailbox {old} of {user}", prepare)

    def subscribe(self, user: str, name: str) -> Deferred[None]:
        def prepare() -> Callable[[sqlite3.Connection], None]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)

            def add(conn: sqlite3.Connection) -> None:
                _t_mailbox(conn, owner, canonical)  # only an existing one (§6.3.6 allows it)
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions (owner, name) VALUES (?, ?)",
                    (owner, canonical),
                )

            return add

        return self._mailbox_call(f"subscribing {user} to {name}", prepare)

    def unsubscribe(self, user: str, name: str) -> Deferred[None]:
        def prepare() -> Callable[[sqlite3.Connection], None]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)

            def remove(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "DELETE FROM subscriptions WHERE owner = ? AND name = ?", (owner, canonical)
                )

            return remove

        return self._mailbox_call(f"unsubscribing {user} from {name}", prepare)

    def list_subscriptions(self, user: str) -> Deferred[list[str]]:
        def prepare() -> Callable[[sqlite3.Connection], list[str]]:
            owner = normalize_user(user)

            def listing(conn: sqlite3.Connection) -> list[str]:
                rows = conn.execute(
                    "SELECT name FROM subscriptions WHERE owner = ? ORDER BY name", (owner,)
                )
                return [r[0] for r in rows]

            return listing

        return self._mailbox_query(f"listing the subscriptions of {user}", prepare)

    def claim_recent(self, user: str, name: str) -> Deferred[MailboxInfo]:
        def prepare() -> Callable[[sqlite3.Connection], MailboxInfo]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)

            def claim(conn: sqlite3.Connection) -> MailboxInfo:
                row = _t_mailbox(conn, owner, canonical)
                if row["first_recent"] != row["uidnext"]:
                    conn.execute(
                        "UPDATE mailboxes SET first_recent = uidnext WHERE id = ?", (row["id"],)
                    )
                return _mailbox_info(row)  # as it was before the claim

            return claim

        return self._mailbox_call(f"claiming the recent messages of {name} of {user}", prepare)

    def mailbox_status(self, user: str, name: str) -> Deferred[MailboxStatus]:
        def prepare() -> Callable[[sqlite3.Connection], MailboxStatus]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(name)

            def status(conn: sqlite3.Connection) -> MailboxStatus:
                row = _t_mailbox(conn, owner, canonical)
                counts = conn.execute(
                    "SELECT count(*), coalesce(sum(instr(flags, ?) = 0), 0),"
                    " coalesce(sum(uid >= ?), 0)"
                    " FROM mailbox_messages WHERE mailbox_id = ?",
                    (SEEN, row["first_recent"], row["id"]),
                ).fetchone()
                return MailboxStatus(
                    messages=int(counts[0]),
                    recent=int(counts[2]),
                    uidnext=int(row["uidnext"]),
                    uidvalidity=int(row["uidvalidity"]),
                    unseen=int(counts[1]),
                    highest_modseq=int(row["highest_modseq"]),
                )

            return status

        return self._mailbox_query(f"reading the status of {name} of {user}", prepare)

    def add_message(
        self,
        user: str,
        mailbox: str,
        message_id: str,
        internal_date: float,
        flags: Iterable[str] = (),
        mime_index: bytes | None = None,
    ) -> Deferred[MailMessage]:
        def prepare() -> Callable[[sqlite3.Connection], MailMessage]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(mailbox)
            wanted = normalize_flags(flags)

            def add(conn: sqlite3.Connection) -> MailMessage:
                return _t_add_message(
                    conn, owner, canonical, message_id, internal_date, wanted, mime_index
                )

            return add

        return self._mailbox_call(f"adding {message_id} to {mailbox} of {user}", prepare)

    def list_messages(
        self,
        user: str,
        mailbox: str,
        changed_since: int | None = None,
        uids: Iterable[int] | None = None,
    ) -> Deferred[list[MailMessage]]:
        d = self.mailbox_listing(user, mailbox, changed_since, uids)
        return d.addCallback(lambda listing: list(listing.messages))

    def mailbox_listing(
        self,
        user: str,
        mailbox: str,
        changed_since: int | None = None,
        uids: Iterable[int] | None = None,
    ) -> Deferred[MailboxListing]:
        wanted = None if uids is None else json.dumps(sorted(set(uids)))

        def prepare() -> Callable[[sqlite3.Connection], MailboxListing]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(mailbox)

            def listing(conn: sqlite3.Connection) -> MailboxListing:
                # One read transaction: the row, the messages and the count are of one moment.
                conn.execute("BEGIN")
                try:
                    row = _t_mailbox(conn, owner, canonical)
                    query = _MAIL_MESSAGE_SELECT + " WHERE mm.mailbox_id = ?"
                    parameters: list[object] = [row["id"]]
                    if wanted is not None:
                        query += " AND mm.uid IN (SELECT value FROM json_each(?))"
                        parameters.append(wanted)
                    if changed_since is not None:
                        count = conn.execute(
                            query.replace(_MAIL_MESSAGE_SELECT, _COUNT_SELECT, 1), parameters
                        ).fetchone()[0]
                        query += " AND mm.modseq > ?"
                        parameters.append(changed_since)
                    rows = conn.execute(query + " ORDER BY mm.uid", parameters)
                    messages = [_mail_message(r) for r in rows]
                    if changed_since is None:
                        count = len(messages)  # all of them were listed
                finally:
                    conn.execute("COMMIT")
                return MailboxListing(_mailbox_info(row), messages, int(count))

            return listing

        return self._mailbox_query(f"listing the messages of {mailbox} of {user}", prepare)

    def mime_indexes(
        self, user: str, mailbox: str, uids: Iterable[int]
    ) -> Deferred[dict[int, bytes]]:
        def prepare() -> Callable[[sqlite3.Connection], dict[int, bytes]]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(mailbox)
            wanted = sorted(set(uids))

            def read(conn: sqlite3.Connection) -> dict[int, bytes]:
                row = _t_mailbox(conn, owner, canonical)
                rows = conn.execute(
                    "SELECT mm.uid, x.data FROM mailbox_messages AS mm"
                    " JOIN message_mime AS x ON x.message_id = mm.message_id"
                    " WHERE mm.mailbox_id = ? AND mm.uid IN (SELECT value FROM json_each(?))",
                    (row["id"], json.dumps(wanted)),
                )
                found = {int(r[0]): bytes(r[1]) for r in rows}
                return dict(sorted(found.items()))

            return read

        return self._mailbox_query(f"reading MIME indexes in {mailbox} of {user}", prepare)

    def store_flags(
        self,
        user: str,
        mailbox: str,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        unchanged_since: int | None = None,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[FlagUpdate]:
        def prepare() -> Callable[[sqlite3.Connection], FlagUpdate]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(mailbox)
            wanted = normalize_flags(flags)
            apply_flags(frozenset(), mode, wanted)  # refuses an unknown mode here
            targets = sorted(set(uids))

            def store(conn: sqlite3.Connection) -> FlagUpdate:
                row = _t_mailbox(conn, owner, canonical, uidvalidity)
                current = _t_messages_by_uid(conn, row["id"], targets)
                failed = [
                    m.uid
                    for m in current
                    if unchanged_since is not None and m.modseq > unchanged_since
                ]
                passed = [m for m in current if m.uid not in failed]
                changes = {m.uid: apply_flags(m.flags, mode, wanted) for m in passed}
                changed = [m.uid for m in passed if changes[m.uid] != m.flags]
                highest = int(row["highest_modseq"])
                if changed:
                    highest = _t_bump_modseq(conn, row["id"])
                    conn.executemany(
                        "UPDATE mailbox_messages SET flags = ?, modseq = ?"
                        " WHERE mailbox_id = ? AND uid = ?",
                        [(_flags_text(changes[uid]), highest, row["id"], uid) for uid in changed],
                    )
                after = [
                    replace(m, flags=changes[m.uid], modseq=highest) if m.uid in changed else m
                    for m in passed
                ]
                return FlagUpdate(tuple(after), tuple(changed), tuple(failed), highest)

            return store

        return self._mailbox_call(f"storing flags in {mailbox} of {user}", prepare)

    def _copy_call(
        self,
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        move: bool,
        uidvalidity: int | None,
    ) -> Deferred[CopyResult]:
        def prepare() -> Callable[[sqlite3.Connection], CopyResult]:
            owner = normalize_user(user)
            source_name, target_name = (
                normalize_mailbox_name(source),
                normalize_mailbox_name(target),
            )
            wanted = sorted(set(uids))

            def copy(conn: sqlite3.Connection) -> CopyResult:
                source_row = _t_mailbox(conn, owner, source_name, uidvalidity)
                target_row = _t_mailbox(conn, owner, target_name)
                return _t_copy(conn, source_row, wanted, target_row, move=move)

            return copy

        verb = "moving" if move else "copying"
        return self._mailbox_call(f"{verb} messages from {source} to {target} of {user}", prepare)

    def copy_messages(
        self,
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[CopyResult]:
        return self._copy_call(user, source, uids, target, False, uidvalidity)

    def move_messages(
        self,
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[CopyResult]:
        return self._copy_call(user, source, uids, target, True, uidvalidity)

    def expunge(
        self,
        user: str,
        mailbox: str,
        uids: Iterable[int] | None = None,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[list[MailMessage]]:
        def prepare() -> Callable[[sqlite3.Connection], list[MailMessage]]:
            owner, canonical = normalize_user(user), normalize_mailbox_name(mailbox)
            among = None if uids is None else set(uids)

            def remove(conn: sqlite3.Connection) -> list[MailMessage]:
                row = _t_mailbox(conn, owner, canonical, uidvalidity)
                rows = conn.execute(
                    _MAIL_MESSAGE_SELECT
                    + " WHERE mm.mailbox_id = ? AND instr(mm.flags, ?) > 0 ORDER BY mm.uid",
                    (row["id"], DELETED_FLAG),
                )
                gone = [
                    m
                    for m in (_mail_message(r) for r in rows)
                    if DELETED_FLAG in m.flags and (among is None or m.uid in among)
                ]
                if gone:
                    _t_bump_modseq(conn, row["id"])
                    conn.executemany(
                        "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
                        [(row["id"], m.uid) for m in gone],
                    )
                return gone

            return remove

        return self._mailbox_call(f"expunging {mailbox} of {user}", prepare)

    def purge_older_than(self, domain: str, before: float) -> Deferred[list[PurgedMessage]]:
        def prepare() -> Callable[[sqlite3.Connection], list[PurgedMessage]]:
            canonical = normalize_domain(domain)  # InvalidDomainName fails the Deferred

            def purge(conn: sqlite3.Connection) -> list[PurgedMessage]:
                rows = conn.execute(
                    "SELECT b.id, b.owner, b.name, mm.uid, mm.message_id"
                    " FROM mailboxes AS b JOIN mailbox_messages AS mm ON mm.mailbox_id = b.id"
                    " WHERE b.domain = ? AND mm.internal_date < ?"
                    " ORDER BY b.owner, b.name, mm.uid",
                    (canonical, before),
                ).fetchall()
                for mailbox_id in sorted({int(r["id"]) for r in rows}):
                    _t_bump_modseq(conn, mailbox_id)
                conn.executemany(
                    "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
                    [(r["id"], r["uid"]) for r in rows],
                )
                return [
                    PurgedMessage(r["owner"], r["name"], int(r["uid"]), r["message_id"])
                    for r in rows
                ]

            return purge

        return self._mailbox_call(f"purging old shadow mail of {domain}", prepare)

    def unreferenced_messages(
        self, message_ids: Iterable[str] | None = None
    ) -> Deferred[list[str]]:
        ids = None if message_ids is None else json.dumps(sorted(set(message_ids)))

        def query() -> list[str]:
            return [r["id"] for r in _t_unreferenced(self._t_conn(), ids)]

        return self._run("finding unreferenced messages", query)

    # -- ICredentialStore
    #
    # Addresses, domains and hashes are checked on the calling thread (L{_mailbox_call}); each
    # change is one transaction that also bumps ``meta.credentials_version``.

    def _change_users(
        self, domain: str, users: Iterable[UserCredential], replace_all: bool
    ) -> Deferred[UserListChange]:
        def prepare() -> Callable[[sqlite3.Connection], UserListChange]:
            wanted = normalize_user_list(domain, users)
            key = normalize_domain(domain)

            def change(conn: sqlite3.Connection) -> UserListChange:
                current = {
                    row[0]: row[1]
                    for row in conn.execute(
                        "SELECT address, password_hash FROM users WHERE domain = ?", (key,)
                    )
                }
                added = sum(1 for a in wanted if a not in current)
                unchanged = sum(1 for a, h in wanted.items() if current.get(a) == h)
                removed = 0
                if replace_all:
                    gone = [a for a in current if a not in wanted]
                    removed = len(gone)
                    conn.executemany("DELETE FROM users WHERE address = ?", [(a,) for a in gone])
                    conn.executemany(
                        "DELETE FROM send_as_aliases WHERE user = ?", [(a,) for a in gone]
                    )
                conn.executemany(
                    "INSERT INTO users (address, domain, password_hash) VALUES (?, ?, ?)"
                    " ON CONFLICT (address) DO UPDATE SET password_hash = excluded.password_hash",
                    [(a, key, h) for a, h in wanted.items() if current.get(a) != h],
                )
                _bump_credentials_version(conn)
                return UserListChange(added, len(wanted) - added - unchanged, removed, unchanged)

            return change

        doing = f"{'replacing' if replace_all else 'merging'} the users of {domain}"
        return self._mailbox_call(doing, prepare)

    def replace_users(
        self, domain: str, users: Iterable[UserCredential]
    ) -> Deferred[UserListChange]:
        return self._change_users(domain, users, True)

    def merge_users(self, domain: str, users: Iterable[UserCredential]) -> Deferred[UserListChange]:
        return self._change_users(domain, users, False)

    def set_user(self, address: str, password_hash: str) -> Deferred[bool]:
        def prepare() -> Callable[[sqlite3.Connection], bool]:
            key, domain = credential_key(address)
            text = check_password_hash_text(password_hash)

            def upsert(conn: sqlite3.Connection) -> bool:
                new = (
                    conn.execute("SELECT 1 FROM users WHERE address = ?", (key,)).fetchone() is None
                )
                conn.execute(
                    "INSERT OR REPLACE INTO users (address, domain, password_hash)"
                    " VALUES (?, ?, ?)",
                    (key, domain, text),
                )
                _bump_credentials_version(conn)
                return new

            return upsert

        return self._mailbox_call(f"setting the password hash of {address}", prepare)

    def remove_user(self, address: str) -> Deferred[None]:
        def prepare() -> Callable[[sqlite3.Connection], None]:
            key, _ = credential_key(address)

            def delete(conn: sqlite3.Connection) -> None:
                if conn.execute("DELETE FROM users WHERE address = ?", (key,)).rowcount == 0:
                    raise NoSuchUser(f"{key} has no synced credentials")
                conn.execute("DELETE FROM send_as_aliases WHERE user = ?", (key,))
                _bump_credentials_version(conn)

            return delete

        return self._mailbox_call(f"removing user {address}", prepare)

    def get_user(self, address: str) -> Deferred[str | None]:
        def prepare() -> Callable[[sqlite3.Connection], str | None]:
            key, _ = credential_key(address)

            def get(conn: sqlite3.Connection) -> str | None:
                row = conn.execute(
                    "SELECT password_hash FROM users WHERE address = ?", (key,)
                ).fetchone()
                return str(row[0]) if row is not None else None

            return get

        return self._mailbox_query(f"reading user {address}", prepare)

    def list_users(self, domain: str) -> Deferred[list[UserCredential]]:
        def prepare() -> Callable[[sqlite3.Connection], list[UserCredential]]:
            key = normalize_domain(domain)

            def listing(conn: sqlite3.Connection) -> list[UserCredential]:
                rows = conn.execute(
                    "SELECT address, password_hash FROM users WHERE domain = ? ORDER BY address",
                    (key,),
                )
                return [UserCredential(row[0], row[1]) for row in rows]

            return listing

        return self._mailbox_query(f"listing the users of {domain}", prepare)

    def has_user_list(self, domain: str) -> Deferred[bool]:
        def prepare() -> Callable[[sqlite3.Connection], bool]:
            key = normalize_domain(domain)

            def query(conn: sqlite3.Connection) -> bool:
                row = conn.execute("SELECT 1 FROM users WHERE domain = ? LIMIT 1", (key,))
                return row.fetchone() is not None

            return query

        return self._mailbox_query(f"looking for the users of {domain}", prepare)

    def credentials_version(self) -> Deferred[int]:
        def query() -> int:
            row = (
                self._t_conn()
                .execute("SELECT value FROM meta WHERE key = 'credentials_version'")
                .fetchone()
            )
            return int(row[0])

        return self._run("reading the credentials version", query)

    def add_alias(self, alias: str, user: str) -> Deferred[None]:
        def prepare() -> Callable[[sqlite3.Connection], None]:
            key, owner = alias_pair(alias, user)

            def upsert(conn: sqlite3.Connection) -> None:
                known = conn.execute("SELECT 1 FROM users WHERE address = ?", (owner,))
                if known.fetchone() is None:
                    raise NoSuchUser(f"{owner} has no synced credentials")
                conn.execute(
                    "INSERT INTO send_as_aliases (alias, user) VALUES (?, ?)"
                    " ON CONFLICT (alias) DO UPDATE SET user = excluded.user",
                    (key, owner),
                )
                _bump_credentials_version(conn)

            return upsert

        return self._mailbox_call(f"letting {user} send as {alias}", prepare)

    def remove_alias(self, alias: str) -> Deferred[bool]:
        def prepare() -> Callable[[sqlite3.Connection], bool]:
            key = normalize_user(alias)

            def delete(conn: sqlite3.Connection) -> bool:
                if conn.execute("DELETE FROM send_as_aliases WHERE alias = ?", (key,)).rowcount:
                    _bump_credentials_version(conn)
                    return True
                return False

            return delete

        return self._mailbox_call(f"removing the send-as alias {alias}", prepare)

    def list_aliases(self, user: str | None = None) -> Deferred[list[tuple[str, str]]]:
        def prepare() -> Callable[[sqlite3.Connection], list[tuple[str, str]]]:
            owner = None if user is None else normalize_user(user)

            def listing(conn: sqlite3.Connection) -> list[tuple[str, str]]:
                if owner is None:
                    rows = conn.execute("SELECT alias, user FROM send_as_aliases ORDER BY alias")
                else:
                    rows = conn.execute(
                        "SELECT alias, user FROM send_as_aliases WHERE user = ? ORDER BY alias",
                        (owner,),
                    )
                return [(str(row[0]), str(row[1])) for row in rows]

            return listing

        return self._mailbox_query("listing send-as aliases", prepare)


# The stored messages nobody needs: a body is needed while a mailbox holds it or a queue entry
# still waits for it (the two queries differ only in their FROM).  Every stored message:
_UNREFERENCED_ALL: Final = (
    "SELECT m.id, m.body_path FROM messages AS m"
    " WHERE NOT EXISTS (SELECT 1 FROM mailbox_messages AS mm WHERE mm.message_id = m.id)"
    " AND NOT EXISTS (SELECT 1 FROM queue AS q WHERE q.message_id = m.id"
    " AND q.state IN (:queued, :held))"
    " ORDER BY m.id"
)
# Those among ``:ids`` (a JSON array of queue ids): one primary-key lookup each, so retention
# costs what it purged, not the size of the store.
_UNREFERENCED: Final = (
    "SELECT m.id, m.body_path FROM (SELECT DISTINCT value FROM json_each(:ids)) AS j"
    " JOIN messages AS m ON m.id = j.value"
    " WHERE NOT EXISTS (SELECT 1 FROM mailbox_messages AS mm WHERE mm.message_id = m.id)"
    " AND NOT EXISTS (SELECT 1 FROM queue AS q WHERE q.message_id = m.id"
    " AND q.state IN (:queued, :held))"
    " ORDER BY m.id"
)
# What goes with a deleted message: every row that refers to it (foreign keys), then the message.
# No mailbox row is among them: a message a mailbox holds is never selected for deletion.
_DELETE_MESSAGE_ROWS: Final = (
    "DELETE FROM message_mime WHERE message_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM bodies WHERE message_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM shadow_copies WHERE message_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM queue WHERE message_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))",
)


def _t_unreferenced(conn: sqlite3.Connection, ids: str | None) -> list[sqlite3.Row]:
    """The stored messages among ``ids`` (JSON; None: all) whose bodies nobody needs."""
    query = _UNREFERENCED_ALL if ids is None else _UNREFERENCED
    return conn.execute(query, {"ids": ids, "queued": QUEUED, "held": HELD}).fetchall()


def _t_delete_unreferenced(conn: sqlite3.Connection, ids: str) -> list[str | None]:
    """
    Inside a transaction: delete the messages among ``ids`` (JSON) that nobody needs, checked
    here, under the write lock, so no queue change or mailbox copy can slip in between; return
    the ``body_path`` of each (None for an inline body, which went with its row).
    """
    rows = _t_unreferenced(conn, ids)
    if rows:
        gone = json.dumps([r["id"] for r in rows])
        for statement in _DELETE_MESSAGE_ROWS:
            conn.execute(statement, (gone,))
    return [r["body_path"] for r in rows]


def _t_open_outage(conn: sqlite3.Connection, domain: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM outages WHERE domain = ? AND ended_at IS NULL", (domain,)
    ).fetchone()
    return row


# -- mailboxes (storage thread only)

_MAIL_MESSAGE_SELECT: Final = (
    "SELECT mm.uid, mm.message_id, mm.flags, mm.internal_date, mm.modseq, m.size"
    " FROM mailbox_messages AS mm JOIN messages AS m ON m.id = mm.message_id"
)
_MAIL_MESSAGES_BY_UID: Final = (
    "SELECT mm.uid, mm.message_id, mm.flags, mm.internal_date, mm.modseq, m.size"
    " FROM mailbox_messages AS mm JOIN messages AS m ON m.id = mm.message_id"
    " WHERE mm.mailbox_id = ? AND mm.uid IN (SELECT value FROM json_each(?)) ORDER BY mm.uid"
)
# UID and id lists go to SQLite as one JSON array parameter, read with json_each(?): no
# statement is ever built from values, and no list meets the host-parameter limit.


def _flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


# A mailbox row as the code reads it: ``subscribed`` comes from ``subscriptions`` (migration 13;
# the column of that name in ``mailboxes`` is no longer read).
_COUNT_SELECT: Final = "SELECT count(*) FROM mailbox_messages AS mm"

_MAILBOX_SELECT: Final = (
    "SELECT b.id, b.owner, b.name, b.uidvalidity, b.uidnext, b.highest_modseq, b.special_use,"
    " b.first_recent, EXISTS (SELECT 1 FROM subscriptions AS s"
    " WHERE s.owner = b.owner AND s.name = b.name) AS subscribed"
    " FROM mailboxes AS b"
)


def _mailbox_info(row: sqlite3.Row) -> MailboxInfo:
    return MailboxInfo(
        name=row["name"],
        uidvalidity=int(row["uidvalidity"]),
        uidnext=int(row["uidnext"]),
        highest_modseq=int(row["highest_modseq"]),
        special_use=row["special_use"],
        subscribed=bool(row["subscribed"]),
        first_recent=int(row["first_recent"]),
    )


def _mail_message(row: sqlite3.Row) -> MailMessage:
    return MailMessage(
        uid=int(row["uid"]),
        message_id=row["message_id"],
        flags=frozenset(row["flags"].split()),
        internal_date=float(row["internal_date"]),
        size=int(row["size"]),
        modseq=int(row["modseq"]),
    )


def _t_mailboxes(conn: sqlite3.Connection, owner: str) -> list[MailboxInfo]:
    # BINARY collation compares UTF-8 bytes: the same order as Python's str, code point by point.
    rows = conn.execute(_MAILBOX_SELECT + " WHERE b.owner = ? ORDER BY b.name", (owner,))
    return [_mailbox_info(row) for row in rows]


def _t_find_mailbox(conn: sqlite3.Connection, owner: str, name: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        _MAILBOX_SELECT + " WHERE b.owner = ? AND b.name = ?", (owner, name)
    ).fetchone()
    return row


def _t_mailbox(
    conn: sqlite3.Connection, owner: str, name: str, uidvalidity: int | None = None
) -> sqlite3.Row:
    """The mailbox of this name; with ``uidvalidity``, only if it is that one (not a new one)."""
    row = _t_find_mailbox(conn, owner, name)
    if row is None or (uidvalidity is not None and int(row["uidvalidity"]) != uidvalidity):
        raise NoSuchMailbox(name)
    return row


def _t_inferiors(conn: sqlite3.Connection, owner: str, name: str) -> list[sqlite3.Row]:
    # A prefix test on the exact characters: LIKE would treat % and _ as wildcards and fold case.
    prefix = name + MAILBOX_DELIMITER
    return conn.execute(
        "SELECT id, name FROM mailboxes WHERE owner = ? AND substr(name, 1, ?) = ?",
        (owner, len(prefix), prefix),
    ).fetchall()


def _t_new_mailbox(
    conn: sqlite3.Connection,
    owner: str,
    name: str,
    special_use: str | None,
    subscribed: bool,
    now: float,
) -> sqlite3.Row:
    last = conn.execute("SELECT value FROM meta WHERE key = 'last_uidvalidity'").fetchone()
    uidvalidity = next_uidvalidity(int(last[0]), now)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'last_uidvalidity'", (uidvalidity,))
    conn.execute(
        "INSERT INTO mailboxes (owner, domain, name, uidvalidity, uidnext, highest_modseq,"
        " special_use, subscribed, first_recent) VALUES (?, ?, ?, ?, 1, 1, ?, 0, 1)",
        (owner, split_address(owner)[1], name, uidvalidity, special_use),
    )
    if subscribed:
        conn.execute(
            "INSERT OR IGNORE INTO subscriptions (owner, name) VALUES (?, ?)", (owner, name)
        )
    return _t_mailbox(conn, owner, name)


def _t_move_subscription(conn: sqlite3.Connection, owner: str, old: str, new: str) -> None:
    """A renamed mailbox keeps its subscription, under the new name (none: nothing to do)."""
    moved = conn.execute(
        "DELETE FROM subscriptions WHERE owner = ? AND name = ?", (owner, old)
    ).rowcount
    if moved:
        conn.execute(
            "INSERT OR IGNORE INTO subscriptions (owner, name) VALUES (?, ?)", (owner, new)
        )


def _t_make_parents(conn: sqlite3.Connection, owner: str, name: str, now: float) -> None:
    """Create the missing superiors of ``name`` as ordinary, unsubscribed mailboxes."""
    for parent in mailbox_parents(name):
        if _t_find_mailbox(conn, owner, parent) is None:
            _t_new_mailbox(conn, owner, parent, None, False, now)


def _t_ensure_defaults(conn: sqlite3.Connection, owner: str, now: float) -> None:
    """Create the default mailboxes (INBOX, Sent, …) a canonical user is missing."""
    rows = conn.execute(
        "SELECT name, special_use FROM mailboxes WHERE owner = ?", (owner,)
    ).fetchall()
    names = {row["name"] for row in rows}
    uses = {row["special_use"] for row in rows}
    for name, use in DEFAULT_MAILBOXES:
        if name not in names and (use is None or use not in uses):
            _t_new_mailbox(conn, owner, name, use, True, now)


def _t_add_message(
    conn: sqlite3.Connection,
    owner: str,
    mailbox: str,
    message_id: str,
    internal_date: float,
    flags: frozenset[str],
    mime_index: bytes | None,
) -> MailMessage:
    """Put a stored message into a mailbox (canonical names) with its next UID and modseq."""
    row = _t_mailbox(conn, owner, mailbox)
    size = conn.execute("SELECT size FROM messages WHERE id = ?", (message_id,)).fetchone()
    if size is None:
        raise NoSuchEntry(f"no message {message_id}")
    if mime_index is not None:
        conn.execute(
            "INSERT OR REPLACE INTO message_mime (message_id, data) VALUES (?, ?)",
            (message_id, bytes(mime_index)),
        )
    modseq = _t_bump_modseq(conn, row["id"])
    uid = _t_append(conn, row["id"], message_id, flags, internal_date, modseq)
    return MailMessage(uid, message_id, flags, internal_date, int(size[0]), modseq)


def _t_bump_modseq(conn: sqlite3.Connection, mailbox_id: int) -> int:
    """Give a mailbox its next modseq (one per operation that changes its messages)."""
    conn.execute(
        "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = ?", (mailbox_id,)
    )
    row = conn.execute(
        "SELECT highest_modseq FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    return int(row[0])


def _t_append(
    conn: sqlite3.Connection,
    mailbox_id: int,
    message_id: str,
    flags: frozenset[str],
    internal_date: float,
    modseq: int,
) -> int:
    """Add one message with the mailbox's next UID; return the UID."""
    row = conn.execute("SELECT uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    uid = int(row[0])
    conn.execute("UPDATE mailboxes SET uidnext = ? WHERE id = ?", (uid + 1, mailbox_id))
    conn.execute(
        "INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, internal_date, modseq)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (mailbox_id, uid, message_id, _flags_text(flags), internal_date, modseq),
    )
    return uid


def _t_messages_by_uid(
    conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]
) -> list[MailMessage]:
    """The existing messages among ``uids`` (sorted), in UID order."""
    rows = conn.execute(
        _MAIL_MESSAGES_BY_UID,
        (mailbox_id, json.dumps(list(uids))),
    )
    return [_mail_message(r) for r in rows]


def _t_copy(
    conn: sqlite3.Connection,
    source: sqlite3.Row,
    uids: Sequence[int],
    target: sqlite3.Row,
    *,
    move: bool,
) -> CopyResult:
    """COPY (flags and INTERNALDATE kept) or MOVE of the existing ``uids`` (sorted)."""
    moving = _t_messages_by_uid(conn, source["id"], uids)
    if not moving:
        return CopyResult(int(target["uidvalidity"]), ())
    modseq = _t_bump_modseq(conn, target["id"])
    pairs = tuple(
        (m.uid, _t_append(conn, target["id"], m.message_id, m.flags, m.internal_date, modseq))
        for m in moving
    )
    if move:
        # A move within one mailbox (RFC 6851 allows it) is one operation: one modseq.
        if source["id"] != target["id"]:
            _t_bump_modseq(conn, source["id"])
        conn.executemany(
            "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
            [(source["id"], m.uid) for m in moving],
        )
    return CopyResult(int(target["uidvalidity"]), pairs)
