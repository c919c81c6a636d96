# -*- test-case-name: tests.test_core_admin_auth -*-
"""
Who an admin request comes from: passwords (argon2id), the TOTP second factor and its recovery
codes, the login check with its throttle, and the browser sessions with their CSRF tokens (#13).

What this module must never do: keep or log a password, a TOTP code, a recovery code or a
session id in clear (sessions are keyed by a hash of their id); run argon2 on the reactor thread
(L{Passwords} hands it to an executor); refuse the right password because a stranger failed
(the throttle only delays).  Every failed login answers the same L{Unauthorized}, whether the
account exists or not; only L{SecondFactorRequired}, told to whoever gave the right password,
says more.

API keys are in L{strata_twisted.core.admin.apikeys}; the account operations that use these
pieces in L{strata_twisted.core.admin.accounts}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pyotp.exceptions import OTPVerificationError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from strata_twisted.clock import SecondsClock
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import VIA_PANEL, Caller
from strata_twisted.core.metrics import NO_METRICS, MetricsRecorder
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.errors import StrataError
from strata_twisted.executor import Executor, SyncExecutor
from strata_twisted.model import AdminAccount, InvalidName, Scope, check_tenant_name

MIN_PASSWORD_LENGTH: Final = 10
"""The shortest admin password accepted (NIST SP 800-63B asks at least 8)."""

MAX_PASSWORD_LENGTH: Final = 1024
"""The longest: argon2 hashes any length, but a megabyte "password" is only a way to waste
CPU."""

TOTP_DIGITS: Final = 6
TOTP_ISSUER: Final = "Strata"
RECOVERY_CODES: Final = 10
"""Recovery codes issued when TOTP is turned on, each usable once."""

MAX_SESSIONS: Final = 10_000
"""Browser sessions kept at most; past it the least recently used ends (a login flood cannot
exhaust memory)."""

_TRACKED: Final = 10_000  # TOTP steps and spent recovery codes remembered, at most


class Unauthorized(StrataError):
    """
    No valid credentials.  ``message`` is what the client may be told; ``reason`` (unknown
    account, wrong password, expired key, ...) is for the log only.
    """

    def __init__(self, message: str = "invalid credentials", *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or message


class SecondFactorRequired(Unauthorized):
    """The password was right and the account has TOTP: ask for the code (a login form shows
    its second step).  Only the right password gets this answer."""

    def __init__(self) -> None:
        super().__init__("a TOTP code or recovery code is required", reason="second factor")


# -- passwords -------------------------------------------------------------------------------


def check_new_password(password: str) -> str:
    """``password`` if it may become an admin password, else L{InvalidInput} (``password``)."""
    if not isinstance(password, str):
        raise InvalidInput("password", "the password must be a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            "password", f"the password needs at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            "password", f"the password may have at most {MAX_PASSWORD_LENGTH} characters"
        )
    if "\x00" in password:
        raise InvalidInput("password", "the password may not contain NUL characters")
    return password


class Passwords:
    """
    argon2id hashes of admin passwords (argon2-cffi's defaults: RFC 9106's second recommended
    profile, 64 MiB, 3 passes).  A check costs about 50 ms of CPU, so every hash and check runs
    on ``executor``: in the server a thread (never the reactor), in the CLI a L{SyncExecutor}.
    """

    def __init__(
        self, executor: Executor | None = None, hasher: PasswordHasher | None = None
    ) -> None:
        self.executor: Executor = executor if executor is not None else SyncExecutor()
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """The PHC string of ``password`` (no policy check: L{check_new_password} does that)."""
        hashed: str = await self.executor.run(lambda: self.hasher.hash(password))
        return hashed

    async def verify(self, stored: str | None, password: str) -> bool:
        """
        Whether ``password`` matches ``stored``.  ``stored`` None (no such account) still costs
        one argon2 check, against a hash of a random text, so that the time taken does not tell
        whether an account exists.
        """
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            password = ""  # checked all the same (timing), never matches below

        def check() -> bool:
            target = stored
            if target is None:
                if self._dummy is None:
                    self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
                target = self._dummy
            try:
                matched: bool = self.hasher.verify(target, password)
            except (VerificationError, InvalidHashError):
                return False
            return matched and stored is not None and password != ""

        ok: bool = await self.executor.run(check)
        return ok

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than the hasher's now."""
        try:
            return bool(self.hasher.check_needs_rehash(stored))
        except InvalidHashError:
            return False


