"""``strata events``: the event log and the primaries' outages, newest last
(core/admin/events.py)."""

from __future__ import annotations

import argparse

from strata_twisted.cli.commands._args import domain_arg
from strata_twisted.cli.context import Context, UsageError
from strata_twisted.cli.output import age, when
from strata_twisted.cli.registry import Subparsers, sub
from strata_twisted.core.admin import events as ops
from strata_twisted.core.admin._common import MAX_PAGE
from strata_twisted.model import Event, EventFilter, display_domain


def _newest(ctx: Context, query: EventFilter, limit: int) -> list[Event]:
    """The newest ``limit`` events, oldest first."""
    events: list[Event] = []
    cursor: str | None = None
    while len(events) < limit:
        size = min(MAX_PAGE, limit - len(events))
        page = ctx.run(ops.list_events(ctx.admin, ctx.caller, query, cursor, size))
        events.extend(page.events)
        cursor = page.next_cursor
        if cursor is None:
            break
    return events[::-1]


def cmd_events(ctx: Context, args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise UsageError(f"--limit: expected a whole number >= 1, got {args.limit}")
    domain = domain_arg(args.domain) if args.domain else None
    events = _newest(ctx, EventFilter(domains=(domain,) if domain else None), args.limit)
    outages = ctx.run(ops.list_outages(ctx.admin, ctx.caller, domain, min(args.limit, MAX_PAGE)))
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
        timeline.append((e.at, 0, [when(e.at), e.kind, name, text]))
    for o in outages:
        name = display_domain(o.domain)
        if ("outage.started", o.id) not in logged:
            reason = o.reason if o.ended_at is not None else f"{o.reason} (ongoing)"
            row = [when(o.started_at), "outage.started", name, reason]
            timeline.append((o.started_at, 1, row))
        if o.ended_at is not None and ("outage.ended", o.id) not in logged:
            text = f"primary back after {age(o.ended_at - o.started_at)}"
            timeline.append((o.ended_at, 1, [when(o.ended_at), "outage.ended", name, text]))
    timeline.sort(key=lambda item: (item[0], item[1]))
    rows = [row for _, _, row in timeline[-args.limit :]]
    if not rows:
        ctx.print("no events" + (f" for {display_domain(domain)}" if domain else ""))
        return
    ctx.table([["TIME", "EVENT", "DOMAIN", "MESSAGE"], *rows])


def register(commands: Subparsers) -> None:
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
