"""
``alert test``: send a test alert for a domain now, through the senders the monitor uses, so
an admin learns whether the alerts reach anyone before an outage does (#5, #13).  Scope
``operate``: it sends mail and calls the domain's webhook.

The webhook call needs a reactor and an HTTP agent, which core does not own: the caller passes
``send_webhook`` (the server: its own L{WebhookAlertSender}; the CLI: one on a private reactor).
The email goes through the outbound queue, so it needs a running server to deliver it; with none,
nothing is queued and the result says so.  Neither is throttled: an admin's test always goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.context import AdminContext, SendWebhook
from strata_twisted.core.admin.errors import Conflict
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.queue import no_server
from strata_twisted.core.alert_email import EmailAlertSender
from strata_twisted.core.alerts import redacted
from strata_twisted.model import FLUSH_ACTION, Outage, display_domain

# Post a test alert to the domain's webhook: (domain, a pseudo outage, queued) → fires when
# the webhook answered 2xx, fails (with a message fit for people, no secrets) otherwise.
WebhookTest = SendWebhook


@dataclass(frozen=True)
class AlertTestResult:
    """What the test did: ``webhook`` (redacted URL) and its error; ``email`` and where it was
    queued (``email_route``, the flush request), or why it was not (``email_error``)."""

    domain: str
    webhook: str | None = None
    webhook_error: str | None = None
    email: str | None = None
    email_route: str | None = None
    email_request: int | None = None
    email_error: str | None = None

    @property
    def failures(self) -> list[str]:
        return [e for e in (self.webhook_error, self.email_error) if e is not None]


async def test_alert(
    ctx: AdminContext, caller: Caller, name: str, send_webhook: WebhookTest
) -> AlertTestResult:
    domain = await ctx.tenancy.domain(caller, domain_name(name))
    require(caller, "operate")
    shown = display_domain(domain.name)
    if domain.alert_webhook is None and domain.alert_email is None:
        raise Conflict(
            "domain",
            domain.name,
            f"{shown} has no alert webhook and no alert email: nothing to test",
        )
    owner = await ctx.tenancy.domain_owner(domain)
    webhook = webhook_error = None
    if domain.alert_webhook is not None:
        webhook = redacted(domain.alert_webhook)
        now = ctx.clock.seconds()
        outage = Outage(
            id=0,
            domain=domain.name,
            started_at=now,
            reason="test alert sent by 'strata alert test'",
        )
        queued = sum(s.queued for s in await ctx.queue.queue_stats() if s.domain == domain.name)
        try:
            await send_webhook(domain, outage, queued)
        except Exception as e:  # WebhookFailed, or a bug: either way the admin must see it
            webhook_error = str(e) or type(e).__name__
        await ctx.events.record_event(
            "alert.test",
            f"test alert for {shown} to webhook {webhook}: "
            + ("delivered" if webhook_error is None else f"failed: {webhook_error}"),
            domain.name,
            {"webhook": webhook, "ok": webhook_error is None, "error": webhook_error},
        )
    route = request = email_error = None
    if domain.alert_email is not None:
        if not ctx.server_running():
            email_error = (
                f"email to {domain.alert_email}: {no_server(ctx)} to deliver it (nothing queued; "
                "start one and test again)"
            )
        else:
            domains = {d.name: d for d in await ctx.domains.list_domains()}
            sender = EmailAlertSender(
                ctx.clock, ctx.messages, ctx.queue, ctx.events, domains,
                ctx.settings.hostname, ctx.settings.alerts.sender, tenants=ctx.tenants,
            )  # fmt: skip
            route = await sender.test_alert(domain)
            request = await ctx.control.request(FLUSH_ACTION, route, ctx.clock.seconds())
    result = AlertTestResult(
        domain.name, webhook, webhook_error, domain.alert_email, route, request, email_error
    )
    await ctx.auditor.record(
        caller,
        "alert.test",
        domain.name,
        owner,
        {
            "webhook_ok": webhook_error is None if webhook else None,
            "email_queued": route is not None,
        },
    )
    return result
