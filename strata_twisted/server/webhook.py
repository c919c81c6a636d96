"""
Outage alerts as HTTP webhook calls: the SMS path of issue #5 (an SMS gateway, a pager hook).

L{WebhookAlertSender} implements L{IAlertSender}: each alert is one ``POST`` of a JSON body (see
L{webhook_payload}) to the domain's L{WebhookTarget}, with its ``Authorization`` header if it has
one.  It uses Twisted's HTTP client (``Agent``) on the reactor it is given, never the global
one, and one deadline for the whole call: connection, request and the answer's body.  Any 2xx
answer is success; anything else (another status, a refused connection, no answer in time) fails
the Deferred with L{WebhookFailed}, whose text says what happened; the monitor logs it.  It never
raises, never retries (the throttle in ``core/alerts.py`` decides what is sent) and never logs or
reports the ``Authorization`` value or the URL's query string, which often carry the secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, NoReturn, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from strata_twisted.core.alerts import IAlertSender, format_duration, format_time
from strata_twisted.core.alerts import redacted as redacted  # moved there; still exported here
from strata_twisted.model import Domain, Outage, display_domain

# Seconds for a whole webhook call: connect, send, status and body.
DEFAULT_TIMEOUT: Final = 10.0
# How much of an error answer's body goes into the error text.
_BODY_EXCERPT: Final = 200

Event = Literal["outage.started", "outage.ended", "alert.test", "queue.stale"]


@dataclass(frozen=True)
class WebhookTarget:
    """Where a domain's webhook alerts go: an ``http(s)://`` URL and an optional auth header."""

    url: str
    authorization: str | None = None


class WebhookFailed(Exception):
    """A webhook call did not get a 2xx answer; ``str()`` says why, without secrets."""


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def webhook_payload(event: Event, domain: Domain, outage: Outage, queued: int) -> dict[str, Any]:
    """
    The JSON body of one alert.  ``domain`` is the stored (ASCII) name; ``text`` is one line for
    people (Unicode domain name), short enough for an SMS.  ``until`` and ``duration_seconds`` are
    null while the outage is open.  For ``queue.stale``, ``since`` is when the oldest queued
    message arrived.
    """
    name = display_domain(domain.name)
    if event == "queue.stale":
        text = (
            f"Strata: {queued} message(s) for {name} wait; the oldest arrived "
            f"{format_time(outage.started_at)}."
        )
    elif event == "alert.test":
        text = f"Strata: test alert for {name}. Alerts reach you; nothing is wrong."
    elif event == "outage.started":
        text = (
            f"Strata: mail server of {name} ({domain.relay}) is DOWN since "
            f"{format_time(outage.started_at)}; {queued} message(s) queued."
        )
    else:
        text = (
            f"Strata: mail server of {name} ({domain.relay}) is UP again after "
            f"{format_duration(outage.duration or 0.0)} down; delivering {queued} message(s)."
        )
    duration = outage.duration
    return {
        "event": event,
        "domain": domain.name,
        "relay": str(domain.relay),
        "since": _iso(outage.started_at),
        "until": _iso(outage.ended_at),
        "duration_seconds": None if duration is None else round(duration),
        "queued": queued,
        "reason": outage.reason,
        "text": text,
    }


def alert_webhook_target(domain: Domain) -> WebhookTarget | None:
    """Where ``domain``'s webhook alerts go (``strata domain update --alert-webhook``), if set."""
    if not domain.alert_webhook:
        return None
    return WebhookTarget(domain.alert_webhook, domain.alert_webhook_auth)


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory (FileBodyProducer would use the global cooperator)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BodyExcerpt(Protocol):
    """
    Reads a response body to its end, keeping only its first ``limit`` bytes (an error page may be
    large; only its start goes into the error).  Cancelling ``done`` drops the connection.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:
        room = self._limit - len(self._data)
        if room > 0:
            self._data += data[:room]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(bytes(self._data))
        else:
            self.done.errback(reason)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            # The response's transport is a producer (twisted.web's TransportProxyProducer).
            cast(IPushProducer, self.transport).stopProducing()


@implementer(IAlertSender)
class WebhookAlertSender:
    """
    POSTs outage alerts to ``target(domain)``; a domain whose target is None gets none.

    ``contextFactory`` is the HTTPS policy (Twisted's default, which verifies the server's
    certificate against the system's roots, when None).
    """

    def __init__(
        self,
        reactor: Any,
        target: Callable[[Domain], WebhookTarget | None],
        timeout: float = DEFAULT_TIMEOUT,
        contextFactory: IPolicyForHTTPS | None = None,
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._timeout = timeout
        if contextFactory is None:
            self._agent = Agent(reactor, connectTimeout=timeout)
        else:
            self._agent = Agent(reactor, contextFactory=contextFactory, connectTimeout=timeout)

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return self._post("outage.started", domain, outage, queued)

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return self._post("outage.ended", domain, outage, queued)

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        # The payload's since/reason come from a pseudo-outage that "started" with the oldest.
        pseudo = Outage(0, domain.name, oldest_received_at, "mail queued too long")
        return self._post("queue.stale", domain, pseudo, queued)

    def test_alert(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        """An ``alert.test`` call (``strata alert test``): says plainly that nothing is wrong."""
        return self._post("alert.test", domain, outage, queued)

    def _post(self, event: Event, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        try:
            target = self._target(domain)
        except Exception as e:
            return fail(WebhookFailed(f"cannot find the webhook of {domain.name}: {e}"))
        if target is None:
            return succeed(None)
        body = json.dumps(webhook_payload(event, domain, outage, queued)).encode()
        where = redacted(target.url)
        d = ensureDeferred(self._call(target, body, where))

        def timed_out(result: object, timeout: float) -> NoReturn:
            raise WebhookFailed(f"webhook {where}: no answer within {timeout:g}s")

        return d.addTimeout(self._timeout, self._reactor, onTimeoutCancel=timed_out)

    async def _call(self, target: WebhookTarget, body: bytes, where: str) -> None:
        headers = Headers({b"Content-Type": [b"application/json"], b"User-Agent": [b"Strata"]})
        try:
            if target.authorization is not None:
                headers.setRawHeaders(b"Authorization", [target.authorization.encode("ascii")])
            response: IResponse = await self._agent.request(
                b"POST", target.url.encode(), headers, _BytesProducer(body)
            )
            reader = _BodyExcerpt(_BODY_EXCERPT)
            response.deliverBody(reader)
            answer = await reader.done
        except CancelledError:
            raise  # the deadline (see _post) or the caller gave up
        except Exception as e:
            raise WebhookFailed(f"webhook {where}: {type(e).__name__}: {e}") from e
        if not 200 <= response.code < 300:
            excerpt = answer.decode("utf-8", "replace").replace("\n", " ")
            phrase = response.phrase.decode("latin-1")
            raise WebhookFailed(f"webhook {where} answered {response.code} {phrase}: {excerpt}")
