"""
The relay queue, for admins: list (filtered, paged), show, the moves (hold, release, retry,
delete, bounce with a DSN) on a list of ids or on everything a filter selects, and flush (#13).

Listings page through L{IQueueStore.query_entries}: a page is read, never the whole queue.  A
bulk move pages through its filter too, with no cap on the number of entries it changes, and
reports each entry it changed or skipped (the relay may move an entry between our read and our
write; such an entry is skipped, never forced).  A page of entries moves in one storage step
(L{IQueueStore.change_states}) and its events are recorded in one more, so a bulk hold of 1,000
entries waits for four fsyncs, not 2,000 (bench/README.md, "Admin API").  Reading needs scope
``read``; every move and flush needs ``operate``.  Non-operators see only the entries of their
domains; an id they may not see is "not found", like one that does not exist.

Each moved entry gets its ``queue.<past>`` event as before; the audit log gets one record per
domain a move touched, under that domain's owner.  A running server acts on the changes without
being told (the relay reads entry states before every batch); released and retried entries are
due at once, and a flush request for their domains makes a running server send them within a
second (none is made when no server runs: one starting later would skip it, and sends what is due
as it starts anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from strata_twisted.core.admin._common import domain_name, page_cursor, page_limit
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.core.dsn import FailedRecipient, status_of
from strata_twisted.core.imap_search import Content
from strata_twisted.core.relay import queue_dsn
from strata_twisted.errors import NoSuchEntry, NotFound, StrataError
from strata_twisted.model import (
    BOUNCED,
    DELETED,
    FLUSH_ACTION,
    HELD,
    QUEUED,
    NewEvent,
    QueueEntry,
    QueueFilter,
    StoredMessage,
    display_domain,
)

QueueAction = Literal["hold", "release", "retry", "delete", "bounce"]
_EVERYTHING: Final = QueueFilter()
# How many entries a bulk move reads, and moves in one storage step, at a time.
_BULK_PAGE: Final = 500
# How many entry ids one audit record lists (it always has the count).
_AUDIT_IDS: Final = 100
# How much of each message's start L{queue_subjects} reads, for a page in one storage round trip;
# the rare header section that is longer and hides its Subject is read whole, alone.
_HEAD_BYTES: Final = 8192


@dataclass(frozen=True)
class Move:
    """One admin move on queue entries."""

    verb: str
    past: str
    from_states: tuple[str, ...]
    to_state: str
    note: str = ""  # becomes the entry's last_error (IQueueStore.change_state)


MOVES: Final[dict[str, Move]] = {
    "hold": Move("hold", "held", (QUEUED,), HELD),
    "release": Move("release", "released", (HELD,), QUEUED),
    # Due now: the store makes an entry moved to QUEUED due at once, whatever it was.
    "retry": Move("retry", "retried", (QUEUED,), QUEUED),
    "delete": Move("delete", "deleted", (QUEUED, HELD), DELETED),
    "bounce": Move("bounce", "bounced", (QUEUED, HELD), BOUNCED, "bounced by the administrator"),
}
# RFC 3463 X.0.0: other or undefined status; nothing more specific fits an admin's decision.
_ADMIN_BOUNCE_STATUS: Final = "5.0.0"


# -- scoping ---------------------------------------------------------------------------------


async def _scoped(ctx: AdminContext, caller: Caller, query: QueueFilter) -> QueueFilter:
    """``query`` restricted to the domains ``caller`` may see (L{NotFound} for a domain it
    names that the caller may not see)."""
    return replace(query, domains=await ctx.tenancy.restrict(caller, query.domains))


def _check_filter(query: QueueFilter) -> QueueFilter:
    """The filter's domain names in canonical form (L{InvalidInput} ``domain`` if one is not a
    domain name)."""
    if query.domains is None:
        return query
    return replace(query, domains=tuple(domain_name(d, "domain") for d in query.domains))


# -- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePage:
    """One page of a listing, in arrival order; ``next_cursor`` None: this was the last."""

    entries: list[QueueEntry]
    next_cursor: str | None


async def list_queue(
    ctx: AdminContext,
    caller: Caller,
    query: QueueFilter = _EVERYTHING,
    cursor: str | None = None,
    limit: int = 100,
) -> QueuePage:
    """One page of the entries ``query`` selects among those ``caller`` may see; pass the
    page's ``next_cursor`` back for the next."""
    require(caller, "read")
    after = page_cursor(cursor) or 0
    scoped = await _scoped(ctx, caller, _check_filter(query))
    entries: list[QueueEntry] = await ctx.queue.query_entries(scoped, after, page_limit(limit))
    more = len(entries) == limit
    return QueuePage(entries, str(entries[-1].seq) if more and entries else None)


