"""
The branding routes of the admin site (#14), in process (treq's StubTreq over the Klein
resource, a MemoryStore on a task.Clock): host names through POST/PATCH, the logo upload, the
caller's own brand, and the public ``/branding`` and ``/branding/logo`` that Roundcube and the
login page ask without credentials.  The whole API against a real server is
tests/interop/test_admin_api.py; Roundcube showing the brand is
tests/e2e/test_roundcube_branding.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from strata_twisted.admin.api import AdminAPI
from strata_twisted.config import Settings
from strata_twisted.core.admin import apikeys
from strata_twisted.core.admin.auth import AdminLogin, Passwords, SessionStore
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import Caller
from strata_twisted.model import AdminAccount, Customer, Reseller
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
BASE = "http://strata.test"


class Site:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        s = MemoryStore(self.clock)
        self.store = s
        self.ctx = AdminContext(
            domains=s, queue=s, messages=s, events=s, monitor=s, control=s, credentials=s,
            tenants=s, admins=s, audit=s, series=s, clock=self.clock,
            settings=Settings(data_dir=tmp_path, hostname="strata.test"),
        )  # fmt: skip
        passwords = Passwords()
        api = AdminAPI(
            self.ctx,
            SessionStore(self.clock, 3600),
            AdminLogin(self.clock, passwords),
            passwords,
            secure=False,
            metrics=Resource(),
        )
        self.http: Any = StubTreq(api.resource())  # its methods are made at run time
        result_of(s.add_reseller(Reseller("r1")))
        result_of(s.add_reseller(Reseller("r2")))
        result_of(s.add_customer(Customer("c1", "r1")))
        result_of(s.add_customer(Customer("own")))
        self.keys: dict[str, str] = {}
        op = Caller("op", "operator")
        for name, role, reseller, customer in (
            ("op", "operator", "", ""),
            ("r1-admin", "reseller", "r1", ""),
            ("c1-admin", "customer", "", "c1"),
            ("own-admin", "customer", "", "own"),
        ):
            account = AdminAccount(name, role, "$argon2id$x", reseller=reseller, customer=customer)  # type: ignore[arg-type]
            result_of(s.add_admin(account))
            made = apikeys.create_api_key(self.ctx, op, name, "admin")
            self.keys[name] = result_of(Deferred.fromCoroutine(made))[0]

    def request(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "op",
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        headers: dict[bytes, list[bytes]] = {}
        if who is not None:
            headers[b"authorization"] = [f"Bearer {self.keys[who]}".encode()]
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers[b"content-type"] = [content_type.encode()]
        response = result_of(
            self.http.request(method, BASE + path, headers=headers, data=data or b"")
        )
        content = result_of(response.content())
        return response.code, dict(response.headers.getAllRawHeaders()), content

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        code, _, content = self.request(method, path, **kwargs)
        return code, json.loads(content) if content else None


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_host_names_through_post_and_patch_and_a_taken_one_is_409_naming_the_field(
    site: Site,
) -> None:
    code, made = site.json(
        "POST", "/api/v1/resellers", body={"name": "r3", "hostnames": ["Mail.R3.test"]}
    )
    assert (code, made["hostnames"]) == (201, ["mail.r3.test"])
    code, patched = site.json(
        "PATCH",
        "/api/v1/resellers/r1",
        body={"product_name": "Acme", "hostnames": ["webmail.acme-it.test"]},
    )
    assert (code, patched["hostnames"]) == (200, ["webmail.acme-it.test"])
    code, error = site.json(
        "PATCH", "/api/v1/resellers/r2", body={"hostnames": ["webmail.acme-it.test"]}
    )
    assert code == 409
    assert error["error"]["code"] == "conflict"
    assert error["error"]["field"] == "hostnames"
    code, error = site.json("PATCH", "/api/v1/resellers/r2", body={"hostnames": ["no spaces"]})
    assert (code, error["error"]["field"]) == (400, "hostnames")
    # A reseller admin brands its own reseller, but host names are the operator's to give.
    code, _ = site.json(
        "PATCH", "/api/v1/resellers/r1", who="r1-admin", body={"primary_color": "#000"}
    )
    assert code == 200
    code, error = site.json(
        "PATCH", "/api/v1/resellers/r1", who="r1-admin", body={"hostnames": ["x.acme-it.test"]}
    )
    assert (code, error["error"]["field"]) == (400, "hostnames")


def test_logo_upload_read_and_delete(site: Site) -> None:
    code, stored = site.json(
        "PUT", "/api/v1/resellers/r1/logo", who="r1-admin", data=PNG, content_type="image/png"
    )
    assert (code, stored) == (200, {"content_type": "image/png", "size": len(PNG)})
    code, headers, content = site.request("GET", "/api/v1/resellers/r1/logo")
    assert (code, content) == (200, PNG)
    assert headers[b"Content-Type"] == [b"image/png"]
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    # SVG is refused whatever it claims to be; so is a body that is not an image type.
    code, error = site.json("PUT", "/api/v1/resellers/r1/logo", data=SVG, content_type="image/png")
    assert (code, error["error"]["field"]) == (400, "logo")
    code, error = site.json(
        "PUT", "/api/v1/resellers/r1/logo", data=SVG, content_type="image/svg+xml"
    )
    assert code == 415
    code, _ = site.json(
        "PUT", "/api/v1/resellers/r1/logo", data=PNG * 5000, content_type="image/png"
    )
    assert code == 413
    # Another reseller's logo does not exist for a customer admin, nor for no credentials.
    for who in ("c1-admin", None):
        code, _, _ = site.request("GET", "/api/v1/resellers/r1/logo", who=who)
        assert code in (401, 404)
    code, _ = site.json(
        "PUT", "/api/v1/resellers/r2/logo", who="r1-admin", data=PNG, content_type="image/png"
    )
    assert code == 404
    assert site.json("DELETE", "/api/v1/resellers/r1/logo")[0] == 204
    assert site.request("GET", "/api/v1/resellers/r1/logo")[0] == 404


def test_the_callers_own_brand(site: Site) -> None:
    site.json("PATCH", "/api/v1/resellers/r1", body={"product_name": "Acme Continuity"})
    site.request("PUT", "/api/v1/resellers/r1/logo", data=PNG, content_type="image/png")
    for who in ("r1-admin", "c1-admin"):
        code, answer = site.json("GET", "/api/v1/branding", who=who)
        assert code == 200
        assert answer["branding"]["product_name"] == "Acme Continuity"
        assert answer["branding"]["logo_url"].startswith("/api/v1/branding/logo?v=")
        code, _, content = site.request("GET", "/api/v1/branding/logo", who=who)
        assert (code, content) == (200, PNG)
    for who in ("op", "own-admin"):
        assert site.json("GET", "/api/v1/branding", who=who) == (200, {"branding": None})
        assert site.request("GET", "/api/v1/branding/logo", who=who)[0] == 404
    assert site.request("GET", "/api/v1/branding", who=None)[0] == 401


def test_public_branding_by_host_name_without_credentials(site: Site) -> None:
    site.json(
        "PATCH",
        "/api/v1/resellers/r1",
        body={
            "product_name": "Acme Continuity",
            "support_email": "help@acme-it.test",
            "hostnames": ["webmail.acme-it.test"],
        },
    )
    code, headers, content = site.request(
        "GET", "/branding?host=WEBMAIL.acme-it.test:8443", who=None
    )
    assert code == 200
    answer = json.loads(content)
    assert answer["product_name"] == "Acme Continuity"
    assert answer["support_email"] == "help@acme-it.test"
    assert answer["logo_url"] is None
    assert "hostnames" not in answer and "name" not in answer  # nothing about the tenant
    assert headers[b"Cache-Control"] == [b"public, max-age=60"]
    assert site.request("GET", "/branding/logo?host=webmail.acme-it.test", who=None)[0] == 404
    site.request("PUT", "/api/v1/resellers/r1/logo", data=PNG, content_type="image/png")
    answer = json.loads(site.request("GET", "/branding?host=webmail.acme-it.test", who=None)[2])
    assert answer["logo_url"].startswith("/branding/logo?host=webmail.acme-it.test&v=")
    code, headers, content = site.request("GET", answer["logo_url"], who=None)
    assert (code, content) == (200, PNG)
    assert headers[b"Content-Type"] == [b"image/png"]
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    assert headers[b"Cache-Control"] == [b"public, max-age=300"]
    for path in ("/branding?host=other.test", "/branding", "/branding/logo?host=other.test"):
        code, headers, content = site.request("GET", path, who=None)
        assert code == 404
        assert json.loads(content)["error"]["code"] == "not_found"
