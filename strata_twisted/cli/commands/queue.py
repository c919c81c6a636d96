"""
``strata queue list|show|hold|release|delete|bounce|flush`` (core/admin/queue.py).

Queue changes need no request to a running server: the relay reads entry states from the store
before every batch.  ``queue flush`` and ``queue release`` leave a flush request for it, which it
acts on within a second; with no server running none is made (a server skips the requests made
before it started): ``flush`` fails saying so, ``release`` releases and says the entries go when
a server starts.
"""

from __future__ import annotations

import argparse
import sys

from strata_twisted.cli.commands._args import domain_arg
from strata_twisted.cli.context import CommandError, Context
from strata_twisted.cli.output import age, printable, when
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import queue as ops
from strata_twisted.core.admin.errors import Conflict
from strata_twisted.errors import NotFound
from strata_twisted.fired import result_of
from strata_twisted.model import DELIVERED, HELD, QUEUED, QueueEntry, QueueFilter, display_domain

_PAGE = 1000


def cmd_queue_list(ctx: Context, args: argparse.Namespace) -> None:
    domain = domain_arg(args.domain) if args.domain else None
    query = QueueFilter(domains=(domain,) if domain else None)
    entries: list[QueueEntry] = []
    cursor: str | None = None
    while True:
        page = ctx.run(ops.list_queue(ctx.admin, ctx.caller, query, cursor, _PAGE))
        entries.extend(page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
    if domain is not None and result_of(ctx.admin.domains.get_domain(domain)) is None:
        # A typo, most likely; but mail can be queued for a domain we do not protect (outbound
        # mail, DSNs, mail kept from when it was protected), so list it all the same.
        note = f"{display_domain(domain)} is not a protected domain (see: strata domain list)" + (
            "; listing what is queued for it all the same" if entries else ""
        )
        if args.json:  # the JSON document stays clean
            sys.stderr.write(f"strata: note: {printable(note)}\n")
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
            [e.id, when(e.received_at), e.state, str(e.size), e.sender or "<>", e.recipient]
        )
    ctx.table(rows)
    ctx.print(f"\n{len(entries)} {'entry' if len(entries) == 1 else 'entries'}")


def _no_entry(text: str) -> CommandError:
    return CommandError(f"no queue entry or message {text} (see: strata queue list)")


def cmd_queue_show(ctx: Context, args: argparse.Namespace) -> None:
    try:
        shown = ctx.run(ops.show_queue(ctx.admin, ctx.caller, args.id))
    except NotFound:
        raise _no_entry(args.id) from None
    if args.json:
        ctx.emit_json(shown.as_json())
        return
    message = shown.message
    ctx.print(f"queue id:   {message.id}")
    ctx.print(
        f"received:   {when(message.received_at)} from {message.envelope.client_helo} "
        f"[{message.envelope.client_address}]"
    )
    ctx.print(f"sender:     <{message.envelope.sender}>")
    ctx.print(f"size:       {message.size}")
    ctx.print(f"message-id: {message.header_message_id or '-'}")
    now = ctx.clock.seconds()
    for e in shown.entries:
        ctx.print(f"entry:      {e.id} <{e.recipient}> {_entry_state(e, now)}")
    ctx.print("")
    ctx.write(printable(shown.headers.decode("utf-8", "replace").replace("\r\n", "\n")))


def _entry_state(e: QueueEntry, now: float) -> str:
    """An entry's state, and when it was delivered or is tried next, for people."""
    text = f"{e.state}, {e.attempts} attempt{'' if e.attempts == 1 else 's'}"
    if e.state == DELIVERED and e.delivered_at is not None:
        text += f", delivered {when(e.delivered_at)}: {e.delivery_reply or '-'}"
    elif e.state == QUEUED:
        due = e.next_attempt_at
        text += (
            f", next attempt {when(due)} (in {age(due - now)})"
            if due > now
            else ", due: the relay's next run tries it"
        )
    if e.state != DELIVERED and e.last_error:
        text += f", last error: {e.last_error}"
    return text


