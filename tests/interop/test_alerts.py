"""
Outage alerts against real peers (issue #5, acceptance "Alerts").

A real ``twistd`` Strata protects example.test, whose primary is a private Postfix.  The
domain's alerts go to ``ops@alerts.test`` by email (through ``[outbound] smarthost``, which is a
second Postfix delivering alerts.test into a Maildir) and to a webhook on a loopback HTTP server
this test runs.  The test stops the primary, sends mail through intake during the outage, starts
the primary again, and then flaps it; it checks that each outage start and end produced exactly
one email and one webhook call, with the right domain, times and counts, and that the flapping,
inside ``monitor.alert_window``, produced none.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.peers.strata import StrataProcess
from tests.peers.wait import eventually
from tests.peers.webhook import WebhookRecorder

pytestmark = [pytest.mark.interop, pytest.mark.slow]

T = TypeVar("T")

DOMAIN = "example.test"
ALERT_TO = "ops@alerts.test"
ALERT_FROM = "Acme NOC <noc@acme-it.test>"
AUTH = "Bearer s3cret-token"
WINDOW = 60.0  # monitor.alert_window: the whole test runs inside one window
# Probes run at most once a second (the monitor's tick), whatever probe_interval says.
MONITOR = "[monitor]\nprobe_interval = 0.5\nprobe_timeout = 2\ndown_after = 2\nup_after = 2\n"
INTAKE_DURING_OUTAGE = 3


def iso(seconds: float) -> str:
    """The webhook payload's time format."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def human(seconds: float) -> str:
    """The alert email's time format (``core/alerts.format_time``), written out independently."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.fixture
def webhook() -> Iterator[WebhookRecorder]:
    with WebhookRecorder() as recorder:
        yield recorder


class Scene:
    """The peers of one test and what they have seen so far."""

    def __init__(
        self, strata: StrataProcess, primary: PostfixInstance, mailbox: PostfixInstance,
        webhook: WebhookRecorder,
    ) -> None:  # fmt: skip
        self.strata = strata
        self.primary = primary
        self.mailbox = mailbox
        self.webhook = webhook

    def alert_mails(self) -> list[EmailMessage]:
        """Every message in the Maildir of ops@alerts.test, oldest first (Maildir names start with
        the delivery time)."""
        assert self.mailbox.maildir is not None
        found = []
        for path in maildir_messages(self.mailbox.maildir):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    def events(self) -> dict[str, Any]:
        data = json.loads(self.strata.cli("events", "--json", "--limit", "500").stdout)
        assert isinstance(data, dict)
        return data

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events()["events"] if e["kind"] == kind]

    def outages(self) -> list[dict[str, Any]]:
        outages: list[dict[str, Any]] = self.events()["outages"]
        return sorted((o for o in outages if o["domain"] == DOMAIN), key=lambda o: o["id"])

    def outage_count_is(self, n: int) -> Callable[[], bool]:
        return lambda: len(self.outages()) == n

    def health(self) -> str:
        shown = json.loads(self.strata.cli("domain", "show", DOMAIN, "--json").stdout)
        health: str = shown["health"]
        return health

    def send(self, n: int) -> None:
        """Send one message to the domain through Strata's intake (retrying its early 451)."""

        def sent() -> bool:
            body = (
                f"From: someone@sender.test\r\nTo: user@{DOMAIN}\r\nSubject: during outage {n}"
                f"\r\nMessage-ID: <outage-{n}@sender.test>\r\n\r\nmessage {n}\r\n"
            ).encode()
            with smtplib.SMTP("127.0.0.1", self.strata.port, timeout=30) as client:
                try:
                    client.sendmail("someone@sender.test", [f"user@{DOMAIN}"], body)
                except smtplib.SMTPRecipientsRefused:
                    return False
            return True

        eventually(sent, 10, "intake to accept a message")


