"""
Value objects shared by every layer: protected domains, envelopes, stored messages, queue entries,
shadow copies, events, and users' mailboxes with the rules for their names and flags.

They are frozen dataclasses: plain data, no I/O, no Twisted.  Domain names are always kept in their
ASCII (IDNA A-label) lowercase form, so ``Bücher.example`` and ``xn--bcher-kva.example`` are the
same domain everywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import idna

from strata_twisted.errors import InvalidDomainName, StrataError

T = TypeVar("T")

DeliveryMode = Literal["relay", "both"]
DELIVERY_MODES: Final = ("relay", "both")
TLSPolicy = Literal["none", "opportunistic", "required", "verify"]
TLS_POLICIES: Final = ("none", "opportunistic", "required", "verify")
# Webmail/IMAP portal (#4): open during an outage (and a grace period after it), always, never, or
# forced open by an admin for a drill (``open``, undone with ``--portal outage``).
PortalPolicy = Literal["outage", "always", "off", "open"]
PORTAL_POLICIES: Final = ("outage", "always", "off", "open")

# Queue entry states.  #2 only creates QUEUED entries; the relay (#3) moves them on.
QUEUED: Final = "queued"
HELD: Final = "held"
DELIVERED: Final = "delivered"
BOUNCED: Final = "bounced"
DELETED: Final = "deleted"
QUEUE_STATES: Final = (QUEUED, HELD, DELIVERED, BOUNCED, DELETED)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@functools.lru_cache(maxsize=4096)
def normalize_domain(name: str) -> str:
    """
    Return the canonical ASCII form of a domain name, or raise L{InvalidDomainName}.

    Accepts U-labels (``bücher.example``) and A-labels (``xn--bcher-kva.example``), any case, with
    or without a trailing dot.  RFC 5890/5891 via the ``idna`` package; RFC 1035 §2.3.4 lengths.
    Cached: intake asks for the same few domains on every RCPT, and UTS #46 mapping is costly.
    """
    text = name.strip().rstrip(".")
    if not text:
        raise InvalidDomainName("empty domain name")
    if text.startswith("[") or text.replace(".", "").isdigit():
        raise InvalidDomainName(f"{name!r} is an address literal, not a domain name")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as e:
        raise InvalidDomainName(f"{name!r} is not a valid domain name: {e}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidDomainName(f"{name!r} needs at least two labels (e.g. example.com)")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidDomainName(f"{name!r} is not a valid domain name")
    return ascii_name


def display_domain(ascii_name: str) -> str:
    """The Unicode form of a stored domain name, for people."""
    try:
        return idna.decode(ascii_name)
    except (idna.IDNAError, UnicodeError):
        return ascii_name


def split_address(address: str) -> tuple[str, str]:
    """
    Split ``local@domain`` at the last ``@`` (a quoted local part may hold ``@``).

    The domain is returned as given; use L{recipient_domain} for the canonical form.
    """
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain


def recipient_domain(address: str) -> str | None:
    """The canonical domain of an address, or None when it has none or it is not a valid name."""
    _, domain = split_address(address)
    if not domain:
        return None
    try:
        return normalize_domain(domain)
    except InvalidDomainName:
        return None


# RFC 5321 §4.1.2 Dot-string (atext, RFC 5322 §3.2.3), with UTF-8 as RFC 6531 §3.3 allows.
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_DOT_STRING: Final = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
# RFC 5321 §4.5.3.1.1: a local part of at most 64 octets.
MAX_LOCAL_PART: Final = 64


def canonical_address(text: str) -> str:
    """
    An address an admin typed (``noc@example.net``, an alert contact, the operator's
    postmaster address), as ``local@domain`` with the domain in its ASCII form; ValueError
    saying what is wrong otherwise.  The local part must be a Dot-string of at most 64 octets
    (RFC 5321 §4.1.2, §4.5.3.1.1; UTF-8 allowed, RFC 6531), no quoted string, no display name.
    """
    local, sep, domain = text.strip().rpartition("@")
    # No surrogates: they cannot be stored or sent as UTF-8.
    if (
        not sep
        or not _DOT_STRING.fullmatch(local)
        or len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_PART
        or any("\ud800" <= c <= "\udfff" or c.isspace() for c in local)
    ):
        raise ValueError(f"expected an address like noc@example.net, got {text!r}")
    try:
        return f"{local}@{normalize_domain(domain)}"
    except InvalidDomainName as e:
        raise ValueError(str(e)) from None


# RFC 5321 §4.5.1: "postmaster" is a reserved local part, and case-insensitive (the one local
# part that is: §2.4); RFC 5321 §4.1.1.3: "<Postmaster>" without a domain names the postmaster
# of the server itself.
POSTMASTER: Final = "postmaster"
# The queue "domain" of mail for <Postmaster> while no operator address is configured
# ([server] postmaster): not a domain name, so no protected domain, MX lookup or admin command
# can take it for one.  Its entries wait there, HELD, until they are routed to the operator.
POSTMASTER_HOLD: Final = "(postmaster)"


def is_postmaster(address: str) -> bool:
    """Whether ``address`` is a postmaster: ``Postmaster`` alone or ``postmaster@domain``,
    in any case."""
    return split_address(address)[0].lower() == POSTMASTER


def is_bare_postmaster(address: str) -> bool:
    """Whether ``address`` is ``<Postmaster>`` without a domain (any case): this server's own."""
    return "@" not in address and address.lower() == POSTMASTER


