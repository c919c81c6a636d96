"""
Issue 5's "no open relay" acceptance with a real client: swaks against the submission service of
a real ``twistd -n strata`` (STARTTLS listener and implicit-TLS listener), users synced as
SHA512-CRYPT hashes.

One server serves the whole module (``max_per_hour = 3``).  Each test logs in as its own user,
so the per-user rate limit of one test never touches another.  Outbound mail goes to a smarthost
where nothing listens, so it stays queued and the queue can be read back as submitted.

Not tested here: that AUTH is *not* offered in plaintext to an untrusted address.  Every address
of this machine's loopback is trusted by design, so that case cannot be reached over loopback;
the server-level tests (StringTransport with a foreign peer address) cover it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.test_durability import stored_bodies
from tests.peers.net import free_port, wait_for_port
from tests.peers.strata import StrataProcess
from tests.peers.strata_imap import DOMAIN, passwd_line, password_for
from tests.peers.swaks import SWAKS_EXIT, SwaksRun, run_swaks

pytestmark = pytest.mark.interop

CLOSED = "closed.test"  # a protected domain whose portal is off
OUTSIDE = "friend@outside.test"  # a recipient in no protected domain: the outbound queue
MAX_PER_HOUR = 3


def address(local: str, domain: str = DOMAIN) -> str:
    return f"{local}@{domain}"


@dataclass
class Submission:
    """The module's Strata: its submission ports and users (address → password)."""

    strata: StrataProcess
    port: int  # [submission] listen: plain, STARTTLS offered
    tls_port: int  # [submission] tls_listen: implicit TLS
    users: dict[str, str]

    def swaks(self, user: str | None, *args: str, password: str | None = None,
              implicit_tls: bool = False) -> SwaksRun:  # fmt: skip
        """swaks as ``user`` (AUTH over TLS; no AUTH when None), MAIL FROM ``user`` unless
        ``args`` give ``--from``."""
        tls = ["--tls-on-connect"] if implicit_tls else ["--tls"]
        login: list[str] = []
        if user is not None:
            secret = password if password is not None else self.users[user]
            login = ["--auth-user", user, "--auth-password", secret]
            if "--auth" not in args:
                login.insert(0, "--auth")
        sender = [] if "--from" in args or user is None else ["--from", user]
        port = self.tls_port if implicit_tls else self.port
        return run_swaks(port, *tls, *login, *sender, *args)

    def queue_ids(self) -> set[str]:
        return {e["id"] for e in self.strata.queue()}

    def entries_of(self, queue_id: str) -> list[dict[str, Any]]:
        """The queue entries of the message swaks saw ``queued as queue_id``, by recipient."""
        entries = [e for e in self.strata.queue() if e["queue_id"] == queue_id]
        return sorted(entries, key=lambda e: str(e["recipient"]))


@pytest.fixture(scope="module")
def submission(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Submission]:
    root: Path = tmp_path_factory.mktemp("submission")
    port, tls_port = free_port(), free_port()
    strata = StrataProcess(
        root,
        # StrataProcess ends its config inside [intake].  IMAP is off (no fixed port 2143 to
        # collide with other tests); outbound mail waits for a smarthost that never answers.
        extra_config=f'[submission]\nlisten = ["127.0.0.1:{port}"]\n'
        f'tls_listen = ["127.0.0.1:{tls_port}"]\nmax_per_hour = {MAX_PER_HOUR}\n'
        f'[outbound]\nsmarthost = "127.0.0.1:{free_port()}"\nsmarthost_tls = "none"\n'
        "[imap]\nlisten = []\n",
    )
    names = ("alice", "bob", "carol", "dave", "frank", "grace", "henry")
    users = {address(u): password_for(address(u)) for u in names}
    closed_users = {address("erin", CLOSED): password_for(address("erin", CLOSED))}
    for domain, portal, members in ((DOMAIN, "always", users), (CLOSED, "off", closed_users)):
        strata.cli("domain", "add", domain, "--relay", "127.0.0.1:1", "--mode", "both",
                   "--no-monitor", "--portal", portal)  # fmt: skip
        passwd = root / f"{domain}.passwd"
        passwd.write_text("".join(passwd_line(a, p) for a, p in members.items()))
        strata.cli("user", "import", domain, str(passwd))
    try:
        strata.start()
        for listener in (port, tls_port):
            if not wait_for_port(listener, 30):
                raise RuntimeError(f"no submission listener on {listener}\n{strata.log_text()}")
        yield Submission(strata, port, tls_port, users | closed_users)
    finally:
        strata.stop()


