"""
``strata admin add|passwd|list|remove|totp-reset`` and ``strata api-key create|list|revoke``:
the accounts of the admin panel and JSON API, and their keys (core/admin/accounts.py,
core/admin/apikeys.py).

The CLI acts as the local operator (L{cli_caller}), which is not an account itself: it sets any
account's password without knowing the old one, and turns off the second factor of an account
whose owner lost the phone, as an operator could in the panel.  Passwords are read like
``strata user``'s (typed twice, or ``--password-stdin``) and only their argon2id hashes are
stored.  An API key is printed once, at creation; only the SHA-256 of its secret is kept, so no
list shows it again.
"""

from __future__ import annotations

import argparse

from strata_twisted.cli.commands._args import read_password
from strata_twisted.cli.context import CommandError, Context, UsageError
from strata_twisted.cli.output import when
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import accounts as ops
from strata_twisted.core.admin import apikeys
from strata_twisted.core.admin.auth import Passwords, check_new_password
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.errors import NotFound
from strata_twisted.model import ROLES, SCOPES, AdminAccount, ApiKey, InvalidName, check_tenant_name


def _passwords() -> Passwords:
    """argon2id on a synchronous executor: the CLI has no reactor to keep responsive."""
    return Passwords()


def _account(ctx: Context, name: str) -> AdminAccount:
    try:
        return ctx.run(ops.show_admin(ctx.admin, ctx.caller, name))
    except NotFound:
        raise CommandError(f"no admin account {name!r} (see: strata admin list)") from None


def _tenant_text(account: AdminAccount) -> str:
    if account.role == "reseller":
        return f"reseller {account.reseller}"
    if account.role == "customer":
        return f"customer {account.customer}"
    return "-"


def _check_add(ctx: Context, args: argparse.Namespace) -> None:
    """What would make ``admin add`` fail, found before the password is typed twice for it.
    add_admin checks all of it again; these only say it in the CLI's terms, sooner."""
    try:
        check_tenant_name(args.name, "the account name")
    except InvalidName as e:
        raise UsageError(str(e)) from None
    wanted = args.role if args.role != "operator" else None  # the tenant option it needs
    for option in ("reseller", "customer"):
        if getattr(args, option) is not None and option != wanted:
            raise UsageError(f"--{option} does not go with --role {args.role}")
    if wanted is not None and getattr(args, wanted) is None:
        raise UsageError(f"--role {args.role} needs --{wanted} NAME")
    try:
        ctx.run(ops.show_admin(ctx.admin, ctx.caller, args.name))
    except NotFound:
        pass
    else:
        raise CommandError(
            f"admin account {args.name!r} exists already (to change its password: "
            f"strata admin passwd {args.name})"
        )
    try:
        if args.reseller is not None:
            ctx.run(ctx.admin.tenancy.reseller(ctx.caller, args.reseller))
        if args.customer is not None:
            ctx.run(ctx.admin.tenancy.customer(ctx.caller, args.customer))
    except NotFound as e:
        raise CommandError(f"{e} (see: strata {e.kind} list)") from None


def cmd_admin_add(ctx: Context, args: argparse.Namespace) -> None:
    _check_add(ctx, args)
    first = not ctx.run(ops.list_admins(ctx.admin, ctx.caller))
    password = read_password(args, f"admin account {args.name}", check_new_password)
    added = ctx.run(
        ops.add_admin(
            ctx.admin,
            ctx.caller,
            args.name,
            args.role,
            password,
            reseller=args.reseller or "",
            customer=args.customer or "",
            passwords=_passwords(),
        )
    )
    of = f" admin of {added.reseller or added.customer}" if added.role != "operator" else ""
    ctx.print(f"added admin account {added.name} ({added.role}{of})")
    if first:
        ctx.print(
            f"it is the first account: the server will not create {ops.BOOTSTRAP_NAME!r} at "
            "its first start"
            + ("" if added.role == "operator" else "; add an operator too (--role operator)")
        )