def recipient_key(address: str) -> str:
    """
    What makes two recipients of one message the same recipient, as Postfix compares them: the
    local part exactly (RFC 5321 §2.4: only the receiving host may interpret its case), the
    domain without regard to case or to its spelling (U-label or A-label, L{normalize_domain}).
    The one exception is the reserved local part ``postmaster``, case-insensitive by RFC 5321
    §4.5.1: ``Postmaster@x`` and ``postmaster@X`` are one recipient, and so are ``<Postmaster>``
    and ``<POSTMASTER>``.
    """
    local, domain = split_address(address)
    if local.lower() == POSTMASTER:
        local = POSTMASTER
    if not domain and "@" not in address:
        return local
    try:
        domain = normalize_domain(domain)
    except InvalidDomainName:
        domain = domain.lower()  # an address literal, or a name we could not route anyway
    return f"{local}@{domain}"


def split_repeated(items: Iterable[T], address: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """
    ``items`` (each for the recipient ``address(item)``), in the order given, split into the
    first item for each recipient (L{recipient_key}) and the ones that repeat a recipient.
    """
    seen: set[str] = set()
    first: list[T] = []
    repeated: list[T] = []
    for item in items:
        key = recipient_key(address(item))
        (repeated if key in seen else first).append(item)
        seen.add(key)
    return first, repeated


def unique_recipients(recipients: Iterable[str]) -> tuple[str, ...]:
    """``recipients`` with each recipient once (L{recipient_key}): the first spelling of each,
    in the order given."""
    return tuple(split_repeated(recipients, str)[0])


def parse_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """
    Parse ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; raise ValueError when invalid.

    Without a port, ``default_port`` is used; when it is None a port is required.
    """
    text = text.strip()
    if not text:
        raise ValueError("host is empty")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unbalanced [ in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected :PORT after ] in {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"write IPv6 addresses in brackets, e.g. [{text}]:25")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"invalid host in {text!r}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r} needs a port, e.g. {text}:25")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {text!r} (1-65535)")
    return host, int(port_text)


@dataclass(frozen=True)
class RelayTarget:
    """Where a domain's mail goes when the primary is up: ``host[:port]`` (port 25 by default)."""

    host: str
    port: int = 25

    @classmethod
    def parse(cls, text: str) -> RelayTarget:
        """Parse ``host[:port]`` or ``[v6][:port]``; raise ValueError when invalid."""
        host, port = parse_host_port(text, default_port=25)
        return cls(host.lower(), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Domain:
    """A protected domain: Strata accepts its mail and relays it to ``relay``."""

    name: str
    relay: RelayTarget
    mode: DeliveryMode = "relay"
    created_at: float = 0.0
    updated_at: float = 0.0
    # Relay (#3).  STARTTLS towards the primary: none | opportunistic | required | verify.
    tls_policy: TLSPolicy = "opportunistic"
    # A 5xx from the primary holds the message for review instead of bouncing it.
    hold_rejected: bool = False
    # Per-domain overrides of the global settings; None means "use the global value".
    queue_lifetime: float | None = None
    probe_interval: float | None = None
    down_after: int | None = None
    up_after: int | None = None
    # Probe the primary and open outage events (off for a domain whose primary we cannot reach).
    monitored: bool = True
    # Intake (#4): with a synced user list, RCPT of an address not on it gets 550 5.1.1, unless
    # the list may be stale (accept_unknown).
    accept_unknown: bool = False
    # Shadow mailboxes (#4): when users may log in (core/portal.py), and how many days shadow
    # messages are kept before the daily purge (None: the global default, core/retention.py).
    portal: PortalPolicy = "outage"
    retention_days: int | None = None
    # Alerts (#5): where this domain's outage alerts go.  ``alert_webhook`` is an http(s) URL
    # (the SMS gateway's), POSTed with ``alert_webhook_auth`` as its Authorization header: a
    # secret, so as_json and the CLI only say whether it is set.
    alert_email: str | None = None
    alert_webhook: str | None = None
    alert_webhook_auth: str | None = None
    # Tenancy (#13): the customer this domain belongs to; "" = directly the operator's (every
    # domain of an installation older than tenancy).
    customer: str = ""

    @property
    def alert_emails(self) -> tuple[str, ...]:
        """Where email alerts go: ``alert_email`` holds one address or several, separated by
        commas (an address with a comma in it is refused when set)."""
        if not self.alert_email:
            return ()
        return tuple(a.strip() for a in self.alert_email.split(",") if a.strip())

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "customer": self.customer or None,
            "display_name": display_domain(self.name),
            "relay": str(self.relay),
            "mode": self.mode,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "tls_policy": self.tls_policy,
            "hold_rejected": self.hold_rejected,
            "queue_lifetime": self.queue_lifetime,
            "probe_interval": self.probe_interval,
            "down_after": self.down_after,
            "up_after": self.up_after,
            "monitored": self.monitored,
            "accept_unknown": self.accept_unknown,
            "portal": self.portal,
            "retention_days": self.retention_days,
            "alert_email": self.alert_email,
            "alert_webhook": self.alert_webhook,
            "alert_webhook_auth_set": self.alert_webhook_auth is not None,
        }


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of one received message.  ``sender`` is "" for the null sender ``<>``."""

    sender: str
    recipients: tuple[str, ...]
    client_address: str = ""
    client_helo: str = ""
    body_8bitmime: bool = False
    smtputf8: bool = False


@dataclass(frozen=True)
class Delivery:
    """
    What intake does for one recipient: queue it for its domain's primary (or, ``outbound``, for
    its domain's MX), maybe shadow it.
    """

    recipient: str
    domain: str
    shadow: bool = False
    # Submission (#5): a recipient outside the protected domains, for the outbound queue: the
    # relay delivers it to the MX of ``domain`` rather than to a primary.
    outbound: bool = False
    # Mail that has nowhere to go yet (``<Postmaster>`` while no operator address is set): its
    # entry starts HELD, with this as its last error, until it is routed (IQueueStore.reroute).
    held: str | None = None


@dataclass(frozen=True)
class IncomingMessage:
    """Everything a message store commits, in one durable step, once the body is written."""

    envelope: Envelope
    received_at: float
    deliveries: tuple[Delivery, ...]
    header_message_id: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A committed message.  ``id`` is our queue id; ``header_message_id`` is its Message-ID."""

    id: str
    envelope: Envelope
    received_at: float
    size: int
    header_message_id: str | None = None


