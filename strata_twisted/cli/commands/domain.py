"""``strata domain add|list|show|update|remove``: protected domains (core/admin/domains.py).

A running server notices domain changes within ``storage.reload_interval`` (0.5 s).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Final
from urllib.parse import urlsplit

from strata_twisted.cli.commands._args import domain_arg, usage
from strata_twisted.cli.context import CommandError, Context, UsageError
from strata_twisted.cli.output import age, ago, duration_text, when
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import domains as ops
from strata_twisted.core.admin.domains import MAX_RETENTION_DAYS, DomainView
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.alerts import redacted
from strata_twisted.core.portal import PortalState
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import (
    DELIVERY_MODES,
    PORTAL_POLICIES,
    TLS_POLICIES,
    Domain,
    DomainStatus,
    display_domain,
)

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


def _given(value: Any) -> Any:
    return value if value is not None else _KEEP


def _webhook_auth(text: str | None) -> Any:
    """``-`` reads the value from standard input, so the secret is not in `ps` or the shell's
    history."""
    if text == "-":
        return sys.stdin.readline().rstrip("\r\n")
    return _given(text)


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """
    The settings given on the command line, as the operations take them, checked (usage
    errors name the option).  Computed once per command: ``--alert-webhook-auth -`` reads
    standard input, which can be read only once.
    """
    cached: dict[str, Any] | None = getattr(args, "_fields", None)
    if cached is not None:
        return cached
    given = {
        "relay": _given(args.relay),
        "mode": _given(args.mode),
        "tls_policy": _given(args.tls_policy),
        "hold_rejected": _given(args.hold_rejected),
        "monitored": _given(args.monitor),
        "accept_unknown": _given(args.accept_unknown),
        "queue_lifetime": _duration("--queue-lifetime", args.queue_lifetime),
        "probe_interval": _duration("--probe-interval", args.probe_interval),
        "down_after": _count("--down-after", args.down_after),
        "up_after": _count("--up-after", args.up_after),
        "portal": _given(args.portal),
        "retention_days": _days("--retention-days", args.retention_days),
        "alert_email": _given(args.alert_email),
        "alert_webhook": _given(args.alert_webhook),
        "alert_webhook_auth": _webhook_auth(args.alert_webhook_auth),
    }
    fields = {key: value for key, value in given.items() if value is not _KEEP}
    try:
        ops.check_domain_fields(fields)
    except InvalidInput as e:
        raise usage(e) from None
    args._fields = fields
    return fields


def check_add(args: argparse.Namespace) -> None:
    """Refuse bad arguments before a new data dir is made for them."""
    domain_arg(args.name)
    _fields(args)


def _not_protected(name: str, hint: bool = True) -> CommandError:
    return CommandError(
        f"{name} is not a protected domain" + (" (see: strata domain list)" if hint else "")
    )


def show(ctx: Context, name: str) -> DomainView:
    """A domain's view, or the CLI's error for a domain it does not protect."""
    canonical = domain_arg(name)
    try:
        return ctx.run(ops.show_domain(ctx.admin, ctx.caller, canonical))
    except NotFound:
        raise _not_protected(name) from None


# -- add, update, remove -----------------------------------------------------------------------


def cmd_domain_add(ctx: Context, args: argparse.Namespace) -> None:
    name = domain_arg(args.name)
    try:
        added = ctx.run(
            ops.add_domain(ctx.admin, ctx.caller, name, _fields(args), customer=args.customer)
        )
    except AlreadyExists as e:
        if e.kind != "domain":
            raise
        raise CommandError(
            f"{args.name} is already protected (see: strata domain show {name})"
        ) from None
    if ctx.created:
        ctx.print(f"new data dir: {ctx.settings.data_dir}")
    ctx.print(f"protecting {display_domain(name)}: relay to {added.relay}, mode {added.mode}")
    ctx.print("a running Strata accepts its mail within a second")
    _warn_drill(ctx, added)


def cmd_domain_update(ctx: Context, args: argparse.Namespace) -> None:
    name = domain_arg(args.name)
    fields = _fields(args)
    if not fields:
        raise UsageError(
            "nothing to change: give --relay, --mode or another setting (see: strata domain "
            "update --help)"
        )
    try:
        change = ctx.run(ops.update_domain(ctx.admin, ctx.caller, name, fields))
    except NotFound:
        raise _not_protected(args.name) from None
    before, updated = change.before, change.after
    ctx.print(f"{display_domain(name)}: relay to {updated.relay}, mode {updated.mode}")
    if updated.portal != before.portal and updated.portal != "open":
        ctx.print(f"portal: {_portal_policy(updated, ctx.settings.imap.portal_grace)}")
    _warn_drill(ctx, updated)


def cmd_domain_remove(ctx: Context, args: argparse.Namespace) -> None:
    name = domain_arg(args.name)
    try:
        removed = ctx.run(ops.remove_domain(ctx.admin, ctx.caller, name))
    except NotFound:
        raise _not_protected(args.name, hint=False) from None
    shown = display_domain(name)
    ctx.print(f"no longer protecting {shown}")
    if removed.queued:
        # The relay keeps them queued (they expire at the queue lifetime) until the domain is
        # protected again or an admin bounces or deletes them.
        ctx.print(
            f"{removed.queued} queued entries for {shown} stay in the queue and are not relayed "
            f"until {shown} is protected again (or: strata queue bounce / delete)"
        )
    if removed.held:
        ctx.print(f"{removed.held} held entries for {shown} stay held")


def _warn_drill(ctx: Context, domain: Domain) -> None:
    if domain.portal == "open":
        ctx.print(
            f"webmail portal forced OPEN for a drill: users log in whatever the primary does; "
            f"back to normal: strata domain update {domain.name} --portal outage"
        )


# -- list, show --------------------------------------------------------------------------------


def cmd_domain_list(ctx: Context, args: argparse.Namespace) -> None:
    views = ctx.run(ops.list_domains(ctx.admin, ctx.caller))
    if args.json:
        ctx.emit_json([v.as_json() for v in views])
        return
    if not views:
        ctx.print("no protected domains (add one: strata domain add NAME --relay HOST[:PORT])")
        return
    rows = [["DOMAIN", "RELAY", "MODE", "QUEUED", "PORTAL"]]
    for v in views:
        d = v.domain
        portal = "OPEN (drill)" if d.portal == "open" else d.portal
        rows.append([display_domain(d.name), str(d.relay), d.mode, str(v.queued), portal])
    ctx.table(rows)


def health_text(ctx: Context, domain: Domain, status: DomainStatus | None, now: float) -> str:
    """``down since ... (10m ago)``, or why the health is not known yet."""
    if status is None or (status.health == "unknown" and status.last_probe_at is None):
        return "unknown (never probed)" if domain.monitored else "unknown (not monitored)"
    text: str = status.health
    if status.since is not None:
        text += f" since {when(status.since)} ({ago(now, status.since)})"
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
    text = f"{when(at)} ({ago(now, at)}), "
    if status.last_probe_error is not None:
        return text + f"failed ({status.consecutive_failures} in a row): {status.last_probe_error}"
    return text + f"answered ({status.consecutive_successes} in a row)"


def _portal_policy(domain: Domain, grace: float) -> str:
    """The domain's portal policy, for people."""
    if domain.portal == "outage":
        after = f", and for {duration_text(grace)} after" if grace > 0 else ""
        return f"outage (open while the primary is down{after})"
    if domain.portal == "always":
        return "always (open at all times)"
    if domain.portal == "off":
        return "off (never open)"
    return f"OPEN for a drill (back to normal: strata domain update {domain.name} --portal outage)"