def test_ehlo_on_loopback_offers_auth_before_starttls(submission: Submission) -> None:
    run = run_swaks(submission.port, "--quit-after", "EHLO")
    assert run.returncode == SWAKS_EXIT["ok"], run.explain()
    assert run.has_reply("250-STARTTLS"), run.explain()
    auth = [text for _, text in run.replies() if text[4:].startswith("AUTH ")]
    assert len(auth) == 1 and set(auth[0][9:].split()) == {"PLAIN", "LOGIN"}, run.explain()


def test_mail_without_auth_is_refused_with_530(submission: Submission) -> None:
    before = submission.queue_ids()
    run = submission.swaks(None, "--from", address("alice"), "--to", OUTSIDE)
    assert run.returncode == SWAKS_EXIT["mail"], run.explain()
    assert run.has_reply("530 5.7.0 Authentication required", error=True), run.explain()
    assert submission.queue_ids() == before


@pytest.mark.parametrize(
    ("user", "mechanism", "implicit_tls"),
    [("alice", "PLAIN", False), ("dave", "LOGIN", True)],
    ids=["starttls-plain", "implicit-tls-login"],
)
def test_authenticated_user_sends_outside_and_to_a_colleague(
    submission: Submission, user: str, mechanism: str, implicit_tls: bool
) -> None:
    sender, colleague = address(user), address("bob")
    run = submission.swaks(sender, "--auth", mechanism, "--to", f"{OUTSIDE},{colleague}",
                           implicit_tls=implicit_tls)  # fmt: skip
    assert run.returncode == SWAKS_EXIT["ok"], run.explain()
    replies = run.tls_replies()  # everything after the greeting (465) or STARTTLS (587)
    if implicit_tls:
        assert replies[0].startswith("220 strata.test "), run.explain()
    else:
        assert run.has_reply("220 2.0.0 Ready to start TLS"), run.explain()
    assert "235 2.7.0 Authentication successful" in replies, run.explain()
    assert not any(marked for marked, _ in run.replies()), run.explain()
    assert sum(r.startswith("250 2.1.5") for r in replies) == 2, run.explain()
    queue_id = run.queue_id()
    entries = submission.entries_of(queue_id)
    # One entry for the protected domain's primary (the colleague), one outbound entry for the
    # outside recipient's domain; both still queued (the primary and the smarthost are down).
    assert [(e["domain"], e["recipient"], e["sender"]) for e in entries] == [
        (DOMAIN, colleague, sender),
        ("outside.test", OUTSIDE, sender),
    ]
    assert {e["state"] for e in entries} == {"queued"}, entries


def test_wrong_password_gets_535_5_7_8(submission: Submission) -> None:
    before = submission.queue_ids()
    run = submission.swaks(address("alice"), "--to", OUTSIDE, password="not-" + "the-password")
    assert run.returncode == SWAKS_EXIT["auth"], run.explain()
    assert run.has_reply("535 5.7.8 Authentication credentials invalid", error=True), run.explain()
    assert submission.queue_ids() == before


def test_foreign_mail_from_is_refused_with_553(submission: Submission) -> None:
    before = submission.queue_ids()
    run = submission.swaks(address("frank"), "--from", address("bob"), "--to", OUTSIDE)
    assert run.returncode == SWAKS_EXIT["mail"], run.explain()
    assert "235 2.7.0 Authentication successful" in run.tls_replies(), run.explain()
    assert run.has_reply("553 5.7.1 ", error=True), run.explain()
    assert submission.queue_ids() == before


