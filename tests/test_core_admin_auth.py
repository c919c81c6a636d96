"""
Admin authentication (#13 point 3) as plain calls on a MemoryStore and a task.Clock: accounts
and their tenancy, passwords (argon2id, rehashed when the parameters change), the first
operator account, TOTP with replay and recovery codes, API keys, the login throttle, and the
browser sessions with their CSRF tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyotp
import pytest
from argon2 import PasswordHasher
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.python.failure import Failure

from strata_twisted.config import Settings
from strata_twisted.core.admin import accounts, apikeys
from strata_twisted.core.admin.auth import (
    AdminLogin,
    Passwords,
    SecondFactorRequired,
    SessionStore,
    TotpGuard,
    Unauthorized,
    caller_for,
    check_csrf,
    check_second_factor,
)
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, InsufficientScope, cli_caller
from strata_twisted.core.metrics import NoMetrics
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import AdminAccount, Customer, Reseller, Scope
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import failure_of, result_of
from tests.imap_harness import CountingExecutor

T = TypeVar("T")
PASSWORD = "correct horse battery"  # noqa: S105 (a test account's)
OTHER = "staple of the horse"  # noqa: S105
START = 1_800_000_000.0


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    """argon2id with tiny costs, so that the tests run fast."""
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1)


def run(work: Coroutine[Any, Any, T] | Deferred[T]) -> T:
    """The result of an operation (or a store call) that fires at once."""
    return result_of(work if isinstance(work, Deferred) else Deferred.fromCoroutine(work))


def error(coro: Coroutine[Any, Any, Any]) -> BaseException:
    value = failure_of(Deferred.fromCoroutine(coro)).value
    assert isinstance(value, BaseException)
    return value


class World:
    """Resellers r1, r2; customers c1 (r1), c2 (r2), c0 (the operator's); an operator 'root'."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore(self.clock)
        s = self.store
        self.ctx = AdminContext(
            domains=s, queue=s, messages=s, events=s, monitor=s, control=s, credentials=s,
            tenants=s, admins=s, audit=s, series=s, clock=self.clock, settings=Settings(),
        )  # fmt: skip
        self.executor = CountingExecutor()
        self.passwords = Passwords(self.executor, cheap_hasher())
        self.cli = cli_caller()
        for r in ("r1", "r2"):
            run(s.add_reseller(Reseller(r)))
        run(s.add_customer(Customer("c1", "r1")))
        run(s.add_customer(Customer("c2", "r2")))
        run(s.add_customer(Customer("c0")))
        self.add("root", "operator")

    def add(
        self, name: str, role: Any, reseller: str = "", customer: str = "", by: Caller | None = None
    ) -> AdminAccount:
        return run(
            accounts.add_admin(
                self.ctx, by or self.cli, name, role, PASSWORD,
                reseller=reseller, customer=customer, passwords=self.passwords,
            )
        )  # fmt: skip

    def caller(self, name: str, scope: Scope = "admin") -> Caller:
        account = run(self.store.get_admin(name))
        assert account is not None
        return run(caller_for(self.ctx, account, scope=scope, source="192.0.2.9"))

    def account(self, name: str) -> AdminAccount | None:
        return run(self.store.get_admin(name))

    def audit(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in run(self.store.list_audit(limit=1000))]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def tenants(world: World) -> World:
    """Adds accounts: alice (r1 reseller), bob (r2 reseller), carol (c1), dave (c2), olga (c0)."""
    world.add("alice", "reseller", reseller="r1")
    world.add("bob", "reseller", reseller="r2")
    world.add("carol", "customer", customer="c1")
    world.add("dave", "customer", customer="c2")
    world.add("olga", "customer", customer="c0")
    return world


# -- passwords -------------------------------------------------------------------------------


def test_passwords_are_argon2id_and_run_on_the_executor(world: World) -> None:
    stored = world.account("root")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    before = world.executor.calls
    assert run(world.passwords.verify(stored.password_hash, PASSWORD))
    assert not run(world.passwords.verify(stored.password_hash, OTHER))
    # no account: still one argon2 run (timing), never a match
    assert not run(world.passwords.verify(None, PASSWORD))
    assert world.executor.calls == before + 3


def test_login_rehashes_when_parameters_change(world: World) -> None:
    old = world.account("root")
    assert old is not None and ",t=1," in old.password_hash
    stronger = Passwords(world.executor, cheap_hasher(time_cost=2))
    login = AdminLogin(world.clock, stronger)
    caller = run(login.authenticate_password(world.ctx, "root", PASSWORD, None, "192.0.2.1"))
    assert caller.name == "root"
    new = world.account("root")
    assert new is not None and ",t=2," in new.password_hash
    assert not stronger.needs_rehash(new.password_hash)
    run(login.authenticate_password(world.ctx, "root", PASSWORD, None, "192.0.2.1"))


# -- accounts --------------------------------------------------------------------------------


def test_add_checks_name_role_tenant_and_password(world: World) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Bad Name", "role": "operator"}, "name"),
        ({"name": "x", "role": "king"}, "role"),
        ({"name": "x", "role": "operator", "password": "short"}, "password"),
        ({"name": "x", "role": "reseller"}, "reseller"),
        ({"name": "x", "role": "customer"}, "customer"),
        ({"name": "x", "role": "operator", "reseller": "r1"}, "role"),
        ({"name": "x", "role": "customer", "customer": "c1", "reseller": "r1"}, "reseller"),
    ]
    for args, field in cases:
        e = error(
            accounts.add_admin(
                world.ctx, world.cli, args["name"], args["role"],
                args.get("password", PASSWORD), reseller=args.get("reseller", ""),
                customer=args.get("customer", ""), passwords=world.passwords,
            )
        )  # fmt: skip
        assert isinstance(e, InvalidInput), args
        assert e.field == field, args
    assert isinstance(
        error(
            accounts.add_admin(
                world.ctx, world.cli, "x", "reseller", PASSWORD, reseller="nope",
                passwords=world.passwords,
            )
        ),
        NotFound,
    )  # fmt: skip
    e = error(
        accounts.add_admin(
            world.ctx, world.cli, "root", "operator", PASSWORD, passwords=world.passwords
        )
    )
    assert isinstance(e, AlreadyExists)


