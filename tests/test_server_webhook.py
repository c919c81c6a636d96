"""
The webhook alert sender against a real HTTP server on 127.0.0.1, started by each test with
twisted.web: the JSON body and the Authorization header arrive; a 500, a closed port and a server
that never answers fail the Deferred with a clear WebhookFailed; no target, no call.  The payload
itself is checked as a plain function first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface.verify import verifyObject

from strata_twisted.core.alerts import IAlertSender
from strata_twisted.model import Domain, Outage, RelayTarget
from strata_twisted.server.webhook import (
    WebhookAlertSender,
    WebhookFailed,
    WebhookTarget,
    redacted,
    webhook_payload,
)

reactor: Any = _reactor
# pytest-twisted runs these on the real reactor; its decorator is untyped.
on_reactor = cast(
    Callable[[Callable[..., Any]], Callable[..., Any]], pytest_twisted.inlineCallbacks
)

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
DOMAIN = Domain("xn--bcher-kva.test", RelayTarget("mx.buecher.test", 2525))
OPEN = Outage(7, DOMAIN.name, T0, "connection refused")
CLOSED = Outage(7, DOMAIN.name, T0, "connection refused", ended_at=T0 + 3725)


class Hook(Resource):
    """A webhook receiver: records each POST and answers with ``code``."""

    isLeaf = True

    def __init__(self, code: int = 204, hang: bool = False) -> None:
        super().__init__()
        self.code = code
        self.hang = hang
        self.calls: list[tuple[dict[str, Any], str | None, str | None]] = []
        self.hanging: list[Deferred[None]] = []  # notifyFinish() of the requests left waiting

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = json.loads(request.content.read())
        auth = request.getHeader("authorization")
        self.calls.append((body, auth, request.getHeader("content-type")))
        if self.hang:
            self.hanging.append(request.notifyFinish())
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        return b"" if self.code < 300 else b"gateway exploded\nline two"


@pytest.fixture
def hook() -> Generator[tuple[Hook, str], None, None]:
    resource = Hook()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    yield resource, f"http://127.0.0.1:{port.getHost().port}/alerts?token=s3cret"
    # The listening port is stopped at the end (pytest-twisted's reactor keeps running).
    pytest_twisted.blockon(port.stopListening())


def sender(url: str | None, auth: str | None = None, timeout: float = 5.0) -> WebhookAlertSender:
    target = None if url is None else WebhookTarget(url, auth)
    return WebhookAlertSender(reactor, lambda domain: target, timeout=timeout)


def test_payload_of_an_outage_start() -> None:
    body = webhook_payload("outage.started", DOMAIN, OPEN, 3)
    assert body == {
        "event": "outage.started",
        "domain": "xn--bcher-kva.test",
        "relay": "mx.buecher.test:2525",
        "since": "2027-01-15T08:00:00+00:00",
        "until": None,
        "duration_seconds": None,
        "queued": 3,
        "reason": "connection refused",
        "text": "Strata: mail server of bücher.test (mx.buecher.test:2525) is DOWN since "
        "2027-01-15 08:00:00 UTC; 3 message(s) queued.",
    }
    json.dumps(body)  # plain JSON


def test_payload_of_an_outage_end() -> None:
    body = webhook_payload("outage.ended", DOMAIN, CLOSED, 12)
    assert body["until"] == "2027-01-15T09:02:05+00:00"
    assert body["duration_seconds"] == 3725
    assert body["queued"] == 12
    assert body["text"] == (
        "Strata: mail server of bücher.test (mx.buecher.test:2525) is UP again after "
        "1h 2m 5s down; delivering 12 message(s)."
    )
    assert "\n" not in body["text"] and len(body["text"]) <= 160  # one SMS


def test_payload_of_a_stale_queue() -> None:
    body = webhook_payload("queue.stale", DOMAIN, Outage(0, DOMAIN.name, T0, "queued"), 40)
    assert body["event"] == "queue.stale" and body["since"] == "2027-01-15T08:00:00+00:00"
    assert body["text"] == (
        "Strata: 40 message(s) for bücher.test wait; the oldest arrived 2027-01-15 08:00:00 UTC."
    )


def test_redacted_keeps_secrets_out_of_errors() -> None:
    assert redacted("https://user:pw@hooks.example:8443/a/b?token=x#f") == (
        "https://hooks.example:8443/a/b"
    )
    assert redacted("http://[::1]/x") == "http://[::1]/x"
    assert redacted("http://host:99999/x?token=s3cret") == "(an invalid URL)"


@on_reactor
def test_an_invalid_url_fails_the_deferred() -> Generator[Deferred[Any], Any, None]:
    with pytest.raises(WebhookFailed) as caught:
        yield sender("ftp://hooks.example/x?token=s3cret").outage_started(DOMAIN, OPEN, 1)
    assert str(caught.value).startswith("webhook ftp://hooks.example/x: SchemeNotSupported")


def test_interface() -> None:
    assert verifyObject(IAlertSender, sender(None))


@on_reactor
def test_start_and_end_are_posted_with_the_auth_header(
    hook: tuple[Hook, str],
) -> Generator[Deferred[Any], Any, None]:
    resource, url = hook
    alerts = sender(url, auth="Bearer t0ken")
    result = yield alerts.outage_started(DOMAIN, OPEN, 3)
    assert result is None
    yield alerts.outage_ended(DOMAIN, CLOSED, 5)
    assert [(body["event"], body["queued"]) for body, _, _ in resource.calls] == [
        ("outage.started", 3),
        ("outage.ended", 5),
    ]
    body, auth, content_type = resource.calls[1]
    assert body == webhook_payload("outage.ended", DOMAIN, CLOSED, 5)
    assert auth == "Bearer t0ken"
    assert content_type == "application/json"


@on_reactor
def test_no_auth_header_when_none_is_set(
    hook: tuple[Hook, str],
) -> Generator[Deferred[Any], Any, None]:
    resource, url = hook
    yield sender(url).outage_started(DOMAIN, OPEN, 0)
    assert [(auth, body["domain"]) for body, auth, _ in resource.calls] == [
        (None, "xn--bcher-kva.test")
    ]


@on_reactor
def test_a_500_answer_fails_the_deferred(
    hook: tuple[Hook, str],
) -> Generator[Deferred[Any], Any, None]:
    resource, url = hook
    resource.code = 500
    with pytest.raises(WebhookFailed) as caught:
        yield sender(url, auth="Bearer t0ken").outage_started(DOMAIN, OPEN, 1)
    port = url.split(":")[2].split("/")[0]
    assert str(caught.value) == (
        f"webhook http://127.0.0.1:{port}/alerts answered 500 Internal Server Error: "
        "gateway exploded line two"
    )
    assert "s3cret" not in str(caught.value) and "t0ken" not in str(caught.value)
    assert len(resource.calls) == 1  # no retry here: the throttle decides what is sent


@on_reactor
def test_a_closed_port_fails_the_deferred() -> Generator[Deferred[Any], Any, None]:
    port = reactor.listenTCP(0, Site(Hook()), interface="127.0.0.1")
    number = port.getHost().port
    yield port.stopListening()  # nobody listens there now
    with pytest.raises(WebhookFailed) as caught:
        yield sender(f"http://127.0.0.1:{number}/hook").outage_ended(DOMAIN, CLOSED, 0)
    text = str(caught.value)
    assert text.startswith(f"webhook http://127.0.0.1:{number}/hook: ConnectionRefusedError")


@on_reactor
def test_no_answer_in_time_fails_the_deferred(
    hook: tuple[Hook, str],
) -> Generator[Deferred[Any], Any, None]:
    resource, url = hook
    resource.hang = True
    with pytest.raises(WebhookFailed) as caught:
        yield sender(url, timeout=0.3).outage_started(DOMAIN, OPEN, 1)
    assert str(caught.value).endswith("/alerts: no answer within 0.3s")
    assert len(resource.hanging) == 1
    with pytest.raises(ConnectionLost):  # the timed-out call closed its connection
        yield resource.hanging[0]


def test_no_target_sends_nothing() -> None:
    asked: list[str] = []

    def target(domain: Domain) -> WebhookTarget | None:
        asked.append(domain.name)
        return None

    d = WebhookAlertSender(reactor, target).outage_started(DOMAIN, OPEN, 1)
    assert d.called and d.result is None
    assert asked == ["xn--bcher-kva.test"]


def test_a_broken_target_lookup_fails_the_deferred() -> None:
    def target(domain: Domain) -> WebhookTarget | None:
        raise KeyError("settings missing")

    d = WebhookAlertSender(reactor, target).outage_started(DOMAIN, OPEN, 1)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(WebhookFailed)
