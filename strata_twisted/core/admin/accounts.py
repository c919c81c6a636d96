# -*- test-case-name: tests.test_core_admin_auth -*-
"""
Admin accounts (#13): add, passwd, list, show, remove, the TOTP second factor, and the first
operator account of a new installation.

Who may do what:

- Every change needs scope "admin", except an account changing its own password, which needs
  its current password instead (a leaked session alone cannot take the account over).
- A caller sees and changes only the accounts of its tenant (L{Tenancy.sees_account}); any
  other is L{NotFound}.  Operators create any account; reseller admins reseller accounts of
  their reseller and customer accounts of its customers; customer admins customer accounts of
  their customer.  Only an operator creates an operator.
- Nobody removes their own account or the last operator account.
- TOTP is turned on by the account itself (it holds the authenticator); it is turned off by
  the account with a code or recovery code, or by an admin who could reset its password anyway
  (the way back for an admin who lost the phone and the codes).

Every change is audited; no password, hash, TOTP secret or code ever goes into a record.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from twisted.logger import Logger

from strata_twisted.core.admin.auth import (
    Passwords,
    TotpGuard,
    check_new_password,
    check_second_factor,
    check_totp_secret,
    new_recovery_codes,
    new_totp_secret,
    recovery_hash,
    totp_uri,
)
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.errors import NotFound
from strata_twisted.model import ROLES, AdminAccount, InvalidName, Role, check_tenant_name

BOOTSTRAP_NAME: Final = "admin"
# In the data directory: the first account's generated password (mode 0600).
ADMIN_PASSWORD_FILE: Final = "admin-password"  # noqa: S105 - a file name, not a password
BOOTSTRAP_CALLER: Final = Caller(name="strata", role="operator", via="server", source="local")
"""Who the audit log says created the first account: the server itself, at its first start."""


async def _visible(ctx: AdminContext, caller: Caller, name: str) -> AdminAccount:
    account = await ctx.admins.get_admin(name) if isinstance(name, str) else None
    if account is None or not await ctx.tenancy.sees_account(caller, account):
        raise NotFound("admin", str(name))
    return account


async def _own(ctx: AdminContext, caller: Caller) -> AdminAccount:
    """The caller's own account (the CLI's operator has none: L{NotFound})."""
    account = await ctx.admins.get_admin(caller.name)
    if account is None:
        raise NotFound("admin", caller.name)
    return account


def _name(name: str) -> str:
    try:
        return check_tenant_name(name, "the account name")
    except InvalidName as e:
        raise InvalidInput("name", str(e)) from None


async def add_admin(
    ctx: AdminContext,
    caller: Caller,
    name: str,
    role: Role,
    password: str,
    *,
    reseller: str = "",
    customer: str = "",
    passwords: Passwords,
) -> AdminAccount:
    """
    A new account ``name`` with ``role``: an operator (no tenant), a ``reseller``'s admin, or
    a ``customer``'s admin; the tenant must exist and be the caller's to see (L{NotFound}).
    """
    require(caller, "admin")
    name = _name(name)
    if role not in ROLES:
        raise InvalidInput("role", f"role must be one of {', '.join(ROLES)}")
    check_new_password(password)
    if role == "operator":
        if caller.role != "operator":
            raise InvalidInput("role", "only an operator may create an operator account")
        if reseller or customer:
            raise InvalidInput("role", "an operator account has no reseller or customer")
    elif role == "reseller":
        if customer:
            raise InvalidInput("customer", "a reseller account has no customer")
        if not reseller:
            raise InvalidInput("reseller", "a reseller account needs its reseller")
        await ctx.tenancy.reseller(caller, reseller)
    else:
        if reseller:
            raise InvalidInput("reseller", "a customer account has no reseller (its customer's)")
        if not customer:
            raise InvalidInput("customer", "a customer account needs its customer")
        await ctx.tenancy.customer(caller, customer)
    account = AdminAccount(
        name=name,
        role=role,
        password_hash=await passwords.hash(password),
        reseller=reseller if role == "reseller" else "",
        customer=customer if role == "customer" else "",
    )
    added: AdminAccount = await ctx.admins.add_admin(account)
    await ctx.auditor.record(
        caller,
        "admin.add",
        added.name,
        await ctx.tenancy.account_owner(added),
        {"role": role, "reseller": added.reseller, "customer": added.customer},
    )
    return added


async def passwd(
    ctx: AdminContext,
    caller: Caller,
    name: str,
    password: str,
    *,
    current_password: str | None = None,
    passwords: Passwords,
) -> AdminAccount:
    """
    Set ``name``'s password.  Your own: with ``current_password`` (any scope); another's:
    scope "admin" and an account you see.  The account's browser sessions end (they carry a
    stamp of the old password: L{SessionStore.resolve}), the caller's own included.
    """
    own = caller.name == name
    if own:
        account = await _own(ctx, caller)
        if current_password is None or not await passwords.verify(
            account.password_hash, current_password
        ):
            raise InvalidInput("current_password", "the current password is wrong")
    else:
        require(caller, "admin")
        account = await _visible(ctx, caller, name)
    check_new_password(password)
    new_hash = await passwords.hash(password)
    fresh = await ctx.admins.get_admin(account.name) or account
    updated: AdminAccount = await ctx.admins.update_admin(replace(fresh, password_hash=new_hash))
    await ctx.auditor.record(
        caller,
        "admin.passwd",
        updated.name,
        await ctx.tenancy.account_owner(updated),
        {"own": own},
    )
    return updated


async def list_admins(ctx: AdminContext, caller: Caller) -> list[AdminAccount]:
    """The accounts ``caller`` sees, sorted by name."""
    require(caller, "read")
    every: list[AdminAccount] = await ctx.admins.list_admins()
    return [a for a in every if await ctx.tenancy.sees_account(caller, a)]


async def show_admin(ctx: AdminContext, caller: Caller, name: str) -> AdminAccount:
    """One account ``caller`` sees (L{NotFound} for any other)."""
    require(caller, "read")
    return await _visible(ctx, caller, name)


async def remove_admin(ctx: AdminContext, caller: Caller, name: str) -> None:
    """Remove an account and its API keys; never your own, never the last operator."""
    require(caller, "admin")
    account = await _visible(ctx, caller, name)
    if account.name == caller.name:
        raise InvalidInput("name", "you cannot remove your own account")
    if account.role == "operator":
        operators = [a for a in await ctx.admins.list_admins() if a.role == "operator"]
        if len(operators) <= 1:
            raise InvalidInput("name", "the last operator account cannot be removed")
    owner = await ctx.tenancy.account_owner(account)
    await ctx.admins.remove_admin(account.name)
    await ctx.auditor.record(caller, "admin.remove", account.name, owner, {"role": account.role})


# -- TOTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TotpEnrolment:
    """A second factor about to be turned on: show ``uri`` (as a QR code) and ``secret``; it
    is active only once L{confirm_totp} got a code from the app."""

    secret: str
    uri: str


async def begin_totp(ctx: AdminContext, caller: Caller, *, issuer: str = "Strata") -> TotpEnrolment:
    """
    A new secret for the caller's own account, not stored yet: nothing changes until the
    caller confirms a code made with it (so a half-done enrolment cannot lock anybody out).
    The panel keeps the secret in its form and sends it back with the code.
    """
    require(caller, "admin")
    account = await _own(ctx, caller)
    if account.totp_secret is not None:
        raise InvalidInput("totp", "TOTP is already on; turn it off first")
    secret = new_totp_secret()
    return TotpEnrolment(secret, totp_uri(secret, account.name, issuer))


async def confirm_totp(
    ctx: AdminContext,
    caller: Caller,
    secret: str,
    code: str,
    *,
    guard: TotpGuard | None = None,
) -> list[str]:
    """
    Turn TOTP on for the caller's account with ``secret`` (from L{begin_totp}) once ``code``
    shows the app has it; returns the L{RECOVERY_CODES} recovery codes, shown this once (only
    their hashes are stored).
    """
    require(caller, "admin")
    account = await _own(ctx, caller)
    if account.totp_secret is not None:
        raise InvalidInput("totp", "TOTP is already on; turn it off first")
    secret = check_totp_secret(secret)
    checker = guard if guard is not None else TotpGuard()
    if not checker.check_code(account.name, secret, code, ctx.clock.seconds()):
        raise InvalidInput("code", "the code is wrong (is the device's clock right?)")
    codes = new_recovery_codes()
    updated: AdminAccount = await ctx.admins.update_admin(
        replace(
            account,
            totp_secret=secret,
            recovery_codes=tuple(recovery_hash(c) for c in codes),
        )
    )
    await ctx.auditor.record(
        caller, "admin.totp_on", updated.name, await ctx.tenancy.account_owner(updated)
    )
    return codes


async def disable_totp(
    ctx: AdminContext,
    caller: Caller,
    name: str,
    code: str | None = None,
    *,
    guard: TotpGuard | None = None,
) -> AdminAccount:
    """
    Turn TOTP off for ``name``: your own with a current code or an unused recovery code;
    another account you see (scope "admin") without one, since you could reset its password
    anyway.
    """
    require(caller, "admin")
    if caller.name == name:
        account = await _own(ctx, caller)
        if account.totp_secret is None:
            raise InvalidInput("totp", "TOTP is not on")
        checker = guard if guard is not None else TotpGuard()
        accepted, _ = check_second_factor(account, code or "", checker, ctx.clock.seconds())
        if not accepted:
            raise InvalidInput("code", "the code is wrong")
    else:
        account = await _visible(ctx, caller, name)
        if account.totp_secret is None:
            raise InvalidInput("totp", "TOTP is not on")
    updated: AdminAccount = await ctx.admins.update_admin(
        replace(account, totp_secret=None, recovery_codes=())
    )
    await ctx.auditor.record(
        caller,
        "admin.totp_off",
        updated.name,
        await ctx.tenancy.account_owner(updated),
        {"own": caller.name == name},
    )
    return updated


# -- the first account -----------------------------------------------------------------------


def _write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically: a temporary
    file created with O_EXCL and mode 0600, flushed to disk, then renamed over ``path``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def bootstrap_admin(
    ctx: AdminContext, path: Path, log: Logger, *, passwords: Passwords
) -> str | None:
    """
    On a first start (no admin account at all): create the operator account ``admin`` with a
    generated password, save the password to ``path`` (``<data_dir>/admin-password``, mode
    0600), log it once, and return it.  With any account present, do nothing (None).

    The file is written before the account is stored: a crash between the two leaves no
    account, so the next start writes a new file and creates it then.
    """
    if await ctx.admins.list_admins():
        return None
    password = secrets.token_urlsafe(24)  # 32 characters, 192 bits
    password_hash = await passwords.hash(password)
    _write_secret_file(path, password + "\n")
    added: AdminAccount = await ctx.admins.add_admin(
        AdminAccount(name=BOOTSTRAP_NAME, role="operator", password_hash=password_hash)
    )
    await ctx.auditor.record(
        BOOTSTRAP_CALLER,
        "admin.add",
        added.name,
        await ctx.tenancy.account_owner(added),
        {"role": "operator", "bootstrap": True},
    )
    log.warn(
        "created the operator account {name!r} with password {password} (saved in {path}); "
        "change it with 'strata admin passwd {name}'",
        name=BOOTSTRAP_NAME, password=password, path=str(path),
    )  # fmt: skip
    return password
