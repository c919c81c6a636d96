"""
The ``strata`` command: admin operations on the same store the server uses.

It runs without a reactor: the SQLite store gets a synchronous executor, so every Deferred it
returns
has already fired.  With no ``--config`` it reads ``./strata.toml`` when present, else the embedded
default, exactly as ``twistd -n strata`` does, so both work from the same directory with no flags.
A running server notices domain changes within ``storage.reload_interval`` (0.5 s), and acts on
the requests the CLI leaves for it (``queue flush``; ``queue release`` asks for a flush of the
released domains) within a second: it polls the store's control requests (L{IControlStore}).
Queue changes (hold, delete, bounce) need no request: the relay reads entry states from the store
before every batch.  Whether a server runs on the data dir is known from the lock it holds there
(L{strata_twisted.runlock}; ``strata status`` shows it).  With none running, a request would never
be acted on (a server skips the requests made before it started), so none is made: ``queue
flush`` and the email part of ``alert test`` fail (exit 1) saying so, and ``queue release``
releases and says the entries go when a server starts.

The one exception to "no reactor" is ``strata alert test``, the only command that does network
I/O: it runs the server's webhook sender on a private reactor of its own, for that one call.

``strata user`` manages synced credentials (L{ICredentialStore}): only password hashes reach the
store, and no password or hash is ever printed or put in an event.  Passwords are read from the
terminal (typed twice) or, for scripts, from the first line of stdin (``--password-stdin``).
``strata user alias`` manages the send-as aliases submission allows a user besides their own
address.

Exit codes: 0 success, 1 a failed operation (e.g. unknown domain), 2 bad usage (including a
value the parser cannot check, such as a malformed domain name or duration) or configuration
(including a data dir with no Strata store in it: only ``domain add`` creates one).

Text output escapes control characters: headers, addresses and the primaries' replies come from
strangers, and a raw ESC could rewrite the admin's terminal.  ``--json`` output is exact.  Times
are shown in local time with their UTC offset.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TextIO, TypeVar, cast
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from strata_twisted import __version__
from strata_twisted.clock import WallClock
from strata_twisted.config import Settings, load_config
from strata_twisted.core.alert_email import EmailAlertSender
from strata_twisted.core.credentials import (
    SCHEMES,
    PasswdFileError,
    hash_password,
    parse_passwd_file,
)
from strata_twisted.core.dkim import (
    ALGORITHMS,
    DkimKey,
    DkimKeyExists,
    DkimKeyring,
    InvalidSelector,
    check_selector,
    dns_record,
    record_name,
    zone_line,
)
from strata_twisted.core.dsn import FailedRecipient, status_of
from strata_twisted.core.portal import PortalState, portal_state
from strata_twisted.core.relay import queue_dsn
from strata_twisted.errors import (
    ConfigError,
    DomainExists,
    InvalidDomainName,
    NoSuchDomain,
    NoSuchEntry,
    QueueStateError,
    StrataError,
)
from strata_twisted.executor import SyncExecutor
from strata_twisted.fired import result_of
from strata_twisted.model import (
    BOUNCED,
    DELETED,
    DELIVERED,
    DELIVERY_MODES,
    FLUSH_ACTION,
    HELD,
    PORTAL_POLICIES,
    QUEUED,
    TLS_POLICIES,
    Domain,
    DomainStatus,
    Event,
    InvalidUser,
    NoSuchUser,
    Outage,
    QueueEntry,
    RelayTarget,
    StoredMessage,
    UserCredential,
    UserListChange,
    canonical_address,
    credential_key,
    display_domain,
    normalize_domain,
)
from strata_twisted.runlock import RunningServer, running_server
from strata_twisted.server.webhook import WebhookAlertSender, alert_webhook_target, redacted
from strata_twisted.storage import open_store
from strata_twisted.storage.sqlite import DB_NAME

T = TypeVar("T")


class CommandError(Exception):
    """A failed admin operation: printed as ``strata: <message>``, exit status 1."""


class UsageError(CommandError):
    """An argument the parser could not check (a domain name, a duration): exit status 2."""


# C0 and C1 controls but tab and newline, and the bidirectional overrides (CVE-2021-42574).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` / ``\\uNNNN`` escapes."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(escape, text)


def _wait(d: Deferred[T]) -> T:
    return result_of(d)


class Context:
    """The CLI's view of one data directory."""

    def __init__(self, settings: Settings, out: TextIO, create: bool = False) -> None:
        if settings.storage.backend != "sqlite":
            raise ConfigError(
                "storage.backend",
                f"the CLI needs a persistent backend; {settings.storage.backend!r} keeps nothing "
                "between processes",
            )
        # Opening the store creates it.  Run from the wrong directory, every command would then
        # report a brand-new, empty store ("the queue is empty") instead of the server's.
        self.created = not (settings.data_dir / DB_NAME).exists()
        if self.created and not create:
            raise UsageError(
                f"no Strata data in {settings.data_dir}: run strata in the directory the server "
                "runs in, or give it the server's config with --config PATH (only "
                "'strata domain add' starts a new data dir)"
            )
        self.settings = settings
        self.out = out
        self.broken_pipe = False
        self.clock = WallClock()
        self.store: Any = open_store("sqlite", settings.data_dir, self.clock, SyncExecutor())
        self.store.open(recover=False)

    def close(self) -> None:
        self.store.close()

    def write(self, text: str) -> None:
        """Write to ``out``; once the reader has gone (``strata queue list | head``), write
        nothing more, but let the command finish what it was doing."""
        if self.broken_pipe:
            return
        try:
            self.out.write(text)
        except BrokenPipeError:
            self.broken_pipe = True

    def flush(self) -> None:
        if not self.broken_pipe:
            try:
                self.out.flush()
            except BrokenPipeError:
                self.broken_pipe = True
        if self.broken_pipe:
            _discard_output(self.out)

    def emit_json(self, value: object) -> None:
        self.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def print(self, text: str = "") -> None:
        self.write(_printable(text) + "\n")


def _discard_output(out: TextIO) -> None:
    """Point ``out``'s file descriptor at /dev/null, so the interpreter's last flush of what is
    still buffered does not fail (and print a traceback) on the closed pipe."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


# -- helpers ------------------------------------------------------------------------------------


def _domain_name(text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidDomainName as e:
        raise UsageError(str(e)) from None


def _relay(text: str) -> RelayTarget:
    try:
        return RelayTarget.parse(text)
    except ValueError as e:
        raise UsageError(f"--relay: {e}") from None


def _when(timestamp: float | None) -> str:
    """Local time with its UTC offset: the admin, the server and its logs may not share a zone."""
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(timestamp))


def _ago(now: float, then: float) -> str:
    return f"{_age(now - then)} ago"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _table(rows: Sequence[Sequence[str]], out: Context) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.print("  ".join(cells).rstrip())


def _get_domain(ctx: Context, name: str) -> Domain:
    domain: Domain | None = _wait(ctx.store.get_domain(_domain_name(name)))
    if domain is None:
        raise CommandError(f"{name} is not a protected domain (see: strata domain list)")
    return domain


# -- domain -------------------------------------------------------------------------------------

# A value for a per-domain override that means "use the global setting" (stored as None).
DEFAULT: Final = "default"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_KEEP = object()  # an option that was not given: keep the current value


def _duration(option: str, text: str | None) -> Any:
    """``300``, ``90s``, ``15m``, ``12h`` or ``5d`` in seconds; ``default``: None; absent: keep."""
    if text is None:
        return _KEEP
    if text.strip().lower() == DEFAULT:
        return None
    match = _DURATION.match(text.strip().lower())
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise UsageError(
            f"{option}: expected a positive duration such as 3600, 90m, 12h or 5d "
            f"(or {DEFAULT}), got {text!r}"
        )
    return seconds


def _count(option: str, text: str | None) -> Any:
    """A whole number >= 1; ``default`` → None; not given → keep."""
    if text is None:
        return _KEEP
    if text.strip().lower() == DEFAULT:
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"{option}: expected a whole number >= 1 (or {DEFAULT}), got {text!r}")
    return int(text)


# Retention beyond a century is a typo, not a policy (and keeps the number storable).
MAX_RETENTION_DAYS: Final = 36500


def _days(option: str, text: str | None) -> Any:
    """Days from 1 to L{MAX_RETENTION_DAYS}; ``default`` → None; not given → keep."""
    if text is None:
        return _KEEP
    if text.strip().lower() == DEFAULT:
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_RETENTION_DAYS:
        raise UsageError(
            f"{option}: expected a whole number of days from 1 to {MAX_RETENTION_DAYS} "
            f"(or {DEFAULT}), got {text!r}"
        )
    return int(text)


_MAX_WEBHOOK_URL: Final = 2048


def _alert_email(text: str | None) -> Any:
    """``--alert-email``: an address ``local@domain`` (the domain kept in ASCII form); ``""``
    clears it (None); not given: keep."""
    if text is None:
        return _KEEP
    if text == "":
        return None
    try:
        return canonical_address(text)
    except ValueError as e:
        raise UsageError(f'--alert-email: {e} ("" to remove it)') from None


def _alert_webhook(text: str | None) -> Any:
    """``--alert-webhook``: an ``http://`` or ``https://`` URL with a host; ``""`` clears it."""
    if text is None:
        return _KEEP
    if text == "":
        return None
    problem = ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        problem = str(e)
    else:
        if parts.scheme.lower() not in ("http", "https"):
            problem = "only http:// and https:// URLs are supported"
        elif not parts.hostname:
            problem = "the URL has no host"
    if not problem and (not text.isascii() or not text.isprintable() or " " in text):
        problem = "spaces, control and non-ASCII characters must be %-encoded"
    if not problem and len(text) > _MAX_WEBHOOK_URL:
        problem = f"longer than {_MAX_WEBHOOK_URL} characters"
    if problem:
        # Never echo the URL: its query string may carry the gateway's key.
        raise UsageError(f'--alert-webhook: not a usable URL: {problem} ("" to remove it)')
    return text


