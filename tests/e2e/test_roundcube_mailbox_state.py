"""
Issue #12, acceptance "Roundcube in the browser": what Strata's IMAP mailbox sessions must get
right shows up in the webmail as a user sees it.

- **Threads.**  Roundcube offers its Threads list view only when the server announces THREAD
  (``rcube_imap::set_threading``: REFS, REFERENCES or ORDEREDSUBJECT).  A message, an unrelated
  one, then a reply to the first (``In-Reply-To``/``References`` naming its Message-ID) arrive
  through intake; the user switches the list to Threads in the list options, as a user does.  The
  reply must sit under its parent (depth 1, its parent's UID, right after it in the table,
  indented, hidden until the thread is expanded) and the unrelated message must be a root of its
  own.  Roundcube builds that tree from the server's ``UID THREAD REFERENCES`` answer
  (RFC 5256), so the tree on screen is Strata's.
- **A folder deleted and created again is empty.**  ``proj`` holds three messages and the user has
  looked at it (so the server has cached what it knows of it); she deletes it in Settings >
  Folders and creates ``proj`` again there.  Opening it must show an empty list with no error;
  a message put there afterwards must be the only one listed (Roundcube selects a folder only
  when STATUS says it holds mail, so this is where ghosts would show), and the server must have
  given the new folder a new UIDVALIDITY (RFC 3501 §2.3.1.1: a new mailbox of an old name).
  Issue #12 found the old messages coming back as ghosts (SELECT said 3 EXISTS, FETCH failed),
  because the server's cache was keyed by the mailbox's name.

Strata runs as ``twistd`` runs it (``tests/peers/strata_imap.py``: IMAP on loopback, the portal
always open); Debian's Roundcube talks IMAP to it, headless Chromium drives Roundcube.  Each test
has a user of its own.  On failure the browser's screenshot and page source are saved to the
directory printed at the start, and the Roundcube (``imap.log``) and Strata logs are named.
"""

from __future__ import annotations

import email.policy
import email.utils
import imaplib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from tests.e2e.roundcube_ui import RoundcubeUI
from tests.peers.browser import Browser
from tests.peers.roundcube import RoundcubeServer
from tests.peers.strata_imap import SENDER, StrataIMAP

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PARENT = "Budget for the outage week"
REPLY = f"Re: {PARENT}"
UNRELATED = "Parking garage closed on Monday"
PARENT_ID = "<budget-1@sender.test>"

FOLDER = "proj"
OLD_PROJ = ["Kick-off notes", "Milestones draft", "Risks and owners"]
NEW_PROJ = "First in the new proj"


@dataclass
class Webmail:
    strata: StrataIMAP
    roundcube: RoundcubeServer


@pytest.fixture(scope="module")
def webmail(tmp_path_factory: pytest.TempPathFactory, roundcube_factory: Any) -> Iterator[Webmail]:
    """Strata with IMAP and a user per test, and a Roundcube in front of it."""
    strata = StrataIMAP(tmp_path_factory.mktemp("strata"), users=("alice", "bob"))
    strata.start()
    try:
        yield Webmail(strata, roundcube_factory(imap_host=f"127.0.0.1:{strata.imap_port}"))
    finally:
        print(f"Strata log: {strata.strata.log}")
        strata.stop()