async def count_queue(ctx: AdminContext, caller: Caller, query: QueueFilter = _EVERYTHING) -> int:
    """How many entries ``query`` selects among those ``caller`` may see."""
    require(caller, "read")
    count: int = await ctx.queue.count_entries(await _scoped(ctx, caller, _check_filter(query)))
    return count


async def queue_subjects(
    ctx: AdminContext, caller: Caller, entries: Sequence[QueueEntry]
) -> dict[str, str]:
    """
    The Subject of each message of ``entries`` (a page of L{list_queue}) that ``caller`` may
    see, decoded (RFC 2047), by queue id; "" for a message without one.  Queue entries do not
    keep the subject, and a listing shows it: the page's message heads are read in one step.
    """
    require(caller, "read")
    ids = list(dict.fromkeys(e.message_id for e in await _visible(ctx, caller, list(entries))))
    subjects: dict[str, str] = {}
    for head in await ctx.messages.read_heads(ids, _HEAD_BYTES):
        subject = Content(raw=head.head).first("subject")
        if subject is None and len(head.head) >= _HEAD_BYTES:
            try:
                headers: bytes = await ctx.messages.read_headers(head.message.id)
            except NoSuchEntry:  # retention removed it since: no subject to show
                headers = b""
            subject = Content(header=headers).first("subject")
        subjects[head.message.id] = (subject or "").strip()
    return subjects


@dataclass(frozen=True)
class QueueMessage:
    """A queued message, as an admin sees it: its envelope, the entries shown (one, or every
    one of the message the caller may see) and its header section."""

    message: StoredMessage
    recipients: tuple[str, ...]  # only the recipients of entries the caller may see
    entries: list[QueueEntry]
    headers: bytes

    def as_json(self) -> dict[str, Any]:
        envelope = self.message.envelope
        return {
            "queue_id": self.message.id,
            "sender": envelope.sender,
            "recipients": list(self.recipients),
            "client_address": envelope.client_address,
            "client_helo": envelope.client_helo,
            "received_at": self.message.received_at,
            "size": self.message.size,
            "message_id": self.message.header_message_id,
            "entries": [e.as_json() for e in self.entries],
            "headers": self.headers.decode("utf-8", "replace"),
        }


def _no_entry(text: str) -> NotFound:
    return NotFound("entry", text, f"no queue entry or message {text}")


async def _visible(
    ctx: AdminContext, caller: Caller, entries: list[QueueEntry]
) -> list[QueueEntry]:
    names = await ctx.tenancy.domain_names(caller)
    if names is None:
        return entries
    return [e for e in entries if e.domain in names]


async def _entries_named(ctx: AdminContext, caller: Caller, text: str) -> list[QueueEntry]:
    """The entries an id names (an entry id, or a queue id: every entry of the message) that
    ``caller`` may see; L{NotFound} if there are none."""
    entry: QueueEntry | None = await ctx.queue.get_entry(text)
    found = [entry] if entry is not None else await ctx.queue.entries_for_message(text)
    visible = await _visible(ctx, caller, found)
    if not visible:
        raise _no_entry(text)
    return visible


