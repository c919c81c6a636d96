"""
``strata alert test``: send a test alert to a domain's webhook and email now
(core/admin/alerts.py).

The one command that does network I/O: the CLI has no reactor, so the webhook call runs the
server's webhook sender on a private reactor of its own, for that one call.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from strata_twisted.cli.context import CommandError, Context
from strata_twisted.cli.registry import Subparsers, group, sub
from strata_twisted.core.admin import alerts as ops
from strata_twisted.core.admin.errors import Conflict
from strata_twisted.errors import NotFound
from strata_twisted.model import Domain, Outage, display_domain
from strata_twisted.server.webhook import WebhookAlertSender, alert_webhook_target

T = TypeVar("T")


def _on_own_reactor(call: Callable[[Any], Deferred[T]]) -> T:
    """
    Run ``call(reactor)`` on a reactor of our own, until its Deferred fires; return its result or
    raise its failure.  The CLI has no reactor, and the global one cannot run twice in a process
    (tests call L{main} many times), so each call gets a fresh, uninstalled one, stopped after.
    """
    from twisted.internet.selectreactor import SelectReactor

    reactor = SelectReactor()
    outcome: list[Any] = []

    def start() -> None:
        d = maybeDeferred(call, reactor)

        def done(result: object) -> None:
            outcome.append(result)
            reactor.stop()

        d.addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    # Its waker's pipe would otherwise stay open until the process exits.
    with contextlib.suppress(Exception):
        reactor.removeAll()
        reactor.waker.connectionLost(None)
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return cast(T, result)


def _send_webhook(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
    """The sender and target the server's monitor uses (service.build_alert_sender), without its
    throttle: an admin's test always goes out."""

    def send(reactor: Any) -> Deferred[None]:
        return WebhookAlertSender(reactor, alert_webhook_target).test_alert(domain, outage, queued)

    _on_own_reactor(send)  # raises the webhook's failure
    return succeed(None)


def cmd_alert_test(ctx: Context, args: argparse.Namespace) -> None:
    try:
        result = ctx.run(ops.test_alert(ctx.admin, ctx.caller, args.name, _send_webhook))
    except NotFound:
        raise CommandError(
            f"{args.name} is not a protected domain (see: strata domain list)"
        ) from None
    except Conflict as e:
        raise CommandError(
            f"{e} (set one: strata domain update {e.name} --alert-webhook URL --alert-email "
            "ADDRESS)"
        ) from None
    shown = display_domain(result.domain)
    if result.webhook is not None and result.webhook_error is None:
        ctx.print(f"test alert for {shown} delivered to webhook {result.webhook} (it answered 2xx)")
    if result.email_route is not None:
        ctx.print(
            f"test alert email for {shown} queued to {result.email} "
            f"(flush request {result.email_request}); a running Strata delivers it within a "
            "second: see strata queue list and strata events"
        )
    if result.failures:
        raise CommandError(f"test alert for {shown} failed: {'; '.join(result.failures)}")


def register(commands: Subparsers) -> None:
    asub = group(
        commands,
        "alert",
        "outage alerts",
        "Outage alerts: each domain's webhook and email, set with "
        "strata domain update NAME --alert-webhook URL --alert-email ADDRESS.",
    )
    p = sub(
        asub,
        "test",
        "send a test alert to a domain's webhook and email now; say whether the webhook "
        "took it (the email goes through the running server)",
        cmd_alert_test,
    )
    p.add_argument("name", metavar="NAME", help="a protected domain")
