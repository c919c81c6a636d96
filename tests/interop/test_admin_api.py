"""
Acceptance (#13): contract tests of the admin JSON API against a real ``twistd -n strata``.

One server serves the whole module (a start costs seconds), with a world built once through the
API itself: two resellers, customers under them and one directly under the operator, a domain
for each customer whose primary is a closed loopback port (so mail waits in the queue), admin
accounts of each level with keys, and mail queued by SMTP to the real intake.  Tests never undo
each other: each one makes what it changes under a name of its own (L{unique}), and the world's
shared objects are only read, except by the tenancy matrix, whose every cell must change nothing.

What is covered:
  - every resource and action of the contract (domains, users with passwd-file PUT, the queue
    with its filters, paging and actions, events, status, audit, resellers, customers, admins,
    API keys, the OpenAPI document) with the error shape ``{"error": {"code", "message"}}``;
  - the tenancy matrix: each role × each resource × an object of another tenant answers 404 and
    changes nothing (the world is re-read as the operator before and after);
  - key scopes, expiry (the key's ``expires_at`` moved into the past in the SQLite file: the
    real process's clock cannot be advanced), revocation and source addresses;
  - CSRF for cookie sessions, and the session cookie's attributes.

twistd is a required peer: if Strata cannot start, every test fails (none skips).
"""

from __future__ import annotations

import itertools
import smtplib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest

from strata_twisted.core.admin.users import DEFAULT_SCHEME
from strata_twisted.core.credentials import hash_password
from strata_twisted.storage.sqlite import DB_NAME
from tests.peers.admin_api import AdminClient, Answer
from tests.peers.net import free_port
from tests.peers.strata import StrataProcess, bootstrap_password
from tests.peers.wait import eventually

pytestmark = pytest.mark.interop

MONITOR = "[monitor]\nprobe_interval = 0.5\nretry_interval = 0.5\ndown_after = 2\nup_after = 2\n"
PASSWORD = "correct horse battery staple"  # noqa: S105 (the test accounts')
SENDER_DOMAIN = "senders.test"  # the operator's own domain: DSNs to its senders wait there too
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test uses (tenant names allow [a-z0-9._-])."""
    return f"{prefix}{next(_counter)}-{int(time.time() * 1000) % 100000}"


def user_hash(password: str = "s3cret-password") -> str:  # noqa: S107 (a test user's)
    return hash_password(password, DEFAULT_SCHEME).text


def assert_error(
    answer: Answer, status: int, code: str | None = None, field: str | None = None
) -> None:
    """The answer is the contract's error: the status, ``{"error": {"code", "message"}}``, and
    (for bad input) the offending field."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    error = answer.body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error


# -- the world -------------------------------------------------------------------------------


@dataclass
class Tenant:
    """The objects of one tenant an attacker of another tenant aims at."""

    domain: str
    user: str
    entries: list[str]
    customer: str
    reseller: str
    account: str
    key_id: str