@dataclass(frozen=True)
class MessageHead:
    """A committed message with the first bytes of its body (IMessageStore.read_heads)."""

    message: StoredMessage
    head: bytes


@dataclass(frozen=True)
class QueueEntry:
    """One recipient of one message, waiting for (or done with) delivery to its domain's primary."""

    id: str
    seq: int
    message_id: str
    domain: str
    recipient: str
    sender: str
    header_message_id: str | None
    size: int
    received_at: float
    state: str = QUEUED
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float = 0.0
    last_attempt_at: float | None = None
    # Set when the primary accepted it: when, and what it said ("250 2.0.0 Ok: queued as ...").
    delivered_at: float | None = None
    delivery_reply: str | None = None
    # Submission (#5): an outbound entry goes to ``domain``'s MX, not to a protected domain's
    # primary (L{Delivery.outbound}).  ``delay_notified_at``: when the sender was told that the
    # message is delayed (an RFC 3464 DSN with ``Action: delayed``), sent at most once.
    outbound: bool = False
    delay_notified_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "queue_id": self.message_id,
            "domain": self.domain,
            "recipient": self.recipient,
            "sender": self.sender,
            "message_id": self.header_message_id,
            "size": self.size,
            "received_at": self.received_at,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "last_attempt_at": self.last_attempt_at,
            "delivered_at": self.delivered_at,
            "delivery_reply": self.delivery_reply,
            "outbound": self.outbound,
            "delay_notified_at": self.delay_notified_at,
        }


# What one delivery attempt did to one queue entry (AttemptResult.outcome).
DELIVERED_OUTCOME: Final = "delivered"  # 2xx: state DELIVERED, never delivered again
DEFERRED_OUTCOME: Final = "deferred"  # 4xx or no connection: stays QUEUED until next_attempt_at
BOUNCED_OUTCOME: Final = "bounced"  # 5xx or expired: state BOUNCED (a DSN is queued separately)
HELD_OUTCOME: Final = "held"  # 5xx with hold_rejected: state HELD, for an admin to review
OUTCOMES: Final = (DELIVERED_OUTCOME, DEFERRED_OUTCOME, BOUNCED_OUTCOME, HELD_OUTCOME)


@dataclass(frozen=True)
class AttemptResult:
    """The result of one delivery attempt for one queue entry, as the relay records it."""

    entry_id: str
    outcome: str
    reply: str  # the server's reply, or what went wrong ("connection refused")
    at: float
    next_attempt_at: float = 0.0  # for DEFERRED_OUTCOME


DomainHealth = Literal["unknown", "up", "down"]


@dataclass(frozen=True)
class DomainStatus:
    """What the monitor knows of a domain's primary (#3)."""

    domain: str
    health: DomainHealth = "unknown"
    since: float | None = None  # when it entered this health
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_probe_at: float | None = None
    last_probe_error: str | None = None
    last_delivery_at: float | None = None
    # When the first probe of the current run of failures started (None after an answer): the
    # start of the outage, should this run take the primary down.
    failing_since: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "health": self.health,
            "since": self.since,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "last_probe_at": self.last_probe_at,
            "last_probe_error": self.last_probe_error,
            "last_delivery_at": self.last_delivery_at,
            "failing_since": self.failing_since,
        }


@dataclass(frozen=True)
class Outage:
    """An outage event: the primary of ``domain`` stopped answering at ``started_at``."""

    id: int
    domain: str
    started_at: float
    reason: str
    ended_at: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "domain": self.domain,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "reason": self.reason,
        }


# Control actions the CLI can ask the running server for (L{ControlRequest.action}).
FLUSH_ACTION: Final = "flush"  # drain the queue now, deferred entries included
CONTROL_ACTIONS: Final = (FLUSH_ACTION,)


