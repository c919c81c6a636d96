"""
The webmail portal opens within a minute of a real primary stopping, on the default monitor
settings (issue #11, point 7): the wiring of core/monitor.py's pacing, once, against real peers.

A real ``twistd`` Strata with NO ``[monitor]`` keys in its config protects example.test (mode
``both``, portal policy ``outage``, one synced user), whose primary is a private Postfix.  Once
the monitor has seen the primary up, the test stops Postfix (it then refuses connections):

- with nothing else happening, the outage must open within 60 s of the stop;
- with a message sent to intake right after the stop, within 20 s of that message.

The times come from the server's own records (the ``outage.started`` event, written when the
outage opened, and the outage's start), not from how fast this test polls; the portal is then
checked the way a user meets it, with an IMAP login that succeeds, after one refused while the
primary was up.  The test is stopped right after the monitor saw the primary up, so the next
scheduled probe is ~25 s away: only the mail can explain an outage within 20 s of it.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port, wait_for_port
from tests.peers.postfix import PostfixInstance
from tests.peers.strata import StrataProcess
from tests.peers.strata_imap import passwd_line, password_for
from tests.peers.wait import eventually

pytestmark = [pytest.mark.interop, pytest.mark.slow]

DOMAIN = "example.test"
USER = f"alice@{DOMAIN}"
RETRY = 4.0  # monitor.retry_interval's default: the gap between probes while unsure


@dataclass
class Scene:
    strata: StrataProcess
    primary: PostfixInstance
    imap_port: int

    def show(self) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(
            self.strata.cli("domain", "show", DOMAIN, "--json").stdout
        )
        return shown

    def events(self, kind: str) -> list[dict[str, Any]]:
        data = json.loads(self.strata.cli("events", "--json", "--domain", DOMAIN).stdout)
        return [e for e in data["events"] if e["kind"] == kind]

    def outages(self) -> list[dict[str, Any]]:
        data = json.loads(self.strata.cli("events", "--json", "--domain", DOMAIN).stdout)
        outages: list[dict[str, Any]] = data["outages"]
        return outages

    def imap_login(self) -> str:
        """alice's IMAP login with her right password: "OK", or the server's refusal."""
        with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30) as client:
            try:
                client.login(USER, password_for(USER))
            except imaplib.IMAP4.error as e:
                return str(e)
            client.logout()
        return "OK"


@pytest.fixture
def scene(strata_factory: Any, postfix_factory: PostfixFactory) -> Scene:
    primary = postfix_factory.primary([DOMAIN])
    imap_port = free_port()
    strata: StrataProcess = strata_factory(
        extra_config=f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\ntls_listen = []\n'
    )
    assert "[monitor]" not in strata.config.read_text()  # the defaults, as shipped
    strata.cli("domain", "add", DOMAIN, "--relay", f"127.0.0.1:{primary.smtpd_port}",
               "--mode", "both")  # fmt: skip
    passwd = strata.root / "users.passwd"
    passwd.write_text(passwd_line(USER, password_for(USER)))
    strata.cli("user", "import", DOMAIN, str(passwd))
    strata.start()
    assert wait_for_port(imap_port, 30), strata.log_text()[-3000:]
    scene = Scene(strata, primary, imap_port)
    # The first probe at start, the second RETRY later: up (no outage, nothing to open).
    eventually(lambda: scene.show()["health"] == "up", 30, "the monitor to see the primary up")
    shown = scene.show()
    assert not shown["portal_open"] and shown["portal_reason"] == "primary_up"
    assert "UNAVAILABLE" in scene.imap_login()
    return scene


def send(strata: StrataProcess) -> float:
    """One message to alice through intake; when its 250 came (wall clock)."""
    body = (
        f"From: someone@sender.test\r\nTo: {USER}\r\nSubject: during the outage\r\n"
        "Message-ID: <outage-1@sender.test>\r\n\r\nhello\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.sendmail("someone@sender.test", [USER], body)
    return time.time()


def opened(scene: Scene, timeout: float) -> tuple[dict[str, Any], float]:
    """Wait for the outage; return it and when the server opened it (its event's time)."""
    eventually(lambda: scene.show()["portal_open"], timeout, "the portal to open")
    [outage] = scene.outages()
    [event] = scene.events("outage.started")
    assert event["data"]["outage_id"] == outage["id"]
    assert scene.show()["portal_reason"] == "outage"
    assert scene.imap_login() == "OK"  # the server's own portal lets alice in
    return outage, float(event["at"])


def test_the_portal_opens_within_a_minute_of_the_primary_stopping(scene: Scene) -> None:
    stopped_at = time.time()
    scene.primary.stop()
    outage, opened_at = opened(scene, 90)
    took = opened_at - stopped_at
    print(f"portal open {took:.1f} s after the primary was stopped")
    assert took <= 60
    # The outage starts at the first failed probe, not at the third, RETRY s apart each.
    assert stopped_at <= outage["started_at"] <= opened_at - 2 * RETRY + 0.1
    print(f"outage recorded from {outage['started_at'] - stopped_at:.1f} s after the stop")


def test_mail_during_the_outage_opens_the_portal_within_20_s(scene: Scene) -> None:
    stopped_at = time.time()
    scene.primary.stop()
    mail_at = send(scene.strata)
    outage, opened_at = opened(scene, 60)
    took = opened_at - mail_at
    print(
        f"portal open {took:.1f} s after the mail was accepted "
        f"({opened_at - stopped_at:.1f} s after the stop)"
    )
    assert took <= 20
    # The mail asked for the first failed probe (the next scheduled one was ~25 s away).
    assert stopped_at <= outage["started_at"] <= mail_at + RETRY + 1
    [hint] = scene.events("intake.hint")
    assert "probing it again" in hint["message"]
    assert [e["state"] for e in scene.strata.queue()] == ["queued"]