def _alert_webhook_auth(text: str | None) -> Any:
    """``--alert-webhook-auth``: the Authorization header value; ``""`` clears it."""
    if text is None:
        return _KEEP
    if text == "-":
        # Read from standard input, so the secret is not in `ps` or the shell's history.
        text = sys.stdin.readline().rstrip("\r\n")
    if text == "":
        return None
    if not text.isascii() or not text.isprintable() or text != text.strip():
        # Never echo it: it is a secret.
        raise UsageError(
            "--alert-webhook-auth: expected printable ASCII without leading or trailing spaces, "
            'such as "Bearer TOKEN" ("" to remove it)'
        )
    return text


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The per-domain settings given on the command line, validated, as Domain fields."""
    given = {
        "tls_policy": args.tls_policy if args.tls_policy is not None else _KEEP,
        "hold_rejected": args.hold_rejected if args.hold_rejected is not None else _KEEP,
        "monitored": args.monitor if args.monitor is not None else _KEEP,
        "accept_unknown": args.accept_unknown if args.accept_unknown is not None else _KEEP,
        "queue_lifetime": _duration("--queue-lifetime", args.queue_lifetime),
        "probe_interval": _duration("--probe-interval", args.probe_interval),
        "down_after": _count("--down-after", args.down_after),
        "up_after": _count("--up-after", args.up_after),
        "portal": args.portal if args.portal is not None else _KEEP,
        "retention_days": _days("--retention-days", args.retention_days),
        "alert_email": _alert_email(args.alert_email),
        "alert_webhook": _alert_webhook(args.alert_webhook),
        "alert_webhook_auth": _alert_webhook_auth(args.alert_webhook_auth),
    }
    return {key: value for key, value in given.items() if value is not _KEEP}


def _override(value: float | None, unit: str = "") -> str:
    """A per-domain override for people: ``5d``, ``3 failed probes`` or ``global default``."""
    if value is None:
        return "global default"
    if unit == "s":
        return _duration_text(float(value))
    return f"{value:g}{unit}"


def _duration_text(seconds: float) -> str:
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{suffix}"
    return f"{seconds:g}s"


def _event_json(domain: Domain) -> dict[str, Any]:
    """A domain's settings for the event log: the webhook URL without its query or user info
    (they often carry the gateway's key), like the Authorization value (never in as_json)."""
    data = domain.as_json()
    if domain.alert_webhook is not None:
        data["alert_webhook"] = redacted(domain.alert_webhook)
    return data


def cmd_domain_add(ctx: Context, args: argparse.Namespace) -> None:
    name = _domain_name(args.name)
    domain = Domain(name=name, relay=_relay(args.relay), mode=args.mode, **_settings(args))
    try:
        added: Domain = _wait(ctx.store.add_domain(domain))
    except DomainExists:
        raise CommandError(
            f"{args.name} is already protected (see: strata domain show {name})"
        ) from None
    _wait(
        ctx.store.record_event(
            "domain.added", f"protecting {display_domain(name)}", name, _event_json(added)
        )
    )
    if ctx.created:
        ctx.print(f"new data dir: {ctx.settings.data_dir}")
    ctx.print(f"protecting {display_domain(name)}: relay to {added.relay}, mode {added.mode}")
    ctx.print("a running Strata accepts its mail within a second")
    _warn_drill(ctx, added)


def cmd_domain_list(ctx: Context, args: argparse.Namespace) -> None:
    domains: list[Domain] = _wait(ctx.store.list_domains())
    stats = {s.domain: s for s in _wait(ctx.store.queue_stats())}
    if args.json:
        ctx.emit_json([_domain_json(d, stats.get(d.name)) for d in domains])
        return
    if not domains:
        ctx.print("no protected domains (add one: strata domain add NAME --relay HOST[:PORT])")
        return
    rows = [["DOMAIN", "RELAY", "MODE", "QUEUED", "PORTAL"]]
    for d in domains:
        s = stats.get(d.name)
        portal = "OPEN (drill)" if d.portal == "open" else d.portal
        rows.append(
            [display_domain(d.name), str(d.relay), d.mode, str(s.queued if s else 0), portal]
        )
    _table(rows, ctx)


def _domain_json(domain: Domain, stats: Any) -> dict[str, Any]:
    data = domain.as_json()
    data["queued"] = stats.queued if stats else 0
    data["held"] = stats.held if stats else 0
    data["oldest_received_at"] = stats.oldest_received_at if stats else None
    return data


def _health(ctx: Context, domain: Domain, status: DomainStatus | None, now: float) -> str:
    """``down since ... (10m ago)``, or why the health is not known yet."""
    if status is None or (status.health == "unknown" and status.last_probe_at is None):
        return "unknown (never probed)" if domain.monitored else "unknown (not monitored)"
    text: str = status.health
    if status.since is not None:
        text += f" since {_when(status.since)} ({_ago(now, status.since)})"
    elif status.health == "unknown":
        down = domain.down_after or ctx.settings.monitor.down_after
        up = domain.up_after or ctx.settings.monitor.up_after
        text += f" (not yet {down} failed or {up} good probes in a row)"
    if not domain.monitored:
        text += "; no longer monitored, so this may be out of date"
    return text


def _last_probe(status: DomainStatus | None, now: float) -> str:
    if status is None or status.last_probe_at is None:
        return "-"
    at = status.last_probe_at
    text = f"{_when(at)} ({_ago(now, at)}), "
    if status.last_probe_error is not None:
        return text + f"failed ({status.consecutive_failures} in a row): {status.last_probe_error}"
    return text + f"answered ({status.consecutive_successes} in a row)"


def _portal_policy(domain: Domain, grace: float) -> str:
    """The domain's portal policy, for people."""
    if domain.portal == "outage":
        after = f", and for {_duration_text(grace)} after" if grace > 0 else ""
        return f"outage (open while the primary is down{after})"
    if domain.portal == "always":
        return "always (open at all times)"
    if domain.portal == "off":
        return "off (never open)"
    return f"OPEN for a drill (back to normal: strata domain update {domain.name} --portal outage)"


def _portal_now(domain: Domain, state: PortalState, now: float) -> str:
    """Whether the portal is open right now, and why."""
    if state.reason == "outage" and state.since is not None:
        return f"open: outage since {_when(state.since)} ({_ago(now, state.since)})"
    if state.reason == "grace" and state.until is not None:
        return f"open: grace until {_when(state.until)} (in {_age(state.until - now)})"
    if state.reason == "drill":
        return "open: drill (forced open)"
    if state.reason == "primary_up" and not domain.monitored:
        return "closed: primary up (not monitored, so no outage opens it)"
    if state.reason == "primary_up":
        return "closed: primary up"
    return f"{'open' if state.open else 'closed'}: {state.reason}"


def _warn_drill(ctx: Context, domain: Domain) -> None:
    if domain.portal == "open":
        ctx.print(
            f"webmail portal forced OPEN for a drill: users log in whatever the primary does; "
            f"back to normal: strata domain update {domain.name} --portal outage"
        )


def cmd_domain_show(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.name)
    stats = {s.domain: s for s in _wait(ctx.store.queue_stats())}.get(domain.name)
    status: DomainStatus | None = _wait(ctx.store.get_status(domain.name))
    # The relay records each delivery on its queue entry; the monitor's status may know one too.
    delivered = [_wait(ctx.store.last_delivered_at(domain.name))]
    delivered.append(status.last_delivery_at if status else None)
    data = _domain_json(domain, stats)
    data["health"] = status.health if status else "unknown"
    data["health_since"] = status.since if status else None
    data["last_probe_at"] = status.last_probe_at if status else None
    data["last_probe_error"] = status.last_probe_error if status else None
    data["probe_failures_in_a_row"] = status.consecutive_failures if status else 0
    data["probe_successes_in_a_row"] = status.consecutive_successes if status else 0
    data["last_delivery_at"] = max((t for t in delivered if t is not None), default=None)
    now = ctx.clock.seconds()
    # The same rules the server's IMAP login applies (core/portal.py), from the newest outage.
    outages: list[Outage] = _wait(ctx.store.list_outages(domain.name, 1))
    grace = ctx.settings.imap.portal_grace
    portal = portal_state(domain, outages[-1] if outages else None, now, grace)
    data["portal_open"] = portal.open
    data["portal_reason"] = portal.reason
    data["portal_since"] = portal.since
    data["portal_until"] = portal.until
    retention = domain.retention_days
    if retention is None:
        retention = ctx.settings.imap.retention_days
    data["retention_days_in_effect"] = retention
    if args.json:
        ctx.emit_json(data)
        return
    oldest = data["oldest_received_at"]
    age = _age(now - oldest) if oldest else "-"
    last = data["last_delivery_at"]
    ctx.print(f"domain:        {display_domain(domain.name)}")
    if display_domain(domain.name) != domain.name:
        ctx.print(f"ascii name:    {domain.name}")
    ctx.print(f"relay:         {domain.relay}")
    ctx.print(f"mode:          {domain.mode}")
    ctx.print(f"health:        {_health(ctx, domain, status, now)}")
    ctx.print(f"last probe:    {_last_probe(status, now)}")
    ctx.print(f"queued:        {data['queued']} (held {data['held']}, oldest {age})")
    ctx.print(f"last delivery: {_when(last)}" + (f" ({_ago(now, last)})" if last else ""))
    ctx.print(f"tls policy:    {domain.tls_policy}")
    ctx.print(f"on 5xx:        {'hold for review' if domain.hold_rejected else 'bounce'}")
    ctx.print(f"queue life:    {_override(domain.queue_lifetime, 's')}")
    ctx.print(f"monitored:     {'yes' if domain.monitored else 'no'}")
    unknown = "accepted" if domain.accept_unknown else "refused (550 5.1.1) once users are imported"
    ctx.print(f"unknown users: {unknown}")
    ctx.print(f"portal:        {_portal_policy(domain, grace)}")
    ctx.print(f"portal now:    {_portal_now(domain, portal, now)}")
    own = "" if domain.retention_days is None else " (this domain's own)"
    ctx.print(f"retention:     {retention} days{own or ' (global default)'}")
    ctx.print(f"alert email:   {domain.alert_email or '-'}")
    ctx.print(f"alert webhook: {_webhook_text(domain)}")
    ctx.print(f"probe every:   {_override(domain.probe_interval, 's')}")
    ctx.print(f"down after:    {_override(domain.down_after, ' failed probes')}")
    ctx.print(f"up after:      {_override(domain.up_after, ' good probes')}")
    ctx.print(f"added:         {_when(domain.created_at)}")
    ctx.print(f"updated:       {_when(domain.updated_at)}")


def _webhook_text(domain: Domain) -> str:
    """The webhook for people: its URL without a query or user info (they often carry the
    gateway's key; ``--json`` has the whole URL), and whether its Authorization is set."""
    if domain.alert_webhook is None:
        return "-"
    shown = redacted(domain.alert_webhook)
    parts = urlsplit(domain.alert_webhook)
    if parts.query or parts.username is not None or parts.fragment:
        shown += " (query or user info hidden; see --json)"
    auth = "set" if domain.alert_webhook_auth is not None else "not set"
    return f"{shown}, authorization {auth}"


def cmd_domain_update(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.name)
    settings = _settings(args)
    if args.relay is None and args.mode is None and not settings:
        raise UsageError(
            "nothing to change: give --relay, --mode or another setting (see: strata domain "
            "update --help)"
        )
    changed = replace(
        domain,
        relay=_relay(args.relay) if args.relay is not None else domain.relay,
        mode=args.mode or domain.mode,
        **settings,
    )
    updated: Domain = _wait(ctx.store.update_domain(changed))
    _wait(
        ctx.store.record_event(
            "domain.updated",
            f"updated {display_domain(domain.name)}",
            domain.name,
            _event_json(updated),
        )
    )
    ctx.print(f"{display_domain(domain.name)}: relay to {updated.relay}, mode {updated.mode}")
    if updated.portal != domain.portal and updated.portal != "open":
        ctx.print(f"portal: {_portal_policy(updated, ctx.settings.imap.portal_grace)}")
    _warn_drill(ctx, updated)


def cmd_domain_remove(ctx: Context, args: argparse.Namespace) -> None:
    name = _domain_name(args.name)
    try:
        _wait(ctx.store.remove_domain(name))
    except NoSuchDomain:
        raise CommandError(f"{args.name} is not a protected domain") from None
    shown = display_domain(name)
    _wait(ctx.store.record_event("domain.removed", f"stopped protecting {shown}", name))
    ctx.print(f"no longer protecting {shown}")
    stats = {s.domain: s for s in _wait(ctx.store.queue_stats())}.get(name)
    if stats and stats.queued:
        # The relay keeps them queued (they expire at the queue lifetime) until the domain is
        # protected again or an admin bounces or deletes them.
        ctx.print(
            f"{stats.queued} queued entries for {shown} stay in the queue and are not relayed "
            f"until {shown} is protected again (or: strata queue bounce / delete)"
        )
    if stats and stats.held:
        ctx.print(f"{stats.held} held entries for {shown} stay held")


# -- queue --------------------------------------------------------------------------------------


def cmd_queue_list(ctx: Context, args: argparse.Namespace) -> None:
    domain = _domain_name(args.domain) if args.domain else None
    entries: list[QueueEntry] = _wait(ctx.store.list_entries(domain))
    if domain is not None and _wait(ctx.store.get_domain(domain)) is None:
        # A typo, most likely; but mail can be queued for a domain we do not protect (outbound
        # mail, DSNs, mail kept from when it was protected), so list it all the same.
        note = f"{display_domain(domain)} is not a protected domain (see: strata domain list)" + (
            "; listing what is queued for it all the same" if entries else ""
        )
        if args.json:  # the JSON document stays clean
            sys.stderr.write(f"strata: note: {_printable(note)}\n")
        else:
            ctx.print(f"note: {note}")
    if args.json:
        ctx.emit_json([e.as_json() for e in entries])
        return
    if not entries:
        ctx.print("the queue is empty" + (f" for {display_domain(domain)}" if domain else ""))
        return
    rows = [["ID", "RECEIVED", "STATE", "SIZE", "SENDER", "RECIPIENT"]]
    for e in entries:
        rows.append(
            [e.id, _when(e.received_at), e.state, str(e.size), e.sender or "<>", e.recipient]
        )
    _table(rows, ctx)
    ctx.print(f"\n{len(entries)} {'entry' if len(entries) == 1 else 'entries'}")


def cmd_queue_show(ctx: Context, args: argparse.Namespace) -> None:
    entry: QueueEntry | None = _wait(ctx.store.get_entry(args.id))
    message_id = entry.message_id if entry else args.id
    message = _wait(ctx.store.get_message(message_id))
    if message is None:
        raise CommandError(f"no queue entry or message {args.id} (see: strata queue list)")
    entries: list[QueueEntry] = _wait(ctx.store.entries_for_message(message_id))
    if entry is not None:
        entries = [entry]
    headers: bytes = _wait(ctx.store.read_headers(message_id))
    if args.json:
        ctx.emit_json(
            {
                "queue_id": message.id,
                "sender": message.envelope.sender,
                "recipients": list(message.envelope.recipients),
                "client_address": message.envelope.client_address,
                "client_helo": message.envelope.client_helo,
                "received_at": message.received_at,
                "size": message.size,
                "message_id": message.header_message_id,
                "entries": [e.as_json() for e in entries],
                "headers": headers.decode("utf-8", "replace"),
            }
        )
        return
    ctx.print(f"queue id:   {message.id}")
    ctx.print(
        f"received:   {_when(message.received_at)} from {message.envelope.client_helo} "
        f"[{message.envelope.client_address}]"
    )
    ctx.print(f"sender:     <{message.envelope.sender}>")
    ctx.print(f"size:       {message.size}")
    ctx.print(f"message-id: {message.header_message_id or '-'}")
    now = ctx.clock.seconds()
    for e in entries:
        ctx.print(f"entry:      {e.id} <{e.recipient}> {_entry_state(e, now)}")
    ctx.print("")
    ctx.write(_printable(headers.decode("utf-8", "replace").replace("\r\n", "\n")))


def _entry_state(e: QueueEntry, now: float) -> str:
    """An entry's state, and when it was delivered or is tried next, for people."""
    text = f"{e.state}, {e.attempts} attempt{'' if e.attempts == 1 else 's'}"
    if e.state == DELIVERED and e.delivered_at is not None:
        text += f", delivered {_when(e.delivered_at)}: {e.delivery_reply or '-'}"
    elif e.state == QUEUED:
        due = e.next_attempt_at
        text += (
            f", next attempt {_when(due)} (in {_age(due - now)})"
            if due > now
            else ", due: the relay's next run tries it"
        )
    if e.state != DELIVERED and e.last_error:
        text += f", last error: {e.last_error}"
    return text


@dataclass(frozen=True)
class _Move:
    """One admin move on queue entries: ``strata queue hold|release|delete|bounce``."""

    verb: str
    past: str
    from_states: tuple[str, ...]
    to_state: str
    note: str = ""  # becomes the entry's last_error (IQueueStore.change_state)


_HOLD = _Move("hold", "held", (QUEUED,), HELD)
_RELEASE = _Move("release", "released", (HELD,), QUEUED)
_DELETE = _Move("delete", "deleted", (QUEUED, HELD), DELETED)
_BOUNCE = _Move("bounce", "bounced", (QUEUED, HELD), BOUNCED, "bounced by the administrator")
# RFC 3463 X.0.0: other or undefined status; nothing more specific fits an admin's decision.
_ADMIN_BOUNCE_STATUS: Final = "5.0.0"


def _selected(ctx: Context, args: argparse.Namespace, move: _Move) -> list[QueueEntry]:
    """The entries an admin move names: one entry, every entry of a message, or a domain's."""
    entry_id: str | None = getattr(args, "id", None)
    if entry_id:
        entry: QueueEntry | None = _wait(ctx.store.get_entry(entry_id))
        if entry is not None:
            return [entry]
        entries: list[QueueEntry] = _wait(ctx.store.entries_for_message(entry_id))
        if not entries:
            raise CommandError(f"no queue entry or message {entry_id} (see: strata queue list)")
        return entries
    domain = _domain_name(args.domain)
    entries = [e for e in _wait(ctx.store.list_entries(domain)) if e.state in move.from_states]
    if not entries:
        states = " or ".join(move.from_states)
        raise CommandError(
            f"nothing to {move.verb}: {display_domain(domain)} has no {states} entries"
        )
    return entries


def _move(
    ctx: Context,
    args: argparse.Namespace,
    move: _Move,
    note: Callable[[QueueEntry], str] | None = None,
    record: bool = True,
) -> list[tuple[QueueEntry, QueueEntry]]:
    """
    Apply ``move`` to the selected entries, report each and (``record``) log an event for each
    as it changes; return the changed ones, before and after (never empty).  ``note`` gives the
    entry's new last_error (default: ``move.note``).
    """
    changed: list[tuple[QueueEntry, QueueEntry]] = []
    skipped = 0
    for entry in _selected(ctx, args, move):
        text = note(entry) if note is not None else move.note
        try:
            after: QueueEntry = _wait(
                ctx.store.change_state(
                    entry.id, move.from_states, move.to_state, ctx.clock.seconds(), text
                )
            )
        except (QueueStateError, NoSuchEntry):
            # Re-read: the running relay may have moved it since we listed it.
            now: QueueEntry | None = _wait(ctx.store.get_entry(entry.id))
            state = now.state if now else "gone"
            states = " or ".join(move.from_states)
            ctx.print(
                f"{entry.id} <{entry.recipient}>: skipped, it is {state} "
                f"(only a {states} entry can be {move.past})"
            )
            skipped += 1
            continue
        changed.append((entry, after))
        if record:
            _record_move(ctx, move, after)
        ctx.print(f"{after.id} <{after.recipient}>: {move.past}")
    if not changed:
        raise CommandError(f"nothing to {move.verb}: no entry was in a state that allows it")
    if skipped:
        ctx.print(f"{len(changed)} {move.past}, {skipped} skipped")
    return changed


def _record_move(ctx: Context, move: _Move, e: QueueEntry) -> None:
    _wait(
        ctx.store.record_event(
            f"queue.{move.past}",
            f"{e.id} to <{e.recipient}> {move.past} by the administrator",
            e.domain,
            {"entry": e.id, "queue_id": e.message_id},
        )
    )


def cmd_queue_hold(ctx: Context, args: argparse.Namespace) -> None:
    _move(ctx, args, _HOLD)


def cmd_queue_release(ctx: Context, args: argparse.Namespace) -> None:
    released = [after for _, after in _move(ctx, args, _RELEASE)]
    if _server(ctx) is None:
        # Released all the same: a server sends due mail as soon as it starts.
        ctx.print(f"released entries are due now; {_no_server(ctx)}: they go when one starts")
        return
    # Released entries are due now, but the relay runs every relay.interval; a flush request for
    # their domains makes a running server send them within a second.
    for domain in sorted({e.domain for e in released}):
        _wait(ctx.store.request(FLUSH_ACTION, domain, ctx.clock.seconds()))
    ctx.print("released entries are due now; a running Strata tries them within a second")


def cmd_queue_delete(ctx: Context, args: argparse.Namespace) -> None:
    _move(ctx, args, _DELETE)


def _bounce_reason(entry: QueueEntry) -> tuple[str, str]:
    """
    The diagnostic and RFC 3463 status a DSN gives for an entry the admin bounces.  An entry
    held for review after the primary refused it (``hold_rejected``) keeps that refusal: the
    sender must learn why (``550 5.1.1 ... user unknown``), not just that an admin decided.
    """
    error = entry.last_error
    if not error:
        return _BOUNCE.note, _ADMIN_BOUNCE_STATUS
    if error.startswith("5"):  # the primary's refusal: it leads, as in the relay's own DSNs
        return f"{error} (then {_BOUNCE.note})", status_of(error)
    return f"{_BOUNCE.note}; last error: {error}", _ADMIN_BOUNCE_STATUS


def cmd_queue_bounce(ctx: Context, args: argparse.Namespace) -> None:
    # Each entry's last_error becomes the DSN's diagnostic, so the reply that caused a review
    # stays on the entry too; queue_dsn records the events (one per message).
    bounced = _move(ctx, args, _BOUNCE, note=lambda e: _bounce_reason(e)[0], record=False)
    by_message: dict[str, list[tuple[QueueEntry, QueueEntry]]] = {}
    for before, after in bounced:
        by_message.setdefault(after.message_id, []).append((before, after))
    for message_id, pairs in by_message.items():
        entries = [after for _, after in pairs]
        message: StoredMessage | None = _wait(ctx.store.get_message(message_id))
        dsn: str | None = None
        if message is not None:
            failed = [FailedRecipient(after, *_bounce_reason(before)) for before, after in pairs]
            try:
                dsn = _wait(
                    Deferred.fromCoroutine(
                        queue_dsn(
                            messages=ctx.store,
                            events=ctx.store,
                            clock=ctx.clock,
                            hostname=ctx.settings.hostname,
                            message=message,
                            failed=failed,
                            event_kind="queue.bounced",
                        )
                    )
                )
            except StrataError as e:
                raise CommandError(
                    f"{message_id} is bounced, but its DSN could not be queued: {e}"
                ) from None
        if dsn is not None:
            ctx.print(f"{message_id}: DSN {dsn} queued to <{entries[0].sender}>")
            continue
        # No DSN (RFC 5321 §4.5.5: never to the null sender; or the message record is gone), so
        # queue_dsn recorded nothing.
        why = "the sender is <>" if message is not None else "its message record is missing"
        recipients = ", ".join(e.recipient for e in entries)
        _wait(
            ctx.store.record_event(
                "queue.bounced",
                f"{message_id} to {recipients} bounced by the administrator; no DSN: {why}",
                entries[0].domain,
                {"queue_id": message_id},
            )
        )
        ctx.print(f"{message_id}: no DSN ({why})")


def cmd_queue_flush(ctx: Context, args: argparse.Namespace) -> None:
    domain = _domain_name(args.domain) if args.domain else None
    stats = [s for s in _wait(ctx.store.queue_stats()) if domain is None or s.domain == domain]
    if domain is not None and not stats and _wait(ctx.store.get_domain(domain)) is None:
        # Most likely a typo: a flush of it would be accepted and do nothing.
        raise CommandError(
            f"{display_domain(domain)} is not a protected domain and has nothing queued "
            "(see: strata domain list)"
        )
    scope = f"{display_domain(domain)}'s queue" if domain else "the queue"
    queued, held = sum(s.queued for s in stats), sum(s.held for s in stats)
    if _server(ctx) is None:
        # A request now would never be acted on: a server starting later skips the requests
        # made before it (core/control.py), and at start it sends what is due anyway.
        raise CommandError(
            f"{_no_server(ctx)}, so nothing can flush {scope} ({queued} queued): start one "
            "(twistd -n strata); it sends the mail that is due as soon as it starts"
        )
    request_id: int = _wait(ctx.store.request(FLUSH_ACTION, domain, ctx.clock.seconds()))
    ctx.print(
        f"flush of {scope} requested (request {request_id}, {queued} queued); "
        "a running Strata drains it within a second"
    )
    if held:
        ctx.print(f"{held} held entries stay held (see: strata queue release)")


# -- events -------------------------------------------------------------------------------------


def cmd_events(ctx: Context, args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise UsageError(f"--limit: expected a whole number >= 1, got {args.limit}")
    domain = _domain_name(args.domain) if args.domain else None
    events: list[Event] = _wait(ctx.store.list_events(domain, args.limit))
    outages: list[Outage] = _wait(ctx.store.list_outages(domain, args.limit))
    if args.json:
        ctx.emit_json(
            {
                "events": [e.as_json() for e in events],
                "outages": [o.as_json() for o in outages],
            }
        )
        return
    # One timeline: an outage shows where it started and, once over, where it ended.  The
    # monitor logs both as events naming the outage; an outage only the outage table knows of
    # (its events are older than the limit, or were never written) gets rows of its own.
    ongoing = {o.id for o in outages if o.ended_at is None}
    logged = {(e.kind, e.data.get("outage_id")) for e in events if "outage_id" in e.data}
    timeline: list[tuple[float, int, list[str]]] = []
    for e in events:
        name = display_domain(e.domain) if e.domain else "-"
        text = e.message
        if e.kind == "outage.started" and e.data.get("outage_id") in ongoing:
            text += " (ongoing)"
        timeline.append((e.at, 0, [_when(e.at), e.kind, name, text]))
    for o in outages:
        name = display_domain(o.domain)
        if ("outage.started", o.id) not in logged:
            reason = o.reason if o.ended_at is not None else f"{o.reason} (ongoing)"
            row = [_when(o.started_at), "outage.started", name, reason]
            timeline.append((o.started_at, 1, row))
        if o.ended_at is not None and ("outage.ended", o.id) not in logged:
            text = f"primary back after {_age(o.ended_at - o.started_at)}"
            timeline.append((o.ended_at, 1, [_when(o.ended_at), "outage.ended", name, text]))
    timeline.sort(key=lambda item: (item[0], item[1]))
    rows = [row for _, _, row in timeline[-args.limit :]]
    if not rows:
        ctx.print("no events" + (f" for {display_domain(domain)}" if domain else ""))
        return
    _table([["TIME", "EVENT", "DOMAIN", "MESSAGE"], *rows], ctx)


# -- user ---------------------------------------------------------------------------------------
#
# Synced credentials (DESIGN decision 8): only hashes reach the store.  No password and no hash is
# ever printed, logged or put in an event; errors name lines and addresses, never a field.


def _address(text: str) -> tuple[str, str]:
    """The canonical address and its domain, or a usage error."""
    try:
        return credential_key(text)
    except InvalidUser as e:
        raise UsageError(str(e)) from None


def _user_domain(ctx: Context, address: str) -> Domain:
    domain = _address(address)[1]
    return _get_domain(ctx, domain)


def _read_password(args: argparse.Namespace, address: str) -> str:
    """The new password: one line of stdin (``--password-stdin``), or typed twice at a terminal."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CommandError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to read the password from (scripts: --password-stdin)")
    first = getpass.getpass(f"New password for {_printable(address)}: ")
    if not first:
        raise CommandError("empty password; nothing changed")
    if getpass.getpass("Again: ") != first:
        raise CommandError("the passwords do not match; nothing changed")
    return first


def _change_text(change: UserListChange) -> str:
    return (
        f"{change.added} added, {change.updated} updated, {change.removed} removed, "
        f"{change.unchanged} unchanged"
    )


def cmd_user_import(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.domain)
    shown = display_domain(domain.name)
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as e:
        raise CommandError(f"cannot read {args.file}: {e.strerror or e}") from None
    try:
        parsed = parse_passwd_file(data, domain.name)
    except PasswdFileError as e:
        lines = "\n".join(f"  {args.file}: {error}" for error in e.errors)
        raise CommandError(
            f"{len(e.errors)} bad line(s) in {args.file}; nothing imported:\n{lines}"
        ) from None
    if not parsed:
        raise CommandError(
            f"{args.file} lists no users; nothing imported (to drop a user: strata user remove)"
        )
    users = [UserCredential(address, stored.text) for address, stored in parsed]
    if args.merge:
        change: UserListChange = _wait(ctx.store.merge_users(domain.name, users))
    else:
        change = _wait(ctx.store.replace_users(domain.name, users))
    mode = "merged" if args.merge else "replaced"
    counts = {
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
        "unchanged": change.unchanged,
    }
    _wait(
        ctx.store.record_event(
            "users.imported",
            f"{mode} the users of {shown}: {_change_text(change)}",
            domain.name,
            {"mode": mode, **counts},
        )
    )
    ctx.print(f"{shown}: {len(users)} users {mode}: {_change_text(change)}")


def cmd_user_add(ctx: Context, args: argparse.Namespace) -> None:
    address, _ = _address(args.address)
    domain = _user_domain(ctx, args.address)
    if _wait(ctx.store.get_user(address)) is not None:
        raise CommandError(f"{address} already exists (to change its password: strata user passwd)")
    stored = hash_password(_read_password(args, address), args.scheme)
    _wait(ctx.store.set_user(address, stored.text))
    _wait(
        ctx.store.record_event(
            "user.added",
            f"added user {address}",
            domain.name,
            {"address": address, "scheme": stored.scheme},
        )
    )
    ctx.print(f"added {address} ({stored.scheme})")


def cmd_user_passwd(ctx: Context, args: argparse.Namespace) -> None:
    address, domain = _address(args.address)
    if _wait(ctx.store.get_user(address)) is None:
        raise CommandError(f"{address} is not a synced user (to add it: strata user add)")
    stored = hash_password(_read_password(args, address), args.scheme)
    _wait(ctx.store.set_user(address, stored.text))
    _wait(
        ctx.store.record_event(
            "user.password_changed",
            f"changed the password of {address}",
            domain,
            {"address": address, "scheme": stored.scheme},
        )
    )
    ctx.print(f"changed the password of {address} ({stored.scheme})")


def cmd_user_remove(ctx: Context, args: argparse.Namespace) -> None:
    address, domain = _address(args.address)
    try:
        _wait(ctx.store.remove_user(address))
    except NoSuchUser:
        raise CommandError(f"{address} is not a synced user") from None
    _wait(
        ctx.store.record_event(
            "user.removed", f"removed user {address}", domain, {"address": address}
        )
    )
    ctx.print(f"removed {address}")
    if not _wait(ctx.store.has_user_list(domain)):
        ctx.print(
            f"{display_domain(domain)} has no synced users left: intake accepts every address"
        )


def cmd_user_list(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.domain)
    users: list[UserCredential] = _wait(ctx.store.list_users(domain.name))
    if args.json:
        ctx.emit_json([{"address": u.address, "scheme": u.scheme} for u in users])
        return
    if not users:
        ctx.print(
            f"no synced users for {display_domain(domain.name)}: intake accepts every address "
            f"(import some: strata user import {domain.name} FILE)"
        )
        return
    _table([["ADDRESS", "SCHEME"], *([u.address, u.scheme] for u in users)], ctx)


# -- user alias ---------------------------------------------------------------------------------
#
# Send-as aliases: addresses a synced user may also send as on submission (MAIL FROM, From:,
# Sender:).  Any valid address, in the user's domain or another; one user per alias.  A running
# server sees a change within storage.reload_interval (they bump the credentials version).


def _synced_user(ctx: Context, text: str) -> tuple[str, str]:
    """The canonical address and domain of a synced user, or an error naming it."""
    address, domain = _address(text)
    if _wait(ctx.store.get_user(address)) is None:
        raise CommandError(f"{address} is not a synced user (see: strata user list {domain})")
    return address, domain


def _alias_owner(ctx: Context, alias: str) -> str | None:
    pairs: list[tuple[str, str]] = _wait(ctx.store.list_aliases())
    return next((user for a, user in pairs if a == alias), None)


def cmd_user_alias_add(ctx: Context, args: argparse.Namespace) -> None:
    alias, _ = _address(args.alias)
    user, domain = _synced_user(ctx, args.user)
    if alias == user:
        raise UsageError(f"{alias} is the user's own address: it needs no alias")
    before = _alias_owner(ctx, alias)
    if before == user:
        ctx.print(f"{user} may already send as {alias}")
        return
    try:
        _wait(ctx.store.add_alias(alias, user))
    except NoSuchUser:  # removed since we looked
        raise CommandError(f"{user} is not a synced user") from None
    moved = f" (it was {before}'s)" if before is not None else ""
    _wait(
        ctx.store.record_event(
            "user.alias_added",
            f"{user} may send as {alias}{moved}",
            domain,
            {"alias": alias, "user": user, "previous_user": before},
        )
    )
    ctx.print(f"{user} may now send as {alias}{moved}")


def cmd_user_alias_remove(ctx: Context, args: argparse.Namespace) -> None:
    alias, _ = _address(args.alias)
    owner = _alias_owner(ctx, alias)
    if owner is None or not _wait(ctx.store.remove_alias(alias)):
        raise CommandError(f"{alias} is not a send-as alias (see: strata user alias list)")
    _wait(
        ctx.store.record_event(
            "user.alias_removed",
            f"{owner} may no longer send as {alias}",
            _address(owner)[1],
            {"alias": alias, "user": owner},
        )
    )
    ctx.print(f"{owner} may no longer send as {alias}")


def cmd_user_alias_list(ctx: Context, args: argparse.Namespace) -> None:
    user = None if args.user is None else _synced_user(ctx, args.user)[0]
    pairs: list[tuple[str, str]] = _wait(ctx.store.list_aliases(user))
    if args.json:
        ctx.emit_json([{"alias": alias, "user": owner} for alias, owner in pairs])
        return
    if not pairs:
        whose = f" for {user}" if user is not None else ""
        ctx.print(f"no send-as aliases{whose} (add one: strata user alias add ALIAS USER)")
        return
    _table([["ALIAS", "USER"], *([alias, owner] for alias, owner in pairs)], ctx)


# -- dkim ---------------------------------------------------------------------------------------
#
# DKIM keys for outbound mail (issue 5, point 4), in DATA/dkim/<domain>/ (core/dkim.py).  The
# private key is never printed or put in an event; only the TXT record to publish is shown.


def _keyring(ctx: Context) -> DkimKeyring:
    return DkimKeyring(ctx.settings.data_dir)


def _default_selector() -> str:
    """``s2026-11``: the month the key was made, so the next rotation gets a new name."""
    return time.strftime("s%Y-%m", time.localtime())


def _selector(text: str) -> str:
    try:
        return check_selector(text)
    except InvalidSelector as e:
        raise UsageError(f"--selector: {e}") from None


def _dkim_publish(ctx: Context, domain: str, key: DkimKey) -> None:
    ctx.print(f"Publish this TXT record in the DNS zone of {display_domain(domain)}:")
    ctx.print()
    ctx.print(zone_line(key, domain))
    ctx.print()
    ctx.print(f"name:  {record_name(key, domain)}")
    ctx.print(f"value: {dns_record(key)}")


def cmd_dkim_generate(ctx: Context, args: argparse.Namespace) -> None:
    selector = _selector(args.selector) if args.selector is not None else _default_selector()
    domain = _get_domain(ctx, args.domain)
    shown = display_domain(domain.name)
    try:
        key = _keyring(ctx).generate(domain.name, selector, args.algorithm, replace=args.replace)
    except DkimKeyExists:
        raise CommandError(
            f"{shown} already has a DKIM key with selector {selector}; nothing changed "
            "(choose another --selector, or --replace it)"
        ) from None
    verb = "replaced" if args.replace else "generated"
    _wait(
        ctx.store.record_event(
            "dkim.key_generated",
            f"{verb} the {key.algorithm} DKIM key {selector} of {shown}; it signs from now on",
            domain.name,
            {"selector": selector, "algorithm": key.algorithm, "replaced": bool(args.replace)},
        )
    )
    ctx.print(f"{shown}: {verb} {key.algorithm} key {selector}; outbound mail is signed with it")
    ctx.print("from now on (it verifies once the record below is published).")
    ctx.print()
    _dkim_publish(ctx, domain.name, key)


def cmd_dkim_show(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.domain)
    key = _keyring(ctx).active(domain.name)
    if args.json:
        ctx.emit_json(
            {
                "domain": domain.name,
                "selector": key.selector if key else None,
                "algorithm": key.algorithm if key else None,
                "name": record_name(key, domain.name) if key else None,
                "record": dns_record(key) if key else None,
            }
        )
        return
    if key is None:
        ctx.print(
            f"{display_domain(domain.name)} has no DKIM key: its outbound mail is not signed "
            f"(make one: strata dkim generate {domain.name})"
        )
        return
    ctx.print(f"active selector: {key.selector} ({key.algorithm})")
    ctx.print()
    _dkim_publish(ctx, domain.name, key)


# -- alert --------------------------------------------------------------------------------------
# Outage alerts (issue 5, point 5).  The server sends them through server/webhook.py and by email
# (core/alert_email.py); 'strata alert test' sends one now through the same senders.


def _on_own_reactor(call: Callable[[Any], Deferred[T]]) -> T:
    """
    Run ``call(reactor)`` on a reactor of our own, until its Deferred fires; return its result or
    raise its failure.  The CLI has no reactor, and the global one cannot run twice in a process
    (tests call L{main} many times), so each call gets a fresh, uninstalled one, stopped after.
    """
    from twisted.internet.selectreactor import SelectReactor

    reactor = SelectReactor()
    outcome: list[Any] = []

    def start() -> None:
        d = maybeDeferred(call, reactor)

        def done(result: object) -> None:
            outcome.append(result)
            reactor.stop()

        d.addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    # Its waker's pipe would otherwise stay open until the process exits.
    with contextlib.suppress(Exception):
        reactor.removeAll()
        reactor.waker.connectionLost(None)
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return cast(T, result)


def cmd_alert_test(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.name)
    shown = display_domain(domain.name)
    if domain.alert_webhook is None and domain.alert_email is None:
        raise CommandError(
            f"{shown} has no alert webhook and no alert email: nothing to test (set one: strata "
            f"domain update {domain.name} --alert-webhook URL --alert-email ADDRESS)"
        )
    failures: list[str] = []
    if domain.alert_webhook is not None:
        error = _test_webhook(ctx, domain)
        if error is not None:
            failures.append(error)
    if domain.alert_email is not None:
        error = _test_email(ctx, domain)
        if error is not None:
            failures.append(error)
    if failures:
        raise CommandError(f"test alert for {shown} failed: {'; '.join(failures)}")


def _test_webhook(ctx: Context, domain: Domain) -> str | None:
    """Post a test alert to the domain's webhook now; the error, or None when it answered 2xx."""
    assert domain.alert_webhook is not None
    shown = display_domain(domain.name)
    # The sender and target the server's monitor uses (service.build_alert_sender), without its
    # throttle: an admin's test always goes out.
    now = ctx.clock.seconds()
    outage = Outage(
        id=0, domain=domain.name, started_at=now, reason="test alert sent by 'strata alert test'"
    )
    queued = sum(s.queued for s in _wait(ctx.store.queue_stats()) if s.domain == domain.name)
    where = redacted(domain.alert_webhook)

    def send(reactor: Any) -> Deferred[None]:
        sender = WebhookAlertSender(reactor, alert_webhook_target)
        return sender.test_alert(domain, outage, queued)

    error: str | None = None
    try:
        _on_own_reactor(send)
    except Exception as e:  # WebhookFailed, or a bug: either way the admin must see it
        error = str(e) or type(e).__name__
    _wait(
        ctx.store.record_event(
            "alert.test",
            f"test alert for {shown} to webhook {where}: "
            + ("delivered" if error is None else f"failed: {error}"),
            domain.name,
            {"webhook": where, "ok": error is None, "error": error},
        )
    )
    if error is None:
        ctx.print(f"test alert for {shown} delivered to webhook {where} (it answered 2xx)")
    return error


def _test_email(ctx: Context, domain: Domain) -> str | None:
    """Queue a test alert email the way the server sends them, and ask it to deliver now; or,
    with no server running to deliver it, queue nothing and say so."""
    if _server(ctx) is None:
        return (
            f"email to {domain.alert_email}: {_no_server(ctx)} to deliver it (nothing queued; "
            "start one and test again)"
        )
    domains = {d.name: d for d in _wait(ctx.store.list_domains())}
    sender = EmailAlertSender(ctx.clock, ctx.store, ctx.store, ctx.store, domains,
                              ctx.settings.hostname, ctx.settings.alerts.sender)  # fmt: skip
    route = _wait(sender.test_alert(domain))
    request_id = _wait(ctx.store.request(FLUSH_ACTION, route, ctx.clock.seconds()))
    ctx.print(
        f"test alert email for {display_domain(domain.name)} queued to {domain.alert_email} "
        f"(flush request {request_id}); a running Strata delivers it within a second: see "
        "strata queue list and strata events"
    )
    return None


# -- status -------------------------------------------------------------------------------------


def _server(ctx: Context) -> RunningServer | None:
    """The server running on this data dir (it holds the data dir's lock), or None."""
    return running_server(ctx.settings.data_dir)


def _no_server(ctx: Context) -> str:
    return f"no Strata server is running on {ctx.settings.data_dir}"


def cmd_status(ctx: Context, args: argparse.Namespace) -> None:
    server = _server(ctx)
    domains: list[Domain] = _wait(ctx.store.list_domains())
    stats = _wait(ctx.store.queue_stats())
    messages: int = _wait(ctx.store.message_count())
    statuses = {s.domain: s for s in _wait(ctx.store.list_statuses())}
    now = ctx.clock.seconds()
    data = {
        "version": __version__,
        "data_dir": str(ctx.settings.data_dir),
        "config": str(ctx.settings.source) if ctx.settings.source else None,
        "server": server.as_json() if server is not None else {"running": False},
        "intake_listen": [str(a) for a in ctx.settings.intake.listen],
        "domains": len(domains),
        "messages": messages,
        "queued": sum(s.queued for s in stats),
        "held": sum(s.held for s in stats),
        "queues": [
            {
                "domain": s.domain,
                "queued": s.queued,
                "held": s.held,
                "oldest_received_at": s.oldest_received_at,
            }
            for s in stats
        ],
        "health": [
            {
                "domain": d.name,
                "health": statuses[d.name].health if d.name in statuses else "unknown",
                "since": statuses[d.name].since if d.name in statuses else None,
                "monitored": d.monitored,
            }
            for d in domains
        ],
    }
    if args.json:
        ctx.emit_json(data)
        return
    ctx.print(f"Strata {__version__}")
    ctx.print(f"server:       {_server_text(server, now)}")
    ctx.print(f"config:       {data['config'] or '(embedded default)'}")
    ctx.print(f"data dir:     {data['data_dir']}")
    ctx.print(f"SMTP intake:  {', '.join(data['intake_listen'])}")
    ctx.print(f"domains:      {len(domains)} protected")
    for d in domains:
        health = _health(ctx, d, statuses.get(d.name), now)
        ctx.print(f"  {display_domain(d.name)}: {health}")
    ctx.print(
        f"messages:     {messages} stored, {data['queued']} queue entries waiting, "
        f"{data['held']} held"
    )
    for s in stats:
        oldest = _age(now - s.oldest_received_at) if s.oldest_received_at else "-"
        ctx.print(
            f"  {display_domain(s.domain)}: {s.queued} queued, {s.held} held, oldest {oldest}"
        )


def _server_text(server: RunningServer | None, now: float) -> str:
    if server is None:
        return "not running on this data dir (nothing relays, probes or accepts mail)"
    if server.pid is None:  # it took the lock a moment ago and has not said who it is yet
        return "running, starting"
    since = ""
    if server.started_at is not None:
        since = f", since {_when(server.started_at)} ({_ago(now, server.started_at)})"
    return f"running, pid {server.pid}{since}"


# -- argument parsing ---------------------------------------------------------------------------


def _relay_settings(p: argparse.ArgumentParser, update: bool = False) -> None:
    """The per-domain relay, monitor, portal and retention settings, for ``domain add`` and
    ``domain update``."""
    reset = f"; {DEFAULT} = use the global setting" if update else ""
    p.add_argument(
        "--tls-policy",
        choices=TLS_POLICIES,
        help="STARTTLS towards the primary (default for a new domain: opportunistic)",
    )
    p.add_argument(
        "--hold-rejected",
        action=argparse.BooleanOptionalAction,
        help="hold mail the primary refuses with 5xx for review, instead of bouncing it",
    )
    p.add_argument(
        "--queue-lifetime",
        metavar="DURATION",
        help=f"bounce mail not delivered after this long: seconds, or 90m, 12h, 5d{reset}",
    )
    p.add_argument(
        "--monitor",
        action=argparse.BooleanOptionalAction,
        help="probe the primary and record its outages (default: on)",
    )
    p.add_argument(
        "--accept-unknown",
        action=argparse.BooleanOptionalAction,
        help="accept mail for addresses not on the domain's user list, when the list may be "
        "stale (default: off: 550 5.1.1 for them once users are imported)",
    )
    p.add_argument(
        "--probe-interval", metavar="DURATION", help=f"time between probes of the primary{reset}"
    )
    p.add_argument(
        "--down-after", metavar="N", help=f"failed probes in a row before an outage opens{reset}"
    )
    p.add_argument(
        "--up-after", metavar="N", help=f"good probes in a row before an outage closes{reset}"
    )
    p.add_argument(
        "--portal",
        choices=PORTAL_POLICIES,
        help="when users may log in to the webmail and IMAP: outage (while the primary is down, "
        "and for imap.portal_grace after; the default), always, off, or open (forced open for "
        "a drill, until --portal outage)",
    )
    p.add_argument(
        "--retention-days",
        metavar="N",
        help=f"keep shadow-mailbox messages N days, 1 to {MAX_RETENTION_DAYS}"
        + (reset or " (default: the global imap.retention_days, 30)"),
    )
    p.add_argument(
        "--alert-email",
        metavar="ADDRESS",
        help="email outage alerts to this address (from alerts.sender, through the outbound "
        'path); "" removes it',
    )
    p.add_argument(
        "--alert-webhook",
        metavar="URL",
        help="POST outage alerts as JSON to this http(s) URL (an SMS gateway, a pager hook); "
        '"" removes it',
    )
    p.add_argument(
        "--alert-webhook-auth",
        metavar="VALUE",
        help='the webhook\'s Authorization header, such as "Bearer TOKEN" (a secret: only shown '
        'as set or not set); "-" reads it from standard input, "" removes it',
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML config file (default: ./strata.toml when present, else the embedded default)",
    )
    parser = argparse.ArgumentParser(
        prog="strata",
        description="Administer Strata, the email continuity server.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"strata {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(
        group: Any,
        name: str,
        help_text: str,
        func: Callable[[Context, Any], None],
        json_flag: bool = False,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        return p

    domain = commands.add_parser(
        "domain",
        help="protected domains",
        parents=[common],
        description="Manage the domains Strata protects.",
    )
    dsub = domain.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub(
        dsub, "add", "protect a domain: accept its mail and relay it to its primary", cmd_domain_add
    )
    p.add_argument("name", metavar="NAME", help="domain name (Unicode or xn-- form)")
    p.add_argument(
        "--relay",
        required=True,
        metavar="HOST[:PORT]",
        help="the customer's primary mail server (port 25 by default)",
    )
    p.add_argument(
        "--mode",
        choices=DELIVERY_MODES,
        default="relay",
        help="relay: queue for the primary only; both: also keep a shadow-mailbox copy "
        "(default: relay)",
    )
    _relay_settings(p)
    sub(dsub, "list", "list protected domains", cmd_domain_list, json_flag=True)
    p = sub(dsub, "show", "show one domain's settings and queue", cmd_domain_show, json_flag=True)
    p.add_argument("name", metavar="NAME")
    p = sub(dsub, "update", "change a domain's settings", cmd_domain_update)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--relay", metavar="HOST[:PORT]", help="new primary mail server")
    p.add_argument("--mode", choices=DELIVERY_MODES, help="new delivery mode")
    _relay_settings(p, update=True)
    p = sub(dsub, "remove", "stop protecting a domain (its queued mail stays)", cmd_domain_remove)
    p.add_argument("name", metavar="NAME")

    queue = commands.add_parser(
        "queue",
        help="the relay queue",
        parents=[common],
        description="Inspect the queue of mail waiting for the primaries.",
    )
    qsub = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub(qsub, "list", "list queue entries in arrival order", cmd_queue_list, json_flag=True)
    p.add_argument("--domain", metavar="NAME", help="only this domain's entries")
    p = sub(
        qsub,
        "show",
        "show a queue entry or message: envelope and headers",
        cmd_queue_show,
        json_flag=True,
    )
    p.add_argument("id", metavar="ID", help="entry id (QUEUEID.N) or queue id")
    p = sub(
        qsub,
        "flush",
        "ask the running server to deliver queued mail now, deferred entries included",
        cmd_queue_flush,
    )
    p.add_argument("--domain", metavar="NAME", help="only this domain's queue")
    for name, state, help_text, func in (
        (
            "hold",
            QUEUED,
            "hold queued entries: the relay leaves them until released",
            cmd_queue_hold,
        ),
        (
            "release",
            HELD,
            "release held entries: due at once, and a running server sends them within a second",
            cmd_queue_release,
        ),
    ):
        p = sub(qsub, name, help_text, func)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "id", metavar="ID", nargs="?", help="entry id (QUEUEID.N) or queue id (all its entries)"
        )
        which.add_argument(
            "--domain", metavar="NAME", help=f"{name} every {state} entry of this domain"
        )
    for name, help_text, func in (
        ("delete", "delete queued or held entries without telling the sender", cmd_queue_delete),
        (
            "bounce",
            "bounce queued or held entries: one DSN to the sender of each message (none to <>)",
            cmd_queue_bounce,
        ),
    ):
        p = sub(qsub, name, help_text, func)
        p.add_argument(
            "id", metavar="ID", help="entry id (QUEUEID.N) or queue id (all its entries)"
        )

    p = sub(
        commands,
        "events",
        "the event log and the primaries' outages, newest last",
        cmd_events,
        json_flag=True,
    )
    p.add_argument("--domain", metavar="NAME", help="only this domain's events")
    p.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="the newest N lines (with --json: N events and N outages) (default: 50)",
    )

    user = commands.add_parser(
        "user",
        help="synced users (password hashes for IMAP and webmail logins)",
        parents=[common],
        description="Manage the users of protected domains: their password hashes, never "
        "passwords.  A domain with users gets 550 5.1.1 for unknown addresses at intake "
        "(unless it is set --accept-unknown).",
    )
    usub = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub(
        usub,
        "import",
        "import a Dovecot passwd-file (user@domain:{SCHEME}hash): replaces the domain's users",
        cmd_user_import,
    )
    p.add_argument("domain", metavar="DOMAIN", help="a protected domain")
    p.add_argument("file", metavar="FILE", help="passwd-file to read ('-': standard input)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="add and update the file's users, keep the domain's others",
    )
    for name, help_text, func in (
        ("add", "add a user, with a password typed twice (stored hashed)", cmd_user_add),
        ("passwd", "change a user's password (stored hashed)", cmd_user_passwd),
    ):
        p = sub(usub, name, help_text, func)
        p.add_argument("address", metavar="ADDRESS", help="user@domain")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input (for scripts)",
        )
        p.add_argument(
            "--scheme",
            choices=SCHEMES,
            default="SHA512-CRYPT",
            help="hash scheme (default: SHA512-CRYPT)",
        )
    p = sub(usub, "remove", "remove a user", cmd_user_remove)
    p.add_argument("address", metavar="ADDRESS", help="user@domain")
    p = sub(
        usub, "list", "list a domain's users and their hash schemes", cmd_user_list, json_flag=True
    )
    p.add_argument("domain", metavar="DOMAIN", help="a protected domain")
    alias = usub.add_parser(
        "alias",
        help="send-as aliases: other addresses a user may send from",
        parents=[common],
        description="Let a synced user send (submission: MAIL FROM, From:, Sender:) as another "
        "address besides their own: one in their domain (sales@) or in any other.  An alias "
        "belongs to one user; it goes when its user is removed.",
    )
    asub_alias = alias.add_subparsers(dest="alias_action", metavar="ACTION", required=True)
    p = sub(
        asub_alias,
        "add",
        "let USER send as ALIAS (an alias of another user moves to this one)",
        cmd_user_alias_add,
    )
    p.add_argument("alias", metavar="ALIAS", help="the address to send as (any domain)")
    p.add_argument("user", metavar="USER", help="a synced user, user@domain")
    p = sub(asub_alias, "remove", "stop anybody sending as ALIAS", cmd_user_alias_remove)
    p.add_argument("alias", metavar="ALIAS", help="a send-as alias")
    p = sub(
        asub_alias,
        "list",
        "list send-as aliases and their users",
        cmd_user_alias_list,
        json_flag=True,
    )
    p.add_argument("user", metavar="USER", nargs="?", help="only this user's aliases")

    dkim_group = commands.add_parser(
        "dkim",
        help="DKIM keys that sign outbound mail",
        parents=[common],
        description="Manage the DKIM keys that sign the outbound mail of protected domains: "
        "make a key, and show the DNS TXT record to publish for it.",
    )
    ksub = dkim_group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub(
        ksub,
        "generate",
        "make a new DKIM key for a domain, make it the one that signs, print its TXT record",
        cmd_dkim_generate,
    )
    p.add_argument("domain", metavar="DOMAIN", help="a protected domain")
    p.add_argument(
        "--selector",
        metavar="S",
        help="the key's selector, its name in DNS (default: the month, like s2026-11)",
    )
    p.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="rsa",
        help="rsa (2048 bits) or ed25519 (RFC 8463; not every receiver checks it) (default: rsa)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace an existing key with the same selector (its published record goes stale)",
    )
    p = sub(
        ksub,
        "show",
        "show a domain's active DKIM selector and its TXT record",
        cmd_dkim_show,
        json_flag=True,
    )
    p.add_argument("domain", metavar="DOMAIN", help="a protected domain")

    alert_group = commands.add_parser(
        "alert",
        help="outage alerts",
        parents=[common],
        description="Outage alerts: each domain's webhook and email, set with "
        "strata domain update NAME --alert-webhook URL --alert-email ADDRESS.",
    )
    asub = alert_group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub(
        asub,
        "test",
        "send a test alert to a domain's webhook and email now; say whether the webhook "
        "took it (the email goes through the running server)",
        cmd_alert_test,
    )
    p.add_argument("name", metavar="NAME", help="a protected domain")

    sub(commands, "status", "summary of the store and the queue", cmd_status, json_flag=True)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    creates = args.func is cmd_domain_add
    try:
        settings = load_config(getattr(args, "config", None))
        if creates:  # refuse bad arguments before a new data dir is made for them
            _domain_name(args.name)
            _relay(args.relay)
            _settings(args)
        ctx = Context(settings, out, create=creates)
    except ConfigError as e:
        sys.stderr.write(f"strata: invalid configuration: {e}\n")
        return 2
    except (UsageError, StrataError) as e:
        sys.stderr.write(f"strata: {e}\n")
        return 2
    status = 0
    try:
        args.func(ctx, args)
    except UsageError as e:
        sys.stderr.write(f"strata: {e}\n")
        status = 2
    except (CommandError, StrataError) as e:
        sys.stderr.write(f"strata: {e}\n")
        status = 1
    finally:
        ctx.close()
        ctx.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
