"""``strata dkim generate|show``: the DKIM keys that sign outbound mail (core/admin/dkim.py).
The private key is never printed; only the TXT record to publish is shown."""

from __future__ import annotations

import argparse

from strata_twisted.cli.commands._args import domain_arg, usage
from strata_twisted.cli.context import CommandError, Context
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import dkim as ops
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.dkim import ALGORITHMS, DkimKey, dns_record, record_name, zone_line
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import display_domain


def _domain(text: str) -> str:
    return domain_arg(text)


def _publish(ctx: Context, domain: str, key: DkimKey) -> None:
    ctx.print(f"Publish this TXT record in the DNS zone of {display_domain(domain)}:")
    ctx.print()
    ctx.print(zone_line(key, domain))
    ctx.print()
    ctx.print(f"name:  {record_name(key, domain)}")
    ctx.print(f"value: {dns_record(key)}")


def _not_protected(text: str) -> CommandError:
    return CommandError(f"{text} is not a protected domain (see: strata domain list)")


def cmd_dkim_generate(ctx: Context, args: argparse.Namespace) -> None:
    name = _domain(args.domain)
    try:
        view = ctx.run(
            ops.generate_dkim(
                ctx.admin, ctx.caller, name, args.selector, args.algorithm, args.replace
            )
        )
    except InvalidInput as e:
        raise usage(e) from None
    except NotFound:
        raise _not_protected(args.domain) from None
    except AlreadyExists as e:
        raise CommandError(
            f"{display_domain(name)} already has a DKIM key with selector {e.name}; nothing "
            "changed (choose another --selector, or --replace it)"
        ) from None
    key = view.key
    assert key is not None
    shown = display_domain(name)
    verb = "replaced" if view.replaced else "generated"
    ctx.print(
        f"{shown}: {verb} {key.algorithm} key {key.selector}; outbound mail is signed with it"
    )
    ctx.print("from now on (it verifies once the record below is published).")
    ctx.print()
    _publish(ctx, name, key)


def cmd_dkim_show(ctx: Context, args: argparse.Namespace) -> None:
    name = _domain(args.domain)
    try:
        view = ctx.run(ops.show_dkim(ctx.admin, ctx.caller, name))
    except NotFound:
        raise _not_protected(args.domain) from None
    if args.json:
        ctx.emit_json(view.as_json())
        return
    if view.key is None:
        ctx.print(
            f"{display_domain(name)} has no DKIM key: its outbound mail is not signed "
            f"(make one: strata dkim generate {name})"
        )
        return
    ctx.print(f"active selector: {view.key.selector} ({view.key.algorithm})")
    ctx.print()
    _publish(ctx, name, view.key)


def register(commands: Subparsers) -> None:
    ksub = group(
        commands,
        "dkim",
        "DKIM keys that sign outbound mail",
        "Manage the DKIM keys that sign the outbound mail of protected domains: make a key, "
        "and show the DNS TXT record to publish for it.",
    )
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
