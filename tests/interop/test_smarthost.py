"""
Outbound mail through a real smarthost that wants AUTH over STARTTLS (``[outbound] smarthost``).

The smarthost is a private Postfix: STARTTLS with a certificate from a throwaway CA (naming
127.0.0.1), AUTH offered only after TLS (``smtpd_tls_auth_only``), relaying only for
authenticated clients (``permit_sasl_authenticated, reject``), its SASL checked by a private
Dovecot's auth service (the setup ``bench/submission.py`` uses, ``tests/peers/postfix_sasl.py``),
and everything it accepts for outside.test delivered into one Maildir.  One smarthost serves the
module; each test runs its own ``twistd -n strata`` with a submission listener, ``[relay]
interval = 1`` and the smarthost's user and password file (mode 0600).

- The right password (``smarthost_tls = "verify"``, the CA in ``[tls] ca_file``): a user's
  message, sent through Strata's submission with AUTH, arrives in the smarthost's Maildir;
  Postfix logged the SASL login of the configured user on a TLS connection, and Strata's queue
  says ``delivered``.
- A wrong password (``"required"``): the message stays queued in Strata (its ``last_error``
  names the authentication failure), every attempt was refused by the smarthost, nothing
  arrives.
- A wrong password under ``"opportunistic"``: nothing goes out either, and the reason Strata
  records is the refused login, not a TLS failure (which would make it try again without TLS).

A missing Postfix or Dovecot fails these tests (never skips them), like every interop test.
"""

from __future__ import annotations

import shutil
import smtplib
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.peers.dovecot import INSTALL_HINT as DOVECOT_HINT
from tests.peers.dovecot import dovecot_factory_context, dovecot_installed
from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port, wait_for_port
from tests.peers.postfix import INSTALL_HINT as POSTFIX_HINT
from tests.peers.postfix import PostfixInstance, maildir_messages, postfix_installed
from tests.peers.postfix_sasl import (
    postfix_sasl_settings,
    sasl_failures,
    sasl_logins,
    start_auth_dovecot,
)
from tests.peers.strata import StrataProcess
from tests.peers.strata_imap import passwd_line, password_for
from tests.peers.tlsca import TestCA
from tests.peers.wait import eventually

pytestmark = [pytest.mark.interop, pytest.mark.slow]

T = TypeVar("T")

DOMAIN = "example.test"  # protected by Strata; its users send through submission
OUTSIDE = "outside.test"  # the recipients' domain: Strata's outbound queue, then the smarthost
RELAY_USER = "strata-relay@smarthost.test"  # Strata's account at the smarthost
RELAY_PASSWORD = "sm4rt-host pw!"  # noqa: S105 - a test account's
WRONG_PASSWORD = "not-the-password"  # noqa: S105


@dataclass
class Smarthost:
    """The module's smarthost: Postfix with STARTTLS and Dovecot SASL, and its CA."""

    postfix: PostfixInstance
    ca: TestCA

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.postfix.smtpd_port}"

    def arrived(self, subject: str) -> list[bytes]:
        """The messages in the Maildir whose Subject is ``subject``."""
        assert self.postfix.maildir is not None
        wanted = f"\nSubject: {subject}\n".encode()
        raws = [p.read_bytes() for p in maildir_messages(self.postfix.maildir)]
        return [raw for raw in raws if wanted in b"\n" + raw.split(b"\n\n", 1)[0] + b"\n"]