# -- TOTP and recovery codes -----------------------------------------------------------------

_BASE32_SECRET = re.compile(r"[A-Z2-7]{32,128}\Z")


def new_totp_secret() -> str:
    """A fresh TOTP secret: 160 random bits in base32 (RFC 4226 §4 recommends 160)."""
    return pyotp.random_base32(32)


def check_totp_secret(secret: str) -> str:
    """``secret`` (upper-cased, spaces removed) if it is a base32 secret of at least 160 bits,
    else L{InvalidInput} (``secret``)."""
    text = secret.replace(" ", "").upper() if isinstance(secret, str) else ""
    if _BASE32_SECRET.match(text) is None:
        raise InvalidInput("secret", "the TOTP secret must be 32 to 128 base32 characters")
    return text


def totp_uri(secret: str, account: str, issuer: str = TOTP_ISSUER) -> str:
    """The ``otpauth://`` URI an authenticator app reads (Google's Key URI Format)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def new_recovery_codes() -> list[str]:
    """L{RECOVERY_CODES} codes like ``abcd-efgh-ijkl-mnop``: 80 random bits each, so that a
    fast hash (L{recovery_hash}) is enough to store them, as for API keys."""
    codes = []
    for _ in range(RECOVERY_CODES):
        text = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
        codes.append("-".join(text[i : i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_hash(code: str) -> str:
    """What is stored of a recovery code: the SHA-256 of its letters (dashes, spaces and case
    do not matter when it is typed)."""
    letters = "".join(code.split()).replace("-", "").lower()
    return hashlib.sha256(letters.encode("utf-8", "replace")).hexdigest()


class TotpGuard:
    """
    Remembers, per account and secret, the last time step whose code was accepted, and the
    recovery codes spent, so that neither is accepted twice (RFC 6238 §5.2: "the verifier MUST
    NOT accept the second attempt of the OTP after the successful validation has been issued
    for the first OTP").  One per process; bounded to the most recent L{_TRACKED} entries.
    """

    def __init__(self) -> None:
        self._last_step: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._spent: OrderedDict[tuple[str, str], None] = OrderedDict()

    def check_code(self, account: str, secret: str, code: str, now: float) -> bool:
        """Whether ``code`` is ``secret``'s code for the step of ``now`` or one step either side
        (RFC 6238 §5.2's allowance for clock drift), and later than the last one accepted."""
        code = "".join(code.split()) if isinstance(code, str) else ""
        if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
            return False
        try:
            step = pyotp.TOTP(secret).verify_and_get_timecode(code, for_time=now, valid_window=1)
        except (OTPVerificationError, ValueError):
            return False
        key = (account, secret)
        last = self._last_step.get(key)
        if last is not None and step <= last:
            return False  # a replay, or an older code after a newer one
        self._last_step[key] = step
        self._last_step.move_to_end(key)
        while len(self._last_step) > _TRACKED:
            self._last_step.popitem(last=False)
        return True

    def claim_recovery(self, account: str, hashed: str) -> bool:
        """Mark a recovery code spent in this process; False if it already was (two logins
        racing to use one code before either has stored its removal)."""
        key = (account, hashed)
        if key in self._spent:
            return False
        self._spent[key] = None
        while len(self._spent) > _TRACKED:
            self._spent.popitem(last=False)
        return True


def check_second_factor(
    account: AdminAccount, code: str, guard: TotpGuard, now: float
) -> tuple[bool, AdminAccount | None]:
    """
    Check ``code``, a TOTP code or a recovery code, for ``account`` (which has TOTP on).
    Returns (accepted, the account without the spent recovery code to store, or None when no
    recovery code was used).
    """
    if account.totp_secret is None:
        return False, None
    if guard.check_code(account.name, account.totp_secret, code, now):
        return True, None
    hashed = recovery_hash(code) if isinstance(code, str) else ""
    matched = False
    for stored in account.recovery_codes:  # every one compared: no early exit to time
        matched |= hmac.compare_digest(stored, hashed)
    if not matched or not guard.claim_recovery(account.name, hashed):
        return False, None
    left = tuple(stored for stored in account.recovery_codes if stored != hashed)
    return True, replace(account, recovery_codes=left)


# -- callers ---------------------------------------------------------------------------------


async def caller_for(
    ctx: AdminContext,
    account: AdminAccount,
    *,
    scope: Scope = "admin",
    via: str = VIA_PANEL,
    source: str = "local",
) -> Caller:
    """The L{Caller} acting as ``account``: a customer admin's reseller is its customer's."""
    reseller = account.reseller
    if account.role == "customer":
        reseller = (await ctx.tenancy.customer_owner(account.customer)).reseller
    return Caller(
        name=account.name,
        role=account.role,
        reseller=reseller,
        customer=account.customer if account.role == "customer" else "",
        scope=scope,
        via=via,
        source=source,
    )


# -- login -----------------------------------------------------------------------------------


class AdminLogin:
    """
    Checks admin logins (the panel's form, the API's session login), one per process: it
    holds the throttle and the TOTP replay memory.

    The throttle is the IMAP listeners' L{LoginThrottle} (Dovecot's auth penalty), which is
    exactly the policy #13 asks for: each failure from an address for an account makes the
    next attempt of that pair wait longer (1, 2, 4 s ... up to ``max_delay``, the setting
    ``[admin] login_max_delay``); an address failing for many accounts, or an account failing
    from many addresses, slows down as a whole, except from the addresses the account logged
    in from lately; nothing ever refuses the right password.  A separate instance from the
    mail listeners', so that admin and mail logins do not slow each other.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        passwords: Passwords,
        *,
        max_delay: float = 15.0,
        guard: TotpGuard | None = None,
        metrics: MetricsRecorder = NO_METRICS,
    ) -> None:
        self.clock = clock
        self.passwords = passwords
        self.metrics = metrics
        self.throttle = LoginThrottle(clock, max_delay=max_delay)
        self.guard = guard if guard is not None else TotpGuard()

    async def authenticate_password(
        self,
        ctx: AdminContext,
        name: str,
        password: str,
        totp_code: str | None,
        client_ip: str,
        *,
        via: str = VIA_PANEL,
    ) -> Caller:
        """
        The caller logging in as ``name`` with ``password`` (and ``totp_code``, a TOTP or
        recovery code, when the account has a second factor) from ``client_ip``.  Raises
        L{Unauthorized} (one message for an unknown account, a wrong password, a wrong code)
        or L{SecondFactorRequired} (right password, TOTP on, no code given).
        """
        who = name.strip().lower()[:320] if isinstance(name, str) else ""
        waited = self.throttle.wait(client_ip, who)
        if waited > 0:
            await deferLater(self.clock, waited)
        account: AdminAccount | None = None
        try:
            check_tenant_name(who)
        except InvalidName:
            pass
        else:
            account = await ctx.admins.get_admin(who)
        ok = await self.passwords.verify(
            account.password_hash if account is not None else None, password
        )
        if not ok or account is None:
            reason = "unknown account" if account is None else "wrong password"
            self._failed(who, client_ip, reason, waited)
            raise Unauthorized(reason=reason)
        if account.totp_secret is not None:
            if not totp_code:
                raise SecondFactorRequired()  # neither a failure nor a success: no count
            account = await self._second_factor(ctx, account, totp_code, client_ip, waited, via)
        self.throttle.succeeded(client_ip, who)
        self.metrics.login("admin", "ok")
        if self.passwords.needs_rehash(account.password_hash):
            account = await self._rehash(ctx, account, password)
        return await caller_for(ctx, account, via=via, source=client_ip)

    async def authenticate_second_factor(
        self,
        ctx: AdminContext,
        name: str,
        totp_code: str,
        client_ip: str,
        *,
        via: str = VIA_PANEL,
    ) -> Caller:
        """
        The second step of a login in two pages (the panel's): ``name`` gave its right
        password moments ago (L{authenticate_password} raised L{SecondFactorRequired}, and the
        caller kept that in a L{PendingLogins}); now its TOTP or recovery code.  The same
        throttle, replay guard and errors as a one-step login.
        """
        who = name.strip().lower()[:320]
        waited = self.throttle.wait(client_ip, who)
        if waited > 0:
            await deferLater(self.clock, waited)
        account = await ctx.admins.get_admin(who)
        if account is None or account.totp_secret is None:
            # Removed, or its TOTP turned off, between the two pages: start again.
            raise Unauthorized(reason="second factor no longer pending")
        account = await self._second_factor(ctx, account, totp_code, client_ip, waited, via)
        self.throttle.succeeded(client_ip, who)
        self.metrics.login("admin", "ok")
        return await caller_for(ctx, account, via=via, source=client_ip)

    async def _second_factor(
        self,
        ctx: AdminContext,
        account: AdminAccount,
        code: str,
        client_ip: str,
        waited: float,
        via: str,
    ) -> AdminAccount:
        """``account`` after checking ``code`` (a recovery code is spent), or L{Unauthorized}."""
        accepted, spent = check_second_factor(account, code, self.guard, self.clock.seconds())
        if not accepted:
            self._failed(account.name, client_ip, "wrong second factor", waited)
            raise Unauthorized(reason="wrong second factor")
        if spent is not None:
            account = await self._spend_recovery(ctx, account, spent, client_ip, via)
        return account

    async def _spend_recovery(
        self,
        ctx: AdminContext,
        account: AdminAccount,
        spent: AdminAccount,
        client_ip: str,
        via: str,
    ) -> AdminAccount:
        # Re-read: the stored account may have changed while the password was checked.
        fresh = await ctx.admins.get_admin(account.name) or account
        left = tuple(c for c in fresh.recovery_codes if c in spent.recovery_codes)
        updated: AdminAccount = await ctx.admins.update_admin(replace(fresh, recovery_codes=left))
        caller = await caller_for(ctx, updated, via=via, source=client_ip)
        await ctx.auditor.record(
            caller,
            "admin.recovery_code_used",
            updated.name,
            await ctx.tenancy.account_owner(updated),
            {"left": len(left)},
        )
        return updated

    async def _rehash(
        self, ctx: AdminContext, account: AdminAccount, password: str
    ) -> AdminAccount:
        """Store the password hashed with today's parameters (argon2's check_needs_rehash)."""
        new_hash = await self.passwords.hash(password)
        fresh = await ctx.admins.get_admin(account.name)
        if fresh is None or fresh.password_hash != account.password_hash:
            return account  # changed meanwhile: leave the newer one alone
        updated: AdminAccount = await ctx.admins.update_admin(
            replace(fresh, password_hash=new_hash)
        )
        return updated

    def _failed(self, who: str, client_ip: str, reason: str, waited: float) -> None:
        self.throttle.failed(client_ip, who)
        self.metrics.login("admin", "throttled" if waited > 0 else "failed")
        self.log.info(
            "admin login failed for {user!r} from {client}: {reason}",
            user=who[:64], client=client_ip, reason=reason, waited=waited,
        )  # fmt: skip


# -- browser sessions ------------------------------------------------------------------------


class PendingLogins:
    """
    Logins half done: the password was right and the account wants its second factor on a
    page of its own.  A token (256 random bits, kept hashed) names the account for
    ``lifetime`` seconds and at most ``tries`` codes; nothing else is kept (never the
    password).  In memory, at most ``max_pending``: the oldest go first.
    """

    def __init__(
        self,
        clock: SecondsClock,
        *,
        lifetime: float = 300.0,
        tries: int = 5,
        max_pending: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self.tries = tries
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[str, float, int]] = OrderedDict()

    def begin(self, name: str) -> str:
        """A token for ``name``, whose password was just checked."""
        now = self._clock.seconds()
        for key, (_, started, _left) in list(self._pending.items()):
            if now - started < self.lifetime:
                break
            del self._pending[key]
        while len(self._pending) >= self.max_pending:
            self._pending.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._pending[_session_key(token)] = (name, now, self.tries)
        return token

    def name(self, token: str) -> str | None:
        """The account ``token`` stands for, counting one try; None once expired or spent."""
        if not isinstance(token, str) or not token:
            return None
        key = _session_key(token)
        found = self._pending.get(key)
        if found is None:
            return None
        name, started, left = found
        if self._clock.seconds() - started >= self.lifetime or left <= 0:
            del self._pending[key]
            return None
        self._pending[key] = (name, started, left - 1)
        return name

    def end(self, token: str) -> None:
        if isinstance(token, str):
            self._pending.pop(_session_key(token), None)


def password_stamp(account: AdminAccount) -> str:
    """What a session remembers of its account's password: it ends when this changes."""
    return hashlib.sha256(account.password_hash.encode("utf-8")).hexdigest()[:32]


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


@dataclass
class Session:
    """A logged-in browser.  ``stamp``: L{password_stamp} of the account at login."""

    caller: Caller
    csrf_token: str
    created_at: float
    last_used: float
    stamp: str


def check_csrf(session: Session, token: str | None) -> bool:
    """Whether ``token`` (the request's CSRF header or form field) is ``session``'s."""
    if not isinstance(token, str) or not token:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), token.encode("utf-8", "replace"))