@dataclass(frozen=True)
class ControlRequest:
    """An admin's request to the running server (``strata queue flush``); ``id`` only grows."""

    id: int
    action: str
    domain: str | None
    at: float

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "domain": self.domain, "at": self.at}


@dataclass(frozen=True)
class ShadowCopy:
    """A message stored for a recipient's shadow mailbox (delivery mode ``both``); served by #4."""

    message_id: str
    recipient: str
    mailbox: str = "INBOX"
    created_at: float = 0.0


@dataclass(frozen=True)
class QueueStats:
    """Queue depth and age for one domain (entries in state QUEUED or HELD)."""

    domain: str
    queued: int
    held: int
    oldest_received_at: float | None


@dataclass(frozen=True)
class Event:
    """Something an admin wants to see later: a domain change, an outage, relay activity."""

    id: int
    at: float
    kind: str
    message: str
    domain: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "domain": self.domain,
            "message": self.message,
            "data": self.data,
        }


@dataclass(frozen=True)
class NewEvent:
    """An event to record (IEventStore.record_events): what the store then numbers and dates."""

    kind: str
    message: str
    domain: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


# -- Shadow mailboxes (#4): the IMailboxStore role ------------------------------------------------
#
# Errors live here rather than in errors.py because they belong to this role alone; each carries
# the RFC 5530 response code an IMAP server answers NO with.


class MailboxError(StrataError):
    """Base for refusals of the mailbox store.  ``imap_code``: the RFC 5530 response code."""

    imap_code: str = "CANNOT"


class NoSuchMailbox(MailboxError):
    """
    The user has no mailbox of this name.  An IMAP server answers ``NO [NONEXISTENT]``, or
    ``NO [TRYCREATE]`` when it is the target of COPY, MOVE or APPEND (RFC 3501 §6.4.7, §6.3.11).
    """

    imap_code = "NONEXISTENT"

    def __init__(self, name: str) -> None:
        super().__init__(f"no mailbox {name!r}")
        self.name = name


class MailboxExists(MailboxError):
    """CREATE or RENAME to a name that is taken (``NO [ALREADYEXISTS]``)."""

    imap_code = "ALREADYEXISTS"


class InvalidMailboxName(MailboxError):
    """
    An empty name, an empty level (``a//b``), a ``.`` or ``..`` level, a leading ``~``, a
    wildcard, a control character, too long (L{normalize_mailbox_name}).
    """

    imap_code = "CANNOT"


class MailboxHasChildren(MailboxError):
    """DELETE of a mailbox that has inferiors: we refuse rather than leave a \\Noselect name."""

    imap_code = "INUSE"


class MailboxRefused(MailboxError):
    """A move the rules forbid: deleting INBOX, renaming a mailbox under itself."""

    imap_code = "CANNOT"


class InvalidFlag(MailboxError):
    """A flag that is not a system flag nor a valid keyword atom (``\\Recent`` included)."""

    imap_code = "CANNOT"


class InvalidUser(MailboxError):
    """A user that is not an address ``local@domain`` with a valid domain."""

    imap_code = "CANNOT"


MAILBOX_DELIMITER: Final = "/"
INBOX: Final = "INBOX"
# RFC 3501 §2.3.2: the system flags a client may set.  \Recent is the server's, never stored.
SYSTEM_FLAGS: Final = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
SEEN: Final = "\\Seen"
DELETED_FLAG: Final = "\\Deleted"
# RFC 6154 §2 special-use attributes.
SPECIAL_USES: Final = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
# What ensure_user creates: name, special use.  All subscribed (Roundcube shows only those).
DEFAULT_MAILBOXES: Final[tuple[tuple[str, str | None], ...]] = (
    (INBOX, None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)
# STORE modes: FLAGS, +FLAGS, -FLAGS.
FLAGS_SET: Final = "set"
FLAGS_ADD: Final = "add"
FLAGS_REMOVE: Final = "remove"
FlagMode = Literal["set", "add", "remove"]

MAX_MAILBOX_NAME: Final = 1000  # characters, whole name; Dovecot's limit is in the same range
MAX_MAILBOX_LEVELS: Final = 32
_SYSTEM_BY_FOLD: Final = {flag.lower(): flag for flag in SYSTEM_FLAGS}
_SPECIAL_BY_FOLD: Final = {use.lower(): use for use in SPECIAL_USES}
# RFC 3501 §9: atom-specials are ( ) { SP CTL list-wildcards quoted-specials resp-specials.
_KEYWORD = re.compile(r'[^(){ \x00-\x1f\x7f-\U0010ffff%*"\\\]]{1,128}')
# List wildcards and controls may not appear in a name; nor may a NUL or a surrogate.
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f%*\ud800-\udfff]")


def normalize_user(address: str) -> str:
    """
    The canonical key of a mailbox user: ``local@domain`` folded to lower case, the domain in its
    ASCII form (L{normalize_domain}), so ``Bob@Bücher.example`` and ``bob@xn--bcher-kva.example``
    own the same mailboxes.  Raises L{InvalidUser}.
    """
    local, domain = split_address(address.strip())
    if not local or not domain or any(c.isspace() or ord(c) < 32 for c in local):
        raise InvalidUser(f"{address!r} is not an address local@domain")
    try:
        canonical = normalize_domain(domain)
    except InvalidDomainName as e:
        raise InvalidUser(f"{address!r}: {e}") from None
    return f"{local.lower()}@{canonical}"