def test_tenant_admins_create_accounts_within_their_tenant_only(tenants: World) -> None:
    w = tenants
    alice, carol = w.caller("alice"), w.caller("carol")
    assert w.add("alice2", "reseller", reseller="r1", by=alice).reseller == "r1"
    assert w.add("carol-r1", "customer", customer="c1", by=alice).customer == "c1"
    assert w.add("carol2", "customer", customer="c1", by=carol).customer == "c1"
    refused: list[tuple[Caller, Any, str, str]] = [
        (alice, "reseller", "r2", ""),  # another reseller
        (alice, "customer", "", "c2"),  # another reseller's customer
        (alice, "customer", "", "c0"),  # the operator's customer
        (carol, "customer", "", "c2"),
        (carol, "reseller", "r1", ""),  # a customer admin sees no reseller
    ]
    for caller, role, reseller, customer in refused:
        e = error(
            accounts.add_admin(
                w.ctx, caller, "intruder", role, PASSWORD, reseller=reseller, customer=customer,
                passwords=w.passwords,
            )
        )  # fmt: skip
        assert isinstance(e, NotFound), (caller.name, role, reseller, customer)
    e = error(accounts.add_admin(w.ctx, alice, "boss", "operator", PASSWORD, passwords=w.passwords))
    assert isinstance(e, InvalidInput) and e.field == "role"
    e = error(
        accounts.add_admin(
            w.ctx, w.caller("alice", "operate"), "x", "reseller", PASSWORD, reseller="r1",
            passwords=w.passwords,
        )
    )  # fmt: skip
    assert isinstance(e, InsufficientScope)
    assert w.account("intruder") is None and w.account("boss") is None


