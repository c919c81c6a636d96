"""
The failover test of a protected domain as a checklist with live state (#14): README's "Testing
a failover without an outage" turned into steps, each done or not yet, with the figure that
says so and what to do next.  The panel's domain page renders it; every step is computed here
from the stores (the queue's counts, the monitor's status and outages, the event log, the
synced users), so the CLI or the API could show the same.  Scope ``read``; it changes nothing.

Also where mail reaches Strata (L{intake_endpoint}): the host and port an admin gives the
customer's spam filter (configurations A and B) or puts in a backup MX record (C).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

from strata_twisted.config import Settings
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.domains import DomainView, show_domain
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.alerts import format_duration, format_time
from strata_twisted.model import Event, EventFilter, Outage, display_domain

# "Recently" for mail through intake: the last 30 days.
RECENT: Final = 30 * 86400.0
# The port sending MTAs use for MX delivery (RFC 5321 §4.5.4.2 names 25 for SMTP).
SMTP_PORT: Final = 25

StepState = Literal["done", "todo", "skip"]


@dataclass(frozen=True)
class IntakeEndpoint:
    """Where the customer's filter or DNS sends mail: ``host`` is this server's name."""

    host: str
    port: int

    def mx_record(self, domain: str, priority: int = 20) -> str:
        """The backup MX record of configuration C (a lower priority than the primary's 10)."""
        return f"{display_domain(domain)}.  3600  IN  MX  {priority} {self.host}."

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def intake_endpoint(settings: Settings) -> IntakeEndpoint:
    """This server's host name and the port of its first intake listener that is not on
    loopback (the one the Internet reaches); with only loopback listeners (the embedded
    default), the first one's; with none, 25."""
    listeners = settings.intake.listen
    public = [a for a in listeners if not _is_loopback(a.host)]
    chosen = (public or list(listeners))[:1]
    return IntakeEndpoint(settings.hostname, chosen[0].port if chosen else SMTP_PORT)


@dataclass(frozen=True)
class ChecklistStep:
    """One step: ``state`` done, todo (not yet) or skip (not needed for this domain);
    ``figure``: the live fact behind the state; ``next``: what to do ("" when done)."""

    key: str
    title: str
    state: StepState
    figure: str
    next: str = ""


@dataclass(frozen=True)
class FailoverChecklist:
    domain: str
    intake: IntakeEndpoint
    steps: tuple[ChecklistStep, ...]

    @property
    def done(self) -> bool:
        return all(s.state != "todo" for s in self.steps)

    def step(self, key: str) -> ChecklistStep:
        return next(s for s in self.steps if s.key == key)


def _step(
    key: str, title: str, done: bool, figure: str, next_step: str, skip: bool = False
) -> ChecklistStep:
    state: StepState = "skip" if skip else "done" if done else "todo"
    return ChecklistStep(key, title, state, figure, "" if done or skip else next_step)


async def _newest_event(
    ctx: AdminContext, name: str, kinds: tuple[str, ...], since: float | None = None
) -> list[Event]:
    found: list[Event] = await ctx.events.query_events(
        EventFilter(domains=(name,), kinds=kinds, since=since), None, 20
    )
    return found


def _test_alert_sent(events: list[Event]) -> Event | None:
    """The newest test alert: a webhook call (``alert.test``) or a queued email whose kind
    is ``alert.test`` (``alert.email``)."""
    for event in events:  # newest first
        if event.kind == "alert.test" or event.data.get("kind") == "alert.test":
            return event
    return None


async def failover_checklist(ctx: AdminContext, caller: Caller, name: str) -> FailoverChecklist:
    """The failover test of ``name`` with the live state of each step; L{NotFound} for a
    domain ``caller`` may not see."""
    view: DomainView = await show_domain(ctx, caller, name)
    domain = view.domain
    shown = display_domain(domain.name)
    now = ctx.clock.seconds()
    intake = intake_endpoint(ctx.settings)
    steps: list[ChecklistStep] = []

    steps.append(
        _step(
            "protected", "Protect the domain, relaying to its primary", True,
            f"{shown} relays to {domain.relay} (delivery mode {domain.mode})", "",
        )
    )  # fmt: skip

    received_all, _ = await ctx.queue.received_since(domain.name, 0.0)
    received_recent, _ = await ctx.queue.received_since(domain.name, now - RECENT)
    steps.append(
        _step(
            "routing", "Route mail to Strata (configuration A, B or C)", received_all > 0,
            f"{received_recent} message(s) received in the last 30 days, {received_all} in all"
            if received_all else "no mail for this domain has reached Strata yet",
            f"Point the spam filter's failover route at {intake}, or publish the backup MX "
            f"record, then send a test message to an address at {shown}.",
        )
    )  # fmt: skip

    users = len(await ctx.credentials.list_users(domain.name))
    steps.append(
        _step(
            "users", "Load the users (delivery mode both)", users > 0,
            f"{users} user(s)" if domain.mode == "both" else "not needed in delivery mode relay",
            "Upload the Dovecot passwd-file, or add the users one by one.",
            skip=domain.mode != "both",
        )
    )  # fmt: skip

    contacts = [f"email to {', '.join(domain.alert_emails)}"] if domain.alert_emails else []
    if domain.alert_webhook is not None:
        contacts.append("a webhook")
    steps.append(
        _step(
            "alert_contacts", "Set the alert contacts", bool(contacts),
            "; ".join(contacts) if contacts else "no alert email and no webhook",
            "Add alert email addresses (or a webhook) in the domain's settings.",
        )
    )  # fmt: skip

    sent = _test_alert_sent(await _newest_event(ctx, domain.name, ("alert.test", "alert.email")))
    steps.append(
        _step(
            "alert_test", "Send a test alert", sent is not None,
            f"last sent {format_time(sent.at)}: {sent.message}" if sent else "none sent yet",
            "Press \u201cSend a test alert\u201d and check that it arrives.",
        )
    )  # fmt: skip

    status = view.status
    health = view.health
    if not domain.monitored:
        monitor_figure = "monitoring is off: no outage will open by itself"
    elif status is None or health == "unknown":
        monitor_figure = "not probed yet"
    else:
        since = f" since {format_time(status.since)}" if status.since else ""
        monitor_figure = f"primary {health}{since}"
        if status.last_probe_error and health == "down":
            monitor_figure += f" ({status.last_probe_error})"
    steps.append(
        _step(
            "monitor", "The monitor watches the primary",
            domain.monitored and health in ("up", "down"), monitor_figure,
            "Turn monitoring on in the settings." if not domain.monitored
            else "Wait for the first probe (a few seconds with a running server).",
        )
    )  # fmt: skip

    outages: list[Outage] = await ctx.monitor.list_outages(domain.name, 1)
    latest = outages[-1] if outages else None
    portal = view.portal
    if latest is not None and latest.ended_at is None:
        outage_figure = f"outage open since {format_time(latest.started_at)}"
    elif portal.reason == "drill":
        outage_figure = "portal open for a drill"
    elif latest is not None:
        outage_figure = f"last outage began {format_time(latest.started_at)}"
    else:
        outage_figure = "no outage yet, and no drill"
    outage_figure += f"; portal {'open' if portal.open else 'closed'} ({portal.reason})"
    steps.append(
        _step(
            "outage", "Simulate the outage; the portal opens",
            latest is not None or portal.reason == "drill", outage_figure,
            "Point the relay host at an address where nothing listens (such as 127.0.0.1:9), "
            "or open the portal for a drill.",
        )
    )  # fmt: skip

    since_outage = 0
    if latest is not None:
        since_outage, _ = await ctx.queue.received_since(domain.name, latest.started_at)
    figure = f"{view.queued} queued now"
    if latest is not None:
        figure += f"; {since_outage} received since the last outage began"
    steps.append(
        _step(
            "queued", "Mail sent during the outage is queued",
            view.queued > 0 or since_outage > 0, figure,
            f"Send a test message to an address at {shown} through the failover path "
            f"({intake}).",
        )
    )  # fmt: skip

    drained = False
    if latest is None:
        drain_figure = "no outage to end yet"
    elif latest.ended_at is None:
        drain_figure = f"outage still open; {view.queued} queued"
    else:
        drains = await _newest_event(ctx, domain.name, ("relay.drain_finished",), latest.started_at)
        drain_figure = (
            f"outage closed after {format_duration(latest.ended_at - latest.started_at)}; "
            f"{view.queued} queued"
        )
        if drains:
            drain_figure += f"; {drains[0].message}"
        # Nothing received during the outage: nothing to drain, and no drain is recorded.
        drained = view.queued == 0 and (bool(drains) or since_outage == 0)
    steps.append(
        _step(
            "drained", "End the outage: the queue drains and the outage closes", drained,
            drain_figure,
            "Set the relay host back to the primary; the monitor sees it answer, closes the "
            "outage and drains the queue (or flush the queue now).",
        )
    )  # fmt: skip
    return FailoverChecklist(domain.name, intake, tuple(steps))