@pytest.fixture(scope="module")
def smarthost() -> Iterator[Smarthost]:
    if not postfix_installed():
        pytest.fail(f"Postfix is required for interop tests: {POSTFIX_HINT}", pytrace=False)
    if not dovecot_installed():
        pytest.fail(f"Dovecot is required for this interop test: {DOVECOT_HINT}", pytrace=False)
    # Not pytest's tmp dirs: Postfix's daemons (user postfix) must reach the Maildir.
    base = Path(tempfile.mkdtemp(prefix="strata-smarthost-"))
    base.chmod(0o755)
    ca = TestCA(base / "ca")
    server = ca.issue("smarthost", dns=["smarthost.test"], ips=["127.0.0.1"])
    factory = PostfixFactory(base / "postfix")
    try:
        with dovecot_factory_context() as dovecots:
            # Refuse a wrong password at once (the default waits 2 s), so retries come quickly.
            dovecot = start_auth_dovecot(dovecots, {RELAY_USER: RELAY_PASSWORD},
                                         extra_config="auth_failure_delay = 0\n")  # fmt: skip
            try:
                postfix = factory.primary([OUTSIDE], main_cf={
                    **postfix_sasl_settings(dovecot),
                    "smtpd_sasl_auth_enable": "yes",
                    "smtpd_tls_security_level": "may",
                    "smtpd_tls_cert_file": str(server.certificate),
                    "smtpd_tls_key_file": str(server.key),
                    "smtpd_tls_auth_only": "yes",  # no AUTH before STARTTLS
                    "smtpd_tls_loglevel": "1",  # log each handshake (see sasl_logins)
                    "smtpd_tls_received_header": "yes",
                    "smtpd_sasl_authenticated_header": "yes",
                    # Nothing without a login, not even from mynetworks (127.0.0.0/8).
                    "smtpd_client_restrictions": "permit_sasl_authenticated, reject",
                    "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
                })  # fmt: skip
                yield Smarthost(postfix, ca)
            finally:
                factory.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def strata_through(root: Path, smarthost: Smarthost, policy: str, password: str,
                   extra: str = "") -> tuple[StrataProcess, int]:  # fmt: skip
    """A started Strata whose outbound mail goes to the smarthost with TLS ``policy``, logging
    in as RELAY_USER with ``password`` from a 0600 file; and its submission port."""
    password_file = root / "smarthost.password"
    root.mkdir(parents=True)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    port = free_port()
    strata = StrataProcess(
        root,
        # StrataProcess ends its config inside [intake]; IMAP is off (no fixed port).
        extra_config=f'[submission]\nlisten = ["127.0.0.1:{port}"]\ntls_listen = []\n'
        f'[tls]\nca_file = "{smarthost.ca.ca_file}"\n'
        f'[outbound]\nsmarthost = "{smarthost.address}"\nsmarthost_tls = "{policy}"\n'
        f'smarthost_user = "{RELAY_USER}"\nsmarthost_password_file = "{password_file}"\n{extra}'
        "[relay]\ninterval = 1\n[monitor]\nprobe_interval = 3600\n",
    )
    sender = f"alice@{DOMAIN}"
    strata.cli("domain", "add", DOMAIN, "--relay", "127.0.0.1:1", "--no-monitor",
               "--portal", "always")  # fmt: skip
    passwd = root / "users.passwd"
    passwd.write_text(passwd_line(sender, password_for(sender)))
    strata.cli("user", "import", DOMAIN, str(passwd))
    try:
        strata.start()
        if not wait_for_port(port, 30):
            raise RuntimeError(f"no submission listener on {port}\n{strata.log_text()[-3000:]}")
    except BaseException:
        strata.stop()
        raise
    return strata, port


def submit(port: int, to: str, subject: str) -> None:
    """alice sends ``subject`` to ``to`` through Strata's submission (AUTH on loopback)."""
    sender = f"alice@{DOMAIN}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content("Sent through Strata's smarthost.\n")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as client:
        client.login(sender, password_for(sender))
        client.send_message(message)


def entry_when(
    strata: StrataProcess, recipient: str, ready: Callable[[dict[str, Any]], bool]
) -> Callable[[], dict[str, Any] | None]:
    """A check for `eventually`: ``recipient``'s queue entry once ``ready`` says so, else None."""

    def check() -> dict[str, Any] | None:
        entry = next((e for e in strata.queue() if e["recipient"] == recipient), None)
        return entry if entry is not None and ready(entry) else None

    return check