def cmd_admin_passwd(ctx: Context, args: argparse.Namespace) -> None:
    account = _account(ctx, args.name)
    password = read_password(args, f"admin account {account.name}", check_new_password)
    changed = ctx.run(
        ops.passwd(ctx.admin, ctx.caller, account.name, password, passwords=_passwords())
    )
    ctx.print(f"changed the password of {changed.name}; its panel sessions have ended")


def cmd_admin_list(ctx: Context, args: argparse.Namespace) -> None:
    accounts = ctx.run(ops.list_admins(ctx.admin, ctx.caller))
    if args.json:
        ctx.emit_json([a.as_json() for a in accounts])
        return
    if not accounts:
        ctx.print(
            f"no admin accounts: the server creates {ops.BOOTSTRAP_NAME!r} at its first start "
            "(or add one: strata admin add NAME --role operator)"
        )
        return
    rows = [["NAME", "ROLE", "TENANT", "TOTP", "ADDED"]]
    rows += [
        [
            a.name,
            a.role,
            _tenant_text(a),
            "on" if a.totp_secret is not None else "off",
            when(a.created_at),
        ]
        for a in accounts
    ]
    ctx.table(rows)


def cmd_admin_remove(ctx: Context, args: argparse.Namespace) -> None:
    account = _account(ctx, args.name)
    keys = ctx.run(apikeys.list_api_keys(ctx.admin, ctx.caller, account.name))
    try:
        ctx.run(ops.remove_admin(ctx.admin, ctx.caller, account.name))
    except InvalidInput as e:  # the last operator: the name is fine, the state refuses
        raise CommandError(f"{account.name}: {e.message}; nothing changed") from None
    revoked = f" and its {len(keys)} API key(s)" if keys else ""
    ctx.print(f"removed admin account {account.name}{revoked}")


def cmd_admin_totp_reset(ctx: Context, args: argparse.Namespace) -> None:
    account = _account(ctx, args.name)
    try:
        ctx.run(ops.disable_totp(ctx.admin, ctx.caller, account.name))
    except InvalidInput as e:  # TOTP was not on
        raise CommandError(f"{account.name}: {e.message}; nothing changed") from None
    ctx.print(
        f"turned off TOTP for {account.name} and dropped its recovery codes: it logs in with "
        "its password alone until it turns TOTP on again in the panel"
    )


def _key_scope_text(key: ApiKey) -> str:
    expires = f"expires {when(key.expires_at)}" if key.expires_at is not None else "no expiry"
    where = ", ".join(key.allow_ip) if key.allow_ip else "anywhere"
    return f"scope {key.scope}, {expires}, from {where}"


def cmd_key_create(ctx: Context, args: argparse.Namespace) -> None:
    try:
        key, stored = ctx.run(
            apikeys.create_api_key(
                ctx.admin,
                ctx.caller,
                args.admin,
                args.scope,
                expires_days=args.expires_days,
                allow_ip=args.allow_ip,
            )
        )
    except NotFound:
        raise CommandError(f"no admin account {args.admin!r} (see: strata admin list)") from None
    if args.json:
        ctx.emit_json({"key": key, **stored.as_json()})
        return
    ctx.print(f"created API key {stored.id} for {stored.admin} ({_key_scope_text(stored)}):")
    ctx.print(key)
    ctx.print("This is the only time the key is shown (only its hash is kept): store it now.")


