"""
Synced users and their send-as aliases, for admins (#13, DESIGN decision 8).

Only password hashes reach the store; no password and no hash is ever returned, put in an event
or in the audit log.  A user belongs to its address's domain, so a non-operator manages only the
users of its domains; an alias belongs to its user.  Reading needs scope ``read``; every change
``admin``.  Hashing a password is CPU work of a few milliseconds (its scheme's cost).
"""

from __future__ import annotations

from dataclasses import dataclass

from strata_twisted.core.admin._common import domain_name, user_address
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.core.credentials import (
    CredentialError,
    PasswdFileError,
    PasswordHash,
    hash_password,
    parse_passwd_file,
)
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import (
    InvalidPasswordHash,
    NoSuchUser,
    UserCredential,
    UserListChange,
    check_password_hash_text,
    display_domain,
)

DEFAULT_SCHEME = "SHA512-CRYPT"


async def _user_owner(ctx: AdminContext, caller: Caller, domain: str) -> Owner:
    """The owner of ``domain``'s users; L{NotFound} when ``caller`` may not see the domain.
    The operator may manage users of a domain no longer protected."""
    if caller.is_operator:
        found = await ctx.domains.get_domain(domain)
        return await ctx.tenancy.domain_owner(found) if found is not None else Owner()
    return await ctx.tenancy.domain_owner(await ctx.tenancy.domain(caller, domain))


def _no_user(address: str) -> NotFound:
    return NotFound("user", address, f"{address} is not a synced user")


async def list_users(ctx: AdminContext, caller: Caller, domain: str) -> list[UserCredential]:
    """A protected domain's users, sorted by address (their hashes stay inside: use only
    ``address`` and ``scheme``)."""
    found = await ctx.tenancy.domain(caller, domain_name(domain, "domain"))
    require(caller, "read")
    users: list[UserCredential] = await ctx.credentials.list_users(found.name)
    return users


async def check_new_user(ctx: AdminContext, caller: Caller, address: str) -> str:
    """The canonical address if L{add_user} may add it (its domain protected and seen, no such
    user yet), else the error L{add_user} would raise: a layer checks this before it asks
    someone for a password."""
    canonical, domain = user_address(address)
    await ctx.tenancy.domain(caller, domain)
    require(caller, "admin")
    if await ctx.credentials.get_user(canonical) is not None:
        raise AlreadyExists("user", canonical)
    return canonical


async def check_user(ctx: AdminContext, caller: Caller, address: str) -> str:
    """The canonical address of a synced user ``caller`` may manage, else L{NotFound}."""
    canonical, domain = user_address(address)
    await _user_owner(ctx, caller, domain)
    if await ctx.credentials.get_user(canonical) is None:
        raise _no_user(canonical)
    return canonical


async def _stored(
    ctx: AdminContext, password: str | None, password_hash: str | None, scheme: str
) -> tuple[str, str]:
    """The hash to store and its scheme, from a password (hashed on ``ctx.cpu``: Dovecot's
    default cost takes a good part of a second) or a ready hash (exactly one)."""
    if (password is None) == (password_hash is None):
        raise InvalidInput("password", "give a password or a password hash")
    if password is not None:
        if not password:
            raise InvalidInput("password", "empty password")
        try:
            stored: PasswordHash = await ctx.cpu.run(lambda: hash_password(password, scheme))
        except CredentialError as e:
            raise InvalidInput("scheme", str(e)) from None
        return stored.text, stored.scheme
    assert password_hash is not None
    try:
        text = check_password_hash_text(password_hash)
    except InvalidPasswordHash:
        raise InvalidInput("password_hash", "not a storable {SCHEME}hash") from None
    return text, text[1 : text.index("}")]


@dataclass(frozen=True)
class UserChange:
    address: str
    domain: str
    scheme: str


async def add_user(
    ctx: AdminContext,
    caller: Caller,
    address: str,
    password: str | None = None,
    scheme: str = DEFAULT_SCHEME,
    password_hash: str | None = None,
) -> UserChange:
    """Add a synced user with ``password`` (hashed with ``scheme``) or a ready ``password_hash``;
    L{AlreadyExists} if there is one."""
    canonical = await check_new_user(ctx, caller, address)
    return await _store_user(
        ctx, caller, canonical, password, scheme, password_hash,
        "user.added", f"added user {canonical}", "user.add",
    )  # fmt: skip