def _move(ctx: Context, args: argparse.Namespace, action: ops.QueueAction) -> ops.ActionReport:
    """Apply ``action`` to the entry or message ``args.id`` names, or to every entry of
    ``--domain`` it applies to; print each entry changed or skipped (never an empty change)."""
    move = ops.MOVES[action]
    entry_id: str | None = getattr(args, "id", None)
    domain = None if entry_id else domain_arg(args.domain)
    try:
        if entry_id:
            report = ctx.run(ops.queue_action(ctx.admin, ctx.caller, action, ids=[entry_id]))
        else:
            assert domain is not None
            query = QueueFilter(domains=(domain,))
            report = ctx.run(ops.queue_action(ctx.admin, ctx.caller, action, query=query))
    except NotFound:
        assert entry_id is not None
        raise _no_entry(entry_id) from None
    states = " or ".join(move.from_states)
    if domain is not None and not report.changed and not report.skipped:
        raise CommandError(
            f"nothing to {move.verb}: {display_domain(domain)} has no {states} entries"
        )
    skipped = {s.entry.id: s for s in report.skipped}
    changed = {c.after.id: c for c in report.changed}
    # In the order they were selected: the skipped and the changed interleave as they came.
    for entry_id_ in _order(report):
        if entry_id_ in skipped:
            s = skipped[entry_id_]
            ctx.print(
                f"{s.entry.id} <{s.entry.recipient}>: skipped, it is {s.state} "
                f"(only a {states} entry can be {move.past})"
            )
        else:
            after = changed[entry_id_].after
            ctx.print(f"{after.id} <{after.recipient}>: {move.past}")
    if not report.changed:
        raise CommandError(f"nothing to {move.verb}: no entry was in a state that allows it")
    if report.skipped:
        ctx.print(f"{len(report.changed)} {move.past}, {len(report.skipped)} skipped")
    return report


def _order(report: ops.ActionReport) -> list[str]:
    ids = [c.before for c in report.changed] + [s.entry for s in report.skipped]
    return [e.id for e in sorted(ids, key=lambda e: e.seq)]


def cmd_queue_hold(ctx: Context, args: argparse.Namespace) -> None:
    _move(ctx, args, "hold")


def cmd_queue_release(ctx: Context, args: argparse.Namespace) -> None:
    report = _move(ctx, args, "release")
    if not report.server_running:
        # Released all the same: a server sends due mail as soon as it starts.
        ctx.print(
            f"released entries are due now; {ops.no_server(ctx.admin)}: they go when one starts"
        )
        return
    ctx.print("released entries are due now; a running Strata tries them within a second")


def cmd_queue_delete(ctx: Context, args: argparse.Namespace) -> None:
    _move(ctx, args, "delete")


def cmd_queue_bounce(ctx: Context, args: argparse.Namespace) -> None:
    # Each entry's last_error becomes the DSN's diagnostic, so the reply that caused a review
    # stays on the entry too; the operation records the events (one per message).
    report = _move(ctx, args, "bounce")
    for outcome in report.dsns:
        if outcome.error is not None:
            raise CommandError(outcome.error)
        if outcome.dsn is not None:
            ctx.print(f"{outcome.message_id}: DSN {outcome.dsn} queued to <{outcome.sender}>")
        else:
            ctx.print(f"{outcome.message_id}: no DSN ({outcome.reason})")


def cmd_queue_flush(ctx: Context, args: argparse.Namespace) -> None:
    domain = domain_arg(args.domain) if args.domain else None
    try:
        result = ctx.run(ops.flush_queue(ctx.admin, ctx.caller, domain))
    except NotFound as e:
        raise CommandError(f"{e} (see: strata domain list)") from None
    except Conflict as e:
        raise CommandError(str(e)) from None
    scope = f"{display_domain(domain)}'s queue" if domain else "the queue"
    ids = ", ".join(str(i) for i in result.request_ids)
    ctx.print(
        f"flush of {scope} requested (request {ids}, {result.queued} queued); "
        "a running Strata drains it within a second"
    )
    if result.held:
        ctx.print(f"{result.held} held entries stay held (see: strata queue release)")


def register(commands: Subparsers) -> None:
    qsub = group(
        commands,
        "queue",
        "the relay queue",
        "Inspect the queue of mail waiting for the primaries.",
    )
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
