"""
The issue's acceptance walk-through with a real client: ``twistd -n strata``, ``strata domain add``,
then swaks.  Also real STARTTLS with the self-signed certificate generated on first start, and
STARTTLS inside a transaction (Python's smtplib and ssl: swaks only says STARTTLS after EHLO).
"""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
import time

import pytest

pytestmark = pytest.mark.interop


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed: apt-get install -y swaks (CI installs it in .ci/run)")
    return subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{port}",
            "--from",
            "sender@outside.test",
            "--helo",
            "client.test",
            "--timeout",
            "20",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_swaks_gets_250_for_protected_domains_and_550_for_others(strata_factory) -> None:
    strata = strata_factory()
    strata.start()
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    time.sleep(1.0)  # the running server sees domain changes within a second
    accepted = swaks(strata.port, "--to", "u@example.test")
    assert accepted.returncode == 0, accepted.stdout
    assert "<-  250 2.0.0 Ok: queued as " in accepted.stdout
    queue_id = accepted.stdout.split("queued as ")[1].split()[0]
    entries = strata.queue()
    assert [(e["queue_id"], e["recipient"], e["sender"]) for e in entries] == [
        (queue_id, "u@example.test", "sender@outside.test")
    ]
    refused = swaks(strata.port, "--to", "u@other.test")
    assert "<** 550 5.7.1 Relay access denied" in refused.stdout
    assert len(strata.queue()) == 1


def test_starttls_with_generated_certificate(strata_factory) -> None:
    strata = strata_factory()
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    strata.start()
    assert (strata.data_dir / "tls" / "cert.pem").exists()
    assert oct((strata.data_dir / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
    result = swaks(strata.port, "--to", "u@example.test", "--tls")
    assert result.returncode == 0, result.stdout
    assert "TLS started" in result.stdout
    queue_id = result.stdout.split("queued as ")[1].split()[0]
    show = strata.cli("queue", "show", queue_id).stdout
    assert f"with ESMTPS id {queue_id}" in show


def test_starttls_inside_a_transaction_gets_220_and_starts_over(strata_factory) -> None:
    """Issue 11, point 9: as Postfix does, STARTTLS after MAIL and RCPT is answered 220 (not
    503); under TLS the transaction from the clear is gone and the client starts with EHLO."""
    strata = strata_factory()
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    strata.start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the self-signed certificate of the first start
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=20) as client:
        client.ehlo("client.test")
        assert client.mail("plain@outside.test")[0] == 250
        assert client.rcpt("early@example.test")[0] == 250
        assert client.starttls(context=context)[0] == 220
        client.ehlo("client.test")
        assert client.rcpt("late@example.test") == (503, b"5.5.1 Error: need MAIL command")
        client.sendmail("tls@outside.test", ["late@example.test"], b"Subject: x\r\n\r\nhi\r\n")
    (entry,) = strata.queue()
    assert (entry["sender"], entry["recipient"]) == ("tls@outside.test", "late@example.test")
    show = strata.cli("queue", "show", entry["queue_id"]).stdout
    assert f"with ESMTPS id {entry['queue_id']}" in show
