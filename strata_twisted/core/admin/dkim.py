"""
DKIM keys that sign a domain's outbound mail, for admins (#13; keys: core/dkim.py).  The private
key never leaves the keyring: results carry the key for its public half and TXT record only, and
no event or audit record names more than its selector and algorithm.  Showing needs ``read``;
generating ``admin``.  Generating an RSA key and writing it are blocking work (tens of
milliseconds): the server runs it off the reactor thread when it calls this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.dkim import (
    ALGORITHMS,
    Algorithm,
    DkimKey,
    DkimKeyExists,
    DkimKeyring,
    InvalidSelector,
    check_selector,
    dns_record,
    record_name,
)
from strata_twisted.errors import AlreadyExists
from strata_twisted.model import display_domain


@dataclass(frozen=True)
class DkimView:
    """A domain's active key (None: it has none, so its mail is not signed)."""

    domain: str
    key: DkimKey | None
    replaced: bool = False

    def as_json(self) -> dict[str, Any]:
        key = self.key
        return {
            "domain": self.domain,
            "selector": key.selector if key else None,
            "algorithm": key.algorithm if key else None,
            "name": record_name(key, self.domain) if key else None,
            "record": dns_record(key) if key else None,
        }


def _keyring(ctx: AdminContext) -> DkimKeyring:
    return DkimKeyring(ctx.settings.data_dir)


def default_selector(ctx: AdminContext) -> str:
    """``s2026-11``: the month the key was made, so the next rotation gets a new name."""
    return time.strftime("s%Y-%m", time.localtime(ctx.clock.seconds()))


async def show_dkim(ctx: AdminContext, caller: Caller, domain: str) -> DkimView:
    found = await ctx.tenancy.domain(caller, domain_name(domain, "domain"))
    require(caller, "read")
    return DkimView(found.name, _keyring(ctx).active(found.name))


async def generate_dkim(
    ctx: AdminContext,
    caller: Caller,
    domain: str,
    selector: str | None = None,
    algorithm: str = "rsa",
    replace: bool = False,
) -> DkimView:
    """Make a new key and make it the one that signs the domain's mail from now on.  A selector
    in use: L{AlreadyExists}, unless ``replace``."""
    try:
        chosen = check_selector(selector) if selector is not None else None
    except InvalidSelector as e:
        raise InvalidInput("selector", str(e)) from None
    if algorithm not in ALGORITHMS:
        raise InvalidInput("algorithm", f"expected one of {', '.join(ALGORITHMS)}")
    found = await ctx.tenancy.domain(caller, domain_name(domain, "domain"))
    require(caller, "admin")
    chosen = chosen or default_selector(ctx)
    algo: Algorithm = "rsa" if algorithm == "rsa" else "ed25519"
    try:
        # An RSA key takes a noticeable fraction of a second to make: off the reactor thread.
        key: DkimKey = await ctx.cpu.run(
            lambda: _keyring(ctx).generate(found.name, chosen, algo, replace=replace)
        )
    except DkimKeyExists:
        raise AlreadyExists("dkim key", chosen) from None
    verb = "replaced" if replace else "generated"
    shown = display_domain(found.name)
    detail = {"selector": chosen, "algorithm": key.algorithm, "replaced": bool(replace)}
    await ctx.events.record_event(
        "dkim.key_generated",
        f"{verb} the {key.algorithm} DKIM key {chosen} of {shown}; it signs from now on",
        found.name,
        detail,
    )
    owner = await ctx.tenancy.domain_owner(found)
    await ctx.auditor.record(caller, "dkim.generate", found.name, owner, detail)
    return DkimView(found.name, key, replace)
