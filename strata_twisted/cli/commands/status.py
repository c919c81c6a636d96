"""``strata status``: summary of the store and the queue (core/admin/status.py), plus what only
the CLI knows here: whether a server runs on this data dir, and its config."""

from __future__ import annotations

import argparse

from strata_twisted.cli.commands.domain import health_text
from strata_twisted.cli.context import Context
from strata_twisted.cli.output import age, ago, when
from strata_twisted.cli.registry import Subparsers, sub
from strata_twisted.core.admin import status as ops
from strata_twisted.model import display_domain
from strata_twisted.runlock import RunningServer


def _server_text(server: RunningServer | None, now: float) -> str:
    if server is None:
        return "not running on this data dir (nothing relays, probes or accepts mail)"
    if server.pid is None:  # it took the lock a moment ago and has not said who it is yet
        return "running, starting"
    since = ""
    if server.started_at is not None:
        since = f", since {when(server.started_at)} ({ago(now, server.started_at)})"
    return f"running, pid {server.pid}{since}"


def cmd_status(ctx: Context, args: argparse.Namespace) -> None:
    server = ctx.server()
    report = ctx.run(ops.status(ctx.admin, ctx.caller))
    now = ctx.clock.seconds()
    data = report.as_json()
    data.update(
        {
            "data_dir": str(ctx.settings.data_dir),
            "config": str(ctx.settings.source) if ctx.settings.source else None,
            "server": server.as_json() if server is not None else {"running": False},
            "intake_listen": [str(a) for a in ctx.settings.intake.listen],
        }
    )
    if args.json:
        ctx.emit_json(data)
        return
    ctx.print(f"Strata {report.version}")
    ctx.print(f"server:       {_server_text(server, now)}")
    ctx.print(f"config:       {data['config'] or '(embedded default)'}")
    ctx.print(f"data dir:     {data['data_dir']}")
    ctx.print(f"SMTP intake:  {', '.join(data['intake_listen'])}")
    ctx.print(f"domains:      {len(report.domains)} protected")
    for d in report.domains:
        health = health_text(ctx, d, report.statuses.get(d.name), now)
        ctx.print(f"  {display_domain(d.name)}: {health}")
    ctx.print(
        f"messages:     {report.messages} stored, {report.queued} queue entries waiting, "
        f"{report.held} held"
    )
    for s in report.queues:
        oldest = age(now - s.oldest_received_at) if s.oldest_received_at else "-"
        ctx.print(
            f"  {display_domain(s.domain)}: {s.queued} queued, {s.held} held, oldest {oldest}"
        )


def register(commands: Subparsers) -> None:
    sub(commands, "status", "summary of the store and the queue", cmd_status, json_flag=True)
