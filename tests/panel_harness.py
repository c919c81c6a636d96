"""
The admin panel in process (#14): the real L{AdminSite} (panel and API) over a memory store and
a C{task.Clock}, driven by treq's C{StubTreq} (requests go through Klein and Twisted's HTTP
machinery with no socket), and a small browser that keeps cookies, reads forms and posts them
back with their CSRF token, as a person's browser does.

    world = PanelWorld(tmp_path)
    browser = world.browser()
    browser.login("op", PASSWORD)
    page = browser.get("/domains/add")
    page = browser.submit(page, "/domains/add", {"name": "example.test", ...})

The world has an operator ``op``, resellers ``r1`` and ``r2`` with customers ``c1`` (under r1)
and ``c2`` (under r2), an admin account for each (``r1-admin``, ``c1-admin``, ...), all with
L{PASSWORD}, and a domain per customer (``c1.test``, ``c2.test``) plus the operator's
``op.test``.  Fast argon2 parameters keep logins cheap.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import treq
from argon2 import PasswordHasher
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from strata_twisted.admin.api import AdminAPI
from strata_twisted.admin.panel import Panel
from strata_twisted.admin.site import AdminSite
from strata_twisted.config import Settings
from strata_twisted.core.admin.auth import AdminLogin, Passwords, SessionStore
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.model import (
    AdminAccount,
    Customer,
    Delivery,
    Domain,
    RelayTarget,
    Reseller,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

PASSWORD = "correct horse battery staple"  # noqa: S105 (the test accounts')
ORIGIN = "http://panel.test"
T = TypeVar("T")

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]*)"')


def run(operation: Coroutine[Any, Any, T]) -> T:
    return result_of(Deferred.fromCoroutine(operation))


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    text: str
    url: str

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def location(self) -> str | None:
        return self.header("location")

    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found is not None, "no CSRF field on this page"
        return html.unescape(found.group(1))

    def contains(self, text: str) -> bool:
        """Whether the page shows ``text`` (compared after unescaping the HTML)."""
        return text in html.unescape(self.text)


@dataclass
class PanelBrowser:
    world: PanelWorld
    origin: str = ORIGIN
    cookies: dict[str, str] = field(default_factory=dict)
    follow: bool = True
    # Each browser its own client: StubTreq keeps a cookie jar of its own, which two people
    # must not share.
    stub: StubTreq = field(init=False)

    def __post_init__(self) -> None:
        self.stub = StubTreq(self.world.site)

    def _store_cookies(self, headers: dict[str, list[str]]) -> None:
        for raw in headers.get("set-cookie", []):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def request(
        self,
        method: str,
        path: str,
        data: Mapping[str, str | Sequence[str]] | None = None,
        files: Mapping[str, tuple[str, str, bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        follow: bool | None = None,
    ) -> Response:
        url = urljoin(self.origin + "/", path)
        sent = {"Host": urlsplit(self.origin).netloc}
        sent.update(headers or {})
        kwargs: dict[str, Any] = {"headers": sent, "cookies": dict(self.cookies)}
        if files:
            # StubTreq refuses files=: the multipart body is made here, as a browser makes it.
            boundary, body = _multipart(_pairs(data or {}), files)
            sent["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            kwargs["data"] = body
        elif data is not None:
            kwargs["data"] = _pairs(data)
        stub = self.stub
        answer = stub.request(method, url, allow_redirects=False, **kwargs)  # type: ignore[attr-defined]
        stub.flush()
        response = result_of(answer)
        body = result_of(treq.content(response))
        stub.flush()
        got = {
            k.decode("latin-1").lower(): [v.decode("latin-1") for v in vs]
            for k, vs in response.headers.getAllRawHeaders()
        }
        self._store_cookies(got)
        result = Response(response.code, got, body.decode("utf-8", "replace"), url)
        if (follow if follow is not None else self.follow) and result.status in (302, 303):
            location = result.location
            assert location is not None
            return self.request("GET", location)
        return result

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: Mapping[str, str | Sequence[str]], **kwargs: Any) -> Response:
        """A form post as our pages send it (from this origin), without adding a CSRF token."""
        headers = {"Origin": self.origin, **kwargs.pop("headers", {})}
        return self.request("POST", path, data=data, headers=headers, **kwargs)

    def upload(
        self,
        page: Response,
        path: str,
        data: Mapping[str, str | Sequence[str]],
        files: Mapping[str, tuple[str, str, bytes]],
    ) -> Response:
        """Post a multipart form with ``files`` (field → (file name, type, bytes)) and the
        CSRF token found on ``page``."""
        return self.post(path, {"csrf": page.csrf(), **data}, files=files)

    def submit(
        self,
        page: Response,
        path: str,
        data: Mapping[str, str | Sequence[str]],
        **kwargs: Any,
    ) -> Response:
        """Post ``data`` to ``path`` with the CSRF token found on ``page``."""
        return self.post(path, {"csrf": page.csrf(), **data}, **kwargs)

    def login(self, name: str, password: str = PASSWORD, code: str | None = None) -> Response:
        form = self.get("/login")
        found = _LOGIN_TOKEN.search(form.text)
        assert found is not None, form.text
        token = found.group(1)
        page = self.post("/login", {"login_token": token, "name": name, "password": password})
        if code is not None:
            page = self.post("/login/totp", {"login_token": token, "code": code})
        return page


def _multipart(
    pairs: list[tuple[str, str]], files: Mapping[str, tuple[str, str, bytes]]
) -> tuple[str, bytes]:
    """A multipart/form-data body: the fields, then each file as (name, content type, bytes)."""
    boundary = "strata-panel-test-" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in pairs
    ]
    for field_name, (filename, content_type, content) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    return boundary, b"".join(parts) + f"--{boundary}--\r\n".encode()


def _pairs(data: Mapping[str, str | Sequence[str]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, str):
            pairs.append((key, value))
        else:
            pairs.extend((key, v) for v in value)
    return pairs


class PanelWorld:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = s = MemoryStore(self.clock)
        self.settings = Settings(data_dir=tmp_path, hostname="strata.test")
        self.ctx = AdminContext(
            domains=s, queue=s, messages=s, events=s, monitor=s, control=s, credentials=s,
            tenants=s, admins=s, audit=s, series=s, clock=self.clock, settings=self.settings,
            server_running=lambda: True,
        )  # fmt: skip
        # Cheap argon2 for tests: the parameters are not what is under test here.
        self.passwords = Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=256))
        self.sessions = SessionStore(self.clock, 3600)
        self.login = AdminLogin(self.clock, self.passwords, max_delay=15)
        api = AdminAPI(
            self.ctx, self.sessions, self.login, self.passwords, secure=False, metrics=Resource()
        )
        self.panel = Panel(self.ctx, self.sessions, self.login, self.passwords, secure=False)
        self.site = AdminSite(api.resource(), self.panel.resource())
        hashed = run(self.passwords.hash(PASSWORD))
        accounts = [AdminAccount("op", "operator", password_hash=hashed)]
        for reseller, customer in (("r1", "c1"), ("r2", "c2")):
            result_of(s.add_reseller(Reseller(reseller)))
            result_of(s.add_customer(Customer(customer, reseller)))
            result_of(s.add_domain(Domain(f"{customer}.test", RelayTarget(f"mx.{customer}.test"),
                                          customer=customer)))  # fmt: skip
            accounts.append(AdminAccount(f"{reseller}-admin", "reseller", reseller=reseller,
                                         password_hash=hashed))  # fmt: skip
            accounts.append(AdminAccount(f"{customer}-admin", "customer", customer=customer,
                                         password_hash=hashed))  # fmt: skip
        result_of(s.add_domain(Domain("op.test", RelayTarget("mx.op.test"))))
        for account in accounts:
            result_of(s.add_admin(account))
        self.count = 0

    def browser(self, origin: str = ORIGIN) -> PanelBrowser:
        return PanelBrowser(self, origin)

    def logged_in(self, name: str) -> PanelBrowser:
        """A new browser, logged in as ``name`` (with L{PASSWORD})."""
        browser = self.browser()
        browser.login(name)
        return browser

    def queue(self, *recipients: str, sender: str = "s@sender.test", subject: str = "hi") -> str:
        """Store a message as intake does, queued for each recipient's domain; its id."""
        self.count += 1
        message_id = f"Q{self.count}"
        deliveries = [Delivery(r, r.split("@")[1]) for r in recipients]
        body = f"Subject: {subject}\r\nFrom: {sender}\r\n\r\nbody\r\n".encode()
        result_of(
            store_message(
                self.store, message_id, body, deliveries, sender=sender,
                received_at=self.clock.seconds(),
            )
        )  # fmt: skip
        return message_id

    def states(self) -> dict[str, str]:
        return {e.id: e.state for e in result_of(self.store.list_entries())}