def alias_pair(alias: str, user: str) -> tuple[str, str]:
    """The canonical ``(alias, user)`` of a send-as alias (L{normalize_user} both), or
    L{InvalidUser}, also when the alias is the user's own address."""
    key, owner = normalize_user(alias), normalize_user(user)
    if key == owner:
        raise InvalidUser(f"{key} is the user's own address, not an alias")
    return key, owner


def normalize_mailbox_name(name: str) -> str:
    """
    The canonical form of a mailbox name (Unicode, levels separated by ``/``), or
    L{InvalidMailboxName}.  RFC 3501 §5.1: INBOX is case-insensitive, so a first level that folds
    to ``inbox`` is spelled ``INBOX`` (``inbox/Lists`` is ``INBOX/Lists``); every other level keeps
    its case.  Refused: empty names and levels (``/a``, ``a/``, ``a//b``), the levels ``.`` and
    ``..`` (``a/../b``), a first level starting with ``~`` (``~root``, ``~/x``), the LIST
    wildcards ``%`` and ``*``, controls, more than L{MAX_MAILBOX_NAME} characters or
    L{MAX_MAILBOX_LEVELS} levels.
    """
    if not name or len(name) > MAX_MAILBOX_NAME or _BAD_NAME_CHARS.search(name):
        raise InvalidMailboxName(f"invalid mailbox name {name!r}")
    levels = name.split(MAILBOX_DELIMITER)
    if len(levels) > MAX_MAILBOX_LEVELS or not all(levels):
        raise InvalidMailboxName(f"invalid mailbox name {name!r}")
    # RFC 3501 §5.1 leaves the meaning of names to the server.  Two kinds look like paths: the
    # LIST examples of §6.3.8 read ``~smith/Mail/`` as another user's home directory, and
    # ``.``/``..`` are a directory and its parent in every file system.  Here they would only be
    # plain names inside the user's own tree (harmless), but a user or an admin could take
    # ``a/../b`` for ``b`` or ``~root`` for root's mail, so they are refused, as Dovecot does.
    if levels[0].startswith("~") or any(level in (".", "..") for level in levels):
        raise InvalidMailboxName(f"invalid mailbox name {name!r}")
    if levels[0].lower() == "inbox":
        levels[0] = INBOX
    return MAILBOX_DELIMITER.join(levels)


def mailbox_parents(name: str) -> list[str]:
    """The superiors of a canonical name, outermost first: ``a/b/c`` → ``["a", "a/b"]``."""
    levels = name.split(MAILBOX_DELIMITER)
    return [MAILBOX_DELIMITER.join(levels[:n]) for n in range(1, len(levels))]


def is_inferior(name: str, of: str) -> bool:
    """True when ``name`` is below ``of`` (``a/b`` is below ``a``; ``ab`` is not)."""
    return name.startswith(of + MAILBOX_DELIMITER)


def normalize_special_use(use: str | None) -> str | None:
    """The canonical spelling of an RFC 6154 attribute (any case in), or L{InvalidMailboxName}."""
    if use is None:
        return None
    canonical = _SPECIAL_BY_FOLD.get(use.lower())
    if canonical is None:
        raise InvalidMailboxName(f"unknown special use {use!r}")
    return canonical


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """
    Validate flags and spell the system flags canonically (``\\seen`` → ``\\Seen``; RFC 3501
    §2.3.2 flags are case-insensitive).  Keywords must be atoms (no space, parenthesis, brace,
    wildcard, quote, backslash, ``]`` or non-ASCII) and are kept exactly as given.  ``\\Recent``
    and any other backslash name raise L{InvalidFlag}.
    """
    out: set[str] = set()
    for flag in flags:
        if flag.startswith("\\"):
            system = _SYSTEM_BY_FOLD.get(flag.lower())
            if system is None:
                raise InvalidFlag(f"{flag!r} cannot be stored")
            out.add(system)
        elif _KEYWORD.fullmatch(flag):
            out.add(flag)
        else:
            raise InvalidFlag(f"{flag!r} is not a valid keyword")
    return frozenset(out)


def apply_flags(current: frozenset[str], mode: str, flags: frozenset[str]) -> frozenset[str]:
    """
    The flags after STORE FLAGS (``set``), +FLAGS (``add``) or -FLAGS (``remove``); another mode
    raises L{InvalidFlag}.
    """
    if mode == FLAGS_SET:
        return flags
    if mode == FLAGS_ADD:
        return current | flags
    if mode == FLAGS_REMOVE:
        return current - flags
    raise InvalidFlag(f"unknown flag mode {mode!r}")


def next_uidvalidity(last: int, now: float) -> int:
    """
    A UIDVALIDITY greater than every one handed out before (``last``): the current time in
    seconds when that is greater, as Dovecot does, so that a data directory rebuilt from scratch
    does not hand a client's cache a value it has seen with other messages; ``last + 1``
    otherwise.  RFC 3501 §2.3.1.1: a non-zero 32-bit number, never reused for a name.
    """
    value = max(last + 1, int(now))
    if value >= 2**32:
        raise StrataError("UIDVALIDITY exhausted (2^32 - 1 mailboxes created)")
    return value


