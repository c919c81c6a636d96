# -*- test-case-name: tests.test_server_imap -*-
"""
The IMAP server: Twisted transports wired to the sans-IO engine, the credential and mailbox stores.

A thin adapter (CONVENTIONS §1).  ``dataReceived`` feeds L{IMAPServerEngine}; each event that needs
policy or mailbox data is answered here, asynchronously, while reads are paused; the engine writes
every reply, so pipelined commands are answered strictly in order.  It also owns what only a
transport can do: the idle timeout on the injected clock, STARTTLS, and writing large body
sections from the store in bounded reads.

Login (issue 4, DESIGN "IMAP"): the address is canonicalised; an unknown user costs a hash check
like a known one's (C{check_password} with C{like=} a hash of the domain) and gets the same answer
as a wrong password; verification runs in a thread pool owned by the factory, never on the reactor
thread, and a L{VerificationCache} on the reactor thread spares Roundcube's login-per-request a hash
run.  Only after the password is right does the client learn that the domain's portal is closed
(C{NO [UNAVAILABLE]} with the portal's sentence): a stranger learns nothing about outages.

This first version serves LOGIN/AUTHENTICATE, LIST/LSUB, SELECT/EXAMINE, [UID] FETCH, NOOP, CHECK,
CLOSE/UNSELECT and LOGOUT; every other mailbox command answers C{NO [CANNOT]}.
"""

from __future__ import annotations

import io
import ipaddress
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal, TypeVar

from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorThreads, IReactorTime, ITLSTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from strata_twisted.core.credentials import (
    CredentialError,
    PasswordHash,
    VerificationCache,
    check_password,
)
from strata_twisted.core.imap_fetch import (
    ByteRange,
    FetchPlan,
    body_ranges,
    build_fetch,
    plan_fetch,
)
from strata_twisted.errors import StrataError
from strata_twisted.executor import Executor
from strata_twisted.interfaces import ICredentialStore, IMailboxStore, IMessageStore
from strata_twisted.model import (
    InvalidUser,
    MailboxError,
    MailboxInfo,
    MailMessage,
    normalize_mailbox_name,
    normalize_user,
)
from strata_twisted.proto.imap_parser import (
    Fetch,
    ListMailboxes,
    Lsub,
    SequenceSet,
    Simple,
)
from strata_twisted.proto.imap_response import (
    ResponseCode,
    Streamed,
    fetch_response_parts,
    list_response,
    status_data_response,
)
from strata_twisted.proto.imap_server import (
    NEED_DATA,
    AppendEnd,
    BackendCommand,
    Close,
    IMAPServerEngine,
    LoginRequest,
    SelectedMailbox,
    SelectMailbox,
    ServerLimits,
    StartTLS,
)
from strata_twisted.proto.mime import IndexFormatError, MessageIndex, index_from_json, index_message
from strata_twisted.server._transport import Deadline, set_no_delay

__all__ = ["IMAPFactory", "IMAPProtocol", "PoolExecutor", "PortalCheck"]

T = TypeVar("T")

