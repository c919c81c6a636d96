"""
Storage roles, as ``zope.interface`` interfaces.

Each role is separate so that a backend can serve one without faking the others (Stalwart's store
roles).  Every method that touches storage returns a Deferred, so a backend may do its I/O on a
thread (SQLite) or over the network (Redis) without blocking the reactor.  A backend passes the
conformance suite in ``tests/conformance/`` for every role it provides; then it is interchangeable.

Rules every backend keeps:

- Nothing is visible before commit.  An L{IMessageWriter} that is aborted, or that never commits
  (a crash), leaves no message, queue entry or shadow copy behind.
- Commit is one durable step: when the Deferred from L{IMessageWriter.commit} fires, the body, the
  message record, every queue entry and every shadow copy survive a crash (fsync'd); when it fails,
  none of them is visible.
- Queue entries are ordered by arrival: ``QueueEntry.seq`` grows with commit order, across domains.
- Failures of ours raise L{strata_twisted.errors.StorageError} (or L{InsufficientStorage} when the
  disk is full) through the Deferred, never a bare exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from twisted.internet.defer import Deferred

    from strata_twisted.model import (
        AdminAccount,
        ApiKey,
        AttemptResult,
        AuditRecord,
        ControlRequest,
        CopyResult,
        Customer,
        Domain,
        DomainSample,
        DomainStatus,
        Event,
        EventFilter,
        FlagMode,
        FlagUpdate,
        IncomingMessage,
        MailboxInfo,
        MailboxListing,
        MailboxStatus,
        MailMessage,
        MessageHead,
        NewEvent,
        Outage,
        PurgedMessage,
        QueueEntry,
        QueueFilter,
        QueueStats,
        RelayActivity,
        Reseller,
        ResellerLogo,
        SeriesTotal,
        ShadowCopy,
        StateRun,
        StoredMessage,
        UserCredential,
        UserListChange,
    )


class IDomainStore(Interface):
    """The protected domains (the admin's configuration)."""

    def list_domains() -> Deferred[list[Domain]]:
        """Every protected domain, sorted by name."""

    def get_domain(name: str) -> Deferred[Domain | None]:
        """The domain with this canonical (ASCII, lowercase) name, or None."""

    def add_domain(domain: Domain) -> Deferred[Domain]:
        """
        Protect a new domain.  Sets ``created_at``/``updated_at`` from the store's clock when they
        are 0.  Fails with L{DomainExists} when it is already protected.
        """

    def update_domain(domain: Domain) -> Deferred[Domain]:
        """Replace a domain's settings (``updated_at`` refreshed).  Fails with L{NoSuchDomain}."""

    def remove_domain(name: str) -> Deferred[None]:
        """Stop protecting a domain (its queued mail stays).  Fails with L{NoSuchDomain}."""

    def domains_version() -> Deferred[int]:
        """A number that changes whenever any domain is added, updated or removed."""


class IMessageWriter(Interface):
    """
    One message being received: two-phase delivery (maddy, Postfix cleanup).

    ``write`` appends body bytes (already dot-unstuffed, with the Received header first); ``commit``
    makes body, message record, queue entries and shadow copies durable and visible in one step;
    ``abort`` throws everything away.  After commit or abort the writer is finished.
    """

    message_id = Attribute("Our queue id for this message (str), fixed before the first byte.")
    size = Attribute("Bytes written so far (int).")

    def write(data: bytes) -> Deferred[None]:
        """
        Append bytes.  May buffer.  The Deferred fires when the writer can take more (callers may
        wait for it to apply back-pressure); a failure (e.g. disk full) is reported here and again
        by ``commit``.
        """

    def commit(incoming: IncomingMessage) -> Deferred[StoredMessage]:
        """
        Make the message durable and visible, in one step with its queue entries (QUEUED and due
        at ``received_at``; HELD with ``last_error`` for a delivery with ``held``) and, for every
        delivery with ``shadow`` (mode ``both``), its shadow-copy record and its copy in that
        user's INBOX (default mailboxes made if missing; the MIME index kept once).  Fails with
        L{StorageError}, leaving nothing.
        """

    def abort() -> Deferred[None]:
        """Discard the message.  Safe to call after a failed write or commit."""


class IMessageStore(Interface):
    """Message records and bodies."""

    def begin(message_id: str) -> IMessageWriter:
        """Start receiving a new message with this (unique) queue id."""

    def get_message(message_id: str) -> Deferred[StoredMessage | None]:
        """The committed message with this queue id, or None."""

    def read_body(message_id: str) -> Deferred[bytes]:
        """The whole stored body (Received header included).  Fails with L{NoSuchEntry}."""

    def read_headers(message_id: str) -> Deferred[bytes]:
        """The header section of the stored body, up to and including the blank line."""

    def message_count() -> Deferred[int]:
        """How many committed messages are stored."""

    def read_body_range(message_id: str, offset: int, length: int) -> Deferred[bytes]:
        """
        Up to ``length`` bytes of the stored body from ``offset`` (b"" at or past the end): how the
        relay streams a large body without holding it whole.  Fails with L{NoSuchEntry}.
        """

    def read_heads(message_ids: Sequence[str], length: int) -> Deferred[list[MessageHead]]:
        """
        The committed messages with these ids, in the order given, each with the first ``length``
        bytes of its body; an id with no message is left out.  One storage round trip for all:
        how the relay reads ahead.  Fails as a whole (L{StorageError}) if any body cannot be read.
        """

    def delete_messages(message_ids: Iterable[str]) -> Deferred[int]:
        """
        Retention: delete these stored messages for good (body, message record, MIME index, and
        the records that only describe them: their finished queue entries and shadow-copy
        records), and return how many were deleted.  Ids with no stored message are ignored, so
        asking twice deletes nothing the second time.

        A message whose body is still needed is skipped, never deleted: one that a mailbox holds
        or that has a queue entry still waiting (QUEUED or HELD).  The store checks this again
        in the same atomic step as the deletion, so whatever the caller saw before (a stale
        L{IMailboxStore.unreferenced_messages} answer, a release racing with the purge), a body
        the relay queue or a mailbox needs is never lost.  A body in its own file is unlinked
        once the records are gone; a file that cannot be unlinked then is an orphan the next
        recovery sweep removes.
        """


class IQueueStore(Interface):
    """Queue entries: one per recipient, ordered per domain by arrival."""

    def list_entries(domain: str | None = None) -> Deferred[list[QueueEntry]]:
        """Entries (every state), in arrival order; only ``domain``'s when given."""

    def get_entry(entry_id: str) -> Deferred[QueueEntry | None]:
        """The entry with this id, or None."""

    def entries_for_message(message_id: str) -> Deferred[list[QueueEntry]]:
        """The entries of one message, in recipient order."""

    def queue_stats() -> Deferred[list[QueueStats]]:
        """Depth and oldest entry per domain that has queued or held entries, sorted by domain."""

    def due_domains(now: float) -> Deferred[list[str]]:
        """Domains that have QUEUED entries with ``next_attempt_at <= now``, sorted by name."""

    def due_entries(domain: str, now: float, limit: int) -> Deferred[list[QueueEntry]]:
        """
        The first ``limit`` QUEUED entries of ``domain`` with ``next_attempt_at <= now``, in
        arrival order (``seq``), and with them every other such entry of the last message they
        reach: a message's due entries are never cut in two, so the relay sends each message
        once, in one transaction, however its recipients fall against ``limit`` (more than
        ``limit`` entries only when that last message has more).  This is the order the relay
        delivers in.
        """

    def record_result(result: AttemptResult) -> Deferred[QueueEntry]:
        """
        Record one delivery attempt, committed before the Deferred fires (the relay sends the next
        message's content only then), so that no crash of the process can undo it.  Whether it is
        also on disk by then is the backend's choice (SQLite: ``sync_each_result``); L{sync_results}
        makes it so.  The change: ``attempts`` + 1, ``last_attempt_at`` = ``result.at``, and by
        outcome: delivered → DELIVERED with ``delivered_at``/``delivery_reply``; deferred →
        QUEUED with ``last_error`` and ``next_attempt_at``; bounced → BOUNCED, held → HELD, both
        with ``last_error``.  A DELIVERED entry never changes again: recording anything else for
        it fails with L{QueueStateError}.  Unknown id: L{NoSuchEntry}.  Results requested while a
        batch is being written are committed together (group commit).
        """

    def record_results(results: Sequence[AttemptResult]) -> Deferred[list[QueueEntry]]:
        """
        Record many delivery attempts in one atomic, durable step (one storage call, one
        transaction): each as L{record_result} would, in the order given (an id named twice
        gets both, the second on top of the first).  Returns the changed entries, one per result
        recorded, in that order.  For the relay's deferrals of a whole queue at once (its primary
        cannot be reached, its domain has no route), where one write per entry would cost
        thousands of transactions per run during an outage.

        Unlike L{record_result}, an unknown id or an entry already DELIVERED is skipped, not an
        error: it has nothing left to attempt (deleted or delivered meanwhile), and the others
        are recorded all the same.  An unknown outcome fails the whole call with
        L{QueueStateError} before anything changes.
        """

    def defer_due(
        domain: str, due: float, reason: str, at: float, next_attempt_at: float
    ) -> Deferred[int]:
        """
        Record one failed attempt on every QUEUED entry of ``domain`` that goes to its primary
        (not outbound) and is due by ``due`` (``next_attempt_at <= due``; ``inf``: all), as
        L{record_result} would record a deferral: ``attempts`` + 1, ``last_error`` ``reason``,
        ``last_attempt_at`` ``at``, ``next_attempt_at``.  One set-wise, durable step that reads
        no entry; returns how many were changed.  For the relay when the primary cannot be
        reached: during an outage that is the whole queue, every run.
        """

    def sync_results() -> Deferred[None]:
        """
        Make every result recorded so far durable on disk (fsync), so that not even a power failure
        can undo it.  The relay calls it after each batch.
        """

    def change_state(
        entry_id: str, from_states: tuple[str, ...], to_state: str, at: float, note: str
    ) -> Deferred[QueueEntry]:
        """
        An admin's move (hold, release, delete, bounce): set ``to_state`` when the entry is in one
        of ``from_states``, else fail with L{QueueStateError}.  Releasing to QUEUED makes the entry
        due at once (``next_attempt_at`` = ``at``); ``note`` goes to ``last_error`` unless empty.
        Unknown id: L{NoSuchEntry}.
        """

    def change_states(
        entry_ids: Sequence[str], from_states: tuple[str, ...], to_state: str, at: float, note: str
    ) -> Deferred[list[QueueEntry]]:
        """
        L{change_state} on each of ``entry_ids``, in one durable step (an admin's bulk move: one
        transaction for a page of entries, not one each).  Returns the entries changed, in the
        order given; an unknown id, an entry not in ``from_states`` (or delivered) and a repeated
        id are left out and left alone.  A ``to_state`` no entry may be moved to (unknown,
        DELIVERED): L{QueueStateError}, and nothing changes.
        """

    def reroute(
        entry_id: str, recipient: str, domain: str, outbound: bool, at: float, note: str
    ) -> Deferred[QueueEntry]:
        """
        Send a waiting entry elsewhere: its recipient, domain and ``outbound`` replaced (mail for
        ``<Postmaster>``, held until the operator's address is known).  Only a QUEUED or HELD
        entry, else L{QueueStateError}; it becomes QUEUED and due at ``at``, keeps its ``seq``
        and attempts, and ``note`` goes to ``last_error`` unless empty.  Unknown id:
        L{NoSuchEntry}.  One atomic step.
        """

    def last_delivered_at(domain: str) -> Deferred[float | None]:
        """The newest ``delivered_at`` among ``domain``'s entries, or None if none was delivered."""

    def mark_delay_notified(entry_ids: Sequence[str], at: float) -> Deferred[None]:
        """
        Record that the senders of these entries were told their message is delayed (RFC 3464
        ``Action: delayed``): ``delay_notified_at`` = ``at``, only on entries where it is still
        None, so the first notice's time is kept and none is sent twice.  Nothing else changes,
        whatever the entry's state.  Unknown ids are ignored.  One atomic step.
        """

    def query_entries(
        query: QueueFilter, after_seq: int = 0, limit: int = 100
    ) -> Deferred[list[QueueEntry]]:
        """
        At most ``limit`` entries matching ``query`` with ``seq > after_seq``, in arrival order:
        one page of a listing, the next page starting after the last ``seq`` returned.  Reads only
        the page (an index walk), never the whole queue: the admin API lists queues of 100,000
        entries.  The filter's ``sender``/``recipient`` match a case-insensitive substring.
        """

    def count_entries(query: QueueFilter) -> Deferred[int]:
        """How many entries match ``query``."""

    def received_since(domain: str, since: float) -> Deferred[tuple[int, int]]:
        """
        ``(received, delivered)``: how many of ``domain``'s entries (every state) were received at
        or after ``since``, and how many of those are DELIVERED now.  For the outage-end alert:
        "N queued during the outage, M delivered".
        """

    def relay_activity(
        since: float, domains: Sequence[str] | None = None
    ) -> Deferred[list[RelayActivity]]:
        """
        What the relay did since ``since``, per domain (L{RelayActivity}), for every domain with
        any (only ``domains``' when given), sorted by domain: the dashboard's "last 24 hours"
        and its drain rate, in one read for every domain rather than one per domain.
        """


class IShadowStore(Interface):
    """Copies of messages kept for recipients' shadow mailboxes (mode ``both``)."""

    def list_shadow_copies(recipient: str | None = None) -> Deferred[list[ShadowCopy]]:
        """Shadow copies in arrival order; only ``recipient``'s when given."""


class IEventStore(Interface):
    """The event log: what admins see under ``strata events``."""

    def record_event(
        kind: str, message: str, domain: str | None = None, data: dict[str, object] | None = None
    ) -> Deferred[Event]:
        """Append an event, timestamped by the store's clock."""

    def record_events(events: Sequence[NewEvent]) -> Deferred[list[Event]]:
        """
        Append several events in one durable step, in order, as L{record_event} would one by
        one (same timestamp, increasing ids).  Data that is not JSON: L{StorageError}, and none
        is recorded.
        """

    def list_events(domain: str | None = None, limit: int = 100) -> Deferred[list[Event]]:
        """The newest ``limit`` events, oldest first; only ``domain``'s when given."""

    def query_events(
        query: EventFilter, before_id: int | None = None, limit: int = 100
    ) -> Deferred[list[Event]]:
        """
        At most ``limit`` events matching ``query`` with ``id < before_id`` (None: from the
        newest), newest first: one page, the next starting before the last id returned.
        """


class IMonitorStore(Interface):
    """What the monitor knows of each primary, and the outage events it opened and closed."""

    def get_status(domain: str) -> Deferred[DomainStatus | None]:
        """The saved status of ``domain``'s primary, or None if it was never probed."""

    def list_statuses() -> Deferred[list[DomainStatus]]:
        """Every saved status, sorted by domain."""

    def save_status(status: DomainStatus) -> Deferred[DomainStatus]:
        """Insert or replace the status of ``status.domain``."""

    def open_outage(domain: str, started_at: float, reason: str) -> Deferred[Outage]:
        """Open an outage event; if one is already open for ``domain``, return that one."""

    def close_outage(domain: str, ended_at: float) -> Deferred[Outage | None]:
        """Close ``domain``'s open outage (None if there is none) and return it."""

    def list_outages(domain: str | None = None, limit: int = 100) -> Deferred[list[Outage]]:
        """The newest ``limit`` outages, oldest first; only ``domain``'s when given."""

    def latest_outages() -> Deferred[list[Outage]]:
        """
        The newest outage of every domain that ever had one (open or closed), sorted by
        domain: which domains are in an outage now and which came out of one lately, in one
        read for every domain.
        """


class IControlStore(Interface):
    """
    Requests from the admin to the running server (``strata queue flush``), across processes.

    The CLI appends a request; the server polls for requests newer than the last one it saw
    (L{strata_twisted.core.control.ControlPoller}).  Ids only grow, never reused, so "after id N"
    is exact whatever the clocks of the two processes say.
    """

    def request(action: str, domain: str | None, at: float) -> Deferred[int]:
        """Append a request (``domain`` None: every domain); its id, greater than any before."""

    def requests_after(last_id: int) -> Deferred[list[ControlRequest]]:
        """Every request with an id greater than ``last_id``, in id order."""

    def last_request_id() -> Deferred[int]:
        """The id of the newest request, or 0 when there is none."""


class IMailboxStore(Interface):
    """
    Users' shadow mailboxes, as an IMAP server (RFC 3501, UIDPLUS, MOVE, CONDSTORE, SPECIAL-USE)
    needs them.  Served by the same backend as L{IMessageStore} and L{IQueueStore}: a mailbox
    message refers to a stored body by its queue id (bodies are shared, never copied per mailbox),
    and L{unreferenced_messages} looks at the queue.

    Rules every backend keeps:

    - Every method takes the user (an address, canonicalised by
      L{strata_twisted.model.normalize_user}: ``Bob@Example.TEST`` is ``bob@example.test``) and
      only ever sees that user's mailboxes: no name, UID or message reaches another user's.
    - Names are canonicalised by L{strata_twisted.model.normalize_mailbox_name} (delimiter
      ``/``; INBOX in any case is INBOX).  An invalid name fails with L{InvalidMailboxName}, an
      invalid user with L{InvalidUser}, an invalid flag with L{InvalidFlag}; a missing mailbox
      with L{NoSuchMailbox} (whose ``name`` says which one).
    - Each method is one atomic, durable step: when its Deferred fires, the change survives a
      crash; when it fails, nothing changed.
    - UIDs grow strictly within a mailbox and are never reused while its UIDVALIDITY stands.
      UIDVALIDITY is unique across every mailbox the store ever made, so a deleted and re-created
      mailbox gets a new one.  A rename keeps it (the messages keep their UIDs).
    - CONDSTORE: each mailbox has a HIGHESTMODSEQ (1 when new).  Every operation that changes
      messages (add, copy in, flags changed, expunge, purge) gives it one new modseq, greater than
      any before; the messages it adds or whose flags it changes get that modseq.
    - ``uidvalidity`` (STORE, COPY, MOVE, EXPUNGE): the caller's idea of which mailbox the name
      means; a mailbox of that name with another UIDVALIDITY (deleted and created again since)
      fails with L{NoSuchMailbox}, and nothing changes.
    - UID arguments are explicit UIDs (the IMAP layer expands ``1:*`` against what it knows);
      UIDs that do not exist are ignored, as RFC 3501 §6.4.8 asks of UID commands.
    - \\Recent (RFC 3501 §2.3.2): each mailbox keeps ``first_recent`` (L{MailboxInfo}), the
      lowest UID no session has claimed.  Every message that arrives (delivery, APPEND, COPY,
      MOVE, the messages of a renamed INBOX) gets a UID at or above it, so it is recent until a
      session claims it with L{claim_recent}.
    - Subscriptions (RFC 3501 §6.3.6) are names, kept apart from the mailboxes: deleting a
      mailbox keeps its name subscribed, and a mailbox created again under that name shows as
      subscribed (``subscribed`` in L{MailboxInfo}).  L{list_subscriptions} gives them all.
    - Time values come from the caller; the store reads its clock only to pick a UIDVALIDITY.
    """

    def ensure_user(user: str) -> Deferred[list[MailboxInfo]]:
        """
        Give ``user`` the default mailboxes: INBOX, Sent, Drafts, Trash and Junk, the last four
        with their RFC 6154 attribute, each subscribed as it is created.  Idempotent: creates
        only those missing (a special-use one counts as present when some mailbox has its
        attribute, e.g. after a rename; a name already taken by a plain mailbox is left alone).
        Returns every mailbox.
        """

    def list_mailboxes(user: str) -> Deferred[list[MailboxInfo]]:
        """Every mailbox of ``user``, sorted by name (empty for a user never seen)."""

    def get_mailbox(user: str, name: str) -> Deferred[MailboxInfo | None]:
        """The mailbox with this name, or None."""

    def create_mailbox(
        user: str, name: str, special_use: str | None = None
    ) -> Deferred[MailboxInfo]:
        """
        Create a mailbox (with a new UIDVALIDITY), and its missing superiors too (RFC 3501
        §6.3.3: ``a/b/c`` creates ``a`` and ``a/b`` as ordinary mailboxes).  Creating does not
        subscribe, but a name still subscribed from a deleted mailbox shows as subscribed.
        ``special_use``: RFC 6154 CREATE-SPECIAL-USE.  Fails with L{MailboxExists}.
        """

    def delete_mailbox(user: str, name: str) -> Deferred[list[str]]:
        """
        Delete a mailbox and its messages; returns the queue ids of the messages that were in
        it (ask L{unreferenced_messages} which bodies may go).  Its subscription stays (RFC 3501
        §6.3.6: the server MUST NOT remove a name from the subscriptions because its mailbox no
        longer exists; only L{unsubscribe} does).  INBOX
        cannot be deleted (L{MailboxRefused}).  A mailbox with inferiors is refused
        (L{MailboxHasChildren}) rather than turned into a \\Noselect name as RFC 3501 §6.3.4
        also allows: no mailbox here is ever unselectable, which keeps LIST simple.
        """

    def rename_mailbox(user: str, old: str, new: str) -> Deferred[MailboxInfo]:
        """
        RFC 3501 §6.3.5.  The mailbox and all its inferiors move to the new name (UIDVALIDITY,
        UIDs, ``first_recent``, special use and subscriptions go with them; a subscribed name
        that has no mailbox stays where it is); missing superiors of ``new`` are created.
        Renaming INBOX creates ``new`` and moves every INBOX message into it (new UIDs there),
        leaving INBOX empty and its inferiors in place; those messages arrive in ``new``, so
        they are recent there (unclaimed) whatever they were in INBOX.  Returns the mailbox at
        ``new``.  Fails with L{NoSuchMailbox}, L{MailboxExists}, or L{MailboxRefused} for a name
        under itself.
        """

    def subscribe(user: str, name: str) -> Deferred[None]:
        """
        Subscribe to an existing mailbox (L{NoSuchMailbox} otherwise: RFC 3501 §6.3.6 lets the
        server refuse a name that does not exist).  Idempotent.
        """

    def unsubscribe(user: str, name: str) -> Deferred[None]:
        """
        Unsubscribe from any valid name, whether or not a mailbox has it (the only way to drop
        the subscription of a deleted mailbox).  Idempotent: a name that is not subscribed is
        fine too, as Dovecot answers OK.
        """

    def list_subscriptions(user: str) -> Deferred[list[str]]:
        """
        Every subscribed name of ``user``, sorted, whether or not a mailbox has it (LSUB and
        LIST (SUBSCRIBED), RFC 3501 §6.3.9, RFC 5258 §3.1).  Empty for a user never seen.
        """

    def claim_recent(user: str, name: str) -> Deferred[MailboxInfo]:
        """
        RFC 3501 §2.3.2: the calling session becomes the one that sees this mailbox's unclaimed
        messages as \\Recent.  In one atomic, durable step, returns the mailbox as it was just
        before the claim and sets its ``first_recent`` to its ``uidnext``: the caller's recent
        messages are those with ``uid >= returned.first_recent`` (and below
        ``returned.uidnext``), in the mailbox incarnation ``returned.uidvalidity``; no later
        claim gets them.  Call it when selecting read-write (SELECT, not EXAMINE), and again
        when the selected session learns of new messages.  Changes no modseq.  Fails with
        L{NoSuchMailbox}.
        """

    def mailbox_status(user: str, name: str) -> Deferred[MailboxStatus]:
        """
        Counts for STATUS and SELECT.  ``recent``: the messages no session has claimed yet
        (``uid >= first_recent``); reading them claims nothing.
        """

    def add_message(
        user: str,
        mailbox: str,
        message_id: str,
        internal_date: float,
        flags: Iterable[str] = (),
        mime_index: bytes | None = None,
    ) -> Deferred[MailMessage]:
        """
        Put a committed stored message into a mailbox with the next UID: intake delivering a
        shadow copy, or APPEND after the caller committed the body through an
        L{IMessageWriter} with no deliveries.  ``mime_index``
        (L{strata_twisted.proto.mime.index_to_json}) is kept once per stored message, shared by
        every mailbox copy; given again, it replaces the one kept.  Fails with L{NoSuchMailbox}
        (APPEND answers ``NO [TRYCREATE]``) or L{NoSuchEntry} when no message has this id.
        """

    def list_messages(
        user: str,
        mailbox: str,
        changed_since: int | None = None,
        uids: Iterable[int] | None = None,
    ) -> Deferred[list[MailMessage]]:
        """
        The messages of a mailbox in UID order; with ``changed_since``, only those whose modseq
        is greater (CONDSTORE ``CHANGEDSINCE``, RFC 7162 §3.1.4.1); with ``uids``, only those
        among these UIDs (a FETCH of a few messages must not read the whole mailbox).  Expunged
        messages are simply absent (reporting them is QRESYNC's VANISHED, not offered).
        """

    def mailbox_listing(
        user: str,
        mailbox: str,
        changed_since: int | None = None,
        uids: Iterable[int] | None = None,
    ) -> Deferred[MailboxListing]:
        """
        Like L{list_messages}, with the mailbox itself and its message count read in the same
        step: what the IMAP sessions' cache merges listings with (a message expunged since an
        older listing shows in the count), and how a session knows the messages it reads belong
        to the mailbox it selected (the UIDVALIDITY), not to one created since under its name.
        """

    def mime_indexes(user: str, mailbox: str, uids: Iterable[int]) -> Deferred[dict[int, bytes]]:
        """The kept MIME index of each of these messages, by UID (left out when none is kept)."""

    def store_flags(
        user: str,
        mailbox: str,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        unchanged_since: int | None = None,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[FlagUpdate]:
        """
        STORE: set (``FLAGS``), add (``+FLAGS``) or remove (``-FLAGS``) flags.  With
        ``unchanged_since`` (RFC 7162 §3.1.3), a message whose modseq is greater is left alone
        and reported in ``failed``.  Only messages whose flags really change get the new modseq.
        """

    def copy_messages(
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[CopyResult]:
        """
        COPY: each message (flags and INTERNALDATE kept, RFC 3501 §6.4.7) gets the next UID of
        ``target`` in source UID order; the body is shared, not copied.  ``target`` may be
        ``source``.  A missing target fails with L{NoSuchMailbox} (``NO [TRYCREATE]``).
        """

    def move_messages(
        user: str,
        source: str,
        uids: Iterable[int],
        target: str,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[CopyResult]:
        """
        MOVE (RFC 6851): copy, then expunge the source messages, in one step.  The pairs' source
        UIDs are the ones expunged.  ``target`` may be ``source`` (RFC 6851 allows it, and
        Dovecot answers OK with COPYUID): each message gets the next UID of the same mailbox and
        its old UID is expunged, under one new modseq.
        """

    def expunge(
        user: str,
        mailbox: str,
        uids: Iterable[int] | None = None,
        *,
        uidvalidity: int | None = None,
    ) -> Deferred[list[MailMessage]]:
        """
        Remove the messages flagged \\Deleted (EXPUNGE), or only those among ``uids`` (UID
        EXPUNGE, RFC 4315 §2.1); returns them as they were, in UID order.
        """

    def purge_older_than(domain: str, before: float) -> Deferred[list[PurgedMessage]]:
        """
        Retention: remove from every mailbox of every user of ``domain`` the messages whose
        INTERNALDATE is before ``before``.  Returns what was removed, by user, mailbox and UID.
        ``domain`` in any form L{strata_twisted.model.normalize_domain} takes; an invalid one
        fails with L{InvalidDomainName}.
        """

    def unreferenced_messages(message_ids: Iterable[str] | None = None) -> Deferred[list[str]]:
        """
        Of these stored messages (every stored message when None), in sorted order, those whose
        body nobody needs any more: no mailbox holds them and no queue entry of theirs is still
        waiting (QUEUED or HELD).  The store never deletes a body itself; the caller deletes
        these (a later piece), so the relay queue can never lose a body it still needs.
        """


class ICredentialStore(Interface):
    """
    Synced credentials (DESIGN decision 8): each protected domain's user list, as password
    hashes in their stored form ``{SCHEME}value`` (C{PasswordHash.text}), never passwords.

    Rules every backend keeps:

    - Addresses are canonicalised by L{strata_twisted.model.normalize_user} (``Bob@Example.TEST``
      is ``bob@example.test``); an invalid one fails with L{InvalidUser}.  Domains in any form
      L{strata_twisted.model.normalize_domain} takes (L{InvalidDomainName} otherwise).
    - A hash that is not ``{SCHEME}value``, or names a plaintext scheme, fails with
      L{InvalidPasswordHash}; the store checks only that form (core.credentials validates).
    - Each method that changes something is one atomic, durable step and bumps
      L{credentials_version}; when it fails, nothing changed.
    - A domain "has a user list" while it has at least one user: removing the last user (or
      replacing the list with an empty one) means intake accepts every address again.
    - The store does not check that a domain is protected: its callers do.
    - Send-as aliases: besides their own address, a user may send as the aliases the admin
      allowed (submission's ``MAIL FROM``, ``From:`` and ``Sender:``).  An alias is any valid
      address (canonicalised like a user; in any domain) and belongs to one synced user.  They
      are credentials too: changing them bumps L{credentials_version}, and removing a user (with
      L{remove_user}, or by leaving it out of L{replace_users}) removes its aliases in the same
      step.
    """

    def replace_users(domain: str, users: Iterable[UserCredential]) -> Deferred[UserListChange]:
        """
        Make ``users`` the whole list of ``domain``, atomically: users not among them are removed.
        Every user must be in ``domain`` and appear once (L{InvalidUser}).  Returns the counts.
        """

    def merge_users(domain: str, users: Iterable[UserCredential]) -> Deferred[UserListChange]:
        """Like L{replace_users}, but keep the domain's other users (``removed`` is 0)."""

    def set_user(address: str, password_hash: str) -> Deferred[bool]:
        """Add a user or change its hash; True when the user is new."""

    def remove_user(address: str) -> Deferred[None]:
        """Remove one user.  Fails with L{NoSuchUser}."""

    def get_user(address: str) -> Deferred[str | None]:
        """The stored hash (``{SCHEME}value``) of ``address``, or None."""

    def list_users(domain: str) -> Deferred[list[UserCredential]]:
        """``domain``'s users, sorted by address (empty when it has no list)."""

    def has_user_list(domain: str) -> Deferred[bool]:
        """Whether ``domain`` has at least one synced user (intake: unknown users get 550)."""

    def credentials_version() -> Deferred[int]:
        """
        A number that changes whenever any user or send-as alias is added, changed or removed
        (for caches).
        """

    def add_alias(alias: str, user: str) -> Deferred[None]:
        """
        Let ``user`` send as ``alias``.  An alias belongs to one user: adding it for another
        replaces the first.  Fails with L{InvalidUser} when either is not an address, or when
        ``alias`` is the user's own address; with L{NoSuchUser} when ``user`` has no synced
        credentials.
        """

    def remove_alias(alias: str) -> Deferred[bool]:
        """Stop anybody sending as ``alias``; True when it was an alias.  L{InvalidUser}."""

    def list_aliases(user: str | None = None) -> Deferred[list[tuple[str, str]]]:
        """
        ``(alias, user)`` pairs, canonical, sorted by alias; only ``user``'s when given
        (L{InvalidUser} when it is not an address).
        """


class ITenantStore(Interface):
    """
    Resellers and customers (#13).  Names are unique within each kind.  Removing one that still
    has customers, domains or accounts under it is the caller's check (core/admin), not this
    role's.
    """

    def list_resellers() -> Deferred[list[Reseller]]:
        """Every reseller, sorted by name."""

    def get_reseller(name: str) -> Deferred[Reseller | None]:
        """The reseller, or None."""

    def add_reseller(reseller: Reseller) -> Deferred[Reseller]:
        """Store a new reseller; L{AlreadyExists} if the name is taken (kind ``reseller``) or
        one of its host names is another reseller's (kind ``hostname``, name the host)."""

    def update_reseller(reseller: Reseller) -> Deferred[Reseller]:
        """Replace a reseller's branding and host names; L{NotFound} if it does not exist,
        L{AlreadyExists} (kind ``hostname``) if a host name is another reseller's."""

    def remove_reseller(name: str) -> Deferred[None]:
        """Remove a reseller, its host names and its logo; L{NotFound} if it does not exist."""

    def reseller_for_hostname(hostname: str) -> Deferred[Reseller | None]:
        """The reseller that has the (canonical) host name, or None."""

    def set_reseller_logo(name: str, logo: ResellerLogo) -> Deferred[None]:
        """Store (or replace) a reseller's logo; L{NotFound} if the reseller does not exist."""

    def get_reseller_logo(name: str) -> Deferred[ResellerLogo | None]:
        """A reseller's logo, or None (no logo, or no such reseller)."""

    def clear_reseller_logo(name: str) -> Deferred[bool]:
        """Remove a reseller's logo; whether it had one.  L{NotFound} if the reseller does not
        exist."""

    def list_customers(reseller: str | None = None) -> Deferred[list[Customer]]:
        """Customers sorted by name; only ``reseller``'s when given ("" = the operator's own)."""

    def get_customer(name: str) -> Deferred[Customer | None]:
        """The customer, or None."""

    def add_customer(customer: Customer) -> Deferred[Customer]:
        """Store a new customer; L{AlreadyExists} if the name is taken."""

    def remove_customer(name: str) -> Deferred[None]:
        """Remove a customer; L{NotFound} if it does not exist."""


class IAdminStore(Interface):
    """Admin accounts and their API keys (#13)."""

    def list_admins() -> Deferred[list[AdminAccount]]:
        """Every account, sorted by name."""

    def get_admin(name: str) -> Deferred[AdminAccount | None]:
        """The account, or None."""

    def add_admin(account: AdminAccount) -> Deferred[AdminAccount]:
        """Store a new account; L{AlreadyExists} if the name is taken."""

    def update_admin(account: AdminAccount) -> Deferred[AdminAccount]:
        """Replace an account (password, TOTP, recovery codes); L{NotFound} if it is gone."""

    def remove_admin(name: str) -> Deferred[None]:
        """Remove an account and every API key it owns, in one step; L{NotFound} if missing."""

    def list_api_keys(admin: str | None = None) -> Deferred[list[ApiKey]]:
        """Keys sorted by creation time; only ``admin``'s when given."""

    def get_api_key(key_id: str) -> Deferred[ApiKey | None]:
        """The key with this public id, or None."""

    def add_api_key(key: ApiKey) -> Deferred[ApiKey]:
        """Store a new key; L{AlreadyExists} if the id is taken, L{NotFound} if its admin is."""

    def remove_api_key(key_id: str) -> Deferred[None]:
        """Revoke a key; L{NotFound} if there is none with this id."""

    def touch_api_key(key_id: str, at: float) -> Deferred[None]:
        """Record that the key was used at ``at`` (unknown ids are ignored)."""


class IAuditStore(Interface):
    """The audit log (#13): every admin state change, append-only."""

    def record_audit(record: AuditRecord) -> Deferred[AuditRecord]:
        """Append ``record`` (its ``id`` is ignored); returns it with the id it got (1, 2, …)."""

    def list_audit(
        reseller: str | None = None,
        customer: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> Deferred[list[AuditRecord]]:
        """
        At most ``limit`` records with ``id < before_id`` (None: from the newest), newest first.
        ``reseller`` given: only records whose ``reseller`` is it; ``customer`` given: only
        records whose ``customer`` is it (both: both).
        """


class ISeriesStore(Interface):
    """
    The dashboard's time series (#14): one L{DomainSample} per domain and minute, kept for the
    charts (queue depth over time, each domain's state timeline); beside them, per minute, the
    depth of each tenant scope (L{SeriesTotal}) and, derived by the store from the points, each
    domain's runs of one state (L{StateRun}).  The totals and the runs are what the dashboard
    polls: a day of the operator's depth chart is 1,440 totals however many domains, and a day
    of outage is one run; the points serve one domain's chart.

    Sparse: the sampler writes no point for a domain that is ``normal`` with nothing queued or
    held, and no total for a scope with nothing queued or held, so a quiet installation stores
    nothing; a missing point or total reads as exactly that.  Bounded: the sampler prunes what
    is older than it keeps (30 days) as it writes.  Points are keyed by ``(at, domain)``,
    totals by ``(at, scope)``; writing one again replaces it.  Nothing here needs to survive a
    power failure: a lost minute is a gap in a chart, so backends may write without fsync.
    """

    def record_samples(
        samples: Sequence[DomainSample],
        prune_before: float | None = None,
        totals: Sequence[SeriesTotal] = (),
    ) -> Deferred[int]:
        """
        Store ``samples`` (replacing any with the same ``at`` and ``domain``) and ``totals``
        (replacing any with the same ``at`` and ``scope``), keep the runs in step with the
        points (L{read_runs}), and, in the same step, delete every point and total with ``at <
        prune_before`` and every run that ends at or before it (a run that straddles it is
        kept whole: reads clip); returns how many points were deleted.
        """

    def read_samples(
        since: float, until: float, domains: Sequence[str] | None = None, step: int = 60
    ) -> Deferred[list[DomainSample]]:
        """
        The points with ``since <= at < until`` (only ``domains``' when given), sorted by
        ``at`` then domain.  ``step`` (a positive multiple of 60) downsamples: one point per
        domain and bucket of ``step`` seconds, ``at`` the bucket's start (a multiple of
        ``step``), with the bucket's largest ``queued`` and ``held`` and its worst state (the
        latest in L{strata_twisted.model.DOMAIN_STATES}).  Reading a day of one domain must be
        cheap; a day of every domain is 1.44 M points at worst (read the totals instead).
        """

    def read_totals(
        scope: str, since: float, until: float, step: int = 60
    ) -> Deferred[list[SeriesTotal]]:
        """
        ``scope``'s totals with ``since <= at < until``, sorted by ``at``; ``step`` (a positive
        multiple of 60, else ValueError) downsamples as L{read_samples} does: one total per
        bucket that has any, ``at`` the bucket's start, with the bucket's largest ``queued``
        and largest ``held`` (the peak, which a chart must not hide).  Cheap: one row a minute.
        """

    def read_runs(
        since: float, until: float, domains: Sequence[str] | None = None
    ) -> Deferred[list[StateRun]]:
        """
        The runs that overlap ``[since, until)`` (only ``domains``' when given), unclipped,
        sorted by domain then start.  A run is a longest stretch of a domain's minutes whose
        points are all in one state other than ``normal`` with none missing: exactly what the
        points stored say, whatever order they were written or rewritten in (a point written
        again with another state splits its run; one that fills a gap joins two).
        """