@dataclass(frozen=True)
class MailboxInfo:
    """
    One of a user's mailboxes.  ``highest_modseq`` is 1 in a new mailbox and grows with every
    change of its messages (added, flags stored, expunged).  ``subscribed``: this mailbox's name
    is among the user's subscriptions (which outlive the mailbox:
    L{strata_twisted.interfaces.IMailboxStore.list_subscriptions}).

    ``first_recent``: the lowest UID no session has claimed yet.  RFC 3501 §2.3.2: a message is
    \\Recent in exactly one session, the first to select the mailbox read-write after it arrived;
    the messages with ``uid >= first_recent`` have arrived since the last such session and are
    recent for the next (L{strata_twisted.interfaces.IMailboxStore.claim_recent}).  Never above
    ``uidnext``; 1 in a new mailbox.
    """

    name: str
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    special_use: str | None = None
    subscribed: bool = False
    first_recent: int = 1


@dataclass(frozen=True)
class MailboxStatus:
    """
    What STATUS and SELECT report.  ``recent``: the messages no session has claimed as \\Recent
    yet (``uid >= first_recent``, L{MailboxInfo}; RFC 3501 §6.3.10 STATUS RECENT).  A session
    that selects the mailbox read-write claims them (and reports them) with
    L{strata_twisted.interfaces.IMailboxStore.claim_recent}.
    """

    messages: int
    recent: int
    uidnext: int
    uidvalidity: int
    unseen: int
    highest_modseq: int


@dataclass(frozen=True)
class MailMessage:
    """
    A message in a mailbox.  ``message_id`` is the queue id of the stored body it shares with
    every other mailbox and with the relay queue (IMessageStore).  ``size`` is the body's size.
    """

    uid: int
    message_id: str
    flags: frozenset[str]
    internal_date: float
    size: int
    modseq: int


@dataclass(frozen=True)
class MailboxListing:
    """
    A mailbox and its messages as of one moment (L{IMailboxStore.mailbox_listing}): ``info``
    (UIDVALIDITY says which mailbox of that name, HIGHESTMODSEQ the moment), the ``messages``
    asked for in UID order, and ``count``, how many messages the mailbox holds in all (of those
    asked for by UID, when they were).
    """

    info: MailboxInfo
    messages: Sequence[MailMessage]
    count: int


@dataclass(frozen=True)
class FlagUpdate:
    """
    What a STORE did.  ``messages``: every message the STORE applied to (existing UIDs that
    passed the UNCHANGEDSINCE test), with its flags and modseq afterwards, in UID order.
    ``changed``: the UIDs whose flags really changed (a new modseq).  ``failed``: the UIDs that
    failed the UNCHANGEDSINCE test (RFC 7162 §3.1.3, the MODIFIED response code), unchanged.
    """

    messages: tuple[MailMessage, ...]
    changed: tuple[int, ...]
    failed: tuple[int, ...]
    highest_modseq: int


@dataclass(frozen=True)
class CopyResult:
    """
    What COPY or MOVE did: ``pairs`` of (source UID, new UID) in source UID order, and the
    target's UIDVALIDITY: the COPYUID response code (RFC 4315 §3).  Empty when no UID existed.
    """

    uidvalidity: int
    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PurgedMessage:
    """A message retention removed from a mailbox (L{IMailboxStore.purge_older_than})."""

    user: str
    mailbox: str
    uid: int
    message_id: str


# -- synced credentials (ICredentialStore) --------------------------------------------------

# Dovecot's plaintext schemes: a stored "hash" must never be one of them (DESIGN decision 8).
_PLAINTEXT_SCHEMES: Final = frozenset({"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"})
_HASH_TEXT = re.compile(r"\{([A-Za-z0-9][A-Za-z0-9.-]{0,31})\}[\x21-\x7e]+\Z")


class NoSuchUser(StrataError):
    """The address has no synced credentials."""


class InvalidPasswordHash(StrataError, ValueError):
    """A stored hash must be ``{SCHEME}value`` (not a plaintext scheme).  Never echoes it."""


@dataclass(frozen=True)
class UserCredential:
    """
    One synced user: a canonical ``address`` (L{normalize_user}) and its ``password_hash`` in
    the stored form ``{SCHEME}value`` (C{PasswordHash.text}).  Never a password; the hash is kept
    out of C{repr} so that it never lands in a log by accident.
    """

    address: str
    password_hash: str = field(repr=False)

    @property
    def domain(self) -> str:
        return split_address(self.address)[1]

    @property
    def scheme(self) -> str:
        """The scheme name of the stored hash (``SHA512-CRYPT``)."""
        return self.password_hash[1 : self.password_hash.index("}")]


@dataclass(frozen=True)
class UserListChange:
    """What a change to a domain's user list did, counted by address."""

    added: int = 0
    updated: int = 0  # the address was there with another hash
    removed: int = 0
    unchanged: int = 0  # the address was there with the same hash