@dataclass
class World:
    strata: StrataProcess
    admin_port: int
    password: str  # the bootstrap operator's
    op: AdminClient  # an admin-scope key of the bootstrap operator
    closed: int  # the primaries' port: nothing listens there
    tenants: dict[str, Tenant] = field(default_factory=dict)
    clients: dict[str, AdminClient] = field(default_factory=dict)

    def client(self, key: str | None = None, **kw: Any) -> AdminClient:
        return AdminClient(self.admin_port, key=key, **kw)

    def relay(self) -> str:
        return f"127.0.0.1:{self.closed}"

    def add_domain(self, name: str, customer: str | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "relay": self.relay(), **fields}
        if customer is not None:
            body["customer"] = customer
        answer = self.op.post("/api/v1/domains", body)
        assert answer.status == 201, answer.body
        return dict(answer.body)

    def add_account(self, name: str, role: str, **tenant: str) -> None:
        answer = self.op.post(
            "/api/v1/admins", {"name": name, "role": role, "password": PASSWORD, **tenant}
        )
        assert answer.status == 201, answer.body

    def add_key(self, admin: str, scope: str = "admin", **kw: Any) -> tuple[str, str]:
        answer = self.op.post("/api/v1/api-keys", {"admin": admin, "scope": scope, **kw})
        assert answer.status == 201, answer.body
        return answer.body["key"], answer.body["id"]

    def send(self, recipients: list[str], subject: str = "hello", sender: str = "") -> None:
        """Mail through the real intake; a domain added a moment ago is known to intake after
        the server's next storage reload (half a second), so refusals are retried a while."""
        sender = sender or f"someone@{SENDER_DOMAIN}"
        message = f"From: {sender}\r\nSubject: {subject}\r\n\r\nqueued during an outage\r\n"

        def attempt() -> bool:
            try:
                with smtplib.SMTP("127.0.0.1", self.strata.port, timeout=30) as smtp:
                    smtp.sendmail(sender, recipients, message)
            except smtplib.SMTPRecipientsRefused:
                return False
            return True

        eventually(
            attempt, timeout=20, what=f"intake accepting mail for {recipients}", interval=0.3
        )

    def entries(self, **filters: Any) -> list[dict[str, Any]]:
        """Every queue entry matching ``filters``, read as the operator, page by page."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            answer = self.op.get("/api/v1/queue", limit=500, cursor=cursor, **filters)
            assert answer.status == 200, answer.body
            found.extend(answer.body["entries"])
            cursor = answer.body["next"]
            if cursor is None:
                return found

    def entry_state(self, entry_id: str) -> str:
        answer = self.op.get(f"/api/v1/queue/{entry_id}")
        assert answer.status == 200, answer.body
        states = [e["state"] for e in answer.body["entries"] if e["id"] == entry_id]
        assert len(states) == 1, answer.body
        return str(states[0])

    def queued_mail(self, domain: str, count: int, subject: str = "hello") -> list[str]:
        """``count`` entries queued for fresh recipients of ``domain``: their ids."""
        tag = unique("m")
        recipients = [f"{tag}-{n}@{domain}" for n in range(count)]
        self.send(recipients, subject)
        found = eventually(
            lambda: (
                [e["id"] for e in self.entries(domain=domain, recipient=tag)]
                if len(self.entries(domain=domain, recipient=tag)) == count
                else None
            ),
            timeout=20,
            what=f"{count} entries for {domain} in the queue",
        )
        return list(found)


# The fields of a domain that only the admin changes (health, probes and ages move on their own).
_RUNTIME_KEYS = {
    "health",
    "health_since",
    "last_probe_at",
    "last_probe_error",
    "probe_failures_in_a_row",
    "probe_successes_in_a_row",
    "last_delivery_at",
    "portal_open",
    "portal_reason",
    "portal_since",
    "portal_until",
    "oldest_age_s",
}


def snapshot(world: World) -> dict[str, Any]:
    """Everything an admin can change, read as the operator."""
    op = world.op
    domains = op.get("/api/v1/domains").body["domains"]
    state: dict[str, Any] = {
        "domains": {
            d["name"]: {k: v for k, v in d.items() if k not in _RUNTIME_KEYS} for d in domains
        },
        "users": {
            d["name"]: op.get(f"/api/v1/domains/{d['name']}/users").body["users"] for d in domains
        },
        "queue": {e["id"]: e["state"] for e in world.entries()},
        "admins": op.get("/api/v1/admins").body["admins"],
        "api_keys": [
            {k: v for k, v in key.items() if k != "last_used_at"}
            for key in op.get("/api/v1/api-keys").body["api_keys"]
        ],
        "customers": op.get("/api/v1/customers").body["customers"],
        "resellers": op.get("/api/v1/resellers").body["resellers"],
    }
    return state


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("admin-api")
    admin_port = free_port()
    strata = StrataProcess(root / "strata", admin_port=admin_port, extra_config=MONITOR)
    strata.start()
    try:
        password = bootstrap_password(strata)
        browser = AdminClient(admin_port)
        assert browser.login("admin", password).status == 200
        made = browser.post("/api/v1/api-keys", {"admin": "admin", "scope": "admin"})
        assert made.status == 201, made.body
        world = World(strata, admin_port, password, AdminClient(admin_port, key=made.body["key"]),
                      free_port())  # fmt: skip
        build_tenants(world)
        yield world
    finally:
        strata.stop()


def build_tenants(world: World) -> None:
    """Resellers ra and rb; customers ca1 and ca2 under ra, cb1 under rb, cop under the
    operator; a domain, a user, an admin account with a key and queued mail for each."""
    op = world.op
    world.add_domain(SENDER_DOMAIN)
    for reseller in ("ra", "rb"):
        assert op.post("/api/v1/resellers", {"name": reseller}).status == 201
        world.add_account(f"{reseller}-admin", "reseller", reseller=reseller)
    for customer, parent in (("ca1", "ra"), ("ca2", "ra"), ("cb1", "rb"), ("cop", "")):
        body = {"name": customer, **({"reseller": parent} if parent else {})}
        assert op.post("/api/v1/customers", body).status == 201
        domain = f"{customer}.test"
        world.add_domain(domain, customer)
        user = f"user@{domain}"
        added = op.post(
            f"/api/v1/domains/{domain}/users", {"address": user, "password_hash": user_hash()}
        )
        assert added.status == 201, added.body
        world.add_account(f"{customer}-admin", "customer", customer=customer)
    keys = {name: world.add_key(f"{name}-admin") for name in ("ra", "rb", "ca1", "ca2", "cb1")}
    # Mail for every customer domain: two messages to its user (a domain with synced users
    # refuses unknown recipients).
    for customer in ("ca1", "ca2", "cb1", "cop"):
        for n in range(2):
            world.send([f"user@{customer}.test"], f"for {customer} #{n}")
    eventually(lambda: len(world.entries()) >= 8, timeout=20, what="8 entries queued")

    def tenant(customer: str, reseller: str, account: str, key_of: str) -> Tenant:
        domain = f"{customer}.test"
        return Tenant(
            domain=domain,
            user=f"user@{domain}",
            entries=[e["id"] for e in world.entries(domain=domain)],
            customer=customer,
            reseller=reseller,
            account=account,
            key_id=keys[key_of][1],
        )

    # What each attacker aims at: a reseller admin at the other reseller's objects; a customer
    # admin at a sibling customer's (same reseller) and at a reseller.
    world.tenants["of-rb"] = tenant("cb1", "rb", "rb-admin", "rb")
    world.tenants["of-ca2"] = tenant("ca2", "rb", "ca2-admin", "ca2")
    world.clients["reseller-key"] = world.client(keys["ra"][0])
    world.clients["customer-key"] = world.client(keys["ca1"][0])
    session = world.client()
    assert session.login("ca1-admin", PASSWORD).status == 200
    world.clients["customer-session"] = session
    session = world.client()
    assert session.login("ra-admin", PASSWORD).status == 200
    world.clients["reseller-session"] = session


# -- the OpenAPI document and authentication basics ------------------------------------------


def test_openapi_document_is_served_without_credentials(world: World) -> None:
    answer = world.client().get("/api/v1/openapi.json")
    assert answer.status == 200
    doc = answer.body
    assert doc["openapi"].startswith("3.1")
    for path, methods in {
        "/api/v1/domains": {"get", "post"},
        "/api/v1/domains/{name}": {"get", "patch", "delete"},
        "/api/v1/domains/{name}/users": {"get", "post", "put"},
        "/api/v1/domains/{name}/users/{address}": {"delete"},
        "/api/v1/queue": {"get"},
        "/api/v1/queue/{id}": {"get"},
        "/api/v1/queue/actions": {"post"},
        "/api/v1/events": {"get"},
        "/api/v1/status": {"get"},
        "/api/v1/dashboard": {"get"},
        "/api/v1/dashboard/series": {"get"},
        "/api/v1/audit": {"get"},
        "/api/v1/resellers": {"get", "post"},
        "/api/v1/customers": {"get", "post"},
        "/api/v1/admins": {"get", "post"},
        "/api/v1/api-keys": {"get", "post", "delete"},
    }.items():
        assert methods <= set(doc["paths"][path]), path
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/domains", "/api/v1/queue", "/api/v1/events", "/api/v1/status", "/api/v1/audit",
     "/api/v1/resellers", "/api/v1/customers", "/api/v1/admins", "/api/v1/api-keys",
     "/api/v1/dashboard", "/api/v1/dashboard/series"],
)  # fmt: skip
def test_no_credentials_is_401(world: World, path: str) -> None:
    answer = world.client().get(path)
    assert_error(answer, 401, "unauthorized")
    assert answer.headers.get("www-authenticate", "").startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer strata_aaaaaaaaaaaa_" + "x" * 43,
        "Bearer nonsense",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer ",
    ],
)
def test_a_bad_key_is_401(world: World, authorization: str) -> None:
    answer = world.client().request(
        "GET", "/api/v1/domains", headers={"Authorization": authorization}
    )
    assert_error(answer, 401)


def test_unknown_path_is_a_json_404(world: World) -> None:
    assert_error(world.op.get("/api/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_a_json_405(world: World) -> None:
    answer = world.op.request("PUT", "/api/v1/status", {})
    assert_error(answer, 405)


# -- domains ---------------------------------------------------------------------------------


def test_domain_create_show_list_update_delete(world: World) -> None:
    name = f"{unique('d')}.test"
    created = world.add_domain(name, "cop", mode="both", alert_emails=["ops@senders.test"])
    assert created["name"] == name
    assert created["customer"] == "cop"
    assert created["mode"] == "both"
    assert created["relay"] == world.relay()
    assert created["alert_emails"] == ["ops@senders.test"]
    assert created["monitoring"] is True
    for key in ("tls_policy", "portal", "retention_days", "queue_lifetime", "health",
                "queue_depth", "oldest_age_s", "portal_open"):  # fmt: skip
        assert key in created, key
    assert created["queue_depth"] == 0 and created["oldest_age_s"] is None

    shown = world.op.get(f"/api/v1/domains/{name}")
    assert shown.status == 200 and shown.body["name"] == name
    listed = world.op.get("/api/v1/domains").body["domains"]
    assert name in [d["name"] for d in listed]

    patched = world.op.patch(
        f"/api/v1/domains/{name}",
        {"mode": "relay", "relay": "127.0.0.1:2525", "monitoring": False, "retention_days": 7,
         "queue_lifetime": 3600, "tls_policy": "required", "portal": "off", "alert_emails": []},
    )  # fmt: skip
    assert patched.status == 200, patched.body
    again = world.op.get(f"/api/v1/domains/{name}").body
    for key, value in {"mode": "relay", "relay": "127.0.0.1:2525", "monitoring": False,
                       "retention_days": 7, "queue_lifetime": 3600, "tls_policy": "required",
                       "portal": "off", "alert_emails": []}.items():  # fmt: skip
        assert again[key] == value, key
        assert patched.body[key] == value, key

    assert world.op.delete(f"/api/v1/domains/{name}").status == 204
    assert_error(world.op.get(f"/api/v1/domains/{name}"), 404, "not_found")
    assert_error(world.op.delete(f"/api/v1/domains/{name}"), 404, "not_found")
    assert_error(world.op.patch(f"/api/v1/domains/{name}", {"mode": "both"}), 404, "not_found")


def test_domain_queue_depth_and_age_count_queued_mail(world: World) -> None:
    name = f"{unique('depth')}.test"
    world.add_domain(name, "cop")
    world.queued_mail(name, 3)
    shown = world.op.get(f"/api/v1/domains/{name}").body
    assert shown["queue_depth"] == 3
    assert shown["oldest_age_s"] is not None and 0 <= shown["oldest_age_s"] < 120


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"relay": "127.0.0.1:25"}, "name"),
        ({"name": "no spaces allowed.test", "relay": "127.0.0.1:25"}, "name"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "mode": "sideways"}, "mode"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "colour": "red"}, "colour"),
        ({"name": "UNIQUE"}, "relay"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "retention_days": -1}, "retention_days"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "monitoring": "yes"}, "monitoring"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "alert_emails": "a@b.test"}, "alert_emails"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "tls_policy": "maybe"}, "tls_policy"),
        # Regression: an up_after beyond SQLite's 64-bit integers was a 503 (Schemathesis).
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "up_after": 10**30}, "up_after"),
        ({"name": "UNIQUE", "relay": "127.0.0.1:25", "probe_interval": 1e300}, "probe_interval"),
    ],
)
def test_domain_create_bad_input_is_400_with_the_field(
    world: World, body: dict[str, Any], field: str
) -> None:
    name = f"{unique('bad')}.test"
    body = {k: (name if v == "UNIQUE" else v) for k, v in body.items()}
    answer = world.op.post("/api/v1/domains", body)
    assert_error(answer, 400, "invalid_input", field)
    assert_error(world.op.get(f"/api/v1/domains/{name}"), 404)


def test_domain_patch_bad_input_is_400_and_changes_nothing(world: World) -> None:
    name = f"{unique('patch')}.test"
    before = world.add_domain(name)
    assert_error(world.op.patch(f"/api/v1/domains/{name}", {"mode": "x"}), 400, field="mode")
    assert_error(world.op.patch(f"/api/v1/domains/{name}", {"name": "y.test"}), 400, field="name")
    after = world.op.get(f"/api/v1/domains/{name}").body
    assert {k: after[k] for k in ("mode", "relay", "updated_at")} == {
        k: before[k] for k in ("mode", "relay", "updated_at")
    }


def test_domain_create_twice_is_409(world: World) -> None:
    name = f"{unique('twice')}.test"
    world.add_domain(name)
    assert_error(
        world.op.post("/api/v1/domains", {"name": name, "relay": world.relay()}), 409, "conflict"
    )


def test_domain_body_must_be_json(world: World) -> None:
    answer = world.op.request(
        "POST",
        "/api/v1/domains",
        raw=b"name=x.test",
        content_type="application/x-www-form-urlencoded",
    )
    assert_error(answer, 415)
    answer = world.op.request("POST", "/api/v1/domains", raw=b"{not json")
    assert_error(answer, 400, "invalid_input")
    answer = world.op.request("POST", "/api/v1/domains", raw=b"[1, 2]")
    assert_error(answer, 400, "invalid_input")


# -- users -----------------------------------------------------------------------------------


def users_of(world: World, domain: str) -> list[str]:
    answer = world.op.get(f"/api/v1/domains/{domain}/users")
    assert answer.status == 200, answer.body
    return sorted(u["address"] for u in answer.body["users"])


def put_users(client: AdminClient, domain: str, text: str, merge: bool | None = None) -> Answer:
    path = f"/api/v1/domains/{domain}/users" + (
        "" if merge is None else f"?merge={str(merge).lower()}"
    )
    return client.request("PUT", path, raw=text.encode(), content_type="text/plain")


def test_users_add_list_delete(world: World) -> None:
    domain = f"{unique('u')}.test"
    world.add_domain(domain, "cop")
    added = world.op.post(
        f"/api/v1/domains/{domain}/users",
        {"address": f"ana@{domain}", "password": "a long password"},
    )
    assert added.status == 201 and added.body["address"] == f"ana@{domain}"
    hashed = world.op.post(
        f"/api/v1/domains/{domain}/users", {"address": f"bo@{domain}", "password_hash": user_hash()}
    )
    assert hashed.status == 201, hashed.body
    assert users_of(world, domain) == [f"ana@{domain}", f"bo@{domain}"]
    again = world.op.post(
        f"/api/v1/domains/{domain}/users", {"address": f"ana@{domain}", "password": "x" * 12}
    )
    assert_error(again, 409, "conflict")
    assert_error(
        world.op.post(f"/api/v1/domains/{domain}/users", {"address": f"cy@{domain}"}),
        400,
        field="password",
    )
    assert_error(
        world.op.post(
            f"/api/v1/domains/{domain}/users",
            {"address": f"cy@{domain}", "password_hash": "{PLAIN}x"},
        ),
        400,
        field="password_hash",
    )
    # An address of another domain is not one of this domain's users.
    assert_error(
        world.op.post(
            f"/api/v1/domains/{domain}/users", {"address": "cy@cop.test", "password": "x" * 12}
        ),
        404,
    )
    assert world.op.delete(f"/api/v1/domains/{domain}/users/ana@{domain}").status == 204
    assert users_of(world, domain) == [f"bo@{domain}"]
    assert_error(world.op.delete(f"/api/v1/domains/{domain}/users/ana@{domain}"), 404, "not_found")
    assert_error(world.op.get("/api/v1/domains/nowhere.test/users"), 404, "not_found")


def test_users_put_replaces_atomically_and_merges(world: World) -> None:
    domain = f"{unique('pw')}.test"
    world.add_domain(domain, "cop")
    world.op.post(
        f"/api/v1/domains/{domain}/users", {"address": f"old@{domain}", "password": "x" * 12}
    )
    h = user_hash()
    replaced = put_users(world.op, domain, f"ana@{domain}:{h}\nbo@{domain}:{h}\n")
    assert replaced.status == 200, replaced.body
    assert replaced.body["merged"] is False
    assert (replaced.body["added"], replaced.body["removed"], replaced.body["users"]) == (2, 1, 2)
    assert users_of(world, domain) == [f"ana@{domain}", f"bo@{domain}"]

    # One bad line: the whole file is refused, and nothing changes.
    bad = put_users(world.op, domain, f"cy@{domain}:{h}\nbroken line without a hash\n")
    assert_error(bad, 400, "invalid_input", "passwd_file")
    bad = put_users(world.op, domain, f"cy@{domain}:{{PLAIN}}password\n")
    assert_error(bad, 400, "invalid_input", "passwd_file")
    assert users_of(world, domain) == [f"ana@{domain}", f"bo@{domain}"]

    merged = put_users(world.op, domain, f"cy@{domain}:{h}\n", merge=True)
    assert merged.status == 200, merged.body
    assert (
        merged.body["merged"] is True and merged.body["added"] == 1 and merged.body["removed"] == 0
    )
    assert users_of(world, domain) == [f"ana@{domain}", f"bo@{domain}", f"cy@{domain}"]
    explicit = put_users(world.op, domain, f"dee@{domain}:{h}\n", merge=False)
    assert explicit.status == 200 and explicit.body["removed"] == 3
    assert users_of(world, domain) == [f"dee@{domain}"]
    perhaps = world.op.request(
        "PUT", f"/api/v1/domains/{domain}/users?merge=perhaps", raw=b"", content_type="text/plain"
    )
    assert_error(perhaps, 400, field="merge")
    assert users_of(world, domain) == [f"dee@{domain}"]


# -- the queue -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mailbox(world: World) -> dict[str, Any]:
    """A domain of its own for the queue listing tests: 5 entries, two senders."""
    domain = f"{unique('q')}.test"
    world.add_domain(domain, "cop")
    world.send(
        [f"alpha@{domain}", f"beta@{domain}", f"gamma@{domain}"],
        "first",
        sender=f"ann@{SENDER_DOMAIN}",
    )
    world.send([f"delta@{domain}", f"epsilon@{domain}"], "second", sender=f"bob@{SENDER_DOMAIN}")
    entries = eventually(
        lambda: (lambda e: e if len(e) == 5 else None)(world.entries(domain=domain)),
        timeout=20,
        what="5 entries",
    )
    return {"domain": domain, "ids": [e["id"] for e in entries]}


def test_queue_list_pages_with_a_cursor(world: World, mailbox: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = world.op.get("/api/v1/queue", domain=mailbox["domain"], limit=2, cursor=cursor)
        assert page.status == 200, page.body
        assert len(page.body["entries"]) <= 2
        seen.extend(e["id"] for e in page.body["entries"])
        pages += 1
        cursor = page.body["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 3
    assert seen == mailbox["ids"]  # arrival order, nothing twice, nothing missed


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"sender": "ann@"}, 3),
        ({"sender": "BOB@SENDERS"}, 2),
        ({"recipient": "gamma"}, 1),
        ({"state": "queued"}, 5),
        ({"state": "held"}, 0),
        ({"older_than": 0}, 5),
        ({"older_than": 86400}, 0),
    ],
)
def test_queue_list_filters(
    world: World, mailbox: dict[str, Any], query: dict[str, Any], expected: int
) -> None:
    answer = world.op.get("/api/v1/queue", domain=mailbox["domain"], **query)
    assert answer.status == 200, answer.body
    entries = answer.body["entries"]
    assert len(entries) == expected, entries
    assert all(e["domain"] == mailbox["domain"] for e in entries)


def test_queue_list_filter_by_domain_only_gives_that_domain(
    world: World, mailbox: dict[str, Any]
) -> None:
    entries = world.op.get("/api/v1/queue", domain=mailbox["domain"], limit=1000).body["entries"]
    assert sorted(e["id"] for e in entries) == sorted(mailbox["ids"])
    everything = world.entries()
    assert len(everything) > len(entries)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"older_than": "yesterday"}, "older_than"),
        ({"older_than": "-5"}, "older_than"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"domain": "not a domain"}, "domain"),
    ],
)
def test_queue_list_bad_query_is_400(world: World, query: dict[str, Any], field: str) -> None:
    assert_error(world.op.get("/api/v1/queue", **query), 400, "invalid_input", field)


def test_queue_show_gives_envelope_and_headers(world: World, mailbox: dict[str, Any]) -> None:
    entry_id = mailbox["ids"][0]
    shown = world.op.get(f"/api/v1/queue/{entry_id}")
    assert shown.status == 200, shown.body
    body = shown.body
    assert body["sender"] == f"ann@{SENDER_DOMAIN}"
    assert f"alpha@{mailbox['domain']}" in body["recipients"]
    assert "Subject: first" in body["headers"]
    assert "queued during an outage" not in body["headers"]  # headers, not the body
    assert entry_id in [e["id"] for e in body["entries"]]
    assert_error(world.op.get("/api/v1/queue/NOSUCHID.1"), 404, "not_found")


@pytest.mark.parametrize("how", ["ids", "filter"])
def test_queue_hold_release_retry_delete(world: World, how: str) -> None:
    domain = f"{unique('act')}.test"
    world.add_domain(domain, "cop")
    ids = world.queued_mail(domain, 3)

    def act(action: str, **extra: Any) -> Answer:
        body: dict[str, Any] = {"action": action}
        body.update({"ids": ids} if how == "ids" else {"filter": {"domain": domain, **extra}})
        answer = world.op.post("/api/v1/queue/actions", body)
        assert answer.status == 200, answer.body
        assert answer.body["action"] == action
        return answer

    held = act("hold")
    assert sorted(held.body["changed"]) == sorted(ids) and held.body["changed_count"] == 3
    assert {world.entry_state(i) for i in ids} == {"held"}
    assert world.op.get(f"/api/v1/domains/{domain}").body["held"] == 3
    # Retry applies to queued entries only: held ones are skipped, with their state.
    retried = act("retry")
    assert retried.body["changed"] == [] and retried.body["skipped_count"] == (
        3 if how == "ids" else 0
    )
    released = act("release")
    assert sorted(released.body["changed"]) == sorted(ids)
    assert {world.entry_state(i) for i in ids} == {"queued"}
    retried = act("retry")
    assert sorted(retried.body["changed"]) == sorted(ids)
    assert {world.entry_state(i) for i in ids} == {"queued"}
    deleted = act("delete", state="queued")
    assert sorted(deleted.body["changed"]) == sorted(ids)
    assert {world.entry_state(i) for i in ids} == {"deleted"}


def test_queue_bounce_queues_a_dsn(world: World) -> None:
    domain = f"{unique('bnc')}.test"
    world.add_domain(domain, "cop")
    [entry] = world.queued_mail(domain, 1)
    answer = world.op.post("/api/v1/queue/actions", {"action": "bounce", "ids": [entry]})
    assert answer.status == 200, answer.body
    assert answer.body["changed"] == [entry]
    [dsn] = answer.body["dsns"]
    assert dsn["error"] is None and dsn["dsn"]
    assert world.entry_state(entry) == "bounced"
    # The DSN is mail in the queue, to the sender, at the sender's domain.
    notice = world.op.get(f"/api/v1/queue/{dsn['dsn']}")
    assert notice.status == 200, notice.body
    assert notice.body["recipients"] == [f"someone@{SENDER_DOMAIN}"]
    assert notice.body["sender"] == ""


def test_queue_bulk_action_by_filter_has_no_cap_and_stays_in_its_filter(world: World) -> None:
    domain = f"{unique('bulk')}.test"
    bystander = f"{unique('by')}.test"
    world.add_domain(domain, "cop")
    world.add_domain(bystander, "cop")
    ids = world.queued_mail(domain, 30)
    others = world.queued_mail(bystander, 2)
    answer = world.op.post(
        "/api/v1/queue/actions", {"action": "hold", "filter": {"domain": domain}}
    )
    assert answer.status == 200 and answer.body["changed_count"] == 30
    assert {e["state"] for e in world.entries(domain=domain)} == {"held"}
    assert {world.entry_state(i) for i in others} == {"queued"}
    assert sorted(answer.body["changed"]) == sorted(ids)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "explode", "ids": ["x.1"]}, "action"),
        ({"ids": ["x.1"]}, "action"),
        ({"action": "hold"}, "ids"),
        ({"action": "hold", "ids": ["x.1"], "filter": {}}, "ids"),
        ({"action": "hold", "ids": "x.1"}, "ids"),
        ({"action": "hold", "filter": {"state": "lost"}}, "state"),
        ({"action": "hold", "filter": {"colour": "red"}}, "colour"),
        ({"action": "hold", "filter": "everything"}, "filter"),
        ({"action": "hold", "filter": {"older_than": -1}}, "older_than"),
    ],
)
def test_queue_action_bad_input_is_400(world: World, body: dict[str, Any], field: str) -> None:
    assert_error(world.op.post("/api/v1/queue/actions", body), 400, "invalid_input", field)


def test_queue_action_on_unknown_id_is_404(world: World) -> None:
    assert_error(world.op.post("/api/v1/queue/actions", {"action": "hold", "ids": ["NOPE.1"]}), 404)


# -- events, status, audit -------------------------------------------------------------------


def test_events_filters_and_paging(world: World) -> None:
    domain = f"{unique('ev')}.test"
    started = time.time() - 1
    world.add_domain(domain, "cop")
    ids = world.queued_mail(domain, 2)
    world.op.post("/api/v1/queue/actions", {"action": "hold", "ids": ids})
    world.op.post("/api/v1/queue/actions", {"action": "release", "ids": ids})
    everything = world.op.get("/api/v1/events", domain=domain, limit=1000)
    assert everything.status == 200, everything.body
    kinds = [e["kind"] for e in everything.body["events"]]
    assert (
        "domain.added" in kinds
        and kinds.count("queue.held") == 2
        and kinds.count("queue.released") == 2
    )
    assert {e["domain"] for e in everything.body["events"]} == {domain}
    stamps = [e["at"] for e in everything.body["events"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first

    held = world.op.get("/api/v1/events", domain=domain, kind="queue.held").body["events"]
    assert [e["kind"] for e in held] == ["queue.held", "queue.held"]
    prefixed = world.op.get("/api/v1/events", domain=domain, kind="queue.").body["events"]
    assert {e["kind"] for e in prefixed} == {"queue.held", "queue.released"}
    assert (
        world.op.get("/api/v1/events", domain=domain, since=time.time() + 3600).body["events"] == []
    )
    recent = world.op.get("/api/v1/events", domain=domain, since=started).body["events"]
    assert len(recent) == len(everything.body["events"])

    paged: list[int] = []
    cursor: str | None = None
    while True:
        page = world.op.get("/api/v1/events", domain=domain, limit=2, cursor=cursor)
        assert page.status == 200 and len(page.body["events"]) <= 2
        paged.extend(e["id"] for e in page.body["events"])
        cursor = page.body["next"]
        if cursor is None:
            break
    assert paged == [e["id"] for e in everything.body["events"]]
    assert len(paged) >= 5

    assert_error(world.op.get("/api/v1/events", since="last week"), 400, "invalid_input", "since")
    assert_error(world.op.get("/api/v1/events", limit="-1"), 400, "invalid_input", "limit")
    # The operator reads the events of domains no longer protected too; anybody else gets 404
    # for a domain it does not have.
    assert world.op.get("/api/v1/events", domain="nowhere.test").body["events"] == []
    assert_error(world.clients["customer-key"].get("/api/v1/events", domain="nowhere.test"), 404)


def test_status(world: World) -> None:
    answer = world.op.get("/api/v1/status")
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["version"] and body["time"] > 0
    assert body["domains"] >= 5 and body["queued"] >= 8
    queues = {q["domain"]: q for q in body["queues"]}
    assert queues["cb1.test"]["queued"] >= 1
    # A customer admin's status counts only its own domains.
    mine = world.clients["customer-key"].get("/api/v1/status").body
    assert mine["domains"] == 1 and {q["domain"] for q in mine["queues"]} <= {"ca1.test"}


def test_dashboard(world: World) -> None:
    answer = world.op.get("/api/v1/dashboard")
    assert answer.status == 200, answer.body
    body = answer.body
    rows = {r["name"]: r for r in body["domains"]}
    assert {"ca1.test", "ca2.test", "cb1.test", "cop.test"} <= set(rows)
    assert rows["cb1.test"]["queued"] >= 2 and rows["cb1.test"]["oldest_age"] >= 0
    assert rows["cb1.test"]["customer"] == "cb1" and rows["cb1.test"]["reseller"] == "rb"
    assert {r["state"] for r in rows.values()} <= {"normal", "held", "draining", "outage"}
    assert body["totals"]["domains"] == len(rows) and body["totals"]["queued"] >= 8
    assert body["refresh_after"] > 0
    # A customer admin's dashboard holds its own domain only.
    mine = world.clients["customer-session"].get("/api/v1/dashboard").body
    assert [r["name"] for r in mine["domains"]] == ["ca1.test"]
    assert {o["domain"] for o in mine["outages"]} <= {"ca1.test"}


def test_dashboard_series(world: World) -> None:
    answer = world.op.get("/api/v1/dashboard/series", hours=1)
    assert answer.status == 200, answer.body
    assert answer.body["step"] == 60 and len(answer.body["depth"]) == 60
    assert world.op.get("/api/v1/dashboard/series").body["step"] == 120  # 24 hours
    customer = world.clients["customer-key"]
    mine = customer.get("/api/v1/dashboard/series", domain="ca1.test", hours=2)
    assert mine.status == 200 and mine.body["domain"] == "ca1.test"
    other = customer.get("/api/v1/dashboard/series", domain="cb1.test")
    assert_error(other, 404, "not_found")
    for hours in ("0", "721", "x", "1.5"):
        bad = world.op.get("/api/v1/dashboard/series", hours=hours)
        assert_error(bad, 400, "invalid_input")
        assert bad.body["error"]["field"] == "hours"


def test_audit_records_changes_and_pages(world: World) -> None:
    name = unique("audited")
    assert world.op.post("/api/v1/resellers", {"name": name}).status == 201
    assert world.op.delete(f"/api/v1/resellers/{name}").status == 204
    first = world.op.get("/api/v1/audit", limit=2)
    assert first.status == 200, first.body
    records = first.body["records"]
    assert [(r["action"], r["target"]) for r in records] == [
        ("reseller.remove", name),
        ("reseller.add", name),
    ]
    assert records[0]["actor"] == "admin" and records[0]["via"] == "api"
    assert records[0]["source"] == "127.0.0.1"
    second = world.op.get("/api/v1/audit", limit=2, cursor=first.body["next"])
    assert second.status == 200
    assert second.body["records"] and second.body["records"][0]["id"] < records[-1]["id"]
    # A customer admin reads only its own tenant's records.
    theirs = world.clients["customer-key"].get("/api/v1/audit", limit=1000).body["records"]
    assert theirs and all(r["customer"] == "ca1" for r in theirs)


# -- resellers, customers, admins ------------------------------------------------------------


def test_resellers(world: World) -> None:
    name = unique("rs")
    added = world.op.post(
        "/api/v1/resellers",
        {"name": name, "product_name": "Mail Shield", "support_email": "help@shield.test"},
    )
    assert added.status == 201, added.body
    assert added.body["name"] == name and added.body["product_name"] == "Mail Shield"
    assert name in [r["name"] for r in world.op.get("/api/v1/resellers").body["resellers"]]
    assert world.op.get(f"/api/v1/resellers/{name}").body["support_email"] == "help@shield.test"
    patched = world.op.patch(f"/api/v1/resellers/{name}", {"primary_color": "#123456"})
    assert patched.status == 200 and patched.body["primary_color"] == "#123456"
    assert patched.body["product_name"] == "Mail Shield"
    assert_error(
        world.op.patch(f"/api/v1/resellers/{name}", {"name": "renamed"}), 400, field="name"
    )
    assert_error(world.op.post("/api/v1/resellers", {"name": name}), 409, "conflict")
    assert_error(world.op.post("/api/v1/resellers", {"name": "Bad Name!"}), 400, field="name")
    assert_error(world.op.post("/api/v1/resellers", {}), 400, field="name")
    # Not removable while a customer is under it.
    world.op.post("/api/v1/customers", {"name": f"{name}-c", "reseller": name})
    assert_error(world.op.delete(f"/api/v1/resellers/{name}"), 409)
    assert world.op.delete(f"/api/v1/customers/{name}-c").status == 204
    assert world.op.delete(f"/api/v1/resellers/{name}").status == 204
    assert_error(world.op.get(f"/api/v1/resellers/{name}"), 404, "not_found")
    assert_error(world.op.delete(f"/api/v1/resellers/{name}"), 404, "not_found")


def test_customers(world: World) -> None:
    name = unique("cu")
    direct = world.op.post("/api/v1/customers", {"name": name})
    assert direct.status == 201 and direct.body["reseller"] in (None, "")
    under = world.op.post("/api/v1/customers", {"name": f"{name}-r", "reseller": "ra"})
    assert under.status == 201 and under.body["reseller"] == "ra"
    assert {name, f"{name}-r"} <= {
        c["name"] for c in world.op.get("/api/v1/customers").body["customers"]
    }
    assert f"{name}-r" in [
        c["name"] for c in world.op.get("/api/v1/customers", reseller="ra").body["customers"]
    ]
    assert world.op.get(f"/api/v1/customers/{name}").body["name"] == name
    # A reseller admin adds customers under its own reseller only.
    mine = world.clients["reseller-key"].post("/api/v1/customers", {"name": f"{name}-m"})
    assert mine.status == 201 and mine.body["reseller"] == "ra"
    assert_error(world.op.post("/api/v1/customers", {"name": name}), 409, "conflict")
    assert_error(
        world.op.post("/api/v1/customers", {"name": f"{name}-x", "reseller": "nobody"}), 404
    )
    assert_error(world.op.post("/api/v1/customers", {"name": 5}), 400, field="name")
    # Not removable while a domain is under it.
    world.add_domain(f"{name}.test", name)
    assert_error(world.op.delete(f"/api/v1/customers/{name}"), 409)
    assert world.op.delete(f"/api/v1/domains/{name}.test").status == 204
    for each in (name, f"{name}-r", f"{name}-m"):
        assert world.op.delete(f"/api/v1/customers/{each}").status == 204
    assert_error(world.op.get(f"/api/v1/customers/{name}"), 404, "not_found")


def test_admins(world: World) -> None:
    name = unique("adm")
    added = world.op.post(
        "/api/v1/admins",
        {"name": name, "role": "customer", "customer": "cop", "password": PASSWORD},
    )
    assert added.status == 201, added.body
    assert added.body == {**added.body, "name": name, "role": "customer", "customer": "cop"}
    assert "password" not in added.body and "password_hash" not in added.body
    assert name in [a["name"] for a in world.op.get("/api/v1/admins").body["admins"]]
    assert world.op.get(f"/api/v1/admins/{name}").body["role"] == "customer"
    # The new account logs in, and sees its customer's domain only.
    session = world.client()
    assert session.login(name, PASSWORD).status == 200
    seen = session.get("/api/v1/domains").body["domains"]
    assert "cop.test" in [d["name"] for d in seen] and {d["customer"] for d in seen} == {"cop"}
    assert_error(
        world.op.post("/api/v1/admins", {"name": name, "role": "operator", "password": PASSWORD}),
        409,
        "conflict",
    )
    assert_error(
        world.op.post(
            "/api/v1/admins", {"name": unique("a"), "role": "king", "password": PASSWORD}
        ),
        400,
        field="role",
    )
    assert_error(
        world.op.post(
            "/api/v1/admins", {"name": unique("a"), "role": "customer", "password": PASSWORD}
        ),
        400,
        field="customer",
    )
    assert_error(
        world.op.post(
            "/api/v1/admins", {"name": unique("a"), "role": "operator", "password": "short"}
        ),
        400,
        field="password",
    )
    assert_error(
        world.op.post("/api/v1/admins", {"name": unique("a"), "role": "operator"}),
        400,
        field="password",
    )
    # A reseller admin may not make an operator.
    assert_error(
        world.clients["reseller-key"].post(
            "/api/v1/admins", {"name": unique("a"), "role": "operator", "password": PASSWORD}
        ),
        400,
        field="role",
    )
    assert world.op.delete(f"/api/v1/admins/{name}").status == 204
    assert_error(world.op.get(f"/api/v1/admins/{name}"), 404, "not_found")
    # Its session ended with it.
    assert_error(session.get("/api/v1/domains"), 401)


def test_api_keys_create_list_revoke(world: World) -> None:
    account = unique("keyed")
    world.add_account(account, "customer", customer="cop")
    made = world.op.post(
        "/api/v1/api-keys",
        {"admin": account, "scope": "read", "expires_days": 30, "allow_ip": ["127.0.0.0/8"]},
    )
    assert made.status == 201, made.body
    body = made.body
    assert (
        body["key"].startswith("strata_") and body["admin"] == account and body["scope"] == "read"
    )
    assert body["allow_ip"] == ["127.0.0.0/8"]
    assert body["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=120)
    listed = world.op.get("/api/v1/api-keys", admin=account).body["api_keys"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert all("key" not in k and "secret_hash" not in k for k in listed)  # shown once, never again
    key = world.client(body["key"])
    assert key.get("/api/v1/domains").status == 200
    assert (
        world.op.get("/api/v1/api-keys", admin=account).body["api_keys"][0]["last_used_at"]
        is not None
    )

    second = world.op.post("/api/v1/api-keys", {"admin": account, "scope": "operate"}).body
    # Revoke by query (?id=) and by path.
    assert world.op.delete("/api/v1/api-keys", id=body["id"]).status == 204
    assert world.op.delete(f"/api/v1/api-keys/{second['id']}").status == 204
    assert world.op.get("/api/v1/api-keys", admin=account).body["api_keys"] == []
    assert_error(key.get("/api/v1/domains"), 401)
    assert_error(world.client(second["key"]).get("/api/v1/domains"), 401)
    assert_error(world.op.delete("/api/v1/api-keys", id=body["id"]), 404, "not_found")
    assert_error(world.op.delete("/api/v1/api-keys"), 400, "invalid_input", "id")

    for bad, wrong in (({"admin": account, "scope": "god"}, "scope"),
                       ({"admin": account, "scope": "read", "expires_days": 0}, "expires_days"),
                       ({"admin": account, "scope": "read", "allow_ip": ["nowhere"]}, "allow_ip"),
                       ({"scope": "read"}, "admin")):  # fmt: skip
        assert_error(world.op.post("/api/v1/api-keys", bad), 400, "invalid_input", wrong)
    assert_error(world.op.post("/api/v1/api-keys", {"admin": "nobody-here", "scope": "read"}), 404)


# -- the tenancy matrix ----------------------------------------------------------------------

Cell = Callable[[AdminClient, Tenant, World], Answer]


def _passwd(t: Tenant) -> str:
    return f"intruder@{t.domain}:{user_hash()}\n"


READ_CELLS: dict[str, Cell] = {
    "domain-show": lambda c, t, w: c.get(f"/api/v1/domains/{t.domain}"),
    "users-list": lambda c, t, w: c.get(f"/api/v1/domains/{t.domain}/users"),
    "queue-show": lambda c, t, w: c.get(f"/api/v1/queue/{t.entries[0]}"),
    "queue-list-filtered": lambda c, t, w: c.get("/api/v1/queue", domain=t.domain),
    "events-filtered": lambda c, t, w: c.get("/api/v1/events", domain=t.domain),
    "customer-show": lambda c, t, w: c.get(f"/api/v1/customers/{t.customer}"),
    "customers-of-reseller": lambda c, t, w: c.get("/api/v1/customers", reseller=t.reseller),
    "reseller-show": lambda c, t, w: c.get(f"/api/v1/resellers/{t.reseller}"),
    "admin-show": lambda c, t, w: c.get(f"/api/v1/admins/{t.account}"),
    "api-keys-of-admin": lambda c, t, w: c.get("/api/v1/api-keys", admin=t.account),
    "operator-admin-show": lambda c, t, w: c.get("/api/v1/admins/admin"),
    "operator-domain-show": lambda c, t, w: c.get(f"/api/v1/domains/{SENDER_DOMAIN}"),
}
WRITE_CELLS: dict[str, Cell] = {
    "domain-update": lambda c, t, w: c.patch(
        f"/api/v1/domains/{t.domain}", {"mode": "both", "relay": "127.0.0.1:1"}
    ),
    "domain-delete": lambda c, t, w: c.delete(f"/api/v1/domains/{t.domain}"),
    "domain-add-under-their-customer": lambda c, t, w: c.post(
        "/api/v1/domains",
        {"name": f"{unique('stolen')}.test", "customer": t.customer, "relay": "127.0.0.1:1"},
    ),
    "users-add": lambda c, t, w: c.post(
        f"/api/v1/domains/{t.domain}/users",
        {"address": f"intruder@{t.domain}", "password": "x" * 16},
    ),
    "users-replace": lambda c, t, w: put_users(c, t.domain, _passwd(t)),
    "users-merge": lambda c, t, w: put_users(c, t.domain, _passwd(t), merge=True),
    "user-delete": lambda c, t, w: c.delete(f"/api/v1/domains/{t.domain}/users/{t.user}"),
    "queue-hold-by-id": lambda c, t, w: c.post(
        "/api/v1/queue/actions", {"action": "hold", "ids": t.entries}
    ),
    "queue-delete-by-id": lambda c, t, w: c.post(
        "/api/v1/queue/actions", {"action": "delete", "ids": t.entries[:1]}
    ),
    "queue-bounce-by-id": lambda c, t, w: c.post(
        "/api/v1/queue/actions", {"action": "bounce", "ids": t.entries[:1]}
    ),
    "queue-hold-filtered": lambda c, t, w: c.post(
        "/api/v1/queue/actions", {"action": "hold", "filter": {"domain": t.domain}}
    ),
    "queue-delete-filtered": lambda c, t, w: c.post(
        "/api/v1/queue/actions", {"action": "delete", "filter": {"domain": t.domain}}
    ),
    "customer-delete": lambda c, t, w: c.delete(f"/api/v1/customers/{t.customer}"),
    "customer-add-under-their-reseller": lambda c, t, w: c.post(
        "/api/v1/customers", {"name": unique("stolen"), "reseller": t.reseller}
    ),
    "reseller-update": lambda c, t, w: c.patch(
        f"/api/v1/resellers/{t.reseller}", {"product_name": "pwned"}
    ),
    "reseller-delete": lambda c, t, w: c.delete(f"/api/v1/resellers/{t.reseller}"),
    "admin-delete": lambda c, t, w: c.delete(f"/api/v1/admins/{t.account}"),
    "admin-add-under-their-customer": lambda c, t, w: c.post(
        "/api/v1/admins",
        {
            "name": unique("stolen"),
            "role": "customer",
            "customer": t.customer,
            "password": PASSWORD,
        },
    ),
    "api-key-create-for-their-admin": lambda c, t, w: c.post(
        "/api/v1/api-keys", {"admin": t.account, "scope": "admin"}
    ),
    "api-key-revoke": lambda c, t, w: c.delete(f"/api/v1/api-keys/{t.key_id}"),
    "api-key-revoke-by-query": lambda c, t, w: c.delete("/api/v1/api-keys", id=t.key_id),
    "operator-admin-delete": lambda c, t, w: c.delete("/api/v1/admins/admin"),
    "operator-domain-delete": lambda c, t, w: c.delete(f"/api/v1/domains/{SENDER_DOMAIN}"),
}
# Each attacker and the tenant it aims at: a reseller admin at the other reseller's customer; a
# customer admin at its sibling (the same reseller's other customer) and at the other reseller.
ATTACKERS = {
    "reseller-key": "of-rb",
    "reseller-session": "of-rb",
    "customer-key": "of-ca2",
    "customer-session": "of-ca2",
}


@pytest.mark.parametrize("cell", [*READ_CELLS, *WRITE_CELLS])
@pytest.mark.parametrize("attacker", list(ATTACKERS))
def test_tenancy_another_tenants_object_is_404_and_unchanged(
    world: World, attacker: str, cell: str
) -> None:
    victim = world.tenants[ATTACKERS[attacker]]
    client = world.clients[attacker]
    before = snapshot(world)
    answer = {**READ_CELLS, **WRITE_CELLS}[cell](client, victim, world)
    assert_error(answer, 404, "not_found")
    assert snapshot(world) == before
    # The attacker's credentials still work: the 404 was about the object, not about them.
    assert client.get("/api/v1/domains").status == 200


@pytest.mark.parametrize("cell", [c for c in READ_CELLS if not c.startswith("operator-")])
def test_tenancy_the_operator_sees_what_others_may_not(world: World, cell: str) -> None:
    """The control for the matrix: each object the other tenants got 404 for exists, and the
    operator reads it."""
    for victim in world.tenants.values():
        answer = READ_CELLS[cell](world.op, victim, world)
        assert answer.status == 200, (cell, victim, answer.body)


def test_tenancy_lists_show_only_the_callers_tenant(world: World) -> None:
    reseller = world.clients["reseller-key"]
    assert {d["name"] for d in reseller.get("/api/v1/domains").body["domains"]} == {
        "ca1.test",
        "ca2.test",
    }
    assert {c["name"] for c in reseller.get("/api/v1/customers").body["customers"]} >= {
        "ca1",
        "ca2",
    }
    assert "cb1" not in {c["name"] for c in reseller.get("/api/v1/customers").body["customers"]}
    assert [r["name"] for r in reseller.get("/api/v1/resellers").body["resellers"]] == ["ra"]
    assert {e["domain"] for e in reseller.get("/api/v1/queue", limit=1000).body["entries"]} == {
        "ca1.test",
        "ca2.test",
    }
    admins = {a["name"] for a in reseller.get("/api/v1/admins").body["admins"]}
    assert "admin" not in admins and "rb-admin" not in admins and "cb1-admin" not in admins
    assert {"ra-admin", "ca1-admin", "ca2-admin"} <= admins
    customer = world.clients["customer-key"]
    assert [d["name"] for d in customer.get("/api/v1/domains").body["domains"]] == ["ca1.test"]
    assert customer.get("/api/v1/resellers").body["resellers"] == []
    assert {e["domain"] for e in customer.get("/api/v1/queue").body["entries"]} == {"ca1.test"}
    assert {a["name"] for a in customer.get("/api/v1/admins").body["admins"]} == {"ca1-admin"}
    events = customer.get("/api/v1/events", limit=1000).body["events"]
    assert events and {e["domain"] for e in events} == {"ca1.test"}


# -- key scopes, expiry, revocation, addresses ------------------------------------------------


def test_a_read_key_cannot_hold_and_changes_nothing(world: World) -> None:
    key, _ = world.add_key("ca1-admin", "read")
    reader = world.client(key)
    entries = world.entries(domain="ca1.test")
    assert reader.get("/api/v1/queue", domain="ca1.test").status == 200
    before = snapshot(world)
    answer = reader.post(
        "/api/v1/queue/actions", {"action": "hold", "ids": [e["id"] for e in entries]}
    )
    assert_error(answer, 401, "insufficient_scope")
    answer = reader.post(
        "/api/v1/queue/actions", {"action": "hold", "filter": {"domain": "ca1.test"}}
    )
    assert_error(answer, 401, "insufficient_scope")
    assert_error(
        reader.patch("/api/v1/domains/ca1.test", {"mode": "both"}), 401, "insufficient_scope"
    )
    assert snapshot(world) == before


def test_an_operate_key_can_hold_but_cannot_create_a_domain(world: World) -> None:
    domain = f"{unique('op')}.test"
    world.add_domain(domain, "cop")
    ids = world.queued_mail(domain, 2)
    key, _ = world.add_key("cop-admin", "operate")
    operator = world.client(key)
    held = operator.post("/api/v1/queue/actions", {"action": "hold", "ids": ids})
    assert held.status == 200 and sorted(held.body["changed"]) == sorted(ids)
    assert {world.entry_state(i) for i in ids} == {"held"}
    released = operator.post(
        "/api/v1/queue/actions", {"action": "release", "filter": {"domain": domain}}
    )
    assert released.status == 200 and released.body["changed_count"] == 2
    name = f"{unique('nope')}.test"
    assert_error(
        operator.post("/api/v1/domains", {"name": name, "relay": world.relay()}),
        401,
        "insufficient_scope",
    )
    assert_error(world.op.get(f"/api/v1/domains/{name}"), 404)
    assert_error(operator.delete(f"/api/v1/domains/{domain}"), 401, "insufficient_scope")
    assert_error(
        operator.post("/api/v1/api-keys", {"admin": "cop-admin", "scope": "admin"}),
        401,
        "insufficient_scope",
    )
    assert world.op.get(f"/api/v1/domains/{domain}").status == 200


def test_an_expired_key_is_401(world: World) -> None:
    key, key_id = world.add_key("cop-admin", "admin", expires_days=1)
    client = world.client(key)
    assert client.get("/api/v1/domains").status == 200
    # A real process's clock cannot be advanced: move the key's expiry into the past instead.
    with sqlite3.connect(world.strata.data_dir / DB_NAME, timeout=30) as db:
        changed = db.execute(
            "UPDATE api_keys SET expires_at = ? WHERE id = ?", (time.time() - 60, key_id)
        )
        assert changed.rowcount == 1
    db.close()
    answer = client.get("/api/v1/domains")
    assert_error(answer, 401, "unauthorized")
    assert "expired" in answer.body["error"]["message"]
    assert_error(client.post("/api/v1/customers", {"name": unique("late")}), 401)


def test_a_revoked_key_is_401(world: World) -> None:
    key, key_id = world.add_key("cop-admin", "admin")
    client = world.client(key)
    assert client.get("/api/v1/status").status == 200
    assert world.op.delete(f"/api/v1/api-keys/{key_id}").status == 204
    assert_error(client.get("/api/v1/status"), 401, "unauthorized")
    assert_error(client.post("/api/v1/customers", {"name": unique("gone")}), 401)


def test_a_key_is_refused_from_an_address_it_is_not_allowed_from(world: World) -> None:
    key, _ = world.add_key("cop-admin", "admin", allow_ip=["127.0.0.2/32"])
    answer = world.client(key).get("/api/v1/domains")
    assert_error(answer, 401, "unauthorized")
    allowed = world.client(key, source="127.0.0.2").get("/api/v1/domains")
    assert allowed.status == 200, allowed.body
    assert "cop.test" in [d["name"] for d in allowed.body["domains"]]


# -- CSRF and the session cookie -------------------------------------------------------------


@pytest.fixture
def browser(world: World) -> AdminClient:
    client = world.client()
    assert client.login("admin", world.password).status == 200
    return client


def _reseller_exists(world: World, name: str) -> bool:
    return world.op.get(f"/api/v1/resellers/{name}").status == 200


def test_csrf_without_the_token_is_refused_and_changes_nothing(
    world: World, browser: AdminClient
) -> None:
    name = unique("csrf")
    answer = browser.request("POST", "/api/v1/resellers", {"name": name}, csrf=False)
    assert_error(answer, 403, "csrf")
    assert not _reseller_exists(world, name)
    wrong = browser.request("POST", "/api/v1/resellers", {"name": name}, csrf=False,
                            headers={"X-CSRF-Token": "not-the-token"})  # fmt: skip
    assert_error(wrong, 403, "csrf")
    assert not _reseller_exists(world, name)
    # A delete is state-changing too.
    victim = unique("keep")
    assert world.op.post("/api/v1/resellers", {"name": victim}).status == 201
    assert_error(browser.request("DELETE", f"/api/v1/resellers/{victim}", csrf=False), 403, "csrf")
    assert _reseller_exists(world, victim)
    # Reading needs no token.
    assert browser.request("GET", "/api/v1/resellers", csrf=False).status == 200


def test_csrf_from_another_origin_is_refused_and_changes_nothing(
    world: World, browser: AdminClient
) -> None:
    name = unique("origin")
    answer = browser.request(
        "POST", "/api/v1/resellers", {"name": name}, headers={"Origin": "http://evil.example"}
    )
    assert_error(answer, 403, "csrf")
    assert not _reseller_exists(world, name)
    answer = browser.request(
        "POST", "/api/v1/resellers", {"name": name}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert_error(answer, 403, "csrf")
    answer = browser.request(
        "POST", "/api/v1/resellers", {"name": name}, headers={"Sec-Fetch-Site": "same-site"}
    )
    assert_error(answer, 403, "csrf")
    assert not _reseller_exists(world, name)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://127.0.0.1:PORT"}, {"Sec-Fetch-Site": "same-origin"}],
    ids=["no-origin", "same-origin", "fetch-same-origin"],
)
def test_csrf_the_same_request_with_its_token_succeeds(
    world: World, browser: AdminClient, headers: dict[str, str]
) -> None:
    name = unique("ok")
    headers = {k: v.replace("PORT", str(world.admin_port)) for k, v in headers.items()}
    answer = browser.request("POST", "/api/v1/resellers", {"name": name}, headers=headers)
    assert answer.status == 201, answer.body
    assert _reseller_exists(world, name)
    assert browser.request("DELETE", f"/api/v1/resellers/{name}", headers=headers).status == 204


def test_login_from_a_form_is_refused(world: World) -> None:
    client = world.client()
    form = f"name=admin&password={world.password}".encode()
    answer = client.request(
        "POST", "/api/v1/session", raw=form, content_type="application/x-www-form-urlencoded"
    )
    assert_error(answer, 415)
    assert "set-cookie" not in answer.headers
    answer = client.request("POST", "/api/v1/session", raw=b"name=admin", content_type="text/plain")
    assert_error(answer, 415)
    # Nor from another site's script.
    login = {"name": "admin", "password": world.password}
    answer = client.request(
        "POST", "/api/v1/session", login, headers={"Origin": "http://evil.example"}
    )
    assert_error(answer, 403)
    assert "set-cookie" not in answer.headers


def test_login_wrong_password_is_401(world: World) -> None:
    client = world.client()
    answer = client.login("cop-admin", "not the password at all")
    assert_error(answer, 401)
    assert "set-cookie" not in answer.headers
    assert_error(client.login("nobody-at-all", "whatever password"), 401)


def test_session_cookie_attributes(world: World) -> None:
    client = world.client()
    answer = client.login("admin", world.password)
    assert answer.status == 200
    cookie = answer.headers["set-cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    assert name_value.startswith("strata_session=") and len(name_value) > 30
    lowered = {a.lower() for a in attributes}
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/" in lowered
    assert "secure" not in lowered  # no TLS on this listener
    assert not any(a.startswith(("expires", "max-age")) for a in lowered)  # ends with the browser
    shown = client.get("/api/v1/session")
    assert (
        shown.status == 200
        and shown.body["admin"] == "admin"
        and shown.body["csrf_token"] == client.csrf
    )
    assert client.request("DELETE", "/api/v1/session").status == 204
    assert_error(client.get("/api/v1/domains"), 401)


# -- flush, DKIM, one's own password and TOTP -------------------------------------------------


def test_flush_asks_the_running_server_and_needs_operate(world: World) -> None:
    domain = f"{unique('fl')}.test"
    world.add_domain(domain)
    world.queued_mail(domain, 2)
    answer = world.op.post("/api/v1/queue/flush", {"domain": domain})
    assert answer.status == 200, answer.body
    assert answer.body["domain"] == domain and answer.body["queued"] == 2
    assert len(answer.body["requests"]) == 1
    reader = world.client(world.add_key("admin", "read")[0])
    assert_error(reader.post("/api/v1/queue/flush", {"domain": domain}), 401)
    assert_error(world.op.post("/api/v1/queue/flush", {"domain": "nowhere.test"}), 404)


def test_dkim_generate_and_show(world: World) -> None:
    domain = f"{unique('dk')}.test"
    world.add_domain(domain)
    none = world.op.get(f"/api/v1/domains/{domain}/dkim")
    assert none.status == 200 and none.body["selector"] is None and none.body["record"] is None
    made = world.op.post(
        f"/api/v1/domains/{domain}/dkim", {"selector": "s1", "algorithm": "ed25519"}
    )
    assert made.status == 201, made.body
    assert made.body["name"] == f"s1._domainkey.{domain}."
    assert made.body["record"].startswith("v=DKIM1; k=ed25519; p=")
    shown = world.op.get(f"/api/v1/domains/{domain}/dkim")
    assert shown.body == made.body
    again = world.op.post(f"/api/v1/domains/{domain}/dkim", {"selector": "s1"})
    assert_error(again, 409)
    bad = world.op.post(f"/api/v1/domains/{domain}/dkim", {"selector": "no spaces"})
    assert_error(bad, 400, field="selector")


def test_own_password_change_ends_the_session_and_takes_the_new_one(world: World) -> None:
    name = unique("pw")
    world.add_account(name, "operator")
    browser = world.client()
    assert browser.login(name, PASSWORD).status == 200
    wrong = browser.post(
        "/api/v1/session/password",
        {"current_password": "not it at all", "new_password": "a new long password"},
    )
    assert_error(wrong, 400, field="current_password")
    changed = browser.post(
        "/api/v1/session/password",
        {"current_password": PASSWORD, "new_password": "a new long password"},
    )
    assert changed.status == 204, changed.body
    assert_error(browser.get("/api/v1/admins"), 401)  # the session ended with the old password
    assert world.client().login(name, PASSWORD).status == 401
    assert world.client().login(name, "a new long password").status == 200


def test_totp_enrolment_then_login_needs_the_code(world: World) -> None:
    name = unique("totp")
    world.add_account(name, "operator")
    browser = world.client()
    assert browser.login(name, PASSWORD).status == 200
    begun = browser.post("/api/v1/session/totp", {})
    assert begun.status == 200, begun.body
    secret = begun.body["secret"]
    assert begun.body["uri"].startswith("otpauth://totp/")
    # Not on until confirmed: a password alone still logs in.
    assert world.client().login(name, PASSWORD).status == 200
    assert_error(
        browser.post("/api/v1/session/totp/confirm", {"secret": secret, "code": "000000"}), 400
    )
    confirmed = browser.post(
        "/api/v1/session/totp/confirm", {"secret": secret, "code": pyotp.TOTP(secret).now()}
    )
    assert confirmed.status == 200, confirmed.body
    codes = confirmed.body["recovery_codes"]
    assert len(codes) == 10
    needs = world.client().login(name, PASSWORD)
    assert needs.status == 401 and needs.error_code == "second_factor_required"
    # A recovery code works once.
    assert world.client().login(name, PASSWORD, codes[0]).status == 200
    assert world.client().login(name, PASSWORD, codes[0]).status == 401
    listed = world.op.get(f"/api/v1/admins/{name}")
    assert listed.body["totp"] is True
    off = browser.post("/api/v1/session/totp/disable", {"code": codes[1]})
    assert off.status == 204, off.body
    assert world.client().login(name, PASSWORD).status == 200