async def set_password(
    ctx: AdminContext,
    caller: Caller,
    address: str,
    password: str | None = None,
    scheme: str = DEFAULT_SCHEME,
    password_hash: str | None = None,
) -> UserChange:
    """Change a synced user's password (or hash); L{NotFound} if there is no such user."""
    canonical = await check_user(ctx, caller, address)
    require(caller, "admin")
    return await _store_user(
        ctx, caller, canonical, password, scheme, password_hash,
        "user.password_changed", f"changed the password of {canonical}", "user.passwd",
    )  # fmt: skip


async def _store_user(
    ctx: AdminContext,
    caller: Caller,
    canonical: str,
    password: str | None,
    scheme: str,
    password_hash: str | None,
    event_kind: str,
    event_text: str,
    action: str,
) -> UserChange:
    """Store a checked user's hash, then record the event and the audit record (scheme only:
    never the password or its hash)."""
    domain = user_address(canonical)[1]
    text, used = await _stored(ctx, password, password_hash, scheme)
    await ctx.credentials.set_user(canonical, text)
    await ctx.events.record_event(
        event_kind, event_text, domain, {"address": canonical, "scheme": used}
    )
    owner = await _user_owner(ctx, caller, domain)
    await ctx.auditor.record(caller, action, canonical, owner, {"scheme": used})
    return UserChange(canonical, domain, used)


@dataclass(frozen=True)
class UserRemoved:
    address: str
    domain: str
    users_left: bool  # False: the domain has no list any more, so intake accepts every address


async def remove_user(ctx: AdminContext, caller: Caller, address: str) -> UserRemoved:
    canonical, domain = user_address(address)
    owner = await _user_owner(ctx, caller, domain)
    require(caller, "admin")
    try:
        await ctx.credentials.remove_user(canonical)
    except NoSuchUser:
        raise _no_user(canonical) from None
    await ctx.events.record_event(
        "user.removed", f"removed user {canonical}", domain, {"address": canonical}
    )
    await ctx.auditor.record(caller, "user.remove", canonical, owner)
    left: bool = await ctx.credentials.has_user_list(domain)
    return UserRemoved(canonical, domain, left)


@dataclass(frozen=True)
class UserImport:
    domain: str
    users: int
    merged: bool
    change: UserListChange


def change_text(change: UserListChange) -> str:
    return (
        f"{change.added} added, {change.updated} updated, {change.removed} removed, "
        f"{change.unchanged} unchanged"
    )


async def import_users(
    ctx: AdminContext, caller: Caller, domain: str, data: bytes, merge: bool = False
) -> UserImport:
    """
    Load a Dovecot passwd-file (``user@domain:{SCHEME}hash``) as ``domain``'s users: replace
    the list atomically, or (``merge``) add and update, keeping the others.  A file with bad
    lines imports nothing: L{InvalidInput} ``passwd_file`` with each bad line in ``details``
    (line numbers and addresses, never a hash).
    """
    found = await ctx.tenancy.domain(caller, domain_name(domain, "domain"))
    require(caller, "admin")
    try:
        parsed = parse_passwd_file(data, found.name)
    except PasswdFileError as e:
        raise InvalidInput(
            "passwd_file",
            f"{len(e.errors)} bad line(s); nothing imported",
            tuple(str(error) for error in e.errors),
        ) from None
    if not parsed:
        raise InvalidInput("passwd_file", "lists no users; nothing imported")
    users = [UserCredential(address, stored.text) for address, stored in parsed]
    if merge:
        change: UserListChange = await ctx.credentials.merge_users(found.name, users)
    else:
        change = await ctx.credentials.replace_users(found.name, users)
    mode = "merged" if merge else "replaced"
    counts = {
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
        "unchanged": change.unchanged,
    }
    shown = display_domain(found.name)
    await ctx.events.record_event(
        "users.imported",
        f"{mode} the users of {shown}: {change_text(change)}",
        found.name,
        {"mode": mode, **counts},
    )
    owner = await ctx.tenancy.domain_owner(found)
    await ctx.auditor.record(caller, "users.import", found.name, owner, {"mode": mode, **counts})
    return UserImport(found.name, len(users), merge, change)


