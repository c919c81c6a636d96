"""
Value objects shared by every layer: protected domains, envelopes, stored messages, queue entries,
shadow copies and events.

They are frozen dataclasses: plain data, no I/O, no Twisted.  Domain names are always kept in their
ASCII (IDNA A-label) lowercase form, so ``Bücher.example`` and ``xn--bcher-kva.example`` are the
same domain everywhere.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import idna

from strata_twisted.errors import InvalidDomainName

DeliveryMode = Literal["relay", "both"]
DELIVERY_MODES: Final = ("relay", "both")
TLSPolicy = Literal["none", "opportunistic", "required", "verify"]
TLS_POLICIES: Final = ("none", "opportunistic", "required", "verify")

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

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
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
    """What intake does for one recipient: queue it for its domain's primary, maybe shadow it."""

    recipient: str
    domain: str
    shadow: bool = False


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
