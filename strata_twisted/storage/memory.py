"""
An in-memory storage backend: every role, nothing on disk.

For tests (Strata's own and integrators') and for ``storage.backend = "memory"``, where losing
everything at exit is acceptable.  It keeps the same rules as the durable backends (nothing visible
before commit, entries ordered by commit, the same errors), so the conformance suite runs against
it unchanged; only durability is missing.  Every method returns an already-fired Deferred.

It must never do I/O, and never hand out its own mutable state: values are frozen dataclasses and
event data is copied.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from strata_twisted.clock import SecondsClock
from strata_twisted.errors import (
    DomainExists,
    NoSuchDomain,
    NoSuchEntry,
    QueueStateError,
    StorageError,
    StrataError,
)
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
    DEFERRED_OUTCOME,
    DELETED_FLAG,
    DELIVERED,
    HELD,
    INBOX,
    QUEUED,
    SEEN,
    AttemptResult,
    ControlRequest,
    CopyResult,
    Domain,
    DomainStatus,
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
    PurgedMessage,
    QueueEntry,
    QueueFilter,
    QueueStats,
    RelayActivity,
    ShadowCopy,
    StoredMessage,
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
from strata_twisted.storage._admin_memory import MemoryAdminRoles, entry_matches, event_matches
from strata_twisted.storage._bodies import check_body_range, check_message_id, header_section
from strata_twisted.storage._mailboxes import Indexer, shadow_owners
from strata_twisted.storage._queue import (
    apply_change,
    apply_changes,
    apply_reroute,
    apply_result,
    apply_results,
)
from strata_twisted.storage._series_memory import MemorySeriesRole

T = TypeVar("T")

# The SQLite backend names body files after the queue id; the same rule here keeps the backends
# interchangeable (a queue id that works in tests works in production).


@dataclass
class _Message:
    stored: StoredMessage
    body: bytes


@dataclass
class _Mailbox:
    """One mailbox of one user (mutable: the store's own state, never handed out)."""

    name: str
    uidvalidity: int
    uidnext: int = 1
    highest_modseq: int = 1
    special_use: str | None = None
    first_recent: int = 1
    messages: dict[int, _MailboxMessage] = field(default_factory=dict)  # in UID order

    def info(self, subscribed: bool) -> MailboxInfo:
        return MailboxInfo(
            name=self.name,
            uidvalidity=self.uidvalidity,
            uidnext=self.uidnext,
            highest_modseq=self.highest_modseq,
            special_use=self.special_use,
            subscribed=subscribed,
            first_recent=self.first_recent,
        )


@dataclass(frozen=True)
class _MailboxMessage:
    uid: int
    message_id: str
    flags: frozenset[str]
    internal_date: float
    modseq: int


_OPEN, _COMMITTED, _ABORTED = "open", "committed", "aborted"


@implementer(IMessageWriter)
class _MemoryMessageWriter:
    def __init__(self, store: MemoryStore, message_id: str) -> None:
        self.message_id = message_id
        self.size = 0
        self._store = store
        self._chunks: list[bytes] = []
        self._state = _OPEN

    def write(self, data: bytes) -> Deferred[None]:
        if self._state != _OPEN:
            return fail(StorageError(f"message {self.message_id} is already {self._state}"))
        self._chunks.append(bytes(data))
        self.size += len(data)
        return succeed(None)

    def commit(self, incoming: IncomingMessage) -> Deferred[StoredMessage]:
        if self._state != _OPEN:
            return fail(StorageError(f"message {self.message_id} is already {self._state}"))
        body = b"".join(self._chunks)
        self._chunks = []
        try:
            stored = self._store._commit(self.message_id, body, incoming)
        except StorageError as e:
            self._state = _ABORTED
            return fail(e)
        self._state = _COMMITTED
        return succeed(stored)

    def abort(self) -> Deferred[None]:
        # After a commit, abort cannot take the message back: it stays (and so does its 250).
        if self._state == _OPEN:
            self._state = _ABORTED
            self._chunks = []
        return succeed(None)


@implementer(
    IDomainStore,
    IMessageStore,
    IQueueStore,
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
class MemoryStore(MemoryAdminRoles, MemorySeriesRole):
    """Every storage role in memory.  ``clock`` timestamps domains, shadow copies and events."""

    log = Logger()

    def __init__(self, clock: SecondsClock, *, indexer: Indexer | None = None) -> None:
        """``indexer``: the MIME index kept for messages with shadow copies (None: none kept)."""
        self._clock = clock
        self._indexer = indexer
        self._domains: dict[str, Domain] = {}
        self._domains_version = 0
        self._messages: dict[str, _Message] = {}
        self._entries: dict[str, QueueEntry] = {}  # in seq order (insertion order)
        self._next_seq = 1
        self._shadow_copies: list[ShadowCopy] = []
        self._events: list[Event] = []
        self._statuses: dict[str, DomainStatus] = {}
        self._outages: list[Outage] = []  # in id order; ids are 1, 2, 3, ...
        self._open_outages: dict[str, int] = {}  # domain -> index in _outages
        self._requests: list[ControlRequest] = []  # ids are 1, 2, 3, ...
        self._mailboxes: dict[str, dict[str, _Mailbox]] = {}  # canonical user -> name -> mailbox
        # canonical user -> subscribed names; apart from the mailboxes, which they outlive
        self._subscriptions: dict[str, set[str]] = {}
        self._mime_indexes: dict[str, bytes] = {}  # queue id -> MIME index, once per message
        self._last_uidvalidity = 0
        self._users: dict[str, dict[str, str]] = {}  # domain -> canonical address -> hash
        self._credentials_version = 0
        self._aliases: dict[str, str] = {}  # canonical alias -> canonical user
        self._init_admin_roles()
        self._init_series_role()

    # -- lifecycle (the same shape as SQLiteStore, so the composition root treats both alike)

    def open(self, *, recover: bool = False) -> None:
        """Nothing to open or recover."""

    def close(self) -> Deferred[None]:
        return succeed(None)

    # -- IDomainStore

    def list_domains(self) -> Deferred[list[Domain]]:
        return succeed([self._domains[name] for name in sorted(self._domains)])

    def get_domain(self, name: str) -> Deferred[Domain | None]:
        return succeed(self._domains.get(name))

    def add_domain(self, domain: Domain) -> Deferred[Domain]:
        if domain.name in self._domains:
            return fail(DomainExists(f"{domain.name} is already protected"))
        now = self._clock.seconds()
        added = replace(
            domain,
            created_at=domain.created_at or now,
            updated_at=domain.updated_at or now,
        )
        self._domains[added.name] = added
        self._domains_version += 1
        return succeed(added)

    def update_domain(self, domain: Domain) -> Deferred[Domain]:
        old = self._domains.get(domain.name)
        if old is None:
            return fail(NoSuchDomain(f"{domain.name} is not protected"))
        updated = replace(domain, created_at=old.created_at, updated_at=self._clock.seconds())
        self._domains[updated.name] = updated
        self._domains_version += 1
        return succeed(updated)

    def remove_domain(self, name: str) -> Deferred[None]:
        if self._domains.pop(name, None) is None:
            return fail(NoSuchDomain(f"{name} is not protected"))
        self._domains_version += 1
        return succeed(None)

    def domains_version(self) -> Deferred[int]:
        return succeed(self._domains_version)

    # -- IMessageStore

    def begin(self, message_id: str) -> IMessageWriter:
        check_message_id(message_id)
        return _MemoryMessageWriter(self, message_id)

    def _commit(self, message_id: str, body: bytes, incoming: IncomingMessage) -> StoredMessage:
        if message_id in self._messages:
            raise StorageError(f"a message with queue id {message_id} is already stored")
        stored = StoredMessage(
            id=message_id,
            envelope=incoming.envelope,
            received_at=incoming.received_at,
            size=len(body),
            header_message_id=incoming.header_message_id,
        )
        created_at = self._clock.seconds()
        owners = shadow_owners(incoming)
        # Parsed once, at delivery (DESIGN decision 9), and only for a message with shadow copies.
        mime_index = self._index(message_id, body) if owners else None
        # Nothing below can fail: the message, its entries and its INBOX copies appear together.
        self._messages[message_id] = _Message(stored, body)
        for n, delivery in enumerate(incoming.deliveries, start=1):
            entry = QueueEntry(
                id=f"{message_id}.{n}",
                seq=self._next_seq,
                message_id=message_id,
                domain=delivery.domain,
                recipient=delivery.recipient,
                sender=incoming.envelope.sender,
                header_message_id=incoming.header_message_id,
                size=len(body),
                received_at=incoming.received_at,
                state=QUEUED if delivery.held is None else HELD,
                attempts=0,
                last_error=delivery.held,
                next_attempt_at=incoming.received_at,
                outbound=delivery.outbound,
            )
            self._next_seq += 1
            self._entries[entry.id] = entry
            if delivery.shadow:
                self._shadow_copies.append(
                    ShadowCopy(message_id, delivery.recipient, "INBOX", created_at)
                )
        for owner in owners:
            self._ensure_defaults(owner)
            self._add(owner, INBOX, message_id, incoming.received_at, frozenset(), mime_index)
            mime_index = None  # kept once per message, shared by every mailbox copy
        return stored

    def get_message(self, message_id: str) -> Deferred[StoredMessage | None]:
        message = self._messages.get(message_id)
        return succeed(message.stored if message else None)

    def read_body(self, message_id: str) -> Deferred[bytes]:
        message = self._messages.get(message_id)
        if message is None:
            return fail(NoSuchEntry(f"no message {message_id}"))
        return succeed(message.body)

    def read_headers(self, message_id: str) -> Deferred[bytes]:
        message = self._messages.get(message_id)
        if message is None:
            return fail(NoSuchEntry(f"no message {message_id}"))
        return succeed(header_section(io.BytesIO(message.body)))

    def message_count(self) -> Deferred[int]:
        return succeed(len(self._messages))

    def read_body_range(self, message_id: str, offset: int, length: int) -> Deferred[bytes]:
        try:
            check_body_range(offset, length)
        except ValueError as e:
            return fail(e)
        message = self._messages.get(message_id)
        if message is None:
            return fail(NoSuchEntry(f"no message {message_id}"))
        return succeed(message.body[offset : offset + length])

    def read_heads(self, message_ids: Sequence[str], length: int) -> Deferred[list[MessageHead]]:
        try:
            check_body_range(0, length)
        except ValueError as e:
            return fail(e)
        found = (self._messages.get(message_id) for message_id in message_ids)
        return succeed([MessageHead(m.stored, m.body[:length]) for m in found if m is not None])

    def delete_messages(self, message_ids: Iterable[str]) -> Deferred[int]:
        # Checked and deleted in one step (nothing runs in between here), as the interface asks.
        gone = self._unreferenced(list(message_ids))
        if gone:
            for message_id in gone:
                del self._messages[message_id]
                self._mime_indexes.pop(message_id, None)
            self._entries = {k: e for k, e in self._entries.items() if e.message_id not in gone}
            self._shadow_copies = [c for c in self._shadow_copies if c.message_id not in gone]
        return succeed(len(gone))

    # -- IQueueStore

    def list_entries(self, domain: str | None = None) -> Deferred[list[QueueEntry]]:
        return succeed([e for e in self._entries.values() if domain is None or e.domain == domain])

    def get_entry(self, entry_id: str) -> Deferred[QueueEntry | None]:
        return succeed(self._entries.get(entry_id))

    def query_entries(
        self, query: QueueFilter, after_seq: int = 0, limit: int = 100
    ) -> Deferred[list[QueueEntry]]:
        page: list[QueueEntry] = []
        for entry in self._entries.values():  # in seq order
            if len(page) >= limit:
                break
            if entry.seq > after_seq and entry_matches(query, entry):
                page.append(entry)
        return succeed(page)

    def count_entries(self, query: QueueFilter) -> Deferred[int]:
        return succeed(sum(1 for e in self._entries.values() if entry_matches(query, e)))

    def entries_for_message(self, message_id: str) -> Deferred[list[QueueEntry]]:
        return succeed([e for e in self._entries.values() if e.message_id == message_id])

    def queue_stats(self) -> Deferred[list[QueueStats]]:
        counts: dict[str, list[int]] = {}
        oldest: dict[str, float] = {}
        for entry in self._entries.values():
            if entry.state not in (QUEUED, HELD):
                continue
            queued_held = counts.setdefault(entry.domain, [0, 0])
            queued_held[0 if entry.state == QUEUED else 1] += 1
            if entry.domain not in oldest or entry.received_at < oldest[entry.domain]:
                oldest[entry.domain] = entry.received_at
        return succeed(
            [
                QueueStats(domain, queued, held, oldest[domain])
                for domain, (queued, held) in sorted(counts.items())
            ]
        )

    def due_domains(self, now: float) -> Deferred[list[str]]:
        return succeed(sorted({e.domain for e in self._entries.values() if _due(e, now)}))

    def due_entries(self, domain: str, now: float, limit: int) -> Deferred[list[QueueEntry]]:
        due: list[QueueEntry] = []
        if limit > 0:
            for entry in self._entries.values():  # in seq order
                if entry.domain != domain or not _due(entry, now):
                    continue
                # Past the limit, only the rest of the last message (never cut in two).
                if len(due) < limit or entry.message_id == due[-1].message_id:
                    due.append(entry)
        return succeed(due)

    def record_result(self, result: AttemptResult) -> Deferred[QueueEntry]:
        entry = self._entries.get(result.entry_id)
        if entry is None:
            return fail(NoSuchEntry(f"no queue entry {result.entry_id}"))
        try:
            changed = apply_result(entry, result)
        except QueueStateError as e:
            return fail(e)
        self._entries[entry.id] = changed
        return succeed(changed)

    def record_results(self, results: Sequence[AttemptResult]) -> Deferred[list[QueueEntry]]:
        try:
            return succeed(apply_results(self._entries, results))
        except QueueStateError as e:  # an unknown outcome: checked before anything changed
            return fail(e)

    def defer_due(
        self, domain: str, due: float, reason: str, at: float, next_attempt_at: float
    ) -> Deferred[int]:
        results = [
            AttemptResult(entry.id, DEFERRED_OUTCOME, reason, at, next_attempt_at=next_attempt_at)
            for entry in self._entries.values()
            if entry.state == QUEUED and entry.domain == domain and not entry.outbound
            and entry.next_attempt_at <= due
        ]  # fmt: skip
        return succeed(len(apply_results(self._entries, results)))

    def sync_results(self) -> Deferred[None]:
        return succeed(None)  # nothing here outlives the process anyway

    def change_state(
        self, entry_id: str, from_states: tuple[str, ...], to_state: str, at: float, note: str
    ) -> Deferred[QueueEntry]:
        entry = self._entries.get(entry_id)
        if entry is None:
            return fail(NoSuchEntry(f"no queue entry {entry_id}"))
        try:
            changed = apply_change(entry, from_states, to_state, at, note)
        except QueueStateError as e:
            return fail(e)
        self._entries[entry.id] = changed
        return succeed(changed)

    def change_states(
        self,
        entry_ids: Sequence[str],
        from_states: tuple[str, ...],
        to_state: str,
        at: float,
        note: str,
    ) -> Deferred[list[QueueEntry]]:
        try:
            return succeed(apply_changes(self._entries, entry_ids, from_states, to_state, at, note))
        except QueueStateError as e:  # checked before anything changed
            return fail(e)

    def reroute(
        self, entry_id: str, recipient: str, domain: str, outbound: bool, at: float, note: str
    ) -> Deferred[QueueEntry]:
        entry = self._entries.get(entry_id)
        if entry is None:
            return fail(NoSuchEntry(f"no queue entry {entry_id}"))
        try:
            changed = apply_reroute(entry, recipient, domain, outbound, at, note)
        except QueueStateError as e:
            return fail(e)
        self._entries[entry.id] = changed
        return succeed(changed)

    def last_delivered_at(self, domain: str) -> Deferred[float | None]:
        times = [
            e.delivered_at
            for e in self._entries.values()
            if e.domain == domain and e.state == DELIVERED and e.delivered_at is not None
        ]
        return succeed(max(times, default=None))

    def mark_delay_notified(self, entry_ids: Sequence[str], at: float) -> Deferred[None]:
        for entry_id in entry_ids:
            entry = self._entries.get(entry_id)
            if entry is not None and entry.delay_notified_at is None:
                self._entries[entry_id] = replace(entry, delay_notified_at=at)
        return succeed(None)

    def received_since(self, domain: str, since: float) -> Deferred[tuple[int, int]]:
        received = [
            e for e in self._entries.values() if e.domain == domain and e.received_at >= since
        ]
        return succeed((len(received), sum(e.state == DELIVERED for e in received)))

    def relay_activity(
        self, since: float, domains: Sequence[str] | None = None
    ) -> Deferred[list[RelayActivity]]:
        found: dict[str, RelayActivity] = {}
        wanted = None if domains is None else set(domains)
        for e in self._entries.values():
            if wanted is not None and e.domain not in wanted:
                continue
            was = found.get(e.domain) or RelayActivity(e.domain)
            if e.state == DELIVERED and e.delivered_at is not None and e.delivered_at >= since:
                latest = max(was.last_delivered_at or e.delivered_at, e.delivered_at)
                found[e.domain] = replace(
                    was, delivered=was.delivered + 1, last_delivered_at=latest
                )
            elif e.last_attempt_at is not None and e.last_attempt_at >= since:
                if e.state == QUEUED and e.attempts > 0:
                    found[e.domain] = replace(was, deferred=was.deferred + 1)
                elif e.state == HELD:
                    found[e.domain] = replace(was, held=was.held + 1)
                elif e.state == BOUNCED:
                    found[e.domain] = replace(was, bounced=was.bounced + 1)
        return succeed([found[name] for name in sorted(found)])

    def _set_entry_state(self, entry_id: str, state: str) -> None:
        """For tests: move an entry to ``state``, whatever it is in (no rules applied)."""
        self._entries[entry_id] = replace(self._entries[entry_id], state=state)

    # -- IShadowStore

    def list_shadow_copies(self, recipient: str | None = None) -> Deferred[list[ShadowCopy]]:
        return succeed(
            [c for c in self._shadow_copies if recipient is None or c.recipient == recipient]
        )

    # -- IEventStore

    def record_event(
        self,
        kind: str,
        message: str,
        domain: str | None = None,
        data: dict[str, object] | None = None,
    ) -> Deferred[Event]:
        try:
            # A JSON round trip, like the durable backends: a copy, and the same failures.
            payload: dict[str, Any] = json.loads(json.dumps(data or {}))
        except (TypeError, ValueError) as e:
            return fail(StorageError(f"event data is not JSON: {e}"))
        event = Event(len(self._events) + 1, self._clock.seconds(), kind, message, domain, payload)
        self._events.append(event)
        return succeed(_copy_event(event))

    def record_events(self, events: Sequence[NewEvent]) -> Deferred[list[Event]]:
        try:
            payloads: list[dict[str, Any]] = [json.loads(json.dumps(e.data)) for e in events]
        except (TypeError, ValueError) as e:
            return fail(StorageError(f"event data is not JSON: {e}"))
        at = self._clock.seconds()
        recorded = []
        for new, payload in zip(events, payloads, strict=True):
            event = Event(len(self._events) + 1, at, new.kind, new.message, new.domain, payload)
            self._events.append(event)
            recorded.append(_copy_event(event))
        return succeed(recorded)

    def list_events(self, domain: str | None = None, limit: int = 100) -> Deferred[list[Event]]:
        if limit <= 0:
            return succeed([])
        matching = [e for e in self._events if domain is None or e.domain == domain]
        return succeed([_copy_event(e) for e in matching[-limit:]])

    def query_events(
        self, query: EventFilter, before_id: int | None = None, limit: int = 100
    ) -> Deferred[list[Event]]:
        page: list[Event] = []
        for event in reversed(self._events):  # ids are 1, 2, 3, ...: newest first
            if len(page) >= limit:
                break
            if (before_id is None or event.id < before_id) and event_matches(query, event):
                page.append(_copy_event(event))
        return succeed(page)

    # -- IMonitorStore

    def get_status(self, domain: str) -> Deferred[DomainStatus | None]:
        return succeed(self._statuses.get(domain))

    def list_statuses(self) -> Deferred[list[DomainStatus]]:
        return succeed([self._statuses[domain] for domain in sorted(self._statuses)])

    def save_status(self, status: DomainStatus) -> Deferred[DomainStatus]:
        self._statuses[status.domain] = status
        return succeed(status)

    def open_outage(self, domain: str, started_at: float, reason: str) -> Deferred[Outage]:
        index = self._open_outages.get(domain)
        if index is not None:
            return succeed(self._outages[index])
        outage = Outage(len(self._outages) + 1, domain, started_at, reason)
        self._open_outages[domain] = len(self._outages)
        self._outages.append(outage)
        return succeed(outage)

    def close_outage(self, domain: str, ended_at: float) -> Deferred[Outage | None]:
        index = self._open_outages.pop(domain, None)
        if index is None:
            return succeed(None)
        closed = replace(self._outages[index], ended_at=ended_at)
        self._outages[index] = closed
        return succeed(closed)

    def list_outages(self, domain: str | None = None, limit: int = 100) -> Deferred[list[Outage]]:
        if limit <= 0:
            return succeed([])
        matching = [o for o in self._outages if domain is None or o.domain == domain]
        return succeed(matching[-limit:])

    def latest_outages(self) -> Deferred[list[Outage]]:
        newest: dict[str, Outage] = {}
        for outage in self._outages:  # in id order: the last one seen is the newest
            newest[outage.domain] = outage
        return succeed([newest[name] for name in sorted(newest)])

    # -- IControlStore

    def request(self, action: str, domain: str | None, at: float) -> Deferred[int]:
        request = ControlRequest(len(self._requests) + 1, action, domain, at)
        self._requests.append(request)
        return succeed(request.id)

    def requests_after(self, last_id: int) -> Deferred[list[ControlRequest]]:
        return succeed([r for r in self._requests if r.id > last_id])

    def last_request_id(self) -> Deferred[int]:
        return succeed(len(self._requests))

    # -- IMailboxStore

    def _guarded(self, f: Callable[[], T]) -> Deferred[T]:
        """``f()`` as a fired Deferred; a refusal (a StrataError) fails it and changed nothing."""
        try:
            return succeed(f())
        except StrataError as e:
            return fail(e)

    def _boxes(self, user: str) -> dict[str, _Mailbox]:
        """The mailboxes of a canonical user (a fresh empty dict, not kept, for a new user)."""
        return self._mailboxes.get(user, {})

    def _box(self, user: str, name: str, uidvalidity: int | None = None) -> _Mailbox:
        """The mailbox of this name; with ``uidvalidity``, only if it is that very one."""
        box = self._boxes(user).get(name)
        if box is None or (uidvalidity is not None and box.uidvalidity != uidvalidity):
            raise NoSuchMailbox(name)
        return box

    def _new_box(self, user: str, name: str, special_use: str | None, subscribed: bool) -> _Mailbox:
        self._last_uidvalidity = next_uidvalidity(self._last_uidvalidity, self._clock.seconds())
        box = _Mailbox(name, self._last_uidvalidity, special_use=special_use)
        self._mailboxes.setdefault(user, {})[name] = box
        if subscribed:
            self._subscriptions.setdefault(user, set()).add(name)
        return box

    def _info(self, user: str, box: _Mailbox) -> MailboxInfo:
        return box.info(subscribed=box.name in self._subscriptions.get(user, ()))

    def _sorted_infos(self, user: str) -> list[MailboxInfo]:
        boxes = self._boxes(user)
        return [self._info(user, boxes[name]) for name in sorted(boxes)]

    def _mail_message(self, m: _MailboxMessage) -> MailMessage:
        size = self._messages[m.message_id].stored.size
        return MailMessage(m.uid, m.message_id, m.flags, m.internal_date, size, m.modseq)

    def _append(
        self, box: _Mailbox, message_id: str, flags: frozenset[str], internal_date: float
    ) -> _MailboxMessage:
        """Add one message with the next UID and the mailbox's current modseq (already bumped)."""
        m = _MailboxMessage(box.uidnext, message_id, flags, internal_date, box.highest_modseq)
        box.messages[m.uid] = m
        box.uidnext += 1
        return m

    def _index(self, message_id: str, body: bytes) -> bytes | None:
        """The MIME index of a body, or None (no indexer, or it failed: IMAP indexes it later)."""
        if self._indexer is None:
            return None
        try:
            return self._indexer(io.BytesIO(body), len(body))
        except Exception:
            self.log.failure("Could not index the MIME structure of {id}", id=message_id)
            return None

    def _ensure_defaults(self, user: str) -> None:
        """Create the default mailboxes (INBOX, Sent, …) a canonical user is missing."""
        boxes = self._boxes(user)
        uses = {box.special_use for box in boxes.values()}
        for name, use in DEFAULT_MAILBOXES:
            if name not in boxes and (use is None or use not in uses):
                self._new_box(user, name, use, subscribed=True)
                boxes = self._boxes(user)

    def _add(
        self,
        user: str,
        mailbox: str,
        message_id: str,
        internal_date: float,
        flags: frozenset[str],
        mime_index: bytes | None,
    ) -> MailMessage:
        """Put a stored message into a mailbox (canonical names) with its next UID and modseq."""
        box = self._box(user, mailbox)
        if message_id not in self._messages:
            raise NoSuchEntry(f"no message {message_id}")
        if mime_index is not None:
            self._mime_indexes[message_id] = bytes(mime_index)
        box.highest_modseq += 1
        return self._mail_message(self._append(box, message_id, flags, internal_date))

    def ensure_user(self, user: str) -> Deferred[list[MailboxInfo]]:
        def ensure() -> list[MailboxInfo]:
            key = normalize_user(user)
            self._ensure_defaults(key)
            return self._sorted_infos(key)

        return self._guarded(ensure)

    def list_mailboxes(self, user: str) -> Deferred[list[MailboxInfo]]:
        return self._guarded(lambda: self._sorted_infos(normalize_user(user)))

    def get_mailbox(self, user: str, name: str) -> Deferred[MailboxInfo | None]:
        def get() -> MailboxInfo | None:
            key = normalize_user(user)
            box = self._boxes(key).get(normalize_mailbox_name(name))
            return self._info(key, box) if box is not None else None

        return self._guarded(get)

    def create_mailbox(
        self, user: str, name: str, special_use: str | None = None
    ) -> Deferred[MailboxInfo]:
        def create() -> MailboxInfo:
            key, canonical = normalize_user(user), normalize_mailbox_name(name)
            use = normalize_special_use(special_use)
            if canonical in self._boxes(key):
                raise MailboxExists(f"mailbox {canonical!r} exists")
            for parent in mailbox_parents(canonical):
                if parent not in self._boxes(key):
                    self._new_box(key, parent, None, subscribed=False)
            # A name still subscribed from an earlier mailbox shows as subscribed (RFC 3501
            # §6.3.6: subscriptions are kept whether or not the mailbox exists).
            return self._info(key, self._new_box(key, canonical, use, subscribed=False))

        return self._guarded(create)

    def delete_mailbox(self, user: str, name: str) -> Deferred[list[str]]:
        def delete() -> list[str]:
            key, canonical = normalize_user(user), normalize_mailbox_name(name)
            if canonical == INBOX:
                raise MailboxRefused("INBOX cannot be deleted")
            box = self._box(key, canonical)
            if any(is_inferior(other, canonical) for other in self._boxes(key)):
                raise MailboxHasChildren(f"mailbox {canonical!r} has inferiors; delete them first")
            # RFC 3501 §6.3.4: the subscription stays (§6.3.6: the server MUST NOT remove a
            # name from the subscription list because its mailbox no longer exists).
            del self._mailboxes[key][canonical]
            return sorted({m.message_id for m in box.messages.values()})

        return self._guarded(delete)

    def rename_mailbox(self, user: str, old: str, new: str) -> Deferred[MailboxInfo]:
        def rename() -> MailboxInfo:
            key = normalize_user(user)
            old_name, new_name = normalize_mailbox_name(old), normalize_mailbox_name(new)
            box = self._box(key, old_name)
            boxes = self._boxes(key)
            if new_name in boxes:
                raise MailboxExists(f"mailbox {new_name!r} exists")
            if is_inferior(new_name, old_name):
                raise MailboxRefused(f"cannot rename {old_name!r} under itself")
            if old_name == INBOX:
                # RFC 3501 §6.3.5: INBOX's messages move to the new mailbox; INBOX stays, empty.
                for parent in mailbox_parents(new_name):
                    if parent not in boxes:
                        self._new_box(key, parent, None, subscribed=False)
                target = self._new_box(key, new_name, None, subscribed=False)
                if box.messages:
                    box.highest_modseq += 1
                    target.highest_modseq += 1
                    for m in box.messages.values():
                        self._append(target, m.message_id, m.flags, m.internal_date)
                    box.messages = {}
                return self._info(key, target)
            moving = [n for n in boxes if n == old_name or is_inferior(n, old_name)]
            subscriptions = self._subscriptions.get(key, set())
            for name in moving:
                moved = boxes.pop(name)
                moved.name = new_name + name[len(old_name) :]
                boxes[moved.name] = moved
                if name in subscriptions:
                    subscriptions.discard(name)
                    subscriptions.add(moved.name)
            for parent in mailbox_parents(new_name):
                if parent not in boxes:
                    self._new_box(key, parent, None, subscribed=False)
            return self._info(key, boxes[new_name])

        return self._guarded(rename)

    def subscribe(self, user: str, name: str) -> Deferred[None]:
        def add() -> None:
            key, canonical = normalize_user(user), normalize_mailbox_name(name)
            self._box(key, canonical)  # only an existing mailbox (RFC 3501 §6.3.6 allows it)
            self._subscriptions.setdefault(key, set()).add(canonical)

        return self._guarded(add)

    def unsubscribe(self, user: str, name: str) -> Deferred[None]:
        def remove() -> None:
            key, canonical = normalize_user(user), normalize_mailbox_name(name)
            self._subscriptions.get(key, set()).discard(canonical)

        return self._guarded(remove)

    def list_subscriptions(self, user: str) -> Deferred[list[str]]:
        return self._guarded(lambda: sorted(self._subscriptions.get(normalize_user(user), ())))

    def claim_recent(self, user: str, name: str) -> Deferred[MailboxInfo]:
        def claim() -> MailboxInfo:
            key = normalize_user(user)
            box = self._box(key, normalize_mailbox_name(name))
            before = self._info(key, box)
            box.first_recent = box.uidnext
            return before

        return self._guarded(claim)

    def mailbox_status(self, user: str, name: str) -> Deferred[MailboxStatus]:
        def status() -> MailboxStatus:
            box = self._box(normalize_user(user), normalize_mailbox_name(name))
            unseen = sum(1 for m in box.messages.values() if SEEN not in m.flags)
            recent = sum(1 for uid in box.messages if uid >= box.first_recent)
            return MailboxStatus(
                messages=len(box.messages),
                recent=recent,
                uidnext=box.uidnext,
                uidvalidity=box.uidvalidity,
                unseen=unseen,
                highest_modseq=box.highest_modseq,
            )

        return self._guarded(status)

    def add_message(
        self,
        user: str,
        mailbox: str,
        message_id: str,
        internal_date: float,
        flags: Iterable[str] = (),
        mime_index: bytes | None = None,
    ) -> Deferred[MailMessage]:
        def add() -> MailMessage:
            owner, canonical = normalize_user(user), normalize_mailbox_name(mailbox)
            wanted = normalize_flags(flags)
            return self._add(owner, canonical, message_id, internal_date, wanted, mime_index)

        return self._guarded(add)

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
        wanted = None if uids is None else set(uids)

        def listing() -> MailboxListing:
            owner = normalize_user(user)
            box = self._box(owner, normalize_mailbox_name(mailbox))
            messages = [
                self._mail_message(m)
                for m in box.messages.values()
                if (changed_since is None or m.modseq > changed_since)
                and (wanted is None or m.uid in wanted)
            ]
            count = sum(1 for uid in box.messages if wanted is None or uid in wanted)
            return MailboxListing(self._info(owner, box), messages, count)

        return self._guarded(listing)

    def mime_indexes(
        self, user: str, mailbox: str, uids: Iterable[int]
    ) -> Deferred[dict[int, bytes]]:
        def read() -> dict[int, bytes]:
            box = self._box(normalize_user(user), normalize_mailbox_name(mailbox))
            found: dict[int, bytes] = {}
            for uid in sorted(set(uids)):
                m = box.messages.get(uid)
                if m is not None and m.message_id in self._mime_indexes:
                    found[uid] = self._mime_indexes[m.message_id]
            return found

        return self._guarded(read)

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
        def store() -> FlagUpdate:
            box = self._box(normalize_user(user), normalize_mailbox_name(mailbox), uidvalidity)
            wanted = normalize_flags(flags)
            apply_flags(frozenset(), mode, wanted)  # refuses an unknown mode before any change
            targets = [box.messages[uid] for uid in sorted(set(uids)) if uid in box.messages]
            failed = [
                m.uid for m in targets if unchanged_since is not None and m.modseq > unchanged_since
            ]
            passed = [m for m in targets if m.uid not in failed]
            changes = {m.uid: apply_flags(m.flags, mode, wanted) for m in passed}
            changed = [m.uid for m in passed if changes[m.uid] != m.flags]
            if changed:
                box.highest_modseq += 1
                for uid in changed:
                    box.messages[uid] = replace(
                        box.messages[uid], flags=changes[uid], modseq=box.highest_modseq
                    )
            return FlagUpdate(
                messages=tuple(self._mail_message(box.messages[m.uid]) for m in passed),
                changed=tuple(changed),
                failed=tuple(failed),
                highest_modseq=box.highest_modseq,
            )

        return self._guarded(store)

    def _copy(
        self,
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        move: bool,
        uidvalidity: int | None,
    ) -> CopyResult:
        key = normalize_user(user)
        source_box = self._box(key, normalize_mailbox_name(source), uidvalidity)
        target_box = self._box(key, normalize_mailbox_name(target))
        moving = [
            source_box.messages[uid] for uid in sorted(set(uids)) if uid in source_box.messages
        ]
        if not moving:
            return CopyResult(target_box.uidvalidity, ())
        target_box.highest_modseq += 1
        pairs = []
        for m in moving:
            pairs.append(
                (m.uid, self._append(target_box, m.message_id, m.flags, m.internal_date).uid)
            )
        if move:
            # A move within one mailbox (RFC 6851 allows it) is one operation: one modseq.
            if source_box is not target_box:
                source_box.highest_modseq += 1
            for m in moving:
                del source_box.messages[m.uid]
        return CopyResult(target_box.uidvalidity, tuple(pairs))

    def copy_messages(
        self,
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[CopyResult]:
        return self._guarded(lambda: self._copy(user, source, uids, target, False, uidvalidity))

    def move_messages(
        self,
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[CopyResult]:
        return self._guarded(lambda: self._copy(user, source, uids, target, True, uidvalidity))

    def expunge(
        self,
        user: str,
        mailbox: str,
        uids: Iterable[int] | None = None,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[list[MailMessage]]:
        def remove() -> list[MailMessage]:
            box = self._box(normalize_user(user), normalize_mailbox_name(mailbox), uidvalidity)
            among = None if uids is None else set(uids)
            gone = [
                m
                for m in box.messages.values()
                if DELETED_FLAG in m.flags and (among is None or m.uid in among)
            ]
            if gone:
                box.highest_modseq += 1
            for m in gone:
                del box.messages[m.uid]
            return [self._mail_message(m) for m in gone]

        return self._guarded(remove)

    def purge_older_than(self, domain: str, before: float) -> Deferred[list[PurgedMessage]]:
        def purge() -> list[PurgedMessage]:
            canonical = normalize_domain(domain)
            purged: list[PurgedMessage] = []
            for user in sorted(self._mailboxes):
                if split_address(user)[1] != canonical:
                    continue
                boxes = self._mailboxes[user]
                for name in sorted(boxes):
                    box = boxes[name]
                    old = [m for m in box.messages.values() if m.internal_date < before]
                    if old:
                        box.highest_modseq += 1
                    for m in old:
                        del box.messages[m.uid]
                        purged.append(PurgedMessage(user, name, m.uid, m.message_id))
            return purged

        return self._guarded(purge)

    def unreferenced_messages(
        self, message_ids: Iterable[str] | None = None
    ) -> Deferred[list[str]]:
        return succeed(sorted(self._unreferenced(message_ids)))

    def _unreferenced(self, message_ids: Iterable[str] | None) -> set[str]:
        """The stored messages among these (all when None) that no mailbox and no waiting
        queue entry needs: one rule for L{unreferenced_messages} and L{delete_messages}."""
        candidates = set(self._messages if message_ids is None else message_ids)
        candidates &= set(self._messages)
        for boxes in self._mailboxes.values():
            for box in boxes.values():
                candidates -= {m.message_id for m in box.messages.values()}
        for e in self._entries.values():
            if e.state in (QUEUED, HELD):
                candidates.discard(e.message_id)
        return candidates

    # -- ICredentialStore

    def _change_users(
        self, domain: str, users: Iterable[UserCredential], replace_all: bool
    ) -> UserListChange:
        wanted = normalize_user_list(domain, users)
        key = normalize_domain(domain)
        current = self._users.get(key, {})
        added = sum(1 for a in wanted if a not in current)
        unchanged = sum(1 for a, h in wanted.items() if current.get(a) == h)
        updated = len(wanted) - added - unchanged
        removed = sum(1 for a in current if a not in wanted) if replace_all else 0
        new = dict(wanted) if replace_all else {**current, **wanted}
        self._drop_aliases_of(a for a in current if a not in new)
        if new:
            self._users[key] = new
        else:
            self._users.pop(key, None)
        self._credentials_version += 1
        return UserListChange(added, updated, removed, unchanged)

    def replace_users(
        self, domain: str, users: Iterable[UserCredential]
    ) -> Deferred[UserListChange]:
        return self._guarded(lambda: self._change_users(domain, users, True))

    def merge_users(self, domain: str, users: Iterable[UserCredential]) -> Deferred[UserListChange]:
        return self._guarded(lambda: self._change_users(domain, users, False))

    def set_user(self, address: str, password_hash: str) -> Deferred[bool]:
        def set_one() -> bool:
            key, domain = credential_key(address)
            text = check_password_hash_text(password_hash)
            users = self._users.setdefault(domain, {})
            new = key not in users
            users[key] = text
            self._credentials_version += 1
            return new

        return self._guarded(set_one)

    def remove_user(self, address: str) -> Deferred[None]:
        def remove() -> None:
            key, domain = credential_key(address)
            users = self._users.get(domain, {})
            if users.pop(key, None) is None:
                raise NoSuchUser(f"{key} has no synced credentials")
            if not users:
                del self._users[domain]
            self._drop_aliases_of([key])
            self._credentials_version += 1

        return self._guarded(remove)

    def get_user(self, address: str) -> Deferred[str | None]:
        def get() -> str | None:
            key, domain = credential_key(address)
            return self._users.get(domain, {}).get(key)

        return self._guarded(get)

    def list_users(self, domain: str) -> Deferred[list[UserCredential]]:
        def listing() -> list[UserCredential]:
            users = self._users.get(normalize_domain(domain), {})
            return [UserCredential(a, users[a]) for a in sorted(users)]

        return self._guarded(listing)

    def has_user_list(self, domain: str) -> Deferred[bool]:
        return self._guarded(lambda: bool(self._users.get(normalize_domain(domain))))

    def credentials_version(self) -> Deferred[int]:
        return succeed(self._credentials_version)

    def _drop_aliases_of(self, users: Iterable[str]) -> None:
        gone = set(users)
        for alias in [a for a, owner in self._aliases.items() if owner in gone]:
            del self._aliases[alias]

    def add_alias(self, alias: str, user: str) -> Deferred[None]:
        def add() -> None:
            key, owner = alias_pair(alias, user)
            if owner not in self._users.get(split_address(owner)[1], {}):
                raise NoSuchUser(f"{owner} has no synced credentials")
            self._aliases[key] = owner
            self._credentials_version += 1

        return self._guarded(add)

    def remove_alias(self, alias: str) -> Deferred[bool]:
        def remove() -> bool:
            if self._aliases.pop(normalize_user(alias), None) is None:
                return False
            self._credentials_version += 1
            return True

        return self._guarded(remove)

    def list_aliases(self, user: str | None = None) -> Deferred[list[tuple[str, str]]]:
        def listing() -> list[tuple[str, str]]:
            owner = None if user is None else normalize_user(user)
            return [
                (alias, self._aliases[alias])
                for alias in sorted(self._aliases)
                if owner is None or self._aliases[alias] == owner
            ]

        return self._guarded(listing)


def _due(entry: QueueEntry, now: float) -> bool:
    return entry.state == QUEUED and entry.next_attempt_at <= now


def _copy_event(event: Event) -> Event:
    return replace(event, data=json.loads(json.dumps(event.data)))