def test_list_and_show_only_what_the_caller_sees(tenants: World) -> None:
    w = tenants

    def names(caller: Caller) -> list[str]:
        return [a.name for a in run(accounts.list_admins(w.ctx, caller))]

    assert names(w.cli) == ["alice", "bob", "carol", "dave", "olga", "root"]
    assert names(w.caller("alice", "read")) == ["alice", "carol"]
    assert names(w.caller("bob")) == ["bob", "dave"]
    assert names(w.caller("carol")) == ["carol"]
    assert names(w.caller("olga")) == ["olga"]
    assert run(accounts.show_admin(w.ctx, w.caller("alice"), "carol")).customer == "c1"
    for name in ("bob", "dave", "root", "nobody"):
        assert isinstance(error(accounts.show_admin(w.ctx, w.caller("alice"), name)), NotFound)
    assert isinstance(error(accounts.show_admin(w.ctx, w.caller("carol"), "alice")), NotFound)


def test_remove_respects_tenancy_self_and_last_operator(tenants: World) -> None:
    w = tenants
    alice = w.caller("alice")
    for name in ("bob", "dave", "root", "olga"):
        assert isinstance(error(accounts.remove_admin(w.ctx, alice, name)), NotFound)
        assert w.account(name) is not None
    e = error(accounts.remove_admin(w.ctx, alice, "alice"))
    assert isinstance(e, InvalidInput) and w.account("alice") is not None
    e = error(accounts.remove_admin(w.ctx, w.cli, "root"))
    assert isinstance(e, InvalidInput) and "last operator" in str(e)
    assert isinstance(
        error(accounts.remove_admin(w.ctx, w.caller("alice", "operate"), "carol")),
        InsufficientScope,
    )
    run(accounts.remove_admin(w.ctx, alice, "carol"))
    assert w.account("carol") is None
    w.add("root2", "operator")
    run(accounts.remove_admin(w.ctx, w.caller("root2"), "root"))
    assert w.account("root") is None
    removes = [r for r in w.audit() if r["action"] == "admin.remove"]
    assert [(r["actor"], r["target"], r["customer"]) for r in removes] == [
        ("root2", "root", None),
        ("alice", "carol", "c1"),
    ]


def test_passwd_own_needs_current_password_others_need_admin_scope(tenants: World) -> None:
    w = tenants
    login = AdminLogin(w.clock, w.passwords)

    def logs_in(name: str, password: str) -> bool:
        d = Deferred.fromCoroutine(
            login.authenticate_password(w.ctx, name, password, None, "192.0.2.1")
        )
        w.clock.advance(60)  # past any throttle delay
        return not isinstance(failure_of(d).value, Unauthorized) if not d.called else True

    carol_key = w.caller("carol", "read")  # any scope for one's own password
    e = error(accounts.passwd(w.ctx, carol_key, "carol", OTHER, passwords=w.passwords))
    assert isinstance(e, InvalidInput) and e.field == "current_password"
    e = error(
        accounts.passwd(
            w.ctx, carol_key, "carol", OTHER, current_password=OTHER, passwords=w.passwords
        )
    )
    assert isinstance(e, InvalidInput) and e.field == "current_password"
    run(
        accounts.passwd(
            w.ctx, carol_key, "carol", OTHER, current_password=PASSWORD, passwords=w.passwords
        )
    )
    assert run(w.passwords.verify(w.account("carol").password_hash, OTHER))  # type: ignore[union-attr]
    # another's: scope admin, and visible
    e = error(
        accounts.passwd(
            w.ctx, w.caller("alice", "operate"), "carol", PASSWORD, passwords=w.passwords
        )
    )
    assert isinstance(e, InsufficientScope)
    e = error(accounts.passwd(w.ctx, w.caller("alice"), "dave", OTHER, passwords=w.passwords))
    assert isinstance(e, NotFound)
    assert run(w.passwords.verify(w.account("dave").password_hash, PASSWORD))  # type: ignore[union-attr]
    run(accounts.passwd(w.ctx, w.caller("alice"), "carol", PASSWORD, passwords=w.passwords))
    assert run(w.passwords.verify(w.account("carol").password_hash, PASSWORD))  # type: ignore[union-attr]
    e = error(accounts.passwd(w.ctx, w.cli, "root", "short", passwords=w.passwords))
    assert isinstance(e, InvalidInput) and e.field == "password"
    text = json.dumps(w.audit())
    assert [r["detail"] for r in w.audit() if r["action"] == "admin.passwd"] == [
        {"own": False},
        {"own": True},
    ]
    for account in run(w.store.list_admins()):
        assert account.password_hash not in text
    assert PASSWORD not in text and OTHER not in text