class SessionStore:
    """
    The browser sessions of this process, in memory (a restart logs everyone out).

    Ids and CSRF tokens are 256 random bits; the store keys sessions by a hash of the id, so
    it never holds a cookie's value.  A session ends ``idle`` seconds after its last use
    (sliding), at logout (L{end}), or when L{resolve} finds its account removed or its password
    changed (also when that happened in another process: the CLI).  At most ``max_sessions``
    are kept; a new one past that ends the least recently used.
    """

    def __init__(
        self, clock: SecondsClock, idle: float, *, max_sessions: int = MAX_SESSIONS
    ) -> None:
        self._clock = clock
        self.idle = idle
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, caller: Caller, stamp: str) -> tuple[str, str]:
        """A new session for ``caller``: (session id for the cookie, CSRF token)."""
        now = self._clock.seconds()
        self._sweep(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self._sessions[_session_key(session_id)] = Session(caller, csrf, now, now, stamp)
        return session_id, csrf

    async def start(self, ctx: AdminContext, caller: Caller) -> tuple[str, str]:
        """L{create} for a caller that just logged in, stamped with its account's password."""
        account = await ctx.admins.get_admin(caller.name)
        if account is None:
            raise Unauthorized(reason="account removed")
        return self.create(caller, password_stamp(account))

    def lookup(self, session_id: str) -> Session | None:
        """The live session with this id (its idle time starts again), or None."""
        if not isinstance(session_id, str) or not session_id:
            return None
        key = _session_key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock.seconds()
        if now - session.last_used >= self.idle:
            del self._sessions[key]
            return None
        session.last_used = now
        self._sessions.move_to_end(key)
        return session

    async def resolve(self, ctx: AdminContext, session_id: str) -> Session | None:
        """L{lookup}, then end the session if its account is gone or has a new password:
        what the API calls on every request."""
        session = self.lookup(session_id)
        if session is None:
            return None
        account = await ctx.admins.get_admin(session.caller.name)
        if account is None or not hmac.compare_digest(password_stamp(account), session.stamp):
            self.end(session_id)
            return None
        return session

    def end(self, session_id: str) -> None:
        """Log out."""
        if isinstance(session_id, str):
            self._sessions.pop(_session_key(session_id), None)

    def end_account(self, name: str) -> int:
        """End every session of account ``name`` (removed, or its password changed); how many."""
        keys = [k for k, s in self._sessions.items() if s.caller.name == name]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def _sweep(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            key, oldest = next(iter(sessions.items()))
            if now - oldest.last_used < self.idle:
                break
            del sessions[key]
