"""
``strata user import|add|passwd|remove|list`` and ``strata user alias add|remove|list``
(core/admin/users.py).

Synced credentials (DESIGN decision 8): only hashes reach the store, and no password or hash is
ever printed or put in an event; errors name lines and addresses, never a field.  Passwords are
read from the terminal (typed twice) or, for scripts, from the first line of stdin
(``--password-stdin``).  Send-as aliases are the addresses submission lets a user send as
besides their own; a running server sees a change within ``storage.reload_interval``.
"""

from __future__ import annotations

import argparse
import sys

from strata_twisted.cli.commands._args import domain_arg, read_password
from strata_twisted.cli.context import CommandError, Context, UsageError
from strata_twisted.cli.registry import COMMON, Subparsers, group, sub
from strata_twisted.core.admin import users as ops
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.credentials import SCHEMES
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import display_domain


def cmd_user_import(ctx: Context, args: argparse.Namespace) -> None:
    name = domain_arg(args.domain)
    # The domain first: a mistyped domain is the likelier mistake, and says so before the file.
    ctx.run(ctx.admin.tenancy.domain(ctx.caller, name))
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as e:
        raise CommandError(f"cannot read {args.file}: {e.strerror or e}") from None
    try:
        done = ctx.run(ops.import_users(ctx.admin, ctx.caller, name, data, merge=args.merge))
    except InvalidInput as e:
        if e.field != "passwd_file":
            raise
        if e.details:
            lines = "\n".join(f"  {args.file}: {error}" for error in e.details)
            raise CommandError(
                f"{len(e.details)} bad line(s) in {args.file}; nothing imported:\n{lines}"
            ) from None
        raise CommandError(
            f"{args.file} lists no users; nothing imported (to drop a user: strata user remove)"
        ) from None
    mode = "merged" if args.merge else "replaced"
    shown = display_domain(done.domain)
    ctx.print(f"{shown}: {done.users} users {mode}: {ops.change_text(done.change)}")


def cmd_user_add(ctx: Context, args: argparse.Namespace) -> None:
    try:
        address = ctx.run(ops.check_new_user(ctx.admin, ctx.caller, args.address))
    except AlreadyExists as e:
        raise CommandError(
            f"{e.name} already exists (to change its password: strata user passwd)"
        ) from None
    password = read_password(args, address)
    added = ctx.run(ops.add_user(ctx.admin, ctx.caller, address, password, args.scheme))
    ctx.print(f"added {added.address} ({added.scheme})")


def cmd_user_passwd(ctx: Context, args: argparse.Namespace) -> None:
    try:
        address = ctx.run(ops.check_user(ctx.admin, ctx.caller, args.address))
    except NotFound as e:
        raise CommandError(f"{e} (to add it: strata user add)") from None
    password = read_password(args, address)
    changed = ctx.run(ops.set_password(ctx.admin, ctx.caller, address, password, args.scheme))
    ctx.print(f"changed the password of {changed.address} ({changed.scheme})")


def cmd_user_remove(ctx: Context, args: argparse.Namespace) -> None:
    removed = ctx.run(ops.remove_user(ctx.admin, ctx.caller, args.address))
    ctx.print(f"removed {removed.address}")
    if not removed.users_left:
        ctx.print(
            f"{display_domain(removed.domain)} has no synced users left: intake accepts every "
            "address"
        )


def cmd_user_list(ctx: Context, args: argparse.Namespace) -> None:
    name = domain_arg(args.domain)
    users = ctx.run(ops.list_users(ctx.admin, ctx.caller, name))
    if args.json:
        ctx.emit_json([{"address": u.address, "scheme": u.scheme} for u in users])
        return
    if not users:
        ctx.print(
            f"no synced users for {display_domain(name)}: intake accepts every address "
            f"(import some: strata user import {name} FILE)"
        )
        return
    ctx.table([["ADDRESS", "SCHEME"], *([u.address, u.scheme] for u in users)])


def _synced(ctx: Context, text: str) -> str:
    try:
        return ctx.run(ops.check_user(ctx.admin, ctx.caller, text))
    except NotFound as e:
        domain = e.name.rpartition("@")[2]
        raise CommandError(f"{e} (see: strata user list {domain})") from None


def cmd_user_alias_add(ctx: Context, args: argparse.Namespace) -> None:
    user = _synced(ctx, args.user)
    try:
        change = ctx.run(ops.add_alias(ctx.admin, ctx.caller, args.alias, user))
    except InvalidInput as e:
        raise UsageError(e.message) from None
    if not change.changed:
        ctx.print(f"{change.user} may already send as {change.alias}")
        return
    before = change.previous_user
    moved = f" (it was {before}'s)" if before is not None else ""
    ctx.print(f"{change.user} may now send as {change.alias}{moved}")


def cmd_user_alias_remove(ctx: Context, args: argparse.Namespace) -> None:
    try:
        change = ctx.run(ops.remove_alias(ctx.admin, ctx.caller, args.alias))
    except NotFound as e:
        raise CommandError(f"{e} (see: strata user alias list)") from None
    ctx.print(f"{change.user} may no longer send as {change.alias}")


def cmd_user_alias_list(ctx: Context, args: argparse.Namespace) -> None:
    user = None if args.user is None else _synced(ctx, args.user)
    pairs = ctx.run(ops.list_aliases(ctx.admin, ctx.caller, user))
    if args.json:
        ctx.emit_json([{"alias": alias, "user": owner} for alias, owner in pairs])
        return
    if not pairs:
        whose = f" for {user}" if user is not None else ""
        ctx.print(f"no send-as aliases{whose} (add one: strata user alias add ALIAS USER)")
        return
    ctx.table([["ALIAS", "USER"], *([alias, owner] for alias, owner in pairs)])


def register(commands: Subparsers) -> None:
    usub = group(
        commands,
        "user",
        "synced users (password hashes for IMAP and webmail logins)",
        "Manage the users of protected domains: their password hashes, never passwords.  A "
        "domain with users gets 550 5.1.1 for unknown addresses at intake (unless it is set "
        "--accept-unknown).",
    )
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
            default=ops.DEFAULT_SCHEME,
            help=f"hash scheme (default: {ops.DEFAULT_SCHEME})",
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
        parents=[COMMON],
        description="Let a synced user send (submission: MAIL FROM, From:, Sender:) as another "
        "address besides their own: one in their domain (sales@) or in any other.  An alias "
        "belongs to one user; it goes when its user is removed.",
    )
    asub = alias.add_subparsers(dest="alias_action", metavar="ACTION", required=True)
    p = sub(
        asub,
        "add",
        "let USER send as ALIAS (an alias of another user moves to this one)",
        cmd_user_alias_add,
    )
    p.add_argument("alias", metavar="ALIAS", help="the address to send as (any domain)")
    p.add_argument("user", metavar="USER", help="a synced user, user@domain")
    p = sub(asub, "remove", "stop anybody sending as ALIAS", cmd_user_alias_remove)
    p.add_argument("alias", metavar="ALIAS", help="a send-as alias")
    p = sub(
        asub,
        "list",
        "list send-as aliases and their users",
        cmd_user_alias_list,
        json_flag=True,
    )
    p.add_argument("user", metavar="USER", nargs="?", help="only this user's aliases")