PortalCheck = Callable[[str], "str | None"]
"""``portal(domain)``: None while the domain's webmail portal is open, else the sentence to show."""

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


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def _is_trusted(
    host: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    """Loopback and the configured networks may log in with a plaintext password (decision 10)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in network for network in networks)


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
    """What the session knows of its selected mailbox: its name and the UIDs, by sequence number."""

    name: str
    uids: list[int]
    read_only: bool

    def resolve(self, sequence_set: SequenceSet, *, uid: bool) -> list[int] | None:
        """The UIDs named, in UID order; None for a sequence number beyond the mailbox."""
        if uid:
            largest = self.uids[-1] if self.uids else 0
            ranges = sequence_set.resolve(largest)
            return [u for u in self.uids if any(lo <= u <= hi for lo, hi in ranges)]
        count = len(self.uids)
        for lo, hi in sequence_set.ranges:
            # RFC 3501 §9: a sequence number above the number of messages is an error ("*" is not).
            if (lo is not None and lo > count) or (hi is not None and hi > count):
                return None
        return [
            self.uids[n - 1] for lo, hi in sequence_set.resolve(count) for n in range(lo, hi + 1)
        ]


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
        self._busy = False  # an event is being answered asynchronously
        self._in_process = False
        self._gone = False
        self._paused = False
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
                elif isinstance(event, AppendEnd):
                    # APPEND comes with the next step; its message was read and dropped.
                    engine.complete(event.tag, "NO", _NOT_YET, ResponseCode.simple("CANNOT"))
                elif isinstance(event, StartTLS):
                    self._start_tls()
                # AppendStart, AppendData, AppendAborted: the message is read and dropped until
                # APPEND is served; IdleStarted, IdleEnded: nothing to push until mailbox updates
                # reach other sessions (next step).
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

    # -- LOGIN and AUTHENTICATE ------------------------------------------------------------------

    async def _login(self, event: LoginRequest) -> None:
        engine = self.engine
        assert engine is not None
        factory = self.factory
        try:
            address: str | None = normalize_user(event.user)
        except InvalidUser:
            address = None
        stored: PasswordHash | None = None
        if address is not None:
            text = await factory.credentials.get_user(address)
            if text is not None:
                try:
                    stored = PasswordHash.parse(text)
                except CredentialError:
                    self.log.warn("unusable stored hash for {address}", address=address)
        now = factory.clock.seconds()
        ok = False
        if address is not None and stored is not None:
            ok = factory.cache.check(address, stored, event.password, now)
        if not ok:
            like = None
            if stored is None and address is not None:
                like = await factory.typical_hash(_domain_of(address))
            password = event.password
            ok = await factory.executor.run(lambda: check_password(stored, password, like=like))
            if ok and address is not None and stored is not None:
                factory.cache.remember(address, stored, password, factory.clock.seconds())
        if not ok or address is None:
            # RFC 5530: one answer for an unknown user and a wrong password.
            self.log.info("IMAP login failed for {user!r} from {client}", user=event.user,
                          client=self.client)  # fmt: skip
            engine.login_result(False, "AUTHENTICATIONFAILED", "Authentication failed")
            return
        closed = factory.portal(_domain_of(address))
        if closed is not None:
            engine.login_result(False, "UNAVAILABLE", closed)
            return
        await factory.mailboxes.ensure_user(address)
        self.user = address
        self.log.info("IMAP login {user} from {client}", user=address, client=self.client)
        engine.login_result(True)

    # -- SELECT and EXAMINE ----------------------------------------------------------------------

    async def _select(self, event: SelectMailbox) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        mailboxes = self.factory.mailboxes
        name = normalize_mailbox_name(event.mailbox)
        status = await mailboxes.mailbox_status(self.user, name)
        messages = await mailboxes.list_messages(self.user, name)
        keywords = sorted({f for m in messages for f in m.flags if not f.startswith("\\")})
        first_unseen = next((n for n, m in enumerate(messages, 1) if SEEN not in m.flags), None)
        self._selected = _Selected(name, [m.uid for m in messages], event.read_only)
        engine.select_result(
            SelectedMailbox(
                flags=SYSTEM_FLAGS + tuple(keywords),
                exists=len(messages),
                uidvalidity=status.uidvalidity,
                uidnext=status.uidnext,
                permanent_flags=SYSTEM_FLAGS + tuple(keywords) + ("\\*",),
                first_unseen=first_unseen,
                highest_modseq=status.highest_modseq,
            )
        )

    # -- the other commands ----------------------------------------------------------------------

    async def _command(self, event: BackendCommand) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        command = event.command
        tag, name = command.tag, command.name
        if isinstance(command, ListMailboxes):
            await self._list(command)
        elif isinstance(command, Lsub):
            await self._lsub(command)
        elif isinstance(command, Fetch):
            await self._fetch(command)
            return
        elif isinstance(command, Simple) and name in ("NOOP", "CHECK", "UNSELECT"):
            if name == "UNSELECT":
                self._selected = None
        elif isinstance(command, Simple) and name == "CLOSE":
            selected, self._selected = self._selected, None
            # RFC 3501 §6.4.2: CLOSE expunges \Deleted messages silently, unless read-only.
            if selected is not None and not selected.read_only:
                await self.factory.mailboxes.expunge(self.user, selected.name)
        else:
            raise _Refused("NO", _NOT_YET, "CANNOT")
        engine.complete(tag, "OK", f"{name} completed")

    async def _list(self, command: ListMailboxes) -> None:
        engine = self.engine
        assert engine is not None and self.user is not None
        if command.patterns == ("",):
            # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
            engine.respond([list_response(["\\Noselect"], DELIMITER, "")])
            engine.complete(command.tag, "OK", "LIST completed")
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
        engine.complete(command.tag, "OK", "LIST completed")

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
        engine.complete(command.tag, "OK", "LSUB completed")

    # -- FETCH -----------------------------------------------------------------------------------

    async def _fetch(self, command: Fetch) -> None:
        engine = self.engine
        selected = self._selected
        assert engine is not None and self.user is not None
        if selected is None:
            raise _Refused("BAD", "No mailbox selected")
        if command.changed_since is not None:
            raise _Refused("NO", _NOT_YET, "CANNOT")
        uids = selected.resolve(command.sequence_set, uid=command.uid)
        if uids is None:
            raise _Refused("BAD", "Invalid message sequence number")
        plan = plan_fetch(command.attributes, uid=command.uid, condstore=engine.condstore_enabled)
        if selected.read_only:
            plan = replace(plan, sets_seen=False)  # RFC 3501 §6.3.2: EXAMINE changes nothing
        mailboxes = self.factory.mailboxes
        wanted = set(uids)
        messages = {
            m.uid: m
            for m in await mailboxes.list_messages(self.user, selected.name)
            if m.uid in wanted
        }
        changed: set[int] = set()
        if plan.sets_seen:
            unseen = [uid for uid in uids if uid in messages and SEEN not in messages[uid].flags]
            if unseen:
                update = await mailboxes.store_flags(self.user, selected.name, unseen, "add",
                                                     [SEEN])  # fmt: skip
                for message in update.messages:
                    messages[message.uid] = message
                changed.update(update.changed)
        indexes: dict[int, bytes] = {}
        if plan.needs_index and messages:
            indexes = await mailboxes.mime_indexes(self.user, selected.name, list(messages))
        sequence = {uid: n for n, uid in enumerate(selected.uids, 1)}
        for uid in uids:
            message = messages.get(uid)
            if message is None:  # expunged by another session since SELECT
                continue
            index = await self._index(message, indexes.get(uid)) if plan.needs_index else None
            await self._fetch_one(plan, sequence[uid], message, index, uid in changed)
            if self._gone:
                return
        engine.complete(command.tag, "OK", f"{'UID ' if command.uid else ''}FETCH completed")

    async def _index(self, message: MailMessage, data: bytes | None) -> MessageIndex:
        """The message's MIME index: the one kept at delivery, else made now from its body."""
        if data is not None:
            try:
                return index_from_json(data)
            except IndexFormatError:
                self.log.warn("re-indexing {id}: kept index unusable", id=message.message_id)
        body = await self.factory.messages.read_body(message.message_id)
        # Parsing is CPU work: in the worker pool, never on the reactor thread.
        index: MessageIndex = await self.factory.executor.run(
            lambda: index_message(io.BytesIO(body), len(body))
        )
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
        while left > 0 and not self._gone:
            data = await self.factory.messages.read_body_range(
                message_id, offset, min(left, STREAM_CHUNK)
            )
            if not data:
                raise StrataError(f"message {message_id} ended {left} octets early")
            self._write(data)
            offset += len(data)
            left -= len(data)

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
        portal: PortalCheck,
        limits: ServerLimits | None = None,
        executor: Executor | None = None,
        cache: VerificationCache | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.clock = clock
        self.mailboxes = mailboxes
        self.credentials = credentials
        self.messages = messages
        self.tls = tls
        self.portal = portal
        self.limits = limits if limits is not None else ServerLimits()
        self.trusted_networks = tuple(
            ipaddress.ip_network(network, strict=False) for network in trusted_networks
        )
        if executor is None:
            if not IReactorThreads.providedBy(clock):
                raise TypeError("without an executor, clock must be a reactor (IReactorThreads)")
            executor = PoolExecutor(clock)
        self.executor: Executor = executor
        # (an empty cache is falsy: test for None)
        self.cache = cache if cache is not None else VerificationCache()
        self.implicit_tls = implicit_tls
        self._typical: dict[str, PasswordHash | None] = {}
        self._protocols: set[IMAPProtocol] = set()

    def start(self) -> None:
        self.executor.start()

    def stop(self) -> None:
        self.executor.stop()

    def is_trusted(self, host: str) -> bool:
        return _is_trusted(host, self.trusted_networks)

    async def typical_hash(self, domain: str) -> PasswordHash | None:
        """
        A hash of one of ``domain``'s users, so that an unknown user's dummy check costs what a
        real one would; remembered per domain (it only shapes timing, so staleness is harmless).
        """
        if domain in self._typical:
            return self._typical[domain]
        like: PasswordHash | None = None
        try:
            users = await self.credentials.list_users(domain)
        except StrataError:
            users = []
        for user in users[:1]:
            try:
                like = PasswordHash.parse(user.password_hash)
            except CredentialError:
                pass
        if len(self._typical) > 1000:
            self._typical.clear()
        self._typical[domain] = like
        return like

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = IMAPProtocol(self, tls_active=self.implicit_tls)
        self._protocols.add(protocol)
        return protocol

    def connection_closed(self, protocol: IMAPProtocol) -> None:
        self._protocols.discard(protocol)

    @property
    def open_connections(self) -> int:
        return len(self._protocols)
