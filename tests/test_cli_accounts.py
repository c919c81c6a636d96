"""`strata admin` and `strata api-key` against a real SQLite data dir (in-process, no reactor)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from strata_twisted.cli import main
from strata_twisted.cli.context import Context
from strata_twisted.config import load_config
from strata_twisted.core.admin.apikeys import authenticate_key
from strata_twisted.core.admin.auth import Passwords, Unauthorized
from strata_twisted.model import AdminAccount
from strata_twisted.testing import result_of

Run = Callable[..., tuple[int, str, str]]
PASSWORD = "correct horse battery"  # noqa: S105 - a test account's


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.chdir(tmp_path)

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        out = io.StringIO()
        err = io.StringIO()
        monkeypatch.setattr("sys.stderr", err)
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        try:
            code = main(list(argv), out=out)
        except SystemExit as e:  # argparse refusing the arguments
            code = int(e.code or 0)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture
def data(cli: Run, tmp_path: Path) -> Path:
    """A data dir with no admin account: no server has started on it yet."""
    assert cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")[0] == 0
    return tmp_path / "strata-data"


def _add(cli: Run, name: str, *options: str, password: str = PASSWORD) -> tuple[int, str, str]:
    return cli("admin", "add", name, *options, "--password-stdin", stdin=password + "\n")


def _account(data: Path, name: str) -> AdminAccount | None:
    ctx = Context(load_config(None), io.StringIO())
    try:
        return result_of(ctx.store.get_admin(name))
    finally:
        ctx.close()


def _verifies(data: Path, name: str, password: str) -> bool:
    account = _account(data, name)
    assert account is not None
    ctx = Context(load_config(None), io.StringIO())
    try:
        return ctx.run(Passwords().verify(account.password_hash, password))
    finally:
        ctx.close()


def test_admin_add_list_passwd_remove(cli: Run, data: Path) -> None:
    code, out, _ = cli("admin", "list")
    assert code == 0 and "no admin accounts" in out

    code, out, err = _add(cli, "root", "--role", "operator")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "added admin account root (operator)"
    assert "the server will not create 'admin'" in out  # the first account of the data dir
    assert _verifies(data, "root", PASSWORD)
    account = _account(data, "root")
    assert account is not None and PASSWORD not in account.password_hash

    code, out, _ = _add(cli, "ops2", "--role", "operator")
    assert code == 0 and "first account" not in out
    code, _, err = _add(cli, "ops2", "--role", "operator")
    assert code == 1 and "exists already" in err and "strata admin passwd ops2" in err

    code, out, _ = cli("admin", "list", "--json")
    listed = json.loads(out)
    assert [(a["name"], a["role"], a["totp"]) for a in listed] == [
        ("ops2", "operator", False),
        ("root", "operator", False),
    ]
    assert "password" not in out and "$argon2" not in out
    code, out, _ = cli("admin", "list")
    assert out.splitlines()[0].split() == ["NAME", "ROLE", "TENANT", "TOTP", "ADDED"]
    assert out.splitlines()[2].split()[:4] == ["root", "operator", "-", "off"]

    # The CLI is the local operator, not an account: no current password is asked for.
    code, out, err = cli("admin", "passwd", "root", "--password-stdin", stdin="a new passphrase\n")
    assert (code, err) == (0, "") and "changed the password of root" in out
    assert _verifies(data, "root", "a new passphrase")
    assert not _verifies(data, "root", PASSWORD)
    code, _, err = cli("admin", "passwd", "nobody", "--password-stdin", stdin="a new passphrase\n")
    assert code == 1 and "no admin account 'nobody'" in err

    code, out, _ = cli("admin", "remove", "ops2")
    assert code == 0 and out == "removed admin account ops2\n"
    assert _account(data, "ops2") is None
    code, _, err = cli("admin", "remove", "ops2")
    assert code == 1 and "no admin account 'ops2'" in err

    # Audited as the local operator, and no password in any record.
    ctx = Context(load_config(None), io.StringIO())
    records = [
        r for r in ctx.run(ctx.admin.auditor.records(ctx.caller)) if r.action[:6] == "admin."
    ]
    ctx.close()
    assert [(r.action, r.target) for r in reversed(records)] == [
        ("admin.add", "root"),
        ("admin.add", "ops2"),
        ("admin.passwd", "root"),
        ("admin.remove", "ops2"),
    ]
    assert all(r.actor.startswith("cli:") and r.via == "cli" for r in records)
    assert not any(PASSWORD in repr(r) or "passphrase" in repr(r) for r in records)


def test_the_last_operator_is_never_removed(cli: Run, data: Path) -> None:
    assert _add(cli, "root", "--role", "operator")[0] == 0
    code, out, err = cli("admin", "remove", "root")
    assert code == 1 and out == ""
    assert "the last operator account cannot be removed" in err
    assert _account(data, "root") is not None


def test_reseller_and_customer_accounts_need_their_tenant(cli: Run, data: Path) -> None:
    code, _, err = _add(cli, "bob", "--role", "reseller", "--reseller", "msp")
    assert code == 1 and "no reseller 'msp'" in err and "strata reseller list" in err
    assert cli("reseller", "add", "msp")[0] == 0
    assert cli("customer", "add", "acme", "--reseller", "msp")[0] == 0

    code, out, _ = _add(cli, "bob", "--role", "reseller", "--reseller", "msp")
    assert code == 0 and "added admin account bob (reseller admin of msp)" in out
    assert "add an operator too" in out  # the first account, and the server will add none
    code, out, _ = _add(cli, "carol", "--role", "customer", "--customer", "acme")
    assert code == 0 and "(customer admin of acme)" in out
    code, _, err = _add(cli, "dave", "--role", "customer", "--customer", "nope")
    assert code == 1 and "no customer 'nope'" in err

    accounts = {a["name"]: a for a in json.loads(cli("admin", "list", "--json")[1])}
    assert (accounts["bob"]["reseller"], accounts["bob"]["customer"]) == ("msp", None)
    assert (accounts["carol"]["reseller"], accounts["carol"]["customer"]) == (None, "acme")
    assert "dave" not in accounts

    # A customer that still has an admin account cannot go.
    assert cli("customer", "remove", "acme")[0] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--role", "reseller"), "--role reseller needs --reseller NAME"),
        (("--role", "customer"), "--role customer needs --customer NAME"),
        (("--role", "operator", "--reseller", "msp"), "--reseller does not go with --role"),
        (("--role", "reseller", "--customer", "acme"), "--customer does not go with --role"),
        (("--role", "boss"), "invalid choice: 'boss'"),
    ],
)
def test_admin_add_bad_role_usage_exits_2(cli: Run, data: Path, argv, message) -> None:
    code, _, err = _add(cli, "bob", *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert _account(data, "bob") is None


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("Bad Name", PASSWORD, "the account name"),
        ("cli:root", PASSWORD, "the account name"),
        ("bob", "short", "the password needs at least 10 characters"),
    ],
)
def test_admin_add_bad_name_or_password_exits_2(
    cli: Run, data: Path, name: str, password: str, message: str
) -> None:
    code, _, err = _add(cli, name, "--role", "operator", password=password)
    assert code == 2 and message in err
    assert json.loads(cli("admin", "list", "--json")[1]) == []


def test_admin_password_typed_twice_at_a_terminal(
    cli: Run, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def at_terminal(*answers: str) -> None:
        pending = list(answers)

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        def fake_getpass(prompt: str = "Password: ") -> str:
            prompts.append(prompt)
            return pending.pop(0)

        monkeypatch.setattr("sys.stdin", Terminal())
        monkeypatch.setattr("getpass.getpass", fake_getpass)

    at_terminal(PASSWORD, PASSWORD)
    code, _, err = cli("admin", "add", "root", "--role", "operator")
    assert (code, err) == (0, "")
    assert prompts == ["New password for admin account root: ", "Again: "]

    at_terminal("another passphrase", "a typo")
    code, _, err = cli("admin", "passwd", "root")
    assert code == 1 and "do not match" in err
    assert _verifies(data, "root", PASSWORD)

    # A password the policy refuses is refused at once, not after typing it twice.
    prompts.clear()
    at_terminal("short")
    code, _, err = cli("admin", "passwd", "root")
    assert code == 2 and "at least 10 characters" in err and len(prompts) == 1

    # No terminal and no --password-stdin: refused, never read from a pipe.
    monkeypatch.setattr("sys.stdin", io.StringIO("a piped passphrase\n"))
    code, _, err = cli("admin", "passwd", "root")
    assert code == 2 and "--password-stdin" in err
    assert _verifies(data, "root", PASSWORD)


def test_admin_add_needs_an_existing_data_dir(cli: Run, tmp_path: Path) -> None:
    code, _, err = _add(cli, "root", "--role", "operator")
    assert code == 2 and "no Strata data in" in err
    assert not (tmp_path / "strata-data").exists()


def test_totp_reset_turns_off_the_second_factor(cli: Run, data: Path) -> None:
    assert _add(cli, "root", "--role", "operator")[0] == 0
    code, _, err = cli("admin", "totp-reset", "root")
    assert code == 1 and "TOTP is not on" in err

    ctx = Context(load_config(None), io.StringIO())
    account = result_of(ctx.store.get_admin("root"))
    assert account is not None
    with_totp = replace(account, totp_secret="JBSWY3DPEHPK3PXP", recovery_codes=("h1", "h2"))  # noqa: S106
    result_of(ctx.store.update_admin(with_totp))
    ctx.close()
    assert json.loads(cli("admin", "list", "--json")[1])[0]["totp"] is True

    code, out, err = cli("admin", "totp-reset", "root")
    assert (code, err) == (0, "") and "turned off TOTP for root" in out
    account = _account(data, "root")
    assert account is not None and account.totp_secret is None and account.recovery_codes == ()
    code, _, err = cli("admin", "totp-reset", "nobody")
    assert code == 1 and "no admin account 'nobody'" in err


def _authenticate(data: Path, key: str, client_ip: str = "127.0.0.1") -> str:
    """The name of the account ``key`` authenticates as, against the CLI's store."""
    ctx = Context(load_config(None), io.StringIO())
    try:
        return ctx.run(authenticate_key(ctx.admin, key, client_ip)).name
    finally:
        ctx.close()