def _portal_now(domain: Domain, state: PortalState, now: float) -> str:
    """Whether the portal is open right now, and why."""
    if state.reason == "outage" and state.since is not None:
        return f"open: outage since {when(state.since)} ({ago(now, state.since)})"
    if state.reason == "grace" and state.until is not None:
        return f"open: grace until {when(state.until)} (in {age(state.until - now)})"
    if state.reason == "drill":
        return "open: drill (forced open)"
    if state.reason == "primary_up" and not domain.monitored:
        return "closed: primary up (not monitored, so no outage opens it)"
    if state.reason == "primary_up":
        return "closed: primary up"
    return f"{'open' if state.open else 'closed'}: {state.reason}"


def _override(value: float | None, unit: str = "") -> str:
    """A per-domain override for people: ``5d``, ``3 failed probes`` or ``global default``."""
    if value is None:
        return "global default"
    if unit == "s":
        return duration_text(float(value))
    return f"{value:g}{unit}"


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


def cmd_domain_show(ctx: Context, args: argparse.Namespace) -> None:
    view = show(ctx, args.name)
    if args.json:
        ctx.emit_json(view.as_json())
        return
    domain, status = view.domain, view.status
    now = ctx.clock.seconds()
    oldest = view.oldest_received_at
    oldest_age = age(now - oldest) if oldest else "-"
    last = view.last_delivery_at
    ctx.print(f"domain:        {display_domain(domain.name)}")
    if display_domain(domain.name) != domain.name:
        ctx.print(f"ascii name:    {domain.name}")
    if domain.customer:
        ctx.print(f"customer:      {domain.customer}")
    ctx.print(f"relay:         {domain.relay}")
    ctx.print(f"mode:          {domain.mode}")
    ctx.print(f"health:        {health_text(ctx, domain, status, now)}")
    ctx.print(f"last probe:    {_last_probe(status, now)}")
    ctx.print(f"queued:        {view.queued} (held {view.held}, oldest {oldest_age})")
    ctx.print(f"last delivery: {when(last)}" + (f" ({ago(now, last)})" if last else ""))
    ctx.print(f"tls policy:    {domain.tls_policy}")
    ctx.print(f"on 5xx:        {'hold for review' if domain.hold_rejected else 'bounce'}")
    ctx.print(f"queue life:    {_override(domain.queue_lifetime, 's')}")
    ctx.print(f"monitored:     {'yes' if domain.monitored else 'no'}")
    unknown = "accepted" if domain.accept_unknown else "refused (550 5.1.1) once users are imported"
    ctx.print(f"unknown users: {unknown}")
    ctx.print(f"portal:        {_portal_policy(domain, ctx.settings.imap.portal_grace)}")
    ctx.print(f"portal now:    {_portal_now(domain, view.portal, now)}")
    own = "" if domain.retention_days is None else " (this domain's own)"
    ctx.print(f"retention:     {view.retention_days} days{own or ' (global default)'}")
    ctx.print(f"alert email:   {domain.alert_email or '-'}")
    ctx.print(f"alert webhook: {_webhook_text(domain)}")
    ctx.print(f"probe every:   {_override(domain.probe_interval, 's')}")
    ctx.print(f"down after:    {_override(domain.down_after, ' failed probes')}")
    ctx.print(f"up after:      {_override(domain.up_after, ' good probes')}")
    ctx.print(f"added:         {when(domain.created_at)}")
    ctx.print(f"updated:       {when(domain.updated_at)}")


# -- parser ------------------------------------------------------------------------------------


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
        metavar="ADDRESS[,ADDRESS...]",
        help="email outage alerts to these addresses (from alerts.sender, through the outbound "
        'path); "" removes them',
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


def register(commands: Subparsers) -> None:
    dsub = group(commands, "domain", "protected domains", "Manage the domains Strata protects.")
    p = sub(
        dsub, "add", "protect a domain: accept its mail and relay it to its primary", cmd_domain_add
    )
    # The one command that may start a new data dir; check_add runs before it is made.
    p.set_defaults(creates=True, precheck=check_add)
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
    p.add_argument(
        "--customer",
        metavar="C",
        help="the customer the domain belongs to (default: the operator's own)",
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
