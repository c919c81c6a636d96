"""
Issue 11, point 6, acceptance, against a real ``twistd``: a password guesser is slowed down and
nobody is locked out.

- 200 wrong passwords for alice from 127.0.0.3 (the client's source address bound), over IMAP
  and submission at once (one throttle serves both), then the right one from 127.0.0.2 over IMAP
  (imaplib) and over submission (smtplib AUTH): both log in, and Strata's log shows they did not
  wait; the right password from the guesser's own address waits at most the bound.
- The same through the webmail host (loopback) naming the users' addresses exactly as Roundcube
  does: IMAP ``ID ("x-originating-ip" ...)`` before ``AUTHENTICATE PLAIN`` (the strata_portal
  plugin's preauth_ident), and ``XCLIENT ADDR=...`` before AUTH (smtp_xclient_addr).

The guesser is slowed by the schedule: after its j-th failure for a user, its next attempt is
checked no earlier than delay(j) after that failure (1 s, then 2 s: ``login_max_delay`` is 2 here
to keep the test short).  So each guessing worker, which waits for one answer before its next
attempt, needs at least the sum of those delays from its first request to its last answer,
however many workers guess in parallel: that is what is asserted, and what was measured is
printed.  (The real Roundcube in Chromium: ``tests/e2e/test_roundcube_throttle.py``.)
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.peers.strata_imap import DOMAIN, RawIMAP, StrataIMAP

pytestmark = pytest.mark.interop

MAX_DELAY = 2.0  # login_max_delay for this server
GUESSES = 200
WORKERS = 20  # guessing connections at a time, from one address
ALICE, BOB, CAROL = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol"))


def schedule(failures: int) -> float:
    """The wait after ``failures`` failures of one user from one address (core/throttle.py)."""
    return 0.0 if failures < 1 else min(MAX_DELAY, 2.0 ** (failures - 1))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataIMAP]:
    strata = StrataIMAP(
        tmp_path_factory.mktemp("strata-login-throttle"),
        users=["alice", "bob", "carol"],
        imap={"login_max_delay": str(MAX_DELAY), "max_connections_per_ip": "100"},
        submission={"max_connections_per_ip": "100"},
    )
    try:
        yield strata.start()
    finally:
        strata.stop()


# -- clients, from a chosen source address --------------------------------------------------------


class SourcedIMAP4(imaplib.IMAP4):
    """imaplib, connecting from ``source`` (a loopback address of the test's choice)."""

    def __init__(self, port: int, source: str) -> None:
        self._source = source
        super().__init__("127.0.0.1", port, timeout=60)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def imap_login(
    server: StrataIMAP, user: str, password: str, *, source: str, origin: str | None = None
) -> bool:
    """
    Log in with imaplib from ``source``; with ``origin``, first the ID Roundcube sends (its
    preauth_ident) and AUTHENTICATE PLAIN as Roundcube logs in.  True when logged in.
    """
    client = SourcedIMAP4(server.imap_port, source)
    try:
        if origin is not None:
            typ, data = client.xatom("ID", f'("x-originating-ip" "{origin}")')
            assert typ == "OK", data
            client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
        else:
            client.login(user, password)
        return True
    except imaplib.IMAP4.error as e:
        assert "AUTHENTICATIONFAILED" in str(e), e  # never UNAVAILABLE: no lockout
        return False
    finally:
        client.shutdown()


def smtp_login(
    server: StrataIMAP, user: str, password: str, *, source: str, origin: str | None = None
) -> bool:
    """AUTH over submission from ``source``; with ``origin``, XCLIENT ADDR first, as Roundcube."""
    assert server.submission_port is not None
    with smtplib.SMTP(
        "127.0.0.1", server.submission_port, timeout=60, source_address=(source, 0)
    ) as client:
        client.ehlo("webmail.test")
        if origin is not None:
            assert client.has_extn("xclient"), client.esmtp_features
            code, text = client.docmd("XCLIENT", f"ADDR={origin}")
            assert code == 220, (code, text)
            client.ehlo("webmail.test")
        # AUTH PLAIN once (smtplib's login() would try LOGIN after a failed PLAIN: two guesses).
        client.user, client.password = user, password
        try:
            client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535, e  # never a 4xx "try again later"
            return False
    return True


def raw_imap_guess(server: StrataIMAP, user: str, password: str, source: str) -> bool:
    """One LOGIN on a bare socket (the guesser does not bother with a client library)."""
    with RawIMAP(server.imap_port, source=source, timeout=60) as client:
        quoted = f'"{user}" "{password}"'.encode()
        reply = client.command(b"g", b"LOGIN " + quoted)[-1]
    assert reply.startswith((b"g OK", b"g NO [AUTHENTICATIONFAILED]")), reply
    return reply.startswith(b"g OK")


# -- the guesser ----------------------------------------------------------------------------------


@dataclass
class Worker:
    """One guessing connection at a time: when each attempt was sent and answered."""

    sent: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [b - a for a, b in zip(self.sent, self.answered, strict=True)]


def guess(count: int, attempt: Callable[[int], bool]) -> tuple[list[Worker], float]:
    """``count`` wrong guesses over WORKERS parallel workers; the workers and the time taken."""
    workers = [Worker() for _ in range(WORKERS)]

    def run(w: int) -> None:
        for n in range(w, count, WORKERS):
            workers[w].sent.append(time.monotonic())
            assert not attempt(n), "a wrong password logged in"
            workers[w].answered.append(time.monotonic())

    start = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        for done in [pool.submit(run, w) for w in range(WORKERS)]:
            done.result()
    return workers, time.monotonic() - start


def check_slowed(workers: list[Worker], took: float, what: str) -> None:
    """
    Each worker's attempts were checked at least the schedule's delays apart: the j-th attempt
    after its own j failures came no earlier than schedule(j) after the last of them (the
    address had at least those j failures).  Print what was measured.
    """
    for w in workers:
        needed = sum(schedule(j) for j in range(1, len(w.sent)))
        spent = w.answered[-1] - w.sent[0]
        assert spent >= needed, (what, spent, needed, w.latencies)
    latencies = sorted(x for w in workers for x in w.latencies)
    attempts = len(latencies)
    print(
        f"\n{what}: {attempts} wrong passwords over {WORKERS} connections took {took:.1f} s"
        f" ({attempts / took:.1f}/s); each worker needed >= "
        f"{sum(schedule(j) for j in range(1, attempts // WORKERS)):.0f} s by the schedule;"
        f" per attempt: min {latencies[0]:.3f} s, median {statistics.median(latencies):.3f} s,"
        f" max {latencies[-1]:.3f} s"
    )


def logged(server: StrataIMAP, pattern: str) -> list[str]:
    """The lines of Strata's log matching ``pattern`` (a regular expression)."""
    return re.findall(pattern, server.strata.log_text())


# -- the acceptance -------------------------------------------------------------------------------


def test_200_guesses_from_one_address_slow_it_and_lock_nobody_out(server: StrataIMAP) -> None:
    guesser, home = "127.0.0.3", "127.0.0.2"
    password = server.users[ALICE]

    def attempt(n: int) -> bool:
        # Half over IMAP, half over submission: one throttle for both.
        if n % 2:
            return smtp_login(server, ALICE, f"guess-{n}", source=guesser)
        return raw_imap_guess(server, ALICE, f"guess-{n}", guesser)

    workers, took = guess(GUESSES, attempt)
    check_slowed(workers, took, "direct")
    failures = logged(server, r"login failed for 'alice@example\.test' from 127\.0\.0\.3: "
                              r"wrong password[^\n]*")  # fmt: skip
    assert len(failures) == GUESSES, failures[-3:]

    # The right password from another address: IMAP (imaplib), then submission (smtplib).
    started = time.monotonic()
    assert imap_login(server, ALICE, password, source=home)
    assert smtp_login(server, ALICE, password, source=home)
    print(f"alice from {home} over IMAP and submission: {time.monotonic() - started:.3f} s")
    # Neither waited: the IMAP login checked the password in full (nothing cached yet).
    assert logged(server, r"IMAP login alice@example\.test from 127\.0\.0\.2[^\n]*") == [
        "IMAP login alice@example.test from 127.0.0.2"
    ]
    assert logged(server, r"submission login alice@example\.test from 127\.0\.0\.2[^\n]*") == [
        "submission login alice@example.test from 127.0.0.2"
    ]

    # The guesser's own address, with the right password of a user it guessed 5 times: at most
    # the bound (carol: not cached, since she has not logged in yet).
    for n in range(5):
        assert not raw_imap_guess(server, CAROL, f"guess-{n}", guesser)
    started = time.monotonic()
    assert smtp_login(server, CAROL, server.users[CAROL], source=guesser)
    print(f"carol from the guesser's address: {time.monotonic() - started:.3f} s")
    [waited] = logged(server, r"submission login carol@example\.test from 127\.0\.0\.3 "
                              r"\(after a ([0-9.]+) s delay\)")  # fmt: skip
    assert 0 < float(waited) <= MAX_DELAY, waited


def test_through_the_webmail_the_guessers_forwarded_address_is_slowed_and_no_one_else(
    server: StrataIMAP,
) -> None:
    webmail = "127.0.0.1"  # loopback: trusted, may name the user's address
    guesser, home = "198.51.100.3", "198.51.100.2"

    def attempt(n: int) -> bool:
        login = smtp_login if n % 2 else imap_login
        return login(server, BOB, f"guess-{n}", source=webmail, origin=guesser)

    workers, took = guess(GUESSES, attempt)
    check_slowed(workers, took, "via the webmail")
    failures = logged(server, r"login failed for 'bob@example\.test' from 198\.51\.100\.3 "
                              r"via 127\.0\.0\.1: wrong password[^\n]*")  # fmt: skip
    assert len(failures) == GUESSES, failures[-3:]

    # Bob's own browser, through the same webmail host: at once, over IMAP and submission.
    started = time.monotonic()
    assert imap_login(server, BOB, server.users[BOB], source=webmail, origin=home)
    assert smtp_login(server, BOB, server.users[BOB], source=webmail, origin=home)
    print(f"bob via the webmail from {home}: {time.monotonic() - started:.3f} s")
    assert logged(server, r"IMAP login bob@example\.test [^\n]*") == [
        "IMAP login bob@example.test from 198.51.100.2 via 127.0.0.1"
    ]
    assert logged(server, r"submission login bob@example\.test [^\n]*") == [
        "submission login bob@example.test from 198.51.100.2 via 127.0.0.1"
    ]