def check_password_hash_text(text: str) -> str:
    """
    ``text`` if it is a storable hash (``{SCHEME}value``, printable ASCII, not a plaintext
    scheme), else L{InvalidPasswordHash}.  Full validation is L{strata_twisted.core.credentials}'s
    job; this keeps a store from ever holding something that is obviously not a hash.
    """
    match = _HASH_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidPasswordHash("a stored password hash must be {SCHEME}value")
    if match.group(1).upper().partition(".")[0] in _PLAINTEXT_SCHEMES:
        raise InvalidPasswordHash("plaintext password schemes are never stored")
    return text


def credential_key(address: str) -> tuple[str, str]:
    """The canonical address of a synced user and its domain, or L{InvalidUser}."""
    key = normalize_user(address)
    return key, split_address(key)[1]


def normalize_user_list(domain: str, users: Iterable[UserCredential]) -> dict[str, str]:
    """
    ``users`` of ``domain`` as ``{canonical address: hash text}``, checked: every address in
    ``domain`` (L{InvalidUser} otherwise, or for a duplicate after folding case), every hash
    storable (L{InvalidPasswordHash}).  ``domain`` in any form L{normalize_domain} takes.
    """
    want = normalize_domain(domain)
    result: dict[str, str] = {}
    for user in users:
        key, user_domain = credential_key(user.address)
        if user_domain != want:
            raise InvalidUser(f"{user.address!r} is not in {want}")
        if key in result:
            raise InvalidUser(f"{user.address!r} appears twice")
        result[key] = check_password_hash_text(user.password_hash)
    return result


# -- Administration (#13): tenants, admin accounts, API keys, the audit log -----------------------
#
# Operator (the whole installation) → resellers → customers → domains.  A customer with
# ``reseller`` "" sits directly under the operator, and so does a domain with ``customer`` "".
# Names of resellers, customers and admin accounts are lower-case tokens (L{check_tenant_name}).

Role = Literal["operator", "reseller", "customer"]
ROLES: Final[tuple[Role, ...]] = ("operator", "reseller", "customer")
# What an API key may do, each including the one before: read; operate (the queue and domains'
# runtime state: hold, release, retry, flush, portal drill); admin (create and delete domains,
# users, accounts and keys).  A browser session has its account's full power ("admin").
Scope = Literal["read", "operate", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "operate", "admin")

_TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?\Z")


class InvalidName(ValueError):
    """A reseller, customer or admin account name that is not a lower-case token."""


def check_tenant_name(text: str, what: str = "name") -> str:
    """``text`` if it is a valid reseller, customer or account name (1–64 of ``a-z 0-9 . _ -``,
    starting and ending with a letter or digit), else L{InvalidName}."""
    if not isinstance(text, str) or _TENANT_NAME.match(text) is None:
        raise InvalidName(
            f"{what} must be 1 to 64 of a-z, 0-9, '.', '_' and '-', starting and ending with a "
            f"letter or digit; got {text!r}"
        )
    return text


@dataclass(frozen=True)
class Branding:
    """
    How a reseller's customers see the product (the panel, webmail, alert emails).

    ``hostnames``: the host names the reseller serves its webmail and panel under
    (``webmail.acme-it.test``), canonical (lower-case ASCII), sorted; each belongs to one
    reseller at most.  Roundcube and the panel's login page look the branding up by the host
    they are served under.  An uploaded logo is kept apart (L{ResellerLogo}): ``logo_url`` is a
    logo hosted elsewhere.
    """

    product_name: str = ""
    logo_url: str = ""
    primary_color: str = ""
    accent_color: str = ""
    support_email: str = ""
    support_url: str = ""
    hostnames: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "product_name": self.product_name,
            "logo_url": self.logo_url,
            "primary_color": self.primary_color,
            "accent_color": self.accent_color,
            "support_email": self.support_email,
            "support_url": self.support_url,
            "hostnames": list(self.hostnames),
        }


@dataclass(frozen=True)
class ResellerLogo:
    """A reseller's uploaded logo: the image's bytes, its MIME type, and when it was set (so
    that its public URL changes with it and no cache serves the old one)."""

    data: bytes
    content_type: str
    updated_at: float = 0.0


@dataclass(frozen=True)
class Reseller:
    name: str
    branding: Branding = Branding()
    created_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at, **self.branding.as_json()}


@dataclass(frozen=True)
class Customer:
    name: str
    reseller: str = ""  # "" = directly under the operator
    created_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "reseller": self.reseller or None, "created_at": self.created_at}


