"""
``strata reseller add|list|remove`` and ``strata customer add|list|remove``: the tenants
(core/admin/tenants.py).  Operator → resellers → customers → domains; a customer added without
``--reseller`` is the operator's own.  Removing one that still has something under it fails
and says what.
"""

from __future__ import annotations

import argparse

from strata_twisted.cli.context import Context
from strata_twisted.cli.output import when
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import tenants as ops

_BRANDING_OPTIONS = tuple((name, "--" + name.replace("_", "-")) for name in ops.BRANDING_FIELDS)


def _branding(args: argparse.Namespace) -> dict[str, object]:
    return {
        name: getattr(args, name)
        for name, _ in _BRANDING_OPTIONS
        if getattr(args, name) is not None
    }


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
