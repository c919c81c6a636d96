# -*- test-case-name: tests.test_core_admin_auth -*-
"""
API keys (#13): created for an admin account with a scope, an optional expiry and optional
source networks; shown once; stored as the SHA-256 of their secret part; revoked by id.

A key reads ``strata_<id>_<secret>``: ``id`` is 12 lower-case base32 characters (public: it is
how lists and revocation name the key), ``secret`` 32 random bytes in URL-safe base64.  The
prefix lets secret scanners (GitHub's, gitleaks) recognise a leaked key.  A 256-bit secret
cannot be guessed, so a fast hash stores it safely (as GitHub does for its tokens) and a
request costs no argon2 run.

Never log or audit a key's secret; the id is fine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from typing import Final

from strata_twisted.core.admin.auth import Unauthorized, caller_for
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import VIA_API, Caller, require
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import SCOPES, AdminAccount, ApiKey, Scope

KEY_PREFIX: Final = "strata_"
ID_LENGTH: Final = 12
SECRET_BYTES: Final = 32
MAX_EXPIRES_DAYS: Final = 3650
MAX_ALLOW_IP: Final = 100

INVALID_KEY: Final = "invalid API key"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _new_id() -> str:
    # 60 random bits: unique enough for a public name, and a retry on the rare clash.
    return base64.b32encode(secrets.token_bytes(8)).decode("ascii").lower()[:ID_LENGTH]


def secret_hash(secret: str) -> str:
    """What is stored of a key's secret part."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a key in the ``strata_<id>_<secret>`` form, else None."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = text[len(KEY_PREFIX) :].partition("_")
    if (
        not sep
        or len(key_id) != ID_LENGTH
        or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in key_id)
        or not 32 <= len(secret) <= 128
    ):
        return None
    return key_id, secret


def _network(text: str) -> Network:
    """A CIDR network as the key stores it; an IPv4-mapped IPv6 one becomes its IPv4 network,
    since clients' mapped addresses are compared as IPv4."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)
    return network


def check_allow_ip(cidrs: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The networks of ``allow_ip``, normalised (``10.1.2.3/8`` → ``10.0.0.0/8``), else
    L{InvalidInput} naming the bad one."""
    if isinstance(cidrs, str) or not isinstance(cidrs, (list, tuple)):
        raise InvalidInput("allow_ip", "allow_ip must be a list of networks (CIDR)")
    if len(cidrs) > MAX_ALLOW_IP:
        raise InvalidInput("allow_ip", f"allow_ip may list at most {MAX_ALLOW_IP} networks")
    found: list[str] = []
    for cidr in cidrs:
        try:
            if not isinstance(cidr, str):
                raise ValueError
            text = str(_network(cidr))
        except ValueError:
            raise InvalidInput("allow_ip", f"not a network (CIDR): {cidr!r}") from None
        if text not in found:
            found.append(text)
    return tuple(found)


def address_allowed(client_ip: str, allow_ip: tuple[str, ...]) -> bool:
    """Whether ``client_ip`` lies in one of ``allow_ip`` (empty: anywhere); an IPv4-mapped IPv6
    address (``::ffff:192.0.2.1``, from a dual-stack listener) counts as its IPv4 address."""
    if not allow_ip:
        return True
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for cidr in allow_ip:
        try:
            if ip in _network(cidr):
                return True
        except ValueError:
            continue
    return False


async def _visible_account(ctx: AdminContext, caller: Caller, name: str) -> AdminAccount:
    account = await ctx.admins.get_admin(name)
    if account is None or not await ctx.tenancy.sees_account(caller, account):
        raise NotFound("admin", name)
    return account