def _data_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file())


def test_api_key_create_list_revoke(cli: Run, data: Path) -> None:
    assert _add(cli, "root", "--role", "operator")[0] == 0
    assert _add(cli, "ops2", "--role", "operator")[0] == 0

    code, out, err = cli("api-key", "create", "--admin", "root", "--scope", "operate")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 3
    text_key = lines[1]
    assert text_key.startswith("strata_")
    key_id = text_key.split("_")[1]
    assert lines[0].startswith(f"created API key {key_id} for root (scope operate, no expiry")
    assert "only time the key is shown" in lines[2]
    assert _authenticate(data, text_key) == "root"

    code, out, _ = cli("api-key", "create", "--admin", "ops2", "--scope", "read", "--json")
    created = json.loads(out)
    assert created["key"].startswith(f"strata_{created['id']}_")
    assert (created["admin"], created["scope"]) == ("ops2", "read")
    json_key = created["key"]
    assert _authenticate(data, json_key) == "ops2"

    # Only hashes are stored: neither key's secret is anywhere in the data dir.
    stored = _data_bytes(data)
    assert created["id"].encode() in stored  # the check reads the store itself
    for key in (text_key, json_key):
        secret = key.split("_", 2)[2].encode()
        assert secret not in stored

    code, out, _ = cli("api-key", "list", "--json")
    listed = json.loads(out)
    assert [(k["id"], k["admin"], k["scope"]) for k in listed] == [
        (key_id, "root", "operate"),
        (created["id"], "ops2", "read"),
    ]
    assert listed[0]["last_used_at"] is not None  # authenticated above
    code, out, _ = cli("api-key", "list", "--admin", "ops2")
    assert code == 0 and created["id"] in out and key_id not in out
    for listing in (cli("api-key", "list")[1], cli("api-key", "list", "--json")[1]):
        for key in (text_key, json_key):
            assert key.split("_", 2)[2] not in listing
        assert "secret" not in listing

    code, out, _ = cli("api-key", "revoke", key_id)
    assert code == 0 and f"revoked API key {key_id}" in out
    with pytest.raises(Unauthorized):
        _authenticate(data, text_key)
    assert _authenticate(data, json_key) == "ops2"
    code, _, err = cli("api-key", "revoke", key_id)
    assert code == 1 and f"no API key '{key_id}'" in err

    # Removing an account takes its keys with it.
    code, out, _ = cli("admin", "remove", "ops2")
    assert code == 0 and "and its 1 API key(s)" in out
    with pytest.raises(Unauthorized):
        _authenticate(data, json_key)
    assert json.loads(cli("api-key", "list", "--json")[1]) == []