# -- the first account -----------------------------------------------------------------------


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def test_bootstrap_creates_admin_once_with_a_0600_file(tmp_path: Path, wide_umask: None) -> None:
    w = World()
    run(w.store.remove_admin("root"))
    path = tmp_path / "admin-password"
    log = Logger()
    with capturedLogs() as events:
        password = run(accounts.bootstrap_admin(w.ctx, path, log, passwords=w.passwords))
    assert password is not None and len(password) >= 20
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == password + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["admin-password"]  # no temporary left
    admin = w.account("admin")
    assert admin is not None and admin.role == "operator"
    assert run(w.passwords.verify(admin.password_hash, password))
    assert sum(password in str(e) for e in events) == 1  # logged once
    newest = w.audit()[0]
    assert (newest["actor"], newest["action"], newest["target"]) == ("strata", "admin.add", "admin")
    assert newest["detail"] == {"role": "operator", "bootstrap": True}
    # a second start: nothing changes
    assert run(accounts.bootstrap_admin(w.ctx, path, log, passwords=w.passwords)) is None
    assert path.read_text() == password + "\n"
    assert w.account("admin") == admin


def test_bootstrap_does_nothing_when_accounts_exist(world: World, tmp_path: Path) -> None:
    path = tmp_path / "admin-password"
    assert (
        run(accounts.bootstrap_admin(world.ctx, path, Logger(), passwords=world.passwords)) is None
    )
    assert not path.exists() and world.account("admin") is None


# -- TOTP ------------------------------------------------------------------------------------


def _enrol(w: World, name: str, guard: TotpGuard) -> tuple[str, list[str]]:
    caller = w.caller(name)
    enrolment = run(accounts.begin_totp(w.ctx, caller))
    assert w.account(name).totp_secret is None  # type: ignore[union-attr]  # not active yet
    assert enrolment.uri.startswith("otpauth://totp/Strata:" + name)
    assert "secret=" + enrolment.secret in enrolment.uri
    code = pyotp.TOTP(enrolment.secret).at(w.clock.seconds())
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    e = error(accounts.confirm_totp(w.ctx, caller, enrolment.secret, wrong, guard=guard))
    assert isinstance(e, InvalidInput) and e.field == "code"
    assert w.account(name).totp_secret is None  # type: ignore[union-attr]
    codes = run(accounts.confirm_totp(w.ctx, caller, enrolment.secret, code, guard=guard))
    return enrolment.secret, codes


