"""
Issue 11, point 6, through the real webmail: a password guesser posting Roundcube's login form is
slowed at its own address, and the user still logs in, in her browser, at once.

Strata (``twistd``, IMAP and submission on loopback, ``login_max_delay`` 2 s to keep the test
short), Debian's Roundcube 1.6 under ``php -S`` with Strata's roundcube-config (the strata_portal
plugin sends ``ID ("x-originating-ip" ...)`` before each IMAP login; ``smtp_xclient_addr`` sends
``XCLIENT ADDR=...`` before AUTH), and headless Chromium as alice, from 127.0.0.1.  The guesser
posts the login form with wrong passwords for alice from 127.0.0.3 (its socket bound there), a
fresh CSRF token and session cookie each time, as a script would.

- Strata sees every guess as coming from 127.0.0.3 via the webmail host, and slows that address:
  the guesser's posts take at least the schedule's delays (1 s, then 2 s each), measured here.
- Alice then logs in from the browser without waiting (Strata's log: no delay, her address via
  the webmail) and sends a message (submission, with her address through XCLIENT).
- More guesses for alice, now that Roundcube knows her: Roundcube's own per-user lockout
  (login_rate_limit, 3 failures a minute from anywhere) is off in Strata's config, so she logs in
  again after them.
"""

from __future__ import annotations

import http.client
import imaplib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.roundcube_ui import RoundcubeUI
from tests.peers.browser import Browser
from tests.peers.roundcube import RoundcubeServer
from tests.peers.strata_imap import DOMAIN, StrataIMAP

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
GUESSER = "127.0.0.3"
MAX_DELAY = 2.0
SUBJECT = "Sent while a guesser was at the door"


def schedule(failures: int) -> float:
    """The wait after ``failures`` failures of one user from one address (core/throttle.py)."""
    return 0.0 if failures < 1 else min(MAX_DELAY, 2.0 ** (failures - 1))


@pytest.fixture
def webmail(tmp_path: Path, roundcube_factory: Any) -> Iterator[tuple[StrataIMAP, RoundcubeServer]]:
    strata = StrataIMAP(
        tmp_path / "strata", imap={"login_max_delay": str(MAX_DELAY)}, submission={}
    )
    strata.start()
    try:
        roundcube = roundcube_factory(
            imap_host=f"127.0.0.1:{strata.imap_port}",
            smtp_host=f"127.0.0.1:{strata.submission_port}",
        )
        yield strata, roundcube
    finally:
        print(f"Strata log: {strata.strata.log}")
        strata.stop()


def post_login(roundcube: RoundcubeServer, user: str, password: str) -> bool:
    """
    Post Roundcube's login form from GUESSER, with the CSRF token and the session cookie of a
    fresh login page; True when Roundcube logged the user in (it redirects), False when it
    showed the login form again.
    """
    connection = http.client.HTTPConnection(
        "127.0.0.1", roundcube.port, timeout=60, source_address=(GUESSER, 0)
    )
    try:
        connection.request("GET", "/")
        page = connection.getresponse()
        body = page.read().decode("utf-8", "replace")
        token = re.search(r'name="_token" value="([^"]+)"', body)
        assert token is not None, body[:2000]
        cookies = "; ".join(
            value.split(";", 1)[0] for name, value in page.getheaders() if name == "Set-Cookie"
        )
        form = (
            f"_token={token.group(1)}&_task=login&_action=login&_timezone=UTC&_url="
            f"&_user={user}&_pass={password}"
        )
        connection.request(
            "POST",
            "/?_task=login",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookies},
        )
        answer = connection.getresponse()
        text = answer.read().decode("utf-8", "replace")
    finally:
        connection.close()
    if answer.status in (301, 302, 303):
        return True
    assert "Login failed" in text, (answer.status, text[:2000])
    return False


def guess(roundcube: RoundcubeServer, count: int, offset: int) -> tuple[list[float], float]:
    """``count`` wrong posts for alice, one after the other: their durations and the total."""
    durations = []
    start = time.monotonic()
    for n in range(count):
        sent = time.monotonic()
        assert not post_login(roundcube, ALICE, f"guess-{offset + n}")
        durations.append(time.monotonic() - sent)
    return durations, time.monotonic() - start


def log_lines(strata: StrataIMAP, pattern: str) -> list[str]:
    return re.findall(pattern, strata.strata.log_text())


def test_a_guesser_at_the_webmail_is_slowed_and_alice_logs_in_at_once(
    webmail: tuple[StrataIMAP, RoundcubeServer], browser: Browser
) -> None:
    strata, roundcube = webmail
    password = strata.users[ALICE]

    # 1. The guesser: ten wrong passwords for alice through Roundcube's login form.
    durations, took = guess(roundcube, 10, 0)
    needed = sum(schedule(j) for j in range(1, len(durations)))
    print(
        f"\nguesser via Roundcube: {len(durations)} posts took {took:.1f} s (the schedule asks"
        f" >= {needed:.0f} s); each post: {', '.join(f'{d:.2f}' for d in durations)} s"
    )
    assert took >= needed, (took, needed, durations)
    failures = log_lines(
        strata,
        r"login failed for 'alice@example\.test' from 127\.0\.0\.3 via 127\.0\.0\.1: "
        r"wrong password[^\n]*",
    )
    assert len(failures) == 10, failures

    # 2. Alice in her browser (127.0.0.1): in at once; Strata saw her address, not the guesser's.
    ui = RoundcubeUI(browser.driver, roundcube.url)
    print(f"alice's login in Chromium: {ui.login(ALICE, password):.2f} s")
    assert log_lines(strata, r"IMAP login alice@example\.test [^\n]*")[0] == (
        "IMAP login alice@example.test from 127.0.0.1 via 127.0.0.1"
    )

    # 3. She sends a message: Roundcube names her address in XCLIENT before AUTH.
    ui.compose()
    ui.add_recipients([BOB])
    ui.write_subject(SUBJECT)
    ui.write_body("The webmail works while someone guesses my password.\n")
    ui.send()
    assert log_lines(strata, r"submission login alice@example\.test [^\n]*") == [
        "submission login alice@example.test from 127.0.0.1 via 127.0.0.1"
    ]
    bob = imaplib.IMAP4("127.0.0.1", strata.imap_port, timeout=30)
    try:
        bob.login(BOB, strata.users[BOB])
        bob.select("INBOX", readonly=True)
        typ, found = bob.search(None, "SUBJECT", f'"{SUBJECT}"')
        assert typ == "OK" and found[0], found
    finally:
        bob.logout()

    # 4. More guesses, now that Roundcube has a record of alice: its own lockout would refuse
    # her for a minute after 3 of them; she logs out and in again.
    ui.logout()
    durations, took = guess(roundcube, 4, 10)
    print(f"four more guesses: {', '.join(f'{d:.2f}' for d in durations)} s")
    assert took >= 3 * MAX_DELAY, durations
    print(f"alice logs in again: {ui.login(ALICE, password):.2f} s")
