"""
Issue #5, acceptance point 1: during an outage a user replies and sends from Roundcube, and the
mail goes where it should, signed.

Everything is real and on loopback:

- ``twistd -n strata`` with SMTP intake, IMAP and submission.  Its domain ``example.test`` (mode
  ``both``) has a primary whose port is closed, so the monitor opens an outage and the portal
  opens.  The domain has an RSA DKIM key made with ``strata dkim generate``.
- A DNS server (``tests/peers/dns.py``: twisted.names, in a subprocess) that Strata's relay asks
  (``[relay] resolver``): ``elsewhere.test MX 10 mx.elsewhere.test``, ``mx.elsewhere.test A
  127.0.0.1``, and the TXT record ``strata dkim generate`` printed, as its several
  character-strings (a 2048-bit key does not fit in one).
- A Postfix as elsewhere.test's MX (on ``[relay] mx_port``), delivering to carol's Maildir.
- Debian's Roundcube under ``php -S``, IMAP and SMTP (AUTH PLAIN) to Strata; headless Chromium.

Alice, in Roundcube, opens a message Carol sent her (it came in through intake during the
outage), replies, then composes a message to Carol and to her colleague Bob with a UTF-8 subject
and an uploaded attachment.  Then:

- both reach Carol's Maildir through MX delivery, the reply with ``In-Reply-To`` naming Carol's
  message, the other with its subject and attachment intact, and both DKIM signatures verify
  with dkimpy against the key published on the loopback DNS server (looked up with dnspython);
- Roundcube's copies of both are in Alice's Sent folder (imaplib), the very messages delivered;
- Bob has the message in his shadow INBOX the moment Roundcube reports it sent (imaplib);
- when the primary comes back (a Postfix on its port) the monitor sees it and the message for
  Bob reaches the primary's Maildir.

On failure the browser's screenshot and page source are saved to the directory printed at the
start (conftest.py), and the Roundcube, Strata and Postfix logs are named or printed.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import imaplib
import json
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import dkim
import pytest

from tests.e2e.attachments import every_byte_pdf
from tests.e2e.roundcube_ui import RoundcubeUI
from tests.peers.browser import Browser
from tests.peers.dns import LoopbackDNS, Zone, query_txt
from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port, wait_for_port
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.peers.roundcube import RoundcubeServer
from tests.peers.strata import StrataProcess
from tests.peers.strata_imap import passwd_line
from tests.peers.wait import eventually

pytestmark = [pytest.mark.interop, pytest.mark.slow]

T = TypeVar("T")

DOMAIN = "example.test"
ALICE = f"alice@{DOMAIN}"
ALICE_PASSWORD = "alice-sends-1"  # noqa: S105
BOB = f"bob@{DOMAIN}"  # a colleague: same protected domain
BOB_PASSWORD = "bob-reads-2"  # noqa: S105
ELSEWHERE = "elsewhere.test"
CAROL = f"carol@{ELSEWHERE}"  # outside: reached through elsewhere.test's MX
SELECTOR = "e2e2026"

ORIGINAL_SUBJECT = "Outage report numbers"
REPLY_TEXT = "Thanks Carol, the numbers look right. Alice"
UTF8_SUBJECT = "Grüße aus dem Ausfall ✓"
COMPOSE_TEXT = "Hallo Carol, hallo Bob, der Bericht ist im Anhang. Grüße, Alice"
ATTACHMENT_NAME = "Störungsbericht.pdf"


ATTACHMENT = every_byte_pdf(8)


@dataclass
class Outage:
    """Strata in an outage of example.test, its peers, and the message Carol sent Alice."""

    strata: StrataProcess
    imap_port: int
    dns: LoopbackDNS
    carol_mx: PostfixInstance  # elsewhere.test's MX
    primary_port: int  # example.test's primary: closed until the recovery
    roundcube: RoundcubeServer
    original: EmailMessage
    dkim_record: str  # the TXT value `strata dkim generate` printed, its strings joined


def _published_record(generated: str) -> tuple[str, list[str]]:
    """The owner name and the character-strings of the zone-file line `dkim generate` printed
    (``S._domainkey.DOMAIN. IN TXT "..." "..."``), checked against its ``value:`` line."""
    lines = [line for line in generated.splitlines() if " IN TXT " in line]
    assert len(lines) == 1, f"no single zone-file line in:\n{generated}"
    owner, quoted = lines[0].split(" IN TXT ", 1)
    strings: list[str] = re.findall(r'"([^"]*)"', quoted)
    values = [line[6:].strip() for line in generated.splitlines() if line.startswith("value:")]
    assert values == ["".join(strings)], generated
    return owner.rstrip("."), strings


def _down(strata: StrataProcess) -> dict[str, Any] | None:
    """``domain show`` once the monitor reports the primary down, else None."""
    shown: dict[str, Any] = json.loads(strata.cli("domain", "show", DOMAIN, "--json").stdout)
    return shown if shown.get("health") == "down" else None


@pytest.fixture
def outage(
    tmp_path: Path, postfix_factory: PostfixFactory, roundcube_factory: Any
) -> Iterator[Outage]:
    imap_port, submission_port, primary_port = free_port(), free_port(), free_port()
    carol_mx = postfix_factory.primary([ELSEWHERE], smtpd_port=free_port())

    # The config's last table is [relay]: the resolver's port is appended once the DNS server
    # runs, and it can run only once the key it publishes exists.
    strata = StrataProcess(
        tmp_path / "strata",
        extra_config=f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\n'
        f'[submission]\nlisten = ["127.0.0.1:{submission_port}"]\ntls_listen = []\n'
        f"[relay]\ninterval = 1\nmx_port = {carol_mx.smtpd_port}\n",
    )
    strata.cli("domain", "add", DOMAIN, "--relay", f"127.0.0.1:{primary_port}", "--mode",
               "both", "--monitor", "--probe-interval", "1", "--down-after", "1",
               "--up-after", "1")  # fmt: skip
    passwd = tmp_path / "passwd"
    passwd.write_text(passwd_line(ALICE, ALICE_PASSWORD) + passwd_line(BOB, BOB_PASSWORD))
    strata.cli("user", "import", DOMAIN, str(passwd))
    generated = strata.cli(
        "dkim", "generate", DOMAIN, "--selector", SELECTOR, "--algorithm", "rsa"
    ).stdout
    owner, strings = _published_record(generated)
    assert owner == f"{SELECTOR}._domainkey.{DOMAIN}", generated
    assert len(strings) > 1, f"a 2048-bit key should need several TXT strings: {strings}"

    zone: Zone = {
        ELSEWHERE: [("MX", 10, f"mx.{ELSEWHERE}")],
        f"mx.{ELSEWHERE}": [("A", "127.0.0.1")],
        owner: [("TXT", strings)],
    }
    dns = LoopbackDNS(zone)
    dns.start()
    try:
        with strata.config.open("a") as config:
            config.write(f'resolver = "127.0.0.1:{dns.port}"\n')
        strata.start()
        try:
            for port in (imap_port, submission_port):
                assert wait_for_port(port, 30), f"Strata does not listen on {port}"
            # The primary's port is closed: the monitor opens an outage, the portal opens.
            shown = eventually(lambda: _down(strata), what=f"the outage of {DOMAIN}")
            print(f"outage of {DOMAIN} since {shown.get('health_since')}")

            # During the outage Carol writes to Alice; it comes in through intake.
            original = EmailMessage()
            original["From"] = f"Carol <{CAROL}>"
            original["To"] = ALICE
            original["Subject"] = ORIGINAL_SUBJECT
            original["Date"] = email.utils.formatdate()
            original["Message-ID"] = email.utils.make_msgid("outage", domain=ELSEWHERE)
            original.set_content("Alice, are the numbers in the outage report right?\n")
            with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as smtp:
                assert smtp.send_message(original, CAROL, [ALICE]) == {}

            roundcube = roundcube_factory(
                imap_host=f"127.0.0.1:{imap_port}", smtp_host=f"127.0.0.1:{submission_port}"
            )
            yield Outage(strata, imap_port, dns, carol_mx, primary_port, roundcube, original,
                         "".join(strings))  # fmt: skip
        finally:
            print(f"Strata log: {strata.log}")
            strata.stop()
    finally:
        dns.stop()


# -- what arrived, and where ---------------------------------------------------------------------


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _delivered(maildir: Path | None) -> list[tuple[bytes, EmailMessage]]:
    assert maildir is not None
    return [(data, _parse(data)) for data in (p.read_bytes() for p in maildir_messages(maildir))]


def _dkim_dns(port: int) -> Callable[..., bytes]:
    """dkimpy's ``dnsfunc``: the TXT record at ``name`` on the loopback server, its strings
    joined (RFC 6376 §3.6.2.2), asked with dnspython."""

    def lookup(name: bytes | str, timeout: float = 5.0) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        records = query_txt(port, text.rstrip("."), timeout)
        assert len(records) == 1, f"{text}: {records}"
        return b"".join(records[0])

    return lookup


def _tags(signature: str) -> dict[str, str]:
    """A DKIM-Signature's tags (RFC 6376 §3.2), folding whitespace removed."""
    pairs = (tag.partition("=") for tag in re.sub(r"\s+", "", signature).split(";"))
    return {name: value for name, _, value in pairs if name}