async def create_api_key(
    ctx: AdminContext,
    caller: Caller,
    admin: str,
    scope: Scope,
    *,
    expires_days: int | None = None,
    allow_ip: list[str] | tuple[str, ...] = (),
) -> tuple[str, ApiKey]:
    """
    A new key for account ``admin``: (the full key, shown once; the stored L{ApiKey}).
    The caller needs scope "admin" and must see the account.  ``scope`` bounds what the key
    may do; an account's own power is "admin" within its tenant (sessions have it), and the
    key acts as that account, so its tenancy bounds the key too.
    """
    require(caller, "admin")
    account = await _visible_account(ctx, caller, admin)
    if scope not in SCOPES:
        raise InvalidInput("scope", f"scope must be one of {', '.join(SCOPES)}")
    expires_at: float | None = None
    if expires_days is not None:
        if (
            isinstance(expires_days, bool)
            or not isinstance(expires_days, int)
            or not 1 <= expires_days <= MAX_EXPIRES_DAYS
        ):
            raise InvalidInput(
                "expires_days", f"expires_days must be a whole number from 1 to {MAX_EXPIRES_DAYS}"
            )
        expires_at = ctx.clock.seconds() + expires_days * 86400.0
    networks = check_allow_ip(allow_ip)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")
    for attempt in range(5):
        key_id = _new_id()
        try:
            stored: ApiKey = await ctx.admins.add_api_key(
                ApiKey(
                    id=key_id,
                    admin=account.name,
                    scope=scope,
                    secret_hash=secret_hash(secret),
                    expires_at=expires_at,
                    allow_ip=networks,
                )
            )
        except AlreadyExists:
            if attempt == 4:
                raise
            continue
        break
    await ctx.auditor.record(
        caller,
        "api_key.create",
        stored.id,
        await ctx.tenancy.account_owner(account),
        {
            "admin": account.name,
            "scope": scope,
            "expires_at": expires_at,
            "allow_ip": list(networks),
        },
    )
    return f"{KEY_PREFIX}{stored.id}_{secret}", stored


async def list_api_keys(
    ctx: AdminContext, caller: Caller, admin: str | None = None
) -> list[ApiKey]:
    """The keys of the accounts ``caller`` sees (only ``admin``'s when given), oldest first."""
    require(caller, "read")
    if admin is not None:
        await _visible_account(ctx, caller, admin)
        keys: list[ApiKey] = await ctx.admins.list_api_keys(admin)
        return keys
    seen: dict[str, bool] = {}
    found: list[ApiKey] = []
    for key in await ctx.admins.list_api_keys():
        if key.admin not in seen:
            account = await ctx.admins.get_admin(key.admin)
            seen[key.admin] = account is not None and await ctx.tenancy.sees_account(
                caller, account
            )
        if seen[key.admin]:
            found.append(key)
    return found


async def revoke_api_key(ctx: AdminContext, caller: Caller, key_id: str) -> None:
    """Revoke a key of an account ``caller`` sees (L{NotFound} for any other)."""
    require(caller, "admin")
    key = await ctx.admins.get_api_key(key_id) if isinstance(key_id, str) else None
    account = await ctx.admins.get_admin(key.admin) if key is not None else None
    if key is None or account is None or not await ctx.tenancy.sees_account(caller, account):
        raise NotFound("api key", str(key_id))
    await ctx.admins.remove_api_key(key.id)
    await ctx.auditor.record(
        caller,
        "api_key.revoke",
        key.id,
        await ctx.tenancy.account_owner(account),
        {"admin": account.name, "scope": key.scope},
    )


async def authenticate_key(ctx: AdminContext, bearer_text: str, client_ip: str) -> Caller:
    """
    The caller a request's key (the ``Authorization: Bearer`` value, with or without the
    ``Bearer`` word) stands for, from ``client_ip``; L{Unauthorized} if it is malformed,
    unknown, has the wrong secret, has expired, is not allowed from ``client_ip``, or its
    account is gone.  Only a holder of the right secret learns that it expired or is not
    allowed from there; everyone else gets "invalid API key".
    """
    text = bearer_text.strip() if isinstance(bearer_text, str) else ""
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    parsed = parse_key(text)
    if parsed is None:
        raise Unauthorized(INVALID_KEY, reason="malformed key")
    key_id, secret = parsed
    key = await ctx.admins.get_api_key(key_id)
    if key is None:
        raise Unauthorized(INVALID_KEY, reason="unknown key")
    if not hmac.compare_digest(secret_hash(secret), key.secret_hash):
        raise Unauthorized(INVALID_KEY, reason="wrong secret")
    now = ctx.clock.seconds()
    if key.expires_at is not None and now >= key.expires_at:
        raise Unauthorized("API key expired", reason="expired")
    if not address_allowed(client_ip, key.allow_ip):
        raise Unauthorized("API key not allowed from this address", reason="address not allowed")
    account = await ctx.admins.get_admin(key.admin)
    if account is None:
        raise Unauthorized(INVALID_KEY, reason="account removed")
    await ctx.admins.touch_api_key(key.id, now)
    return await caller_for(ctx, account, scope=key.scope, via=VIA_API, source=client_ip)
