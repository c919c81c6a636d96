"""
The ``strata`` command: admin operations on the same store the server uses.

It runs without a reactor: the SQLite store gets a synchronous executor, so every Deferred it
returns
has already fired.  With no ``--config`` it reads ``./strata.toml`` when present, else the embedded
default, exactly as ``twistd -n strata`` does, so both work from the same directory with no flags.
A running server notices domain changes within ``storage.reload_interval`` (0.5 s).

Exit codes: 0 success, 1 a failed operation (e.g. unknown domain), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

from twisted.internet.defer import Deferred

from strata_twisted import __version__
from strata_twisted.clock import WallClock
from strata_twisted.config import Settings, load_config
from strata_twisted.errors import (
    ConfigError,
    DomainExists,
    InvalidDomainName,
    NoSuchDomain,
    StrataError,
)
from strata_twisted.executor import SyncExecutor
from strata_twisted.model import (
    DELIVERY_MODES,
    Domain,
    QueueEntry,
    RelayTarget,
    display_domain,
    normalize_domain,
)
from strata_twisted.storage import open_store
from strata_twisted.testing import result_of

T = TypeVar("T")


class CommandError(Exception):
    """A failed admin operation: printed as ``strata: <message>``, exit status 1."""


def _wait(d: Deferred[T]) -> T:
    return result_of(d)


class Context:
    """The CLI's view of one data directory."""

    def __init__(self, settings: Settings, out: TextIO) -> None:
        if settings.storage.backend != "sqlite":
            raise ConfigError(
                "storage.backend",
                f"the CLI needs a persistent backend; {settings.storage.backend!r} keeps nothing "
                "between processes",
            )
        self.settings = settings
        self.out = out
        self.clock = WallClock()
        self.store: Any = open_store("sqlite", settings.data_dir, self.clock, SyncExecutor())
        self.store.open(recover=False)

    def close(self) -> None:
        self.store.close()

    def emit_json(self, value: object) -> None:
        json.dump(value, self.out, indent=2, ensure_ascii=False)
        self.out.write("\n")

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")


# -- helpers ------------------------------------------------------------------------------------


