"""
A small JSON client for Strata's admin API over loopback (http.client, no extra dependency),
for the contract tests and the admin benchmark.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, str) else None
        return None


@dataclass
class AdminClient:
    """One client: a key (``Authorization: Bearer``) or a session (cookie + CSRF token)."""

    port: int
    key: str | None = None
    host: str = "127.0.0.1"
    source: str | None = None  # the local address to connect from (127.0.0.2, ...)
    tls: bool = False  # HTTPS ([admin] tls = true); the self-signed certificate is not checked
    cookie: str | None = None
    csrf: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> Answer:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        send: dict[str, str] = {**self.extra_headers, **(headers or {})}
        data: bytes | None = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            send.setdefault("Content-Type", content_type)
        if self.key is not None:
            send.setdefault("Authorization", f"Bearer {self.key}")
        if self.cookie is not None:
            send.setdefault("Cookie", f"strata_session={self.cookie}")
            if csrf and self.csrf is not None and method not in ("GET", "HEAD"):
                send.setdefault("X-CSRF-Token", self.csrf)
        source = (self.source, 0) if self.source else None
        connection: http.client.HTTPConnection
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the test server's self-signed certificate
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=60, source_address=source, context=context
            )
        else:
            connection = http.client.HTTPConnection(
                self.host, self.port, timeout=60, source_address=source
            )
        try:
            connection.request(method, path, body=data, headers=send)
            response = connection.getresponse()
            payload = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        parsed: Any = None
        if payload and answer_headers.get("content-type", "").startswith("application/json"):
            parsed = json.loads(payload)
        return Answer(response.status, parsed, answer_headers, payload)

    def get(self, path: str, **query: Any) -> Answer:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any) -> Answer:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any) -> Answer:
        return self.request("PATCH", path, body)

    def delete(self, path: str, **query: Any) -> Answer:
        return self.request("DELETE", path, query=query or None)

    def login(self, name: str, password: str, totp: str | None = None) -> Answer:
        """Log in; on success keep the session cookie and CSRF token for later requests."""
        body: dict[str, str] = {"name": name, "password": password}
        if totp is not None:
            body["totp"] = totp
        answer = self.request("POST", "/api/v1/session", body)
        if answer.status == 200:
            cookie = answer.headers.get("set-cookie", "")
            self.cookie = cookie.split(";", 1)[0].partition("=")[2]
            self.csrf = answer.body["csrf_token"]
        return answer


def operator_key(port: int, data_dir: Path, scope: str = "read") -> str:
    """A new API key of the first operator account ``admin`` (its password from the file the
    server's first start wrote), for tests that need one: Prometheus's scrape, schemathesis."""
    password = (data_dir / "admin-password").read_text().strip()
    client = AdminClient(port)
    answer = client.login("admin", password)
    assert answer.status == 200, answer.body
    created = client.post("/api/v1/api-keys", {"admin": "admin", "scope": scope})
    assert created.status == 201, created.body
    key = created.body["key"]
    assert isinstance(key, str)
    return key