# -- send-as aliases -------------------------------------------------------------------------


async def _alias_owner(ctx: AdminContext, alias: str) -> str | None:
    pairs: list[tuple[str, str]] = await ctx.credentials.list_aliases()
    return next((user for a, user in pairs if a == alias), None)


async def _sees_user(ctx: AdminContext, caller: Caller, user: str) -> bool:
    if caller.is_operator:
        return True
    names = await ctx.tenancy.domain_names(caller) or ()
    return user_address(user)[1] in names


@dataclass(frozen=True)
class AliasChange:
    alias: str
    user: str
    previous_user: str | None  # whose alias it was before (None: nobody's)
    changed: bool  # False: it was this user's already


async def add_alias(ctx: AdminContext, caller: Caller, alias: str, user: str) -> AliasChange:
    """Let ``user`` send as ``alias`` (any address); an alias of another user moves to this
    one, unless that user is another tenant's (L{AlreadyExists}: an alias is one address for
    the whole installation)."""
    canonical_alias = user_address(alias, "alias")[0]
    canonical_user = await check_user(ctx, caller, user)
    domain = user_address(canonical_user)[1]
    require(caller, "admin")
    if canonical_alias == canonical_user:
        raise InvalidInput(
            "alias", f"{canonical_alias} is the user's own address: it needs no alias"
        )
    before = await _alias_owner(ctx, canonical_alias)
    if before == canonical_user:
        return AliasChange(canonical_alias, canonical_user, before, False)
    if before is not None and not await _sees_user(ctx, caller, before):
        raise AlreadyExists("alias", canonical_alias)
    try:
        await ctx.credentials.add_alias(canonical_alias, canonical_user)
    except NoSuchUser:  # removed since we looked
        raise _no_user(canonical_user) from None
    moved = f" (it was {before}'s)" if before is not None else ""
    await ctx.events.record_event(
        "user.alias_added",
        f"{canonical_user} may send as {canonical_alias}{moved}",
        domain,
        {"alias": canonical_alias, "user": canonical_user, "previous_user": before},
    )
    owner = await _user_owner(ctx, caller, domain)
    await ctx.auditor.record(
        caller,
        "alias.add",
        canonical_alias,
        owner,
        {"user": canonical_user, "previous_user": before},
    )
    return AliasChange(canonical_alias, canonical_user, before, True)


async def remove_alias(ctx: AdminContext, caller: Caller, alias: str) -> AliasChange:
    """Stop anybody sending as ``alias``; L{NotFound} if it is not one (that ``caller`` sees)."""
    canonical = user_address(alias, "alias")[0]
    owner_user = await _alias_owner(ctx, canonical)
    if owner_user is None or not await _sees_user(ctx, caller, owner_user):
        raise NotFound("alias", canonical, f"{canonical} is not a send-as alias")
    require(caller, "admin")
    if not await ctx.credentials.remove_alias(canonical):
        raise NotFound("alias", canonical, f"{canonical} is not a send-as alias")
    domain = user_address(owner_user)[1]
    await ctx.events.record_event(
        "user.alias_removed",
        f"{owner_user} may no longer send as {canonical}",
        domain,
        {"alias": canonical, "user": owner_user},
    )
    owner = await _user_owner(ctx, caller, domain)
    await ctx.auditor.record(caller, "alias.remove", canonical, owner, {"user": owner_user})
    return AliasChange(canonical, owner_user, owner_user, True)


async def list_aliases(
    ctx: AdminContext, caller: Caller, user: str | None = None
) -> list[tuple[str, str]]:
    """``(alias, user)`` pairs sorted by alias: ``user``'s (a synced user), or every one of
    the users ``caller`` may see."""
    canonical = None if user is None else await check_user(ctx, caller, user)
    require(caller, "read")
    pairs: list[tuple[str, str]] = await ctx.credentials.list_aliases(canonical)
    if caller.is_operator or canonical is not None:
        return pairs
    names = await ctx.tenancy.domain_names(caller) or ()
    return [(a, u) for a, u in pairs if user_address(u)[1] in names]