def test_api_key_expiry_and_networks_are_stored(cli: Run, data: Path) -> None:
    assert _add(cli, "root", "--role", "operator")[0] == 0
    code, out, _ = cli(
        "api-key", "create", "--admin", "root", "--scope", "admin", "--expires-days", "30",
        "--allow-ip", "10.1.2.3/8", "--allow-ip", "2001:db8::/32", "--json",
    )  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert created["allow_ip"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert created["expires_at"] == pytest.approx(created["created_at"] + 30 * 86400, abs=5)
    ctx = Context(load_config(None), io.StringIO())
    key = result_of(ctx.store.get_api_key(created["id"]))
    ctx.close()
    assert key is not None and key.allow_ip == ("10.0.0.0/8", "2001:db8::/32")
    assert key.expires_at == created["expires_at"]

    assert _authenticate(data, created["key"], "10.9.9.9") == "root"
    with pytest.raises(Unauthorized, match="not allowed from this address"):
        _authenticate(data, created["key"], "192.0.2.1")
    code, out, _ = cli("api-key", "list")
    assert "10.0.0.0/8,2001:db8::/32" in out and "never" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--scope", "everything"), "argument --scope: invalid choice: 'everything'"),
        (("--scope", "read", "--allow-ip", "10.0.0.300/8"), "--allow-ip: not a network (CIDR)"),
        (("--scope", "read", "--allow-ip", "mail.example"), "--allow-ip: not a network (CIDR)"),
        (("--scope", "read", "--expires-days", "0"), "--expires-days: "),
        (("--scope", "read", "--expires-days", "soon"), "--expires-days: invalid int value"),
    ],
)
def test_api_key_create_bad_arguments_exit_2(cli: Run, data: Path, argv, message) -> None:
    assert _add(cli, "root", "--role", "operator")[0] == 0
    code, out, err = cli("api-key", "create", "--admin", "root", *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert "strata_" not in out
    assert json.loads(cli("api-key", "list", "--json")[1]) == []


def test_api_key_for_an_unknown_account(cli: Run, data: Path) -> None:
    code, _, err = cli("api-key", "create", "--admin", "ghost", "--scope", "read")
    assert code == 1 and "no admin account 'ghost'" in err
    code, _, err = cli("api-key", "list", "--admin", "ghost")
    assert code == 1 and "no admin account 'ghost'" in err