def _domain_name(text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidDomainName as e:
        raise CommandError(str(e)) from None


def _relay(text: str) -> RelayTarget:
    try:
        return RelayTarget.parse(text)
    except ValueError as e:
        raise CommandError(f"--relay: {e}") from None


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


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


def cmd_domain_add(ctx: Context, args: argparse.Namespace) -> None:
    name = _domain_name(args.name)
    domain = Domain(name=name, relay=_relay(args.relay), mode=args.mode)
    try:
        added: Domain = _wait(ctx.store.add_domain(domain))
    except DomainExists:
        raise CommandError(
            f"{args.name} is already protected (see: strata domain show {name})"
        ) from None
    _wait(ctx.store.record_event("domain.added", f"protecting {name}", name, added.as_json()))
    ctx.print(f"protecting {display_domain(name)}: relay to {added.relay}, mode {added.mode}")


def cmd_domain_list(ctx: Context, args: argparse.Namespace) -> None:
    domains: list[Domain] = _wait(ctx.store.list_domains())
    stats = {s.domain: s for s in _wait(ctx.store.queue_stats())}
    if args.json:
        ctx.emit_json([_domain_json(d, stats.get(d.name)) for d in domains])
        return
    if not domains:
        ctx.print("no protected domains (add one: strata domain add NAME --relay HOST[:PORT])")
        return
    rows = [["DOMAIN", "RELAY", "MODE", "QUEUED"]]
    for d in domains:
        s = stats.get(d.name)
        rows.append([display_domain(d.name), str(d.relay), d.mode, str(s.queued if s else 0)])
    _table(rows, ctx)


def _domain_json(domain: Domain, stats: Any) -> dict[str, Any]:
    data = domain.as_json()
    data["queued"] = stats.queued if stats else 0
    data["held"] = stats.held if stats else 0
    data["oldest_received_at"] = stats.oldest_received_at if stats else None
    return data


def cmd_domain_show(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.name)
    stats = {s.domain: s for s in _wait(ctx.store.queue_stats())}.get(domain.name)
    data = _domain_json(domain, stats)
    if args.json:
        ctx.emit_json(data)
        return
    oldest = data["oldest_received_at"]
    age = _age(ctx.clock.seconds() - oldest) if oldest else "-"
    ctx.print(f"domain:        {display_domain(domain.name)}")
    if display_domain(domain.name) != domain.name:
        ctx.print(f"ascii name:    {domain.name}")
    ctx.print(f"relay:         {domain.relay}")
    ctx.print(f"mode:          {domain.mode}")
    ctx.print(f"queued:        {data['queued']} (held {data['held']}, oldest {age})")
    ctx.print(f"added:         {_when(domain.created_at)}")
    ctx.print(f"updated:       {_when(domain.updated_at)}")


def cmd_domain_update(ctx: Context, args: argparse.Namespace) -> None:
    domain = _get_domain(ctx, args.name)
    if args.relay is None and args.mode is None:
        raise CommandError("nothing to change: give --relay and/or --mode")
    changed = Domain(
        name=domain.name,
        relay=_relay(args.relay) if args.relay is not None else domain.relay,
        mode=args.mode or domain.mode,
        created_at=domain.created_at,
        updated_at=domain.updated_at,
    )
    updated: Domain = _wait(ctx.store.update_domain(changed))
    _wait(
        ctx.store.record_event(
            "domain.updated", f"updated {domain.name}", domain.name, updated.as_json()
        )
    )
    ctx.print(f"{display_domain(domain.name)}: relay to {updated.relay}, mode {updated.mode}")


def cmd_domain_remove(ctx: Context, args: argparse.Namespace) -> None:
    name = _domain_name(args.name)
    try:
        _wait(ctx.store.remove_domain(name))
    except NoSuchDomain:
        raise CommandError(f"{args.name} is not a protected domain") from None
    _wait(ctx.store.record_event("domain.removed", f"stopped protecting {name}", name))
    stats = {s.domain: s for s in _wait(ctx.store.queue_stats())}.get(name)
    note = f" ({stats.queued} queued messages stay in the queue)" if stats and stats.queued else ""
    ctx.print(f"no longer protecting {display_domain(name)}{note}")


# -- queue --------------------------------------------------------------------------------------


def cmd_queue_list(ctx: Context, args: argparse.Namespace) -> None:
    domain = _domain_name(args.domain) if args.domain else None
    entries: list[QueueEntry] = _wait(ctx.store.list_entries(domain))
    if args.json:
        ctx.emit_json([e.as_json() for e in entries])
        return
    if not entries:
        ctx.print("the queue is empty" + (f" for {args.domain}" if domain else ""))
        return
    rows = [["ID", "RECEIVED", "STATE", "SIZE", "SENDER", "RECIPIENT"]]
    for e in entries:
        rows.append(
            [e.id, _when(e.received_at), e.state, str(e.size), e.sender or "<>", e.recipient]
        )
    _table(rows, ctx)
    ctx.print(f"\n{len(entries)} entries")


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
    for e in entries:
        error = f", last error: {e.last_error}" if e.last_error else ""
        ctx.print(f"entry:      {e.id} <{e.recipient}> {e.state}, {e.attempts} attempts{error}")
    ctx.print("")
    ctx.out.write(headers.decode("utf-8", "replace").replace("\r\n", "\n"))


# -- status -------------------------------------------------------------------------------------


def cmd_status(ctx: Context, args: argparse.Namespace) -> None:
    domains: list[Domain] = _wait(ctx.store.list_domains())
    stats = _wait(ctx.store.queue_stats())
    messages: int = _wait(ctx.store.message_count())
    now = ctx.clock.seconds()
    data = {
        "version": __version__,
        "data_dir": str(ctx.settings.data_dir),
        "config": str(ctx.settings.source) if ctx.settings.source else None,
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
    }
    if args.json:
        ctx.emit_json(data)
        return
    ctx.print(f"Strata {__version__}")
    ctx.print(f"config:       {data['config'] or '(embedded default)'}")
    ctx.print(f"data dir:     {data['data_dir']}")
    ctx.print(f"SMTP intake:  {', '.join(data['intake_listen'])}")
    ctx.print(f"domains:      {len(domains)} protected")
    ctx.print(
        f"messages:     {messages} stored, {data['queued']} queue entries waiting, "
        f"{data['held']} held"
    )
    for s in stats:
        oldest = _age(now - s.oldest_received_at) if s.oldest_received_at else "-"
        ctx.print(
            f"  {display_domain(s.domain)}: {s.queued} queued, {s.held} held, oldest {oldest}"
        )


# -- argument parsing ---------------------------------------------------------------------------


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
    sub(dsub, "list", "list protected domains", cmd_domain_list, json_flag=True)
    p = sub(dsub, "show", "show one domain's settings and queue", cmd_domain_show, json_flag=True)
    p.add_argument("name", metavar="NAME")
    p = sub(dsub, "update", "change a domain's settings", cmd_domain_update)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--relay", metavar="HOST[:PORT]", help="new primary mail server")
    p.add_argument("--mode", choices=DELIVERY_MODES, help="new delivery mode")
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

    sub(commands, "status", "summary of the store and the queue", cmd_status, json_flag=True)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_config(getattr(args, "config", None))
        ctx = Context(settings, out)
    except (ConfigError, StrataError) as e:
        sys.stderr.write(
            f"strata: invalid configuration: {e}\n"
            if isinstance(e, ConfigError)
            else f"strata: {e}\n"
        )
        return 2
    try:
        args.func(ctx, args)
    except CommandError as e:
        sys.stderr.write(f"strata: {e}\n")
        return 1
    except StrataError as e:
        sys.stderr.write(f"strata: {e}\n")
        return 1
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