def test_the_smarthost_offers_auth_only_over_tls_and_relays_only_after_it(
    smarthost: Smarthost,
) -> None:
    """The peer is what the other tests need it to be (else they could pass for wrong reasons)."""
    context = ssl.create_default_context(cafile=str(smarthost.ca.ca_file))
    with smtplib.SMTP("127.0.0.1", smarthost.postfix.smtpd_port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        client.starttls(context=context)  # the certificate verifies and names 127.0.0.1
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"].upper().split()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(f"alice@{DOMAIN}", [f"someone@{OUTSIDE}"], b"Subject: no\r\n\r\nno\r\n")


def test_outbound_mail_logs_in_to_the_smarthost_over_tls_and_arrives(
    tmp_path: Path, smarthost: Smarthost
) -> None:
    # "verify": the smarthost's certificate must chain to [tls] ca_file and name 127.0.0.1.
    strata, port = strata_through(tmp_path / "strata", smarthost, "verify", RELAY_PASSWORD)
    try:
        recipient, subject = f"someone@{OUTSIDE}", "through the smarthost"
        submit(port, recipient, subject)
        raw = eventually(lambda: smarthost.arrived(subject), 30, "the message at the smarthost")
        assert len(raw) == 1
        delivered = entry_when(strata, recipient, lambda e: e["state"] == "delivered")
        entry = eventually(delivered, 15, "Strata's queue entry to be delivered")
    finally:
        strata.stop()
    assert entry["domain"] == OUTSIDE
    head = raw[0].split(b"\n\n", 1)[0].replace(b"\n\t", b" ").replace(b"\n ", b" ")
    received = next(h for h in head.split(b"\n") if h.startswith(b"Received: "))
    # The smarthost's own Received header: the session was encrypted and authenticated.
    assert b"(using TLSv1." in received, received
    assert f"(Authenticated sender: {RELAY_USER})".encode() in received, received
    logins = [login for login in sasl_logins(smarthost.postfix.maillog())
              if login.username == RELAY_USER]  # fmt: skip
    assert len(logins) == 1, smarthost.postfix.maillog_tail(60)
    assert logins[0].method == "PLAIN"
    assert "TLS connection established" in logins[0].tls, smarthost.postfix.maillog_tail(60)
    assert f"sasl_username={RELAY_USER}" in smarthost.postfix.maillog()


@dataclass
class Refused:
    """What a Strata with a wrong smarthost password did with one message."""

    entry: dict[str, Any]  # its queue entry after the attempts
    refused: int  # SASL logins the smarthost refused meanwhile
    arrived: list[bytes]  # what reached the smarthost's Maildir (nothing, we hope)
    log: str  # Strata's log


def send_with_a_wrong_password(root: Path, smarthost: Smarthost, policy: str,
                               recipient: str, attempts: int) -> Refused:  # fmt: skip
    """Start a Strata whose password file holds a wrong password (retrying every second or
    two, so the smarthost refuses more than one login while the test watches), submit one
    message to ``recipient``, and wait for ``attempts`` delivery attempts.  Dovecot delays its
    answers to an address whose logins keep failing (its auth penalty, up to 15 s), so each
    further attempt costs seconds: the tests ask for few."""
    refused_before = sasl_failures(smarthost.postfix.maillog())
    strata, port = strata_through(root, smarthost, policy, WRONG_PASSWORD,
                                  extra="retry_min = 1\nretry_max = 2\n")  # fmt: skip
    subject = f"refused by the smarthost ({policy})"
    try:
        submit(port, recipient, subject)
        tried = entry_when(strata, recipient, lambda e: int(e["attempts"]) >= attempts)
        entry = eventually(tried, 45, f"{attempts} delivery attempts")
        refused = sasl_failures(smarthost.postfix.maillog()) - refused_before
        log = strata.log_text()
    finally:
        strata.stop()
    return Refused(entry, refused, smarthost.arrived(subject), log)


def test_a_wrong_password_keeps_the_mail_queued_and_delivers_nothing(
    tmp_path: Path, smarthost: Smarthost
) -> None:
    # "required": TLS without checking the certificate.
    result = send_with_a_wrong_password(
        tmp_path / "strata", smarthost, "required", f"nobody@{OUTSIDE}", attempts=2
    )
    assert result.entry["state"] == "queued", result.entry
    assert "authentication" in str(result.entry["last_error"]).lower(), result.entry
    assert result.refused >= 2, smarthost.postfix.maillog_tail(60)
    assert not result.arrived
    assert WRONG_PASSWORD not in result.log  # the password never reaches the log


def test_a_wrong_password_under_opportunistic_tls_says_authentication_failed(
    tmp_path: Path, smarthost: Smarthost
) -> None:
    result = send_with_a_wrong_password(tmp_path / "strata", smarthost, "opportunistic",
                                        f"nobody-else@{OUTSIDE}", attempts=1)  # fmt: skip
    # The message stays queued and nothing goes out.
    assert result.entry["state"] == "queued", result.entry
    assert not result.arrived
    # And the reason the admin sees is the refused login.
    last_error = str(result.entry["last_error"])
    assert "authentication failed" in last_error.lower(), result.entry
    assert "TLS failed" not in last_error, result.entry