async def show_queue(ctx: AdminContext, caller: Caller, text: str) -> QueueMessage:
    """A queue entry (``QUEUEID.N``) or a whole message (``QUEUEID``): envelope and headers."""
    entry: QueueEntry | None = await ctx.queue.get_entry(text)
    message_id = entry.message_id if entry is not None else text
    message: StoredMessage | None = await ctx.messages.get_message(message_id)
    if message is None:
        raise _no_entry(text)
    every: list[QueueEntry] = await ctx.queue.entries_for_message(message_id)
    visible = await _visible(ctx, caller, every)
    if not caller.is_operator and not visible:
        raise _no_entry(text)
    if entry is not None:
        if entry not in visible and not caller.is_operator:
            raise _no_entry(text)
        shown = [entry]
    else:
        shown = visible
    require(caller, "read")
    recipients = (
        message.envelope.recipients
        if caller.is_operator
        else tuple(dict.fromkeys(e.recipient for e in visible))
    )
    headers: bytes = await ctx.messages.read_headers(message_id)
    return QueueMessage(message, recipients, shown, headers)


# -- moves -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Changed:
    before: QueueEntry
    after: QueueEntry


@dataclass(frozen=True)
class Skipped:
    """An entry that was not in a state the move allows: ``state`` is what it is now
    (``gone`` if it no longer exists)."""

    entry: QueueEntry
    state: str


