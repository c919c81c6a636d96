"""
``strata reseller add|list|update|logo|remove`` and ``strata customer add|list|remove``: the
tenants (core/admin/tenants.py, core/admin/branding.py).  Operator → resellers → customers →
domains; a customer added without ``--reseller`` is the operator's own.  Removing one that still
has something under it fails and says what.  A reseller's host names are ``--hostname``
(repeated; the list given replaces the old one), its logo ``strata reseller logo NAME FILE``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from strata_twisted.cli.context import Context, UsageError
from strata_twisted.cli.output import when
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import branding as branding_ops
from strata_twisted.core.admin import tenants as ops

# Every text field of a brand is an option of its own; the host names are --hostname (repeated).
_BRANDING_OPTIONS = tuple(
    (name, "--" + name.replace("_", "-"))
    for name in ops.BRANDING_FIELDS
    if name != ops.HOSTNAMES_FIELD
)


def _branding(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {
        name: getattr(args, name)
        for name, _ in _BRANDING_OPTIONS
        if getattr(args, name) is not None
    }
    if args.hostname is not None or getattr(args, "no_hostnames", False):
        values[ops.HOSTNAMES_FIELD] = list(args.hostname or [])
    return values


def cmd_reseller_add(ctx: Context, args: argparse.Namespace) -> None:
    added = ctx.run(ops.add_reseller(ctx.admin, ctx.caller, args.name, _branding(args)))
    ctx.print(f"added reseller {added.name}")


def cmd_reseller_list(ctx: Context, args: argparse.Namespace) -> None:
    resellers = ctx.run(ops.list_resellers(ctx.admin, ctx.caller))
    if args.json:
        ctx.emit_json([r.as_json() for r in resellers])
        return
    if not resellers:
        ctx.print("no resellers (add one: strata reseller add NAME)")
        return
    rows = [["RESELLER", "PRODUCT NAME", "ADDED"]]
    rows += [[r.name, r.branding.product_name or "-", when(r.created_at)] for r in resellers]
    ctx.table(rows)


def cmd_reseller_update(ctx: Context, args: argparse.Namespace) -> None:
    updated = ctx.run(ops.update_reseller(ctx.admin, ctx.caller, args.name, _branding(args)))
    ctx.print(f"updated the branding of reseller {updated.name}")


def cmd_reseller_logo(ctx: Context, args: argparse.Namespace) -> None:
    if args.clear:
        had = ctx.run(branding_ops.clear_reseller_logo(ctx.admin, ctx.caller, args.name))
        ctx.print(f"removed the logo of reseller {args.name}" if had else "it had no logo")
        return
    if args.file is None:
        raise UsageError("give the image FILE (PNG, JPEG, GIF or WebP), or --clear")
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
    logo = ctx.run(branding_ops.set_reseller_logo(ctx.admin, ctx.caller, args.name, data))
    ctx.print(f"stored the logo of reseller {args.name} ({logo.content_type}, {len(data)} bytes)")


def cmd_reseller_remove(ctx: Context, args: argparse.Namespace) -> None:
    removed = ctx.run(ops.remove_reseller(ctx.admin, ctx.caller, args.name))
    ctx.print(f"removed reseller {removed.name}")


def cmd_customer_add(ctx: Context, args: argparse.Namespace) -> None:
    added = ctx.run(ops.add_customer(ctx.admin, ctx.caller, args.name, args.reseller))
    under = f"reseller {added.reseller}" if added.reseller else "the operator"
    ctx.print(f"added customer {added.name}, under {under}")


def cmd_customer_list(ctx: Context, args: argparse.Namespace) -> None:
    customers = ctx.run(ops.list_customers(ctx.admin, ctx.caller, args.reseller))
    if args.json:
        ctx.emit_json([c.as_json() for c in customers])
        return
    if not customers:
        ctx.print("no customers (add one: strata customer add NAME [--reseller R])")
        return
    rows = [["CUSTOMER", "RESELLER", "ADDED"]]
    rows += [[c.name, c.reseller or "-", when(c.created_at)] for c in customers]
    ctx.table(rows)


def cmd_customer_remove(ctx: Context, args: argparse.Namespace) -> None:
    removed = ctx.run(ops.remove_customer(ctx.admin, ctx.caller, args.name))
    ctx.print(f"removed customer {removed.name}")


def _branding_options(p: argparse.ArgumentParser) -> None:
    for name, option in _BRANDING_OPTIONS:
        p.add_argument(
            option, dest=name, metavar="TEXT", help=f"branding: {name.replace('_', ' ')}"
        )
    p.add_argument(
        "--hostname",
        action="append",
        metavar="HOST",
        help="a host name its webmail and panel are served under (repeat for more; "
        "replaces the list)",
    )


def register(commands: Subparsers) -> None:
    rsub = group(
        commands,
        "reseller",
        "resellers (MSPs) and their branding",
        "Manage resellers: the MSPs whose customers Strata protects, under their own brand.",
    )
    p = sub(rsub, "add", "add a reseller", cmd_reseller_add)
    p.add_argument("name", metavar="NAME", help="a-z, 0-9, '.', '_', '-'")
    _branding_options(p)
    sub(rsub, "list", "list resellers", cmd_reseller_list, json_flag=True)
    p = sub(rsub, "update", "change a reseller's branding", cmd_reseller_update)
    p.add_argument("name", metavar="NAME")
    _branding_options(p)
    p.add_argument("--no-hostnames", action="store_true", help="remove every host name")
    p = sub(rsub, "logo", "upload (or --clear) a reseller's logo", cmd_reseller_logo)
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", nargs="?", help="PNG, JPEG, GIF or WebP, 256 KiB")
    p.add_argument("--clear", action="store_true", help="remove the uploaded logo")
    p = sub(
        rsub, "remove", "remove a reseller that has no customers or accounts", cmd_reseller_remove
    )
    p.add_argument("name", metavar="NAME")

    csub = group(
        commands,
        "customer",
        "customers: the businesses whose domains Strata protects",
        "Manage customers: each belongs to a reseller or directly to the operator, and owns "
        "domains (strata domain add NAME --customer C).",
    )
    p = sub(csub, "add", "add a customer", cmd_customer_add)
    p.add_argument("name", metavar="NAME", help="a-z, 0-9, '.', '_', '-'")
    p.add_argument("--reseller", metavar="R", help="its reseller (default: the operator's own)")
    p = sub(csub, "list", "list customers", cmd_customer_list, json_flag=True)
    p.add_argument("--reseller", metavar="R", help="only this reseller's customers")
    p = sub(
        csub, "remove", "remove a customer that has no domains or accounts", cmd_customer_remove
    )
    p.add_argument("name", metavar="NAME")
