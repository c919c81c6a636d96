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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from strata_twisted.clock import SecondsClock
from strata_twisted.errors import (
    DomainExists,
    NoSuchDomain,
    NoSuchEntry,
    QueueStateError,
    StorageError,
)
from strata_twisted.interfaces import (
    IControlStore,
    IDomainStore,
    IEventStore,
    IMessageStore,
    IMessageWriter,
    IMonitorStore,
    IQueueStore,
    IShadowStore,
)
from strata_twisted.model import (
    DELIVERED,
    HELD,
    QUEUED,
    AttemptResult,
    ControlRequest,
    Domain,
    DomainStatus,
    Event,
    IncomingMessage,
    MessageHead,
    Outage,
    QueueEntry,
    QueueStats,
    ShadowCopy,
    StoredMessage,
)
from strata_twisted.storage._bodies import check_body_range, check_message_id, header_section
from strata_twisted.storage._queue import apply_change, apply_result

# The SQLite backend names body files after the queue id; the same rule here keeps the backends
# interchangeable (a queue id that works in tests works in production).


@dataclass
class _Message:
    stored: StoredMessage
    body: bytes


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
)
class MemoryStore:
    """Every storage role in memory.  ``clock`` timestamps domains, shadow copies and events."""

    def __init__(self, clock: SecondsClock) -> None:
        self._clock = clock
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
                state=QUEUED,
                attempts=0,
                last_error=None,
                next_attempt_at=incoming.received_at,
            )
            self._next_seq += 1
            self._entries[entry.id] = entry
            if delivery.shadow:
                self._shadow_copies.append(
                    ShadowCopy(message_id, delivery.recipient, "INBOX", created_at)
                )
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

    # -- IQueueStore

    def list_entries(self, domain: str | None = None) -> Deferred[list[QueueEntry]]:
        return succeed([e for e in self._entries.values() if domain is None or e.domain == domain])

    def get_entry(self, entry_id: str) -> Deferred[QueueEntry | None]:
        return succeed(self._entries.get(entry_id))

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
            for entry in self._entries.values():
                if entry.domain == domain and _due(entry, now):
                    due.append(entry)
                    if len(due) == limit:
                        break
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

    def last_delivered_at(self, domain: str) -> Deferred[float | None]:
        times = [
            e.delivered_at
            for e in self._entries.values()
            if e.domain == domain and e.state == DELIVERED and e.delivered_at is not None
        ]
        return succeed(max(times, default=None))

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

    def list_events(self, domain: str | None = None, limit: int = 100) -> Deferred[list[Event]]:
        if limit <= 0:
            return succeed([])
        matching = [e for e in self._events if domain is None or e.domain == domain]
        return succeed([_copy_event(e) for e in matching[-limit:]])

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

    # -- IControlStore

    def request(self, action: str, domain: str | None, at: float) -> Deferred[int]:
        request = ControlRequest(len(self._requests) + 1, action, domain, at)
        self._requests.append(request)
        return succeed(request.id)

    def requests_after(self, last_id: int) -> Deferred[list[ControlRequest]]:
        return succeed([r for r in self._requests if r.id > last_id])

    def last_request_id(self) -> Deferred[int]:
        return succeed(len(self._requests))


def _due(entry: QueueEntry, now: float) -> bool:
    return entry.state == QUEUED and entry.next_attempt_at <= now


def _copy_event(event: Event) -> Event:
    return replace(event, data=json.loads(json.dumps(event.data)))