def test_foreign_from_header_is_refused_with_553_after_data(submission: Submission) -> None:
    before = submission.queue_ids()
    run = submission.swaks(address("frank"), "--to", OUTSIDE,
                           "--header", f"From: {address('bob')}")  # fmt: skip
    assert run.returncode == SWAKS_EXIT["data_end"], run.explain()
    assert f"MAIL FROM:<{address('frank')}>" in run.stdout, run.explain()
    assert run.has_reply("354 "), run.explain()  # refused at the end of DATA, not before
    assert run.has_reply("553 5.7.1 ", error=True), run.explain()
    assert submission.queue_ids() == before


def test_rate_limit_refuses_the_fourth_message_with_450(submission: Submission) -> None:
    user = address("carol")
    for n in range(MAX_PER_HOUR):
        run = submission.swaks(user, "--to", OUTSIDE, "--header", f"Subject: message {n + 1}")
        assert run.returncode == SWAKS_EXIT["ok"], run.explain()
        assert submission.entries_of(run.queue_id()), run.explain()
    before = submission.queue_ids()
    run = submission.swaks(user, "--to", OUTSIDE, "--header", "Subject: one too many")
    assert run.returncode == SWAKS_EXIT["mail"], run.explain()
    assert "235 2.7.0 Authentication successful" in run.tls_replies(), run.explain()
    assert run.has_reply("450 4.7.1 ", error=True), run.explain()
    assert submission.queue_ids() == before
    # Per user: a colleague still sends.
    other = submission.swaks(address("grace"), "--to", OUTSIDE)
    assert other.returncode == SWAKS_EXIT["ok"], other.explain()


def test_portal_off_refuses_auth_and_open_accepts_it(submission: Submission) -> None:
    user = address("erin", CLOSED)
    run = submission.swaks(user, "--to", OUTSIDE)
    assert run.returncode == SWAKS_EXIT["auth"], run.explain()
    assert run.has_reply("535 5.7.0 Webmail is not enabled for this domain.", error=True), (
        run.explain()
    )

    submission.strata.cli("domain", "update", CLOSED, "--portal", "open")
    # The server sees domain changes within a second; the portal's answer is cached for one.
    deadline = time.monotonic() + 10
    while (run := submission.swaks(user, "--to", OUTSIDE)).returncode == SWAKS_EXIT["auth"]:
        assert time.monotonic() < deadline, run.explain()
        time.sleep(0.3)
    assert run.returncode == SWAKS_EXIT["ok"], run.explain()
    assert "235 2.7.0 Authentication successful" in run.tls_replies(), run.explain()
    assert [e["recipient"] for e in submission.entries_of(run.queue_id())] == [OUTSIDE]


def test_a_message_with_a_100_kib_line_is_accepted_and_stored_as_sent(
    submission: Submission, tmp_path: Path
) -> None:
    """Issue 11, point 3, for submission: a line of any length is mail (it got 500 5.5.2)."""
    user = address("henry")
    long_line = b"." + ("Grüße  " * (100 * 1024 // 8)).encode() + b"."
    header = (
        f"From: Henry <{user}>\r\nTo: {OUTSIDE}\r\nSubject: a long line\r\n"
        "Message-ID: <long-submission@example.test>\r\n\r\n"
    )
    content = header.encode() + long_line + b"\r\n" + long_line[1:] + b"\r\n"
    data = tmp_path / "long.eml"
    # --no-data-fixup: swaks sends the file's lines as they are, so it carries its own stuffing
    # and final dot (and no line end after it: swaks ends every line it sends itself).
    data.write_bytes(content.replace(b"\r\n.", b"\r\n..") + b".")
    # AUTH in the clear, as loopback (the webmail's way) may: the TLS tests are above.
    run = run_swaks(submission.port, "--auth", "PLAIN", "--auth-user", user, "--auth-password",
                    submission.users[user], "--from", user, "--to", OUTSIDE, "--data", f"@{data}",
                    "--no-data-fixup", "--suppress-data")  # fmt: skip
    assert run.returncode == SWAKS_EXIT["ok"], run.explain()
    assert not any(marked for marked, _ in run.replies()), run.explain()
    queue_id = run.queue_id()
    assert [e["recipient"] for e in submission.entries_of(queue_id)] == [OUTSIDE]
    _, bodies = stored_bodies(submission.strata.data_dir)
    assert bodies[queue_id].endswith(b"\r\n" + content)  # below the Received: field