def _assert_signed(data: bytes, outage: Outage, what: str, covers: set[str]) -> None:
    """Exactly one DKIM-Signature, Strata's, for example.test, covering the header fields
    ``covers``; dkimpy verifies it, and no longer once the body is changed."""
    message = _parse(data)
    signatures = message.get_all("DKIM-Signature") or []
    assert len(signatures) == 1, f"{what}: {len(signatures)} DKIM signatures:\n{data[:3000]!r}"
    tags = _tags(str(signatures[0]))
    assert (tags.get("d"), tags.get("s")) == (DOMAIN, SELECTOR), f"{what}: {tags}"
    assert tags.get("c") == "relaxed/relaxed", f"{what}: {tags}"
    signed = {name.lower() for name in tags.get("h", "").split(":")}
    assert covers <= signed, f"{what}: h= lacks {sorted(covers - signed)}: {tags}"
    published = _dkim_dns(outage.dns.port)(f"{SELECTOR}._domainkey.{DOMAIN}")
    assert published == outage.dkim_record.encode()
    logged: list[str] = []

    class _Log:
        def debug(self, text: str, *args: object) -> None:
            logged.append(text % args if args else text)

        info = warning = error = debug

    verified = dkim.verify(data, logger=_Log(), dnsfunc=_dkim_dns(outage.dns.port))
    assert verified, f"{what}: the DKIM signature does not verify: {logged}\n{data[:3000]!r}"
    # The check can fail: one more line of body and the signature no longer holds.
    tampered = data + b"P.S. added on the way\r\n"
    assert not dkim.verify(tampered, logger=_Log(), dnsfunc=_dkim_dns(outage.dns.port)), what