def test_totp_login_replay_window_and_recovery_codes(tenants: World) -> None:
    w = tenants
    login = AdminLogin(w.clock, w.passwords)
    secret, codes = _enrol(w, "carol", login.guard)
    stored = w.account("carol")
    assert stored is not None and stored.totp_secret == secret
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", c) for c in codes)
    assert len(stored.recovery_codes) == 10
    assert not set(codes) & set(stored.recovery_codes)  # only hashes are kept
    totp = pyotp.TOTP(secret)

    def attempt(code: str | None) -> Caller | BaseException:
        """Log in with ``code`` (made before the call, at the step of the clock now), then
        move the clock on to the next TOTP step."""
        d = Deferred.fromCoroutine(
            login.authenticate_password(w.ctx, "carol", PASSWORD, code, "192.0.2.1")
        )
        while not d.called:  # a throttle delay after a refused code: a second or two
            w.clock.advance(0.25)
        results: list[Caller | Failure] = []
        d.addBoth(results.append)
        w.clock.advance(30)
        value = results[0]
        if isinstance(value, Failure):
            assert value.value is not None
            return value.value
        return value

    assert isinstance(attempt(None), SecondFactorRequired)
    assert login.throttle.tracked()["pairs"] == 0  # asking for the code is no failure
    # The enrolment (at START) used that step's code: within the window, but a replay.
    assert isinstance(attempt(totp.at(START)), Unauthorized)
    assert login.throttle.tracked()["pairs"] == 1  # a wrong code counts as a failure
    ok = attempt(totp.at(w.clock.seconds()))
    assert isinstance(ok, Caller) and ok.customer == "c1" and ok.reseller == "r1"
    replay = totp.at(w.clock.seconds() - 30)
    assert isinstance(attempt(replay), Unauthorized)  # used already
    # one step of drift either way is accepted; two are not
    assert isinstance(attempt(totp.at(w.clock.seconds() + 30)), Caller)
    w.clock.advance(90)
    assert isinstance(attempt(totp.at(w.clock.seconds() - 60)), Unauthorized)
    assert isinstance(attempt(totp.at(w.clock.seconds() - 30)), Caller)
    # a recovery code works once
    assert isinstance(attempt(codes[3].upper()), Caller)
    assert len(w.account("carol").recovery_codes) == 9  # type: ignore[union-attr]
    assert isinstance(attempt(codes[3]), Unauthorized)
    assert "admin.recovery_code_used" in [r["action"] for r in w.audit()]
    # the wrong password with the right code is still refused, with the same message
    d = Deferred.fromCoroutine(
        login.authenticate_password(
            w.ctx, "carol", OTHER, totp.at(w.clock.seconds() + 30), "192.0.2.1"
        )
    )
    w.clock.advance(60)
    wrong = failure_of(d).value
    assert type(wrong) is Unauthorized and str(wrong) == "invalid credentials"


def test_a_recovery_code_cannot_be_spent_twice_by_racing_logins(tenants: World) -> None:
    """Two logins that read the account before either stored the spent code: the guard lets
    only the first through."""
    w = tenants
    guard = TotpGuard()
    _, codes = _enrol(w, "carol", guard)
    account = w.account("carol")
    assert account is not None
    now = w.clock.seconds()
    accepted, left = check_second_factor(account, codes[0], guard, now)
    assert accepted and left is not None and len(left.recovery_codes) == 9
    assert check_second_factor(account, codes[0], guard, now) == (False, None)
    assert check_second_factor(account, codes[1], guard, now)[0]


def test_totp_disable_needs_a_code_or_recovery_code_for_oneself(tenants: World) -> None:
    w = tenants
    guard = TotpGuard()
    secret, codes = _enrol(w, "carol", guard)
    carol = w.caller("carol")
    e = error(accounts.begin_totp(w.ctx, carol))
    assert isinstance(e, InvalidInput)  # already on
    e = error(accounts.disable_totp(w.ctx, carol, "carol", "000000", guard=guard))
    assert isinstance(e, InvalidInput) and w.account("carol").totp_secret == secret  # type: ignore[union-attr]
    e = error(accounts.disable_totp(w.ctx, carol, "carol", None, guard=guard))
    assert isinstance(e, InvalidInput)
    run(accounts.disable_totp(w.ctx, carol, "carol", codes[0], guard=guard))
    off = w.account("carol")
    assert off is not None and off.totp_secret is None and off.recovery_codes == ()
    # an admin who sees the account resets it without a code; one who does not: NotFound
    w.clock.advance(30)
    _enrol(w, "carol", guard)
    assert isinstance(error(accounts.disable_totp(w.ctx, w.caller("bob"), "carol")), NotFound)
    run(accounts.disable_totp(w.ctx, w.caller("alice"), "carol"))
    assert w.account("carol").totp_secret is None  # type: ignore[union-attr]
    # the CLI's operator has no account of its own to enrol
    assert isinstance(error(accounts.begin_totp(w.ctx, w.cli)), NotFound)
    text = json.dumps(w.audit())
    assert secret not in text and not any(c in text for c in codes)


# -- API keys --------------------------------------------------------------------------------