def _message(to: str, subject: str, day: int, **headers: str) -> bytes:
    """A plain message with its own Date (1 July 2026 plus ``day``), CRLF line endings."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime(2026, 7, day, 9, tzinfo=UTC))
    message["Message-ID"] = headers.pop("message_id", None) or email.utils.make_msgid(
        domain="sender.test"
    )
    for name, value in headers.items():
        message[name.replace("_", "-").title()] = value
    message.set_content(f"{subject}\n")
    return message.as_bytes(policy=email.policy.SMTP)


def _ok(answer: tuple[str, list[Any]]) -> list[Any]:
    status, data = answer
    assert status == "OK", data
    return data


def _uidvalidity(client: imaplib.IMAP4, mailbox: str) -> int:
    line = _ok(client.status(mailbox, "(UIDVALIDITY)"))[0]
    match = re.search(rb"UIDVALIDITY (\d+)", line)
    assert match is not None, line
    return int(match.group(1))


def _new_errors(roundcube: RoundcubeServer, since: int) -> str:
    """What Roundcube wrote to errors.log after its first ``since`` characters."""
    return roundcube.log("errors")[since:]


def test_threads_view_shows_the_reply_under_its_parent(webmail: Webmail, browser: Browser) -> None:
    user, password = webmail.strata.fresh_user()
    # Arrival order parent, unrelated, reply: in List mode the reply is not next to its parent.
    webmail.strata.deliver(user, _message(user, PARENT, 1, message_id=PARENT_ID))
    webmail.strata.deliver(user, _message(user, UNRELATED, 2))
    webmail.strata.deliver(
        user, _message(user, REPLY, 3, in_reply_to=PARENT_ID, references=PARENT_ID)
    )

    ui = RoundcubeUI(browser.driver, webmail.roundcube.url)
    ui.login(user, password)
    ui.wait_subjects({PARENT, UNRELATED, REPLY}, "the INBOX in List mode")
    assert not browser.driver.execute_script("return rcmail.env.threading")

    ui.set_list_mode("threads")
    imap_log = webmail.roundcube.log("imap")
    threaded = re.search(r"C: (A\d+) UID THREAD REFERENCES \S+ ALL", imap_log)
    assert threaded is not None, "Roundcube did not ask the server to thread the INBOX"
    assert re.search(rf"S: {threaded.group(1)} OK", imap_log), imap_log[threaded.start() :][:2000]

    rows = {str(row["subject"]): row for row in ui.thread_rows()}
    assert set(rows) == {PARENT, UNRELATED, REPLY}, rows
    parent, reply, unrelated = rows[PARENT], rows[REPLY], rows[UNRELATED]
    assert (parent["depth"], parent["has_children"]) == (0, True), parent
    assert (reply["depth"], reply["parent_uid"]) == (1, parent["uid"]), reply
    assert (unrelated["depth"], unrelated["has_children"]) == (0, False), unrelated
    assert "thread" in str(parent["classes"]).split(), parent
    assert "thread" not in str(unrelated["classes"]).split(), unrelated
    # Roundcube collapses threads by default (autoexpand_threads 0): the user sees two roots.
    assert not reply["shown"], reply
    assert set(ui.subjects()) == {PARENT, UNRELATED}

    ui.expand_thread(PARENT)
    ui.wait(lambda d: REPLY in ui.subjects(), "the reply to show in the expanded thread")
    rows = {str(row["subject"]): row for row in ui.thread_rows()}
    parent, reply = rows[PARENT], rows[REPLY]
    assert reply["shown"], reply
    assert reply["position"] == int(str(parent["position"])) + 1, rows  # right under its parent
    indent = float(str(reply["indent"]).removesuffix("px"))
    assert indent > float(str(parent["indent"]).removesuffix("px")), (parent, reply)
    print(f"thread rows: {list(rows.values())}")


def test_a_folder_deleted_and_created_again_is_empty(webmail: Webmail, browser: Browser) -> None:
    user, password = webmail.strata.fresh_user()
    client = webmail.strata.imaplib(user)
    try:
        _ok(client.create(FOLDER))
        _ok(client.subscribe(FOLDER))  # Roundcube lists subscribed folders
        for day, subject in enumerate(OLD_PROJ, start=1):
            _ok(client.append(FOLDER, "", None, _message(user, subject, day)))
        old_uidvalidity = _uidvalidity(client, FOLDER)
    finally:
        client.logout()

    ui = RoundcubeUI(browser.driver, webmail.roundcube.url)
    ui.login(user, password)
    ui.open_folder(FOLDER)
    ui.wait_subjects(set(OLD_PROJ), f"{FOLDER} before the delete")
    ui.select(OLD_PROJ[0])  # the server has read its headers, flags and body

    ui.delete_folder(FOLDER)
    client = webmail.strata.imaplib(user)
    try:
        assert _ok(client.list('""', FOLDER)) == [None], f"{FOLDER} is still there"
    finally:
        client.logout()

    errors_before = len(webmail.roundcube.log("errors"))
    ui.create_folder(FOLDER)
    ui.back_to_mail()
    ui.open_folder(FOLDER)
    ui.wait_subjects(set(), f"the new {FOLDER}")
    assert browser.driver.execute_script("return rcmail.env.messagecount") == 0
    assert ui.visible("#messagestack div.error") is None, ui.messages()
    assert "IMAP Error" not in _new_errors(webmail.roundcube, errors_before)

    # Roundcube asks an unselected folder's size with STATUS and selects it only when it holds
    # mail: one message in the new proj makes it SELECT, FETCH and list what the server has.
    client = webmail.strata.imaplib(user)
    try:
        _ok(client.append(FOLDER, "", None, _message(user, NEW_PROJ, 9)))
    finally:
        client.logout()
    ui.open_folder("INBOX")
    ui.open_folder(FOLDER)
    ui.wait_subjects({NEW_PROJ}, f"the new {FOLDER} after one message arrived")
    ui.select(NEW_PROJ)
    assert browser.driver.execute_script("return rcmail.env.messagecount") == 1
    assert "IMAP Error" not in _new_errors(webmail.roundcube, errors_before)

    client = webmail.strata.imaplib(user)
    try:
        assert _uidvalidity(client, FOLDER) != old_uidvalidity, "a new mailbox, an old UIDVALIDITY"
        assert _ok(client.select(FOLDER)) == [b"1"]
        assert len(_ok(client.uid("SEARCH", "ALL"))[0].split()) == 1
    finally:
        client.logout()