def _imap(outage: Outage, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", outage.imap_port, timeout=30)
    try:
        client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
    except imaplib.IMAP4.error:
        client.shutdown()
        raise
    return client


def _folder(client: imaplib.IMAP4, mailbox: str) -> list[EmailMessage]:
    """Every message in ``mailbox``, whole (BODY.PEEK[] leaves the flags alone)."""
    status, data = client.select(mailbox, readonly=True)
    assert status == "OK", (mailbox, data)
    if int(data[0] or 0) == 0:
        return []
    status, fetched = client.fetch("1:*", "(BODY.PEEK[])")
    assert status == "OK", fetched
    return [_parse(item[1]) for item in fetched if isinstance(item, tuple)]


def _attachment(message: EmailMessage) -> tuple[str | None, bytes]:
    parts = list(message.iter_attachments())
    assert len(parts) == 1, [p.get_content_type() for p in parts]
    assert isinstance(parts[0], EmailMessage)
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return parts[0].get_filename(), payload


# -- the journey ---------------------------------------------------------------------------------


def test_reply_and_new_message_from_roundcube_are_delivered_signed_and_filed(
    outage: Outage, browser: Browser, postfix_factory: PostfixFactory, tmp_path: Path
) -> None:
    ui = RoundcubeUI(browser.driver, outage.roundcube.url)
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[step] = round(now - mark, 2)
        mark = now

    ui.login(ALICE, ALICE_PASSWORD)
    ui.wait_subjects({ORIGINAL_SUBJECT}, "Alice's INBOX")
    lap("login")

    # 1. Reply to Carol's message.
    ui.open_message(ORIGINAL_SUBJECT)
    ui.reply()
    assert CAROL in ui.recipients()
    assert "> Alice, are the numbers in the outage report right?" in ui.body_text()  # quoted
    ui.write_body(f"\n{REPLY_TEXT}\n")
    ui.send()
    lap("reply")

    # 2. A new message to Carol and to Bob, a colleague, with a UTF-8 subject and an attachment.
    upload = tmp_path / "upload" / ATTACHMENT_NAME
    upload.parent.mkdir()
    upload.write_bytes(ATTACHMENT)
    ui.compose()
    ui.add_recipients([CAROL, BOB])
    ui.write_subject(UTF8_SUBJECT)
    ui.write_body(COMPOSE_TEXT)
    ui.attach(upload)
    assert ui.compose_attachment_names() == [ATTACHMENT_NAME]
    ui.send()
    lap("compose")

    # Bob has it in his shadow INBOX at once: the submission committed his copy before its 250.
    bob = _imap(outage, BOB, BOB_PASSWORD)
    try:
        bob_inbox = _folder(bob, "INBOX")
    finally:
        bob.logout()
    assert [str(m["Subject"]) for m in bob_inbox] == [UTF8_SUBJECT]
    for_bob = bob_inbox[0]
    assert _attachment(for_bob) == (ATTACHMENT_NAME, ATTACHMENT)
    lap("bob's INBOX")

    # Carol's MX gets both, through DNS: the relay runs every second.
    def at_carol() -> list[tuple[bytes, EmailMessage]] | None:
        delivered = _delivered(outage.carol_mx.maildir)
        return delivered if len(delivered) >= 2 else None

    delivered = eventually(at_carol, 30, "two messages in Carol's Maildir")
    assert len(delivered) == 2, [str(m["Subject"]) for _, m in delivered]
    lap("MX delivery")
    replies = [(d, m) for d, m in delivered if m["In-Reply-To"] is not None]
    others = [(d, m) for d, m in delivered if m["In-Reply-To"] is None]
    assert len(replies) == 1 and len(others) == 1, [dict(m.items()) for _, m in delivered]
    reply_data, reply = replies[0]
    composed_data, composed = others[0]

    assert reply["In-Reply-To"].strip() == outage.original["Message-ID"]
    assert outage.original["Message-ID"] in str(reply["References"])
    assert str(reply["Subject"]) == f"Re: {ORIGINAL_SUBJECT}"
    assert email.utils.parseaddr(str(reply["From"]))[1] == ALICE
    reply_body = reply.get_body(("plain",))
    assert reply_body is not None and REPLY_TEXT in reply_body.get_content()
    threading = {"in-reply-to", "references"}
    _assert_signed(reply_data, outage, "the reply", {"from", "to", "subject", "date"} | threading)

    assert str(composed["Subject"]) == UTF8_SUBJECT
    assert {a for _, a in email.utils.getaddresses([str(composed["To"])])} == {CAROL, BOB}
    assert _attachment(composed) == (ATTACHMENT_NAME, ATTACHMENT)
    composed_body = composed.get_body(("plain",))
    assert composed_body is not None and COMPOSE_TEXT in composed_body.get_content()
    mime = {"mime-version", "content-type"}
    _assert_signed(composed_data, outage, "the new message", {"from", "to", "subject"} | mime)
    assert composed["Message-ID"] == for_bob["Message-ID"]

    # Roundcube filed its copies in Alice's Sent folder: the very messages that went out.
    alice = _imap(outage, ALICE, ALICE_PASSWORD)
    try:
        sent = _folder(alice, "Sent")
    finally:
        alice.logout()
    assert sorted(str(m["Message-ID"]) for m in sent) == sorted(
        str(m["Message-ID"]) for m in (reply, composed)
    ), [(str(m["Subject"]), str(m["Message-ID"])) for m in sent]
    assert sorted(str(m["Subject"]) for m in sent) == sorted(
        [f"Re: {ORIGINAL_SUBJECT}", UTF8_SUBJECT]
    )
    lap("checks")

    # Recovery: the primary answers again; the monitor sees it and the queue drains, Bob's copy
    # included.
    primary = postfix_factory.primary([DOMAIN], smtpd_port=outage.primary_port)

    def at_primary() -> EmailMessage | None:
        for _, message in _delivered(primary.maildir):
            if message["Message-ID"] == composed["Message-ID"]:
                return message
        return None

    arrived = eventually(at_primary, 30, "Bob's message at the recovered primary")
    assert arrived["Delivered-To"] == BOB
    assert str(arrived["Subject"]) == UTF8_SUBJECT
    assert _attachment(arrived) == (ATTACHMENT_NAME, ATTACHMENT)
    lap("recovery")
    print(f"timings (s): {timings}, total {sum(timings.values()):.1f}")