KEY = re.compile(r"strata_([a-z2-7]{12})_([A-Za-z0-9_-]{43})\Z")


def _key(w: World, admin: str, scope: Scope = "operate", **kwargs: Any) -> tuple[str, Any]:
    return run(apikeys.create_api_key(w.ctx, w.cli, admin, scope, **kwargs))


def test_api_key_is_shown_once_and_stored_hashed(tenants: World) -> None:
    w = tenants
    key, stored = _key(w, "carol", "read", expires_days=30, allow_ip=["10.1.2.3/8"])
    match = KEY.match(key)
    assert match is not None
    key_id, secret = match.groups()
    assert stored.id == key_id and stored.admin == "carol" and stored.scope == "read"
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert stored.expires_at == START + 30 * 86400
    assert stored.allow_ip == ("10.0.0.0/8",)
    assert secret not in json.dumps(stored.as_json()) + json.dumps(w.audit())
    caller = run(apikeys.authenticate_key(w.ctx, f"Bearer {key}", "10.9.9.9"))
    assert caller == Caller(
        name="carol", role="customer", reseller="r1", customer="c1", scope="read",
        via="api", source="10.9.9.9",
    )  # fmt: skip
    assert run(w.store.get_api_key(key_id)).last_used_at == START  # type: ignore[union-attr]


def test_api_key_refusals_are_unauthorized(tenants: World) -> None:
    w = tenants
    key, stored = _key(w, "alice", expires_days=1, allow_ip=["192.0.2.0/24", "2001:db8::/32"])
    key_id = stored.id

    def refused(text: str, client: str = "192.0.2.7") -> str:
        e = error(apikeys.authenticate_key(w.ctx, text, client))
        assert isinstance(e, Unauthorized)
        return e.reason

    assert run(apikeys.authenticate_key(w.ctx, key, "192.0.2.7")).name == "alice"
    assert (
        run(apikeys.authenticate_key(w.ctx, key, "::ffff:192.0.2.7")).source == "::ffff:192.0.2.7"
    )
    assert run(apikeys.authenticate_key(w.ctx, key, "2001:db8::1")).scope == "operate"
    assert refused("") == "malformed key"
    assert refused("strata_short_x") == "malformed key"
    assert refused(key.replace("strata_", "mailcow_")) == "malformed key"
    assert refused(f"strata_{'a' * 12}_{key[-43:]}") == "unknown key"
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert refused(wrong) == "wrong secret"
    assert refused(key, "198.51.100.1") == "address not allowed"
    assert refused(key, "::ffff:198.51.100.1") == "address not allowed"
    assert refused(key, "not an address") == "address not allowed"
    w.clock.advance(86400)
    assert refused(key) == "expired"
    key2, stored2 = _key(w, "alice")
    assert run(apikeys.authenticate_key(w.ctx, key2, "203.0.113.5")).name == "alice"
    run(apikeys.revoke_api_key(w.ctx, w.caller("alice"), stored2.id))
    assert refused(key2) == "unknown key"
    key3, _ = _key(w, "carol")
    run(accounts.remove_admin(w.ctx, w.caller("alice"), "carol"))
    assert refused(key3) == "unknown key"  # the account's keys went with it
    assert run(w.store.get_api_key(key_id)) is not None