@dataclass(frozen=True)
class DsnOutcome:
    """What a bounce did for one message: ``dsn`` the DSN's queue id, or None with ``reason``
    (no DSN to the null sender; the message record is gone) or ``error`` (it could not be
    queued)."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    dsn: str | None = None
    reason: str | None = None
    error: str | None = None


@dataclass
class ActionReport:
    """What a move did, entry by entry.  ``flush_requests``: ``(domain, request id)`` left for
    the running server (release, retry); ``server_running``: whether one was."""

    action: str
    move: Move
    changed: list[Changed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    dsns: list[DsnOutcome] = field(default_factory=list)
    flush_requests: list[tuple[str, int]] = field(default_factory=list)
    server_running: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "changed": [c.after.id for c in self.changed],
            "skipped": [{"id": s.entry.id, "state": s.state} for s in self.skipped],
            "dsns": [
                {"queue_id": d.message_id, "dsn": d.dsn, "reason": d.reason, "error": d.error}
                for d in self.dsns
            ],
            "flush_requested": [domain for domain, _ in self.flush_requests],
        }


def _bounce_reason(entry: QueueEntry) -> tuple[str, str]:
    """
    The diagnostic and RFC 3463 status a DSN gives for an entry the admin bounces.  An entry
    held for review after the primary refused it (``hold_rejected``) keeps that refusal: the
    sender must learn why (``550 5.1.1 ... user unknown``), not just that an admin decided.
    """
    note = MOVES["bounce"].note
    error = entry.last_error
    if not error:
        return note, _ADMIN_BOUNCE_STATUS
    if error.startswith("5"):  # the primary's refusal: it leads, as in the relay's own DSNs
        return f"{error} (then {note})", status_of(error)
    return f"{note}; last error: {error}", _ADMIN_BOUNCE_STATUS


async def _apply(ctx: AdminContext, report: ActionReport, entries: Sequence[QueueEntry]) -> None:
    """
    Move ``entries`` (a page at most) in one storage step and record their events in one more:
    two transactions a page, not two an entry (1,000 entries took 2,000 fsyncs).  An entry the
    move no longer applies to (the relay moved it since we read it) is skipped, never forced.
    """
    move = report.move
    at = ctx.clock.seconds()
    # A bounce's note carries each entry's last error: one step per distinct note.
    by_note: dict[str, list[str]] = {}
    for entry in entries:
        note = _bounce_reason(entry)[0] if move.verb == "bounce" else move.note
        by_note.setdefault(note, []).append(entry.id)
    moved: dict[str, QueueEntry] = {}
    for note, ids in by_note.items():
        changed: list[QueueEntry] = await ctx.queue.change_states(
            ids, move.from_states, move.to_state, at, note
        )
        moved.update((e.id, e) for e in changed)
    events: list[NewEvent] = []
    for entry in entries:
        after = moved.get(entry.id)
        if after is None:
            now: QueueEntry | None = await ctx.queue.get_entry(entry.id)
            report.skipped.append(Skipped(entry, now.state if now else "gone"))
            continue
        report.changed.append(Changed(entry, after))
        if move.verb != "bounce":  # queue_dsn records the bounce events, one per message
            events.append(
                NewEvent(
                    f"queue.{move.past}",
                    f"{after.id} to <{after.recipient}> {move.past} by the administrator",
                    after.domain,
                    {"entry": after.id, "queue_id": after.message_id},
                )
            )
    if events:
        await ctx.events.record_events(events)


async def _selected_by_ids(
    ctx: AdminContext, caller: Caller, ids: Sequence[str]
) -> list[QueueEntry]:
    selected: dict[str, QueueEntry] = {}
    for text in ids:
        for entry in await _entries_named(ctx, caller, text):
            selected.setdefault(entry.id, entry)
    return list(selected.values())


async def queue_action(
    ctx: AdminContext,
    caller: Caller,
    action: QueueAction,
    ids: Sequence[str] | None = None,
    query: QueueFilter | None = None,
) -> ActionReport:
    """
    Apply ``action`` to the entries ``ids`` name (entry ids, or queue ids for every entry of a
    message; any unknown one: L{NotFound}, and nothing changes), or to every entry ``query``
    selects that is in a state the move applies to (paging through it, with no cap).
    """
    move = MOVES.get(action)
    if move is None:
        raise InvalidInput("action", f"expected one of {', '.join(MOVES)}, got {action!r}")
    if (ids is None) == (query is None):
        raise InvalidInput("ids", "give either ids or a filter")
    report = ActionReport(action, move, server_running=ctx.server_running())
    if ids is not None:
        if not ids:
            raise InvalidInput("ids", "no ids given")
        entries = await _selected_by_ids(ctx, caller, ids)
        require(caller, "operate")
        for start in range(0, len(entries), _BULK_PAGE):
            await _apply(ctx, report, entries[start : start + _BULK_PAGE])
    else:
        assert query is not None
        checked = _check_filter(query)
        require(caller, "operate")
        states = move.from_states
        if checked.states is not None:
            states = tuple(s for s in checked.states if s in move.from_states)
        scoped = replace(await _scoped(ctx, caller, checked), states=states)
        after_seq = 0
        while True:
            page: list[QueueEntry] = await ctx.queue.query_entries(scoped, after_seq, _BULK_PAGE)
            await _apply(ctx, report, page)
            if len(page) < _BULK_PAGE:
                break
            after_seq = page[-1].seq
    if move.verb == "bounce":
        await _bounce(ctx, report)
    if move.to_state == QUEUED and report.changed and report.server_running:
        now = ctx.clock.seconds()
        for domain in sorted({c.after.domain for c in report.changed}):
            request_id: int = await ctx.control.request(FLUSH_ACTION, domain, now)
            report.flush_requests.append((domain, request_id))
    await _audit(ctx, caller, report)
    return report


async def _bounce(ctx: AdminContext, report: ActionReport) -> None:
    """One DSN per message to its sender (none to <>), naming every recipient bounced."""
    by_message: dict[str, list[Changed]] = {}
    for change in report.changed:
        by_message.setdefault(change.after.message_id, []).append(change)
    for message_id, changes in by_message.items():
        entries = [c.after for c in changes]
        recipients = tuple(e.recipient for e in entries)
        message: StoredMessage | None = await ctx.messages.get_message(message_id)
        if message is not None:
            failed = [FailedRecipient(c.after, *_bounce_reason(c.before)) for c in changes]
            try:
                dsn = await queue_dsn(
                    messages=ctx.messages,
                    events=ctx.events,
                    clock=ctx.clock,
                    hostname=ctx.settings.hostname,
                    message=message,
                    failed=failed,
                    event_kind="queue.bounced",
                )
            except StrataError as e:
                error = f"{message_id} is bounced, but its DSN could not be queued: {e}"
                report.dsns.append(
                    DsnOutcome(message_id, entries[0].sender, recipients, error=error)
                )
                continue
            if dsn is not None:
                report.dsns.append(DsnOutcome(message_id, entries[0].sender, recipients, dsn))
                continue
        # No DSN (RFC 5321 §4.5.5: never to the null sender; or the message record is gone), so
        # queue_dsn recorded nothing.
        why = "the sender is <>" if message is not None else "its message record is missing"
        await ctx.events.record_event(
            "queue.bounced",
            f"{message_id} to {', '.join(recipients)} bounced by the administrator; no DSN: {why}",
            entries[0].domain,
            {"queue_id": message_id},
        )
        report.dsns.append(DsnOutcome(message_id, entries[0].sender, recipients, reason=why))


async def _owner(ctx: AdminContext, domain: str) -> Owner:
    """The owner of a domain's entries: the domain's, or the operator's for mail queued for a
    domain not (or no longer) protected."""
    found = await ctx.domains.get_domain(domain)
    return await ctx.tenancy.domain_owner(found) if found is not None else Owner()


async def _audit(ctx: AdminContext, caller: Caller, report: ActionReport) -> None:
    by_domain: dict[str, list[str]] = {}
    for change in report.changed:
        by_domain.setdefault(change.after.domain, []).append(change.after.id)
    for domain, ids in sorted(by_domain.items()):
        detail: dict[str, Any] = {"count": len(ids), "entries": ids[:_AUDIT_IDS]}
        await ctx.auditor.record(
            caller, f"queue.{report.move.verb}", domain, await _owner(ctx, domain), detail
        )


# -- flush -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlushResult:
    """A flush left for the running server: of ``domain``'s queue (None: the whole queue, or
    every domain the caller may see), with how much was waiting."""

    domain: str | None
    request_ids: tuple[int, ...]
    queued: int
    held: int


def no_server(ctx: AdminContext) -> str:
    return f"no Strata server is running on {ctx.settings.data_dir}"


async def flush_queue(ctx: AdminContext, caller: Caller, domain: str | None = None) -> FlushResult:
    """
    Ask the running server to deliver the queued mail of ``domain`` (or of everything the
    caller may see) now, deferred entries included; held entries stay held.  With no server
    running: L{Conflict}, and no request is left (a server starting later would skip it).
    """
    canonical = domain_name(domain, "domain") if domain is not None else None
    names = await ctx.tenancy.domain_names(caller)
    stats = [s for s in await ctx.queue.queue_stats() if canonical is None or s.domain == canonical]
    if names is not None:
        stats = [s for s in stats if s.domain in names]
    if canonical is not None:
        if names is not None:
            await ctx.tenancy.domain(caller, canonical)
        elif not stats and await ctx.domains.get_domain(canonical) is None:
            # Most likely a typo: a flush of it would be accepted and do nothing.
            raise NotFound(
                "domain",
                canonical,
                f"{display_domain(canonical)} is not a protected domain and has nothing queued",
            )
    require(caller, "operate")
    scope = f"{display_domain(canonical)}'s queue" if canonical else "the queue"
    queued, held = sum(s.queued for s in stats), sum(s.held for s in stats)
    if not ctx.server_running():
        raise Conflict(
            "server",
            str(ctx.settings.data_dir),
            f"{no_server(ctx)}, so nothing can flush {scope} ({queued} queued): start one "
            "(twistd -n strata); it sends the mail that is due as soon as it starts",
        )
    now = ctx.clock.seconds()
    targets: list[str | None]
    if canonical is not None:
        targets = [canonical]
    elif names is None:
        targets = [None]
    else:
        targets = list(names)
    request_ids = tuple([await ctx.control.request(FLUSH_ACTION, t, now) for t in targets])
    owner = await _owner(ctx, canonical) if canonical else Owner(caller.reseller, caller.customer)
    await ctx.auditor.record(
        caller, "queue.flush", canonical or "*", owner, {"queued": queued, "held": held}
    )
    return FlushResult(canonical, request_ids, queued, held)