def cmd_key_list(ctx: Context, args: argparse.Namespace) -> None:
    try:
        keys = ctx.run(apikeys.list_api_keys(ctx.admin, ctx.caller, args.admin))
    except NotFound:
        raise CommandError(f"no admin account {args.admin!r} (see: strata admin list)") from None
    if args.json:
        ctx.emit_json([k.as_json() for k in keys])
        return
    if not keys:
        whose = f" for {args.admin}" if args.admin is not None else ""
        ctx.print(
            f"no API keys{whose} (create one: strata api-key create --admin NAME --scope read)"
        )
        return
    now = ctx.clock.seconds()

    def expires(key: ApiKey) -> str:
        if key.expires_at is None:
            return "never"
        return when(key.expires_at) + (" (expired)" if now >= key.expires_at else "")

    rows = [["ID", "ADMIN", "SCOPE", "EXPIRES", "ALLOWED FROM", "LAST USED", "CREATED"]]
    rows += [
        [
            k.id,
            k.admin,
            k.scope,
            expires(k),
            ",".join(k.allow_ip) or "anywhere",
            when(k.last_used_at),
            when(k.created_at),
        ]
        for k in keys
    ]
    ctx.table(rows)


def cmd_key_revoke(ctx: Context, args: argparse.Namespace) -> None:
    try:
        ctx.run(apikeys.revoke_api_key(ctx.admin, ctx.caller, args.id))
    except NotFound:
        raise CommandError(f"no API key {args.id!r} (see: strata api-key list)") from None
    ctx.print(f"revoked API key {args.id}: it no longer authenticates")


def _password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )


def register(commands: Subparsers) -> None:
    asub = group(
        commands,
        "admin",
        "admin accounts of the panel and JSON API",
        "Manage admin accounts: operators see everything; a reseller's admins their reseller "
        "and its customers; a customer's admins their customer.  Only password hashes are "
        "stored.",
    )
    p = sub(asub, "add", "add an admin account, with a password typed twice", cmd_admin_add)
    p.add_argument("name", metavar="NAME", help="a-z, 0-9, '.', '_', '-'")
    p.add_argument("--role", required=True, choices=ROLES, help="what the account administers")
    tenant = p.add_mutually_exclusive_group()
    tenant.add_argument("--reseller", metavar="R", help="role reseller: the reseller it admins")
    tenant.add_argument("--customer", metavar="C", help="role customer: the customer it admins")
    _password_option(p)
    p = sub(
        asub,
        "passwd",
        "set an account's password (no current password needed here); its sessions end",
        cmd_admin_passwd,
    )
    p.add_argument("name", metavar="NAME")
    _password_option(p)
    sub(asub, "list", "list admin accounts", cmd_admin_list, json_flag=True)
    p = sub(
        asub,
        "remove",
        "remove an account and its API keys (never the last operator)",
        cmd_admin_remove,
    )
    p.add_argument("name", metavar="NAME")
    p = sub(
        asub,
        "totp-reset",
        "turn off an account's TOTP second factor (its owner lost the device and codes)",
        cmd_admin_totp_reset,
    )
    p.add_argument("name", metavar="NAME")

    ksub = group(
        commands,
        "api-key",
        "API keys for the JSON API",
        "Manage API keys: each acts as one admin account, bounded by a scope (read < operate "
        "< admin), an optional expiry and optional source networks.  A key is shown once, at "
        "creation; only a hash of it is stored.",
    )
    p = sub(ksub, "create", "create a key and print it (once)", cmd_key_create, json_flag=True)
    p.add_argument("--admin", required=True, metavar="NAME", help="the account the key acts as")
    p.add_argument("--scope", required=True, choices=SCOPES, help="what the key may do")
    p.add_argument(
        "--expires-days",
        type=int,
        metavar="N",
        help=f"expire after N days (1-{apikeys.MAX_EXPIRES_DAYS}; default: never)",
    )
    p.add_argument(
        "--allow-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept the key only from this network (repeatable; default: anywhere)",
    )
    p = sub(ksub, "list", "list keys (never their secrets)", cmd_key_list, json_flag=True)
    p.add_argument("--admin", metavar="NAME", help="only this account's keys")
    p = sub(ksub, "revoke", "revoke a key: it stops working at once", cmd_key_revoke)
    p.add_argument("id", metavar="ID", help="the key's id (strata api-key list)")