def test_api_key_management_respects_scope_and_tenancy(tenants: World) -> None:
    w = tenants
    alice, bob = w.caller("alice"), w.caller("bob")
    _, carols = run(apikeys.create_api_key(w.ctx, alice, "carol", "read"))
    _, bobs = _key(w, "bob")
    _key(w, "root")
    assert isinstance(error(apikeys.create_api_key(w.ctx, alice, "dave", "read")), NotFound)
    assert isinstance(error(apikeys.create_api_key(w.ctx, alice, "root", "read")), NotFound)
    e = error(apikeys.create_api_key(w.ctx, w.caller("alice", "operate"), "carol", "read"))
    assert isinstance(e, InsufficientScope)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"scope": "superuser"}, "scope"),
        ({"expires_days": 0}, "expires_days"),
        ({"expires_days": True}, "expires_days"),
        ({"allow_ip": ["10.0.0.0/33"]}, "allow_ip"),
        ({"allow_ip": "10.0.0.0/8"}, "allow_ip"),
    ]
    for kwargs, field in cases:
        scope = kwargs.pop("scope", "read")
        e = error(apikeys.create_api_key(w.ctx, alice, "carol", scope, **kwargs))
        assert isinstance(e, InvalidInput) and e.field == field, kwargs
    assert [k.admin for k in run(apikeys.list_api_keys(w.ctx, w.caller("alice", "read")))] == [
        "carol"
    ]
    assert len(run(apikeys.list_api_keys(w.ctx, w.cli))) == 3
    assert isinstance(error(apikeys.list_api_keys(w.ctx, alice, "bob")), NotFound)
    assert isinstance(error(apikeys.revoke_api_key(w.ctx, alice, bobs.id)), NotFound)
    assert isinstance(error(apikeys.revoke_api_key(w.ctx, alice, "nonexistent0")), NotFound)
    assert run(w.store.get_api_key(bobs.id)) is not None
    run(apikeys.revoke_api_key(w.ctx, bob, bobs.id))
    assert run(w.store.get_api_key(bobs.id)) is None
    actions = [(r["action"], r["actor"], r["reseller"]) for r in w.audit()]
    assert ("api_key.create", "alice", "r1") in actions
    assert actions[0] == ("api_key.revoke", "bob", "r2")
    assert carols.admin == "carol"


# -- login and its throttle ------------------------------------------------------------------


class Attempts:
    def __init__(self, w: World, max_delay: float) -> None:
        self.w = w
        self.login = AdminLogin(w.clock, w.passwords, max_delay=max_delay)

    def attempt(self, name: str, password: str, client: str) -> tuple[float, Any]:
        """(seconds the attempt waited on the clock, its Caller or its exception)."""
        d = Deferred.fromCoroutine(
            self.login.authenticate_password(self.w.ctx, name, password, None, client)
        )
        waited = 0.0
        while not d.called:
            assert waited < 100
            self.w.clock.advance(0.25)
            waited += 0.25
        results: list[Any] = []
        d.addBoth(results.append)
        value = results[0]
        return waited, (value.value if hasattr(value, "value") else value)


def test_login_failures_answer_alike_and_delays_grow(world: World) -> None:
    a = Attempts(world, max_delay=8.0)
    waits = []
    messages = set()
    for name, password in [("root", OTHER), ("root", OTHER), ("root", "x"), ("root", OTHER)]:
        waited, result = a.attempt(name, password, "203.0.113.9")
        assert type(result) is Unauthorized
        messages.add(str(result))
        waits.append(waited)
    assert waits == [0.0, 1.0, 2.0, 4.0]
    # unknown account, and a name that is no account name: the same answer
    _, unknown = a.attempt("nobody", PASSWORD, "198.51.100.1")
    _, garbage = a.attempt("Not A Name!", PASSWORD, "198.51.100.2")
    assert str(unknown) == str(garbage) == messages.pop() and not messages
    assert unknown.reason == "unknown account"
    # the right password still gets in, after the capped delay
    waited, caller = a.attempt("root", PASSWORD, "203.0.113.9")
    assert waited == 8.0 and isinstance(caller, Caller)
    assert caller.role == "operator" and caller.via == "panel" and caller.source == "203.0.113.9"
    waited, _ = a.attempt("root", PASSWORD, "203.0.113.9")
    assert waited == 0.0  # the success cleared the pair's failures


def test_a_stranger_cannot_lock_the_admin_out(world: World) -> None:
    a = Attempts(world, max_delay=15.0)
    assert isinstance(a.attempt("root", PASSWORD, "192.0.2.10")[1], Caller)  # her usual place
    for i in range(12):
        a.attempt("root", OTHER, f"198.51.100.{i}")  # many addresses guessing
    waited, caller = a.attempt("root", PASSWORD, "192.0.2.10")
    assert waited == 0.0 and isinstance(caller, Caller)
    # from an address never seen, the spread guesses do slow her down, but she gets in
    waited, caller = a.attempt("root", PASSWORD, "192.0.2.99")
    assert 0 < waited <= 15.0 and isinstance(caller, Caller)


