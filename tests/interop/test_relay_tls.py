"""
STARTTLS towards real Postfix primaries, one domain per TLS policy.

The primaries' certificates come from a throwaway CA that Strata trusts through ``tls.ca_file``;
each primary adds ``(using TLSv1.x with cipher ...)`` to its Received header when the session was
encrypted (``smtpd_tls_received_header``), which is how the tests see whether TLS was used.

- A primary with TLS: ``opportunistic`` and ``verify`` (the certificate names 127.0.0.1) deliver
  over TLS; ``verify`` towards a name the certificate lacks (localhost) delivers nothing.
- A primary without TLS: ``opportunistic`` delivers in plaintext, ``required`` delivers nothing.
- A legacy primary whose TLS only goes up to 1.1 (the handshake fails): ``opportunistic``
  connects again without TLS and delivers; ``required`` delivers nothing.
"""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.peers.tlsca import TestCA

pytestmark = [pytest.mark.interop]

TLS_HEADER = b"(using TLSv1."


def primary_with(
    postfix_factory: PostfixFactory, domains: list[str], tls: dict[str, str]
) -> PostfixInstance:
    settings = {"smtpd_tls_received_header": "yes", "smtpd_tls_loglevel": "1", **tls}
    return postfix_factory.primary(domains, main_cf=settings)


def tls_settings(ca: TestCA, **extra: str) -> dict[str, str]:
    server = ca.issue("primary", dns=["primary.test"], ips=["127.0.0.1"])
    return {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(server.certificate),
        "smtpd_tls_key_file": str(server.key),
        **extra,
    }


def send(strata: Any, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        for rcpt in recipients:
            body = f"From: a@sender.test\r\nTo: {rcpt}\r\nSubject: tls to {rcpt}\r\n\r\nhi\r\n"
            client.sendmail("a@sender.test", [rcpt], body)


def settle(strata: Any, expected: dict[str, str], timeout: float = 30.0) -> dict[str, str]:
    """Flush until every recipient's entry is in its expected state (or time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        strata.cli("queue", "flush")
        time.sleep(1.0)
        states = {e["recipient"]: e["state"] for e in strata.queue()}
        if states == expected or time.monotonic() > deadline:
            return states


def delivered_to(primary: PostfixInstance) -> dict[str, bytes]:
    """Each delivered message by its To: address."""
    assert primary.maildir is not None
    out = {}
    for path in maildir_messages(primary.maildir):
        raw = path.read_bytes()
        to = next(line for line in raw.split(b"\n") if line.startswith(b"To: "))
        out[to[4:].decode()] = raw
    return out


def received_by_primary(raw: bytes) -> bytes:
    """The primary's own Received header (the first one), unfolded."""
    headers = raw.split(b"\n\n", 1)[0].replace(b"\n\t", b" ").replace(b"\n ", b" ")
    return next(line for line in headers.split(b"\n") if line.startswith(b"Received: "))


def events_text(strata: Any, domain: str) -> str:
    events = json.loads(strata.cli("events", "--json", "--domain", domain).stdout)
    return json.dumps(events["events"])


def strata_trusting(strata_factory: Any, ca: TestCA) -> Any:
    return strata_factory(
        extra_config=f'[tls]\nca_file = "{ca.ca_file}"\n[relay]\ninterval = 300\n'
        "[monitor]\nprobe_interval = 3600\n"
    )


def add(strata: Any, domain: str, relay: str, policy: str) -> None:
    strata.cli("domain", "add", domain, "--relay", relay, "--tls-policy", policy)


def test_policies_towards_a_primary_with_tls(
    tmp_path: Path, strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    ca = TestCA(tmp_path / "ca")
    domains = ["opportunistic.test", "verify.test", "mismatch.test"]
    primary = primary_with(postfix_factory, domains, tls_settings(ca))
    strata = strata_trusting(strata_factory, ca)
    port = primary.smtpd_port
    add(strata, "opportunistic.test", f"127.0.0.1:{port}", "opportunistic")
    add(strata, "verify.test", f"127.0.0.1:{port}", "verify")  # the certificate names the IP
    add(strata, "mismatch.test", f"localhost:{port}", "verify")  # ... but not "localhost"
    strata.start()
    send(strata, "u@opportunistic.test", "u@verify.test", "u@mismatch.test")
    expected = {
        "u@opportunistic.test": "delivered",
        "u@verify.test": "delivered",
        "u@mismatch.test": "queued",
    }
    assert settle(strata, expected) == expected
    delivered = delivered_to(primary)
    assert sorted(delivered) == ["u@opportunistic.test", "u@verify.test"]
    for raw in delivered.values():
        assert TLS_HEADER in received_by_primary(raw)
    # The certificate does not name "localhost": nothing was sent, and the admin can see why.
    assert "TLS failed" in events_text(strata, "mismatch.test")


def test_policies_towards_a_primary_without_tls(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    domains = ["plain.test", "required.test"]
    primary = primary_with(postfix_factory, domains, {"smtpd_tls_security_level": "none"})
    strata = strata_factory(
        extra_config="[relay]\ninterval = 300\n[monitor]\nprobe_interval = 3600\n"
    )
    add(strata, "plain.test", f"127.0.0.1:{primary.smtpd_port}", "opportunistic")
    add(strata, "required.test", f"127.0.0.1:{primary.smtpd_port}", "required")
    strata.start()
    send(strata, "u@plain.test", "u@required.test")
    expected = {"u@plain.test": "delivered", "u@required.test": "queued"}
    assert settle(strata, expected) == expected
    delivered = delivered_to(primary)
    assert sorted(delivered) == ["u@plain.test"]
    assert TLS_HEADER not in received_by_primary(delivered["u@plain.test"])
    assert "TLS required but unavailable" in events_text(strata, "required.test")


def test_opportunistic_tls_falls_back_to_plaintext_when_the_handshake_fails(
    tmp_path: Path, strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    ca = TestCA(tmp_path / "ca")
    # A legacy primary: TLS 1.0 and 1.1 only, which our client refuses, so every handshake fails.
    legacy = tls_settings(
        ca, smtpd_tls_protocols="<=TLSv1.1", smtpd_tls_mandatory_protocols="<=TLSv1.1"
    )
    domains = ["legacy.test", "strict.test"]
    primary = primary_with(postfix_factory, domains, legacy)
    strata = strata_trusting(strata_factory, ca)
    add(strata, "legacy.test", f"127.0.0.1:{primary.smtpd_port}", "opportunistic")
    add(strata, "strict.test", f"127.0.0.1:{primary.smtpd_port}", "required")
    strata.start()
    send(strata, "u@legacy.test", "u@strict.test")
    expected = {"u@legacy.test": "delivered", "u@strict.test": "queued"}
    assert settle(strata, expected) == expected
    delivered = delivered_to(primary)
    assert sorted(delivered) == ["u@legacy.test"]
    assert TLS_HEADER not in received_by_primary(delivered["u@legacy.test"])
    assert "SSL_accept error" in primary.maillog()  # the handshake really was tried
    assert "TLS failed" in events_text(strata, "strict.test")
    assert "connecting again without it" in strata.log_text()
