"""
Issue #4, acceptance point 1: users read their mail in Roundcube during an outage.

Strata runs as ``twistd`` runs it (SMTP intake and IMAP on loopback).  Its domain's primary is a
closed port, so the monitor opens a real outage (the portal's default policy, ``outage``, lets
users in only then).  Mail reaches the users through SMTP intake in delivery mode ``both``: a
message with a UTF-8 subject and a PDF attachment with a UTF-8 name, and plain ones.  The users
come from a Dovecot passwd-file (``doveadm pw``): one SHA512-CRYPT, one BLF-CRYPT.

Debian's Roundcube (``php -S``) talks IMAP to Strata, and headless Debian Chromium drives it like
a user: log in, see the list, open the UTF-8 message, check its subject and attachment name,
download the attachment (the bytes must be those sent), quick-search by subject, delete a
message (it moves to Trash; the others stay), create a folder in Settings, log out.  What the
browser shows is checked against Strata over IMAP as well (``imaplib``), so a page that merely
looks right cannot pass.  A second domain, whose primary answers, keeps its portal closed: its
user is refused, in Roundcube and over IMAP (``NO [UNAVAILABLE]``).

On failure the browser's screenshot and page source are saved to the directory printed at the
start, and the Roundcube (``imap.log``: the whole IMAP conversation) and Strata logs are named.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import imaplib
import json
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest

from tests.e2e.attachments import every_byte_pdf
from tests.e2e.roundcube_ui import RoundcubeUI
from tests.peers.browser import Browser
from tests.peers.net import free_port
from tests.peers.roundcube import RoundcubeServer, php_string
from tests.peers.strata import StrataProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

DOMAIN = "example.test"
ALICE = f"alice@{DOMAIN}"  # SHA512-CRYPT
ALICE_PASSWORD = "alice-secret-1"  # noqa: S105
BOB = f"bob@{DOMAIN}"  # BLF-CRYPT, and a non-ASCII password (AUTHENTICATE PLAIN is UTF-8)
BOB_PASSWORD = "bøb-Pässwört-2"  # noqa: S105
CALM_DOMAIN = "calm.test"  # its primary answers: no outage, so its portal stays closed
CAROL = f"carol@{CALM_DOMAIN}"
CAROL_PASSWORD = "carol-secret-3"  # noqa: S105

UTF8_SUBJECT = "Grüße – ünïcødé ✓"
ATTACHMENT_NAME = "Grüße-Bericht.pdf"
QUARTERLY = "Quarterly numbers"
LUNCH = "Lunch on Friday"
FOR_BOB = "Welcome back, Bob"
NEW_FOLDER = "Projekte Ü"  # modified UTF-7 on the wire: "Projekte &ANw-"
NEW_FOLDER_UTF7 = "Projekte &ANw-"


PDF = every_byte_pdf(16)


def _message(sender: str, to: list[str], subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject  # RFC 2047-encoded on the wire when not ASCII
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain="sender.test")
    message.set_content(body)
    return message


def _hash(scheme: str, password: str) -> str:
    doveadm = shutil.which("doveadm")
    if doveadm is None:
        pytest.fail("doveadm is required to make passwd-file hashes (apt-get install "
                    "dovecot-core)", pytrace=False)  # fmt: skip
    done = subprocess.run([doveadm, "pw", "-s", scheme, "-p", password],
                          capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    hashed = done.stdout.strip()
    assert hashed.startswith("{" + scheme + "}"), hashed
    return hashed


@dataclass
class Webmail:
    strata: StrataProcess
    imap_port: int
    roundcube: RoundcubeServer
    inbox: dict[str, set[str]] = field(default_factory=dict)  # address -> subjects sent


def _wait_for_health(
    strata: StrataProcess, domain: str, health: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Wait until the monitor reports ``domain``'s primary ``up`` or ``down``."""
    deadline = time.monotonic() + timeout
    while True:
        shown: dict[str, Any] = json.loads(strata.cli("domain", "show", domain, "--json").stdout)
        if shown.get("health") == health:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{domain} not {health} within {timeout}s: {shown}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def webmail(tmp_path_factory: pytest.TempPathFactory, roundcube_factory: Any) -> Iterator[Webmail]:
    """Strata in an outage with mail for alice and bob, and Roundcube in front of its IMAP."""
    root = tmp_path_factory.mktemp("strata")
    imap_port = free_port()
    strata = StrataProcess(root, extra_config=f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\n')
    strata.start()
    try:
        closed_port = free_port()  # the primary: nothing listens there
        strata.cli("domain", "add", DOMAIN, "--relay", f"127.0.0.1:{closed_port}", "--mode",
                   "both", "--monitor", "--probe-interval", "1", "--down-after", "1")  # fmt: skip
        passwd = root / "passwd"
        passwd.write_text(
            f"{ALICE}:{_hash('SHA512-CRYPT', ALICE_PASSWORD)}\n"
            f"{BOB}:{_hash('BLF-CRYPT', BOB_PASSWORD)}\n"
        )
        strata.cli("user", "import", DOMAIN, str(passwd))
        # A second domain whose primary answers (Strata's own intake port, which greets like any
        # SMTP server): the monitor sees it up, so with the default policy its portal is closed.
        strata.cli("domain", "add", CALM_DOMAIN, "--relay", f"127.0.0.1:{strata.port}", "--mode",
                   "both", "--monitor", "--probe-interval", "1", "--up-after", "1")  # fmt: skip
        (root / "passwd-calm").write_text(f"{CAROL}:{_hash('SHA512-CRYPT', CAROL_PASSWORD)}\n")
        strata.cli("user", "import", CALM_DOMAIN, str(root / "passwd-calm"))
        outage = _wait_for_health(strata, DOMAIN, "down")
        _wait_for_health(strata, CALM_DOMAIN, "up")
        print(f"outage open for {DOMAIN} since {outage.get('health_since')}; "
              f"portal policy {outage.get('portal', '?')}")  # fmt: skip

        # During the outage, mail arrives through intake.
        utf8 = _message("carol@sender.test", [ALICE, BOB], UTF8_SUBJECT,
                        "Hallo, die Zahlen im Anhang. ünïcødé ✓\n")  # fmt: skip
        utf8.add_attachment(PDF, maintype="application", subtype="pdf", filename=ATTACHMENT_NAME)
        mail = [
            (utf8, [ALICE, BOB]),
            (_message("dave@sender.test", [ALICE], QUARTERLY, "Numbers attached soon.\n"), [ALICE]),
            (_message("erin@sender.test", [ALICE], LUNCH, "Noon at the usual place?\n"), [ALICE]),
            (_message("frank@sender.test", [BOB], FOR_BOB, "Your mail is here.\n"), [BOB]),
        ]
        webmail_inbox: dict[str, set[str]] = {ALICE: set(), BOB: set()}
        with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as smtp:
            for message, recipients in mail:
                refused = smtp.send_message(message, to_addrs=recipients)
                assert refused == {}, refused
                for rcpt in recipients:
                    webmail_inbox[rcpt].add(str(message["Subject"]))

        roundcube = roundcube_factory(imap_host=f"127.0.0.1:{imap_port}")
        yield Webmail(strata, imap_port, roundcube, webmail_inbox)
    finally:
        print(f"Strata log: {strata.log}")
        strata.stop()


# -- IMAP, to check what the browser shows against the server -----------------------------------


def _imap(webmail: Webmail, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", webmail.imap_port, timeout=30)
    try:
        # AUTHENTICATE PLAIN, as Roundcube logs in: the credentials are UTF-8 (RFC 4616).
        client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
    except imaplib.IMAP4.error:
        client.shutdown()
        raise
    return client


def _subjects(client: imaplib.IMAP4, mailbox: str) -> list[str]:
    status, data = client.select(f'"{mailbox}"', readonly=True)
    assert status == "OK", (mailbox, data)
    if int(data[0] or 0) == 0:
        return []
    status, fetched = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert status == "OK", fetched
    subjects = []
    for item in fetched:
        if isinstance(item, tuple):
            header = email.message_from_bytes(item[1])["Subject"] or ""
            subjects.append(str(email.header.make_header(email.header.decode_header(header))))
    return subjects


def _folders(client: imaplib.IMAP4, command: str) -> list[str]:
    status, lines = getattr(client, command)('""', '"*"')
    assert status == "OK", lines
    names = []
    for line in lines:
        assert isinstance(line, bytes), line
        name = line.decode().rsplit(' "/" ', 1)[-1]
        names.append(name.strip('"'))
    return names


# -- the journeys --------------------------------------------------------------------------------


def test_sha512_user_reads_searches_deletes_and_files_mail_in_roundcube(
    webmail: Webmail, browser: Browser
) -> None:
    ui = RoundcubeUI(browser.driver, webmail.roundcube.url)
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[step] = round(now - mark, 2)
        mark = now

    # A wrong password is refused like any failed login, on the login page.
    assert "Login failed" in ui.login_refused(ALICE, "not-the-password")
    lap("refused login")

    login = ui.login(ALICE, ALICE_PASSWORD)
    ui.wait_subjects(webmail.inbox[ALICE], "Alice's INBOX")
    lap("login + list")

    ui.open_message(UTF8_SUBJECT)
    assert ui.shown_subject() == UTF8_SUBJECT
    assert ui.attachment_names() == [ATTACHMENT_NAME]
    lap("open")

    ui.download_attachment(ATTACHMENT_NAME)
    downloaded = browser.wait_for_download(ATTACHMENT_NAME)
    assert downloaded.read_bytes() == PDF, "the downloaded attachment differs from what was sent"
    lap("download")

    ui.back_to_mail()
    ui.search("Lunch")
    ui.wait_subjects({LUNCH}, "the quick search for 'Lunch'")
    ui.search("Grüße")  # SEARCH CHARSET UTF-8
    ui.wait_subjects({UTF8_SUBJECT}, "the quick search for 'Grüße'")
    ui.reset_search()
    ui.wait_subjects(webmail.inbox[ALICE], "Alice's INBOX after the search")
    lap("search")

    ui.delete_selected(LUNCH)
    remaining = webmail.inbox[ALICE] - {LUNCH}
    ui.wait_subjects(remaining, "Alice's INBOX after the delete")
    ui.open_folder("Trash")
    ui.wait_subjects({LUNCH}, "Alice's Trash")
    lap("delete to Trash")

    ui.create_folder(NEW_FOLDER)
    lap("create folder")

    ui.logout()
    lap("logout")
    print(f"timings (s): {timings}, total {sum(timings.values()):.1f} (login alone {login:.2f})")

    # What the browser showed is what the server holds.
    client = _imap(webmail, ALICE, ALICE_PASSWORD)
    try:
        assert sorted(_subjects(client, "INBOX")) == sorted(remaining)
        assert _subjects(client, "Trash") == [LUNCH]
        assert NEW_FOLDER_UTF7 in _folders(client, "list")
        assert NEW_FOLDER_UTF7 in _folders(client, "lsub"), "a new folder must be subscribed"
    finally:
        client.logout()


def test_blf_user_logs_in_and_sees_the_mail_from_the_outage(
    webmail: Webmail, browser: Browser
) -> None:
    ui = RoundcubeUI(browser.driver, webmail.roundcube.url)
    login = ui.login(BOB, BOB_PASSWORD)
    ui.wait_subjects(webmail.inbox[BOB], "Bob's INBOX")
    ui.open_message(UTF8_SUBJECT)
    assert ui.shown_subject() == UTF8_SUBJECT
    assert ui.attachment_names() == [ATTACHMENT_NAME]
    ui.logout()
    print(f"Bob's login took {login:.2f}s")


def test_closed_portal_refuses_login_while_the_primary_is_up(
    webmail: Webmail, browser: Browser
) -> None:
    ui = RoundcubeUI(browser.driver, webmail.roundcube.url)
    # Our strata_portal plugin shows Strata's sentence, not Roundcube's bare "Login failed.".
    shown = ui.login_refused(CAROL, CAROL_PASSWORD)
    assert "Your primary mail server is working; please use your usual mail app." in shown
    assert "Login failed" not in shown
    # Strata tells an IMAP client why (issue #4: NO [UNAVAILABLE] and a human sentence).
    with pytest.raises(imaplib.IMAP4.error) as refused:
        _imap(webmail, CAROL, CAROL_PASSWORD).logout()
    assert "[UNAVAILABLE]" in str(refused.value)
    assert "primary mail server is working" in str(refused.value)


def test_roundcube_logs_in_over_starttls_verifying_stratas_certificate(
    webmail: Webmail, browser: Browser, roundcube_factory: Any
) -> None:
    """
    ``tls://`` (STARTTLS), as webmail/README.md deploys it.  PHP verifies the certificate, so this
    Roundcube trusts Strata's self-signed one (``cafile``) for its name, ``strata.test``.
    """
    certificate = webmail.strata.data_dir / "tls" / "cert.pem"
    options = {"cafile": str(certificate), "peer_name": "strata.test"}
    php_options = ", ".join(f"{php_string(k)} => {php_string(v)}" for k, v in options.items())
    roundcube = roundcube_factory(
        imap_host=f"tls://127.0.0.1:{webmail.imap_port}",
        extra_php=f"$config['imap_conn_options'] = ['ssl' => [{php_options}]];\n",
    )
    ui = RoundcubeUI(browser.driver, roundcube.url)
    ui.login(BOB, BOB_PASSWORD)
    ui.wait_subjects(webmail.inbox[BOB], "Bob's INBOX over STARTTLS")
    ui.logout()
    assert "C: A0001 STARTTLS" in roundcube.log("imap")