@dataclass(frozen=True)
class AdminAccount:
    """
    One person's (or tool's) admin login.  ``reseller`` is set for role "reseller", ``customer``
    for role "customer" (its reseller is the customer's); both "" for an operator.
    ``password_hash`` is argon2id (PHC string); ``recovery_codes`` are hashes of the unused
    TOTP recovery codes; ``totp_secret`` None means no second factor.
    """

    name: str
    role: Role
    password_hash: str
    reseller: str = ""
    customer: str = ""
    totp_secret: str | None = None
    recovery_codes: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "reseller": self.reseller or None,
            "customer": self.customer or None,
            "totp": self.totp_secret is not None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class ApiKey:
    """
    An API key, as stored: ``id`` is its public part (shown in lists, part of the key itself),
    ``secret_hash`` the SHA-256 of its secret part (the key is 256 random bits, so a fast hash
    is enough, as for GitHub's tokens); the key is shown once, at creation.
    ``allow_ip``: networks (CIDR) it may be used from; empty means anywhere.
    """

    id: str
    admin: str
    scope: Scope
    secret_hash: str
    created_at: float = 0.0
    expires_at: float | None = None
    allow_ip: tuple[str, ...] = ()
    last_used_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "admin": self.admin,
            "scope": self.scope,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "allow_ip": list(self.allow_ip),
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class AuditRecord:
    """
    One state change by an admin: who (``actor``, the account name, or ``cli:<unix user>`` for
    the local CLI), through what (``via``: api, panel, cli), from where (``source``: the client's
    address, "local" for the CLI), what (``action``, e.g. ``domain.add``) on what (``target``),
    and under which tenant the target lives (``reseller``, ``customer``; "" = the operator's),
    so that each tenant reads only its own records.
    """

    id: int
    at: float
    actor: str
    via: str
    source: str
    action: str
    target: str
    reseller: str = ""
    customer: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "via": self.via,
            "source": self.source,
            "action": self.action,
            "target": self.target,
            "reseller": self.reseller or None,
            "customer": self.customer or None,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class QueueFilter:
    """
    Which queue entries a listing or a bulk action selects (every condition must hold).
    ``domains`` None means every domain; a tuple (possibly empty) restricts to those (the
    caller's tenancy).  ``sender``/``recipient``: case-insensitive substring of the address.
    ``received_before``: only entries received before this time (the API's ``older_than``).
    """

    domains: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None
    sender: str | None = None
    recipient: str | None = None
    received_before: float | None = None


@dataclass(frozen=True)
class EventFilter:
    """Which events a listing selects: ``domains`` as in L{QueueFilter} (None: all, including
    events with no domain); ``kinds``: exact kinds or prefixes ending in "." (``"queue."``);
    ``since``: at or after this time."""

    domains: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    since: float | None = None


# The dashboard's states of a domain (#14), mildest first: each one's rank is its index, so the
# worst state of a span of time is the one with the highest rank (what a chart's bucket shows).
# What each means is decided in one place, core/series.py (L{strata_twisted.core.series.classify}).
DomainState = Literal["normal", "held", "draining", "outage"]
DOMAIN_STATES: Final[tuple[DomainState, ...]] = ("normal", "held", "draining", "outage")


@dataclass(frozen=True)
class DomainSample:
    """
    One point of the dashboard's time series (ISeriesStore): ``domain`` during the minute that
    starts at ``at`` (a whole multiple of 60), its queue depth and its state.  A domain that is
    ``normal`` with nothing queued or held has no point: absence means exactly that.  Read back
    downsampled, a point covers a longer bucket and holds its maximum depths and worst state.
    """

    at: int
    domain: str
    queued: int
    held: int
    state: DomainState

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "domain": self.domain,
            "queued": self.queued,
            "held": self.held,
            "state": self.state,
        }


# The scopes of the series' totals (SeriesTotal): every domain (the operator's chart), a
# reseller's customers' domains, a customer's domains.  One string, so a store keys it as one
# column; the prefixes keep a reseller and a customer of the same name apart.
EVERY_DOMAIN: Final = "*"


def reseller_scope(reseller: str) -> str:
    return f"reseller:{reseller}"


def customer_scope(customer: str) -> str:
    return f"customer:{customer}"


@dataclass(frozen=True)
class SeriesTotal:
    """
    The queue depth of one scope (L{EVERY_DOMAIN}, L{reseller_scope}, L{customer_scope})
    during the minute that starts at ``at``: the sum of its domains' points that minute, with
    each domain counted where it belonged then.  Kept beside the points so a chart of many
    domains reads one row a minute, not one per domain.  A scope with nothing queued or held
    has no total: absence means zero.  Read back downsampled, a total covers a longer bucket
    and holds the largest ``queued`` and the largest ``held`` of its minutes.
    """

    at: int
    scope: str
    queued: int
    held: int


@dataclass(frozen=True)
class StateRun:
    """
    Minutes ``[start, end)`` in which ``domain``'s points were all in one ``state`` other than
    ``normal``, one after the other with no minute missing: the series' state timeline, kept
    as runs so a day of a domain in outage is one row, not 1,440.
    """

    domain: str
    start: int
    end: int
    state: DomainState


@dataclass(frozen=True)
class RelayActivity:
    """
    What the relay did for one domain since a moment (IQueueStore.relay_activity), counted on
    the queue entries: ``delivered`` entries delivered since then; ``deferred``, ``held`` and
    ``bounced``: entries now waiting (QUEUED), held (HELD) or bounced (BOUNCED) whose last
    attempt was since then.  ``last_delivered_at``: the newest of those deliveries.
    """

    domain: str
    delivered: int = 0
    deferred: int = 0
    held: int = 0
    bounced: int = 0
    last_delivered_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "deferred": self.deferred,
            "held": self.held,
            "bounced": self.bounced,
            "last_delivered_at": self.last_delivered_at,
        }