# -- sessions --------------------------------------------------------------------------------


def test_sessions_slide_expire_and_carry_a_csrf_token(world: World) -> None:
    sessions = SessionStore(world.clock, idle=600)
    root = world.caller("root")
    sid, csrf = run(sessions.start(world.ctx, root))
    assert len(sid) >= 43 and len(csrf) >= 43 and sid != csrf
    session = sessions.lookup(sid)
    assert session is not None and session.caller == root
    assert check_csrf(session, csrf)
    assert not check_csrf(session, csrf[:-1] + "x")
    assert not check_csrf(session, "") and not check_csrf(session, None)
    assert sessions.lookup(sid + "x") is None and sessions.lookup("") is None
    world.clock.advance(599)
    assert sessions.lookup(sid) is not None  # used: its idle time starts again
    world.clock.advance(599)
    assert sessions.lookup(sid) is not None
    world.clock.advance(600)
    assert sessions.lookup(sid) is None
    sid, _ = run(sessions.start(world.ctx, root))
    sessions.end(sid)  # logout
    assert sessions.lookup(sid) is None and len(sessions) == 0


def test_sessions_end_with_the_account_or_its_password(tenants: World) -> None:
    w = tenants
    sessions = SessionStore(w.clock, idle=600)
    carol, dave = (
        run(sessions.start(w.ctx, w.caller("carol"))),
        run(sessions.start(w.ctx, w.caller("dave"))),
    )
    alice = run(sessions.start(w.ctx, w.caller("alice")))
    assert run(sessions.resolve(w.ctx, carol[0])) is not None
    run(accounts.passwd(w.ctx, w.cli, "carol", OTHER, passwords=w.passwords))
    assert run(sessions.resolve(w.ctx, carol[0])) is None
    assert sessions.lookup(carol[0]) is None  # ended, not just hidden
    run(accounts.remove_admin(w.ctx, w.cli, "dave"))
    assert run(sessions.resolve(w.ctx, dave[0])) is None
    assert run(sessions.resolve(w.ctx, alice[0])) is not None
    assert sessions.end_account("alice") == 1
    assert sessions.lookup(alice[0]) is None


def test_session_count_is_bounded(world: World) -> None:
    sessions = SessionStore(world.clock, idle=600, max_sessions=3)
    root = world.caller("root")
    ids = [sessions.create(root, "stamp")[0] for _ in range(3)]
    world.clock.advance(1)
    assert sessions.lookup(ids[0]) is not None  # the oldest is now the most recently used
    fourth, _ = sessions.create(root, "stamp")
    assert len(sessions) == 3
    assert sessions.lookup(ids[1]) is None  # the least recently used went
    assert all(sessions.lookup(i) is not None for i in (ids[0], ids[2], fourth))


def test_admin_logins_are_counted_for_the_metrics(world: World) -> None:
    """``strata_logins_total{service="admin"}``: failed, throttled (a delay ran first), ok."""
    counted: list[tuple[str, str]] = []

    class Recorder(NoMetrics):
        def login(self, service: str, result: str) -> None:
            counted.append((service, result))

    login = AdminLogin(world.clock, world.passwords, max_delay=4.0, metrics=Recorder())
    with pytest.raises(Unauthorized):
        run(login.authenticate_password(world.ctx, "root", OTHER, None, "192.0.2.1"))
    second = Deferred.fromCoroutine(
        login.authenticate_password(world.ctx, "root", OTHER, None, "192.0.2.1")
    )
    world.clock.advance(5)
    assert isinstance(failure_of(second).value, Unauthorized)
    third = Deferred.fromCoroutine(
        login.authenticate_password(world.ctx, "root", PASSWORD, None, "192.0.2.1")
    )
    world.clock.advance(5)
    assert run(third).name == "root"
    assert counted == [("admin", "failed"), ("admin", "throttled"), ("admin", "ok")]