@pytest.fixture
def scene(strata_factory: Any, postfix_factory: PostfixFactory, webhook: WebhookRecorder) -> Scene:
    # The monitored primary, and the alert recipient's mail server (the smarthost).
    primary = postfix_factory.primary([DOMAIN])
    mailbox = postfix_factory.primary(["alerts.test"])
    strata: StrataProcess = strata_factory(
        extra_config=MONITOR + f"alert_window = {WINDOW:g}\n"
        f'[outbound]\nsmarthost = "127.0.0.1:{mailbox.smtpd_port}"\nsmarthost_tls = "none"\n'
        f'[alerts]\nsender = "{ALERT_FROM}"\n'
    )
    strata.cli(
        "domain", "add", DOMAIN, "--relay", f"127.0.0.1:{primary.smtpd_port}",
        "--alert-email", ALERT_TO, "--alert-webhook", webhook.url, "--alert-webhook-auth", AUTH,
    )  # fmt: skip
    strata.start()
    return Scene(strata, primary, mailbox, webhook)


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_outage_start_and_end_alert_once_each_and_flapping_makes_no_storm(
    scene: Scene,
) -> None:
    strata, primary, webhook = scene.strata, scene.primary, scene.webhook
    eventually(lambda: scene.health() == "up", 20, "the first probes to see the primary up")
    assert webhook.calls == [] and scene.alert_mails() == []  # "up" at start alerts nobody

    # -- the primary stops: one DOWN email, one outage.started call ---------------------------
    stopped_at = time.time()
    primary.stop()
    [started_call] = eventually(
        lambda: webhook.events("outage.started"), 20, "the outage.started webhook"
    )
    [outage] = scene.outages()
    assert stopped_at - 1 <= outage["started_at"] <= started_call.received_at
    assert outage["ended_at"] is None
    payload = started_call.json
    assert started_call.path == "/hook"
    assert started_call.headers["authorization"] == AUTH
    assert started_call.headers["content-type"] == "application/json"
    assert payload["domain"] == DOMAIN
    assert payload["since"] == iso(outage["started_at"])
    assert payload["until"] is None and payload["duration_seconds"] is None
    assert payload["queued"] == 0
    assert DOMAIN in payload["text"] and "DOWN" in payload["text"]

    [down] = eventually(scene.alert_mails, 20, "the DOWN email in ops@alerts.test's Maildir")
    assert "DOWN" in down["Subject"] and DOMAIN in down["Subject"]
    assert email.utils.parseaddr(down["From"])[1] == "noc@acme-it.test"  # [alerts] sender
    assert down["To"] == ALERT_TO
    assert down["Auto-Submitted"] == "auto-generated"
    text = body_of(down)
    assert DOMAIN in text
    assert human(outage["started_at"]) in text
    assert f"127.0.0.1:{primary.smtpd_port}" in text  # which primary

    # -- mail arrives during the outage --------------------------------------------------------
    for n in range(INTAKE_DURING_OUTAGE):
        scene.send(n)
    queued = [e for e in strata.queue() if e["domain"] == DOMAIN]
    assert len(queued) == INTAKE_DURING_OUTAGE and {e["state"] for e in queued} == {"queued"}

    # -- the primary comes back: one UP email, one outage.ended call ---------------------------
    restarted_at = time.time()
    primary.start()
    [ended_call] = eventually(
        lambda: webhook.events("outage.ended"), 20, "the outage.ended webhook"
    )
    [outage] = scene.outages()
    assert outage["ended_at"] is not None
    assert restarted_at - 1 <= outage["ended_at"] <= ended_call.received_at
    payload = ended_call.json
    assert payload["domain"] == DOMAIN
    assert payload["since"] == iso(outage["started_at"])
    assert payload["until"] == iso(outage["ended_at"])
    assert payload["duration_seconds"] == round(outage["duration"])
    assert payload["queued"] == INTAKE_DURING_OUTAGE
    assert ended_call.headers["authorization"] == AUTH

    mails = eventually(
        lambda: [m for m in scene.alert_mails() if "UP again" in m["Subject"]],
        20,
        "the UP email",
    )
    assert len(mails) == 1
    up = mails[0]
    assert DOMAIN in up["Subject"] and human(outage["ended_at"]) in up["Subject"]
    text = body_of(up)
    assert DOMAIN in text
    assert human(outage["started_at"]) in text and human(outage["ended_at"]) in text
    assert f"Outage lasted:   {round(outage['duration'])}s" in text
    assert f"Received during the outage: {INTAKE_DURING_OUTAGE} message(s)" in text
    assert f"Being delivered: {INTAKE_DURING_OUTAGE} queued message(s)" in text
    # The queue drains to the primary once it is back.
    assert primary.maildir is not None
    eventually(
        lambda: len(maildir_messages(primary.maildir)) == INTAKE_DURING_OUTAGE,  # type: ignore[arg-type]
        30,
        "the outage's mail to reach the primary",
    )

    # The event log records each alert email, once.
    alert_events = scene.events_of("alert.email")
    assert [(e["domain"], e["data"]["kind"], e["data"]["to"]) for e in alert_events] == [
        (DOMAIN, "outage.started", ALERT_TO),
        (DOMAIN, "outage.ended", ALERT_TO),
    ]
    first_alert = started_call.received_at

    # -- flapping inside the window: more outages, no more alerts ------------------------------
    for flap in (1, 2):
        primary.stop()
        eventually(scene.outage_count_is(1 + flap), 20, f"flap {flap}: an outage")
        primary.start()
        eventually(
            lambda: scene.outages()[-1]["ended_at"] is not None, 20, f"flap {flap}: recovery"
        )
    flapped_until = time.time()
    assert flapped_until - first_alert < WINDOW, "the flaps left the alert window: test too slow"
    time.sleep(3)  # room for a late alert to arrive, if one was (wrongly) sent

    outages = scene.outages()
    assert len(outages) == 3 and all(o["ended_at"] is not None for o in outages)
    assert len(scene.events_of("outage.started")) == 3
    assert len(scene.events_of("outage.ended")) == 3
    assert [c.json["event"] for c in webhook.calls] == ["outage.started", "outage.ended"]
    assert [m["Subject"] for m in scene.alert_mails()] == [down["Subject"], up["Subject"]]
    assert len(scene.events_of("alert.email")) == 2
    assert "alert suppressed" in strata.log_text()
    assert scene.mailbox.queue_is_empty()  # nothing stuck on its way to the mailbox either
